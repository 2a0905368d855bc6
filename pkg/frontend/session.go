package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/route"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
)

// session is one client connection's state. Its life is Serve, top to
// bottom.
type session struct {
	h     *Handler
	id    uint64
	raw   *net.TCPConn
	start time.Time
	// accepted is when the listener accepted the connection (before a
	// PROXY header); the login deadline counts from it.
	accepted time.Time
	log      *slog.Logger
	// The attributes of the session's log lines beyond its id, client,
	// encryption and bucket, and which of them it carries (logattrs.go).
	logUser, logDatabase, logApp string
	logRule                      int
	logStage                     logStage
	// st is the settings the session started with.
	st *Settings

	client string // the client's address (from the PROXY header when there is one)
	mode   Mode   // the client's encryption mode
	// out is where replies to the client go: raw, or TLS for the session.
	out net.Conn
	// version is the client's TDS version (0 before LOGIN7).
	version uint32
	login   *tds.Login7
	bucket  string
	outcome string
	relayed relay.Result
	// kernel is the session's sockmap relay when it joined one before the
	// login reply (sockmap.go); replied is the reply's length.
	kernel  *relay.Kernel
	replied int
	// detached: the session went on in the kernel relay without this
	// goroutine, whose deferred end steps then do not run (sockmap.go).
	detached bool
	// uncount takes the session out of proxy_client_sessions (countClient);
	// endCtx ends the session's context (withAdmin). Both run at the end,
	// also of a detached session.
	uncount, endCtx func()

	mu      sync.Mutex
	backend net.Conn
	// own: the backend connection is held for the whole session (pool_mode
	// none or session): abort half-closes it (relay.HalfClose; halfClosed)
	// instead of closing it, so that the lease's Release can wait for the
	// server to let go before the slot goes back (backend.Hangup). A
	// multiplexed session's borrowed connection is closed.
	own, halfClosed bool

	// slot is the bucket this session holds a slot of (nil: none), for
	// Handler.ShedSessions; shed says ShedSessions closed it.
	slot atomic.Pointer[string]
	shed atomic.Bool

	admin adminState // the session table's view and the kill (sessions.go)
}

