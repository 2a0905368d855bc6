package limiter

// The Redis limiter's slot linger (RedisOptions.SlotLinger, config
// redis.slot_linger): a slot released while nobody waits stays warm on
// this instance for a short while, still counted in Redis, and goes to the
// next local acquire of its bucket with no Redis round trip.
//
// A warm slot is a held slot with no ticket: it is in held (so the
// register script and the fallback shares see it, and Redis's count and
// this instance's hash include it), and in the bucket's warm pool. The
// life of one warm slot:
//
//	ticket released ──linger()──► warm ──takeWarm()──► ticket (no Redis call)
//	                                │
//	                                └──flushWarm()/expireWarm()──► given back
//	                                   (giveNow: the release script while
//	                                   connected, a local release otherwise)
//
// A release lingers only while connected, with the lease held, no slot of
// the bucket uncounted, nobody queued locally (a client whose try found
// the bucket full; arrivals whose try is in flight take the warm slot
// through the Queue's redo), and no sign that clients of another instance
// wait (othersWait: the waiting hash as the acquire script and the poll
// saw it; a proxy:pressure signal within lingerPressureHold). Warm slots
// go back:
//
//   - after SlotLinger unused (expireWarm, a timer per bucket; the pool
//     is LIFO, so the slots a steady load needs are re-used and the rest
//     expire);
//   - at once when another instance's clients are seen waiting (the poll,
//     a script result, proxy:pressure);
//   - on every transition out of connected (Redis lost, the lease lost,
//     unregistered): dropped locally, as any release in fallback is, and
//     accounted for by the register script on the way back;
//   - as soon as a connection to Redis drops (rueidis's invalidation hook
//     with nil, the pub/sub subscription ending): Redis may have restarted
//     empty or failed over, and an instance serving logins from warm slots
//     would not notice it until its next script call. Until a poll has
//     seen this instance registered on the same server (run_id), no
//     release lingers and no warm slot is taken (redisSuspect): every
//     login runs the acquire script again, which finds out at once;
//   - on Close (the release script; later releases never linger) and when
//     a reload removes the bucket.
//
// Invariant: count = the sum of the hashes = the sessions open + the warm
// slots, and the warm slots are 0 within SlotLinger of the last release.

import (
	"strings"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/coord"
)

// DefaultSlotLinger is config redis.slot_linger's default (the app passes
// it; RedisOptions.SlotLinger 0 is off): config.DefaultSlotLinger, whose
// comment says why 100 ms and not less.
const DefaultSlotLinger = config.DefaultSlotLinger

// lingerPressureHold is how long a proxy:pressure signal from another
// instance keeps a bucket's releases from lingering. Package pool repeats
// the signal (every 250 ms in the app) while clients stay queued.
const lingerPressureHold = 500 * time.Millisecond

// warmPool is a bucket's warm slots.
type warmPool struct {
	mu    sync.Mutex
	at    []time.Time // when each warm slot was released, oldest first
	off   bool        // Close ran: no more lingering
	timer *time.Timer // runs expireWarm; armed while at is not empty
}

// lingerAllowed reports whether a release of b may linger now, judged
// without locks (linger checks the rest under them).
func (b *redisBucket) lingerAllowed() bool {
	if b.l.o.SlotLinger <= 0 || b.q.nq.Load() > 0 || b.othersWait.Load() || b.l.closed.Load() || b.l.redisSuspect.Load() {
		return false
	}
	if at := b.pressureAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < lingerPressureHold {
		return false
	}
	return true
}

// linger keeps a released slot warm instead of giving it back, if allowed
// (see the file comment). It reports whether it did.
func (b *redisBucket) linger() bool {
	if !b.lingerAllowed() {
		return false
	}
	l := b.l
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.State() != StateConnected || !l.leaseOK.Load() || b.uncounted.Load() > 0 || (*l.buckets.Load())[b.id] != b {
		return false // not connected, no lease, uncounted slots, or the bucket removed by a reload
	}
	now := time.Now()
	w := &b.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off {
		return false
	}
	w.at = append(w.at, now)
	b.warmN.Store(int64(len(w.at)))
	switch {
	case w.timer == nil:
		w.timer = time.AfterFunc(l.o.SlotLinger, b.expireWarm)
	case len(w.at) == 1:
		w.timer.Reset(l.o.SlotLinger)
	}
	return true
}

