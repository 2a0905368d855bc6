package frontend

import (
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// The session table: what GET /admin/sessions shows of every live session,
// and POST /admin/sessions/{id}/kill. Serve reports into it through a few
// hooks (setState, noteLogin, noteBucket, enterRelay, killedErr); the
// table itself is Handler.live.

// SessionState is a session's state as the admin API shows it. The names
// are part of the API (README, "Admin API"): add states, rename none.
//
//	handshake            accepted; PRELOGIN, TLS and LOGIN7 not done yet
//	  → queued           routed to a bucket, waiting for a slot (admission;
//	                     a session that finds a free slot passes through)
//	  → connecting       slot held, logging in at the backend
//	  → active           the login answer went to the client; relaying
//	  ⇄ idle-in-transaction, pinned
//	                     (transaction pool mode) between requests inside a
//	                     transaction; bound to its backend for a reason
//	                     (PinReason) — set by the pooling code through
//	                     setState
//	any → closing        ending (killed, refused, or either side closed)
type SessionState string

// Session states.
const (
	StateHandshake         SessionState = "handshake"
	StateQueued            SessionState = "queued"
	StateConnecting        SessionState = "connecting"
	StateActive            SessionState = "active"
	StateIdleInTransaction SessionState = "idle-in-transaction"
	StatePinned            SessionState = "pinned"
	StateClosing           SessionState = "closing"
)

// SessionStates lists every state, for ?state= validation and docs.
var SessionStates = []SessionState{StateHandshake, StateQueued, StateConnecting, StateActive,
	StateIdleInTransaction, StatePinned, StateClosing}

// CodeKilled's message, as the client reads it.
const killedMessage = "this session was ended by a tdsgate administrator (kill)"

// sessionView is what the session table holds of one session, beside the
// session's own fields that never change after start (id, client, start).
// It is written by the session's goroutine and read by the admin API, so
// it is replaced whole (copy on write) under an atomic pointer.
type sessionView struct {
	state     SessionState
	pinReason string
	user      string
	database  string
	app       string
	bucket    string
	mode      Mode
	relayMode relay.Mode
}

// adminState is the session's part of the session table.
type adminState struct {
	view     atomic.Pointer[sessionView]
	killedBy atomic.Pointer[string] // who asked for the kill; nil: not killed
	cancel   context.CancelFunc     // ends the session's context (queued, connecting)
	sent     sync.Once              // the kill's ERROR goes out once
	sentOK   bool                   // written in sent
	// backend is the backend leg the relay carries (enterRelay): the kill
	// sends it an ATTENTION.
	backend atomic.Pointer[backendLeg]
}

type backendLeg struct{ conn net.Conn }

// killGrace is how long a killed relaying session's legs stay open after
// the ATTENTION, for the server to stop the request; then both close.
const killGrace = 2 * time.Second

func (s *session) viewNow() sessionView {
	if v := s.admin.view.Load(); v != nil {
		return *v
	}
	return sessionView{state: StateHandshake}
}

func (s *session) updateView(f func(v *sessionView)) {
	v := s.viewNow()
	f(&v)
	s.admin.view.Store(&v)
}

// setState moves the session to st; reason is the pin reason of
// StatePinned ("" otherwise). The session's goroutine calls it, and in
// pool_mode transaction the answer reader too (a lost update there shows
// one state late in the table; nothing else reads it).
func (s *session) setState(st SessionState, reason string) {
	s.updateView(func(v *sessionView) { v.state, v.pinReason = st, reason })
}

// withAdmin gives the session a context the admin API's kill can end, and
// returns it with the func that releases it.
func (s *session) withAdmin(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	s.admin.cancel = cancel
	return ctx, cancel
}

// noteLogin records the login's user, database and application.
func (s *session) noteLogin(l *tds.Login7) {
	s.updateView(func(v *sessionView) { v.user, v.database, v.app, v.mode = l.UserName, l.Database, l.AppName, s.mode })
}

// noteBucket records the bucket the session was routed to; it now waits
// for a slot.
func (s *session) noteBucket(bucket string) {
	s.updateView(func(v *sessionView) { v.bucket, v.state = bucket, StateQueued })
}

// enterRelay records that the login answer is on its way and which relay
// carries the session from now on. The backend leg (for the kill's
// ATTENTION) is the session's own connection; a multiplexed session
// (pool_mode transaction) has none between its requests.
func (s *session) enterRelay(ls lease) {
	be, m := ls.leg(s.out)
	if s.kernel != nil {
		m = relay.ModeSockmap
	}
	if be != nil {
		s.admin.backend.Store(&backendLeg{be})
	}
	s.updateView(func(v *sessionView) { v.state, v.relayMode = StateActive, m })
	if s.admin.killedBy.Load() != nil {
		// Killed while it logged in at the backend: the kill's ERROR is
		// its login answer.
		s.sendKilled(m)
		s.abort()
	}
}

// killedErr turns err into the kill's refusal (50012) when the session was
// killed: a kill that ended a queued or connecting session's context shows
// up as a context error or a failed backend login, and the client should
// read why.
func (s *session) killedErr(err error) error {
	if s.admin.killedBy.Load() == nil {
		return err
	}
	return refuse(CodeKilled, err, killedMessage)
}

// killedOutcome is the outcome of a killed session ("killed"), or "".
func (s *session) killedOutcome() string {
	if s.admin.killedBy.Load() == nil {
		return ""
	}
	return "killed"
}

// SessionInfo is one row of the session table.
type SessionInfo struct {
	ID     uint64
	Client string // the client's address (from the PROXY header when there is one)
	User, Database, App,
	Bucket string
	State SessionState
	// PinReason says why a pinned session is bound to its backend.
	PinReason string
	Start     time.Time
	// BytesFromClient and BytesToClient are the bytes on the client's TCP
	// connection so far (kernel TCP_INFO: bytes received, bytes acked),
	// TLS records, PRELOGIN and LOGIN7 included. A session whose socket
	// the kernel relay took over (sockmap) shows 0 until it ends.
	BytesFromClient, BytesToClient int64
	// RelayMode is splice, tls, framed or sockmap once the session relays
	// ("" before).
	RelayMode string
	// Encryption is the client's encryption mode (none, login, full,
	// strict; "" before PRELOGIN).
	Encryption string
}

// SessionFilter selects sessions; empty fields match everything.
type SessionFilter struct {
	Bucket, User string
	State        SessionState
}

func (f SessionFilter) match(i SessionInfo) bool {
	return (f.Bucket == "" || f.Bucket == i.Bucket) && (f.User == "" || f.User == i.User) && (f.State == "" || f.State == i.State)
}

// Sessions lists the live sessions that match f, oldest first.
func (h *Handler) Sessions(f SessionFilter) []SessionInfo {
	h.mu.Lock()
	live := make([]*session, 0, len(h.live))
	for s := range h.live {
		live = append(live, s)
	}
	h.mu.Unlock()
	out := make([]SessionInfo, 0, len(live))
	for _, s := range live {
		v := s.viewNow()
		if s.admin.killedBy.Load() != nil {
			v.state = StateClosing
		}
		i := SessionInfo{ID: s.id, Client: s.client, User: v.user, Database: v.database, App: v.app, Bucket: v.bucket,
			State: v.state, PinReason: v.pinReason, Start: s.start, Encryption: string(v.mode)}
		if v.relayMode != 0 {
			i.RelayMode = v.relayMode.String()
		}
		i.BytesFromClient, i.BytesToClient = tcpBytes(s.raw)
		if !f.match(i) {
			continue
		}
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.ID, b.ID)) })
	return out
}

