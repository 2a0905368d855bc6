package limiter

// The Redis limiter's lease: registering (re-acquiring what Redis does
// not count), the lease deadline, and the fence that sheds sessions
// (doc.go, "Leases and fencing").

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// registerInDoubtLocked: a register that failed may still have run (its
// answer lost: a timeout, a connection cut after the request went out).
// For an instance that never reached Redis and re-asserted sessions, that
// matters: if it ran, Redis counts them and lists the instance, and the
// reapers will fence, park and forget it like any lost lease, while the
// instance, with no answer, would keep its never-reached share past that
// forget (TestFaultRegisterInDoubt: 6 sessions for a max of 4). So it
// takes the register as having maybe run: a lease from when it was sent
// (reached, LeaseDeadline), its shares those of an instance that lost
// Redis (min(exact, counted), the exact share a floor while it never read
// the membership), and its fence sheds everything before a reaper can
// forget it. Nothing is at stake when it held nothing, or had reached
// Redis already (its lease and fence run from its last renewal).
// Called with mu held exclusively.
func (l *Redis) registerInDoubtLocked(sent time.Time, hs []coord.Holding) {
	if l.reached() || !slices.ContainsFunc(hs, func(h coord.Holding) bool { return h.Held > 0 }) {
		return
	}
	l.LeaseRenewed(sent)
	if l.State() != StateFallback {
		return
	}
	shares := l.fixSharesLocked()
	l.log.Warn("reconcile: the register failed but may have run (its answer lost): counting this instance as one that reached redis, "+
		"its fence sheds what it holds before a reaper could forget it", "lease_deadline", l.LeaseDeadline(), "shares", formatShares(shares))
}

// reconcileLocked runs the register script with what we hold: it claims
// our id (or a sibling id, when another live process holds ours), renews
// the lease, lowers what Redis records where we hold less, and
// re-acquires (never past max) where we hold more. Slots that do not fit
// become uncounted; with lease_loss close their sessions are closed at
// once. Called with mu held exclusively (so held does not move under it).
func (l *Redis) reconcileLocked() error {
	hs := l.holdingsLocked()
	ctx, cancel := l.opCtx()
	defer cancel()
	id := l.InstanceID()
	sent := l.opts.clock.Now()
	reg, err := coord.Register(ctx, l.client, id, l.o.Incarnation, l.o.HeartbeatTTL, hs)
	if errors.Is(err, coord.ErrIDTaken) {
		sib := coord.SiblingID(l.o.InstanceID, l.o.Incarnation)
		if id == sib {
			// Our own sibling id is taken: by us, in another process? Never
			// by chance (16 hex digits); say so and stay in fallback.
			l.op("reconcile", err)
			return fmt.Errorf("instance id %s: %w", id, err)
		}
		l.log.Warn("instance id in use by another live tdsgate process (same instance_id, another incarnation): "+
			"this process registers as a sibling id and never touches the other's slots; give each process its own instance_id",
			"instance_id", l.o.InstanceID, "sibling_id", sib, "incarnation", l.o.Incarnation)
		id = sib
		l.keyID.Store(&sib)
		reg, err = coord.Register(ctx, l.client, id, l.o.Incarnation, l.o.HeartbeatTTL, hs)
	}
	l.op("reconcile", err)
	if err != nil {
		l.registerInDoubtLocked(sent, hs)
		return err
	}
	if reg.Fresh {
		// Before the view takes in the new membership: the peers this
		// instance saw, which Redis may no longer know.
		if err := l.reserveAbsent(ctx); err != nil {
			l.op("reconcile", err)
			return err
		}
	}
	res := reg.Buckets
	l.regEpoch.Store(reg.Epoch)
	l.regFresh = reg.Fresh
	l.LeaseRenewed(sent)
	l.leaseOK.Store(true)
	// The membership at once (the poll may not have run yet): fallback
	// shares need N and our rank from the moment we are registered.
	// And this instance's /peer/lease address, for the peers' outage check.
	c := l.client
	var adv rueidis.Completed
	if l.o.PeerAddr != "" {
		adv = c.B().Hset().Key(coord.KeyPeers).FieldValue().FieldValue(id, l.o.PeerAddr).Build()
	} else {
		adv = c.B().Hdel().Key(coord.KeyPeers).Field(id).Build()
	}
	l.noteMembership(c.DoMulti(ctx, append(rueidis.Commands{adv}, l.membershipCmds()...)...)[1:])
	m := *l.buckets.Load()
	held := map[string]int64{}
	for _, h := range hs {
		held[h.Bucket] = h.Held
	}
	for _, r := range res {
		b := m[r.Bucket]
		if b == nil {
			l.bmu.Lock()
			b = l.retired[r.Bucket]
			l.bmu.Unlock()
		}
		if b == nil {
			continue
		}
		b.count.Store(r.Count)
		b.countSeen.Store(true)
		b.max.Store(r.Max)
		over := max(held[r.Bucket]-r.Granted, 0)
		b.uncounted.Store(over)
		if r.Delta != 0 {
			l.log.Info("reconcile: corrected count", "bucket", r.Bucket, "delta", r.Delta, "count", r.Count, "held", held[r.Bucket])
		}
		if over > 0 {
			if l.o.LeaseLossKeep {
				l.log.Warn("reconcile: sessions do not fit under max (lease_loss keep: kept; the backend may exceed max by this many until they end)",
					"bucket", r.Bucket, "held", held[r.Bucket], "counted", r.Granted, "over", over, "max", r.Max)
			} else {
				l.log.Warn("reconcile: sessions do not fit under max; closing them (lease_loss close)",
					"bucket", r.Bucket, "held", held[r.Bucket], "counted", r.Granted, "closing", over, "max", r.Max)
				l.shed(b.id, int(r.Granted))
			}
		}
	}
	return nil
}