// takeWarm takes up to n warm slots (the newest first) for new tickets:
// they stay held and counted, no Redis call. It returns how many.
func (b *redisBucket) takeWarm(n int) int {
	if n <= 0 || b.warmN.Load() == 0 || b.l.redisSuspect.Load() {
		return 0
	}
	w := &b.warm
	w.mu.Lock()
	k := min(n, len(w.at))
	w.at = w.at[:len(w.at)-k]
	b.warmN.Store(int64(len(w.at)))
	w.mu.Unlock()
	return k
}

// expireWarm gives back the warm slots unused for SlotLinger and re-arms
// the timer for the next one (the timer's goroutine).
func (b *redisBucket) expireWarm() {
	d := b.l.o.SlotLinger
	w := &b.warm
	w.mu.Lock()
	now := time.Now()
	k := 0
	for k < len(w.at) && !now.Before(w.at[k].Add(d)) {
		k++
	}
	w.at = w.at[k:]
	b.warmN.Store(int64(len(w.at)))
	if len(w.at) > 0 {
		w.timer.Reset(w.at[0].Add(d).Sub(now))
	}
	w.mu.Unlock()
	b.giveBack(k)
}

// giveBack gives k slots back (giveNow each). Several at once run
// concurrently: rueidis pipelines them, one round trip for all.
func (b *redisBucket) giveBack(k int) {
	if k == 1 {
		b.giveNow()
		return
	}
	var wg sync.WaitGroup
	for range k {
		wg.Go(b.giveNow)
	}
	wg.Wait()
}

// flushWarm gives every warm slot of b back at once. off: no release
// lingers afterwards (Close).
func (b *redisBucket) flushWarm(off bool) int {
	w := &b.warm
	w.mu.Lock()
	if off {
		w.off = true
		if w.timer != nil {
			w.timer.Stop()
		}
	}
	k := len(w.at)
	w.at = nil
	b.warmN.Store(0)
	w.mu.Unlock()
	b.giveBack(k)
	return k
}

// flushWarmSoon flushes b's warm slots on a goroutine of its own (the
// caller is a pub/sub reader or a hot path), if there are any.
func (b *redisBucket) flushWarmSoon() {
	if b.warmN.Load() > 0 {
		go b.flushWarm(false)
	}
}

// noteOthersWaiting records whether another instance's clients wait for
// b (as a script or the poll just saw it); if they do, the warm slots go
// back at once.
func (b *redisBucket) noteOthersWaiting(waiting bool) {
	b.othersWait.Store(waiting)
	if waiting {
		b.flushWarmSoon()
	}
}

// onPressure handles a proxy:pressure message: clients of the publisher
// wait for bucket.
func (l *Redis) onPressure(channel, from string) {
	bucket, ok := strings.CutPrefix(channel, coord.ChanPressurePrefix)
	if !ok || from == l.o.InstanceID+"@"+l.o.Incarnation {
		return // not a pressure channel, or our own signal
	}
	if b := (*l.buckets.Load())[bucket]; b != nil {
		b.pressureAt.Store(time.Now().UnixNano())
		b.flushWarmSoon()
	}
}

// suspectRedis: a connection to Redis dropped, so Redis may have
// restarted or failed over (see the file comment): stop lingering, give
// the warm slots back, and poll at once.
func (l *Redis) suspectRedis() {
	if l.o.SlotLinger <= 0 {
		return
	}
	l.redisSuspect.Store(true)
	for _, b := range *l.buckets.Load() {
		b.flushWarmSoon()
	}
	l.kickSupervisor()
}

// lingerStateChanged: leaving connected (Redis lost, the lease lost,
// unregistered), every warm slot is dropped at once (a local release, as
// any in fallback; the register script accounts for it).
func (l *Redis) lingerStateChanged(to RedisState) {
	if to == StateConnected {
		return
	}
	for _, b := range *l.buckets.Load() {
		b.flushWarm(false)
	}
}

// closeLinger, on Close: every warm slot goes back, and no release
// lingers afterwards.
func (l *Redis) closeLinger() {
	for _, b := range *l.buckets.Load() {
		b.flushWarm(true)
	}
}

// Warm is the number of warm (lingering) slots of bucket on this instance.
func (l *Redis) Warm(bucket string) int {
	if b := (*l.buckets.Load())[bucket]; b != nil {
		return int(b.warmN.Load())
	}
	return 0
}
