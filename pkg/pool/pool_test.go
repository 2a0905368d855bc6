package pool

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/clock"
	"github.com/tdsgate/tdsgate/pkg/relay"
)

type ticket struct{ released atomic.Int32 }

func (t *ticket) Release()              { t.released.Add(1) }
func (t *ticket) Bucket() string        { return "b" }
func (t *ticket) Waited() time.Duration { return 0 }

type recorder struct {
	mu        sync.Mutex
	discarded map[string]int
	hits      int
	misses    int
	idle      int
}

func (r *recorder) Idle(_ string, n int) { r.mu.Lock(); r.idle = n; r.mu.Unlock() }
func (r *recorder) Checkout(_ string, hit bool) {
	r.mu.Lock()
	if hit {
		r.hits++
	} else {
		r.misses++
	}
	r.mu.Unlock()
}
func (r *recorder) Reset(string, bool) {}
func (r *recorder) Discarded(_, reason string) {
	r.mu.Lock()
	r.discarded[reason]++
	r.mu.Unlock()
}
func (r *recorder) count(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.discarded[reason]
}

// fakeBackend is a loopback TCP connection standing for a logged-in
// backend; peer is the "server" end.
func fakeBackend(t *testing.T) (*backend.Conn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := (<-ch).(*net.TCPConn)
	t.Cleanup(func() { c.Close(); peer.Close() })
	return &backend.Conn{Raw: c.(*net.TCPConn), Conn: c}, peer
}

var key = Key{User: "u", Database: "d", TDSVersion: 0x74000004, PacketSize: 4096, Encryption: "login"}

func newPool(t *testing.T, st Settings) (*Pool, *recorder) {
	r := &recorder{discarded: map[string]int{}}
	p := New("b", st, nil, r)
	t.Cleanup(p.Shutdown)
	return p, r
}

// login runs a client's own login into the pool: login → active.
func login(t *testing.T, p *Pool, k Key) (*Conn, *ticket, *net.TCPConn) {
	tk := &ticket{}
	c := p.Begin(k, tk)
	if c.State() != StateLogin {
		t.Fatalf("state %v after Begin", c.State())
	}
	be, peer := fakeBackend(t)
	c.Activate(be, &backend.LoginResult{OK: true, SPID: 51})
	if c.State() != StateActive {
		t.Fatalf("state %v after Activate", c.State())
	}
	return c, tk, peer
}

var clean = &relay.FramedResult{} // a client that sent nothing

func TestStates(t *testing.T) {
	p, rec := newPool(t, Settings{})
	c, tk, _ := login(t, p, key)
	p.Return(c, clean, "pw")
	if c.State() != StateIdle || !c.NeedsReset() {
		t.Fatalf("state %v reset %v after Return", c.State(), c.NeedsReset())
	}
	if s := p.Stats(); s.Idle != 1 || s.Active != 0 {
		t.Fatalf("%+v", s)
	}
	if got, err := p.Checkout(Key{User: "other"}, "pw"); got != nil || err != nil {
		t.Fatal("another key got the connection")
	}
	// A wrong password is a miss: the client goes to the backend, which
	// decides.
	if got, err := p.Checkout(key, "wrong"); got != nil || err != nil {
		t.Fatalf("wrong password: %v %v", got, err)
	}
	if c.State() != StateIdle {
		t.Fatal("a wrong password moved the connection")
	}
	got, err := p.Checkout(key, "pw")
	if err != nil || got != c || c.State() != StateActive || c.Reused != 1 {
		t.Fatalf("checkout %v %v", got, err)
	}
	if rec.hits != 1 {
		t.Fatalf("hits %d", rec.hits)
	}
	// A broken stream is never reused; the slot goes with the connection.
	p.Return(c, &relay.FramedResult{Broken: relay.BrokenServerClosed}, "pw")
	if c.State() != StateClosed || tk.released.Load() != 1 || rec.count(ReasonBroken) != 1 {
		t.Fatalf("state %v released %d", c.State(), tk.released.Load())
	}
	if s := p.Stats(); s != (Stats{}) {
		t.Fatalf("%+v", s)
	}
}

func TestMARSNeverReused(t *testing.T) {
	p, rec := newPool(t, Settings{})
	c, tk, _ := login(t, p, key)
	p.Return(c, &relay.FramedResult{Broken: relay.BrokenMARS}, "pw")
	if c.State() != StateClosed || tk.released.Load() != 1 || rec.count(ReasonMARS) != 1 {
		t.Fatal("a MARS session was kept")
	}
}

