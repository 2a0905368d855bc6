package limiter

// Partitions and full outages (doc.go): in fallback with lease_loss close
// an instance admits only within what Redis counts for it, unless every
// peer confirms that its own lease is lost too (Redis is down for
// everyone): then it may grow to its exact share. The peers are asked
// through GET /peer/lease (package admin), whose answer is PeerLease.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// PeerLease is this instance's answer to a peer's probe: its id, its
// incarnation and whether its lease is lost (Live false): it is in
// fallback and past its lease deadline, so it admits from nothing Redis
// could hand to another instance.
type PeerLease struct {
	Instance    string
	Incarnation string
	Live        bool
	// View is the digest of the instance's view of the instances (the
	// ids its fallback shares split max among): a grown share is only
	// safe if every instance splits among the same ids.
	View string
}

// PeerLease reports this instance's lease for GET /peer/lease: lost
// (Live false) only while it is in fallback and its lease deadline has
// passed (or it never held one). Reconciling counts as live: it has
// reached Redis and will admit from it after its settle time.
func (l *Redis) PeerLease() PeerLease {
	pl := PeerLease{Instance: l.InstanceID(), Incarnation: l.o.Incarnation, Live: true, View: l.View()}
	if l.State() == StateFallback {
		dl := l.LeaseDeadline()
		if dl.IsZero() || !l.opts.clock.Now().Before(dl) {
			pl.Live = false
		}
	}
	return pl
}

// Grown reports whether this instance, in fallback, admits up to its
// exact shares because every peer confirmed a full outage.
func (l *Redis) Grown() bool { return l.grown.Load() }

// noteMembers records the ids of proxy:instances ∪ proxy:fenced just
// read (addrs: proxy:peers, each id's /peer/lease address; nil: not
// read). The view the fallback shares and the outage check use is every
// id seen within viewWindow (itself included), not only the last read: a
// read right after Redis restarted empty lists only the instances that
// registered again so far (at worst this one alone), and an instance
// that falls back before its next poll must not take that for the
// membership. N is the view's size, the rank this instance's place in
// it, and the peers the other ids with their last advertised address.
func (l *Redis) noteMembers(ids []string, addrs map[string]string) {
	now := l.opts.clock.Now()
	self := l.InstanceID()
	l.viewMu.Lock()
	defer l.viewMu.Unlock()
	if l.seen == nil {
		l.seen, l.addrs = map[string]time.Time{}, map[string]string{}
	}
	l.seen[self] = now
	l.lastIDs, l.lastIDsAt = slices.Clone(ids), now
	for _, id := range ids {
		l.seen[id] = now
	}
	for id, a := range addrs {
		if a != "" {
			l.addrs[id] = a
		}
	}
	for id, at := range l.seen {
		if id != self && now.Sub(at) > l.viewWindow() {
			delete(l.seen, id)
			delete(l.addrs, id)
		}
	}
	view := slices.Sorted(maps.Keys(l.seen))
	l.live.Store(int64(len(view)))
	l.rank.Store(int64(slices.Index(view, self)))
	peers := make(map[string]string, len(view))
	for _, id := range view {
		if id != self {
			peers[id] = l.addrs[id]
		}
	}
	l.peers.Store(&peers)
	d := viewDigest(view)
	l.view.Store(&d)
}

// viewWindow is how long an id seen in proxy:instances ∪ proxy:fenced
// stays in this instance's view after it was last seen: a heartbeat TTL
// plus reclaim_after (a reaper keeps a dead instance listed at least that
// long anyway).
func (l *Redis) viewWindow() time.Duration { return l.o.HeartbeatTTL + l.o.ReclaimAfter }

// viewDigest names a view (sorted ids): peers grow only when every one
// reports the same view, so that their exact shares are of one split.
func viewDigest(ids []string) string {
	h := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return hex.EncodeToString(h[:8])
}

// View is the digest of this instance's current view of the instances
// (see noteMembers), as /peer/lease reports it.
func (l *Redis) View() string {
	if v := l.view.Load(); v != nil {
		return *v
	}
	return viewDigest([]string{l.InstanceID()})
}

// Peers are the other instances of this instance's view and the
// /peer/lease address each advertised ("" none).
func (l *Redis) Peers() map[string]string {
	if p := l.peers.Load(); p != nil {
		return maps.Clone(*p)
	}
	return map[string]string{}
}

// growAt is the earliest moment this instance may grow past what Redis
// counts for it: its lease deadline + ReclaimAfter (when its peers, whose
// leases ended within about a heartbeat interval of its own, have shed
// what they held over their exact shares) + one heartbeat interval.
func (l *Redis) growAt() time.Time {
	dl := l.LeaseDeadline()
	if dl.IsZero() {
		return dl
	}
	return dl.Add(l.o.ReclaimAfter + l.o.HeartbeatInterval)
}

// unreachedGrowAt is when an instance that never reached Redis may admit
// on its share (lease_loss close): its start + HeartbeatTTL + ReclaimAfter
// + HeartbeatInterval. Every instance that lost Redis before this one
// started had its last renewal before that start, so it has closed what
// it held over its own share by then (its lease deadline + ReclaimAfter,
// the fence), with a heartbeat interval to spare; until then those
// sessions may still be open, and a share taken at once would add to
// them (TestReproStartDuringOutageWhilePeersHold: 3 sessions for a max of
// 2). Peers cannot be asked: their addresses are in Redis.
func (l *Redis) unreachedGrowAt() time.Time {
	return l.start.Add(l.o.HeartbeatTTL + l.o.ReclaimAfter + l.o.HeartbeatInterval)
}

