package metrics

import (
	"fmt"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/tdsgate/tdsgate/pkg/listener"
)

// Front-door metric names.
const (
	NameClientRefused    = "proxy_client_refused_total"
	NameSessionPanics    = "proxy_session_panics_total"
	NameClientIdleClosed = "proxy_client_idle_timeouts_total"
	NameClientConns      = "proxy_client_connections"
	NameClientConnsMax   = "proxy_client_connections_max"
)

// doorMetrics count what happens at the door: connections refused before
// PRELOGIN, recovered session panics, idle sessions closed.
type doorMetrics struct {
	refused map[string]*vm.Counter // by listener.RefusedReasons; fixed at creation
	panics  *vm.Counter
	idle    *vm.Counter
	conns   *vm.Gauge
	max     *vm.Gauge
}

func (m *Metrics) newDoorMetrics() doorMetrics {
	d := doorMetrics{
		refused: make(map[string]*vm.Counter, len(listener.RefusedReasons)),
		panics:  m.set.NewCounter(NameSessionPanics),
		idle:    m.set.NewCounter(NameClientIdleClosed),
		conns:   m.set.NewGauge(NameClientConns, nil),
		max:     m.set.NewGauge(NameClientConnsMax, nil),
	}
	for _, r := range listener.RefusedReasons {
		d.refused[r] = m.set.NewCounter(fmt.Sprintf(`%s{reason=%q}`, NameClientRefused, r))
	}
	return d
}

// --- frontend.DoorObserver (and the listener's refusal callback) ---

// ClientRefused counts a connection refused before PRELOGIN.
func (m *Metrics) ClientRefused(reason string) {
	if c := m.door.refused[reason]; c != nil {
		c.Inc()
	}
}

// SessionPanicked counts a recovered session panic.
func (m *Metrics) SessionPanicked() { m.door.panics.Inc() }

// ClientIdleClosed counts a session closed by client_idle_timeout.
func (m *Metrics) ClientIdleClosed(string) { m.door.idle.Inc() }

// SetClientConnections sets the client connections the process holds and
// its max_client_connections (0: no cap), read at scrape time.
func (m *Metrics) SetClientConnections(n, max int64) {
	m.door.conns.Set(float64(n))
	m.door.max.Set(float64(max))
}