// Serve runs one client session: handshake → route → lease → login reply
// → relay → release, with no branch on the bucket's pool_mode: the lease
// (lease.go) is the strategy. The deferred Release gives back the slot and
// backend the lease holds exactly once, however the session ends — or,
// pooling, keeps the slot with the connection in the pool.
//
// With relay: sockmap, Serve returns once the session is in the kernel
// relay, whose end runs the remaining steps in the same order
// (sockmap.go).
//
// ctx is the serve context: it ends when the instance gives up draining,
// and with it any wait in a bucket's queue and any backend login.
//
// c is the accepted connection: a *net.TCPConn, or the listener's
// *listener.Conn when the PROXY protocol is on, whose RemoteAddr is the
// real client from the header. The session works on the raw
// *net.TCPConn underneath, so the relay can splice.
func (h *Handler) Serve(ctx context.Context, c net.Conn) {
	rt := h.Runtime()
	raw, ok := listener.TCPConn(c)
	if !ok {
		c.Close()
		h.Log.Error("session refused: not a TCP connection", "type", fmt.Sprintf("%T", c))
		return
	}
	// 0. The door: a place among the source's connections that have not
	// logged in yet, given back once LOGIN7 has been read.
	pendingDone, ok := h.admitSource(c, rt.Settings.MaxPendingPerSource)
	if !ok {
		return
	}
	defer pendingDone()
	s := &session{h: h, id: h.ids.Add(1), raw: raw, start: time.Now(), client: c.RemoteAddr().String()}
	s.accepted = s.start
	if pc, ok := c.(*listener.Conn); ok && !pc.Accepted().IsZero() {
		s.accepted = pc.Accepted()
	}
	s.out, s.st = raw, rt.Settings
	ctx, endCtx := s.withAdmin(ctx)
	s.endCtx = endCtx
	defer s.unlessDetached(endCtx)
	h.track(s)
	defer s.unlessDetached(func() { h.untrack(s) })
	defer s.unlessDetached(func() { raw.Close() })
	s.log = newSessionLog(h.Log, s)
	defer s.unlessDetached(s.logClosed)
	// A panic ends this session only. Deferred after logClosed and before
	// release: the slot is released (or the pooled connection returned)
	// first, once, as the panic unwinds, then this logs and counts it.
	defer func() {
		if r := recover(); r != nil {
			s.recovered(r)
		}
	}()
	s.log.Info("session accepted")

	// 1. Handshake: PRELOGIN, TLS, LOGIN7.
	// The login's deep calls run on a goroutine of their own (stack.go).
	var login *tds.Login7
	var loginBytes []byte
	var err error
	onFreshStack(func() { login, loginBytes, err = s.handshake(ctx, rt.Settings) })
	pendingDone()
	h.Observer.ClientHandshake(string(s.mode), err)
	hook("handshake")
	if err != nil {
		s.fail(err)
		return
	}
	s.noteLogin(login)
	s.logUser, s.logDatabase, s.logApp = login.UserName, login.Database, login.AppName
	s.logStage = logLoggedIn

	// 2. Route.
	var bucketID string
	var rule int
	onFreshStack(func() {
		bucketID, rule, ok = rt.Router.Route(route.Login{ServerName: login.ServerName, Database: login.Database, User: login.UserName, App: login.AppName, Password: login.Password, Source: s.client})
	})
	bucket := rt.Buckets[bucketID]
	if rule == route.RuleThrottled {
		s.fail(tooManyFailures())
		return
	}
	if !ok || bucket == nil {
		s.fail(refuse(CodeNoRoute, nil, "tdsgate has no route for login '%s' to database '%s' (server '%s', application '%s'); check the user, the password, the database, or the proxy's routes", login.UserName, login.Database, login.ServerName, login.AppName))
		return
	}
	s.bucket = bucketID
	s.noteBucket(bucketID)
	s.logRule, s.logStage = rule, logRouted

	if h.draining.Load() {
		s.fail(refuse(CodeShuttingDown, nil, "this tdsgate instance is shutting down; connect again"))
		return
	}

	// 3. Lease: a slot and a backend connection (or, pooling, the
	// sub-pool's), as the bucket's pool_mode says (lease.go). Release
	// gives back whatever it holds, once, however the session ends.
	ls := s.leaseFor(bucket, login, loginBytes)
	defer s.unlessDetached(ls.Release)
	if onFreshStack(func() { err = ls.open(ctx) }); err != nil {
		s.fail(err)
		return
	}

	// 4. The login answer goes to the client as the backend framed it (or
	// as the pool replays it).
	// Its calls (the session table, metrics) run on a fresh stack too:
	// this goroutine idles in the relay next, and keeps whatever stack
	// it has grown to by then (stack.go).
	res := ls.Login()
	var n int
	onFreshStack(func() {
		s.enterRelay(ls)
		n, err = s.out.Write(res.Response)
		if err == nil && res.OK {
			s.uncount = s.countClient(bucketID)
		}
	})
	if err != nil {
		s.outcome = "client_gone"
		return
	}
	s.replied = n
	if !res.OK {
		s.outcome = "backend_login_failed"
		if res.Error != nil {
			s.log.Info("backend refused login", "number", res.Error.Number, "message", res.Error.Message)
		}
		return
	}

	// 5. Relay until either side ends (a pooled session: until the client
	// leaves, or client_idle_timeout closes it); 6. release (deferred).
	defer s.unlessDetached(s.uncount)
	hook("relay")
	if s.kernel != nil {
		// relay: sockmap: the session goes on with no goroutine; its end
		// runs relayEnded and the deferred steps above (sockmap.go).
		s.startKernel(ls)
		return
	}
	// Every other relay runs on goroutines of its own, started with the
	// smallest stack: Serve's frame, big with the login's locals, would
	// otherwise sit below a direction that idles for the session's life
	// (stack.go). Its end runs the deferred steps above, as the kernel
	// relay's does. A lease that can start its relay (dedicated, pooled)
	// has no goroutine waiting for it: each direction waits on its own
	// socket, and the last to end runs the end steps.
	s.detached = true
	idled := s.idleWatch(rt.Settings.ClientIdleTimeout)
	cl := client{out: s.out, raw: s.raw}
	if st, ok := ls.(starter); ok {
		st.startRelay(cl, func(res relay.Result, p *relay.PanicError) {
			s.relayDone(ls, idled, func() relay.Result {
				if p != nil {
					panic(p)
				}
				return res
			})
		})
		// Nothing the session does from here on waits on its context (a
		// kill closes the legs): ending it now frees what it holds
		// rather than keep it for the session's life. The session keeps
		// no LOGIN7 either (fail, its one reader, is behind it).
		s.endCtx()
		s.login = nil
		return
	}
	go s.relayDone(ls, idled, func() relay.Result { return ls.Relay(cl) })
}