// reached reports whether this instance has ever registered in Redis: a
// full reconcile (everConnected), or at least one register (its lease
// deadline is set) — then Redis counted what it held, the reapers fence,
// park and forget it like any lost lease, and in fallback it is an
// instance that lost Redis (min(exact, counted), its fence), not one that
// never reached it (the nemesis, 2026-12-02: an instance started during an
// outage, cut off during its first settle, kept its never-reached share
// past its forget time).
func (l *Redis) reached() bool {
	return l.everConnected.Load() || !l.LeaseDeadline().IsZero()
}

// growUnreached raises the shares of an instance that never reached Redis
// to its floor shares, once past unreachedGrowAt (still in fallback).
func (l *Redis) growUnreached() {
	l.mu.Lock()
	if l.State() != StateFallback || l.reached() || l.grown.Load() {
		l.mu.Unlock()
		return
	}
	shares := map[string]int64{}
	for _, b := range *l.buckets.Load() {
		s := b.exact.Load()
		b.share.Store(s)
		shares[b.id] = s
	}
	l.grown.Store(true)
	l.mu.Unlock()
	l.log.Warn("fallback: redis never reached, and every instance that lost it before this one started has shed to its share by now: admitting on this instance's share",
		"divisor", l.divisor(), "shares", formatShares(shares))
	l.wakeAll()
}

// watchPeers is the full-outage check, in its own goroutine so that no
// Redis call delays it: in fallback with lease_loss close, every
// PeerProbeInterval once past growAt, it asks every peer whether its
// lease is lost too; the shares grow to the exact ones if all say so and
// shrink back (shedding) as soon as one does not.
func (l *Redis) watchPeers() {
	defer l.wg.Done()
	clk := l.opts.clock
	for {
		t := clk.NewTimer(l.peerRound(clk.Now()))
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// peerRound is one round of watchPeers; it returns when to look again.
func (l *Redis) peerRound(now time.Time) time.Duration {
	every := l.o.PeerProbeInterval
	if l.o.LeaseLossKeep || l.State() != StateFallback {
		return every
	}
	if !l.reached() {
		if at := l.unreachedGrowAt(); now.Before(at) {
			return min(every, max(at.Sub(now), time.Millisecond))
		}
		l.growUnreached()
		return every
	}
	peers := l.Peers()
	if len(peers) > 0 {
		// Alone, nobody else can take a slot: grow at once. With peers,
		// wait until the over-share ones have shed.
		if at := l.growAt(); at.IsZero() || now.Before(at) {
			return min(every, max(at.Sub(now), time.Millisecond))
		}
	}
	if !l.grown.Load() && !l.wantsGrowth() {
		return every
	}
	ok, why := l.confirmOutage(peers)
	l.setGrown(ok, why)
	return every
}

// wantsGrowth reports whether some bucket's share is below its exact
// share (else growing changes nothing: no probe needed).
func (l *Redis) wantsGrowth() bool {
	for _, b := range *l.buckets.Load() {
		if b.share.Load() < b.exact.Load() {
			return true
		}
	}
	return false
}

// confirmOutage asks every peer at once, within PeerProbeTimeout, whether
// its lease is lost. It is confirmed only if all answered "lost"; why
// names the first peer that did not.
func (l *Redis) confirmOutage(peers map[string]string) (ok bool, why string) {
	if len(peers) == 0 {
		return true, ""
	}
	if l.o.ProbePeer == nil {
		return false, "peers cannot be asked (no probe configured)"
	}
	mine := l.View()
	ctx, cancel := context.WithTimeout(l.ctx, l.o.PeerProbeTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var not []string
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		addr := peers[id]
		if addr == "" {
			not = append(not, id+": advertised no address (redis.peer_address)")
			continue
		}
		wg.Go(func() {
			lost, view, err := l.o.ProbePeer(ctx, id, addr)
			if err == nil && lost && view == mine {
				return
			}
			reason := id + ": lease live"
			switch {
			case err != nil:
				reason = id + ": " + err.Error()
			case lost:
				reason = id + ": another view of the instances (" + view + ", ours " + mine + ")"
			}
			mu.Lock()
			not = append(not, reason)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(not) > 0 {
		slices.Sort(not)
		return false, not[0]
	}
	return true, ""
}

// setGrown applies a round's verdict, if the limiter is still in
// fallback: grown, each share is the exact one; not, each share is
// min(exact, counted) and the sessions over it are closed.
func (l *Redis) setGrown(grow bool, why string) {
	l.mu.Lock()
	if l.State() != StateFallback || l.grown.Load() == grow {
		l.mu.Unlock()
		return
	}
	shares := map[string]int64{}
	d, rank := l.divisor(), int(l.rank.Load())
	for _, b := range *l.buckets.Load() {
		if grow {
			// The split every peer confirmed (same view): N and rank now.
			b.exact.Store(fallbackShare(b.max.Load(), 0, 0, d, rank, false))
		}
		s := b.exact.Load()
		if !grow {
			s = min(s, b.counted.Load())
		}
		b.share.Store(s)
		shares[b.id] = s
	}
	l.grown.Store(grow)
	l.mu.Unlock()
	if grow {
		l.log.Warn("fallback: every peer confirms its lease is lost too (redis is down for everyone): admitting up to the exact shares",
			"peers", len(l.Peers()), "view", l.View(), "shares", formatShares(shares))
		l.wakeAll()
		return
	}
	l.log.Warn("fallback: a peer does not confirm the outage (it may reach redis): back to what redis counts for this instance",
		"reason", why, "shares", formatShares(shares))
	for _, b := range *l.buckets.Load() {
		if b.held.Load() > shares[b.id] {
			l.shed(b.id, int(shares[b.id]))
		}
	}
}
