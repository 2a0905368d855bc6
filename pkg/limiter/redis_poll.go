package limiter

// The Redis limiter's view of Redis while connected: the poll, the
// failover check, the client-side cache and pub/sub wake-ups.

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// poll is the connected limiter's safety net and idle health check: it
// checks this instance is still registered, reads the live instances and
// every count, re-reads max through the client-side cache (no round trip
// unless invalidated), seeds an absent max, and retries the queues that
// have waiters and room.
func (l *Redis) poll() {
	m := *l.buckets.Load()
	bs := make([]*redisBucket, 0, len(m))
	for _, b := range m {
		bs = append(bs, b)
	}
	c := l.client
	cmds := make(rueidis.Commands, 0, 2+len(bs))
	cmds = append(cmds, c.B().Sismember().Key(coord.KeyInstances).Member(l.InstanceID()).Build(), c.B().Sunion().Key(coord.KeyInstances, coord.KeyFenced).Build())
	for _, b := range bs {
		cmds = append(cmds, c.B().Get().Key(coord.KeyCount(b.id)).Build())
	}
	cmds = append(cmds, c.B().Info().Section("server").Build(), c.B().Hgetall().Key(coord.KeyPeers).Build(),
		c.B().Info().Section("replication").Build())
	// Who waits for each bucket (the slot linger keeps no slot warm while
	// another instance's clients do), judged by Redis's clock.
	wait0 := len(cmds)
	if l.o.SlotLinger > 0 {
		cmds = append(cmds, c.B().Time().Build())
		for _, b := range bs {
			cmds = append(cmds, c.B().Hgetall().Key(coord.KeyWaiting(b.id)).Build())
		}
	}
	// What each peer holds, for the double fault (redis_absent.go).
	peers0 := len(cmds)
	peerIDs, peerCmds := l.peerHashCmds(c)
	cmds = append(cmds, peerCmds...)
	cached := make([]rueidis.CacheableTTL, 0, len(bs))
	for _, b := range bs {
		cached = append(cached, rueidis.CT(c.B().Get().Key(coord.KeyMax(b.id)).Cache(), cacheTTL))
	}
	ctx, cancel := l.opCtx()
	defer cancel()
	res := c.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			l.toFallback("poll", "", err)
			return
		}
	}
	if member, _ := res[0].AsBool(); !member {
		l.leaseOK.Store(false)
		l.toFallback("poll", "", errUnregistered)
		return
	}
	if l.o.SlotLinger > 0 {
		l.noteWaiting(bs, res[wait0:peers0])
	}
	if info, err := res[wait0-3].ToString(); err == nil {
		l.checkRunID(info)
		if repl, err := res[wait0-1].ToString(); err == nil {
			l.noteReplicas(info, repl)
		}
		if !l.resync.Load() {
			// Registered, on the server we knew: lingering is safe again.
			l.redisSuspect.Store(false)
		}
	}
	if ids, err := res[1].AsStrSlice(); err == nil {
		addrs, _ := res[wait0-2].AsStrMap()
		l.noteMembers(ids, addrs)
	}
	l.notePeerHeld(peerIDs, res[peers0:])
	var maxRes []rueidis.RedisResult
	if len(cached) > 0 {
		maxRes = c.DoMultiCache(ctx, cached...)
	}
	for i, b := range bs {
		if n, err := res[2+i].AsInt64(); err == nil {
			b.count.Store(n)
			b.countSeen.Store(true)
		}
		mr := maxRes[i]
		switch err := mr.Error(); {
		case rueidis.IsRedisNil(err):
			// Absent: seed it (SET NX), as the acquire script would.
			c.Do(ctx, c.B().Set().Key(coord.KeyMax(b.id)).Value(itoa(b.seed.Load())).Nx().Build())
		case err != nil:
			l.toFallback("poll", b.id, err)
			return
		default:
			n, err := mr.AsInt64()
			if err != nil {
				n = 0
			}
			if prev := b.max.Swap(n); prev != n {
				l.log.Info("redis: max changed", "bucket", b.id, "from", prev, "to", n)
			}
		}
		if b.pushMax.Swap(false) {
			// The documented rule: a reload that changes max_connections
			// writes it to Redis (config wins on reload).
			seed := b.seed.Load()
			if err := c.Do(ctx, c.B().Set().Key(coord.KeyMax(b.id)).Value(itoa(seed)).Build()).Error(); err != nil {
				b.pushMax.Store(true)
			} else {
				l.log.Info("config: max_connections changed by a reload; written to redis", "bucket", b.id, "redis_key", coord.KeyMax(b.id), "max", seed)
				b.max.Store(seed)
			}
		}
		l.absorbUncounted(ctx, b)
		if b.q.n.Load() > 0 && b.count.Load() < b.max.Load() {
			b.wakeSoon()
		}
		if b.q.n.Load() > 0 || b.listed.Load() {
			b.syncSoon() // keep our waiting entry fresh (or remove it)
		}
	}
}