// starter is a lease whose relay runs with no goroutine waiting for it
// (relay.Start, relay.StartFramed): end runs once, on one of the relay's
// goroutines, when both directions have ended, with the result or the
// panic of a direction.
type starter interface {
	startRelay(c client, end func(relay.Result, *relay.PanicError))
}

// idleWatch starts client_idle_timeout's watch (0: none); the func it
// returns stops it and says whether it closed the session.
func (s *session) idleWatch(timeout time.Duration) func() bool {
	if timeout <= 0 {
		return func() bool { return false }
	}
	return s.watchIdle(timeout)
}

// relayDone takes the relay's result from relayed (which may panic: a
// direction's panic, or the relay's own) and runs Serve's end steps in
// Serve's order (relayEnded; uncount, release, recover, logClosed, the
// client's close, the admin context, untrack).
//
//go:noinline
func (s *session) relayDone(ls lease, idled func() bool, relayed func() relay.Result) {
	defer s.h.untrack(s)
	defer s.endCtx()
	defer s.raw.Close()
	defer s.logClosed()
	defer func() {
		if r := recover(); r != nil {
			s.recovered(r)
		}
	}()
	defer ls.Release()
	defer s.uncount()
	s.relayed = relayed()
	s.relayEnded(idled())
}

// relayEnded counts the relay's end by mode and reports it (Serve's last
// step).
func (s *session) relayEnded(idled bool) {
	h := s.h
	h.relayed[s.relayed.Mode].Add(1)
	s.outcome = "ok"
	if idled {
		s.outcome = "client_idle_timeout"
	} else if s.relayed.Err != nil {
		s.outcome = "relay_error"
		if o, ok := h.Observer.(relayErrorObserver); ok {
			o.RelayError(s.bucket, s.relayed.Mode.String(), s.relayed.Err)
		}
	}
	h.Observer.Relayed(s.bucket, s.relayed.Mode.String(), s.relayed.ClientToServer, s.relayed.ServerToClient, time.Since(s.start))
}

// countClient counts the logged-in session in proxy_client_sessions until
// the returned function runs.
func (s *session) countClient(bucket string) func() {
	o, ok := s.h.Observer.(MuxObserver)
	if !ok {
		return func() {}
	}
	o.ClientSessions(bucket, 1)
	return func() { o.ClientSessions(bucket, -1) }
}

// relayErrorObserver is an optional Observer method for relays that ended
// with an error rather than a clean close.
type relayErrorObserver interface {
	RelayError(bucket, relayMode string, err error)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *session) logClosed() {
	if o := s.killedOutcome(); o != "" {
		s.outcome = o
	}
	if s.outcome == "" {
		s.outcome = "closed"
	}
	attrs := []any{"outcome", s.outcome, "duration", time.Since(s.start).Round(time.Microsecond)}
	if r := s.relayed; r.Mode != 0 {
		attrs = append(attrs, "relay_mode", r.Mode.String(), "bytes_in", r.ClientToServer, "bytes_out", r.ServerToClient, "ended_by", r.Ended.String())
		if r.Err != nil {
			attrs = append(attrs, "err", r.Err.Error())
		}
	}
	s.log.Info("session closed", attrs...)
}

// setBackend records the backend connection the session is on, for abort
// (nil: none).
func (s *session) setBackend(be *backend.Conn) {
	s.mu.Lock()
	s.backend = nil
	if be != nil {
		s.backend = be.Raw
	}
	s.mu.Unlock()
}

// ownBackend records that the session holds its backend connection for
// its whole life (dedicated, lease.go; pooled, pooling.go).
func (s *session) ownBackend() {
	s.mu.Lock()
	s.own = true
	s.mu.Unlock()
}

