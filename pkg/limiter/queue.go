package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// SlotSource is the counter of slots a Queue draws from: an in-memory
// counter for Local, Redis scripts for the shared limiter. The Queue owns
// waiting, ordering, timeouts and cancellation; the source only answers
// "may one more slot be taken?" and takes slots back.
type SlotSource interface {
	// TryTake takes one slot if the cap allows and reports whether it did.
	// The Queue never calls it with its lock held and never runs two calls at
	// once, so it may make a remote call (the Redis limiter runs its acquire
	// script here) without stalling releases or Snapshot. It runs on the
	// goroutine of whichever Acquire, Release or Wake is dispatching, which
	// cannot return (or see its context end) until TryTake does, so a remote
	// TryTake must bound its own time.
	TryTake() bool
	// Give returns one slot. It may run concurrently with TryTake and other
	// Gives, never with the Queue's lock held.
	Give()
	// CanHandOff reports whether a slot being released may pass straight to
	// the head waiter instead of going back to the source: true unless the
	// cap was lowered below the slots in use. It is called with the Queue's
	// lock held and must not block.
	CanHandOff() bool
	// Max reports the cap, for error messages. It must not block.
	Max() int
}

// batchSource is a SlotSource that can take several slots in one call: the
// Redis limiter's buckets, whose acquire script takes n slots at once, so
// that concurrent acquires of one bucket on one instance share one Redis
// round trip. The Queue calls TryTakeN instead of TryTake, under the same
// rules, with n the waiters in its list (at most maxBatch); the slots taken
// go to the first waiters in FIFO order.
type batchSource interface {
	SlotSource
	// TryTakeN takes up to n slots and returns how many it took; fewer
	// than n means the source is full for now.
	TryTakeN(n int) int
}

// maxBatch bounds the slots one TryTakeN asks for.
const maxBatch = 64

// waitState is the life of one Acquire that entered a queue: a small state
// machine, one state per waiter, like PgBouncer's socket states. Every
// transition happens under Queue.mu, and a waiter leaves the waiting states
// exactly once, so whoever makes that move (a grant, a rejection, Close, or
// the waiter itself on cancel or timeout) owns the outcome, and everyone
// else sees it already made.
//
// Entry. A newcomer that finds the list empty, or a try for a slot in flight
// for those ahead, enters as wPending. One that finds only wQueued waiters
// ahead enters as wQueued without trying (it cannot overtake them), or is
// refused at once with 50005 if max_queue_size waiters are already queued.
//
//	state      in list  counted in  leaves to    when
//	                    max_queue
//	wPending   yes      no          wGranted     a try on its behalf took a slot, or a Release handed one over
//	                                wQueued      a try failed and the queue has room
//	                                wRejected    a try failed and the queue is full (50005)
//	                                wCanceled, wTimedOut, wClosed as for wQueued
//	wQueued    yes      yes         wGranted     it is the head and a Release handed over its slot, or a Wake's try took one
//	                                wCanceled    the client's context ended (Acquire returns ctx.Err())
//	                                wTimedOut    queue_timeout passed since enqueue (50004)
//	                                wClosed      Close, or the bucket removed by a reload
//	wGranted   no       -           (terminal)   the waiter becomes the Ticket
//	wRejected, wCanceled, wTimedOut, wClosed: terminal.
//
// wPending does not count against max_queue_size, so a burst of arrivals
// into a bucket with free slots is never refused for a "full" queue while
// their try is in flight. Races: a grant that lands as the waiter's timer
// fires wins (the client gets the slot it waited for); a grant that lands as
// its context ends is undone by passing the slot on (to the next head, or
// back to the source), so no slot is ever lost.
type waitState uint8

const (
	wPending waitState = iota + 1
	wQueued
	wGranted
	wRejected
	wCanceled
	wTimedOut
	wClosed
)

func (s waitState) waiting() bool { return s == wPending || s == wQueued }

