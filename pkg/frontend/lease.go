package frontend

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// lease is a client session's hold on its bucket's backend: what Serve
// gets between route and relay, whatever the bucket's pool_mode. The
// strategies (leaseFor) are:
//
//	none         dedicated: the client's own backend login, closed at Release
//	session      pooled (pooling.go): a pooled connection for the whole
//	             session, returned to the pool (made safe) at Release
//	transaction  multiplexed (mux.go): a pooled connection borrowed per
//	             request or transaction, none held between them
//
// Release is the one place a lease gives back what it holds — the slot
// and the backend connection — and it is called exactly once, by Serve,
// however the session ends (a lease that fails in open releases itself
// through the same method before open returns).
type lease interface {
	// open logs the client in: it takes a slot and a backend, or the
	// sub-pool's answer, as the strategy says. On error it has released
	// whatever it took.
	open(ctx context.Context) error
	// Login is the answer to the client's LOGIN7, written to it as is.
	Login() *backend.LoginResult
	// Relay serves the logged-in client until it leaves.
	Relay(c client) relay.Result
	// Release gives back the slot and backend connection held. Idempotent.
	Release()
	// leg is the backend connection the session holds for its whole life
	// (nil: none between requests, pool_mode transaction) and the relay
	// mode it will be relayed with, for the session table (sessions.go).
	leg(out net.Conn) (net.Conn, relay.Mode)
}

// client is the client side of a session, as a relay needs it.
type client struct {
	out net.Conn     // raw, or TLS for the session
	raw *net.TCPConn // the TCP connection under out
}

// leaseFor picks the bucket's strategy for a login. A login that may not be
// pooled (it changes the password) gets its own backend whatever the mode.
func (s *session) leaseFor(b *Bucket, l *tds.Login7, loginBytes []byte) lease {
	switch {
	case b.Pool == nil || !pool.Poolable(l):
		return &dedicated{s: s, b: b, l: l, loginBytes: loginBytes}
	case b.Mode == pool.ModeTransaction:
		return newMultiplexed(s, b, l, loginBytes)
	}
	return &pooled{s: s, b: b, l: l, loginBytes: loginBytes}
}

// dedicated is pool_mode none: a backend login of the client's own, relayed
// with splice (or in the kernel), closed when the client leaves.
type dedicated struct {
	s          *session
	b          *Bucket
	l          *tds.Login7
	loginBytes []byte

	ticket limiter.Ticket
	be     *backend.Conn
	res    *backend.LoginResult
}

func (d *dedicated) open(ctx context.Context) (err error) {
	defer releaseOnFailure(d, &err)
	if d.ticket, err = d.s.admit(ctx, d.b.ID); err != nil {
		return err
	}
	d.s.holdSlot(d.b.ID, d.ticket)
	hook("connect")
	d.s.ownBackend()
	if d.be, d.res, err = d.s.backendLogin(ctx, d.b, d.l, d.loginBytes); err != nil {
		return err
	}
	d.s.joinKernel(d.be, d.res, d.s.st.ClientIdleTimeout) // relay: sockmap: before the client can send (sockmap.go)
	// Logged in: the client's LOGIN7 is not needed again, and is not
	// kept for the session's life.
	d.l, d.loginBytes = nil, nil
	return nil
}

// Login hands the answer over: Serve writes it once, and the session
// does not keep it.
func (d *dedicated) Login() *backend.LoginResult {
	res := d.res
	d.res = nil
	return res
}

func (d *dedicated) leg(out net.Conn) (net.Conn, relay.Mode) {
	if d.be == nil {
		return nil, relay.ModeFramed
	}
	return d.be.Conn, relay.ModeFor(out, d.be.Conn)
}

// Relay splices (or relays TLS) until either side ends. A session in the
// kernel relay (relay: sockmap) never gets here: Serve hands it to
// startKernel instead.
func (d *dedicated) Relay(c client) relay.Result {
	return relay.Relay(c.out, d.be.Conn)
}

// startRelay is Relay with no goroutine waiting for it (starter).
func (d *dedicated) startRelay(c client, end func(relay.Result, *relay.PanicError)) {
	relay.Start(c.out, d.be.Conn, end)
}

// Release hangs up the backend first and gives the slot back only once
// the server has let go of the session (backend.Hangup: FIN, then the
// server's own close, at most backend.DefaultCloseWait): released
// earlier, the slot could let a new login reach the server while it
// still counts this session, one past the cap.
func (d *dedicated) Release() {
	d.s.leaveKernel()
	var local string
	if d.be != nil {
		if d.s.log.Enabled(context.Background(), slog.LevelInfo) {
			local = d.be.Raw.LocalAddr().String() // formatted only for the log line
		}
		d.be.Hangup(backend.DefaultCloseWait)
		d.be = nil
	}
	if d.ticket != nil {
		d.ticket.Release()
		d.ticket = nil
		d.s.slot.Store(nil)
		d.s.log.Info("slot release", "shed", d.s.shed.Load(), "backend_local", local)
	}
}

// holdSlot records that the session holds a slot of bucket (for
// ShedSessions), and logs the grant.
func (s *session) holdSlot(bucket string, t limiter.Ticket) {
	if t != nil {
		s.log.Info("slot acquire", "waited", t.Waited().Round(time.Microsecond))
	}
	s.slot.Store(&bucket)
	s.setState(StateConnecting, "")
}

// releaseOnFailure, deferred by open, releases the lease when open fails
// or panics (the panic goes on to Serve's recover, the slot already back).
func releaseOnFailure(l lease, err *error) {
	if r := recover(); r != nil {
		l.Release()
		panic(r)
	}
	if *err != nil {
		l.Release()
	}
}
