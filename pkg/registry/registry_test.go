package registry_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

func testLog() *slog.Logger {
	if os.Getenv("TDSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

const (
	ttl      = time.Second
	beat     = 200 * time.Millisecond
	reapEach = 200 * time.Millisecond
)

type node struct {
	lim *limiter.Redis
	reg *registry.Registry
}

var buckets = []limiter.BucketConfig{{ID: "b", MaxConnections: 10, MaxQueueSize: 5, QueueTimeout: time.Second}}

func start(t *testing.T, addr, id string, onReclaim func(string, map[string]int64)) *node {
	t.Helper()
	log := testLog().With("instance", id)
	lim, err := limiter.NewRedis(limiter.RedisOptions{Addr: addr, InstanceID: id, HeartbeatTTL: ttl,
		PollInterval: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond, SettleTime: 200 * time.Millisecond, Log: log}, buckets)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Client: lim.Client(), InstanceID: id, HeartbeatTTL: ttl, HeartbeatInterval: beat,
		ReaperInterval: reapEach, Log: log, Ready: func() bool { return !lim.InFallback() }, Missing: lim.ReportUnregistered,
		OnReclaim: onReclaim})
	if err != nil {
		t.Fatal(err)
	}
	reg.Start()
	t.Cleanup(func() { reg.Stop(); lim.Disconnect() })
	return &node{lim: lim, reg: reg}
}

func acquire(t *testing.T, l limiter.Limiter, n int) []limiter.Ticket {
	t.Helper()
	var out []limiter.Ticket
	for range n {
		tk, err := l.Acquire(context.Background(), "b")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tk)
	}
	return out
}

func waitCond(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReaperReclaimsDeadInstance: an instance stops (its heartbeat with
// it) while holding 3 slots; two live reapers race; exactly one reclaims
// it within TTL + one reaper interval; the count and the set lose it.
func TestReaperReclaimsDeadInstance(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	var reclaims atomic.Int32
	var mu sync.Mutex
	var got map[string]int64
	onReclaim := func(inst string, slots map[string]int64) {
		reclaims.Add(1)
		mu.Lock()
		got = slots
		mu.Unlock()
	}
	a := start(t, rs.Addr(), "alive-1", onReclaim)
	start(t, rs.Addr(), "alive-2", onReclaim)
	dead := start(t, rs.Addr(), "dead", nil)
	keep := acquire(t, a.lim, 2)
	acquire(t, dead.lim, 3) // never released: the instance dies holding them
	if n := redistest.Int(t, c, "GET", limiter.KeyCount("b")); n != 5 {
		t.Fatalf("count %d, want 5", n)
	}
	// Death: no more heartbeats, no leave, connection gone.
	dead.reg.Stop()
	dead.lim.Disconnect()
	died := time.Now()
	d := waitCond(t, ttl+reapEach+2*time.Second, "dead instance reclaimed", func() bool {
		return redistest.Int(t, c, "GET", limiter.KeyCount("b")) == 2
	})
	t.Logf("slots of the dead instance back after %s (heartbeat TTL %s + reaper interval %s)", d, ttl, reapEach)
	if d > ttl+reapEach+300*time.Millisecond {
		t.Fatalf("reclaimed after %s, want <= TTL + one reaper interval", time.Since(died))
	}
	if n := redistest.Int(t, c, "SISMEMBER", limiter.KeyInstances, "dead"); n != 0 {
		t.Fatal("dead instance still in proxy:instances")
	}
	if n := redistest.Int(t, c, "EXISTS", limiter.KeyConns("dead")); n != 0 {
		t.Fatal("dead instance's hash still there")
	}
	time.Sleep(3 * reapEach)
	if n := reclaims.Load(); n != 1 {
		t.Fatalf("%d reclaims of one dead instance, want exactly 1", n)
	}
	mu.Lock()
	if got["b"] != 3 {
		t.Fatalf("reclaimed %v, want b:3", got)
	}
	mu.Unlock()
	for _, tk := range keep {
		tk.Release()
	}
	if n := redistest.Int(t, c, "GET", limiter.KeyCount("b")); n != 0 {
		t.Fatalf("count %d, want 0", n)
	}
}

// TestLeaveCleansUp: a clean leave gives back what is still held and
// removes the instance's keys and membership at once.
func TestLeaveCleansUp(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	other := start(t, rs.Addr(), "other", nil)
	n := start(t, rs.Addr(), "leaver", nil)
	keep := acquire(t, other.lim, 1)
	acquire(t, n.lim, 4)
	n.reg.Stop()
	n.lim.Close()
	slots, err := n.reg.Leave(context.Background())
	if err != nil || slots["b"] != 4 {
		t.Fatalf("leave: %v %v", slots, err)
	}
	if k := redistest.Int(t, c, "EXISTS", limiter.KeyConns("leaver"), limiter.KeyHeartbeat("leaver")); k != 0 {
		t.Fatalf("%d keys of the leaver remain", k)
	}
	if m := redistest.Int(t, c, "SISMEMBER", limiter.KeyInstances, "leaver"); m != 0 {
		t.Fatal("leaver still in proxy:instances")
	}
	if cnt := redistest.Int(t, c, "GET", limiter.KeyCount("b")); cnt != 1 {
		t.Fatalf("count %d after leave, want 1 (the other's)", cnt)
	}
	keep[0].Release()
}

// TestReapedWhileAliveReregisters: a live instance whose heartbeat lapsed
// (a long pause) is reaped; its next heartbeat finds it absent, and the
// limiter reconciles: registered again, with its slots counted again.
func TestReapedWhileAliveReregisters(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	n := start(t, rs.Addr(), "sleepy", nil)
	held := acquire(t, n.lim, 3)
	redistest.Do(t, c, "DEL", limiter.KeyHeartbeat("sleepy"))
	if _, won, err := limiter.ReclaimInstance(context.Background(), c, "sleepy", false); err != nil || !won {
		t.Fatalf("reclaim: %v %v", won, err)
	}
	d := waitCond(t, 5*time.Second, "re-registered with its slots", func() bool {
		return !n.lim.InFallback() && redistest.Int(t, c, "SISMEMBER", limiter.KeyInstances, "sleepy") == 1 &&
			redistest.Int(t, c, "GET", limiter.KeyCount("b")) == 3
	})
	t.Logf("reaped live instance re-registered with its 3 slots after %s", d)
	for _, tk := range held {
		tk.Release()
	}
	if cnt := redistest.Int(t, c, "GET", limiter.KeyCount("b")); cnt != 0 {
		t.Fatalf("count %d, want 0", cnt)
	}
}
