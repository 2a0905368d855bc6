package limiter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

func testLog() *slog.Logger {
	if os.Getenv("TDSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newRedisLimiter starts a Redis limiter for instance id with quick probe
// and settle times, closed at cleanup.
func newRedisLimiter(t testing.TB, addr, id string, buckets []BucketConfig, tweak func(*RedisOptions), opts ...Option) *Redis {
	t.Helper()
	o := RedisOptions{Addr: addr, InstanceID: id, OpTimeout: 300 * time.Millisecond, HeartbeatTTL: time.Minute,
		PollInterval: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond, SettleTime: 300 * time.Millisecond,
		Log: testLog().With("instance", id)}
	if tweak != nil {
		tweak(&o)
	}
	l, err := NewRedis(o, buckets, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Disconnect)
	return l
}

func waitCond(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func acquireN(t testing.TB, l Limiter, bucket string, n int) []Ticket {
	t.Helper()
	var ts []Ticket
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		tk, err := l.Acquire(ctx, bucket)
		cancel()
		if err != nil {
			t.Fatalf("acquire %d of %d: %v", i+1, n, err)
		}
		ts = append(ts, tk)
	}
	return ts
}

func releaseAll(ts []Ticket) {
	for _, t := range ts {
		t.Release()
	}
}

// TestRedisSharedCapAndWakeup: two instances share a cap of 4. The fifth
// login waits on the instance that holds nothing, and a release on the
// other instance wakes it through pub/sub.
func TestRedisSharedCapAndWakeup(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 4, MaxQueueSize: 4, QueueTimeout: 5 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, func(o *RedisOptions) { o.PollInterval = time.Hour }) // no safety poll: pub/sub only
	b := newRedisLimiter(t, rs.Addr(), "b", bs, func(o *RedisOptions) { o.PollInterval = time.Hour })
	held := acquireN(t, a, "b", 4)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 4 {
		t.Fatalf("count %d, want 4", n)
	}
	if n := redistest.Int(t, c, "HGET", coord.KeyConns("a"), "b"); n != 4 {
		t.Fatalf("a's hash %d, want 4", n)
	}
	got := make(chan time.Time, 1)
	go func() {
		tk, err := b.Acquire(context.Background(), "b")
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- time.Now()
		tk.Release()
	}()
	waitCond(t, 2*time.Second, "b's waiter queued", func() bool { return b.Snapshot()[0].Queued == 1 })
	time.Sleep(50 * time.Millisecond)
	rel := time.Now()
	held[0].Release()
	select {
	case at := <-got:
		t.Logf("wake-up across instances by pub/sub: %s", at.Sub(rel))
		if at.Sub(rel) > 500*time.Millisecond {
			t.Fatalf("waiter on b woke %s after a's release", at.Sub(rel))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter on b not woken by a release on a")
	}
	releaseAll(held[1:])
	waitCond(t, time.Second, "count back to 0", func() bool { return redistest.Int(t, c, "GET", coord.KeyCount("b")) == 0 })
}

// TestRedisRuntimeMax: SET proxy:bucket:<id>:max takes effect at once on
// every instance, lowering (new logins queue, 50005 when the queue is
// full) and raising (waiters are woken by the cache invalidation).
func TestRedisRuntimeMax(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "bucket-001", MaxConnections: 20, MaxQueueSize: 2, QueueTimeout: 5 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "p1", bs, func(o *RedisOptions) { o.PollInterval = time.Second })
	b := newRedisLimiter(t, rs.Addr(), "p2", bs, func(o *RedisOptions) { o.PollInterval = time.Second })
	if n := redistest.Int(t, c, "GET", coord.KeyMax("bucket-001")); n != 20 {
		t.Fatalf("max seeded %d, want 20", n)
	}
	redistest.Do(t, c, "SET", coord.KeyMax("bucket-001"), "3")
	held := append(acquireN(t, a, "bucket-001", 2), acquireN(t, b, "bucket-001", 1)...)
	// Both instances refuse a fourth at once: queued, then 50005 when the queue is full.
	for _, l := range []*Redis{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := l.Acquire(ctx, "bucket-001")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: 4th login with max 3: %v, want it to wait", l.InstanceID(), err)
		}
	}
	var wg sync.WaitGroup
	woke := make(chan time.Duration, 2)
	var raised atomic.Int64
	for range 2 {
		wg.Go(func() {
			tk, err := b.Acquire(context.Background(), "bucket-001")
			if err != nil {
				t.Error(err)
				return
			}
			woke <- time.Duration(time.Now().UnixNano() - raised.Load())
			tk.Release()
		})
	}
	waitCond(t, time.Second, "two queued", func() bool { return b.Snapshot()[0].Queued == 2 })
	_, err := b.Acquire(context.Background(), "bucket-001")
	var le *Error
	if !errors.As(err, &le) || le.Number() != NumQueueFull {
		t.Fatalf("third waiter with max_queue_size 2: %v, want 50005", err)
	}
	if le.Max != 3 {
		t.Fatalf("refusal names max %d, want 3 (the runtime max)", le.Max)
	}
	raised.Store(time.Now().UnixNano())
	redistest.Do(t, c, "SET", coord.KeyMax("bucket-001"), "20")
	for range 2 {
		select {
		case d := <-woke:
			t.Logf("waiter woken %s after SET max 20", d)
			if d > time.Second {
				t.Fatalf("raising max woke a waiter only after %s", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("raising max did not wake the waiters")
		}
	}
	wg.Wait()
	releaseAll(held[:3])
}

// TestRedisFallbackAndReconcile: Redis dies while two instances hold
// slots; both fall back within about a second and admit only within their
// local share; Redis comes back empty; both reconcile, and count equals
// the sum of the hashes equals the tickets actually held. Tickets granted
// in fallback release correctly afterwards.
func TestRedisFallbackAndReconcile(t *testing.T) {
	rs := redistest.Start(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 12, MaxQueueSize: 10, QueueTimeout: 50 * time.Millisecond}}
	var fallbackHook atomic.Int32
	// lease_loss keep: the shares below include each instance's share of
	// the free slots (with close an instance admits only what Redis counts
	// for it until its peers confirm the outage: TestFallbackGrowsOnlyWhenPeersConfirm).
	keep := func(o *RedisOptions) { o.LeaseLossKeep = true }
	a := newRedisLimiter(t, rs.Addr(), "a", bs, func(o *RedisOptions) {
		keep(o)
		o.OnStateChange = func(_, to RedisState) {
			if to == StateFallback {
				fallbackHook.Add(1)
			}
		}
	})
	b := newRedisLimiter(t, rs.Addr(), "b", bs, keep)
	waitCond(t, 2*time.Second, "both see 2 live instances", func() bool { return a.LiveInstances() == 2 && b.LiveInstances() == 2 })
	ha := acquireN(t, a, "b", 2)
	hb := acquireN(t, b, "b", 5)
	// The count each instance last saw bounds its share; the poll refreshes it.
	waitCond(t, 2*time.Second, "a has seen b's slots", func() bool { _, s := a.Status(); return s[0].Count == 7 })

	rs.Kill()
	killed := time.Now()
	da := waitCond(t, 3*time.Second, "a in fallback", a.InFallback)
	db := waitCond(t, 3*time.Second, "b in fallback", b.InFallback)
	t.Logf("fallback detected: a %s, b %s after SIGKILL of redis (idle instances: the lost connection kicks a poll)", da, db)
	// The hook runs just after the state changes (outside the lock).
	waitCond(t, time.Second, "fallback hook ran", func() bool { return fallbackHook.Load() >= 1 })
	if fallbackHook.Load() != 1 || a.Fallbacks() != 1 {
		t.Fatalf("fallback hook %d, counter %d; want 1", fallbackHook.Load(), a.Fallbacks())
	}
	// Shares: max 12 / 2 live = 6 each; what was free (12-7=5) split
	// exactly by rank (a first: 3, b: 2): a may hold 2+3=5, b 5+2=7 capped
	// at 6.
	_, sa := a.Status()
	_, sb := b.Status()
	if sa[0].Share != 5 || sb[0].Share != 6 {
		t.Fatalf("shares a=%d b=%d, want 5 and 6", sa[0].Share, sb[0].Share)
	}
	ha = append(ha, acquireN(t, a, "b", 3)...)
	hb = append(hb, acquireN(t, b, "b", 1)...)
	for _, l := range []*Redis{a, b} {
		start := time.Now()
		_, err := l.Acquire(context.Background(), "b")
		if !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("%s beyond its share: %v, want 50004", l.InstanceID(), err)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s: a login beyond the share hung %s", l.InstanceID(), time.Since(start))
		}
	}
	if got := len(ha) + len(hb); got > 12 {
		t.Fatalf("%d slots held in fallback > max 12", got)
	}
	// A fallback ticket and a pre-fallback ticket are released while Redis is down.
	ha[0].Release()
	hb[0].Release()
	ha, hb = ha[1:], hb[1:]

	time.Sleep(300 * time.Millisecond)
	rs.Restart() // empty
	back := time.Now()
	ra := waitCond(t, 5*time.Second, "a reconciled", func() bool { return !a.InFallback() })
	rb := waitCond(t, 5*time.Second, "b reconciled", func() bool { return !b.InFallback() })
	t.Logf("redis down %s; reconciled after restart: a %s, b %s (settle 300ms)", back.Sub(killed).Round(time.Millisecond), ra, rb)
	c := rs.Client(t)
	count := redistest.Int(t, c, "GET", coord.KeyCount("b"))
	sumHash := redistest.Int(t, c, "HGET", coord.KeyConns("a"), "b") + redistest.Int(t, c, "HGET", coord.KeyConns("b"), "b")
	if want := int64(len(ha) + len(hb)); count != want || sumHash != want {
		t.Fatalf("after reconcile: count %d, sum of hashes %d, tickets held %d", count, sumHash, want)
	}
	if n := redistest.Int(t, c, "GET", coord.KeyMax("b")); n != 12 {
		t.Fatalf("max not re-seeded: %d", n)
	}
	if n := redistest.Int(t, c, "SCARD", coord.KeyInstances); n != 2 {
		t.Fatalf("%d instances registered after reconcile, want 2", n)
	}
	if a.Reconciles() != 1 || b.Reconciles() != 1 {
		t.Fatalf("reconciles a=%d b=%d", a.Reconciles(), b.Reconciles())
	}
	// Back on Redis: the shared cap applies again (12 - 9 = 3 free).
	more := acquireN(t, a, "b", 12-int(count))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if _, err := b.Acquire(ctx, "b"); err == nil {
		t.Fatal("acquired past the shared cap after reconcile")
	}
	cancel()
	releaseAll(more)
	releaseAll(ha)
	releaseAll(hb)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 0 {
		t.Fatalf("count %d after every release, want 0", n)
	}
	for _, id := range []string{"a", "b"} {
		if n := redistest.Int(t, c, "HLEN", coord.KeyConns(id)); n != 0 {
			t.Fatalf("%s's hash has %d fields after every release", id, n)
		}
	}
}

