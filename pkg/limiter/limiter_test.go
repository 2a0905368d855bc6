package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func cfg(id string, maxConns, maxQueue int, timeout time.Duration) BucketConfig {
	return BucketConfig{ID: id, MaxConnections: maxConns, MaxQueueSize: maxQueue, QueueTimeout: timeout}
}

func stats(t *testing.T, l Limiter, bucket string) BucketStats {
	t.Helper()
	for _, s := range l.Snapshot() {
		if s.Bucket == bucket {
			return s
		}
	}
	t.Fatalf("bucket %q not in snapshot", bucket)
	return BucketStats{}
}

// eventually polls cond (for a waiter goroutine to reach the queue).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func waitQueued(t *testing.T, l Limiter, bucket string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d queued in %s", n, bucket), func() bool { return stats(t, l, bucket).Queued == n })
}

func mustAcquire(t *testing.T, l Limiter, bucket string) Ticket {
	t.Helper()
	tk, err := l.Acquire(context.Background(), bucket)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", bucket, err)
	}
	return tk
}

func asError(t *testing.T, err error, code Code) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *Error %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("code = %s (%v), want %s", e.Code, e, code)
	}
	return e
}

type result struct {
	tk  Ticket
	err error
}

// goAcquire starts an Acquire in a goroutine and returns its result channel.
func goAcquire(ctx context.Context, l Limiter, bucket string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		tk, err := l.Acquire(ctx, bucket)
		ch <- result{tk, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire did not return")
	}
	return result{}
}

func pending(t *testing.T, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Acquire returned early: %v %v", r.tk, r.err)
	case <-time.After(5 * time.Millisecond):
	}
}

func TestAcquireRelease(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 2, 0, 0)})
	a := mustAcquire(t, l, "b")
	b := mustAcquire(t, l, "b")
	if s := stats(t, l, "b"); s.InUse != 2 || s.Max != 2 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
	if a.Bucket() != "b" {
		t.Fatalf("Bucket() = %q", a.Bucket())
	}
	a.Release()
	b.Release()
	if s := stats(t, l, "b"); s.InUse != 0 {
		t.Fatalf("InUse %d after releases", s.InUse)
	}
}

func TestReleaseIsExactlyOnce(t *testing.T) {
	var released atomic.Int32
	l := NewLocal([]BucketConfig{cfg("b", 2, 0, 0)},
		WithObserver(ObserverFuncs{OnReleased: func(string) { released.Add(1) }}))
	a := mustAcquire(t, l, "b")
	b := mustAcquire(t, l, "b")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(a.Release)
	}
	wg.Wait()
	a.Release()
	if s := stats(t, l, "b"); s.InUse != 1 {
		t.Fatalf("InUse = %d after releasing one ticket many times, want 1", s.InUse)
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("Released observed %d times, want 1", n)
	}
	b.Release()
}

func TestUnknownBucket(t *testing.T) {
	var rejected []Code
	l := NewLocal([]BucketConfig{cfg("b", 1, 0, 0)},
		WithObserver(ObserverFuncs{OnRejected: func(_ string, c Code) { rejected = append(rejected, c) }}))
	_, err := l.Acquire(context.Background(), "nope")
	e := asError(t, err, CodeUnknownBucket)
	if e.Number() != 0 || e.Error() != "bucket nope: unknown bucket" || !errors.Is(err, ErrUnknownBucket) {
		t.Fatalf("%v / %d", e, e.Number())
	}
	if len(rejected) != 1 || rejected[0] != CodeUnknownBucket {
		t.Fatalf("observer saw %v", rejected)
	}
}

func TestQueueSizeZeroRejectsAtOnce(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("bucket-001", 3, 0, time.Minute)})
	for range 3 {
		mustAcquire(t, l, "bucket-001")
	}
	_, err := l.Acquire(context.Background(), "bucket-001")
	e := asError(t, err, CodeQueueFull)
	if e.Number() != NumQueueFull || e.Number() != 50005 {
		t.Fatalf("Number = %d", e.Number())
	}
	if want := "bucket bucket-001: all slots in use and queueing is off (max_queue_size 0, max_connections 3)"; e.Error() != want {
		t.Fatalf("message %q", e.Error())
	}
	if s := stats(t, l, "bucket-001"); s.Queued != 0 || s.InUse != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// A burst into a bucket with free slots and no queue must all succeed:
// waiters whose try is in flight are not counted as queued.
func TestQueueSizeZeroBurstWithFreeSlots(t *testing.T) {
	const n = 32
	for range 50 {
		l := NewLocal([]BucketConfig{cfg("b", n, 0, 0)})
		var wg sync.WaitGroup
		errs := make(chan error, n)
		tickets := make(chan Ticket, n)
		for range n {
			wg.Go(func() {
				tk, err := l.Acquire(context.Background(), "b")
				if err != nil {
					errs <- err
					return
				}
				tickets <- tk
			})
		}
		wg.Wait()
		close(errs)
		close(tickets)
		for err := range errs {
			t.Fatalf("burst of %d into %d free slots: %v", n, n, err)
		}
		for tk := range tickets {
			tk.Release()
		}
	}
}

func TestQueueFull(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("bucket-001", 3, 2, 0)})
	var held []Ticket
	for range 3 {
		held = append(held, mustAcquire(t, l, "bucket-001"))
	}
	ctx := t.Context()
	w1 := goAcquire(ctx, l, "bucket-001")
	waitQueued(t, l, "bucket-001", 1)
	w2 := goAcquire(ctx, l, "bucket-001")
	waitQueued(t, l, "bucket-001", 2)

	_, err := l.Acquire(ctx, "bucket-001")
	e := asError(t, err, CodeQueueFull)
	if want := "bucket bucket-001: queue full (2 waiting, max_queue_size 2, max_connections 3)"; e.Error() != want {
		t.Fatalf("message %q", e.Error())
	}
	if e.Queue != 2 || e.MaxQueue != 2 || e.Max != 3 || e.Number() != 50005 || !errors.Is(err, ErrQueueFull) {
		t.Fatalf("%+v", e)
	}
	if errors.Is(err, ErrQueueTimeout) || !errors.Is(err, &Error{Code: CodeQueueFull, Bucket: "bucket-001"}) ||
		errors.Is(err, &Error{Code: CodeQueueFull, Bucket: "other"}) {
		t.Fatal("errors.Is matches the wrong codes or buckets")
	}

	for _, tk := range held {
		tk.Release()
	}
	recv(t, w1).tk.Release()
	recv(t, w2).tk.Release()
	if s := stats(t, l, "bucket-001"); s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFIFOOrder(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 1, 100, 0)})
	holder := mustAcquire(t, l, "b")
	const n = 20
	var chans []<-chan result
	for i := range n {
		chans = append(chans, goAcquire(t.Context(), l, "b"))
		waitQueued(t, l, "b", i+1)
	}
	holder.Release()
	for i, ch := range chans {
		r := recv(t, ch)
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		for _, later := range chans[i+1:] {
			pending(t, later)
			break
		}
		r.tk.Release()
	}
	if s := stats(t, l, "b"); s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A freed slot goes straight to the head waiter, so a newcomer arriving
// right after the release finds the bucket full and queues behind.
func TestNewcomerDoesNotOvertakeAfterRelease(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 1, 10, 0)})
	holder := mustAcquire(t, l, "b")
	w1 := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 1)
	holder.Release()
	newcomer := goAcquire(t.Context(), l, "b")
	r1 := recv(t, w1)
	if r1.err != nil {
		t.Fatal(r1.err)
	}
	waitQueued(t, l, "b", 1)
	pending(t, newcomer)
	r1.tk.Release()
	recv(t, newcomer).tk.Release()
}

// fakeSource is a SlotSource whose fullness the test controls.
type fakeSource struct {
	mu    sync.Mutex
	free  int
	tries int
}

func (f *fakeSource) TryTake() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.free > 0 {
		f.free--
		return true
	}
	return false
}
func (f *fakeSource) Give()            { f.mu.Lock(); f.free++; f.mu.Unlock() }
func (f *fakeSource) CanHandOff() bool { return true }
func (f *fakeSource) Max() int         { return 1 }
func (f *fakeSource) setFree(n int)    { f.mu.Lock(); f.free = n; f.mu.Unlock() }