// tcpBytes reads the bytes received from and acked by the peer of c.
func tcpBytes(c *net.TCPConn) (in, out int64) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0
	}
	rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			in, out = int64(ti.Bytes_received), int64(ti.Bytes_acked)
		}
	})
	return in, out
}

// Kill errors.
var (
	// ErrNoSession: no live session has that id.
	ErrNoSession = errors.New("no such session")
	// ErrAlreadyKilled: the session is already being killed.
	ErrAlreadyKilled = errors.New("session already being killed")
)

// KillResult says what Kill did.
type KillResult struct {
	ID     uint64
	Bucket string
	// State is the session's state when it was killed.
	State SessionState
	// ErrorSent says the client was sent the ERROR 50012 message (a
	// session past login, unless the kernel relay carries its bytes, or
	// a queued or connecting one, through its login refusal).
	ErrorSent bool
}

// Kill ends session id on behalf of by (the caller's address, for the
// log). A session that waits for a slot or logs in at the backend has its
// context ended and is refused with ERROR 50012 as its login answer. A
// relaying one is sent a REPLY message with ERROR 50012 and DONE_ERROR —
// which a client with a request in flight reads as that request's answer
// — its backend an ATTENTION (the server stops the request now), and
// both legs are closed once the server answers (killGrace at most). Its slot is released once, by the session's
// own release (a pooled backend connection is closed, not reused). A
// session still in its handshake is closed: its client has sent no login
// it could read an answer to.
func (h *Handler) Kill(id uint64, by string) (KillResult, error) {
	h.mu.Lock()
	var s *session
	for c := range h.live {
		if c.id == id {
			s = c
			break
		}
	}
	h.mu.Unlock()
	if s == nil {
		return KillResult{}, ErrNoSession
	}
	if !s.admin.killedBy.CompareAndSwap(nil, &by) {
		return KillResult{}, ErrAlreadyKilled
	}
	v := s.viewNow()
	r := KillResult{ID: id, Bucket: v.bucket, State: v.state}
	h.Log.Warn("session killed by an administrator", "session", id, "client", s.client, "user", v.user,
		"bucket", v.bucket, "state", string(v.state), "by", by, "code", int32(CodeKilled))
	switch v.state {
	case StateHandshake:
		s.abort()
	case StateQueued, StateConnecting:
		// fail() sends the refusal as the login answer (killedErr).
		s.admin.cancel()
		r.ErrorSent = true
	default:
		// The ERROR goes into the client socket first, so that it is the
		// answer the client reads: whatever the server sends after the
		// ATTENTION queues behind it. The socket is corked meanwhile, so
		// that the client cannot read the ERROR and hang up before the
		// ATTENTION is out: the relay would pass its hang-up on by
		// half-closing the backend leg, which the ATTENTION could then no
		// longer reach. Then the client's half-close, which the server's
		// answer meets, ending the relay.
		cork(s.raw, true)
		r.ErrorSent = s.sendKilled(v.relayMode)
		attended := s.attendBackend(v.relayMode)
		cork(s.raw, false)
		s.raw.CloseWrite()
		if attended {
			// Both legs close in any case after a grace.
			time.AfterFunc(killGrace, s.abort)
		} else {
			s.abort()
		}
	}
	return r, nil
}

