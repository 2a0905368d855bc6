package limiter

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedSource is a SlotSource whose TryTake the test answers one call at a
// time, standing in for a remote source with a round trip in flight.
type gatedSource struct {
	entered chan struct{}
	verdict chan bool
	gives   atomic.Int32
}

func newGated() *gatedSource {
	return &gatedSource{entered: make(chan struct{}), verdict: make(chan bool)}
}

func (g *gatedSource) TryTake() bool    { g.entered <- struct{}{}; return <-g.verdict }
func (g *gatedSource) Give()            { g.gives.Add(1) }
func (g *gatedSource) CanHandOff() bool { return true }
func (g *gatedSource) Max() int         { return 1 }

func (g *gatedSource) answer(t *testing.T, ok bool) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no TryTake")
	}
	g.verdict <- ok
}

func qAcquire(ctx context.Context, q *Queue) <-chan result {
	ch := make(chan result, 1)
	go func() { tk, err := q.Acquire(ctx); ch <- result{tk, err} }()
	return ch
}

// A Wake while a try is in flight makes the dispatcher try again.
func TestQueueWakeDuringTryRetries(t *testing.T) {
	g := newGated()
	q := NewQueue("b", g, 5, 0)
	a := qAcquire(t.Context(), q)
	<-g.entered
	q.Wake() // a try is in flight: only marks redo
	g.verdict <- false
	g.answer(t, true) // the retry
	r := recv(t, a)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if s := q.Stats(); s.Queued != 0 || s.Trying != 0 {
		t.Fatalf("%+v", s)
	}
}

// Arrivals while the first try is in flight wait on its outcome; when it
// fails they queue in arrival order, and those past max_queue_size are
// refused.
func TestQueuePendingSettleInOrder(t *testing.T) {
	g := newGated()
	q := NewQueue("b", g, 2, 0)
	a := qAcquire(t.Context(), q)
	<-g.entered
	b := qAcquire(t.Context(), q)
	eventually(t, "b trying", func() bool { return q.Stats().Trying == 2 })
	c := qAcquire(t.Context(), q)
	eventually(t, "c trying", func() bool { return q.Stats().Trying == 3 })
	g.verdict <- false
	asError(t, recv(t, c).err, CodeQueueFull)
	if s := q.Stats(); s.Queued != 2 || s.Trying != 0 {
		t.Fatalf("%+v", s)
	}
	go q.Wake()       // the Wake's goroutine becomes the dispatcher
	g.answer(t, true) // to a
	g.answer(t, true) // to b
	ra, rb := recv(t, a), recv(t, b)
	if ra.err != nil || rb.err != nil {
		t.Fatal(ra.err, rb.err)
	}
	ra.tk.Release() // nobody waits: back to the source
	rb.tk.Release()
	if g.gives.Load() != 2 {
		t.Fatalf("gives %d", g.gives.Load())
	}
}

// A release hands its slot to a waiter while a try on its behalf is still
// in flight; the slot that try then takes goes to the next arrival, or back
// to the source.
func TestQueueHandOffDuringTry(t *testing.T) {
	g := newGated()
	q := NewQueue("b", g, 5, 0)
	h := qAcquire(t.Context(), q)
	g.answer(t, true)
	holder := recv(t, h).tk

	a := qAcquire(t.Context(), q)
	g.answer(t, false) // a queues
	eventually(t, "a queued", func() bool { return q.Stats().Queued == 1 })
	go q.Wake() // a try for a, in flight
	<-g.entered
	holder.Release() // a is the head: handed over directly
	ra := recv(t, a)
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	c := qAcquire(t.Context(), q) // list empty, dispatcher busy: c waits for its try
	eventually(t, "c trying", func() bool { return q.Stats().Trying == 1 })
	g.verdict <- true // the slot the Wake's try took goes to c
	rc := recv(t, c)
	if rc.err != nil {
		t.Fatal(rc.err)
	}
	if g.gives.Load() != 0 {
		t.Fatalf("gives %d", g.gives.Load())
	}

	// Again, with nobody left to take the extra slot: it goes back.
	d := qAcquire(t.Context(), q)
	g.answer(t, false)
	eventually(t, "d queued", func() bool { return q.Stats().Queued == 1 })
	go q.Wake()
	<-g.entered
	ra.tk.Release()
	rd := recv(t, d)
	g.verdict <- true
	eventually(t, "give back", func() bool { return g.gives.Load() == 1 })
	rc.tk.Release()
	rd.tk.Release()
	if g.gives.Load() != 3 || q.Stats().Queued != 0 {
		t.Fatalf("gives %d, %+v", g.gives.Load(), q.Stats())
	}
}

// Close during a try: the waiter is refused and the slot goes back.
func TestQueueCloseDuringTry(t *testing.T) {
	g := newGated()
	q := NewQueue("b", g, 5, 0)
	a := qAcquire(t.Context(), q)
	<-g.entered
	b := qAcquire(t.Context(), q)
	eventually(t, "b trying", func() bool { return q.Stats().Trying == 2 })
	q.Close()
	asError(t, recv(t, b).err, CodeClosed)
	g.verdict <- true
	asError(t, recv(t, a).err, CodeClosed)
	if g.gives.Load() != 1 {
		t.Fatalf("gives %d", g.gives.Load())
	}
}

// Reloads raising and lowering max while clients come and go: no slot
// leaks, and holders never exceed the highest max in force.
func TestStressUpdateWhileBusy(t *testing.T) {
	l := NewLocal([]BucketConfig{cfg("b", 3, 6, time.Millisecond)})
	var holding atomic.Int64
	stop := make(chan struct{})
	var updater sync.WaitGroup
	updater.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l.Update([]BucketConfig{cfg("b", 1+i%5, 2+i%6, time.Duration(1+i%3)*100*time.Microsecond)})
			time.Sleep(20 * time.Microsecond)
		}
	})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for range 300 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(500))*time.Microsecond)
				tk, err := l.Acquire(ctx, "b")
				cancel()
				if err != nil {
					var e *Error
					if !errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &e) {
						t.Errorf("unexpected %v", err)
					}
					continue
				}
				if h := holding.Add(1); h > 5 {
					t.Errorf("%d holders, highest max 5", h)
				}
				holding.Add(-1)
				tk.Release()
			}
		})
	}
	wg.Wait()
	close(stop)
	updater.Wait()
	if s := l.Snapshot()[0]; s.InUse != 0 || s.Queued != 0 {
		t.Fatalf("leaked: %+v", s)
	}
}
