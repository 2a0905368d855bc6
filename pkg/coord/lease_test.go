package coord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// TestRegisterScriptReacquiresNeverReadds: the register script lowers
// what Redis over-records, re-acquires what it under-records only up to
// max, refuses another live incarnation's id, and gives back the records
// of an older (dead) incarnation of the same id.
func TestRegisterScriptReacquiresNeverReadds(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	reg := func(id, inc string, held int64) []Reconciled {
		t.Helper()
		r, err := RegisterInstance(ctx, c, id, inc, time.Minute, []Holding{{Bucket: "b", Held: held, SeedMax: 4}})
		if err != nil {
			t.Fatalf("register %s/%s: %v", id, inc, err)
		}
		return r
	}
	reg("a", "inc-a", 3)
	reg("b", "inc-b", 0)
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	// B claims to hold 4 (granted in fallback): only 1 fits.
	r := reg("b", "inc-b", 4)
	if r[0].Granted != 1 || r[0].Count != 4 {
		t.Fatalf("b re-acquired %+v, want granted 1 count 4", r[0])
	}
	// A now holds 1: lowered.
	r = reg("a", "inc-a", 1)
	if r[0].Granted != 1 || r[0].Count != 2 || r[0].Delta != -2 {
		t.Fatalf("a lowered %+v", r[0])
	}
	// Another incarnation may not take a's live id...
	if _, err := RegisterInstance(ctx, c, "a", "intruder", time.Minute, nil); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("duplicate incarnation: %v, want ErrIDTaken", err)
	}
	if n := redistest.Int(t, c, "HGET", KeyConns("a"), "b"); n != 1 {
		t.Fatalf("the refused duplicate changed a's hash: %d", n)
	}
	// ...but once a's lease is gone, a new incarnation (a restart) gives
	// the old records back first.
	redistest.Do(t, c, "DEL", KeyHeartbeat("a"))
	r = reg("a", "restarted", 0)
	if r[0].Count != 1 {
		t.Fatalf("after the restart count %d, want 1 (b's)", r[0].Count)
	}
	if got, _ := redistest.Do(t, c, "GET", KeyIncarnation("a")).ToString(); got != "restarted" {
		t.Fatalf("incarnation %q", got)
	}
	if hb, _ := redistest.Do(t, c, "GET", KeyHeartbeat("a")).ToString(); IncarnationOf(hb) != "restarted" {
		t.Fatalf("heartbeat %q", hb)
	}
	// Renewal is refused to anyone but the owner, and never re-creates a lapsed lease.
	if ok, err := RenewLease(ctx, c, "a", "inc-a", time.Minute); ok || err != nil {
		t.Fatalf("old incarnation renewed: %v %v", ok, err)
	}
	redistest.Do(t, c, "DEL", KeyHeartbeat("b"))
	if ok, _ := RenewLease(ctx, c, "b", "inc-b", time.Minute); ok {
		t.Fatal("a lapsed lease was re-created by a renewal")
	}
}