// backendHalfClosed reports whether abort half-closed the session's own
// backend connection: it is ended, never to be pooled again.
func (s *session) backendHalfClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halfClosed
}

// abort ends both legs (drain deadline, shed, kill): the client's is
// closed; the session's own backend leg is half-closed, whatever reads or
// writes it woken, and closed by the lease's Release once the server has
// let go (backend.Hangup); a pooled one is closed.
func (s *session) abort() {
	s.raw.Close()
	s.mu.Lock()
	if s.backend != nil {
		if s.own {
			relay.HalfClose(s.backend)
			s.halfClosed = true
		} else {
			s.backend.Close()
		}
	}
	if s.kernel != nil {
		s.kernel.Stop() // the kernel relay ends the session
	}
	s.mu.Unlock()
}

// fail ends a session that could not be served. A Refusal becomes a TDS
// ERROR + DONE for the client once it has sent LOGIN7; before that there
// is no message it could read, and the connection is only closed.
func (s *session) fail(err error) {
	err = s.killedErr(err)
	var r *Refusal
	if !errors.As(err, &r) {
		s.outcome = "handshake_error"
		s.log.Info("session refused", "err", err)
		return
	}
	s.outcome = r.Code.String()
	s.h.Observer.Refused(s.bucket, int32(r.Code), r.Code.String())
	attrs := []any{"code", int32(r.Code), "reason", r.Code.String(), "message", r.Msg}
	if r.Err != nil {
		attrs = append(attrs, "err", r.Err.Error())
	}
	s.log.Warn("session refused", attrs...)
	if s.login == nil && r.Code != CodeEncryption && r.Code != CodeBadLogin {
		return
	}
	v := s.version
	if v == 0 {
		v = tds.Version74
	}
	s.raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	class := r.Class
	if class == 0 {
		class = 16
	}
	s.out.Write(tds.LoginFailureMessage(int32(r.Code), 1, class, r.Msg, s.h.Runtime().Settings.ServerName, v, tds.DefaultPacketSize))
}