// Even if a slot frees up outside the queue's view while someone waits, a
// newcomer does not take it: it queues without trying, and Wake grants the
// head first.
func TestNewcomerDoesNotOvertakeQueuedWaiter(t *testing.T) {
	src := &fakeSource{}
	q := NewQueue("b", src, 10, 0)
	w1 := make(chan result, 1)
	go func() { tk, err := q.Acquire(t.Context()); w1 <- result{tk, err} }()
	eventually(t, "w1 queued", func() bool { return q.Stats().Queued == 1 })
	src.setFree(1)
	w2 := make(chan result, 1)
	go func() { tk, err := q.Acquire(t.Context()); w2 <- result{tk, err} }()
	eventually(t, "w2 queued", func() bool { return q.Stats().Queued == 2 })
	pending(t, w1)
	pending(t, w2)
	q.Wake()
	r := recv(t, w1)
	if r.err != nil {
		t.Fatal(r.err)
	}
	pending(t, w2)
	r.tk.Release() // hands off to w2
	recv(t, w2).tk.Release()
	if src.free != 1 || q.Stats().Queued != 0 {
		t.Fatalf("free %d, queued %d", src.free, q.Stats().Queued)
	}
}

func TestCancelLeavesQueue(t *testing.T) {
	var canceled atomic.Int32
	l := NewLocal([]BucketConfig{cfg("b", 1, 3, 0)},
		WithObserver(ObserverFuncs{OnCanceled: func(string, time.Duration) { canceled.Add(1) }}))
	holder := mustAcquire(t, l, "b")
	w1 := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 1)
	ctx2, cancel2 := context.WithCancel(t.Context())
	w2 := goAcquire(ctx2, l, "b")
	waitQueued(t, l, "b", 2)
	w3 := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 3)

	cancel2()
	if r := recv(t, w2); !errors.Is(r.err, context.Canceled) || r.tk != nil {
		t.Fatalf("canceled waiter got %v, %v", r.tk, r.err)
	}
	waitQueued(t, l, "b", 2)
	// Its place is not leaked: the queue has room for one more again.
	w4 := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 3)

	holder.Release()
	r1 := recv(t, w1)
	pending(t, w3)
	r1.tk.Release()
	r3 := recv(t, w3)
	pending(t, w4)
	r3.tk.Release()
	recv(t, w4).tk.Release()
	if s := stats(t, l, "b"); s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
	if canceled.Load() != 1 {
		t.Fatalf("Canceled observed %d times", canceled.Load())
	}
}

