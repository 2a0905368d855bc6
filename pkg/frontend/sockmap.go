package frontend

import (
	"net"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/relay"
)

// SetKernelRelay makes sessions that are plaintext on both legs after the
// login, with a backend of their own, relay in the kernel through r (relay:
// sockmap). nil (the default) relays them with splice. Call it before
// serving.
func (h *Handler) SetKernelRelay(r relay.Redirector) { h.kernel = r }

// SetHeaderWalker makes the framed relays of pooled sessions take the
// server's packet headers from w's kernel walk rather than peek the runs
// they splice (header_walk: kernel). nil (the default): they peek. Call it
// before serving.
func (h *Handler) SetHeaderWalker(w relay.KernelWalker) { h.walker = w }

// joinKernel joins the session's two sockets in the kernel relay, when
// there is one and the session qualifies: its own backend (pool_mode none), a
// successful login, and both legs raw TCP after it. It runs after the
// backend's login answer was read and before it is written to the client,
// so neither side can be sending (relay.JoinKernel checks it). A session
// that cannot join (the map is full, bytes already queued) is relayed with
// splice. With client_idle_timeout set (idleTimeout > 0) sessions keep
// splice too: the idle check reads the client socket's TCP_INFO, and the
// kernel relay takes that socket out of the session.
func (s *session) joinKernel(be *backend.Conn, res *backend.LoginResult, idleTimeout time.Duration) {
	if s.h.kernel == nil || idleTimeout > 0 || !res.OK || be == nil {
		return
	}
	client, ok := s.out.(*net.TCPConn)
	if !ok {
		return
	}
	server, ok := be.Conn.(*net.TCPConn)
	if !ok {
		return
	}
	k, err := relay.JoinKernel(s.h.kernel, client, server)
	if err != nil {
		s.log.Info("sockmap relay: session not joined, relayed with splice", "err", err)
		return
	}
	s.mu.Lock() // abort reads it
	s.kernel = k
	s.mu.Unlock()
}

// leaveKernel takes the session's sockets out of the kernel relay on every
// path that did not start it (a started one leaves by itself).
func (s *session) leaveKernel() {
	if s.kernel != nil && !s.detached {
		s.kernel.Cancel()
	}
}

// startKernel hands the session to the kernel relay after its login reply
// and lets Serve's goroutine end: an idle session relayed in the kernel
// holds no goroutine (its ends are watched by one epoll for all
// sessions). When both directions have ended, on a short-lived goroutine,
// the rest of Serve runs in Serve's own order: relayEnded, then its
// deferred steps (uncount, release, recover, logClosed, untrack; the conns are
// closed already and pendingDone has run), which Serve's goroutine skips
// once detached is set.
func (s *session) startKernel(ls lease) {
	s.detached = true
	s.kernel.Start(s.replied, func(res relay.Result) {
		defer s.h.untrack(s)
		defer s.endCtx()
		defer s.logClosed()
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r)
			}
		}()
		defer ls.Release()
		defer s.uncount()
		s.relayed = res
		s.relayEnded(false)
	})
}

// unlessDetached runs f (one of Serve's deferred end steps) unless the
// session went on in the kernel relay, whose end runs it instead.
func (s *session) unlessDetached(f func()) {
	if !s.detached {
		f()
	}
}
