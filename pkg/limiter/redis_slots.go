package limiter

// The Redis limiter's SlotSource side: the scripts each try and release
// runs, the local share while not connected, and the per-bucket waker.

import (
	"context"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// TryTake takes a warm slot if there is one (SlotLinger), else runs the
// acquire script while connected, else takes a slot of the local share.
func (b *redisBucket) TryTake() bool { return b.TryTakeN(1) == 1 }

// TryTakeN takes up to n slots for the head of the queue (acquire n,
// batchSource): warm slots first, then the rest in one acquire script
// call while connected, or of the local share otherwise. It returns how
// many it took; fewer than n means the bucket is full (or deferred to
// another instance) for now.
func (b *redisBucket) TryTakeN(n int) int {
	got := b.takeWarm(n)
	if got == n {
		return got
	}
	want := n - got
	l := b.l
	for {
		l.mu.RLock()
		if l.State() != StateConnected {
			for got < n && b.takeLocal() {
				got++
			}
			l.mu.RUnlock()
			return got
		}
		queued := int(b.q.n.Load()) // the clients in our list, those we try for included
		r, err := b.acquireConfirmed(queued, want)
		l.op("acquire", err)
		if err == nil && r.Status != coord.AcquireUnregistered {
			b.max.Store(r.Max)
			b.count.Store(r.Count)
			b.countSeen.Store(true)
			switch r.Status {
			case coord.AcquireGranted:
				b.held.Add(r.Granted)
				got += int(r.Granted)
				b.listed.Store(int64(queued) > r.Granted && r.Count >= r.Max)
			case coord.AcquireDeferred:
				// Another instance's longer queue goes first; if it does not
				// take the slot, ours will shortly.
				b.listed.Store(true)
				time.AfterFunc(deferRetry, b.wakeSoon)
			default:
				b.listed.Store(queued > 0)
			}
			l.mu.RUnlock()
			b.noteOthersWaiting(r.OthersWaiting > 0)
			return got
		}
		l.mu.RUnlock()
		if err == nil {
			err = errUnregistered
		}
		// The outcome is unknown (the script may have run), or the grant
		// was not confirmed by enough replicas (given back, in doubt): the
		// reconcile on the way back sets Redis to what we really hold.
		l.toFallback("acquire", b.id, err)
	}
}

// takeLocal takes a slot of the local share. Called with l.mu held shared
// and the state not connected.
func (b *redisBucket) takeLocal() bool {
	limit := b.share.Load()
	if b.l.State() == StateReconciling {
		if t := b.told.Load(); t >= 0 {
			limit = min(limit, t)
		}
	}
	for {
		h := b.held.Load()
		if h >= limit {
			return false
		}
		if b.held.CompareAndSwap(h, h+1) {
			return true
		}
	}
}

// Give keeps the slot warm if it may linger (SlotLinger, redis_linger.go);
// otherwise it gives it back (giveNow).
func (b *redisBucket) Give() {
	if !b.linger() {
		b.giveNow()
	}
}

// giveNow runs the release script while connected; otherwise it releases
// locally (the reconcile accounts for it later).
func (b *redisBucket) giveNow() {
	l := b.l
	for {
		l.mu.RLock()
		if l.State() != StateConnected {
			b.held.Add(-1)
			l.mu.RUnlock()
			return
		}
		if u := b.uncounted.Load(); u > 0 && b.uncounted.CompareAndSwap(u, u-1) {
			// A slot Redis does not count (it did not fit at the last
			// register): nothing to give back there.
			b.held.Add(-1)
			l.mu.RUnlock()
			return
		}
		ctx, cancel := l.opCtx()
		released, count, err := coord.ReleaseSlotAt(ctx, l.client, l.InstanceID(), b.id, l.regEpoch.Load())
		cancel()
		l.op("release", err)
		if err == nil {
			b.held.Add(-1)
			b.count.Store(count)
			b.countSeen.Store(true)
			l.mu.RUnlock()
			if !released {
				// Redis had no slot of ours to take back: it lost track of
				// us somehow. Make it exact again.
				l.resync.Store(true)
				l.kickSupervisor()
			}
			return
		}
		l.mu.RUnlock()
		l.toFallback("release", b.id, err)
		b.releaseInDoubt()
	}
}

// releaseInDoubt: a release failed (timed out, link reset) and its outcome
// is unknown. A command that timed out is not withdrawn: a stalled link
// delivers it later (typically the moment a partition heals, before this
// instance re-registers), and Redis then frees the slot, which another
// instance takes at once. The local share was fixed while this slot
// counted as held (in Redis too), so the session that replaces it locally
// would be one Redis does not count. Lower the share by one: the fallback
// admits only what Redis counts for us even if the release does run.
// Safe if it never runs: Redis then counts one slot more than we hold,
// until the register on the way back corrects it.
func (b *redisBucket) releaseInDoubt() {
	l := b.l
	l.mu.Lock()
	if l.State() != StateConnected {
		b.share.Store(max(b.share.Load()-1, 0))
		b.counted.Store(max(b.counted.Load()-1, 0))
	}
	l.mu.Unlock()
}

// CanHandOff: while connected, never (every release goes back to Redis, so
// a freed slot is offered to every instance's waiters); on the local share,
// while this instance is within it.
func (b *redisBucket) CanHandOff() bool {
	if b.l.State() == StateConnected {
		return false
	}
	return b.held.Load() <= b.share.Load()
}

// Max is the cap as last seen in Redis.
func (b *redisBucket) Max() int { return int(b.max.Load()) }

// wakeSoon asks the bucket's waker to retry its queue (never blocks).
func (b *redisBucket) wakeSoon() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// syncSoon asks the bucket's waker to refresh this instance's entry in the
// bucket's waiting zset (never blocks).
func (b *redisBucket) syncSoon() {
	select {
	case b.sync <- struct{}{}:
	default:
	}
}

// syncWaiting writes this instance's queue length (the clients that found
// the bucket full) to the bucket's waiting hash, or removes the entry when
// nobody waits. Only while connected.
func (b *redisBucket) syncWaiting() {
	l := b.l
	n := int(b.q.nq.Load())
	if n == 0 && !b.listed.Load() {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.State() != StateConnected {
		return
	}
	ctx, cancel := l.opCtx()
	defer cancel()
	if err := coord.SetWaiting(ctx, l.client, l.InstanceID(), b.id, n); err == nil {
		b.listed.Store(n > 0)
	}
}

// staleWaiting is the age past which another instance's waiting entry is
// ignored: it refreshes it at least every poll.
func (l *Redis) staleWaiting() time.Duration { return 3 * l.o.PollInterval }

// waitObserver passes the limiter's events on, and refreshes the waiting
// entry when clients leave a queue without a try (canceled, timed out,
// refused), so other instances do not defer to clients that are gone.
type waitObserver struct {
	Observer
	l *Redis
}

func (o waitObserver) Canceled(bucket string, waited time.Duration) {
	o.Observer.Canceled(bucket, waited)
	o.l.bucketChanged(bucket)
}

func (o waitObserver) Rejected(bucket string, code Code) {
	o.Observer.Rejected(bucket, code)
	if code != CodeQueueFull {
		o.l.bucketChanged(bucket)
	}
}

func (l *Redis) bucketChanged(bucket string) {
	if b := (*l.buckets.Load())[bucket]; b != nil && b.listed.Load() {
		b.syncSoon()
	}
}

func (l *Redis) startWaker(b *redisBucket) {
	ctx, cancel := context.WithCancel(l.ctx)
	b.stop = cancel
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
				if b.q.n.Load() > 0 {
					b.q.Wake()
				}
			case <-b.sync:
				b.syncWaiting()
			}
		}
	}()
}

func (l *Redis) wakeAll() {
	for _, b := range *l.buckets.Load() {
		b.wakeSoon()
	}
}
