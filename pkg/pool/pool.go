package pool

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/clock"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Mode is a bucket's pool_mode.
type Mode string

// Pool modes.
const (
	// ModeNone: every client gets its own backend login, closed when it
	// leaves (tdsgate's behaviour without pooling).
	ModeNone Mode = "none"
	// ModeSession: a backend connection serves one client at a time, and
	// goes back to the pool, made safe, when the client leaves.
	ModeSession Mode = "session"
)

// Defaults of Settings.
const (
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultMaxLifetime  = 30 * time.Minute
	DefaultResetTimeout = 2 * time.Second
	// DefaultCloseWait is Settings.CloseWait of a pooled bucket
	// (pool_mode session and transaction): backend.DefaultCloseWait.
	DefaultCloseWait = backend.DefaultCloseWait
	// PressureHold is how long a pressure signal (clients waiting for a
	// slot of the bucket, here or on another instance) keeps returning
	// connections from going idle above min_idle.
	PressureHold = time.Second
)

// Settings are a bucket's pool settings.
type Settings struct {
	// MinIdle idle connections are kept through idle_timeout and pressure
	// (tdsgate keeps no passwords, so it cannot open them itself: they are
	// the ones clients left).
	MinIdle int
	// MaxIdle caps the bucket's idle connections on this instance; a
	// connection returning past it is closed. 0: no cap but the bucket's
	// max_connections.
	MaxIdle int
	// IdleTimeout closes a connection idle this long (above MinIdle).
	IdleTimeout time.Duration
	// MaxLifetime closes a connection this old, at its next return or
	// while idle, whatever MinIdle says.
	MaxLifetime time.Duration
	// ResetTimeout bounds making a connection safe after its client left.
	ResetTimeout time.Duration
	// CloseWait, when > 0, makes closing a connection wait (at most this
	// long) for the server to close its side before the slot is released
	// (backend.Hangup; the app sets DefaultCloseWait). 0: close at once.
	CloseWait time.Duration
	// Clock times idle_timeout, max_lifetime, pressure and the janitor's
	// tick (every janitorInterval): tests advance a clock.Fake instead of
	// sleeping. Fixed at New; nil: clock.Real.
	Clock clock.Clock
}

func (s *Settings) defaults() {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
	if s.MaxLifetime <= 0 {
		s.MaxLifetime = DefaultMaxLifetime
	}
	if s.ResetTimeout <= 0 {
		s.ResetTimeout = DefaultResetTimeout
	}
}

// State is a connection's state; see the package documentation.
type State uint8

// States.
const (
	StateLogin State = iota
	StateActive
	StateResetting
	StateIdle
	StateClosed
	nStates = StateClosed // states with a list
)

