package frontend

import (
	"errors"
	"fmt"

	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// reuse checks out an idle pooled backend connection for the client's
// login (pool_mode session). It returns nil, nil when there is none: the
// client then logs in at the backend. A password that does not match the
// one the pooled connections were accepted with is refused the way SQL
// Server refuses it (18456), and never reaches a pooled connection.
func (s *session) reuse(b *Bucket, l *tds.Login7) (*pool.Conn, error) {
	if b.Pool == nil || !pool.Poolable(l) {
		return nil, nil
	}
	c, err := b.Pool.Checkout(pool.KeyOf(l, string(b.Target.Encryption)), l.Password)
	if errors.Is(err, pool.ErrPassword) {
		return nil, &Refusal{Code: CodeLoginFailed, Class: 14, Msg: fmt.Sprintf("Login failed for user '%s'.", l.UserName), Err: err}
	}
	if c == nil {
		return nil, nil
	}
	s.mu.Lock()
	s.backend = c.Backend.Raw
	s.mu.Unlock()
	s.reused = true
	s.log.Info("pool: reusing a backend connection", "spid", c.Login.SPID, "reused", c.Reused)
	return c, nil
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
