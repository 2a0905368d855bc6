package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// Latency is a latency distribution's summary.
type Latency struct {
	N                   int
	P50, P99, P999, Max time.Duration
}

func summarize(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		i := int(p * float64(len(lat)))
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return lat[i]
	}
	return Latency{N: len(lat), P50: q(0.50), P99: q(0.99), P999: q(0.999), Max: lat[len(lat)-1]}
}

// Row identifies a result: path, mode and client.
type Row struct {
	Path, Mode, Client string
	Err                string // the run failed (or was cut short): why
}

// RoundTrip is SELECT 1 at one concurrency.
type RoundTrip struct {
	Row
	Conc      int
	PerSecond float64
	Lat       Latency
	Errors    int
	// ProxyCPU is the CPU seconds of the path's proxy processes over the
	// counted round trips, KThreadCPU the host's kernel threads' over the
	// same time (see kthreadCPU); Counted is how many round trips.
	ProxyCPU, KThreadCPU float64
	Counted              int
	// PassRates are the round trips/s of every pass (the row keeps the
	// best): the run's spread.
	PassRates []float64
}

// CPUPerRT is the proxy's CPU per round trip, in µs.
func (r RoundTrip) CPUPerRT() float64 { return perRT(r.ProxyCPU, r.Counted) }

// KThreadPerRT is the host's kernel-thread CPU per round trip, in µs.
func (r RoundTrip) KThreadPerRT() float64 { return perRT(r.KThreadCPU, r.Counted) }

func perRT(sec float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return sec * 1e6 / float64(n)
}

// Bulk is one large result set streamed.
type Bulk struct {
	Row
	Bytes     int64
	Seconds   float64
	MBps      float64 // 10^6 bytes per second, wire bytes (TDS headers included)
	ProxyCPU  float64 // CPU seconds (user+sys) of the path's proxy processes
	CPUPerGB  float64 // ProxyCPU per 10^9 bytes relayed
	BackendGB float64 // the stand-in's CPU seconds per GB, for scale
	// ClientGB is the client's CPU seconds per GB: this process's, which
	// runs nothing else during the transfer. With BackendGB it says what
	// the two ends of the stream cost (direct: all of it but softirqs run
	// elsewhere).
	ClientGB float64
	// BackendWait and ClientWait are the seconds the stand-in's and the
	// client's threads spent runnable but waiting for a CPU over the
	// transfer (schedstat), BackendRun and ClientRun the seconds they ran:
	// a stream whose ends wait longer than they run is bound by the
	// machine's other work, not by its own.
	BackendWait, ClientWait, BackendRun, ClientRun float64
	// KThreadCPU is the host's kernel threads' CPU seconds over the
	// transfer (see kthreadCPU), KThreadPerGB per 10^9 bytes.
	KThreadCPU, KThreadPerGB float64
	// Spread over the passes: each pass's MB/s and CPU per GB, lowest and
	// highest.
	MBpsMin, MBpsMax, CPUPerGBMin, CPUPerGBMax float64
	Passes                                     int
}

// add merges another pass of the same path: bytes, time and CPU add up.
func (b Bulk) add(o Bulk) Bulk {
	if o.Err != "" || o.Bytes == 0 {
		if b.Err == "" {
			b.Err = o.Err
		}
		return b
	}
	if b.Err != "" || b.Bytes == 0 {
		return o
	}
	b.MBpsMin, b.MBpsMax = min(b.MBpsMin, o.MBpsMin), max(b.MBpsMax, o.MBpsMax)
	b.CPUPerGBMin, b.CPUPerGBMax = min(b.CPUPerGBMin, o.CPUPerGBMin), max(b.CPUPerGBMax, o.CPUPerGBMax)
	b.Passes += o.Passes
	gb0, gb1 := float64(b.Bytes)/1e9, float64(o.Bytes)/1e9
	backend := b.BackendGB*gb0 + o.BackendGB*gb1
	cl := b.ClientGB*gb0 + o.ClientGB*gb1
	b.BackendWait += o.BackendWait
	b.ClientWait += o.ClientWait
	b.BackendRun += o.BackendRun
	b.ClientRun += o.ClientRun
	b.Bytes += o.Bytes
	b.Seconds += o.Seconds
	b.ProxyCPU += o.ProxyCPU
	b.KThreadCPU += o.KThreadCPU
	gb := float64(b.Bytes) / 1e9
	b.MBps = float64(b.Bytes) / 1e6 / b.Seconds
	b.CPUPerGB = b.ProxyCPU / gb
	b.KThreadPerGB = b.KThreadCPU / gb
	b.BackendGB = backend / gb
	b.ClientGB = cl / gb
	return b
}

