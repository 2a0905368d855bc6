package limiter

// Confirmed grants (config redis.wait_replicas; issue 12): Redis
// replicates asynchronously, so in a Sentinel failover a slot the old
// primary granted just before its replica was promoted can be missing on
// the new primary, which then grants it again: the backend is one session
// over max until the instances re-assert their holdings. With
// WaitReplicas > 0 the acquire script is followed, on the same connection,
// by WAIT (coord.AcquireSlotsConfirmed). A grant that fewer replicas than
// required acknowledged within the op timeout is given back at once
// (coord.ReleaseSlotsAt) and treated as an acquire error: the limiter
// falls back (see fallback.go), never admitting on that grant, and the
// register on the way back makes Redis agree with what it holds.
//
// Required replicas: min(WaitReplicas, K), K the replicas the primary was
// last seen with: those attached to it in INFO replication at each poll
// (online or still in a full sync: coord.ReplicasIn), and
// each WAIT's reply; a drop of K is believed only after it has been seen
// for ReplicaHold. A replica in a full sync counts because Sentinel does
// promote it (its link has been down for less than 10 × down-after), with
// the data it had before the sync: a grant made meanwhile without WAIT
// would be lost by that failover and granted again
// (TestReproFailoverDuringResync in tools/cluster: 5 and 7 of max 4 when
// only online replicas counted). It acknowledges nothing, so grants fail
// their WAIT and are given back until it is online: the instance flaps
// into fallback (admitting on its local share) for the length of the sync.
//
// That includes the first sync from a new primary (a restart, a failover
// done). There the replica's data is older than every register made on
// the primary, so a promotion fences every instance that follows it (the
// register epoch) until it has re-asserted its holdings; but not an
// instance still writing to the deposed primary (a link a load balancer
// has not cut yet): the sessions it was granted there are on no server
// the others use, and they would take those slots again
// (TestReproFailoverAfterEmptyRestart in tools/cluster, proxy-1 behind a
// TCP proxy: 5 of max 4 when first-sync grants stood). So they fail too.
// What the first sync changes is the cost of failing: while the primary
// is new and no replica has been seen online on it (replicaView.fresh),
// the script is followed, in the same round trip, by INFO instead of a
// WAIT that could only time out, and only once INFO shows a replica
// online does the grant WAIT for its acknowledgement
// (coord.AcquireSlotsConfirmedRetry); so also a replica that attached and
// came online between two polls is waited for. The first primary a
// process sees is never fresh (its history is unknown).
//
// The hold is what keeps the failover exact: at the
// promotion the old primary reports 0 replicas while clients still write
// to it; those grants must still wait (and fail). The cost, the trade-off:
// when a replica really goes down, every acquire fails its WAIT (the
// instance flaps into fallback, admitting on its local share) for up to
// ReplicaHold; after that the instance waits only for the replicas left
// (none: no WAIT), i.e. it trades the failover guarantee for availability
// while the primary has no replica, which is also when Sentinel has no
// replica to promote. A different primary (new run_id: a failover done,
// or a restart) is believed at once: its replicas are what it reports. A
// failover whose old primary is dead leaves the new one with no replica:
// nothing to wait for (INFO only, the grant stands), and nobody to
// promote; the old one back as a replica is in the first sync from it
// (above): grants fail until it is online.

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
)

// errUnconfirmed: a granted acquire that too few replicas acknowledged.
var errUnconfirmed = errors.New("acquire not confirmed by enough replicas (WAIT)")

// replicaView is K of the file comment.
type replicaView struct {
	mu    sync.Mutex
	known bool
	k     int
	at    time.Time
	runID string
	// fresh: the current primary was first seen as a different primary
	// (a new run_id) with no replica online, and none has been seen online
	// since: a replica attached to it is in its first full sync from it.
	// false for the first primary a process sees (its history unknown).
	fresh bool
}

// note records that the primary (runID; "": the current one) was seen
// with n replicas attached, online of them online, at now.
func (v *replicaView) note(runID string, n, online int, now time.Time, hold time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	newServer := runID != "" && v.runID != "" && runID != v.runID
	if runID != "" {
		v.runID = runID
	}
	switch {
	case newServer:
		v.fresh = online == 0
	case online > 0:
		v.fresh = false
	}
	if !v.known || newServer || n >= v.k || now.Sub(v.at) >= hold {
		v.known, v.k, v.at = true, n, now
	}
}

// firstSync reports whether the current primary is fresh (see the field).
func (v *replicaView) firstSync() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fresh
}

// required is min(want, K); want while K is not known yet.
func (v *replicaView) required(want int) int {
	if want <= 0 {
		return 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.known {
		return want
	}
	return min(want, v.k)
}

// replicasRequired is how many replicas must acknowledge a grant now.
func (l *Redis) replicasRequired() int { return l.replicas.required(l.o.WaitReplicas) }

// waitFor is WAIT's timeout: within the op timeout, with room for the
// round trip.
func (l *Redis) waitFor() time.Duration { return max(l.o.OpTimeout*3/5, coord.MinWaitTimeout) }

// acquireConfirmed runs the acquire script, confirmed by WAIT when
// replicas are required. An unconfirmed grant is given back and reported
// as errUnconfirmed. Called with l.mu held shared, connected.
func (b *redisBucket) acquireConfirmed(queued, want int) (coord.AcquireResult, error) {
	l := b.l
	need := l.replicasRequired()
	waitFor, retry := l.waitFor(), time.Duration(0)
	if l.replicas.firstSync() {
		// No replica online yet on this new primary: one in its first sync
		// acknowledges nothing, so do not wait for it; INFO, read right
		// after the script in the same round trip, tells whether one is
		// online now, and then the grant waits for its acknowledgement
		// (retry); else it is given back below. Even with none attached at
		// the last look (K 0): one may have attached and come online
		// since.
		need = max(need, min(l.o.WaitReplicas, 1))
		waitFor, retry = 0, waitFor
	}
	ctx, cancel := l.opCtx()
	r, err := coord.AcquireSlotsConfirmedRetry(ctx, l.client, l.InstanceID(), b.id, int(b.seed.Load()), queued, want, l.staleWaiting(),
		l.regEpoch.Load(), need, waitFor, retry)
	cancel()
	if err != nil || need == 0 {
		return r, err
	}
	l.replicas.note("", int(r.Replicas), int(r.Replicas), time.Now(), l.o.ReplicaHold)
	if r.Status != coord.AcquireGranted || r.Replicas >= int64(need) {
		return r, nil
	}
	if r.ServerInfo != "" {
		// The granting server's run_id and replicas, read on the acquire's
		// connection: a different primary (a failover done: its replicas
		// are what it reports) is believed at once, without waiting for a
		// poll, which an instance flapping between fallback and connected
		// might never run; a replica gone past the hold too.
		l.noteReplicas(r.ServerInfo, r.ReplicationInfo)
		if r.Replicas >= int64(l.replicasRequired()) {
			return r, nil
		}
	}
	ctx, cancel = l.opCtx()
	released, count, rerr := coord.ReleaseSlotsAt(ctx, l.client, l.InstanceID(), b.id, l.regEpoch.Load(), int(r.Granted))
	cancel()
	l.op("release", rerr)
	l.log.Warn("redis: a grant was not confirmed by enough replicas; gave it back, not admitting on it",
		"bucket", b.id, "granted", r.Granted, "replicas_acked", r.Replicas, "required", need,
		"given_back", released, "count", count, "first_sync", l.replicas.firstSync(), "release_err", rerr)
	return r, fmt.Errorf("%w: %d of %d acknowledged", errUnconfirmed, r.Replicas, need)
}
