package listener

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Reasons a connection is refused at the door, before any TDS byte could
// carry an error to the client (counted by the OnRefused callback,
// proxy_client_refused_total{reason} in pkg/metrics).
const (
	// RefusedMaxConns: the process already holds max_client_connections.
	RefusedMaxConns = "max_client_connections"
	// RefusedPerSource: the source address already has
	// max_pending_per_source connections that have not logged in (the
	// frontend counts and refuses these).
	RefusedPerSource = "max_pending_per_source"
	// RefusedUntrustedPeer: the PROXY protocol is on and the peer is not
	// in proxy_protocol.trusted.
	RefusedUntrustedPeer = "untrusted_proxy_peer"
	// RefusedBadProxyHeader: a trusted peer sent no valid PROXY header.
	RefusedBadProxyHeader = "bad_proxy_header"
)

// RefusedReasons lists every reason, for metrics created up front.
var RefusedReasons = []string{RefusedMaxConns, RefusedPerSource, RefusedUntrustedPeer, RefusedBadProxyHeader}

// DefaultRefusalLogInterval is how often RefusalLog logs one reason at
// most.
const DefaultRefusalLogInterval = 10 * time.Second

// RefusalLog logs refused connections at most once per interval and
// reason, so that a flood of refusals (10,000 sockets from one host) is a
// few log lines, not one per connection. Each line names the last
// refused peer and how many were refused since the previous line. The
// zero value logs nothing; use NewRefusalLog. Safe for concurrent use.
type RefusalLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	reasons map[string]*refusalState
}

type refusalState struct {
	last       time.Time // when a line was last logged
	suppressed int       // refusals since that line, not logged
}

// NewRefusalLog returns a RefusalLog writing warnings to log, at most one
// per reason per interval (0: DefaultRefusalLogInterval).
func NewRefusalLog(log *slog.Logger, interval time.Duration) *RefusalLog {
	if interval <= 0 {
		interval = DefaultRefusalLogInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RefusalLog{log: log, interval: interval, now: time.Now, reasons: map[string]*refusalState{}}
}

// Refused records one refusal of remote for reason, with msg saying what
// happened, and logs it unless a line for reason was logged less than an
// interval ago.
func (r *RefusalLog) Refused(reason, remote, msg string, attrs ...any) {
	if r == nil || r.log == nil {
		return
	}
	now := r.now()
	r.mu.Lock()
	st := r.reasons[reason]
	if st == nil {
		st = &refusalState{}
		r.reasons[reason] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < r.interval {
		st.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	r.mu.Unlock()
	attrs = append(attrs, "reason", reason, logKeyRemote, remote, "refused_since_last_line", suppressed, "log_interval", r.interval)
	r.log.Log(context.Background(), slog.LevelWarn, msg, attrs...)
}