// Churn is connect + login + SELECT 1 + close in a loop.
type Churn struct {
	Row
	Workers   int
	Conns     int
	PerSecond float64
	Connect   Latency // dial until LOGINACK
	Errors    int
	CPUPerK   float64 // proxy CPU seconds per 1000 connections
	// Net is what the kernel counted during the run (the whole machine):
	// retransmitted segments (a lost SYN costs a 1 s RTO) and listen
	// queue overflows.
	Net netCounters
	// Passes is the conn/s of every pass, in run order (the row's other
	// figures are the best pass's).
	Passes []float64
}

// Idle is the idle-capacity test.
type Idle struct {
	Row
	Wanted, Held  int
	Seconds       float64 // to open them
	RSSPerSession float64 // bytes, proxy processes
	FDsPerSession float64
	ProxyRSS      int64 // proxy RSS with every session held
	BackendRSSPer float64
	// Capped is the session count the harness stopped at because a
	// process would have run out of file descriptors (RLIMIT_NOFILE); 0
	// if it did not have to.
	Capped    int
	NoFile    uint64
	Failed    int // logins that failed on the way (and were retried)
	CapReason string
	// From tdsgate's /metrics (Go runtime), per session held: where the
	// RSS goes. Zero for the other paths.
	GoroutinesPer, StackPer, HeapInusePer float64
}

// LimiterCost is Acquire+Release measured on the limiter itself.
type LimiterCost struct {
	Name      string
	Callers   int
	Ops       int
	PerSecond float64
	Lat       Latency
	Err       string
}

// Rejections is the overload test: a full bucket with no queue.
type Rejections struct {
	Path      string
	Instances int
	Workers   int
	Refused   int // 50005
	Other     int // anything else
	PerSecond float64
	Lat       Latency // dial until the 50005 ERROR
	CPUPerK   float64 // proxy CPU seconds per 1000 refusals
	Err       string
}

// Results are every figure of a run.
type Results struct {
	RoundTrips []RoundTrip
	Bulks      []Bulk
	Churns     []Churn
	Idles      []Idle
	Limiter    []LimiterCost
	Rejections []Rejections
	// Profiles are the tops of the CPU profiles taken during the run, by
	// profileKey (profile.go).
	Profiles map[string]string `json:",omitempty"`
	// PerfMachine are the whole-machine profiles of the raw client's
	// plaintext bulk runs (perf.go), by profileKey; PerfNote says why
	// there are none.
	PerfMachine map[string]PerfMachine `json:",omitempty"`
	PerfNote    string                 `json:",omitempty"`
}

func row(t *Target, cl client) Row { return Row{Path: t.Path, Mode: t.Mode, Client: cl.name()} }

