package registry_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
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
	reclaim  = 300 * time.Millisecond // fenced → parked
	forget   = 400 * time.Millisecond // parked → forgotten
)

type node struct {
	lim *limiter.Redis
	reg *registry.Registry
}

var buckets = []limiter.BucketConfig{{ID: "b", MaxConnections: 10, MaxQueueSize: 5, QueueTimeout: time.Second}}

func start(t *testing.T, addr, id string, onReclaim func(string, map[string]int64)) *node {
	t.Helper()
	log := testLog().With("instance", id)
	lim, err := limiter.NewRedis(limiter.RedisOptions{Addr: addr, InstanceID: id, HeartbeatTTL: ttl, ReclaimAfter: reclaim,
		PollInterval: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond, SettleTime: 200 * time.Millisecond, Log: log}, buckets)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Client: lim.Client(), InstanceID: id, HeartbeatTTL: ttl, HeartbeatInterval: beat,
		ReaperInterval: reapEach, Log: log, Ready: func() bool { return !lim.InFallback() }, Missing: lim.ReportUnregistered,
		Lease: lim.Lease, Renewed: lim.LeaseRenewed, ReclaimAfter: reclaim, ForgetAfter: forget,
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
// it) while holding 5 slots of a bucket of max 10 shared by 3 instances;
// two live reapers race. In steps, each done exactly once: its lease
// expires and it is fenced (out of proxy:instances, into proxy:fenced,
// all 5 still counted: it may only be frozen); after reclaim_after it is
// parked (the 2 above its fallback share of 3 given back); after
// forget_after it is forgotten (the last 3 back, keys gone).
func TestReaperReclaimsDeadInstance(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	var mu sync.Mutex
	var got []map[string]int64
	onReclaim := func(inst string, slots map[string]int64) {
		mu.Lock()
		got = append(got, slots)
		mu.Unlock()
	}
	a := start(t, rs.Addr(), "alive-1", onReclaim)
	start(t, rs.Addr(), "alive-2", onReclaim)
	dead := start(t, rs.Addr(), "dead", nil)
	keep := acquire(t, a.lim, 2)
	acquire(t, dead.lim, 5) // never released: the instance dies holding them
	if n := redistest.Int(t, c, "GET", limiter.KeyCount("b")); n != 7 {
		t.Fatalf("count %d, want 7", n)
	}
	// Death: no more heartbeats, no leave, connection gone.
	dead.reg.Stop()
	dead.lim.Disconnect()
	fenced := waitCond(t, ttl+reapEach+2*time.Second, "dead instance fenced", func() bool {
		return redistest.Int(t, c, "SISMEMBER", limiter.KeyFenced, "dead") == 1
	})
	if n := redistest.Int(t, c, "SISMEMBER", limiter.KeyInstances, "dead"); n != 0 {
		t.Fatal("fenced instance still in proxy:instances")
	}
	if n := redistest.Int(t, c, "GET", limiter.KeyCount("b")); n != 7 {
		t.Fatalf("count %d right after fencing, want 7 (nothing given back yet)", n)
	}
	parked := waitCond(t, reclaim+reapEach+2*time.Second, "slots above the share given back", func() bool {
		return redistest.Int(t, c, "GET", limiter.KeyCount("b")) == 5
	})
	if n := redistest.Int(t, c, "HGET", limiter.KeyConns("dead"), "b"); n != 3 {
		t.Fatalf("parked instance's hash holds %d, want its share 3", n)
	}
	forgotten := waitCond(t, forget+reapEach+2*time.Second, "dead instance forgotten", func() bool {
		return redistest.Int(t, c, "GET", limiter.KeyCount("b")) == 2
	})
	t.Logf("dead instance fenced after %s, parked %s later, forgotten %s later (ttl %s, reclaim_after %s, forget_after %s, reaper %s)",
		fenced, parked, forgotten, ttl, reclaim, forget, reapEach)
	if n := redistest.Int(t, c, "EXISTS", limiter.KeyConns("dead"), limiter.KeyFence("dead"), limiter.KeyIncarnation("dead")); n != 0 {
		t.Fatalf("%d keys of the dead instance left", n)
	}
	if n := redistest.Int(t, c, "SISMEMBER", limiter.KeyFenced, "dead"); n != 0 {
		t.Fatal("forgotten instance still in proxy:fenced")
	}
	time.Sleep(3 * reapEach)
	mu.Lock()
	if len(got) != 2 || got[0]["b"] != 2 || got[1]["b"] != 3 {
		t.Fatalf("reclaims %v, want exactly [b:2 (parked) b:3 (forgotten)]", got)
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
	if _, won, err := coord.ReclaimInstance(context.Background(), c, "sleepy", false); err != nil || !won {
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
