package limiter

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Local is the Limiter whose limits are local to this process: one Queue per
// bucket over an in-memory counter. Acquire and Release take no lock but
// their bucket's queue lock; Update and Close are serialized.
type Local struct {
	opts    options
	buckets atomic.Pointer[map[string]*localBucket] // replaced whole by Update
	closed  atomic.Bool

	mu      sync.Mutex              // serializes Update and Close
	retired map[string]*localBucket // removed by Update while slots were still held
}

var _ Limiter = (*Local)(nil)

// localBucket is a bucket's in-memory counter, the SlotSource of its queue.
type localBucket struct {
	id    string
	max   atomic.Int64
	inUse atomic.Int64
	q     *Queue
}

// TryTake takes a slot if fewer than max are in use.
func (b *localBucket) TryTake() bool {
	for {
		n := b.inUse.Load()
		if n >= b.max.Load() {
			return false
		}
		if b.inUse.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Give returns a slot.
func (b *localBucket) Give() { b.inUse.Add(-1) }

// CanHandOff is false while more slots are in use than a lowered max allows.
func (b *localBucket) CanHandOff() bool { return b.inUse.Load() <= b.max.Load() }

// Max is the cap.
func (b *localBucket) Max() int { return int(b.max.Load()) }

// NewLocal returns a Local with the given buckets. A repeated ID takes the
// last config; negative limits count as 0.
func NewLocal(buckets []BucketConfig, opts ...Option) *Local {
	l := &Local{opts: buildOptions(opts), retired: map[string]*localBucket{}}
	m := map[string]*localBucket{}
	l.buckets.Store(&m)
	l.Update(buckets)
	return l
}

// Acquire takes a slot in bucket; see Limiter.
func (l *Local) Acquire(ctx context.Context, bucket string) (Ticket, error) {
	if l.closed.Load() {
		l.opts.obs.Rejected(bucket, CodeClosed)
		return nil, &Error{Code: CodeClosed, Bucket: bucket}
	}
	b := (*l.buckets.Load())[bucket]
	if b == nil {
		l.opts.obs.Rejected(bucket, CodeUnknownBucket)
		return nil, &Error{Code: CodeUnknownBucket, Bucket: bucket}
	}
	return b.q.Acquire(ctx)
}

// Update applies a reloaded config (SIGHUP) without dropping held slots:
//   - a changed max_connections applies at once. Raising it wakes waiters;
//     lowering it below the slots in use only stops new grants (and
//     hand-offs) until releases bring the count under it.
//   - a changed max_queue_size or queue_timeout applies to newcomers;
//     waiters keep their place and their timeout.
//   - a new bucket starts empty.
//   - a removed bucket refuses its waiters and newcomers with
//     CodeUnknownBucket; its held slots stay counted, so adding it back
//     while they are held does not exceed its cap.
func (l *Local) Update(buckets []BucketConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.buckets.Load()
	next := make(map[string]*localBucket, len(buckets))
	var wake []*localBucket
	for _, c := range buckets {
		maxConns := int64(max(c.MaxConnections, 0))
		b := old[c.ID]
		if b == nil {
			if b = l.retired[c.ID]; b != nil {
				delete(l.retired, c.ID)
				if !l.closed.Load() {
					b.q.reopen()
				}
			}
		}
		if b == nil {
			b = &localBucket{id: c.ID}
			b.max.Store(maxConns)
			b.q = newQueue(c.ID, b, c.MaxQueueSize, c.QueueTimeout, l.opts)
			if l.closed.Load() {
				b.q.Close()
			}
		} else {
			if prev := b.max.Swap(maxConns); maxConns > prev {
				wake = append(wake, b)
			}
			b.q.SetLimits(c.MaxQueueSize, c.QueueTimeout)
		}
		next[c.ID] = b
	}
	for id, b := range old {
		if next[id] == nil {
			b.q.close(CodeUnknownBucket)
			l.retired[id] = b
		}
	}
	for id, b := range l.retired {
		if b.inUse.Load() == 0 {
			delete(l.retired, id)
		}
	}
	l.buckets.Store(&next)
	for _, b := range wake {
		b.q.Wake()
	}
}

// Snapshot reports every configured bucket, sorted by id.
func (l *Local) Snapshot() []BucketStats {
	m := *l.buckets.Load()
	out := make([]BucketStats, 0, len(m))
	for _, b := range m {
		qs := b.q.Stats()
		out = append(out, BucketStats{
			Bucket:       b.id,
			Max:          int(b.max.Load()),
			InUse:        int(b.inUse.Load()),
			Queued:       qs.Queued,
			MaxQueue:     qs.MaxQueue,
			QueueTimeout: qs.QueueTimeout,
		})
	}
	slices.SortFunc(out, func(a, b BucketStats) int { return strings.Compare(a.Bucket, b.Bucket) })
	return out
}

// Close refuses every waiter and later Acquire with CodeClosed. Held tickets
// stay valid. It always returns nil.
func (l *Local) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Swap(true) {
		return nil
	}
	for _, b := range *l.buckets.Load() {
		b.q.Close()
	}
	return nil
}