func TestAcquireWithDoneContext(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 1, 1, 0)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx, "b"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if s := stats(t, l, "b"); s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestQueueTimeoutFakeClock(t *testing.T) {
	clk := NewFakeClock(t0)
	var rejected atomic.Int32
	l := NewLocal([]BucketConfig{cfg("bucket-001", 3, 5, 30*time.Second)}, WithClock(clk),
		WithObserver(ObserverFuncs{OnRejected: func(_ string, c Code) {
			if c == CodeQueueTimeout {
				rejected.Add(1)
			}
		}}))
	var held []Ticket
	for range 3 {
		held = append(held, mustAcquire(t, l, "bucket-001"))
	}
	w1 := goAcquire(t.Context(), l, "bucket-001")
	waitQueued(t, l, "bucket-001", 1)
	eventually(t, "w1's timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(10 * time.Second)
	w2 := goAcquire(t.Context(), l, "bucket-001") // enqueued 10 s after w1
	waitQueued(t, l, "bucket-001", 2)
	eventually(t, "w2's timer", func() bool { return clk.Timers() == 2 })

	clk.Advance(19 * time.Second) // w1 at 29 s
	pending(t, w1)
	clk.Advance(time.Second) // w1 at 30 s, w2 at 20 s
	r := recv(t, w1)
	e := asError(t, r.err, CodeQueueTimeout)
	if e.Waited != 30*time.Second || e.Number() != NumQueueTimeout || e.Number() != 50004 || !errors.Is(r.err, ErrQueueTimeout) {
		t.Fatalf("%+v", e)
	}
	if want := "bucket bucket-001: waited 30s in queue for a slot (max_connections 3)"; e.Error() != want {
		t.Fatalf("message %q", e.Error())
	}
	waitQueued(t, l, "bucket-001", 1)
	pending(t, w2)
	clk.Advance(10 * time.Second)
	asError(t, recv(t, w2).err, CodeQueueTimeout)
	if s := stats(t, l, "bucket-001"); s.Queued != 0 || s.InUse != 3 {
		t.Fatalf("stats %+v", s)
	}
	if rejected.Load() != 2 {
		t.Fatalf("Rejected(QueueTimeout) observed %d times", rejected.Load())
	}
	if clk.Timers() != 0 {
		t.Fatalf("%d timers left armed", clk.Timers())
	}
	for _, tk := range held {
		tk.Release()
	}
}

// A waiter granted before its timeout reports how long it waited, and its
// timer is stopped.
func TestGrantBeforeTimeoutFakeClock(t *testing.T) {
	clk := NewFakeClock(t0)
	var got struct {
		sync.Mutex
		waited time.Duration
		queued bool
	}
	l := NewLocal([]BucketConfig{cfg("b", 1, 5, 30*time.Second)}, WithClock(clk),
		WithObserver(ObserverFuncs{OnAcquired: func(_ string, w time.Duration, q bool) {
			got.Lock()
			got.waited, got.queued = w, q
			got.Unlock()
		}}))
	holder := mustAcquire(t, l, "b")
	if holder.Waited() != 0 {
		t.Fatalf("free slot waited %v", holder.Waited())
	}
	w := goAcquire(t.Context(), l, "b")
	eventually(t, "timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(12 * time.Second)
	holder.Release()
	r := recv(t, w)
	if r.err != nil || r.tk.Waited() != 12*time.Second {
		t.Fatalf("%v, waited %v", r.err, r.tk.Waited())
	}
	got.Lock()
	if got.waited != 12*time.Second || !got.queued {
		t.Fatalf("observer saw waited %v queued %v", got.waited, got.queued)
	}
	got.Unlock()
	if clk.Timers() != 0 {
		t.Fatal("timer not stopped")
	}
	r.tk.Release()
}

func TestCloseWakesWaiters(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 1, 10, 0), cfg("c", 1, 10, time.Hour)})
	hb := mustAcquire(t, l, "b")
	hc := mustAcquire(t, l, "c")
	var chans []<-chan result
	for i := range 3 {
		chans = append(chans, goAcquire(t.Context(), l, "b"), goAcquire(t.Context(), l, "c"))
		waitQueued(t, l, "b", i+1)
		waitQueued(t, l, "c", i+1)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		e := asError(t, recv(t, ch).err, CodeClosed)
		if !errors.Is(e, ErrClosed) || e.Number() != 0 {
			t.Fatalf("%v", e)
		}
	}
	asError(t, func() error { _, err := l.Acquire(t.Context(), "b"); return err }(), CodeClosed)
	asError(t, func() error { _, err := l.Acquire(t.Context(), "zzz"); return err }(), CodeClosed)
	hb.Release()
	hc.Release()
	for _, s := range l.Snapshot() {
		if s.InUse != 0 || s.Queued != 0 {
			t.Fatalf("stats %+v", s)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestObserverEvents(t *testing.T) {
	type ev struct {
		kind   string
		n      int
		queued bool
	}
	var mu sync.Mutex
	var evs []ev
	add := func(e ev) { mu.Lock(); evs = append(evs, e); mu.Unlock() }
	obs := ObserverFuncs{
		OnAcquired: func(_ string, _ time.Duration, q bool) { add(ev{"acquired", 0, q}) },
		OnReleased: func(string) { add(ev{"released", 0, false}) },
		OnEnqueued: func(_ string, n int) { add(ev{"enqueued", n, false}) },
		OnRejected: func(_ string, c Code) { add(ev{"rejected", int(c), false}) },
	}
	l := NewLocal([]BucketConfig{cfg("b", 1, 1, 0)}, WithObserver(obs))
	h := mustAcquire(t, l, "b")
	w := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 1)
	if _, err := l.Acquire(t.Context(), "b"); err == nil {
		t.Fatal("queue of 1 accepted a second waiter")
	}
	h.Release()
	recv(t, w).tk.Release()
	want := []ev{
		{"acquired", 0, false},
		{"enqueued", 1, false},
		{"rejected", int(CodeQueueFull), false},
		{"released", 0, false},
		{"acquired", 0, true},
		{"released", 0, false},
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(evs) != fmt.Sprint(want) {
		t.Fatalf("events\n got %v\nwant %v", evs, want)
	}
}

func TestUpdateRaiseWakesInOrder(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 1, 10, 0)})
	h := mustAcquire(t, l, "b")
	var chans []<-chan result
	for i := range 4 {
		chans = append(chans, goAcquire(t.Context(), l, "b"))
		waitQueued(t, l, "b", i+1)
	}
	l.Update([]BucketConfig{cfg("b", 3, 10, 0)})
	r1, r2 := recv(t, chans[0]), recv(t, chans[1])
	if r1.err != nil || r2.err != nil {
		t.Fatal(r1.err, r2.err)
	}
	pending(t, chans[2])
	pending(t, chans[3])
	if s := stats(t, l, "b"); s.InUse != 3 || s.Max != 3 || s.Queued != 2 {
		t.Fatalf("stats %+v", s)
	}
	h.Release()
	recv(t, chans[2]).tk.Release()
	recv(t, chans[3]).tk.Release()
	r1.tk.Release()
	r2.tk.Release()
	if s := stats(t, l, "b"); s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestUpdateLowerBelowInUse(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 3, 10, 0)})
	held := []Ticket{mustAcquire(t, l, "b"), mustAcquire(t, l, "b"), mustAcquire(t, l, "b")}
	l.Update([]BucketConfig{cfg("b", 1, 10, time.Hour)})
	if s := stats(t, l, "b"); s.InUse != 3 || s.Max != 1 || s.QueueTimeout != time.Hour {
		t.Fatalf("held slots dropped or limits not applied: %+v", s)
	}
	w := goAcquire(t.Context(), l, "b")
	waitQueued(t, l, "b", 1)
	held[0].Release() // 2 in use, max 1: no hand-off
	pending(t, w)
	held[1].Release() // 1 in use, max 1: still full
	pending(t, w)
	if s := stats(t, l, "b"); s.InUse != 1 || s.Queued != 1 {
		t.Fatalf("stats %+v", s)
	}
	held[2].Release() // now under the cap: the waiter gets it
	r := recv(t, w)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if s := stats(t, l, "b"); s.InUse != 1 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}
	r.tk.Release()
}

