package limiter

// Redis restarted empty while a peer is cut off from it (a double fault):
// the peer cannot re-assert its holdings, and nothing in the new Redis
// counts its sessions. So a register that finds this instance unknown to
// Redis (Fresh) records, for each peer of its view that Redis does not
// know at all, that it holds all of every bucket (coord.ReserveAbsent):
// counted, fenced, parked (down to its exact share, once its own fence has
// shed down to that) and forgotten by the reapers like any lost lease. A
// peer that reaches Redis again replaces that record with what it holds
// (its register); one cut off longer sheds everything before the record
// is forgotten (fenceOnce). The view is read at every poll and, while this
// instance settles, every probe interval (observe). See doc.go,
// "Partitions and full outages".

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// heldSeen is the most a peer was seen holding of a bucket within the
// view window, and when.
type heldSeen struct {
	n  int64
	at time.Time
}

// peerHashCmds are the poll's reads of each peer's conns hash, in the
// order of the ids returned.
func (l *Redis) peerHashCmds(c rueidis.Client) ([]string, rueidis.Commands) {
	ids := slices.Sorted(maps.Keys(l.Peers()))
	cmds := make(rueidis.Commands, 0, len(ids))
	for _, id := range ids {
		cmds = append(cmds, c.B().Hgetall().Key(coord.KeyConns(id)).Build())
	}
	return ids, cmds
}

// notePeerHeld records what the poll read in each peer's conns hash:
// per bucket the most seen within the view window (the peer may have
// acquired more since the last read; its recent peak covers that better
// than its last value).
func (l *Redis) notePeerHeld(ids []string, res []rueidis.RedisResult) {
	now := l.opts.clock.Now()
	l.viewMu.Lock()
	defer l.viewMu.Unlock()
	if l.peerHeld == nil {
		l.peerHeld = map[string]map[string]heldSeen{}
	}
	for i, id := range ids {
		if i >= len(res) {
			break
		}
		m, err := res[i].AsStrMap()
		if err != nil {
			continue
		}
		rec := l.peerHeld[id]
		if rec == nil {
			rec = map[string]heldSeen{}
			l.peerHeld[id] = rec
		}
		for b, v := range m {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			if p, ok := rec[b]; !ok || n >= p.n || now.Sub(p.at) > l.viewWindow() {
				rec[b] = heldSeen{n: n, at: now}
			}
		}
		for b, p := range rec {
			if _, ok := m[b]; !ok && now.Sub(p.at) > l.viewWindow() {
				delete(rec, b)
			}
		}
	}
	for id := range l.peerHeld {
		if _, ok := l.seen[id]; !ok {
			delete(l.peerHeld, id)
		}
	}
}

// absentPeers are the candidates for ReserveAbsent, with what each is
// recorded holding: the peers of the view (seen within the view window)
// and the members of the last read of proxy:instances ∪ proxy:fenced if it
// is no older than heartbeat_ttl + reclaim_after + forget_after (a peer
// cut off as long ago may still hold sessions; Redis may have been out for
// longer than the view window). Each is recorded holding all of every
// bucket (max): what it was last seen holding is up to a poll old, and it
// may have been granted anything since, up to what the old Redis had free
// (the 10-minute soak met exactly that: a peer seen holding 1 held 3). The
// reapers park the record down to the peer's exact share heartbeat_ttl +
// reclaim_after after it was made, when the peer's own fence has shed what
// it held over that share; the peer's register replaces it at once. For a
// bucket this instance does not configure, what the peer was seen holding.
func (l *Redis) absentPeers() []coord.Absent {
	now := l.opts.clock.Now()
	self := l.InstanceID()
	l.viewMu.Lock()
	defer l.viewMu.Unlock()
	ids := map[string]bool{self: true}
	for id, at := range l.seen {
		if now.Sub(at) <= l.viewWindow() {
			ids[id] = true
		}
	}
	if now.Sub(l.lastIDsAt) <= l.viewWindow()+l.o.ForgetAfter {
		for _, id := range l.lastIDs {
			ids[id] = true
		}
	}
	var out []coord.Absent
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if id == self {
			continue
		}
		a := coord.Absent{ID: id, Held: map[string]int64{}}
		for b, p := range l.peerHeld[id] {
			a.Held[b] = p.n
		}
		for _, b := range *l.buckets.Load() {
			a.Held[b.id] = max(a.Held[b.id], b.max.Load())
		}
		out = append(out, a)
	}
	return out
}

// reserveAbsent, after a register that found this instance unknown to
// Redis, records the peers of its view that Redis does not know either
// (see the file comment).
func (l *Redis) reserveAbsent(ctx context.Context) error {
	absent := l.absentPeers()
	ids, err := coord.ReserveAbsent(ctx, l.client, l.o.HeartbeatTTL, absent)
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		held := map[string]map[string]int64{}
		for _, a := range absent {
			if slices.Contains(ids, a.ID) {
				held[a.ID] = a.Held
			}
		}
		l.log.Warn("reconcile: redis does not know instances seen recently (it restarted empty?): "+
			"they are counted as holding all of each bucket (they may hold anything), fenced, until they register again or the reapers park them at their share",
			"instances", ids, "held", held)
	}
	return nil
}

// observe reads the membership (proxy:instances ∪ proxy:fenced, and the
// peers' addresses) into the view while this instance settles, when the
// poll does not run: a peer that registers during the settle and is cut
// off before the next poll must still be in the view if Redis then
// restarts empty (reserveAbsent). An error is left to the reconcile.
func (l *Redis) observe() {
	ctx, cancel := l.opCtx()
	defer cancel()
	l.noteMembership(l.client.DoMulti(ctx, l.membershipCmds()...))
}

// membershipCmds read proxy:instances ∪ proxy:fenced and proxy:peers.
func (l *Redis) membershipCmds() rueidis.Commands {
	c := l.client
	return rueidis.Commands{c.B().Sunion().Key(coord.KeyInstances, coord.KeyFenced).Build(), c.B().Hgetall().Key(coord.KeyPeers).Build()}
}

// noteMembership records the answers to membershipCmds (noteMembers);
// nothing if the membership could not be read.
func (l *Redis) noteMembership(res []rueidis.RedisResult) {
	ids, err := res[0].AsStrSlice()
	if err != nil {
		return
	}
	addrs, err := res[1].AsStrMap()
	if err != nil {
		addrs = nil
	}
	l.noteMembers(ids, addrs)
}