// checkRunID notes the run_id of the Redis that answers. A new one (a
// Sentinel failover to a replica, or a restart) may hold counts that are
// stale (replication is asynchronous): this instance re-asserts its
// holdings at once through the register script, so that count = the sum
// of the hashes = the sessions open once every instance has, and settles
// (admitting only within what that register granted) so that the others,
// which notice at their next poll, have re-asserted theirs before it takes
// from Redis again. Supervisor goroutine only.
func (l *Redis) checkRunID(info string) {
	_, rest, ok := strings.Cut(info, "run_id:")
	if !ok {
		return
	}
	id, _, _ := strings.Cut(rest, "\r\n")
	id = strings.TrimSpace(id)
	if l.adoptRunID {
		// Registered on this server since the last look (leaving
		// fallback): its run_id is the one the holdings were asserted on.
		l.adoptRunID = false
		l.runID = id
		return
	}
	if l.runID != "" && id != l.runID {
		l.log.Warn("redis: a different server answers (failover or restart); re-asserting this instance's holdings",
			"old_run_id", l.runID, "run_id", id)
		l.resync.Store(true)
		l.newServer.Store(true)
		l.kickSupervisor()
	}
	l.runID = id
}

// noteWaiting reads, from the poll's TIME and each bucket's waiting hash,
// whether another instance has clients waiting (an entry refreshed within
// staleWaiting), for the slot linger.
func (l *Redis) noteWaiting(bs []*redisBucket, res []rueidis.RedisResult) {
	ts, err := res[0].AsStrSlice()
	if err != nil || len(ts) != 2 {
		return
	}
	sec, err1 := strconv.ParseInt(ts[0], 10, 64)
	usec, err2 := strconv.ParseInt(ts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	now := sec*1000 + usec/1000
	me := l.InstanceID()
	for i, b := range bs {
		m, err := res[1+i].AsStrMap()
		if err != nil {
			continue
		}
		waiting := false
		for id, v := range m {
			f := strings.Fields(v)
			if id == me || len(f) != 3 {
				continue
			}
			if seen, err := strconv.ParseInt(f[2], 10, 64); err == nil && seen >= now-l.staleWaiting().Milliseconds() {
				waiting = true
				break
			}
		}
		b.noteOthersWaiting(waiting)
	}
}

// absorbUncounted tries to have Redis count the slots that did not fit at
// the last register (acquire script, never past max), one at a time, so
// that other instances stop being granted them.
func (l *Redis) absorbUncounted(ctx context.Context, b *redisBucket) {
	for b.uncounted.Load() > 0 {
		l.mu.RLock()
		if l.State() != StateConnected {
			l.mu.RUnlock()
			return
		}
		r, err := coord.AcquireSlotsAt(ctx, l.client, l.InstanceID(), b.id, int(b.seed.Load()), 0, 1, 0, l.regEpoch.Load())
		ok := err == nil && r.Status == coord.AcquireGranted
		if ok {
			if u := b.uncounted.Load(); u > 0 && b.uncounted.CompareAndSwap(u, u-1) {
				l.mu.RUnlock()
				continue
			}
			// Released meanwhile: give the slot back.
			coord.ReleaseSlotAt(ctx, l.client, l.InstanceID(), b.id, l.regEpoch.Load())
		}
		l.mu.RUnlock()
		return
	}
}

// onInvalidations is rueidis's client-side cache hook (on its reader
// goroutine: must not block). A changed max triggers a poll at once, which
// re-reads it and wakes waiters if it rose; nil means the connection was
// lost or the cache flushed.
func (l *Redis) onInvalidations(ms []rueidis.RedisMessage) {
	if ms == nil {
		l.suspectRedis()
		l.kickSupervisor()
		return
	}
	for _, m := range ms {
		if k, err := m.ToString(); err == nil {
			if _, ok := coord.BucketOfMaxKey(k); ok {
				l.kickSupervisor()
				return
			}
		}
	}
}

// subscribe listens to every bucket's release channel and wakes that
// bucket's waiters. After each (re)subscription it wakes every bucket, for
// releases published while it was not listening.
func (l *Redis) subscribe() {
	defer l.wg.Done()
	hook := rueidis.WithOnSubscriptionHook(l.ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "psubscribe" {
			l.wakeAll()
		}
	})
	for {
		err := l.client.Receive(hook, l.client.B().Psubscribe().Pattern(coord.KeyReleasedPattern, coord.KeyPressurePattern).Build(), func(msg rueidis.PubSubMessage) {
			if msg.Pattern == coord.KeyPressurePattern {
				l.onPressure(msg.Channel, msg.Message)
				return
			}
			if b := (*l.buckets.Load())[msg.Message]; b != nil {
				b.wakeSoon()
			}
		})
		if l.ctx.Err() != nil {
			return
		}
		l.suspectRedis()
		l.log.Debug("redis: pub/sub subscription ended, resubscribing", "err", err)
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(l.o.ProbeInterval):
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// noteReplicas records the replicas attached to the primary (INFO
// replication), online or in a full sync, for the confirmed grants
// (redis_confirm.go). A replica still in a full sync (state wait_bgsave or
// send_bulk) acknowledges nothing yet, but Sentinel does promote it (its
// link has been down for less than 10 × down-after), with the data it had
// before the sync, so it counts.
func (l *Redis) noteReplicas(server, repl string) {
	if l.o.WaitReplicas <= 0 {
		return
	}
	n, online, ok := coord.ReplicasIn(repl)
	if !ok {
		return
	}
	_, rest, _ := strings.Cut(server, "run_id:")
	id, _, _ := strings.Cut(rest, "\r\n")
	l.replicas.note(strings.TrimSpace(id), n, online, time.Now(), l.o.ReplicaHold)
}