func (s State) String() string {
	switch s {
	case StateLogin:
		return "login"
	case StateActive:
		return "active"
	case StateResetting:
		return "resetting"
	case StateIdle:
		return "idle"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Reasons a connection is closed (proxy_pool_discarded_total{reason}).
const (
	ReasonLoginFailed       = "login_failed"       // the backend refused or failed the login
	ReasonNotPooled         = "not_pooled"         // a login that may not be pooled (password change, no password)
	ReasonBroken            = "broken"             // the stream broke, or the client left mid-request
	ReasonMARS              = "mars"               // the client sent MARS (SMP) packets
	ReasonResetFailed       = "reset_failed"       // ATTENTION, rollback or reset failed or timed out
	ReasonMaxIdle           = "max_idle"           // returned while max_idle were idle
	ReasonMaxLifetime       = "max_lifetime"       // older than max_lifetime
	ReasonIdleTimeout       = "idle_timeout"       // idle longer than idle_timeout
	ReasonPressure          = "pressure"           // clients waited for a slot of the bucket
	ReasonDead              = "dead"               // the server closed it while idle
	ReasonCredentialChanged = "credential_changed" // the backend accepted another password for its login
	ReasonClosed            = "closed"             // the pool was closed (reload, shutdown, draining)
	ReasonDrained           = "drained"            // an operator drained the bucket (admin API, admin.go)
	ReasonKilled            = "killed"             // an operator killed its session (admin API)
)

// Reasons lists every close reason, for metrics created up front.
var Reasons = []string{ReasonLoginFailed, ReasonNotPooled, ReasonBroken, ReasonMARS, ReasonResetFailed, ReasonMaxIdle,
	ReasonMaxLifetime, ReasonIdleTimeout, ReasonPressure, ReasonDead, ReasonCredentialChanged, ReasonClosed, ReasonDrained, ReasonKilled}

// Observer receives pool events, for metrics. Methods must be quick.
type Observer interface {
	// Idle reports the bucket's idle connections on this instance.
	Idle(bucket string, n int)
	// Checkout: a login for a pooling bucket found an idle connection (hit) or not.
	Checkout(bucket string, hit bool)
	// Reset: a connection was made safe for reuse (ok), or could not be.
	Reset(bucket string, ok bool)
	// Discarded: a connection was closed, for one of Reasons.
	Discarded(bucket, reason string)
}

type nopObserver struct{}

func (nopObserver) Idle(string, int)         {}
func (nopObserver) Checkout(string, bool)    {}
func (nopObserver) Reset(string, bool)       {}
func (nopObserver) Discarded(string, string) {}

// Conn is one pooled backend connection and the slot it holds. Every Conn
// belongs to a Pool (a session of its own, pool_mode none, is the
// frontend's dedicated lease and needs no Conn).
type Conn struct {
	// Backend is the connection; nil in the login state until Activate.
	Backend *backend.Conn
	// Login is the backend's answer to the login this session was made
	// with: relayed to the client that made it, replayed to later ones.
	Login *backend.LoginResult
	// Reused counts the clients served before the current one.
	Reused int

	pool    *Pool
	sub     *subPool
	key     Key
	ticket  limiter.Ticket
	cred    *credential
	state   State
	created time.Time
	idle    time.Time // when it went idle
	// reset: the next client's first request must carry RESETCONNECTION.
	reset bool
	// Owner is the id of the client session that last used the connection
	// (pool_mode transaction: another borrower resets it first).
	Owner uint64
	// OwnerSets is how many of its owner's SET options (replayed after a
	// reset) the connection has run; the frontend keeps it.
	OwnerSets  int
	prev, next *Conn
}

// State is the connection's state.
func (c *Conn) State() State {
	c.pool.mu.Lock()
	defer c.pool.mu.Unlock()
	return c.state
}

// NeedsReset reports whether the client's first request must carry
// RESETCONNECTION (a reused connection).
func (c *Conn) NeedsReset() bool { return c.reset }

// Ticket is the slot the connection holds.
func (c *Conn) Ticket() limiter.Ticket { return c.ticket }

// list is one state's connections in a sub-pool, most recent first.
type list struct {
	head, tail *Conn
	n          int
}

func (l *list) pushFront(c *Conn) {
	c.prev, c.next = nil, l.head
	if l.head != nil {
		l.head.prev = c
	} else {
		l.tail = c
	}
	l.head = c
	l.n++
}

func (l *list) remove(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
	l.n--
}

// subPool is the connections of one Key, one list per state.
type subPool struct {
	key   Key
	cred  *credential // the password the backend last accepted for Key
	lists [nStates]list
	// login is the backend's answer to the first login it accepted under
	// cred (pool_mode transaction: replayed to every client of the Key).
	login *backend.LoginResult
	// waiters are transaction-mode sessions waiting for a connection of
	// the Key, oldest first (Lend hands them returning connections).
	waiters []*Waiter
}

// Pool is one bucket's pool. It is safe for concurrent use.
type Pool struct {
	bucket string
	log    *slog.Logger
	obs    Observer
	clk    clock.Clock // Settings.Clock at New

	mu       sync.Mutex
	st       Settings
	subs     map[Key]*subPool
	idle     int       // idle connections of every sub-pool
	pressure time.Time // until when pressure holds
	closed   bool

	stop chan struct{}
	done chan struct{}
}

// New returns a bucket's pool and starts its janitor.
func New(bucket string, st Settings, log *slog.Logger, obs Observer) *Pool {
	st.defaults()
	if log == nil {
		log = slog.Default()
	}
	if obs == nil {
		obs = nopObserver{}
	}
	if st.Clock == nil {
		st.Clock = clock.Real{}
	}
	p := &Pool{bucket: bucket, log: log.With("bucket", bucket), obs: obs, st: st, subs: map[Key]*subPool{},
		stop: make(chan struct{}), done: make(chan struct{}), clk: st.Clock}
	go p.janitor()
	return p
}

// Bucket is the pool's bucket id.
func (p *Pool) Bucket() string { return p.bucket }

// SetSettings applies reloaded settings; idle connections over the new
// limits go at the janitor's next round.
func (p *Pool) SetSettings(st Settings) {
	st.defaults()
	p.mu.Lock()
	p.st = st
	p.mu.Unlock()
}

// Settings returns the settings in force.
func (p *Pool) Settings() Settings {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// Stats are a pool's counts by state.
type Stats struct {
	Login, Active, Resetting, Idle int
	Keys                           int
}

// Stats counts the connections in each state.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s Stats
	for _, sp := range p.subs {
		s.Login += sp.lists[StateLogin].n
		s.Active += sp.lists[StateActive].n
		s.Resetting += sp.lists[StateResetting].n
		s.Idle += sp.lists[StateIdle].n
	}
	s.Keys = len(p.subs)
	return s
}

func (p *Pool) sub(k Key) *subPool {
	sp := p.subs[k]
	if sp == nil {
		sp = &subPool{key: k}
		p.subs[k] = sp
	}
	return sp
}

// move puts c from its list into state to's list (or out of every list
// for StateClosed). Called with p.mu held.
func (p *Pool) move(c *Conn, to State) {
	if c.state < nStates {
		c.sub.lists[c.state].remove(c)
		if c.state == StateIdle {
			p.idle--
		}
	}
	c.state = to
	if to < nStates {
		c.sub.lists[to].pushFront(c)
		if to == StateIdle {
			p.idle++
		}
	}
}

// Checkout hands out an idle connection of key if password verifies
// against the credential it was accepted with. It returns (nil, nil) on a
// miss: no idle connection, or a password that does not verify. Either
// way the client then logs in at the backend, which alone decides about
// the password: a wrong one gets the server's own refusal (and counts in
// its failed-login auditing and lockout), a changed one that the server
// accepts becomes the credential (Accept). The error is always nil; it is
// kept for callers that may one day see one.
func (p *Pool) Checkout(key Key, password string) (*Conn, error) {
	p.mu.Lock()
	sp := p.subs[key]
	if p.closed || sp == nil || sp.lists[StateIdle].n == 0 {
		p.mu.Unlock()
		p.obs.Checkout(p.bucket, false)
		return nil, nil
	}
	cred := sp.cred
	p.mu.Unlock()
	if cred == nil {
		p.obs.Checkout(p.bucket, false)
		return nil, nil
	}
	if !cred.verify(password) {
		p.obs.Checkout(p.bucket, false)
		return nil, nil
	}
	for {
		p.mu.Lock()
		c := sp.lists[StateIdle].head
		if p.closed || c == nil || sp.cred != cred {
			p.mu.Unlock()
			p.obs.Checkout(p.bucket, false)
			return nil, nil
		}
		if p.takeIdleLocked(c) {
			c.Reused++
			return c, nil
		}
	}
}

// takeIdleLocked moves idle c to active and unlocks p.mu. It reports
// whether c may be used: one past max_lifetime, or closed by the server,
// is closed instead.
func (p *Pool) takeIdleLocked(c *Conn) bool {
	p.move(c, StateActive)
	expired := p.clk.Now().Sub(c.created) >= p.st.MaxLifetime
	n := p.idle
	p.mu.Unlock()
	p.obs.Idle(p.bucket, n)
	switch {
	case expired:
		p.Close(c, ReasonMaxLifetime)
	case !alive(c.Backend.Raw):
		p.Close(c, ReasonDead)
	default:
		p.obs.Checkout(p.bucket, true)
		return true
	}
	return false
}

// Begin registers a client's own backend login for key, in the login
// state, holding ticket (released when the connection closes).
func (p *Pool) Begin(key Key, t limiter.Ticket) *Conn {
	c := &Conn{pool: p, key: key, ticket: t, created: p.clk.Now()}
	p.mu.Lock()
	c.sub = p.sub(key)
	c.state = StateClosed // not in a list yet
	p.move(c, StateLogin)
	p.mu.Unlock()
	return c
}

// Activate records the backend login's success: login → active.
func (c *Conn) Activate(be *backend.Conn, res *backend.LoginResult) {
	c.Backend, c.Login = be, res
	c.pool.mu.Lock()
	c.pool.move(c, StateActive)
	c.pool.mu.Unlock()
}

// Accept records that the backend accepted this connection's own login
// (after Activate) with password. The password becomes its sub-pool's
// credential at once: if the sub-pool knew another (the password was
// changed at the server), the idle connections accepted under the old one
// are closed now, and the busy ones when their clients leave. Only a
// salted hash of the password is kept. For an empty password (such a
// connection is closed at Return), it does nothing.
func (c *Conn) Accept(password string) {
	if c.cred != nil {
		return
	}
	cred, stale := c.pool.credentialFor(c.sub, password)
	if cred == nil {
		return
	}
	c.cred = cred
	c.pool.discardAll(stale, ReasonCredentialChanged)
}

// Close closes the connection (if any) and releases its slot, from any
// state. reason is one of Reasons. It is idempotent.
func (c *Conn) Close(reason string) { c.pool.Close(c, reason) }

// Close closes c, which must belong to p, for reason.
func (p *Pool) Close(c *Conn, reason string) {
	p.mu.Lock()
	if c.state == StateClosed {
		p.mu.Unlock()
		return
	}
	wasIdle := c.state == StateIdle
	p.move(c, StateClosed)
	p.dropSubLocked(c.sub)
	n := p.idle
	p.mu.Unlock()
	if wasIdle {
		p.obs.Idle(p.bucket, n)
	}
	p.discard(c, reason)
}

// discard closes a connection already out of every list.
func (p *Pool) discard(c *Conn, reason string) {
	if c.Backend != nil {
		p.mu.Lock()
		wait := p.st.CloseWait
		p.mu.Unlock()
		backend.Hangup(c.Backend.Raw, wait)
	}
	c.ticket.Release()
	p.obs.Discarded(p.bucket, reason)
	p.log.Debug("pool: backend connection closed", "reason", reason, "user", c.key.User, "database", c.key.Database,
		"age", p.clk.Now().Sub(c.created).Round(time.Millisecond), "reused", c.Reused)
}

// dropSubLocked forgets a sub-pool with no connection left, but keeps
// its credential while connections are under way.
func (p *Pool) dropSubLocked(sp *subPool) {
	if len(sp.waiters) > 0 {
		return
	}
	for _, l := range sp.lists {
		if l.n > 0 {
			return
		}
	}
	delete(p.subs, sp.key)
}

// Return takes a connection back after its client left: active →
// resetting → idle, or closed. r is what the framed relay left; password
// is the client's, which the backend accepted (it becomes the credential
// of a connection that had none: one whose login was not followed by
// Accept). It blocks while the connection is made safe (at most
// ResetTimeout).
func (p *Pool) Return(c *Conn, r *relay.FramedResult, password string) {
	p.mu.Lock()
	if c.state != StateActive {
		p.mu.Unlock()
		return
	}
	p.move(c, StateResetting)
	st := p.st
	p.mu.Unlock()

	reason, reset := p.makeSafe(c, r, st.ResetTimeout)
	if reason == ReasonResetFailed {
		p.obs.Reset(p.bucket, false)
	} else if reset {
		p.obs.Reset(p.bucket, true)
	}
	if reason != "" {
		p.Close(c, reason)
		return
	}
	var stale []*Conn
	if c.cred == nil {
		// A client's own login: its password becomes the credential.
		cred, old := p.credentialFor(c.sub, password)
		if cred == nil {
			p.Close(c, ReasonNotPooled)
			return
		}
		c.cred, stale = cred, old
	}

	p.mu.Lock()
	if c.sub.cred != c.cred {
		// Accepted under a password the backend has since replaced.
		p.mu.Unlock()
		p.Close(c, ReasonCredentialChanged)
		p.discardAll(stale, ReasonCredentialChanged)
		return
	}
	switch {
	case p.closed:
		reason = ReasonClosed
	case p.clk.Now().Sub(c.created) >= st.MaxLifetime:
		reason = ReasonMaxLifetime
	case st.MaxIdle > 0 && p.idle >= st.MaxIdle:
		reason = ReasonMaxIdle
	case p.pressuredLocked() && p.idle >= st.MinIdle:
		reason = ReasonPressure
	}
	if reason == "" {
		c.reset = true
		c.idle = p.clk.Now()
		p.move(c, StateIdle)
	}
	n := p.idle
	p.mu.Unlock()
	p.discardAll(stale, ReasonCredentialChanged)
	if reason != "" {
		p.Close(c, reason)
		return
	}
	p.obs.Idle(p.bucket, n)
}

// credentialFor returns the sub-pool's credential if password verifies
// against it; otherwise it makes one from password and installs it (the
// backend has just accepted that password: it is the password now), and
// returns the idle connections accepted under the old one, taken out of
// their list, for the caller to close. It returns nil when password
// cannot be a credential (empty).
func (p *Pool) credentialFor(sp *subPool, password string) (*credential, []*Conn) {
	var made *credential
	for {
		p.mu.Lock()
		cur := sp.cred
		p.mu.Unlock()
		if cur != nil && cur.verify(password) {
			return cur, nil
		}
		if made == nil {
			if made = newCredential(password); made == nil {
				return nil, nil
			}
		}
		p.mu.Lock()
		if sp.cred != cur {
			p.mu.Unlock()
			continue // another return installed one meanwhile: check it
		}
		sp.cred, sp.login = made, nil
		var stale []*Conn
		for s := sp.lists[StateIdle].head; s != nil; {
			next := s.next
			p.move(s, StateClosed)
			stale = append(stale, s)
			s = next
		}
		p.mu.Unlock()
		return made, stale
	}
}

func (p *Pool) discardAll(cs []*Conn, reason string) {
	if len(cs) == 0 {
		return
	}
	p.mu.Lock()
	n := p.idle
	p.mu.Unlock()
	p.obs.Idle(p.bucket, n)
	for _, c := range cs {
		p.discard(c, reason)
	}
}

// pressuredLocked: clients wait for a slot of the bucket, here or (within
// PressureHold of their last signal) on another instance.
func (p *Pool) pressuredLocked() bool {
	return p.clk.Now().Before(p.pressure)
}

// Pressure signals clients waiting for a slot of the bucket (here, or on
// another instance): idle connections are closed down to min_idle, and for
// PressureHold returning ones do not go idle above it.
func (p *Pool) Pressure() {
	p.mu.Lock()
	p.pressure = p.clk.Now().Add(PressureHold)
	p.mu.Unlock()
	p.shed(ReasonPressure, func(st Settings, idle int, c *Conn, now time.Time) bool { return idle > st.MinIdle })
}

// shed closes idle connections, oldest first, while keep says so.
func (p *Pool) shed(reason string, drop func(st Settings, idle int, c *Conn, now time.Time) bool) {
	now := p.clk.Now()
	var out []*Conn
	p.mu.Lock()
	st := p.st
	for _, c := range p.idleOldestFirstLocked() {
		if !drop(st, p.idle, c, now) {
			continue
		}
		p.move(c, StateClosed)
		p.dropSubLocked(c.sub)
		out = append(out, c)
	}
	n := p.idle
	p.mu.Unlock()
	if len(out) == 0 {
		return
	}
	p.obs.Idle(p.bucket, n)
	for _, c := range out {
		p.discard(c, reason)
	}
}

// idleOldestFirstLocked lists every idle connection, the longest idle
// first.
func (p *Pool) idleOldestFirstLocked() []*Conn {
	var cs []*Conn
	for _, sp := range p.subs {
		for c := sp.lists[StateIdle].tail; c != nil; c = c.prev {
			cs = append(cs, c)
		}
	}
	if len(p.subs) > 1 {
		sortByIdle(cs)
	}
	return cs
}

func sortByIdle(cs []*Conn) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].idle.Before(cs[j-1].idle); j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// janitorInterval is the janitor's period.
const janitorInterval = 250 * time.Millisecond

// janitor closes idle connections past idle_timeout (above min_idle) or
// max_lifetime, those the server closed, those over max_idle after a
// reload, and those above min_idle while pressure holds.
// It ticks on Settings.Clock: a test with a clock.Fake sweeps by
// advancing it (one sweep per due tick), never by sleeping.
func (p *Pool) janitor() {
	defer close(p.done)
	for {
		t := p.clk.NewTimer(janitorInterval)
		select {
		case <-p.stop:
			t.Stop()
			return
		case <-t.C():
		}
		p.sweep()
	}
}

func (p *Pool) sweep() {
	p.shed(ReasonMaxLifetime, func(st Settings, _ int, c *Conn, now time.Time) bool {
		return now.Sub(c.created) >= st.MaxLifetime
	})
	p.shed(ReasonDead, func(_ Settings, _ int, c *Conn, _ time.Time) bool { return !alive(c.Backend.Raw) })
	p.shed(ReasonMaxIdle, func(st Settings, idle int, _ *Conn, _ time.Time) bool { return st.MaxIdle > 0 && idle > st.MaxIdle })
	p.shed(ReasonIdleTimeout, func(st Settings, idle int, c *Conn, now time.Time) bool {
		return idle > st.MinIdle && now.Sub(c.idle) >= st.IdleTimeout
	})
	p.mu.Lock()
	pressured := p.pressuredLocked()
	p.mu.Unlock()
	if pressured {
		p.shed(ReasonPressure, func(st Settings, idle int, _ *Conn, _ time.Time) bool { return idle > st.MinIdle })
	}
}

// Shutdown closes the pool: idle connections now, the others when their
// sessions return them. It stops the janitor.
func (p *Pool) Shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	p.shed(ReasonClosed, func(Settings, int, *Conn, time.Time) bool { return true })
}

// alive reports whether an idle connection is still open with nothing
// unread: poll(2) without waiting. Data or a hang-up on an idle backend
// both mean it cannot be reused.
func alive(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		ok = err == nil && n == 0
	})
	return ok
}

// PacketSize is the packet size of the connection's session.
func (c *Conn) PacketSize() int {
	if c.Login == nil || c.Login.PacketSize == 0 {
		return tds.DefaultPacketSize
	}
	return c.Login.PacketSize
}

// Return gives the connection back to its pool after its client left
// (see Pool.Return).
func (c *Conn) Return(r *relay.FramedResult, password string) { c.pool.Return(c, r, password) }

// ResetTimeout is the pool's reset_timeout.
func (c *Conn) ResetTimeout() time.Duration { return c.pool.Settings().ResetTimeout }
