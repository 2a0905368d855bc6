package coord

import (
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// TestReserveAbsent: after Redis restarted empty, b registers again and
// records a (cut off, unknown to the new Redis) with what it was last
// seen holding: counted and fenced, never for an id Redis knows. The
// reaper does not park it before the lease it was given + reclaim_after;
// a's own register gives the record back and re-asserts what a holds.
func TestReserveAbsent(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	if _, err := RegisterInstance(ctx, c, "b", "inc-b", time.Minute, []Holding{{Bucket: "x", Held: 1, SeedMax: 4}}); err != nil {
		t.Fatal(err)
	}
	ids, err := ReserveAbsent(ctx, c, time.Second, []Absent{{ID: "a", Held: map[string]int64{"x": 3}}, {ID: "b", Held: map[string]int64{"x": 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("recorded %v, want [a] (b is registered)", ids)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("x")); n != 4 {
		t.Fatalf("count %d, want 4 (b's 1 + a's 3)", n)
	}
	if n := redistest.Int(t, c, "HGET", KeyConns("b"), "x"); n != 1 {
		t.Fatalf("b's hash %d, want 1 (untouched)", n)
	}
	if n := redistest.Int(t, c, "SISMEMBER", KeyFenced, "a"); n != 1 {
		t.Fatal("a not fenced")
	}
	// A second register of b (another Fresh one) does not record a twice.
	if ids, _ := ReserveAbsent(ctx, c, time.Second, []Absent{{ID: "a", Held: map[string]int64{"x": 3}}}); len(ids) != 0 {
		t.Fatalf("recorded %v again", ids)
	}
	rt := ReclaimTimes{ReclaimAfter: 500 * time.Millisecond, ForgetAfter: time.Minute}
	// Not parked before its lease (1 s) + reclaim_after (500 ms).
	time.Sleep(800 * time.Millisecond)
	if st, _, err := ReapInstance(ctx, c, "a", rt); err != nil || st != ReclaimNothing {
		t.Fatalf("reap at 800 ms: %v %v, want nothing", st, err)
	}
	time.Sleep(1 * time.Second)
	st, slots, err := ReapInstance(ctx, c, "a", rt)
	if err != nil || st != ReclaimParked {
		t.Fatalf("reap at 1.8 s: %v %v, want parked", st, err)
	}
	// Exact share of a among {a, b} with max 4: 2; 1 given back.
	if slots["x"] != 1 || redistest.Int(t, c, "GET", KeyCount("x")) != 3 {
		t.Fatalf("parked: gave back %v, count %d; want 1, 3", slots, redistest.Int(t, c, "GET", KeyCount("x")))
	}
	// a reaches Redis again holding 2: its record is replaced.
	r, err := RegisterInstance(ctx, c, "a", "inc-a", time.Minute, []Holding{{Bucket: "x", Held: 2, SeedMax: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if r[0].Granted != 2 || r[0].Count != 3 {
		t.Fatalf("a's register %+v, want granted 2, count 3", r[0])
	}
	if n := redistest.Int(t, c, "SISMEMBER", KeyFenced, "a"); n != 0 {
		t.Fatal("a still fenced after its register")
	}
}

// TestRegisterFitsBesideAbsentRecords: Redis restarted empty; c registers
// first and records a and b (absent) as holding all of max 4 each. b's
// register then re-asserts its 2 open sessions: its own record is given
// back and the 2 fit, although a's record puts the count at max — records
// are estimates that block new grants, not sessions known to be open
// (before, b's sessions did not fit and were closed: TestClusterRedisDeath).
// A new grant still does not.
func TestRegisterFitsBesideAbsentRecords(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := ctx5(t)
	if _, err := RegisterInstance(ctx, c, "c", "inc-c", time.Minute, []Holding{{Bucket: "x", Held: 1, SeedMax: 4}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReserveAbsent(ctx, c, time.Second, []Absent{{ID: "a", Held: map[string]int64{"x": 4}}, {ID: "b", Held: map[string]int64{"x": 4}}}); err != nil {
		t.Fatal(err)
	}
	r, err := RegisterInstance(ctx, c, "b", "inc-b", time.Minute, []Holding{{Bucket: "x", Held: 2, SeedMax: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if g := r[0].Granted; g != 2 {
		t.Fatalf("b granted %d of its 2 open sessions, want 2 (a's record is an estimate)", g)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("x")); n != 7 {
		t.Fatalf("count %d, want 7 (c 1 + b 2 + a's record 4)", n)
	}
	if got, err := AcquireSlots(ctx, c, "c", "x", 4, 0, 1, time.Second); err != nil || got.Granted != 0 {
		t.Fatalf("a new grant beside a's record: %+v %v, want none", got, err)
	}
}
