package limiter

// Redis restarted empty while a peer is cut off from it (a double fault):
// the peer cannot re-assert its holdings, and nothing in the new Redis
// counts its sessions. So each instance remembers what its peers were
// seen holding (read at every poll), and a register that finds this
// instance unknown to Redis (Fresh) records, for each peer of its view
// that Redis does not know at all, what it was last seen holding
// (coord.ReserveAbsent): counted, fenced, parked and forgotten by the
// reapers like any lost lease. A peer that reaches Redis again replaces
// that record with what it holds (its register); one cut off longer sheds
// everything before the record is forgotten (fenceOnce). See doc.go,
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

// absentPeers are the candidates for ReserveAbsent, with what each was
// seen holding: the peers of the view (seen within the view window) and
// the members of the last read of proxy:instances ∪ proxy:fenced if it is
// no older than heartbeat_ttl + reclaim_after + forget_after (a peer cut
// off as long ago may still hold sessions; Redis may have been out for
// longer than the view window). A peer never read (it registered just
// before Redis was lost) is recorded at its exact share of each bucket,
// its rank among the candidates and this instance.
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
	all := slices.Sorted(maps.Keys(ids))
	d := l.o.FallbackDivisor
	if d <= 0 {
		d = len(all)
	}
	var out []coord.Absent
	for rank, id := range all {
		if id == self {
			continue
		}
		a := coord.Absent{ID: id, Held: map[string]int64{}}
		if rec, ok := l.peerHeld[id]; ok {
			for b, p := range rec {
				a.Held[b] = p.n
			}
		} else {
			for _, b := range *l.buckets.Load() {
				a.Held[b.id] = fallbackShare(b.max.Load(), 0, 0, d, rank, false)
			}
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
			"what they were last seen holding stays counted for them, fenced, until they register again or the reapers forget them",
			"instances", ids, "held", held)
	}
	return nil
}
