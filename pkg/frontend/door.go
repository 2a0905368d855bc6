package frontend

import (
	"crypto/tls"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/pkg/relay"
)

// DoorObserver (Handler.Door) counts what happens at the door and to a
// session's life outside the stages: refusals before PRELOGIN (reason:
// one of listener.RefusedReasons), recovered panics, and sessions closed
// by client_idle_timeout. All methods must be cheap.
type DoorObserver interface {
	ClientRefused(reason string)
	SessionPanicked()
	ClientIdleClosed(bucket string)
}

// pendingBySource counts, per client source address, the connections
// that have not yet presented their login (max_pending_per_source).
type pendingBySource struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// acquire counts one more pending connection from a, unless a already
// has max (max <= 0: no cap, nothing counted).
func (p *pendingBySource) acquire(a netip.Addr, max int) (ok, counted bool) {
	if max <= 0 {
		return true, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[netip.Addr]int{}
	}
	if p.n[a] >= max {
		return false, false
	}
	p.n[a]++
	return true, true
}

func (p *pendingBySource) release(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[a] <= 1 {
		delete(p.n, a)
		return
	}
	p.n[a]--
}

// Pending returns the number of connections from source address a that
// have not presented their login yet (0 when max_pending_per_source is
// off).
func (h *Handler) Pending(a netip.Addr) int {
	h.pending.mu.Lock()
	defer h.pending.mu.Unlock()
	return h.pending.n[a.Unmap()]
}

// sourceOf is the IP a connection comes from (the PROXY header's source
// when there is one).
func sourceOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// admitSource takes a pending place for c's source, or refuses c: it is
// closed (nothing is readable before PRELOGIN), counted and logged once
// per interval. done gives the place back; it may be called more than
// once.
func (h *Handler) admitSource(c net.Conn, max int) (done func(), ok bool) {
	src := sourceOf(c)
	ok, counted := h.pending.acquire(src, max)
	if !ok {
		// Counted before the close: whoever sees the close sees the count.
		if h.Door != nil {
			h.Door.ClientRefused(listener.RefusedPerSource)
		}
		h.refusals.Refused(listener.RefusedPerSource, c.RemoteAddr().String(), "connection refused: too many connections from this source have not logged in yet", "max_pending_per_source", max)
		_ = c.Close()
		return nil, false
	}
	if !counted {
		return func() {}, true
	}
	return sync.OnceFunc(func() { h.pending.release(src) }), true
}

// recovered handles a panic in a session (called from a deferred
// function with recover's value): the stack goes to the log, the panic is
// counted, the client's connection is closed. The backend leg is not
// touched here: the deferred release already ran as the panic unwound
// (closing it and releasing the slot, or returning it to its pool made
// safe), and connect closes its own on a panic before the handover.
func (s *session) recovered(r any) {
	s.outcome = "panic"
	stack := debug.Stack()
	if p, ok := r.(*relay.PanicError); ok {
		// Raised again from a relay goroutine: its own stack says where.
		r, stack = p.Value, p.Stack
	}
	s.log.Error("session panicked; closed, the process keeps serving", "panic", r, "stack", string(stack))
	if s.h.Door != nil {
		s.h.Door.SessionPanicked()
	}
	_ = s.raw.Close()
}

// testHook, when set (tests only, see export_test.go), is called at each
// stage of Serve with the stage's name: "handshake", "connect" (slot held, no backend yet), "relay".
var testHook atomic.Pointer[func(stage string)]

func hook(stage string) {
	if f := testHook.Load(); f != nil {
		(*f)(stage)
	}
}

// Idle detection. A logged-in client is idle when no byte has moved on
// its socket, either way, for client_idle_timeout, and the last bytes
// were the server's (a client that sent a request and waits for its
// answer is not idle, however long the query runs). The kernel keeps the
// times of the last data received and sent on every TCP socket
// (TCP_INFO's tcpi_last_data_recv / tcpi_last_data_sent), so the check
// needs no wrapper on the relay: the splice path stays a splice, and the
// same check serves the TLS and framed paths. A timer per session fires
// once per timeout while the session is busy, and closes it when idle.

// idleCheckMin bounds how soon a busy session is checked again.
const idleCheckMin = 50 * time.Millisecond

// watchIdle closes the session's client connection once it has been idle
// for timeout. stop ends the watch; idled reports whether it closed it.
func (s *session) watchIdle(timeout time.Duration) (stop func() (idled bool)) {
	var (
		mu      sync.Mutex
		stopped bool
		idled   bool
		t       *time.Timer
	)
	var check func()
	check = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		recv, sent, err := lastData(s.raw)
		if err != nil {
			return // the socket is gone: the relay is ending
		}
		quiet := min(recv, sent)
		if quiet >= timeout && recv >= sent {
			idled = true
			s.closeIdle(timeout)
			return
		}
		next := timeout - quiet
		if recv < sent {
			next = timeout // a request in flight: look again later
		}
		t.Reset(max(next, idleCheckMin))
	}
	mu.Lock()
	t = time.AfterFunc(timeout, check)
	mu.Unlock()
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
		return idled
	}
}

// closeIdle ends an idle session from the client side: a TLS client gets
// close_notify, then the socket is closed. The relay ends as if the
// client had left, and the session's release runs as usual (the slot is
// released, or the pooled connection made safe and returned).
func (s *session) closeIdle(timeout time.Duration) {
	s.log.Info("client idle timeout: closing the session", "client_idle_timeout", timeout)
	if s.h.Door != nil {
		s.h.Door.ClientIdleClosed(s.bucket)
	}
	if tc, ok := s.out.(*tls.Conn); ok {
		_ = s.raw.SetWriteDeadline(time.Now().Add(time.Second))
		_ = tc.CloseWrite()
	}
	_ = s.raw.Close()
}

// lastData returns how long ago the kernel last received data from and
// sent data to the peer of c (TCP_INFO, millisecond resolution).
func lastData(c *net.TCPConn) (recv, sent time.Duration, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, 0, err
	}
	if gerr != nil {
		return 0, 0, gerr
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, time.Duration(info.Last_data_sent) * time.Millisecond, nil
}
