package coord

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

func ctx5(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register puts instance in proxy:instances with a heartbeat, holding nothing.
func register(t testing.TB, c rueidis.Client, instance string, hs ...Holding) {
	t.Helper()
	if _, err := ReconcileInstance(ctx5(t), c, instance, time.Minute, hs); err != nil {
		t.Fatal(err)
	}
}

// TestScriptAcquireNeverExceedsMax: 64 goroutines hammer one bucket of max
// 10 with acquire/release pairs from four instances while a sampler reads
// the count; the count never exceeds 10, each grant reports count <= max,
// and at the end count is 0 and every hash is empty.
func TestScriptAcquireNeverExceedsMax(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	const maxConns, callers, rounds = 10, 64, 60
	for i := range 4 {
		register(t, c, fmt.Sprintf("i%d", i))
	}
	// One burst first: exactly max of 64 simultaneous acquires win.
	var granted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range callers {
		wg.Go(func() {
			<-start
			r, err := AcquireSlot(context.Background(), c, fmt.Sprintf("i%d", g%4), "b", maxConns)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Status == AcquireGranted {
				granted.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if g := granted.Load(); g != maxConns {
		t.Fatalf("burst of %d acquires: %d granted, want %d", callers, g, maxConns)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != maxConns {
		t.Fatalf("count after burst = %d, want %d", n, maxConns)
	}
	for i := range 4 {
		h := redistest.Int(t, c, "HGET", KeyConns(fmt.Sprintf("i%d", i)), "b")
		for range h {
			if ok, _, err := ReleaseSlot(ctx5(t), c, fmt.Sprintf("i%d", i), "b"); err != nil || !ok {
				t.Fatalf("release: %v %v", ok, err)
			}
		}
	}

	// Then churn: acquire, hold a moment, release, while sampling the count.
	stop := make(chan struct{})
	var peak, samples atomic.Int64
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := c.Do(context.Background(), c.B().Get().Key(KeyCount("b")).Build()).AsInt64()
			if err == nil {
				samples.Add(1)
				if n > peak.Load() {
					peak.Store(n)
				}
			}
		}
	}()
	var grants atomic.Int64
	for g := range callers {
		wg.Go(func() {
			inst := fmt.Sprintf("i%d", g%4)
			for range rounds {
				r, err := AcquireSlot(context.Background(), c, inst, "b", maxConns)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Count > r.Max || r.Max != maxConns {
					t.Errorf("acquire saw count %d max %d", r.Count, r.Max)
				}
				if r.Status != AcquireGranted {
					continue
				}
				grants.Add(1)
				time.Sleep(100 * time.Microsecond)
				if ok, cnt, err := ReleaseSlot(context.Background(), c, inst, "b"); err != nil || !ok || cnt < 0 {
					t.Errorf("release: %v %d %v", ok, cnt, err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampler
	t.Logf("churn: %d grants of %d tries, %d count samples, peak count %d (max %d)",
		grants.Load(), callers*rounds, samples.Load(), peak.Load(), maxConns)
	if p := peak.Load(); p > maxConns {
		t.Fatalf("count reached %d > max %d", p, maxConns)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 0 {
		t.Fatalf("final count %d, want 0", n)
	}
	for i := range 4 {
		if n := redistest.Int(t, c, "HLEN", KeyConns(fmt.Sprintf("i%d", i))); n != 0 {
			t.Fatalf("instance i%d hash has %d fields, want none", i, n)
		}
	}
}

// TestScriptAcquireSeedsAndObeysMax: an absent max is seeded from the
// config; an operator's SET wins over the config from the next call; an
// unregistered instance is refused.
func TestScriptAcquireSeedsAndObeysMax(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	if r, err := AcquireSlot(ctx, c, "ghost", "b", 5); err != nil || r.Status != AcquireUnregistered {
		t.Fatalf("unregistered acquire = %+v, %v; want status -1", r, err)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 0 {
		t.Fatalf("unregistered acquire changed count to %d", n)
	}
	register(t, c, "p1")
	if got := redistest.Do(t, c, "GET", KeyMax("b")); got.Error() != nil {
		t.Fatalf("max not seeded by the first acquire: %v", got.Error())
	}
	redistest.Do(t, c, "SET", KeyMax("b"), "2")
	for i, want := range []AcquireStatus{AcquireGranted, AcquireGranted, AcquireFull} {
		r, err := AcquireSlot(ctx, c, "p1", "b", 5)
		if err != nil || r.Status != want || r.Max != 2 {
			t.Fatalf("acquire %d = %+v, %v; want status %d max 2", i, r, err, want)
		}
	}
	redistest.Do(t, c, "SET", KeyMax("b"), "not-a-number")
	if r, _ := AcquireSlot(ctx, c, "p1", "b", 5); r.Status != AcquireFull || r.Max != 0 {
		t.Fatalf("max garbage: %+v, want full with max 0", r)
	}
}

// TestScriptReleaseClamps: a release the instance's hash does not account
// for changes nothing; count never goes below 0 even if it was corrupted.
func TestScriptReleaseClamps(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	register(t, c, "p1")
	register(t, c, "p2")
	if _, err := AcquireSlot(ctx, c, "p2", "b", 5); err != nil {
		t.Fatal(err)
	}
	// p1 holds nothing in Redis (e.g. a ticket granted in fallback).
	ok, cnt, err := ReleaseSlot(ctx, c, "p1", "b")
	if err != nil || ok || cnt != 1 {
		t.Fatalf("release of an unrecorded slot = %v %d %v; want false, count 1 (p2's slot untouched)", ok, cnt, err)
	}
	// Corrupt: p2's hash says 3, count says 1. Three releases: count 0, never -1.
	redistest.Do(t, c, "HSET", KeyConns("p2"), "b", "3")
	for i := range 3 {
		ok, cnt, err := ReleaseSlot(ctx, c, "p2", "b")
		if err != nil || !ok || cnt != 0 {
			t.Fatalf("release %d = %v %d %v; want true, count 0", i, ok, cnt, err)
		}
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 0 {
		t.Fatalf("count = %d, want 0", n)
	}
	if n := redistest.Int(t, c, "HLEN", KeyConns("p2")); n != 0 {
		t.Fatalf("p2's hash keeps %d fields", n)
	}
	ok, cnt, err = ReleaseSlot(ctx, c, "p2", "b")
	if err != nil || ok || cnt != 0 {
		t.Fatalf("release past empty = %v %d %v", ok, cnt, err)
	}
}

// TestScriptReclaimOnce: two reapers racing to reclaim the same dead
// instance: exactly one wins, the counts drop once, the instance's keys
// and membership are gone; a live instance is not reclaimed.
func TestScriptReclaimOnce(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	register(t, c, "alive")
	for range 3 {
		if _, err := AcquireSlot(ctx, c, "alive", "b1", 10); err != nil {
			t.Fatal(err)
		}
	}
	if _, won, err := ReclaimInstance(ctx, c, "alive", false); !errors.Is(err, ErrInstanceAlive) || won {
		t.Fatalf("reclaim of a live instance: won=%v err=%v; want ErrInstanceAlive", won, err)
	}
	for round := range 50 {
		dead := fmt.Sprintf("dead-%d", round)
		register(t, c, dead)
		for range 4 {
			AcquireSlot(ctx, c, dead, "b1", 10)
		}
		AcquireSlot(ctx, c, dead, "b2", 10)
		SetWaiting(ctx, c, dead, "b1", 7)
		redistest.Do(t, c, "DEL", KeyHeartbeat(dead))
		var wins atomic.Int32
		var got [2]map[string]int64
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				slots, won, err := ReclaimInstance(context.Background(), c, dead, false)
				if err != nil {
					t.Error(err)
				}
				if won {
					wins.Add(1)
					got[i] = slots
				}
			})
		}
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("round %d: %d reclaims won, want exactly 1", round, w)
		}
		slots := got[0]
		if slots == nil {
			slots = got[1]
		}
		if slots["b1"] != 4 || slots["b2"] != 1 {
			t.Fatalf("round %d: reclaimed %v, want b1:4 b2:1", round, slots)
		}
		if n := redistest.Int(t, c, "GET", KeyCount("b1")); n != 3 {
			t.Fatalf("round %d: b1 count %d after reclaim, want 3 (the live instance's)", round, n)
		}
		if n := redistest.Int(t, c, "GET", KeyCount("b2")); n != 0 {
			t.Fatalf("round %d: b2 count %d after reclaim, want 0", round, n)
		}
		if n := redistest.Int(t, c, "SISMEMBER", KeyInstances, dead); n != 0 {
			t.Fatalf("round %d: %s still in proxy:instances", round, dead)
		}
		if n := redistest.Int(t, c, "EXISTS", KeyConns(dead), KeyHeartbeat(dead)); n != 0 {
			t.Fatalf("round %d: %d keys of %s left", round, n, dead)
		}
		if n := redistest.Int(t, c, "HEXISTS", KeyWaiting("b1"), dead); n != 0 {
			t.Fatalf("round %d: %s's waiting entry left", round, dead)
		}
	}
	// A clean leave reclaims itself despite its live heartbeat.
	slots, won, err := ReclaimInstance(ctx, c, "alive", true)
	if err != nil || !won || slots["b1"] != 3 {
		t.Fatalf("forced reclaim = %v %v %v", slots, won, err)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b1")); n != 0 {
		t.Fatalf("b1 count %d after the leave, want 0", n)
	}
}

// TestScriptReconcileCorrectsDrift: Redis believes an instance holds what
// it does not (a release lost with a timeout, slots granted in fallback,
// a Redis restarted empty); reconcile makes hash and count exact again.
func TestScriptReconcileCorrectsDrift(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	register(t, c, "p1")
	register(t, c, "p2")
	for range 5 {
		AcquireSlot(ctx, c, "p1", "b", 10)
	}
	for range 2 {
		AcquireSlot(ctx, c, "p2", "b", 10)
	}
	AcquireSlot(ctx, c, "p1", "old", 10)
	// p1 really holds 3 of b (two releases were lost) and none of "old".
	res, err := ReconcileInstance(ctx, c, "p1", time.Minute, []Holding{{Bucket: "b", Held: 3, SeedMax: 10}})
	if err != nil {
		t.Fatal(err)
	}
	byBucket := map[string]Reconciled{}
	for _, r := range res {
		byBucket[r.Bucket] = r
	}
	if r := byBucket["b"]; r.Delta != -2 || r.Count != 5 || r.Max != 10 {
		t.Fatalf("b reconciled %+v, want delta -2 count 5 max 10", r)
	}
	if r := byBucket["old"]; r.Delta != -1 || r.Count != 0 {
		t.Fatalf("old reconciled %+v, want delta -1 count 0", r)
	}
	if n := redistest.Int(t, c, "HGET", KeyConns("p1"), "b"); n != 3 {
		t.Fatalf("p1 field %d, want 3", n)
	}
	if n := redistest.Int(t, c, "HEXISTS", KeyConns("p1"), "old"); n != 0 {
		t.Fatal("p1 keeps a field for a bucket it holds nothing of")
	}
	// Redis restarts empty: both reconcile what they hold; count is the sum.
	redistest.Do(t, c, "FLUSHALL")
	if _, err := ReconcileInstance(ctx, c, "p1", time.Minute, []Holding{{Bucket: "b", Held: 3, SeedMax: 10}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReconcileInstance(ctx, c, "p2", time.Minute, []Holding{{Bucket: "b", Held: 2, SeedMax: 10}}); err != nil {
		t.Fatal(err)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 5 {
		t.Fatalf("count after empty restart + reconcile = %d, want 5", n)
	}
	if n := redistest.Int(t, c, "GET", KeyMax("b")); n != 10 {
		t.Fatalf("max not re-seeded: %d", n)
	}
	if n := redistest.Int(t, c, "SCARD", KeyInstances); n != 2 {
		t.Fatalf("%d instances registered, want 2", n)
	}
	if ttl := redistest.Int(t, c, "PTTL", KeyHeartbeat("p1")); ttl <= 0 || ttl > 60000 {
		t.Fatalf("heartbeat PTTL %d", ttl)
	}
	// Reconciling again with the same holdings changes nothing.
	res, _ = ReconcileInstance(ctx, c, "p1", time.Minute, []Holding{{Bucket: "b", Held: 3, SeedMax: 10}})
	if len(res) != 1 || res[0].Delta != 0 || res[0].Count != 5 {
		t.Fatalf("idempotent reconcile: %+v", res)
	}
	// A seeded max is never overwritten by a reconcile.
	redistest.Do(t, c, "SET", KeyMax("b"), "7")
	res, _ = ReconcileInstance(ctx, c, "p1", time.Minute, []Holding{{Bucket: "b", Held: 3, SeedMax: 10}})
	if res[0].Max != 7 {
		t.Fatalf("reconcile overwrote max: %+v", res)
	}
}

// TestScriptAcquireFairTurns: with a slot free, an instance is deferred
// while another's clients have waited longer (weighted by how many wait);
// a stale entry is dropped; SetWaiting writes and clears entries.
func TestScriptAcquireFairTurns(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	register(t, c, "old")
	register(t, c, "new")
	redistest.Do(t, c, "SET", KeyMax("b"), "1")
	AcquireSlot(ctx, c, "old", "b", 1)
	// "old" has waited with 2 clients for a while; "new" just arrived with 1.
	if r, _ := AcquireSlotFair(ctx, c, "old", "b", 1, 2, time.Second); r.Status != AcquireFull {
		t.Fatalf("old: %+v", r)
	}
	time.Sleep(20 * time.Millisecond)
	ReleaseSlot(ctx, c, "old", "b")
	if r, _ := AcquireSlotFair(ctx, c, "new", "b", 1, 1, time.Second); r.Status != AcquireDeferred {
		t.Fatalf("newcomer with a slot free while old waits: %+v, want deferred", r)
	}
	time.Sleep(5 * time.Millisecond) // new's wait starts strictly before old's grant
	if r, _ := AcquireSlotFair(ctx, c, "old", "b", 1, 2, time.Second); r.Status != AcquireGranted {
		t.Fatalf("the instance whose clients waited longest: %+v, want granted", r)
	}
	v := redistest.Do(t, c, "HGET", KeyWaiting("b"), "old")
	if s, _ := v.ToString(); !strings.HasPrefix(s, "1 ") {
		t.Fatalf("old's entry after its grant: %q, want 1 client left", s)
	}
	ReleaseSlot(ctx, c, "old", "b")
	// "new" has now waited longer than "old" since old's last grant.
	time.Sleep(20 * time.Millisecond)
	if r, _ := AcquireSlotFair(ctx, c, "old", "b", 1, 1, time.Second); r.Status != AcquireDeferred {
		t.Fatalf("old right after its grant: %+v, want deferred to new", r)
	}
	if r, _ := AcquireSlotFair(ctx, c, "new", "b", 1, 1, time.Second); r.Status != AcquireGranted {
		t.Fatalf("new's turn: %+v", r)
	}
	ReleaseSlot(ctx, c, "new", "b")
	// A stale entry (its instance stopped refreshing it) does not block.
	time.Sleep(60 * time.Millisecond)
	if r, _ := AcquireSlotFair(ctx, c, "new", "b", 1, 1, 50*time.Millisecond); r.Status != AcquireGranted {
		t.Fatalf("behind a stale entry: %+v, want granted", r)
	}
	if n := redistest.Int(t, c, "HLEN", KeyWaiting("b")); n != 0 {
		t.Fatalf("%d waiting entries left, want 0 (stale dropped, new's last client served)", n)
	}
	if err := SetWaiting(ctx, c, "new", "b", 3); err != nil {
		t.Fatal(err)
	}
	if s, _ := redistest.Do(t, c, "HGET", KeyWaiting("b"), "new").ToString(); !strings.HasPrefix(s, "3 ") {
		t.Fatalf("SetWaiting 3: %q", s)
	}
	SetWaiting(ctx, c, "new", "b", 0)
	if n := redistest.Int(t, c, "EXISTS", KeyWaiting("b")); n != 0 {
		t.Fatal("SetWaiting 0 left the entry")
	}
}

// Fairness never refuses a free slot: an instance defers only when the
// free slots would not cover the clients of the instances ahead of it
// (regression: 20 simultaneous logins on max 20 got 50005).
func TestScriptFairNeverRefusesSpareSlots(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	register(t, c, "a")
	register(t, c, "b")
	redistest.Do(t, c, "SET", KeyMax("bkt"), "20")
	// "b" has 2 clients that have waited a while.
	if err := SetWaiting(ctx, c, "b", "bkt", 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	// "a" just queued 1 client; 20 slots are free: granted, not deferred.
	if r, err := AcquireSlotFair(ctx, c, "a", "bkt", 20, 1, time.Second); err != nil || r.Status != AcquireGranted {
		t.Fatalf("with 20 free slots: %+v %v, want granted", r, err)
	}
	// Fill the bucket to 18 (2 free): b's 2 waiters are ahead and the 2
	// free slots only cover them, so "a" defers.
	for i := 0; i < 17; i++ {
		AcquireSlot(ctx, c, "a", "bkt", 20)
	}
	if r, _ := AcquireSlotFair(ctx, c, "a", "bkt", 20, 1, time.Second); r.Status != AcquireDeferred {
		t.Fatalf("2 free slots, 2 clients ahead: %+v, want deferred", r)
	}
}