// measureRoundTrip holds conc sessions open and runs SELECT 1 on each, back
// to back, for d.
func (e *env) measureRoundTrip(ctx context.Context, t *Target, cl client, conc int, d time.Duration) RoundTrip {
	r := RoundTrip{Row: row(t, cl), Conc: conc}
	octx, cancel := deadlineCtx(ctx, 60*time.Second)
	defer cancel()
	ss, _, err := openMany(octx, cl, t, conc, min(conc, 16), 0)
	defer closeAll(ss)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	for _, s := range ss { // warm up: first query on each session
		if err := s.selectOne(); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	lats := make([][]time.Duration, conc)
	var errs atomic.Int64
	var wg sync.WaitGroup
	// A warm-up of a fifth of the run (at most 500 ms), all sessions
	// busy, is not counted: buffers, goroutines and caches reach their
	// steady state first.
	warm := time.Now().Add(min(d/5, 500*time.Millisecond))
	deadline := warm.Add(d)
	for i, s := range ss {
		lats[i] = make([]time.Duration, 0, 4096)
		wg.Go(func() {
			for {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					return
				}
				if err := s.selectOne(); err != nil {
					errs.Add(1)
					return
				}
				if t0.After(warm) {
					lats[i] = append(lats[i], time.Since(t0))
				}
			}
		})
	}
	time.Sleep(time.Until(warm))
	cpu0, _ := sumStats(t.PIDs)
	k0 := kthreadCPU()
	start := time.Now()
	wg.Wait()
	el := time.Since(start)
	cpu1, _ := sumStats(t.PIDs)
	k1 := kthreadCPU()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	r.Lat = summarize(all)
	r.PerSecond = float64(len(all)) / el.Seconds()
	r.PassRates = []float64{r.PerSecond}
	r.Counted = len(all)
	if len(t.PIDs) > 0 {
		r.ProxyCPU = (cpu1.CPU - cpu0.CPU).Seconds()
	}
	r.KThreadCPU = (k1 - k0).Seconds()
	r.Errors = int(errs.Load())
	if r.Errors > 0 {
		r.Err = fmt.Sprintf("%d sessions failed", r.Errors)
	}
	return r
}

// bulkQuery returns a batch whose answer is about n bytes: rows of one
// packet each (value INT, pad VARCHAR), streamed by the stand-in from
// memory (tools/standin's bulk_source), so that the source is not what a
// bulk run measures.
func bulkQuery(n int64) string {
	return fmt.Sprintf("%s%d", server.BulkPrefix, n)
}

// measureBulk streams one large result set through t and charges the
// proxy processes' CPU to it.
// perf, if not nil, is enabled for the transfer alone.
func (e *env) measureBulk(ctx context.Context, t *Target, cl client, n int64, perf *perfRun) Bulk {
	r := Bulk{Row: row(t, cl)}
	s, err := cl.open(ctx, t, 0)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer s.close()
	if err := s.selectOne(); err != nil {
		r.Err = err.Error()
		return r
	}
	if err := perf.command("enable"); err != nil {
		e.opts.logf("%v", err)
	}
	before, err1 := sumStats(t.PIDs)
	bb, err2 := readStat(e.standin.pid())
	cb, err5 := readStat(os.Getpid())
	k0 := kthreadCPU()
	start := time.Now()
	bytes, err := s.stream(bulkQuery(n))
	el := time.Since(start)
	if err := perf.command("disable"); err != nil {
		e.opts.logf("%v", err)
	}
	k1 := kthreadCPU()
	after, err3 := sumStats(t.PIDs)
	ba, err4 := readStat(e.standin.pid())
	ca, err6 := readStat(os.Getpid())
	if err = errors.Join(err, err1, err2, err3, err4, err5, err6); err != nil {
		r.Err = err.Error()
		return r
	}
	r.Bytes, r.Seconds = bytes, el.Seconds()
	r.MBps = float64(bytes) / 1e6 / el.Seconds()
	gb := float64(bytes) / 1e9
	if len(t.PIDs) > 0 {
		r.ProxyCPU = (after.CPU - before.CPU).Seconds()
		r.CPUPerGB = r.ProxyCPU / gb
	}
	r.BackendGB = (ba.CPU - bb.CPU).Seconds() / gb
	r.ClientGB = (ca.CPU - cb.CPU).Seconds() / gb
	r.BackendRun, r.BackendWait = (ba.CPU - bb.CPU).Seconds(), (ba.Wait - bb.Wait).Seconds()
	r.ClientRun, r.ClientWait = (ca.CPU - cb.CPU).Seconds(), (ca.Wait - cb.Wait).Seconds()
	r.KThreadCPU = (k1 - k0).Seconds()
	r.KThreadPerGB = r.KThreadCPU / gb
	r.MBpsMin, r.MBpsMax, r.CPUPerGBMin, r.CPUPerGBMax, r.Passes = r.MBps, r.MBps, r.CPUPerGB, r.CPUPerGB, 1
	return r
}

