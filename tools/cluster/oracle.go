package cluster

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/tools/standin/server"
)

// Backend is one bucket's stand-in SQL Server as the Oracle watches it.
type Backend struct {
	Bucket string
	Server *server.Server
	// Max is the bucket's cap (SetMax changes it during a run).
	Max int
}

// Over is one sample of a backend above its bucket's max.
type Over struct {
	At     time.Duration // since the watch started
	Bucket string
	Value  int64
	Max    int64
}

// Window is a stretch of consecutive samples above max (gaps under 50 ms
// joined).
type Window struct {
	From, To time.Duration // since the watch started
	Peak     int64
	Max      int64
	// Spike: no sample saw it, only the stand-in's exact peak (shorter
	// than the sampling interval).
	Spike bool
}

func (w Window) String() string {
	s := fmt.Sprintf("%.3fs–%.3fs peak %d (max %d)", w.From.Seconds(), w.To.Seconds(), w.Peak, w.Max)
	if w.Spike {
		s += " (spike between two samples: exact peak only)"
	}
	return s
}

// BucketReport is what the Oracle saw of one bucket.
type BucketReport struct {
	Bucket    string
	Max       int64 // the max at the end
	Samples   int64 // samples taken
	Over      int64 // samples above the max in force
	MaxSample int64 // highest sampled session count
	// Peak is the stand-in's exact peak of concurrent sessions since the
	// watch started (counted at each login, not sampled).
	Peak int64
	// Overs are the first samples above max (up to 100).
	Overs []Over
	// Windows are the stretches above max (up to 1000), including spikes
	// shorter than the sampling interval that only the stand-in's exact
	// peak saw (a window of one interval, no sample above).
	Windows []Window
}

func (r BucketReport) String() string {
	return fmt.Sprintf("%s: max %d, %d samples, %d above max, highest sample %d, exact peak %d",
		r.Bucket, r.Max, r.Samples, r.Over, r.MaxSample, r.Peak)
}

// Oracle samples, every few milliseconds, the sessions each stand-in
// really holds (the backend is the oracle for a cap, not tdsgate's own
// counters) and compares them with the bucket's max.
type Oracle struct {
	start time.Time
	bs    []*watched
	stop  chan struct{}
	done  chan struct{}

	mu     sync.Mutex
	events []string
}

type watched struct {
	Backend
	max                   atomic.Int64
	samples, over, maxVal atomic.Int64
	lastPeak              int64 // the stand-in's exact peak at the last sample (run goroutine only)
	mu                    sync.Mutex
	overs                 []Over
	windows               []Window
}

// Watch starts sampling every backend every `every` (5 ms if 0). It resets
// each stand-in's peak to its current count.
func Watch(every time.Duration, bs ...Backend) *Oracle {
	if every <= 0 {
		every = 5 * time.Millisecond
	}
	o := &Oracle{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for _, b := range bs {
		w := &watched{Backend: b}
		w.max.Store(int64(b.Max))
		b.Server.ResetPeak()
		o.bs = append(o.bs, w)
	}
	go o.run(every)
	return o
}

func (o *Oracle) run(every time.Duration) {
	defer close(o.done)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-tk.C:
		}
		for _, w := range o.bs {
			st := w.Server.Stats()
			v, m := st.Current, w.max.Load()
			w.samples.Add(1)
			seen := v // the highest count since the last sample: v, or the exact peak if it rose
			if st.Peak > w.lastPeak {
				seen = max(v, st.Peak)
			}
			if seen > m && v <= m {
				// A spike above max shorter than the sampling interval: no
				// sample saw it, the stand-in's exact peak did. Record it as
				// a window between the two samples (not as a sample above).
				at := time.Since(o.start)
				w.mu.Lock()
				if len(w.windows) < 1000 {
					w.windows = append(w.windows, Window{From: max(at-every, 0), To: at, Peak: seen, Max: m, Spike: true})
				}
				w.mu.Unlock()
			}
			w.lastPeak = max(w.lastPeak, st.Peak)
			if v > w.maxVal.Load() {
				w.maxVal.Store(v)
			}
			if v > m {
				w.over.Add(1)
				w.mu.Lock()
				at := time.Since(o.start)
				if len(w.overs) < 100 {
					w.overs = append(w.overs, Over{At: at, Bucket: w.Bucket, Value: v, Max: m})
				}
				if n := len(w.windows); n > 0 && at-w.windows[n-1].To < 50*time.Millisecond {
					last := &w.windows[n-1]
					last.To, last.Peak, last.Spike = at, max(last.Peak, seen), false
				} else if n < 1000 {
					w.windows = append(w.windows, Window{From: at, To: at, Peak: seen, Max: m})
				}
				w.mu.Unlock()
			}
		}
	}
}

// SetMax changes the max the samples of bucket are compared with.
func (o *Oracle) SetMax(bucket string, max int) {
	for _, w := range o.bs {
		if w.Bucket == bucket {
			w.max.Store(int64(max))
		}
	}
}

// Start is when the watch started (wall clock).
func (o *Oracle) Start() time.Time { return o.start }

// Since is the time since the watch started (the time base of Over.At
// and of Event).
func (o *Oracle) Since() time.Duration { return time.Since(o.start) }

// Event notes what happened at this moment (a fault), so that samples
// above max can be read next to the faults.
func (o *Oracle) Event(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	o.events = append(o.events, fmt.Sprintf("%8.3fs %s  %s", now.Sub(o.start).Seconds(), now.UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...)))
}

// Events are the notes so far, one line each.
func (o *Oracle) Events() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.events, "\n")
}

// Report is what was seen so far, per bucket, in Watch order.
func (o *Oracle) Report() []BucketReport {
	var out []BucketReport
	for _, w := range o.bs {
		w.mu.Lock()
		overs := append([]Over(nil), w.overs...)
		windows := append([]Window(nil), w.windows...)
		w.mu.Unlock()
		out = append(out, BucketReport{Bucket: w.Bucket, Max: w.max.Load(), Samples: w.samples.Load(), Over: w.over.Load(),
			MaxSample: w.maxVal.Load(), Peak: w.Server.Stats().Peak, Overs: overs, Windows: windows})
	}
	return out
}

// Stop ends the sampling and returns the Report.
func (o *Oracle) Stop() []BucketReport {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	<-o.done
	return o.Report()
}