// TestRedisStartsInFallback: Redis down at start: the limiter serves on its
// share and reconciles once Redis appears. (lease_loss keep: with close the
// share waits for unreachedGrowAt, TestNeverReachedRefusesOrUsesExpected.)
func TestRedisStartsInFallback(t *testing.T) {
	rs := redistest.Start(t)
	rs.Kill()
	bs := []BucketConfig{{ID: "b", MaxConnections: 6, MaxQueueSize: 1, QueueTimeout: 20 * time.Millisecond}}
	l := newRedisLimiter(t, rs.Addr(), "solo", bs, func(o *RedisOptions) { o.FallbackDivisor, o.LeaseLossKeep = 2, true })
	if !l.InFallback() {
		t.Fatal("not in fallback with Redis down")
	}
	held := acquireN(t, l, "b", 3)
	if _, err := l.Acquire(context.Background(), "b"); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("beyond share 6/2: %v", err)
	}
	rs.Restart()
	waitCond(t, 5*time.Second, "reconciled", func() bool { return !l.InFallback() })
	c := rs.Client(t)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	releaseAll(held)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 0 {
		t.Fatalf("count %d, want 0", n)
	}
}

// TestRedisFairness measures how a saturated bucket is shared by two
// instances: each runs clients that take a slot, hold it 2 ms, release it
// and come back, with equal demand (12 and 12 clients) and unequal (16 and
// 4). It reports grants and wait percentiles per instance, and fails if
// one instance's clients wait more than 3 times longer (p50) than the
// other's: a free slot goes to the longer queue (acquire script).
func TestRedisFairness(t *testing.T) {
	for _, tc := range []struct {
		name string
		x, y int
	}{{"equal", 12, 12}, {"unequal", 16, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			const maxConns = 4
			dur := 3 * time.Second
			bs := []BucketConfig{{ID: "b", MaxConnections: maxConns, MaxQueueSize: 32, QueueTimeout: 10 * time.Second}}
			ls := map[string]*Redis{"x": newRedisLimiter(t, rs.Addr(), "x", bs, nil), "y": newRedisLimiter(t, rs.Addr(), "y", bs, nil)}
			clients := map[string]int{"x": tc.x, "y": tc.y}
			var mu sync.Mutex
			waits := map[string][]time.Duration{}
			stop := time.Now().Add(dur)
			var wg sync.WaitGroup
			for id, l := range ls {
				for range clients[id] {
					wg.Go(func() {
						for time.Now().Before(stop) {
							start := time.Now()
							tk, err := l.Acquire(context.Background(), "b")
							if err != nil {
								t.Error(err)
								return
							}
							w := time.Since(start)
							time.Sleep(2 * time.Millisecond)
							tk.Release()
							mu.Lock()
							waits[id] = append(waits[id], w)
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			total := len(waits["x"]) + len(waits["y"])
			p50 := map[string]time.Duration{}
			for _, id := range []string{"x", "y"} {
				w := waits[id]
				slices.Sort(w)
				p50[id] = pct(w, 50)
				t.Logf("fairness %s: instance %s, %d clients: %d grants (%.1f%%), wait p50 %s p90 %s p99 %s max %s", tc.name, id, clients[id], len(w),
					100*float64(len(w))/float64(total), pct(w, 50), pct(w, 90), pct(w, 99), w[len(w)-1])
			}
			if r := float64(max(p50["x"], p50["y"])) / float64(max(min(p50["x"], p50["y"]), time.Microsecond)); r > 3 {
				t.Fatalf("median waits differ %.1fx between instances", r)
			}
		})
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(10 * time.Microsecond)
}

// TestRedisRouteDirectory: proxy:route:<key> read through the client-side
// cache; a SET elsewhere is seen at once (Redis invalidates the entry).
func TestRedisRouteDirectory(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	l := newRedisLimiter(t, rs.Addr(), "r", []BucketConfig{{ID: "b", MaxConnections: 1}}, nil)
	ctx := context.Background()
	if _, ok := l.RouteDirectory(ctx, "tenant-a"); ok {
		t.Fatal("lookup of an absent route succeeded")
	}
	redistest.Do(t, c, "SET", coord.KeyRoute("tenant-a"), "bucket-002")
	waitCond(t, time.Second, "route seen", func() bool { b, ok := l.RouteDirectory(ctx, "tenant-a"); return ok && b == "bucket-002" })
	hit := l.client.DoCache(ctx, l.client.B().Get().Key(coord.KeyRoute("tenant-a")).Cache(), cacheTTL)
	if !hit.IsCacheHit() {
		t.Fatal("second lookup was not served by the client-side cache")
	}
	redistest.Do(t, c, "SET", coord.KeyRoute("tenant-a"), "bucket-003")
	d := waitCond(t, time.Second, "route change seen", func() bool { b, _ := l.RouteDirectory(ctx, "tenant-a"); return b == "bucket-003" })
	t.Logf("route change seen after %s (invalidation)", d)
}

// TestRedisHungFallsBack: Redis stops answering without closing anything
// (SIGSTOP). A login does not hang: its acquire times out after op_timeout
// and it is served on the local share; idle instances notice by their poll.
// After SIGCONT the instances reconcile and the counts are exact.
// lease_loss keep, whose fallback admits on the share of the free slots
// (close admits only what Redis counts: TestFallbackGrowsOnlyWhenPeersConfirm).
func TestRedisHungFallsBack(t *testing.T) {
	rs := redistest.Start(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 8, MaxQueueSize: 4, QueueTimeout: time.Second}}
	const opTimeout = 300 * time.Millisecond
	opts := func(o *RedisOptions) { o.OpTimeout = opTimeout; o.PollInterval = time.Second; o.LeaseLossKeep = true }
	busy := newRedisLimiter(t, rs.Addr(), "busy", bs, opts)
	idle := newRedisLimiter(t, rs.Addr(), "idle", bs, opts)
	waitCond(t, 3*time.Second, "2 live seen", func() bool { return busy.LiveInstances() == 2 && idle.LiveInstances() == 2 })
	held := acquireN(t, busy, "b", 2)
	rs.Pause()
	paused := time.Now()
	start := time.Now()
	tk, err := busy.Acquire(context.Background(), "b")
	if err != nil {
		t.Fatalf("acquire with redis hung: %v", err)
	}
	held = append(held, tk)
	t.Logf("acquire with redis hung: served on the local share after %s (op_timeout %s)", time.Since(start).Round(time.Millisecond), opTimeout)
	if time.Since(start) > 2*opTimeout {
		t.Fatalf("acquire took %s with op_timeout %s", time.Since(start), opTimeout)
	}
	waitCond(t, 3*time.Second, "idle instance in fallback", idle.InFallback)
	t.Logf("idle instance in fallback %s after the hang (at most poll 1s + op_timeout)", time.Since(paused).Round(time.Millisecond))
	rs.Resume()
	waitCond(t, 5*time.Second, "both reconciled", func() bool { return !busy.InFallback() && !idle.InFallback() })
	c := rs.Client(t)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 3 {
		t.Fatalf("count %d after reconcile, want 3", n)
	}
	releaseAll(held)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 0 {
		t.Fatalf("count %d, want 0", n)
	}
}