// measureChurn runs workers loops of connect, log in, SELECT 1, close for d.
func (e *env) measureChurn(ctx context.Context, t *Target, cl client, workers int, d time.Duration) Churn {
	opTimeout := min(max(2*time.Second, 3*d), 10*time.Second)
	r := Churn{Row: row(t, cl), Workers: workers}
	lats := make([][]time.Duration, workers)
	var errs atomic.Int64
	var firstErr atomic.Value
	before, _ := sumStats(t.PIDs)
	net0 := readNet()
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		lats[w] = make([]time.Duration, 0, 1024)
		wg.Go(func() {
			for i := w; ; i += workers {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, opTimeout)
				s, err := cl.open(cctx, t, i)
				cancel()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				connect := time.Since(t0)
				err = s.selectOne()
				s.close()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lats[w] = append(lats[w], connect)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	after, _ := sumStats(t.PIDs)
	r.Net = readNet().sub(net0)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	r.Conns = len(all)
	r.PerSecond = float64(len(all)) / el.Seconds()
	r.Connect = summarize(all)
	r.Errors = int(errs.Load())
	if r.Errors > 0 {
		r.Err = fmt.Sprintf("%d failed; first: %v", r.Errors, firstErr.Load())
	}
	if len(t.PIDs) > 0 && r.Conns > 0 {
		r.CPUPerK = (after.CPU - before.CPU).Seconds() / float64(r.Conns) * 1000
	}
	return r
}

// measureIdle opens n idle sessions (plaintext, raw client) in batches and
// reads the proxy processes' RSS and fds before and after each batch. If a
// proxy dies on the way (tdspool aborts past FD_SETSIZE), the figures are
// those of the last batch it held, and the note says how it died.
func (e *env) measureIdle(ctx context.Context, t *Target, n int, budget time.Duration) Idle {
	r := Idle{Row: row(t, rawClient{}), Wanted: n, NoFile: e.nofile}
	forceGC(t.metrics)
	before, err1 := sumStats(t.PIDs)
	bb, err2 := readStat(e.standin.pid())
	if err := errors.Join(err1, err2); err != nil {
		r.Err = err.Error()
		return r
	}
	goBefore := scrapeGo(t.metrics)
	fdsBefore := map[int]int{}
	for _, pid := range t.PIDs {
		if s, err := readStat(pid); err == nil {
			fdsBefore[pid] = s.FDs
		}
	}
	ictx, cancel := deadlineCtx(ctx, budget)
	defer cancel()
	var ss []session
	defer func() {
		closeAll(ss)
		time.Sleep(200 * time.Millisecond) // let the proxies see the closes
	}()
	start := time.Now()
	var after procStat
	var ba procStat
	held := 0
	batch := func() int {
		// Small batches first (tdspool aborts within a few hundred), then
		// tenths.
		if held < 1000 {
			return min(100, n)
		}
		return max(n/10, 1)
	}
	if t.maxSessions > 0 && t.maxSessions < n {
		// HAProxy's maxconn: past it, connections wait unaccepted.
		n, r.Capped = t.maxSessions, t.maxSessions
		r.CapReason = "HAProxy maxconn (what RLIMIT_NOFILE allows it)"
	}
	for len(ss) < n {
		if held > 0 && r.Capped == 0 {
			// Project where a process runs out of file descriptors and stop
			// short of it: past RLIMIT_NOFILE a proxy can only refuse.
			if c := e.fdCap(t, fdsBefore, held); c < n {
				e.opts.logf("idle %s: stopping at %d sessions (fd limit %d)", t.Name(), c, e.nofile)
				n, r.Capped = max(c, held), max(c, held)
				r.CapReason = "one more batch would pass RLIMIT_NOFILE in a process"
			}
			if len(ss) >= n {
				break
			}
		}
		// A slow login is not what this section measures: a long timeout,
		// and a few failures (retried by the next batch) are tolerated.
		want := min(batch(), n-len(ss))
		got, nerr, err := openMany(ictx, rawClient{timeout: 10 * time.Second}, t, want, 32, max(want/50, 2))
		if err != nil {
			time.Sleep(300 * time.Millisecond) // a crash shows in /proc a moment later
		}
		// One query each, as an application's connection has run before
		// it idles: the relay has moved bytes both ways.
		for _, s := range got {
			if qerr := s.selectOne(); qerr != nil && err == nil {
				err = qerr
			}
		}
		ss = append(ss, got...)
		r.Failed += nerr
		if d := t.dead(); d != "" {
			r.Err = fmt.Sprintf("held %d, then %s", held, d)
			break
		}
		if nerr > max(want/50, 2) || (err != nil && ictx.Err() != nil) {
			r.Err = fmt.Sprintf("stopped after %d sessions, %d failed logins; first: %v", len(ss), r.Failed, err)
		} else if err != nil {
			r.Err = fmt.Sprintf("%d failed logins (retried); first: %v", r.Failed, err)
			err = nil
		}
		if len(ss) > held {
			time.Sleep(100 * time.Millisecond)
			a, err1 := sumStats(t.PIDs)
			b, err2 := readStat(e.standin.pid())
			if errors.Join(err1, err2) != nil {
				if d := t.dead(); d != "" {
					r.Err = fmt.Sprintf("held %d, then %s", held, d)
				}
				break
			}
			after, ba, held = a, b, len(ss)
			r.Seconds = time.Since(start).Seconds()
		}
		if err != nil {
			break
		}
	}
	if held == n {
		// Let goroutines and buffers settle, collect the logins' garbage
		// (tdsgate), then read again.
		time.Sleep(time.Second)
		if forceGC(t.metrics) {
			time.Sleep(200 * time.Millisecond)
		}
		if a, err := sumStats(t.PIDs); err == nil {
			after = a
		}
		if b, err := readStat(e.standin.pid()); err == nil {
			ba = b
		}
	}
	r.Held = held
	if held == 0 {
		return r
	}
	if goBefore != nil && held == len(ss) {
		if goAfter := scrapeGo(t.metrics); goAfter != nil {
			r.GoroutinesPer = (goAfter["go_goroutines"] - goBefore["go_goroutines"]) / float64(held)
			r.StackPer = (goAfter["go_memstats_stack_inuse_bytes"] - goBefore["go_memstats_stack_inuse_bytes"]) / float64(held)
			r.HeapInusePer = (goAfter["go_memstats_heap_inuse_bytes"] - goBefore["go_memstats_heap_inuse_bytes"]) / float64(held)
		}
	}
	if len(t.PIDs) > 0 {
		r.RSSPerSession = float64(after.RSS-before.RSS) / float64(held)
		r.FDsPerSession = float64(after.FDs-before.FDs) / float64(held)
		r.ProxyRSS = after.RSS
	}
	r.BackendRSSPer = float64(ba.RSS-bb.RSS) / float64(held)
	return r
}

// fdCap projects how many sessions t can hold before one of the
// processes involved reaches RLIMIT_NOFILE: each proxy process, at the
// rate its fds have grown per session held so far (sessions spread over
// the instances; redis-server's fds do not grow), and the stand-in and
// this process at one fd per session each. It keeps 256 fds of headroom
// per process (a login briefly holds more than an idle session).
func (e *env) fdCap(t *Target, fdsBefore map[int]int, held int) int {
	limit := int(e.nofile) - 256
	best := 1 << 30
	for _, pid := range t.PIDs {
		s, err := readStat(pid)
		if err != nil {
			continue
		}
		grown := s.FDs - fdsBefore[pid]
		if grown <= 0 {
			continue
		}
		perSession := float64(grown) / float64(held) // this process's fds per session of the path
		best = min(best, held+int(float64(limit-s.FDs)/perSession))
	}
	for _, pid := range []int{e.standin.pid(), os.Getpid()} {
		if s, err := readStat(pid); err == nil {
			best = min(best, held+limit-s.FDs)
		}
	}
	return best
}

// measureLimiter times Acquire+Release on the limiter itself: the local
// one, and the Redis one against the harness's redis-server.
func (e *env) measureLimiter(ctx context.Context, ops int) []LimiterCost {
	var out []LimiterCost
	buckets := []limiter.BucketConfig{{ID: "bench-limiter", MaxConnections: 1000, MaxQueueSize: 100, QueueTimeout: 5 * time.Second}}
	run := func(name string, l limiter.Limiter, callers int) LimiterCost {
		c := LimiterCost{Name: name, Callers: callers}
		lats := make([][]time.Duration, callers)
		var wg sync.WaitGroup
		var firstErr atomic.Value
		start := time.Now()
		for w := range callers {
			wg.Go(func() {
				for range ops / callers {
					t0 := time.Now()
					tk, err := l.Acquire(ctx, "bench-limiter")
					if err != nil {
						firstErr.CompareAndSwap(nil, err.Error())
						return
					}
					tk.Release()
					lats[w] = append(lats[w], time.Since(t0))
				}
			})
		}
		wg.Wait()
		el := time.Since(start)
		var all []time.Duration
		for _, l := range lats {
			all = append(all, l...)
		}
		c.Ops = len(all)
		c.PerSecond = float64(len(all)) / el.Seconds()
		c.Lat = summarize(all)
		if v := firstErr.Load(); v != nil {
			c.Err = v.(string)
		}
		return c
	}
	local := limiter.NewLocal(buckets)
	out = append(out, run("local (in process)", local, 1), run("local (in process)", local, 64))
	if e.redis == "" {
		out = append(out, LimiterCost{Name: "redis", Err: "no redis-server"})
		return out
	}
	rl, err := limiter.NewRedis(limiter.RedisOptions{Addr: e.redis, InstanceID: "bench-limiter", Log: quietLogger()}, buckets)
	if err != nil {
		return append(out, LimiterCost{Name: "redis", Err: err.Error()})
	}
	defer rl.Close()
	out = append(out, run("redis (acquire + release scripts)", rl, 1), run("redis (acquire + release scripts)", rl, 64))
	// With the default slot linger (tdsgate's default): a released slot
	// stays warm and the next acquire takes it without a Redis call.
	ll, err := limiter.NewRedis(limiter.RedisOptions{Addr: e.redis, InstanceID: "bench-limiter-linger", Log: quietLogger(),
		SlotLinger: limiter.DefaultSlotLinger}, buckets)
	if err != nil {
		return append(out, LimiterCost{Name: "redis, slot_linger", Err: err.Error()})
	}
	defer ll.Close()
	name := fmt.Sprintf("redis, slot_linger %s (warm slots)", limiter.DefaultSlotLinger)
	out = append(out, run(name, ll, 1), run(name, ll, 64))
	return out
}

// measureRejections fills a bucket of 2 with no queue on fresh tdsgate
// instances (one standalone; three sharing it through Redis), then has
// workers log in as fast as they can for d and counts the 50005 refusals.
func (e *env) measureRejections(ctx context.Context, workers int, d time.Duration) []Rejections {
	var out []Rejections
	for _, tc := range []struct {
		path  string
		n     int
		redis string
	}{{PathTdsgate, 1, ""}, {PathTdsgateRedis, 3, e.redis}} {
		r := Rejections{Path: tc.path, Instances: tc.n, Workers: workers}
		if tc.n > 1 && tc.redis == "" {
			r.Err = "no redis-server"
			out = append(out, r)
			continue
		}
		t, stop, err := e.startAdmissionProxies(ctx, tc.path, tc.n, tc.redis)
		if err != nil {
			r.Err = err.Error()
			out = append(out, r)
			continue
		}
		out = append(out, e.overload(ctx, t, r, d))
		stop()
	}
	return out
}

func (e *env) overload(ctx context.Context, t *Target, r Rejections, d time.Duration) Rejections {
	// Fill the bucket: two sessions held through the first instance.
	var held []*tdsclient.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 2 {
		c, err := tdsclient.Dial(ctx, t.rawOptions(0))
		if err != nil {
			r.Err = "filling the bucket: " + err.Error()
			return r
		}
		held = append(held, c)
	}
	before, _ := sumStats(t.PIDs)
	lats := make([][]time.Duration, r.Workers)
	var refused, other atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range r.Workers {
		wg.Go(func() {
			for i := w; ; i += r.Workers {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					return
				}
				c, err := tdsclient.Dial(ctx, t.rawOptions(i))
				var le *tdsclient.LoginError
				switch {
				case errors.As(err, &le) && le.Number == tds.ErrNumQueueFull:
					refused.Add(1)
					lats[w] = append(lats[w], time.Since(t0))
				case err == nil:
					c.Close()
					other.Add(1)
					firstErr.CompareAndSwap(nil, "admitted past a full bucket")
				default:
					other.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	after, _ := sumStats(t.PIDs)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	r.Refused, r.Other = int(refused.Load()), int(other.Load())
	r.PerSecond = float64(r.Refused) / el.Seconds()
	r.Lat = summarize(all)
	if r.Refused > 0 {
		r.CPUPerK = (after.CPU - before.CPU).Seconds() / float64(r.Refused) * 1000
	}
	if v := firstErr.Load(); v != nil {
		r.Err = fmt.Sprintf("%d not refused with 50005; first: %v", r.Other, v)
	}
	return r
}

// startAdmissionProxies starts n tdsgate processes with one bucket of 2
// slots and no queue (shared through Redis when n > 1).
func (e *env) startAdmissionProxies(ctx context.Context, path string, n int, redisAddr string) (*Target, func(), error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, nil, err
	}
	t := &Target{Path: path, Mode: ModePlain, User: backendUser, Password: backendPassword, Database: backendDB}
	var ps []*proc
	stop := func() {
		for _, p := range ps {
			p.stop(5 * time.Second)
		}
	}
	for i := range n {
		id := fmt.Sprintf("bench-admission-%d-%d", n, i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		b := e.tdsgateBucket(fmt.Sprintf("bench-admission-%d", n), ModePlain, 2, 0)
		cfgPath := e.dir + "/" + id + ".yaml"
		if err := writeYAML(cfgPath, tdsgateConfig(id, addr, "", redisAddr, b)); err != nil {
			stop()
			return nil, nil, err
		}
		p, err := startProc(e.dir, id, nil, e.opts.ProxyBin, "-config", cfgPath)
		if err != nil {
			stop()
			return nil, nil, err
		}
		ps = append(ps, p)
		if err := waitTCP(ctx, p, addr, 20*time.Second); err != nil {
			stop()
			return nil, nil, err
		}
		t.Addrs = append(t.Addrs, addr)
		t.PIDs = append(t.PIDs, p.pid())
	}
	if redisAddr != "" && e.redisProc != nil {
		t.PIDs = append(t.PIDs, e.redisProc.pid())
	}
	return t, stop, nil
}

// forceGC has every tdsgate instance (pprof: true) run a garbage
// collection (net/http/pprof's heap profile with gc=1), so that the
// figures read after it count what sessions hold, not the garbage their
// logins left. It reports whether every instance did.
func forceGC(addrs []string) bool {
	if len(addrs) == 0 {
		return false
	}
	cl := http.Client{Timeout: 10 * time.Second}
	ok := true
	for _, a := range addrs {
		resp, err := cl.Get("http://" + a + "/debug/pprof/heap?gc=1")
		if err != nil {
			ok = false
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok = ok && resp.StatusCode == http.StatusOK
	}
	return ok
}

// scrapeGo reads the Go runtime gauges from tdsgate's /metrics endpoints
// and adds them up over the instances; nil if there are none or one fails.
func scrapeGo(addrs []string) map[string]float64 {
	if len(addrs) == 0 {
		return nil
	}
	out := map[string]float64{}
	cl := http.Client{Timeout: 5 * time.Second}
	for _, a := range addrs {
		resp, err := cl.Get("http://" + a + "/metrics")
		if err != nil {
			return nil
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			name, val, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			switch name {
			case "go_goroutines", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes":
				v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err == nil {
					out[name] += v
				}
			}
		}
		resp.Body.Close()
	}
	return out
}