// TestReapStepsAndSibling: fence (nothing back), park (above the share
// back), forget; and a live sibling (same base id, other incarnation)
// makes an expired id forgotten at once.
func TestReapStepsAndSibling(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	for _, id := range []string{"p1", "p2", "p3"} {
		if _, err := RegisterInstance(ctx, c, id, "i-"+id, time.Minute, []Holding{{Bucket: "b", Held: 0, SeedMax: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	RegisterInstance(ctx, c, "p1", "i-p1", time.Minute, []Holding{{Bucket: "b", Held: 6, SeedMax: 10}})
	redistest.Do(t, c, "DEL", KeyHeartbeat("p1"))
	rt := ReclaimTimes{ReclaimAfter: 200 * time.Millisecond, ForgetAfter: 200 * time.Millisecond}
	st, _, err := ReapInstance(ctx, c, "p1", rt)
	if err != nil || st != ReclaimFenced {
		t.Fatalf("first step %v %v, want fenced", st, err)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 6 {
		t.Fatalf("fencing gave slots back: count %d", n)
	}
	if st, _, _ := ReapInstance(ctx, c, "p1", rt); st != ReclaimNothing {
		t.Fatalf("second step right away: %v", st)
	}
	time.Sleep(250 * time.Millisecond)
	// p1 is rank 0 of 3 with max 10: share 4.
	st, slots, _ := ReapInstance(ctx, c, "p1", rt)
	if st != ReclaimParked || slots["b"] != 2 {
		t.Fatalf("park: %v %v, want parked b:2", st, slots)
	}
	time.Sleep(250 * time.Millisecond)
	st, slots, _ = ReapInstance(ctx, c, "p1", rt)
	if st != ReclaimForgotten || slots["b"] != 4 || redistest.Int(t, c, "GET", KeyCount("b")) != 0 {
		t.Fatalf("forget: %v %v", st, slots)
	}
	// Sibling: p2 dies holding 3 and restarts as p2~abc (its id was still
	// held when it started): p2 is forgotten at its first reaper step.
	RegisterInstance(ctx, c, "p2", "i-p2", time.Minute, []Holding{{Bucket: "b", Held: 3, SeedMax: 10}})
	RegisterInstance(ctx, c, SiblingID("p2", "abcdef99"), "abcdef99", time.Minute, nil)
	redistest.Do(t, c, "DEL", KeyHeartbeat("p2"))
	st, slots, _ = ReapInstance(ctx, c, "p2", ReclaimTimes{ReclaimAfter: time.Hour, ForgetAfter: time.Hour})
	if st != ReclaimForgotten || slots["b"] != 3 {
		t.Fatalf("expired id with a live sibling: %v %v, want forgotten b:3", st, slots)
	}
	if BaseID("p2~abcdef") != "p2" || SiblingID("p2", "abcdef99") != "p2~abcdef" {
		t.Fatal("BaseID/SiblingID")
	}
}

// registerA registers instance "a" (incarnation inc-a) holding held
// slots of bucket "b".
func registerA(t *testing.T, c rueidis.Client, ctx context.Context) func(held int64) Registration {
	return func(held int64) Registration {
		t.Helper()
		r, err := Register(ctx, c, "a", "inc-a", time.Minute, []Holding{{Bucket: "b", Held: held, SeedMax: 10}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
}

// TestStaleReleaseAfterRegisterIgnored: a release sent before a register
// (into a stalled link) and delivered after it must not lower the count
// that register wrote: the register epoch fences it. The epoch grows with
// every register, also after Redis lost the key (an empty restart), and
// releases that carry the current epoch (or none) work as before.
func TestStaleReleaseAfterRegisterIgnored(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	reg := registerA(t, c, ctx)
	r1 := reg(3)
	// The instance releases one slot; the command stalls in the link. It
	// falls back, its session count drops to 2 locally, and it registers
	// again with 2 held.
	r2 := reg(2)
	if r2.Epoch <= r1.Epoch {
		t.Fatalf("epoch %d after %d: not raised", r2.Epoch, r1.Epoch)
	}
	// The stale release arrives now.
	released, count, err := ReleaseSlotAt(ctx, c, "a", "b", r1.Epoch)
	if err != nil || released || count != 2 {
		t.Fatalf("stale release: released %v count %d err %v; want ignored, count 2", released, count, err)
	}
	if h := redistest.Int(t, c, "HGET", KeyConns("a"), "b"); h != 2 {
		t.Fatalf("hash %d after a stale release, want 2", h)
	}
	// A current release works.
	if released, count, err := ReleaseSlotAt(ctx, c, "a", "b", r2.Epoch); err != nil || !released || count != 1 {
		t.Fatalf("current release: released %v count %d err %v; want released, count 1", released, count, err)
	}
	// An empty restart loses the epoch key: the next register's epoch is
	// still above every earlier one (Redis time in ms).
	redistest.Do(t, c, "DEL", KeyEpoch("a"))
	r3 := reg(1)
	if r3.Epoch <= r2.Epoch {
		t.Fatalf("epoch %d after the key was lost, previous %d", r3.Epoch, r2.Epoch)
	}
	if released, _, _ := ReleaseSlotAt(ctx, c, "a", "b", r2.Epoch); released {
		t.Fatal("a release of the epoch before the restart was applied")
	}
	// Unfenced (epoch 0): as before.
	if released, count, err := ReleaseSlot(ctx, c, "a", "b"); err != nil || !released || count != 0 {
		t.Fatalf("unfenced release: %v %d %v", released, count, err)
	}
	// The reaper's forget drops the epoch and the peer address.
	redistest.Do(t, c, "HSET", KeyPeers, "a", "127.0.0.1:1")
	redistest.Do(t, c, "DEL", KeyHeartbeat("a"))
	if _, _, err := ReclaimInstance(ctx, c, "a", false); err != nil {
		t.Fatal(err)
	}
	if n := redistest.Int(t, c, "EXISTS", KeyEpoch("a")); n != 0 {
		t.Fatal("epoch key left after forget")
	}
	if n := redistest.Int(t, c, "HEXISTS", KeyPeers, "a"); n != 0 {
		t.Fatal("peer address left after forget")
	}
}

// TestStaleAcquireAfterRegisterIgnored: an acquire sent before a register
// and delivered after it (its caller timed out and fell back: in doubt;
// the register then wrote what the instance holds) must not count a slot
// nobody holds: the register epoch fences it, plain and confirmed. Before,
// it ran and Redis counted the slot until the instance's next register
// (the nemesis's "lost slots" after an acquire timed out on a loaded
// host). Acquires with the current epoch (or none) work as before.
func TestStaleAcquireAfterRegisterIgnored(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	reg := registerA(t, c, ctx)
	r1 := reg(2)
	r2 := reg(2) // the register after the fallback
	for _, confirmed := range []bool{false, true} {
		var r AcquireResult
		var err error
		if confirmed {
			r, err = AcquireSlotsConfirmed(ctx, c, "a", "b", 10, 0, 3, time.Second, r1.Epoch, 0, time.Second)
		} else {
			r, err = AcquireSlotsAt(ctx, c, "a", "b", 10, 0, 3, time.Second, r1.Epoch)
		}
		if err != nil || r.Status != AcquireUnregistered || r.Count != 2 {
			t.Fatalf("stale acquire (confirmed %v): %+v %v; want refused (unregistered), count 2", confirmed, r, err)
		}
	}
	if h := redistest.Int(t, c, "HGET", KeyConns("a"), "b"); h != 2 {
		t.Fatalf("hash %d after a stale acquire, want 2", h)
	}
	if r, err := AcquireSlotsAt(ctx, c, "a", "b", 10, 0, 1, time.Second, r2.Epoch); err != nil || r.Status != AcquireGranted || r.Count != 3 {
		t.Fatalf("current acquire: %+v %v; want granted, count 3", r, err)
	}
	if r, err := AcquireSlot(ctx, c, "a", "b", 10); err != nil || r.Status != AcquireGranted || r.Count != 4 {
		t.Fatalf("unfenced acquire: %+v %v; want granted, count 4", r, err)
	}
}
