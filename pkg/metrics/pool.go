package metrics

import (
	"fmt"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/tdsgate/tdsgate/pkg/pin"
	"github.com/tdsgate/tdsgate/pkg/pool"
)

// Pool metric names (per bucket; discarded also by reason).
const (
	NamePoolHits          = "proxy_pool_hits_total"
	NamePoolMisses        = "proxy_pool_misses_total"
	NamePoolResets        = "proxy_pool_resets_total"
	NamePoolResetFailures = "proxy_pool_reset_failures_total"
	NamePoolDiscarded     = "proxy_pool_discarded_total"
)

// poolMetrics are one bucket's session pool metrics.
type poolMetrics struct {
	hits, misses, resets, resetFailures *vm.Counter
	discarded                           map[string]*vm.Counter // by reason; fixed at creation
}

func (m *Metrics) newPoolMetrics(id string) poolMetrics {
	l := fmt.Sprintf(`{bucket="%s"}`, escape(id))
	pm := poolMetrics{
		hits:          m.set.NewCounter(NamePoolHits + l),
		misses:        m.set.NewCounter(NamePoolMisses + l),
		resets:        m.set.NewCounter(NamePoolResets + l),
		resetFailures: m.set.NewCounter(NamePoolResetFailures + l),
		discarded:     make(map[string]*vm.Counter, len(pool.Reasons)),
	}
	for _, r := range pool.Reasons {
		pm.discarded[r] = m.set.NewCounter(fmt.Sprintf(`%s{bucket="%s",reason=%q}`, NamePoolDiscarded, escape(id), r))
	}
	return pm
}

// --- pool.Observer ---

var _ pool.Observer = (*Metrics)(nil)

// Idle sets proxy_connections_idle: the bucket's idle pooled connections.
func (m *Metrics) Idle(bucket string, n int) { m.SetIdle(bucket, n) }

// Checkout counts a login to a pooling bucket that found an idle
// connection (hit) or not (miss).
func (m *Metrics) Checkout(bucket string, hit bool) {
	if b := m.bucket(bucket); b != nil {
		if hit {
			b.pool.hits.Inc()
		} else {
			b.pool.misses.Inc()
		}
	}
}

// Reset counts a connection made safe for reuse after its client left, or
// one that could not be (and was closed).
func (m *Metrics) Reset(bucket string, ok bool) {
	if b := m.bucket(bucket); b != nil {
		if ok {
			b.pool.resets.Inc()
		} else {
			b.pool.resetFailures.Inc()
		}
	}
}

// Discarded counts a pooled connection closed, by reason (pool.Reasons).
func (m *Metrics) Discarded(bucket, reason string) {
	if b := m.bucket(bucket); b != nil {
		if c := b.pool.discarded[reason]; c != nil {
			c.Inc()
		}
	}
}

// Multiplexing metric names (pool_mode transaction; client sessions for
// every mode).
const (
	NameClientSessions = "proxy_client_sessions"
	NameSessionsPinned = "proxy_sessions_pinned_total"
	NameBorrowWait     = "proxy_borrow_wait_duration_seconds"
	// PinOther counts a pin reason not in PinReasons.
	PinOther = "other"
)

// PinReasons are the reasons proxy_sessions_pinned_total has series for
// from the start: pkg/pin's, and the multiplexed relay's own
// (frontend.PinReasons); any other is counted as PinOther.
var PinReasons = func() []string {
	var out []string
	for _, r := range pin.Reasons {
		out = append(out, string(r))
	}
	return append(out, "session_env", "unscanned", "unshareable", PinOther)
}()

// BorrowWaitBuckets run from an idle connection at hand (µs) to a wait in
// the bucket's queue up to the default queue_timeout.
var BorrowWaitBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// muxMetrics are one bucket's multiplexing metrics.
type muxMetrics struct {
	clients    *vm.Gauge
	borrowWait *vm.PrometheusHistogram
	pinned     map[string]*vm.Counter // by reason; fixed at creation
}

func (m *Metrics) newMuxMetrics(id string) muxMetrics {
	l := fmt.Sprintf(`{bucket="%s"}`, escape(id))
	mm := muxMetrics{
		clients:    m.set.NewGauge(NameClientSessions+l, nil),
		borrowWait: m.set.NewPrometheusHistogramExt(NameBorrowWait+l, BorrowWaitBuckets),
		pinned:     make(map[string]*vm.Counter, len(PinReasons)),
	}
	for _, r := range PinReasons {
		mm.pinned[r] = m.set.NewCounter(fmt.Sprintf(`%s{bucket="%s",reason=%q}`, NameSessionsPinned, escape(id), r))
	}
	return mm
}

// ClientSessions adds delta to proxy_client_sessions: the bucket's
// logged-in client sessions (frontend.MuxObserver).
func (m *Metrics) ClientSessions(bucket string, delta int) {
	if b := m.bucket(bucket); b != nil {
		b.mux.clients.Add(float64(delta))
	}
}

// Pinned counts a session of the bucket pinned to its backend connection,
// by reason (frontend.MuxObserver).
func (m *Metrics) Pinned(bucket, reason string) {
	if b := m.bucket(bucket); b != nil {
		c := b.mux.pinned[reason]
		if c == nil {
			c = b.mux.pinned[PinOther]
		}
		c.Inc()
	}
}

// BorrowWait records the time a request waited for a backend connection
// of its sub-pool (frontend.MuxObserver); refused requests are not
// recorded.
func (m *Metrics) BorrowWait(bucket string, d time.Duration, ok bool) {
	if b := m.bucket(bucket); b != nil && ok {
		b.mux.borrowWait.Update(d.Seconds())
	}
}