// handshake reads PRELOGIN (if any), runs TLS as negotiated, and reads
// LOGIN7. Every read is under the login deadline.
func (s *session) handshake(ctx context.Context, st *Settings) (*tds.Login7, []byte, error) {
	lt := st.LoginTimeout
	if lt <= 0 {
		lt = DefaultLoginTimeout
	}
	// From accept: the PROXY header's read (listener) came out of the
	// same budget.
	deadline := s.accepted.Add(lt)
	s.raw.SetDeadline(deadline)
	defer s.raw.SetDeadline(time.Time{})
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var first [3]byte
	if _, err := io.ReadFull(s.raw, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading the first bytes: %w", err)
	}
	var transport net.Conn = tdstls.WithPrefix(s.raw, first[:])
	var tc *tls.Conn
	if tdstls.LooksLikeTLSClientHello(first[:]) {
		s.mode = ModeStrict
		if !st.Allowed[ModeStrict] {
			return nil, nil, errors.New("TDS 8.0 strict client, and strict is not in client_encryption")
		}
		c, err := tdstls.ServerStrict(hctx, transport, st.TLS)
		if err != nil {
			return nil, nil, fmt.Errorf("strict TLS: %w", err)
		}
		tc, transport = c, c
	} else if t := tds.PacketType(first[0]); t != tds.PacketPrelogin && t != tds.PacketLogin7 && t != tds.PacketPreTDS7Login {
		// Not a TDS client (an HTTP probe, a port scanner): refuse now
		// rather than wait out the login timeout for the payload its
		// "header" announces.
		return nil, nil, fmt.Errorf("first packet of type 0x%02x is neither PRELOGIN nor LOGIN7", first[0])
	}
	r := tds.NewMessageReader(transport, tds.MaxPacketSize, tds.MaxLogin7Len)
	m, err := r.ReadMessage()
	if err != nil {
		return nil, nil, err
	}
	loginOnly := false
	switch m.Type {
	case tds.PacketPrelogin:
		p, err := tds.ParsePrelogin(m.Data)
		if err != nil {
			return nil, nil, err
		}
		clientEnc, _ := p.Encryption()
		clientEnc &^= tds.EncryptClientCertMask
		answer := s.negotiate(clientEnc, st.Allowed)
		resp := &tds.Prelogin{}
		resp.SetVersion(tds.Version{Major: 16, Minor: 0, Build: 1000})
		resp.SetEncryption(answer)
		resp.Set(tds.PLInstOpt, []byte{0})
		resp.Set(tds.PLThreadID, nil)
		resp.Set(tds.PLMARS, []byte{0})
		if _, err := transport.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, resp.Append(nil))); err != nil {
			return nil, nil, err
		}
		if s.mode != ModeStrict && answer != tds.EncryptNotSup {
			if clientEnc == tds.EncryptNotSup {
				return nil, nil, fmt.Errorf("client cannot do TLS (ENCRYPT_NOT_SUP) and client_encryption does not allow none")
			}
			c, err := tdstls.Server(hctx, transport, st.TLS, tds.DefaultPacketSize)
			if err != nil {
				return nil, nil, fmt.Errorf("TLS: %w", err)
			}
			tc = c
			loginOnly = answer == tds.EncryptOff
			s.mode = ModeFull
			if loginOnly {
				s.mode = ModeLogin
			}
			r = tds.NewMessageReader(tc, tds.MaxPacketSize, tds.MaxLogin7Len)
		} else if s.mode != ModeStrict {
			s.mode = ModeNone
		}
		if m, err = r.ReadMessage(); err != nil {
			return nil, nil, err
		}
	case tds.PacketLogin7:
		s.mode = ModeNone // an old client that sends no PRELOGIN
	case tds.PacketPreTDS7Login:
		s.outcome = "tds42_login"
		s.raw.Write(tds.LegacyLoginRefusal(int32(CodeUnsupportedLogin), 16, "tdsgate speaks TDS 7.0 and later; this client sent a TDS 4.2/5.0 login", st.ServerName))
		return nil, nil, errors.New("TDS 4.2/5.0 login refused")
	default:
		return nil, nil, fmt.Errorf("first packet of type 0x%02x is neither PRELOGIN nor LOGIN7", uint8(m.Type))
	}
	if m.Type != tds.PacketLogin7 {
		return nil, nil, fmt.Errorf("packet of type 0x%02x where LOGIN7 was expected", uint8(m.Type))
	}
	switch {
	case tc != nil && loginOnly:
		if _, err := tdstls.Detach(tc); err != nil {
			return nil, nil, err
		}
		s.out = s.raw
	case tc != nil:
		if s.mode != ModeStrict {
			if err := tdstls.AllowReadAhead(tc); err != nil {
				return nil, nil, err
			}
		}
		s.out = tc
	}
	if s.mode == ModeNone && !st.Allowed[ModeNone] {
		// Reply readably: the client reads a plaintext login answer.
		s.login = &tds.Login7{}
		return nil, nil, refuse(CodeEncryption, nil, "tdsgate requires an encrypted connection (client_encryption does not allow none); enable encryption in the client")
	}
	l, err := tds.ParseLogin7(m.Data)
	if err != nil {
		return nil, nil, refuse(CodeBadLogin, err, "tdsgate could not decode the LOGIN7 message: %v", err)
	}
	s.login, s.version = l, l.TDSVersion
	if l.TDSVersion < tds.Version70 && l.TDSVersion != tds.Version80 {
		return nil, nil, refuse(CodeUnsupportedLogin, nil, "TDS version 0x%08x is not supported; tdsgate speaks TDS 7.0 to 7.4 and 8.0", l.TDSVersion)
	}
	if l.OptionFlags2&tds.OptFlag2IntSecurity != 0 || len(l.SSPI) > 0 {
		return nil, nil, refuse(CodeUnsupportedLogin, nil, "Windows integrated authentication is not supported by tdsgate; use a SQL Server login")
	}
	if fs, err := l.Features(); err == nil {
		for _, f := range fs {
			if f.ID == tds.FeatureFedAuth {
				return nil, nil, refuse(CodeUnsupportedLogin, nil, "federated (Microsoft Entra) authentication is not supported by tdsgate; use a SQL Server login")
			}
		}
	}
	return l, m.Data, nil
}

