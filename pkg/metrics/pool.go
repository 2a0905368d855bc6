package metrics

import (
	"fmt"

	vm "github.com/VictoriaMetrics/metrics"

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