func TestLoginFailedReleases(t *testing.T) {
	p, rec := newPool(t, Settings{})
	tk := &ticket{}
	c := p.Begin(key, tk)
	c.Close(ReasonLoginFailed)
	c.Close(ReasonLoginFailed)
	if tk.released.Load() != 1 || rec.count(ReasonLoginFailed) != 1 || p.Stats().Login != 0 {
		t.Fatal("login failure not accounted once")
	}
}

func TestMaxIdle(t *testing.T) {
	p, rec := newPool(t, Settings{MaxIdle: 1})
	c1, _, _ := login(t, p, key)
	c2, tk2, _ := login(t, p, key)
	p.Return(c1, clean, "pw")
	p.Return(c2, clean, "pw")
	if p.Stats().Idle != 1 || tk2.released.Load() != 1 || rec.count(ReasonMaxIdle) != 1 {
		t.Fatalf("%+v", p.Stats())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIdleTimeout(t *testing.T) {
	p, rec := newPool(t, Settings{MinIdle: 1, IdleTimeout: 50 * time.Millisecond})
	var cs []*Conn
	for range 3 {
		c, _, _ := login(t, p, key)
		cs = append(cs, c)
	}
	for _, c := range cs {
		p.Return(c, clean, "pw")
	}
	if p.Stats().Idle != 3 {
		t.Fatalf("%+v", p.Stats())
	}
	waitFor(t, func() bool { return p.Stats().Idle == 1 })
	time.Sleep(3 * janitorInterval)
	if p.Stats().Idle != 1 || rec.count(ReasonIdleTimeout) != 2 {
		t.Fatalf("%+v, %d idle timeouts (min_idle 1)", p.Stats(), rec.count(ReasonIdleTimeout))
	}
}

func TestMaxLifetime(t *testing.T) {
	p, rec := newPool(t, Settings{MinIdle: 5, MaxLifetime: 100 * time.Millisecond})
	c, tk, _ := login(t, p, key)
	p.Return(c, clean, "pw")
	waitFor(t, func() bool { return tk.released.Load() == 1 })
	if rec.count(ReasonMaxLifetime) != 1 {
		t.Fatal("not closed for max_lifetime")
	}
}

func TestDeadIdle(t *testing.T) {
	p, rec := newPool(t, Settings{})
	c, tk, peer := login(t, p, key)
	p.Return(c, clean, "pw")
	peer.Close() // the server ends the session
	waitFor(t, func() bool { return tk.released.Load() == 1 })
	if rec.count(ReasonDead) != 1 {
		t.Fatal("not closed as dead")
	}
	if got, _ := p.Checkout(key, "pw"); got != nil {
		t.Fatal("a dead connection was handed out")
	}
}

func TestPressure(t *testing.T) {
	p, rec := newPool(t, Settings{MinIdle: 1})
	var cs []*Conn
	for range 4 {
		c, _, _ := login(t, p, key)
		cs = append(cs, c)
	}
	for _, c := range cs[:3] {
		p.Return(c, clean, "pw")
	}
	p.Pressure()
	if s := p.Stats(); s.Idle != 1 || rec.count(ReasonPressure) != 2 {
		t.Fatalf("%+v after pressure (min_idle 1)", s)
	}
	// While the pressure holds, a returning connection does not go idle
	// above min_idle.
	p.Return(cs[3], clean, "pw")
	if cs[3].State() != StateClosed || rec.count(ReasonPressure) != 3 {
		t.Fatalf("returned during pressure: %v", cs[3].State())
	}
}

func TestCredentialChanged(t *testing.T) {
	p, rec := newPool(t, Settings{})
	c1, _, _ := login(t, p, key)
	c2, _, _ := login(t, p, key)
	p.Return(c1, clean, "old")
	// The backend accepted another password for the same login: it is the
	// password now, and the connection accepted under the old one goes.
	p.Return(c2, clean, "new")
	if c1.State() != StateClosed || c2.State() != StateIdle || rec.count(ReasonCredentialChanged) != 1 {
		t.Fatalf("%v %v", c1.State(), c2.State())
	}
	if got, err := p.Checkout(key, "old"); got != nil || err != nil {
		t.Fatal("the old password still opens the pool")
	}
	if got, err := p.Checkout(key, "new"); got != c2 || err != nil {
		t.Fatal("the new password does not")
	}
}

// TestAcceptRotatesAtOnce: the backend accepting a new password for a
// login (Accept, at login time) makes it the credential before the
// session ends: idle connections of the old one are closed at once, the
// busy one when it comes back, and the new password reuses.
func TestAcceptRotatesAtOnce(t *testing.T) {
	p, rec := newPool(t, Settings{})
	idle, idleTk, _ := login(t, p, key)
	idle.Accept("old")
	busy, _, _ := login(t, p, key)
	busy.Accept("old")
	p.Return(idle, clean, "old")
	if idle.State() != StateIdle {
		t.Fatalf("idle: %v", idle.State())
	}
	fresh, _, _ := login(t, p, key)
	fresh.Accept("new")
	if idle.State() != StateClosed || idleTk.released.Load() != 1 || rec.count(ReasonCredentialChanged) != 1 {
		t.Fatalf("the old credential's idle connection: %v released %d", idle.State(), idleTk.released.Load())
	}
	p.Return(busy, clean, "old")
	if busy.State() != StateClosed || rec.count(ReasonCredentialChanged) != 2 {
		t.Fatalf("the old credential's busy connection went %v", busy.State())
	}
	p.Return(fresh, clean, "new")
	if got, _ := p.Checkout(key, "old"); got != nil {
		t.Fatal("the old password reuses")
	}
	if got, _ := p.Checkout(key, "new"); got != fresh {
		t.Fatal("the new password does not reuse")
	}
}

func TestConcurrentFirstReturnsShareACredential(t *testing.T) {
	p, rec := newPool(t, Settings{})
	var cs []*Conn
	for range 8 {
		c, _, _ := login(t, p, key)
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Return(c, clean, "pw") }()
	}
	wg.Wait()
	if s := p.Stats(); s.Idle != 8 || rec.count(ReasonCredentialChanged) != 0 {
		t.Fatalf("%+v, %d credential changes", s, rec.count(ReasonCredentialChanged))
	}
}

func TestShutdown(t *testing.T) {
	p, rec := newPool(t, Settings{})
	c1, tk1, _ := login(t, p, key)
	c2, tk2, _ := login(t, p, key)
	p.Return(c1, clean, "pw")
	p.Shutdown()
	if tk1.released.Load() != 1 || rec.count(ReasonClosed) != 1 {
		t.Fatal("idle connection not closed by Shutdown")
	}
	p.Return(c2, clean, "pw") // a session ending after the shutdown
	if tk2.released.Load() != 1 || c2.State() != StateClosed {
		t.Fatal("a connection returned to a closed pool was kept")
	}
	if got, _ := p.Checkout(key, "pw"); got != nil {
		t.Fatal("checkout from a closed pool")
	}
}

// TestCloseReleasesOnce: Close from any state releases the slot once,
// however often it is called.
func TestCloseReleasesOnce(t *testing.T) {
	p, _ := newPool(t, Settings{})
	c, tk, _ := login(t, p, key)
	c.Close(ReasonClosed)
	c.Close(ReasonClosed)
	if tk.released.Load() != 1 || c.State() != StateClosed {
		t.Fatal("slot not released once")
	}
}

func TestCredentialVerdictCache(t *testing.T) {
	c := newCredential("secret")
	if !c.verify("secret") || c.verify("Secret") || !c.verify("secret") {
		t.Fatal("verify")
	}
	if newCredential("") != nil {
		t.Fatal("an empty password became a credential")
	}
}

// TestIdleTimeoutOnFakeClock: idle_timeout and the janitor's tick run on
// Settings.Clock: an hour of idle_timeout passes when the test advances a
// clock.Fake, and the janitor sweeps when the fake clock reaches its
// tick, not by sleeping.
func TestIdleTimeoutOnFakeClock(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	p, rec := newPool(t, Settings{MinIdle: 1, IdleTimeout: time.Hour, MaxLifetime: 10 * time.Hour, Clock: fake})
	var cs []*Conn
	for range 3 {
		c, _, _ := login(t, p, key)
		cs = append(cs, c)
	}
	for _, c := range cs {
		p.Return(c, clean, "pw")
	}
	// The janitor's only timer is on the fake clock (with a real ticker
	// the fake clock would have none): one sweep per tick.
	waitFor(t, func() bool { return fake.Timers() == 1 })
	sweep := func(d time.Duration) {
		t.Helper()
		fake.Advance(d)
		// The tick fired (no timer armed) and the sweep ran (the next tick armed).
		waitFor(t, func() bool { return fake.Timers() == 1 })
	}
	sweep(59 * time.Minute)
	if p.Stats().Idle != 3 {
		t.Fatalf("closed before idle_timeout: %+v", p.Stats())
	}
	sweep(time.Minute)
	if p.Stats().Idle != 1 {
		t.Fatalf("after the tick past idle_timeout: %+v, want 1 idle (min_idle 1)", p.Stats())
	}
	if rec.count(ReasonIdleTimeout) != 2 {
		t.Fatalf("%d idle timeouts (min_idle 1), want 2", rec.count(ReasonIdleTimeout))
	}
}