func TestUpdateAddRemoveBuckets(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("a", 1, 5, 0), cfg("b", 1, 5, 0)})
	ha := mustAcquire(t, l, "a")
	wa := goAcquire(t.Context(), l, "a")
	waitQueued(t, l, "a", 1)

	l.Update([]BucketConfig{cfg("b", 1, 5, 0), cfg("c", 2, 0, 0)})
	asError(t, recv(t, wa).err, CodeUnknownBucket)
	asError(t, func() error { _, err := l.Acquire(t.Context(), "a"); return err }(), CodeUnknownBucket)
	if got := len(l.Snapshot()); got != 2 {
		t.Fatalf("%d buckets in snapshot, want 2", got)
	}
	mustAcquire(t, l, "c").Release()

	// Added back while its slot is still held: the held slot still counts.
	l.Update([]BucketConfig{cfg("a", 1, 0, 0), cfg("b", 1, 5, 0), cfg("c", 2, 0, 0)})
	if s := stats(t, l, "a"); s.InUse != 1 {
		t.Fatalf("re-added bucket forgot its held slot: %+v", s)
	}
	asError(t, func() error { _, err := l.Acquire(t.Context(), "a"); return err }(), CodeQueueFull)
	ha.Release()
	mustAcquire(t, l, "a").Release()
	if s := stats(t, l, "a"); s.InUse != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// The grant-versus-give-up race, hammered: tiny timeouts and cancels while
// other goroutines release. No slot or queue place may leak, and InUse may
// never exceed Max.
func TestStressGrantRacesTimeoutAndCancel(t *testing.T) {
	const (
		maxConns = 3
		workers  = 24
		iters    = 400
	)
	var holding, peak, acquired, released atomic.Int64
	obs := ObserverFuncs{
		OnAcquired: func(string, time.Duration, bool) { acquired.Add(1) },
		OnReleased: func(string) { released.Add(1) },
	}
	l := NewLocal([]BucketConfig{cfg("b", maxConns, 8, 40*time.Microsecond)}, WithObserver(obs))
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var sampleErr atomic.Value
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := l.Snapshot()[0]
			if s.InUse > s.Max || s.InUse < 0 || s.Queued > s.MaxQueue {
				sampleErr.Store(fmt.Sprintf("%+v", s))
			}
			runtime.Gosched()
		}
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range iters {
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(3) == 0 {
					ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.IntN(30))*time.Microsecond)
				}
				if rng.IntN(4) == 0 {
					go cancel() // cancel concurrently with the wait
				}
				tk, err := l.Acquire(ctx, "b")
				cancel()
				if err != nil {
					continue
				}
				if h := holding.Add(1); h > maxConns {
					t.Errorf("%d holders, max %d", h, maxConns)
				} else {
					for p := peak.Load(); h > p && !peak.CompareAndSwap(p, h); p = peak.Load() {
					}
				}
				if rng.IntN(2) == 0 {
					runtime.Gosched()
				}
				holding.Add(-1)
				if rng.IntN(5) == 0 {
					go tk.Release() // release from another goroutine, twice
					tk.Release()
				} else {
					tk.Release()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	if v := sampleErr.Load(); v != nil {
		t.Fatalf("sampled invalid state: %v", v)
	}
	eventually(t, "stray releases", func() bool { return released.Load() == acquired.Load() })
	if s := l.Snapshot()[0]; s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("leaked: %+v", s)
	}
	if peak.Load() != maxConns {
		t.Logf("peak holders %d (max %d)", peak.Load(), maxConns)
	}
	t.Logf("acquired %d of %d attempts", acquired.Load(), workers*iters)
}

