package backend

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/clock"
)

// Breaker defaults.
const (
	// DefaultBreakerFailures is how many consecutive connect failures open the breaker.
	DefaultBreakerFailures = 5
	// DefaultProbeInterval is how often an open breaker probes its backend.
	DefaultProbeInterval = 2 * time.Second
)

// BreakerState is the state of a bucket's breaker.
//
// Transitions:
//
//	closed --(Failures consecutive connect failures)--> open
//	open   --(a PRELOGIN probe succeeds)--------------> closed
//	closed --(any success)----------------------------> closed, failure count reset
//
// While open, Allow fails at once and a single prober goroutine calls the
// probe every ProbeInterval; logins never serve as probes, so an open
// breaker costs clients nothing but the refusal. There is no half-open
// state: the probe is a real PRELOGIN exchange, which is what a login
// would need first anyway.
type BreakerState uint8

// Breaker states.
const (
	BreakerClosed BreakerState = iota
	BreakerOpen
)

func (s BreakerState) String() string {
	if s == BreakerOpen {
		return "open"
	}
	return "closed"
}

// OpenError is returned by Allow while the breaker is open.
type OpenError struct {
	Bucket   string
	Failures int
	Since    time.Time
	Last     error
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("bucket %s: backend unavailable, circuit open after %d consecutive connect failures (since %s): %v",
		e.Bucket, e.Failures, e.Since.UTC().Format(time.RFC3339), e.Last)
}

// Breaker is one bucket's circuit breaker. Its exported fields are set
// before first use; Failures and ProbeInterval change afterwards only
// through SetLimits (a reload), which every reader honours under the lock.
type Breaker struct {
	Bucket        string
	Failures      int
	ProbeInterval time.Duration
	// Probe checks the backend; it must honour ctx.
	Probe func(ctx context.Context) error
	// OnChange, if set, is called (outside the lock) on every transition.
	OnChange func(bucket string, s BreakerState, err error)
	// Clock times the probes and Since (tests advance a clock.Fake).
	// nil: clock.Real.
	Clock clock.Clock

	mu       sync.Mutex
	state    BreakerState
	count    int
	since    time.Time
	last     error
	stop     chan struct{}
	stopOnce sync.Once
	probing  bool
}

// Allow returns nil when a login may try the backend.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen {
		return &OpenError{Bucket: b.Bucket, Failures: b.count, Since: b.since, Last: b.last}
	}
	return nil
}

// State reports the state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Success records a successful connect.
func (b *Breaker) Success() {
	b.mu.Lock()
	b.count = 0
	b.mu.Unlock()
}

// SetLimits changes Failures and ProbeInterval of a breaker in use (a
// reload): the next failure counts against the new threshold, the next
// probe waits the new interval.
func (b *Breaker) SetLimits(failures int, probeInterval time.Duration) {
	b.mu.Lock()
	b.Failures, b.ProbeInterval = failures, probeInterval
	b.mu.Unlock()
}

// Limits returns Failures and ProbeInterval in force.
func (b *Breaker) Limits() (failures int, probeInterval time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Failures, b.ProbeInterval
}

// Failure records a failed connect; the threshold-th consecutive one
// opens the breaker and starts the prober.
func (b *Breaker) Failure(err error) {
	b.mu.Lock()
	n := b.Failures
	if n <= 0 {
		n = DefaultBreakerFailures
	}
	b.count++
	b.last = err
	opened := false
	if b.state == BreakerClosed && b.count >= n {
		b.state, b.since, opened = BreakerOpen, b.clock().Now(), true
		if b.stop == nil {
			b.stop = make(chan struct{})
		}
	}
	startProber := opened && !b.probing && b.Probe != nil
	if startProber {
		b.probing = true
	}
	b.mu.Unlock()
	if opened && b.OnChange != nil {
		b.OnChange(b.Bucket, BreakerOpen, err)
	}
	if startProber {
		go b.prober()
	}
}

// probeIntervalLocked is ProbeInterval or its default; called with b.mu held.
func (b *Breaker) probeIntervalLocked() time.Duration {
	if b.ProbeInterval <= 0 {
		return DefaultProbeInterval
	}
	return b.ProbeInterval
}

func (b *Breaker) prober() {
	b.mu.Lock()
	iv := b.probeIntervalLocked()
	b.mu.Unlock()
	clk := b.clock()
	for {
		t := clk.NewTimer(iv)
		select {
		case <-b.stop:
			t.Stop()
			b.mu.Lock()
			b.probing = false
			b.mu.Unlock()
			return
		case <-t.C():
		}
		ctx, cancel := context.WithTimeout(context.Background(), iv)
		err := b.Probe(ctx)
		cancel()
		if err == nil {
			b.mu.Lock()
			b.state, b.count, b.probing = BreakerClosed, 0, false
			b.mu.Unlock()
			if b.OnChange != nil {
				b.OnChange(b.Bucket, BreakerClosed, nil)
			}
			return
		}
		b.mu.Lock()
		b.last = err
		iv = b.probeIntervalLocked() // a reload may have changed it
		b.mu.Unlock()
	}
}

func (b *Breaker) clock() clock.Clock {
	if b.Clock != nil {
		return b.Clock
	}
	return clock.Real{}
}

// Close stops the prober.
func (b *Breaker) Close() {
	b.mu.Lock()
	if b.stop == nil {
		b.stop = make(chan struct{})
	}
	b.mu.Unlock()
	b.stopOnce.Do(func() { close(b.stop) })
}