// waiter is one Acquire in a queue; once granted it is the Ticket.
type waiter struct {
	q          *Queue
	prev, next *waiter
	state      waitState     // guarded by q.mu
	ch         chan struct{} // made before blocking; closed when the state leaves waiting
	enq        time.Time
	timeout    time.Duration // the queue timeout in force at enqueue
	queued     bool          // was ever wQueued (found the bucket full)
	code       Code          // wClosed: CodeClosed or CodeUnknownBucket
	rejQueue   int           // wRejected: waiters counted when refused
	waited     time.Duration // set before the Ticket is returned
	released   atomic.Bool
}

// Release gives the slot back exactly once.
func (w *waiter) Release() {
	if !w.released.CompareAndSwap(false, true) {
		return
	}
	w.q.obs.Released(w.q.bucket)
	w.q.putBack()
}

// Bucket is the ticket's bucket id.
func (w *waiter) Bucket() string { return w.q.bucket }

// Waited is the time from enqueue to grant.
func (w *waiter) Waited() time.Duration { return w.waited }

// Queue is one bucket's FIFO wait queue over a SlotSource. Any source can
// drive it: Acquire tries the source and waits if it is full; Release hands
// a slot straight to the head waiter; Wake retries after capacity appeared
// outside the queue's view (a raised cap, another instance's release).
//
// At most one goroutine at a time (the "dispatcher": whichever Acquire,
// Release or Wake found none running) calls TryTake for the head waiter;
// events during its call set redo so it tries again. No goroutine is started.
type Queue struct {
	bucket string
	src    SlotSource
	batch  batchSource // src, if it takes several slots per call; else nil
	clock  Clock
	obs    Observer

	n  atomic.Int32 // waiters in the list, readable without mu
	nq atomic.Int32 // of which wQueued (found the source full), readable without mu
	// paused: no slot is taken or handed over, so every newcomer queues
	// (pause.go).
	paused atomic.Bool

	mu          sync.Mutex
	head, tail  *waiter
	count       int // waiters in the list
	pending     int // of which wPending
	waiting     int // of which wQueued (the queue length max_queue_size bounds)
	maxQueue    int
	timeout     time.Duration
	dispatching bool // a goroutine is in dispatchLocked
	redo        bool // capacity may have appeared during the dispatcher's TryTake
	closed      bool
	closeCode   Code
}

// QueueStats is a Queue's state at a moment.
type QueueStats struct {
	Queued       int // waiters in the queue (counted against MaxQueue)
	Trying       int // arrivals whose first try for a slot is still in flight
	MaxQueue     int
	QueueTimeout time.Duration
}

// NewQueue returns the queue of bucket over src, with max_queue_size
// maxQueue and queue_timeout timeout (see BucketConfig). Options set its
// clock and observer.
func NewQueue(bucket string, src SlotSource, maxQueue int, timeout time.Duration, opts ...Option) *Queue {
	o := buildOptions(opts)
	return newQueue(bucket, src, maxQueue, timeout, o)
}

func newQueue(bucket string, src SlotSource, maxQueue int, timeout time.Duration, o options) *Queue {
	q := &Queue{bucket: bucket, src: src, clock: o.clock, obs: o.obs}
	q.batch, _ = src.(batchSource)
	q.SetLimits(maxQueue, timeout)
	return q
}

// Bucket is the queue's bucket id.
func (q *Queue) Bucket() string { return q.bucket }

// SetLimits changes max_queue_size and queue_timeout. Waiters already queued
// keep their place and the timeout they entered with; a smaller
// max_queue_size only refuses newcomers until the queue is under it.
func (q *Queue) SetLimits(maxQueue int, timeout time.Duration) {
	q.mu.Lock()
	q.maxQueue = max(maxQueue, 0)
	q.timeout = max(timeout, 0)
	q.mu.Unlock()
}

// Stats reports the queue's length and limits.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueStats{Queued: q.waiting, Trying: q.pending, MaxQueue: q.maxQueue, QueueTimeout: q.timeout}
}

