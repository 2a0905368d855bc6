package frontend

import (
	"context"
	"net"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// pooled is pool_mode session: one pooled backend connection for the
// whole session — an idle one already logged in with the client's login
// (reuse), or the client's own new login — relayed framed and returned to
// the pool, made safe, at Release. The slot goes with the connection.
type pooled struct {
	s          *session
	b          *Bucket
	l          *tds.Login7
	loginBytes []byte
	// password and version are what the session needs of its LOGIN7 once
	// it is logged in (l and loginBytes are not kept past open).
	password string
	version  uint32

	c *pool.Conn
	// framed is what the framed relay left (nil: the client left before).
	framed *relay.FramedResult
}

func (p *pooled) open(ctx context.Context) (err error) {
	defer releaseOnFailure(p, &err)
	p.s.ownBackend()
	p.password, p.version = p.l.Password, p.l.TDSVersion
	defer p.forgetLogin(&err)
	// Reuse: an idle backend already logged in as this client, if the
	// password is the one it was accepted with.
	if p.c = p.reuse(); p.c != nil {
		p.s.holdSlot(p.b.ID, nil)
		return nil
	}
	ticket, err := p.s.admit(ctx, p.b.ID)
	if err != nil {
		return err
	}
	p.s.holdSlot(p.b.ID, ticket)
	p.c = p.b.Pool.Begin(pool.KeyOf(p.l, string(p.b.Target.Encryption)), ticket)
	hook("connect")
	be, res, err := p.s.backendLogin(ctx, p.b, p.l, p.loginBytes)
	if err != nil {
		return err
	}
	p.activate(be, res)
	return nil
}

// forgetLogin, deferred by open, drops the client's LOGIN7 once the
// session is logged in: it is not kept for the session's life.
func (p *pooled) forgetLogin(err *error) {
	if *err == nil {
		p.l, p.loginBytes = nil, nil
	}
}

// reuse checks out an idle pooled backend connection for the client's
// login. It returns nil when there is none, or when the password does not
// match the one the pooled connections were accepted with: the client then
// logs in at the backend, which decides (a wrong password gets the
// server's own refusal; a changed one that the server accepts becomes the
// pool's credential, see activate).
func (p *pooled) reuse() *pool.Conn {
	c, _ := p.b.Pool.Checkout(pool.KeyOf(p.l, string(p.b.Target.Encryption)), p.l.Password)
	if c == nil {
		return nil
	}
	p.s.setBackend(c.Backend)
	p.s.log.Info("pool: reusing a backend connection", "spid", c.Login.SPID, "reused", c.Reused)
	return c
}

// activate records the backend's answer to the client's own login on its
// connection. A login the server accepted makes the client's password the
// sub-pool's credential at once (as a salted hash): after a password
// change, the new password reuses from the next login on, and idle
// connections accepted under the old one are closed.
func (p *pooled) activate(be *backend.Conn, res *backend.LoginResult) {
	p.c.Activate(be, res)
	if res.OK {
		p.c.Accept(p.l.Password)
	}
}

func (p *pooled) Login() *backend.LoginResult { return p.c.Login }

func (p *pooled) leg(net.Conn) (net.Conn, relay.Mode) {
	if p.c == nil || p.c.Backend == nil {
		return nil, relay.ModeFramed
	}
	return p.c.Backend.Conn, relay.ModeFramed
}

// Relay runs the framed relay: message boundaries tracked, RESETCONNECTION
// on a reused connection's first request.
func (p *pooled) Relay(c client) relay.Result {
	r := relay.Framed(c.out, p.c.Backend.Conn, c.raw, p.c.Backend.Raw, p.framedOptions())
	p.framed = &r
	return r.Result
}

// startRelay is Relay with no goroutine waiting for it (starter).
func (p *pooled) startRelay(c client, end func(relay.Result, *relay.PanicError)) {
	relay.StartFramed(c.out, p.c.Backend.Conn, c.raw, p.c.Backend.Raw, p.framedOptions(), func(r relay.FramedResult, pe *relay.PanicError) {
		if pe == nil {
			p.framed = &r
		}
		end(r.Result, pe)
	})
}

func (p *pooled) framedOptions() relay.FramedOptions {
	return relay.FramedOptions{Reset: p.c.NeedsReset(), Version: p.version, StopTimeout: p.c.ResetTimeout(), Walker: p.s.h.walker}
}

// Release returns the connection to its pool, made safe first (its slot
// stays with it while it is idle); a connection whose login failed, or
// whose session was shed, killed or aborted, is closed and its slot
// released once the server has let go (the pool's CloseWait).
func (p *pooled) Release() {
	c := p.c
	if c == nil {
		return
	}
	p.c = nil
	defer p.s.slot.Store(nil)
	s := p.s
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
	if c.Login == nil || !c.Login.OK {
		c.Close(pool.ReasonLoginFailed)
		s.log.Info("slot release")
		return
	}
	if s.backendHalfClosed() { // abort (drain's end): ended, never pooled again
		c.Close(pool.ReasonBroken)
		s.log.Info("slot release", "aborted", true)
		return
	}
	r := p.framed
	if r == nil {
		r = &relay.FramedResult{} // the client left before the relay: nothing was sent
	}
	c.Return(r, p.password)
	if st := c.State(); st == pool.StateIdle {
		s.log.Info("pool: backend connection idle", "spid", c.Login.SPID)
	} else {
		s.log.Info("slot release", "pool_state", st.String(), "broken", string(r.Broken), "in_flight", r.InFlight())
	}
}
