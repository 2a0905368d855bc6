package limiter

// The Redis limiter's state machine (RedisState, fallback.go): fallback,
// reconcile, settle, and the supervisor that times them.

import (
	"context"
	"log/slog"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// toFallback moves a connected limiter to fallback after a failed call.
func (l *Redis) toFallback(op, bucket string, cause error) {
	l.mu.Lock()
	if l.State() != StateConnected {
		l.mu.Unlock()
		return
	}
	shares := l.fixSharesLocked()
	l.state.Store(int32(StateFallback))
	l.fallbackSince = time.Now()
	l.fallbacks.Add(1)
	l.mu.Unlock()
	l.log.Warn("fallback: redis unreachable, admitting on the local share", "op", op, "bucket", bucket, "err", cause,
		"divisor", l.divisor(), "shares", formatShares(shares))
	l.changed(StateConnected, StateFallback)
	l.kickSupervisor()
}

// fixSharesLocked sets every bucket's local share from what was last seen.
// Called with mu held exclusively, as the state leaves Redis (connected or
// reconciling → fallback), or at a start without Redis.
//
// Each bucket's exact share of max is fixed here (ExactShare; floor only
// when Redis was never reached). With lease_loss close the share is at
// most what Redis counts for this instance (counted: what it held minus
// the uncounted slots, or the register's grant when it was reconciling):
// slots Redis counts for it are slots no other instance can take, whether
// this one is cut off alone or Redis is down for everyone. It grows to
// the exact share only when every peer confirms the outage (redis_peers.go).
// With keep the share is the exact share capped at what it held plus its
// exact share of the slots that were free (fallbackShare).
//
// An instance that never reached Redis has its floor share (rank
// unknown) of expected_instances; with lease_loss close, only from
// unreachedGrowAt on (0 before: growUnreached raises it), since the
// instances that lost Redis before it started may still hold more than
// their own shares until they shed.
func (l *Redis) fixSharesLocked() map[string]int64 {
	d := l.divisor()
	rank := int(l.rank.Load())
	ever := l.reached()
	if !ever || l.live.Load() == 0 {
		rank = -1 // unknown: the floor share
	}
	reconciling := l.State() == StateReconciling
	l.grown.Store(false)
	out := map[string]int64{}
	for _, b := range *l.buckets.Load() {
		exact := fallbackShare(b.max.Load(), 0, 0, d, rank, false)
		counted := max(b.held.Load()-b.uncounted.Load(), 0)
		if t := b.told.Load(); reconciling && t >= 0 {
			counted = min(counted, t)
		}
		b.exact.Store(exact)
		b.counted.Store(counted)
		var s int64
		switch {
		case !ever && !l.o.LeaseLossKeep && l.opts.clock.Now().Before(l.unreachedGrowAt()):
			s = 0 // admits on its share only once its peers have shed (unreachedGrowAt)
		case !ever:
			s = exact
		case l.o.LeaseLossKeep:
			s = fallbackShare(b.max.Load(), b.count.Load(), b.held.Load(), d, rank, b.countSeen.Load())
		default:
			s = min(exact, counted)
		}
		b.share.Store(s)
		b.told.Store(-1)
		out[b.id] = s
	}
	return out
}

func (l *Redis) op(name string, err error) {
	if l.o.OnOp != nil {
		l.o.OnOp(name, err)
	}
}

// Ping checks that Redis answers within op_timeout (and ctx).
func (l *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.o.OpTimeout)
	defer cancel()
	return l.client.Do(ctx, l.client.B().Ping().Build()).Error()
}

func (l *Redis) changed(from, to RedisState) {
	l.lingerStateChanged(to)
	if l.o.OnStateChange != nil {
		l.o.OnStateChange(from, to)
	}
}

func (l *Redis) kickSupervisor() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// holdingsLocked lists what this instance holds, every configured bucket
// and every retired one still held.
func (l *Redis) holdingsLocked() []coord.Holding {
	m := *l.buckets.Load()
	hs := make([]coord.Holding, 0, len(m))
	for _, b := range m {
		hs = append(hs, coord.Holding{Bucket: b.id, Held: b.held.Load(), SeedMax: int(b.seed.Load())})
	}
	l.bmu.Lock()
	for id, b := range l.retired {
		if m[id] == nil {
			hs = append(hs, coord.Holding{Bucket: b.id, Held: b.held.Load(), SeedMax: int(b.seed.Load())})
		}
	}
	l.bmu.Unlock()
	return hs
}

