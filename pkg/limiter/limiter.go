package limiter

import (
	"context"
	"time"
)

// Limiter admits logins into buckets. Implementations: Local (this process's
// limits) and Redis (caps shared by every instance, with a local-share
// fallback while Redis is down).
type Limiter interface {
	// Acquire takes a slot in bucket, waiting in the bucket's FIFO queue if
	// the bucket is full. It returns
	//   - a Ticket once a slot is granted;
	//   - ctx.Err() if ctx is done first (the client went away); the caller
	//     leaves the queue and holds nothing;
	//   - *Error CodeQueueTimeout after the bucket's queue timeout, measured
	//     from entering the queue;
	//   - *Error CodeQueueFull at once when the bucket is full and so is its
	//     queue (or max_queue_size is 0);
	//   - *Error CodeUnknownBucket or CodeClosed.
	// A newcomer never overtakes a waiter: if anyone is queued, a newcomer
	// queues too, and freed slots go to the head of the queue. A slot
	// granted just as the wait ends is never lost: a grant racing the
	// queue timeout is kept (the ticket is returned); one racing ctx is
	// passed on to the next waiter and ctx.Err() is returned.
	Acquire(ctx context.Context, bucket string) (Ticket, error)
	// Snapshot reports every bucket's state, sorted by bucket id, for metrics,
	// health and tests.
	Snapshot() []BucketStats
	// Close refuses every waiter and every later Acquire with CodeClosed.
	// Tickets already held stay valid and may be released after Close.
	Close() error
}

// Ticket is a held slot.
type Ticket interface {
	// Release gives the slot back. It is idempotent and safe from any
	// goroutine: the slot is given back exactly once however often it is
	// called.
	Release()
	// Bucket is the id of the bucket the slot belongs to.
	Bucket() string
	// Waited is the time from entering Acquire's queue to the grant; about
	// zero when the slot was free.
	Waited() time.Duration
}

// BucketStats is one bucket's state at a moment.
type BucketStats struct {
	Bucket       string
	Max          int           // max_connections
	InUse        int           // slots held (may exceed Max for a while after Max is lowered)
	Queued       int           // clients waiting in the queue
	MaxQueue     int           // max_queue_size
	QueueTimeout time.Duration // queue_timeout; 0 means waits are bounded only by the client's context
}

// BucketConfig is one bucket's limits.
type BucketConfig struct {
	// ID names the bucket; routing maps a login to it.
	ID string
	// MaxConnections caps the slots (backend connections) held at once.
	// 0 admits nobody: every login queues, which drains a bucket.
	MaxConnections int
	// MaxQueueSize bounds the clients waiting for a slot. 0 turns queueing
	// off: a login that finds the bucket full is refused at once (50005).
	MaxQueueSize int
	// QueueTimeout bounds a client's wait, measured from entering the queue
	// (50004 after it). 0 means no limit other than the client's context.
	QueueTimeout time.Duration
}

// Observer hooks admission events for metrics and logging. Methods are called
// on the goroutine of the Acquire or Release that caused the event, never
// with a limiter lock held, so they may call Snapshot; they must be safe for
// concurrent use and quick. ObserverFuncs adapts a set of optional funcs.
type Observer interface {
	// Acquired: a slot was granted after waiting `waited`; queued says the
	// client had to join the queue (it found the bucket full).
	Acquired(bucket string, waited time.Duration, queued bool)
	// Released: a ticket gave its slot back.
	Released(bucket string)
	// Enqueued: a client found the bucket full and joined its queue, which
	// now holds queueLen waiters.
	Enqueued(bucket string, queueLen int)
	// Rejected: Acquire refused with an *Error of this code. For
	// CodeUnknownBucket, bucket is whatever the caller asked for.
	Rejected(bucket string, code Code)
	// Canceled: the client's context ended while it waited.
	Canceled(bucket string, waited time.Duration)
}

// ObserverFuncs is an Observer made of optional funcs; nil ones are skipped.
type ObserverFuncs struct {
	OnAcquired func(bucket string, waited time.Duration, queued bool)
	OnReleased func(bucket string)
	OnEnqueued func(bucket string, queueLen int)
	OnRejected func(bucket string, code Code)
	OnCanceled func(bucket string, waited time.Duration)
}

func (o ObserverFuncs) Acquired(b string, w time.Duration, q bool) {
	if o.OnAcquired != nil {
		o.OnAcquired(b, w, q)
	}
}

func (o ObserverFuncs) Released(b string) {
	if o.OnReleased != nil {
		o.OnReleased(b)
	}
}

func (o ObserverFuncs) Enqueued(b string, n int) {
	if o.OnEnqueued != nil {
		o.OnEnqueued(b, n)
	}
}

func (o ObserverFuncs) Rejected(b string, c Code) {
	if o.OnRejected != nil {
		o.OnRejected(b, c)
	}
}

func (o ObserverFuncs) Canceled(b string, w time.Duration) {
	if o.OnCanceled != nil {
		o.OnCanceled(b, w)
	}
}

type nopObserver struct{}

func (nopObserver) Acquired(string, time.Duration, bool) {}
func (nopObserver) Released(string)                      {}
func (nopObserver) Enqueued(string, int)                 {}
func (nopObserver) Rejected(string, Code)                {}
func (nopObserver) Canceled(string, time.Duration)       {}

// Option configures a Local or a Queue.
type Option func(*options)

type options struct {
	clock Clock
	obs   Observer
}

// WithClock sets the time source (default RealClock). Tests pass a FakeClock.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithObserver sets the event hook (default: none).
func WithObserver(obs Observer) Option { return func(o *options) { o.obs = obs } }

func buildOptions(opts []Option) options {
	o := options{clock: RealClock{}, obs: nopObserver{}}
	for _, f := range opts {
		f(&o)
	}
	if o.clock == nil {
		o.clock = RealClock{}
	}
	if o.obs == nil {
		o.obs = nopObserver{}
	}
	return o
}