// shed asks the app to close sessions of bucket until keep of our slots
// of it are in use.
func (l *Redis) shed(bucket string, keep int) int {
	if l.o.Shed == nil {
		return 0
	}
	n := l.o.Shed(bucket, max(keep, 0))
	if n > 0 {
		l.log.Warn("lease: closed sessions over this instance's share", "bucket", bucket, "closed", n, "keep", keep)
	}
	return n
}

// checkLease, run by the supervisor: past the lease's end (LeaseDeadline)
// a connected limiter goes to fallback, since a reaper may fence it at any
// moment. It returns how long until the deadline (0: none or passed).
func (l *Redis) checkLease() time.Duration {
	dl := l.LeaseDeadline()
	if dl.IsZero() {
		return 0
	}
	now := l.opts.clock.Now()
	if now.Before(dl) {
		return dl.Sub(now)
	}
	if l.State() == StateConnected {
		l.leaseOK.Store(false)
		l.toFallback("lease", "", fmt.Errorf("lease expired: no renewal for %s (heartbeat_ttl %s, margin %s)",
			now.Sub(dl)+l.o.HeartbeatTTL-l.o.LeaseMargin, l.o.HeartbeatTTL, l.o.LeaseMargin))
	}
	return 0
}

// watchLease is the fence, in its own goroutine so that no Redis call
// can delay it: past the lease's end plus ReclaimAfter (when reapers may
// start giving this instance's slots above its share away), with
// lease_loss close, it closes the sessions over the fallback share, and
// keeps doing so every 100 ms until the lease is renewed.
func (l *Redis) watchLease() {
	defer l.wg.Done()
	clk := l.opts.clock
	t := clk.NewTimer(l.o.PollInterval)
	for {
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		t = clk.NewTimer(l.fenceOnce(clk.Now()))
	}
}

// fenceOnce is one round of watchLease; it returns when to look again.
func (l *Redis) fenceOnce(now time.Time) time.Duration {
	const every = 100 * time.Millisecond
	dl := l.LeaseDeadline()
	if dl.IsZero() || l.o.LeaseLossKeep {
		return l.o.PollInterval
	}
	shedAt := dl.Add(l.o.ReclaimAfter)
	if now.Before(shedAt) {
		return min(shedAt.Sub(now), l.o.PollInterval)
	}
	connected := l.State() == StateConnected
	// Past the lease's end + ReclaimAfter + ForgetAfter a reaper may have
	// forgotten this instance (parked slots given back): Redis counts
	// nothing for it any more, so, unless every peer confirmed a full
	// outage (nobody takes from Redis), it keeps nothing. The first
	// reaper's forget comes at the earliest at the lease's end in Redis
	// (≥ dl + LeaseMargin) + ReclaimAfter + ForgetAfter.
	forgotten := !now.Before(shedAt.Add(l.o.ForgetAfter))
	d := l.divisor()
	rank := int(l.rank.Load())
	for _, b := range *l.buckets.Load() {
		share := b.share.Load()
		if connected {
			// The supervisor has not moved to fallback yet (a Redis call
			// holds it up): the share it is about to fix (close: what
			// Redis counts for us, at most the exact share).
			share = min(fallbackShare(b.max.Load(), 0, 0, d, rank, false), max(b.held.Load()-b.uncounted.Load(), 0))
		}
		if forgotten {
			if b.counted.Swap(0) > 0 {
				l.log.Warn("lease: lost for longer than heartbeat_ttl + reclaim_after + forget_after: reapers may have forgotten this instance, "+
					"redis counts none of its sessions: closing every one (lease_loss close)", "bucket", b.id, "held", b.held.Load())
			}
			// Spared only if grown by its peers' confirmation (with a
			// lease deadline it has reached Redis, so growUnreached never
			// applied). One that grew because it saw no peer may have
			// seen only an empty Redis: a reaper that forgets it is a
			// peer it never saw.
			if connected || !l.grown.Load() || len(l.Peers()) == 0 {
				share = 0
				b.share.Store(0)
			}
		}
		if b.held.Load() > share {
			l.shed(b.id, int(share))
		}
	}
	return every
}