// Acquire takes a slot from the source, waiting in FIFO order; see
// Limiter.Acquire for the outcomes.
func (q *Queue) Acquire(ctx context.Context) (Ticket, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The enqueue time is read only when it can matter: not on the fast
	// path, where the first try grants the slot (time.Now is not free).
	w := &waiter{q: q}
	known := wPending // w's state when q.mu was last held, if final
	q.mu.Lock()
	if q.closed {
		w.code = q.closeCode
		q.mu.Unlock()
		return nil, q.refuse(w.code, 0, 0, 0)
	}
	w.timeout = q.timeout
	switch {
	case q.head == nil:
		// First in line: try for a slot at once.
		w.state = wPending
		q.pushLocked(w)
		if q.dispatching {
			q.redo = true
			q.mu.Unlock()
			w.enq = q.clock.Now()
		} else {
			// If this try fails, the client enters the queue after it.
			known = q.dispatchLocked(w)
		}
	case q.pending > 0:
		// A try for those ahead is in flight; its outcome settles ours too.
		w.state = wPending
		q.pushLocked(w)
		q.mu.Unlock()
		w.enq = q.clock.Now()
	default:
		// Everyone ahead already waits for a slot, so we must too.
		if q.waiting >= q.maxQueue {
			n, mq := q.waiting, q.maxQueue
			q.mu.Unlock()
			return nil, q.refuse(CodeQueueFull, n, mq, 0)
		}
		w.state, w.queued = wQueued, true
		q.pushLocked(w)
		n := q.waiting
		q.mu.Unlock()
		w.enq = q.clock.Now()
		q.obs.Enqueued(q.bucket, n)
	}
	return q.wait(ctx, w, known)
}

// wait blocks until w's state leaves waiting, then turns it into Acquire's
// result. known is w's state as last seen under q.mu: if final, wait need
// not lock to learn it.
func (q *Queue) wait(ctx context.Context, w *waiter, known waitState) (Ticket, error) {
	giveBack := false
	if known.waiting() {
		q.mu.Lock()
	}
	switch {
	case !known.waiting():
	case !w.state.waiting():
		q.mu.Unlock()
	default:
		w.ch = make(chan struct{})
		q.mu.Unlock()
		if w.enq.IsZero() {
			w.enq = q.clock.Now()
		}
		var timerC <-chan time.Time
		if w.timeout > 0 {
			t := q.clock.NewTimer(w.enq.Add(w.timeout).Sub(q.clock.Now()))
			defer t.Stop()
			timerC = t.C()
		}
		var why waitState
		select {
		case <-w.ch:
		case <-ctx.Done():
			why = wCanceled
		case <-timerC:
			why = wTimedOut
		}
		if why != 0 {
			q.mu.Lock()
			switch {
			case w.state.waiting():
				q.finishLocked(w, why)
			case w.state == wGranted && why == wCanceled:
				// Granted at the moment the client gave up: pass the slot on.
				giveBack = true
			}
			q.mu.Unlock()
		}
	}

	var waited time.Duration
	if !w.enq.IsZero() {
		waited = q.clock.Now().Sub(w.enq)
	}
	switch w.state {
	case wGranted:
		if giveBack {
			w.released.Store(true)
			q.putBack()
			q.obs.Canceled(q.bucket, waited)
			return nil, ctx.Err()
		}
		w.waited = waited
		q.obs.Acquired(q.bucket, waited, w.queued)
		return w, nil
	case wCanceled:
		q.obs.Canceled(q.bucket, waited)
		return nil, ctx.Err()
	case wTimedOut:
		return nil, q.refuse(CodeQueueTimeout, 0, 0, waited)
	case wRejected:
		q.mu.Lock()
		mq := q.maxQueue
		q.mu.Unlock()
		return nil, q.refuse(CodeQueueFull, w.rejQueue, mq, 0)
	default: // wClosed
		return nil, q.refuse(w.code, 0, 0, waited)
	}
}

// refuse builds the *Error for code and reports it to the observer.
func (q *Queue) refuse(code Code, queue, maxQueue int, waited time.Duration) error {
	q.obs.Rejected(q.bucket, code)
	return &Error{Code: code, Bucket: q.bucket, Max: q.src.Max(), Queue: queue, MaxQueue: maxQueue, Waited: waited}
}

