package frontend

import (
	"crypto/tls"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/route"
)

// Mode is a client encryption mode.
type Mode string

// Client encryption modes.
const (
	// ModeNone: no TLS (PRELOGIN ENCRYPT_NOT_SUP, or no PRELOGIN at all).
	ModeNone Mode = "none"
	// ModeLogin: TLS for LOGIN7 only (ENCRYPT_OFF).
	ModeLogin Mode = "login"
	// ModeFull: TLS for the whole session (ENCRYPT_ON or ENCRYPT_REQ).
	ModeFull Mode = "full"
	// ModeStrict: TDS 8.0, TLS before PRELOGIN.
	ModeStrict Mode = "strict"
)

// Defaults.
const (
	// DefaultLoginTimeout bounds every client read until the login completes.
	DefaultLoginTimeout = 15 * time.Second
	// DefaultServerName is the server name in tdsgate's own ERROR tokens.
	DefaultServerName = "tdsgate"
)

// Settings are the frontend's options, swapped whole on reload.
type Settings struct {
	// ServerName appears in the ERROR tokens tdsgate sends.
	ServerName string
	// LoginTimeout bounds every read from the client until login completes.
	LoginTimeout time.Duration
	// Allowed lists the client encryption modes accepted.
	Allowed map[Mode]bool
	// TLS is the server certificate presented to clients.
	TLS *tls.Config
	// MaxPendingPerSource caps, per client source address, the
	// connections that have not presented their login yet; one more is
	// closed at once. 0: no cap.
	MaxPendingPerSource int
	// ClientIdleTimeout closes a logged-in session whose client socket
	// has been idle this long (see watchIdle). 0: off.
	ClientIdleTimeout time.Duration
}

// Bucket is what the frontend needs of a bucket.
type Bucket struct {
	ID      string
	Target  *backend.Target
	Breaker *backend.Breaker
	// Pool keeps the bucket's backend connections for reuse (pool_mode
	// session or transaction); nil: each client gets its own backend login.
	Pool *pool.Pool
	// Mode is the bucket's pool_mode; with a Pool, anything but
	// pool.ModeTransaction is session pooling.
	Mode pool.Mode
}

// Router maps a login to a bucket.
type Router interface {
	Route(l route.Login) (bucket string, rule int, ok bool)
}

// Runtime is the reloadable part of the handler's world.
type Runtime struct {
	Settings *Settings
	Router   Router
	Buckets  map[string]*Bucket
}

// Observer receives session events for metrics. All methods must be cheap.
// It takes plain values so that a metrics package need not import this one.
// Slot-level events (acquired, released, queued) come from the limiter's
// own observer.
type Observer interface {
	Relayed(bucket, relayMode string, clientToServer, serverToClient int64, d time.Duration)
	Refused(bucket string, number int32, reason string)
	BackendConnected(bucket string, d time.Duration, err error)
	ClientHandshake(mode string, err error)
}

type nopObserver struct{}

func (nopObserver) Relayed(string, string, int64, int64, time.Duration) {}
func (nopObserver) Refused(string, int32, string)                       {}
func (nopObserver) BackendConnected(string, time.Duration, error)       {}
func (nopObserver) ClientHandshake(string, error)                       {}

// Handler serves client connections. It is safe for concurrent use.
type Handler struct {
	runtime  atomic.Pointer[Runtime]
	Limiter  limiter.Limiter
	Log      *slog.Logger
	Observer Observer
	// Door counts refusals, panics and idle closes; nil: not counted.
	// Set it before serving.
	Door DoorObserver

	draining atomic.Bool
	ids      atomic.Uint64
	// relayed counts sessions by relay mode (index: relay.Mode).
	relayed [5]atomic.Int64
	mu      sync.Mutex
	live    map[*session]struct{}
	wg      sync.WaitGroup

	pending  pendingBySource
	refusals *listener.RefusalLog
	// kernel is the sockmap relay (SetKernelRelay); nil: splice.
	kernel relay.Redirector
	// walker walks pooled sessions' server headers in the kernel
	// (SetHeaderWalker); nil: their relays peek.
	walker relay.KernelWalker
}

// NewHandler returns a handler serving with rt and lim.
func NewHandler(rt *Runtime, lim limiter.Limiter, log *slog.Logger, obs Observer) *Handler {
	if log == nil {
		log = slog.Default()
	}
	if obs == nil {
		obs = nopObserver{}
	}
	h := &Handler{Limiter: lim, Log: log, Observer: obs, live: map[*session]struct{}{}, refusals: listener.NewRefusalLog(log, 0)}
	h.runtime.Store(rt)
	return h
}

// SetRuntime swaps settings, routes and buckets (SIGHUP reload). Sessions
// under way keep what they started with.
func (h *Handler) SetRuntime(rt *Runtime) { h.runtime.Store(rt) }

// Runtime returns the current runtime.
func (h *Handler) Runtime() *Runtime { return h.runtime.Load() }

// Relayed reports how many sessions took each relay path.
func (h *Handler) Relayed(m relay.Mode) int64 {
	if int(m) >= len(h.relayed) {
		return 0
	}
	return h.relayed[m].Load()
}

// Drain makes new logins fail with CodeShuttingDown.
func (h *Handler) Drain() { h.draining.Store(true) }

// Active is the number of sessions being served.
func (h *Handler) Active() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.live)
}

// Wait blocks until every session has ended.
func (h *Handler) Wait() { h.wg.Wait() }

// CloseAll closes every session's connections (end of the drain).
func (h *Handler) CloseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.live {
		s.abort()
	}
}

// ShedSessions closes sessions of bucket that hold a slot, newest first,
// until at most keep of them remain, and returns how many it closed. The
// Redis limiter calls it (through the app) when this instance must fall
// back to its share of the bucket's cap: its lease was lost and
// redis.lease_loss is close. A closed session's client sees its connection
// end; the slot goes back through the session's usual release (a pooled
// backend connection is closed, not returned to the pool). Sessions
// already being closed are not counted, so calling it again before they
// have ended closes no more than needed.
func (h *Handler) ShedSessions(bucket string, keep int) int {
	h.mu.Lock()
	var hold []*session
	for s := range h.live {
		if b := s.slot.Load(); b != nil && *b == bucket && !s.shed.Load() {
			hold = append(hold, s)
		}
	}
	h.mu.Unlock()
	n := len(hold) - max(keep, 0)
	if n <= 0 {
		return 0
	}
	slices.SortFunc(hold, func(a, b *session) int { return b.start.Compare(a.start) })
	for _, s := range hold[:n] {
		s.shed.Store(true)
		h.Log.Warn("session closed: this instance lost its redis lease and is over its share of the bucket's cap (redis.lease_loss close)",
			"session", s.id, "client", s.client, "bucket", bucket)
		s.abort()
	}
	return n
}

func (h *Handler) track(s *session) {
	h.wg.Add(1)
	h.mu.Lock()
	h.live[s] = struct{}{}
	h.mu.Unlock()
}

func (h *Handler) untrack(s *session) {
	h.mu.Lock()
	delete(h.live, s)
	h.mu.Unlock()
	h.wg.Done()
}

// asTCP returns the *net.TCPConn under c, if c is one.
func asTCP(c net.Conn) (*net.TCPConn, bool) {
	t, ok := c.(*net.TCPConn)
	return t, ok
}