// slowSource makes TryTake yield, so arrivals pile up as wPending behind an
// in-flight try and releases race the dispatcher (the Redis limiter's case).
type slowSource struct {
	localBucket
}

func (s *slowSource) TryTake() bool {
	runtime.Gosched()
	ok := s.localBucket.TryTake()
	runtime.Gosched()
	return ok
}

func TestStressQueueOverSlowSource(t *testing.T) {
	const maxConns, maxQueue = 4, 6
	src := &slowSource{}
	src.max.Store(maxConns)
	var holding atomic.Int64
	q := NewQueue("b", src, maxQueue, 200*time.Microsecond)
	var wg sync.WaitGroup
	var full, timeouts, ok atomic.Int64
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 300 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Microsecond)
				tk, err := q.Acquire(ctx)
				cancel()
				var e *Error
				switch {
				case err == nil:
					ok.Add(1)
					if h := holding.Add(1); h > maxConns {
						t.Errorf("%d holders, max %d", h, maxConns)
					}
					if s := q.Stats(); s.Queued > maxQueue {
						t.Errorf("queue %d", s.Queued)
					}
					runtime.Gosched()
					holding.Add(-1)
					tk.Release()
				case errors.As(err, &e) && e.Code == CodeQueueFull:
					full.Add(1)
				case errors.As(err, &e) && e.Code == CodeQueueTimeout:
					timeouts.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
				default:
					t.Errorf("unexpected %v", err)
				}
			}
		})
	}
	wg.Wait()
	if n, s := src.inUse.Load(), q.Stats(); n != 0 || s.Queued != 0 || s.Trying != 0 {
		t.Fatalf("leaked: inUse %d, %+v", n, s)
	}
	t.Logf("ok %d, full %d, timeouts %d", ok.Load(), full.Load(), timeouts.Load())
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	l := NewLocal([]BucketConfig{cfg("b", 2, 50, 2*time.Millisecond)})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4)*time.Millisecond)
			defer cancel()
			if tk, err := l.Acquire(ctx, "b"); err == nil {
				time.Sleep(100 * time.Microsecond)
				tk.Release()
			}
		})
	}
	wg.Wait()
	l.Close()
	eventually(t, "goroutines back to the start", func() bool { return runtime.NumGoroutine() <= before })
	if s := l.Snapshot()[0]; s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("leaked: %+v", s)
	}
}

func TestCodeString(t *testing.T) {
	for c, want := range map[Code]string{
		CodeQueueTimeout: "QueueTimeout", CodeQueueFull: "QueueFull",
		CodeClosed: "Closed", CodeUnknownBucket: "UnknownBucket", Code(99): "Code(99)",
	} {
		if c.String() != want {
			t.Errorf("%d: %q, want %q", c, c.String(), want)
		}
	}
}

func TestFakeClock(t *testing.T) {
	c := NewFakeClock(t0)
	a, b := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	now := c.NewTimer(0)
	select {
	case <-now.C():
	default:
		t.Fatal("zero timer did not fire at once")
	}
	c.Advance(time.Second)
	select {
	case <-b.C():
	default:
		t.Fatal("1 s timer did not fire")
	}
	if !a.Stop() || a.Stop() || c.Timers() != 0 {
		t.Fatal("Stop")
	}
	c.Advance(time.Hour)
	select {
	case <-a.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if !c.Now().Equal(t0.Add(time.Hour + time.Second)) {
		t.Fatal("Now")
	}
}