// dispatchLocked tries the source for the head waiter until the source is
// full or nobody waits. Called with q.mu held and no dispatcher running;
// returns with q.mu released, and self's state as it was then (0 if self
// is nil).
func (q *Queue) dispatchLocked(self *waiter) waitState {
	q.dispatching = true
	var buf [8]int
	enq := buf[:0]
	for {
		q.redo = false
		if q.closed || q.head == nil {
			break
		}
		want := 1
		if q.batch != nil {
			want = min(q.count, maxBatch)
		}
		q.mu.Unlock()
		got := 0
		if q.paused.Load() {
			// paused (pause.go): nothing is taken
		} else if q.batch != nil {
			got = q.batch.TryTakeN(want)
		} else if q.src.TryTake() {
			got = 1
		}
		q.mu.Lock()
		surplus := 0
		for range got {
			if h := q.head; h != nil && !q.closed {
				q.finishLocked(h, wGranted)
			} else {
				// Whoever we tried for left meanwhile.
				surplus++
			}
		}
		if surplus > 0 {
			q.mu.Unlock()
			for range surplus {
				q.src.Give()
			}
			q.mu.Lock()
		}
		if got == want {
			continue
		}
		// Full: every pending waiter now queues, or is refused if no room.
		for w := q.head; w != nil; {
			next := w.next
			if w.state == wPending {
				if q.waiting < q.maxQueue {
					q.pending--
					q.waiting++
					q.nq.Store(int32(q.waiting))
					w.state, w.queued = wQueued, true
					enq = append(enq, q.waiting)
				} else {
					w.rejQueue = q.waiting
					q.finishLocked(w, wRejected)
				}
			}
			w = next
		}
		if !q.redo {
			break
		}
	}
	q.dispatching = false
	var st waitState
	if self != nil {
		st = self.state
	}
	q.mu.Unlock()
	for _, n := range enq {
		q.obs.Enqueued(q.bucket, n)
	}
	return st
}

// putBack disposes of a released slot: straight to the head waiter if the
// source allows, else back to the source (then wake the queue, for an
// arrival whose try failed just before the slot went back).
func (q *Queue) putBack() {
	q.mu.Lock()
	if h := q.head; h != nil && !q.closed && !q.paused.Load() && q.src.CanHandOff() {
		q.finishLocked(h, wGranted)
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	q.src.Give()
	if q.n.Load() > 0 {
		q.Wake()
	}
}

// Wake makes the queue try its source again for the head waiter. Sources
// call it when capacity may have appeared outside the queue's view: the cap
// was raised, or (shared limits) another instance released a slot.
func (q *Queue) Wake() {
	q.mu.Lock()
	if q.closed || q.head == nil {
		q.mu.Unlock()
		return
	}
	if q.dispatching {
		q.redo = true
		q.mu.Unlock()
		return
	}
	q.dispatchLocked(nil)
}

// Close refuses every waiter and every later Acquire with CodeClosed.
// Held tickets stay valid; their release goes back to the source.
func (q *Queue) Close() { q.close(CodeClosed) }

func (q *Queue) close(code Code) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed, q.closeCode = true, code
	for w := q.head; w != nil; {
		next := w.next
		w.code = code
		q.finishLocked(w, wClosed)
		w = next
	}
}

// reopen undoes close (a removed bucket added back by a reload).
func (q *Queue) reopen() {
	q.mu.Lock()
	q.closed = false
	q.mu.Unlock()
}

func (q *Queue) pushLocked(w *waiter) {
	w.prev = q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.count++
	if w.state == wPending {
		q.pending++
	} else {
		q.waiting++
	}
	q.n.Store(int32(q.count))
	q.nq.Store(int32(q.waiting))
}

// finishLocked moves w out of the list into the terminal state s and wakes it.
func (q *Queue) finishLocked(w *waiter, s waitState) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.count--
	if w.state == wPending {
		q.pending--
	} else {
		q.waiting--
	}
	q.n.Store(int32(q.count))
	q.nq.Store(int32(q.waiting))
	w.state = s
	if w.ch != nil {
		close(w.ch)
	}
}
