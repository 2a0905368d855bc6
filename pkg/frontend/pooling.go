package frontend

import (
	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// reuse checks out an idle pooled backend connection for the client's
// login (pool_mode session). It returns nil when there is none, or when
// the password does not match the one the pooled connections were
// accepted with: the client then logs in at the backend, which decides
// (a wrong password gets the server's own refusal; a changed one that the
// server accepts becomes the pool's credential, see activate).
func (s *session) reuse(b *Bucket, l *tds.Login7) (*pool.Conn, error) {
	if b.Pool == nil || !pool.Poolable(l) {
		return nil, nil
	}
	c, err := b.Pool.Checkout(pool.KeyOf(l, string(b.Target.Encryption)), l.Password)
	if err != nil || c == nil {
		return nil, err
	}
	s.mu.Lock()
	s.backend = c.Backend.Raw
	s.mu.Unlock()
	s.reused = true
	s.log.Info("pool: reusing a backend connection", "spid", c.Login.SPID, "reused", c.Reused)
	return c, nil
}

// activate records the backend's answer to the client's own login on its
// connection. A pooled login the server accepted makes the client's
// password the sub-pool's credential at once (as a salted hash): after a
// password change, the new password reuses from the next login on, and
// idle connections accepted under the old one are closed.
func (s *session) activate(c *pool.Conn, be *backend.Conn, res *backend.LoginResult) {
	c.Activate(be, res)
	if res.OK && c.Pooled() {
		c.Accept(s.login.Password)
	}
}

// relay runs the relay: splice or TLS for a connection of its own, framed
// (message boundaries tracked, RESETCONNECTION on a reused connection's
// first request) for a pooled one.
func (s *session) relay(c *pool.Conn) {
	if s.kernel != nil {
		s.relayed = s.kernel.Run(s.replied)
		return
	}
	if !c.Pooled() {
		s.relayed = relay.Relay(s.out, c.Backend.Conn)
		return
	}
	r := relay.Framed(s.out, c.Backend.Conn, s.raw, c.Backend.Raw, relay.FramedOptions{
		Reset: c.NeedsReset(), Version: s.login.TDSVersion, StopTimeout: c.ResetTimeout(),
	})
	s.framed = &r
	s.relayed = r.Result
}

// release ends the session's hold on its backend connection: a pooled one
// goes back to its pool, made safe first (its slot stays with it while it
// is idle); any other is closed and its slot released.
func (s *session) release(c *pool.Conn) {
	defer s.slot.Store(nil)
	if s.shed.Load() {
		c.Close("lease_shed")
		s.log.Info("slot release", "shed", true)
		return
	}
	if s.killedOutcome() != "" { // an administrator's kill (sessions.go): never pooled again
		c.Close(pool.ReasonKilled)
		s.log.Info("slot release", "killed", true)
		return
	}
	if !c.Pooled() || !c.Login.OK {
		c.Close(pool.ReasonLoginFailed)
		s.log.Info("slot release")
		return
	}
	r := s.framed
	if r == nil {
		r = &relay.FramedResult{} // the client left before the relay: nothing was sent
	}
	c.Return(r, s.login.Password)
	if st := c.State(); st == pool.StateIdle {
		s.log.Info("pool: backend connection idle", "spid", c.Login.SPID)
	} else {
		s.log.Info("slot release", "pool_state", st.String(), "broken", string(r.Broken), "in_flight", r.InFlight())
	}
}