// supervise runs the state machine's timed side: poll while connected,
// probe while in fallback, settle and finish while reconciling.
func (l *Redis) supervise() {
	defer l.wg.Done()
	t := time.NewTimer(l.o.PollInterval)
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
			kicked = true
		case <-t.C:
		}
		next := l.o.PollInterval
		switch l.State() {
		case StateConnected:
			if l.resync.Swap(false) {
				l.mu.Lock()
				if l.State() == StateConnected {
					if err := l.reconcileLocked(); err != nil {
						l.mu.Unlock()
						l.toFallback("reconcile", "", err)
						break
					}
					if l.newServer.Swap(false) || l.regFresh {
						// A new server (failover, restart; its counts may
						// be stale) or one that had lost us: the others
						// re-assert too, at their next poll; settle first.
						l.fallbackSince = time.Now()
						l.settleLocked()
						l.mu.Unlock()
						l.log.Warn("reconcile: a new redis server (failover or restart) or one that had lost this instance: holdings re-asserted; settling before taking from redis again",
							"settle", l.o.SettleTime)
						l.changed(StateConnected, StateReconciling)
						break
					}
				}
				l.mu.Unlock()
			}
			l.poll()
			if kicked {
				// Keep the regular rhythm; a kick only adds a poll.
				continue
			}
		case StateFallback:
			next = l.o.ProbeInterval
			if l.probe() {
				l.beginReconcile()
				next = min(l.o.ProbeInterval, l.o.SettleTime)
			}
		case StateReconciling:
			next = l.o.ProbeInterval
			if now := time.Now(); !now.Before(l.settleUntil) {
				l.finishReconcile()
			} else {
				l.observe()
				next = min(next, l.settleUntil.Sub(now))
			}
		}
		if d := l.checkLease(); d > 0 {
			next = min(next, d)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// probe reports whether Redis answers a PING within op_timeout.
func (l *Redis) probe() bool {
	ctx, cancel := l.opCtx()
	defer cancel()
	return l.client.Do(ctx, l.client.B().Ping().Build()).Error() == nil
}

// beginReconcile: fallback → reconciling.
func (l *Redis) beginReconcile() {
	l.mu.Lock()
	if l.State() != StateFallback {
		l.mu.Unlock()
		return
	}
	if err := l.reconcileLocked(); err != nil {
		l.mu.Unlock()
		l.log.Debug("fallback: redis answers PING but the reconcile failed", "err", err)
		return
	}
	l.settleLocked()
	since := l.fallbackSince
	l.mu.Unlock()
	l.log.Info("fallback: redis answers again, reconciling", "in_fallback", time.Since(since).Round(time.Millisecond),
		"settle", l.o.SettleTime)
	l.changed(StateFallback, StateReconciling)
}

// settleLocked enters (or restarts) the settle time of reconciling, right
// after a successful register, with mu held exclusively.
func (l *Redis) settleLocked() {
	for _, b := range *l.buckets.Load() {
		// What Redis now counts for us (the register's granted), not what
		// we hold: slots that did not fit are uncounted, and with close
		// their sessions are being shed; admitting up to held would replace
		// them with sessions Redis does not count either (the backend above
		// max for the whole settle time).
		b.told.Store(max(b.held.Load()-b.uncounted.Load(), 0))
	}
	l.grown.Store(false)
	l.state.Store(int32(StateReconciling))
	l.settleUntil = time.Now().Add(l.o.SettleTime)
}

// finishReconcile: reconciling → connected (or back to fallback).
func (l *Redis) finishReconcile() {
	l.mu.Lock()
	if l.State() != StateReconciling {
		l.mu.Unlock()
		return
	}
	if err := l.reconcileLocked(); err != nil {
		shares := l.fixSharesLocked()
		l.state.Store(int32(StateFallback))
		l.fallbacks.Add(1)
		l.mu.Unlock()
		l.log.Warn("fallback: redis failed again while reconciling", "err", err, "shares", formatShares(shares))
		l.changed(StateReconciling, StateFallback)
		return
	}
	if l.regFresh {
		// Redis lost this instance's registration while it settled (it
		// restarted empty again, or a reaper took the id out): the others
		// may be re-registering now too. Settle again from here, within
		// what this register granted, before taking from Redis.
		l.settleLocked()
		l.mu.Unlock()
		l.log.Warn("reconcile: redis had lost this instance's registration while it settled (restarted empty?); settling again",
			"settle", l.o.SettleTime)
		return
	}
	for _, b := range *l.buckets.Load() {
		b.told.Store(-1)
	}
	// Just registered on the server that answers now: nothing to re-assert.
	l.newServer.Store(false)
	l.adoptRunID = true
	l.state.Store(int32(StateConnected))
	l.everConnected.Store(true)
	since := l.fallbackSince
	l.reconciles.Add(1)
	var held []any
	for _, b := range *l.buckets.Load() {
		held = append(held, b.id, b.held.Load())
	}
	l.mu.Unlock()
	l.log.Info("reconciled: redis counts match what this instance holds; left fallback",
		"in_fallback", time.Since(since).Round(time.Millisecond), slog.GroupAttrs("held", toAttrs(held)...))
	l.changed(StateReconciling, StateConnected)
	l.poll()
	l.wakeAll()
}

func toAttrs(kv []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
}