// negotiate answers a client's ENCRYPTION within the allowed modes, the
// way SQL Server would answer it.
func (s *session) negotiate(client uint8, allowed map[Mode]bool) uint8 {
	if s.mode == ModeStrict {
		return tds.EncryptOn
	}
	switch client {
	case tds.EncryptNotSup:
		if allowed[ModeNone] {
			return tds.EncryptNotSup
		}
		return tds.EncryptReq
	case tds.EncryptOff:
		switch {
		case allowed[ModeLogin]:
			return tds.EncryptOff
		case allowed[ModeFull]:
			return tds.EncryptReq
		case allowed[ModeNone]:
			return tds.EncryptNotSup
		}
		return tds.EncryptReq
	default: // ON, REQ
		if allowed[ModeFull] {
			return tds.EncryptOn
		}
		return tds.EncryptNotSup
	}
}

// admit takes a slot, waiting in the bucket's queue if needed. A client
// that hangs up while queued leaves the queue.
func (s *session) admit(ctx context.Context, bucket string) (limiter.Ticket, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := watchHangup(s.raw, cancel)
	defer stop()
	t, err := s.h.Limiter.Acquire(actx, bucket)
	if err == nil {
		return t, nil
	}
	return nil, s.admitError(ctx, actx, err, bucket)
}

// admitError turns a failed Acquire into the refusal the client gets (or,
// when the client left the queue, a plain error: nobody reads an answer).
// ctx is the caller's, actx the one Acquire waited under.
func (s *session) admitError(ctx, actx context.Context, err error, bucket string) error {
	var le *limiter.Error
	if errors.As(err, &le) {
		switch le.Number() {
		case tds.ErrNumQueueTimeout:
			s.log.Warn("queue timeout", "bucket", bucket, "waited", le.Waited, "max_connections", le.Max)
			return refuse(CodeQueueTimeout, err, "%s", le.Error())
		case tds.ErrNumQueueFull:
			s.log.Warn("queue full, circuit breaker rejected the login", "bucket", bucket, "queued", le.Queue, "max_queue_size", le.MaxQueue)
			return refuse(CodeQueueFull, err, "%s", le.Error())
		case tds.ErrNumNoShare:
			s.log.Warn("login refused: redis never reached and no share configured", "bucket", bucket)
			return refuse(CodeNoShare, err, "%s", le.Error())
		}
		return refuse(CodeShuttingDown, err, "%s", le.Error())
	}
	if ctx.Err() == nil && actx.Err() != nil {
		s.outcome = "left_queue"
		return fmt.Errorf("client left the queue of bucket %s", bucket)
	}
	return err
}

// backendLogin dials the bucket's backend and forwards the client's LOGIN7.
func (s *session) backendLogin(ctx context.Context, b *Bucket, l *tds.Login7, loginBytes []byte) (*backend.Conn, *backend.LoginResult, error) {
	if err := b.Breaker.Allow(); err != nil {
		return nil, nil, unavailable(b.ID, err)
	}
	start := time.Now()
	be, err := backend.Connect(ctx, b.Target)
	if err != nil {
		s.h.Observer.BackendConnected(b.ID, time.Since(start), err)
		if ctx.Err() == nil { // not a kill during the dial (sessions.go)
			b.Breaker.Failure(err)
		}
		return nil, nil, unavailable(b.ID, err)
	}
	b.Breaker.Success()
	s.setBackend(be)
	// Forward the client's LOGIN7, changing only what must change: a TDS
	// 8.0 client's version when the backend leg is not strict.
	if l.TDSVersion == tds.Version80 && b.Target.Encryption != backend.EncryptStrict {
		c := *l
		c.TDSVersion = tds.Version74
		loginBytes = c.Append(nil)
	}
	res, err := be.Login(ctx, loginBytes, l.TDSVersion)
	s.h.Observer.BackendConnected(b.ID, time.Since(start), err)
	if err != nil {
		// The server may have counted the login (its answer was lost or
		// late): its slot goes back once the server has let go.
		be.Hangup(backend.DefaultCloseWait)
		var bee *backend.Error
		if errors.As(err, &bee) && bee.Stage == backend.StageLogin && !isNetErr(err) {
			return nil, nil, protocolError(b.ID, err)
		}
		return nil, nil, unavailable(b.ID, err)
	}
	return be, res, nil
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