// cork sets TCP_CORK on c: while it is on, the kernel holds partial
// segments (for up to 200 ms); turning it off sends them.
func cork(c *net.TCPConn, on bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	v := 0
	if on {
		v = 1
	}
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v) })
}

// attendBackend sends the backend an ATTENTION, so that the server stops
// the killed session's request now rather than when it next writes to a
// closed connection. It reports whether it could: not when the kernel
// relay carries the session, nor before the relay.
func (s *session) attendBackend(m relay.Mode) bool {
	leg := s.admin.backend.Load()
	if m == relay.ModeSockmap || leg == nil {
		return false
	}
	leg.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := leg.conn.Write(tds.AppendPackets(nil, tds.PacketAttention, 0, 0, 1, tds.DefaultPacketSize, nil))
	if err != nil {
		s.log.Info("kill: could not send the backend an ATTENTION; it stops the request when it notices the closed connection", "err", err)
	}
	return err == nil
}

// sendKilled writes the kill's ERROR reply to a relaying session's client
// (the caller then half-closes the client's socket, so that the reply is
// followed by a clean FIN). It cannot when the kernel relay carries the
// session (its sockets left the Go runtime).
func (s *session) sendKilled(m relay.Mode) bool {
	if m == relay.ModeSockmap {
		return false
	}
	s.admin.sent.Do(func() { s.admin.sentOK = s.writeKilled() })
	return s.admin.sentOK
}

func (s *session) writeKilled() bool {
	v := s.version
	if v == 0 {
		v = tds.Version74
	}
	msg := tds.LoginFailureMessage(int32(CodeKilled), 1, 16, killedMessage, s.h.Runtime().Settings.ServerName, v, tds.DefaultPacketSize)
	s.raw.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err := s.out.Write(msg)
	return err == nil
}
