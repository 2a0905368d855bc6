package coord

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Confirmed acquires (issue 12, a Sentinel failover): Redis replicates
// asynchronously, so a slot the old primary granted just before a replica
// was promoted may be missing on the new primary, which grants it again.
// AcquireSlotsConfirmed runs the acquire script and WAIT on one
// connection: WAIT then counts the replicas that acknowledged the script's
// writes (and every earlier write of that connection). A grant fewer
// replicas than asked for acknowledged is not to be trusted: the caller
// gives the slots back (ReleaseSlotsAt) and does not admit on them.

// acquireSHA is the SHA1 of acquireLua, for a hand-built EVALSHA.
var acquireSHA = func() string {
	h := sha1.Sum([]byte(acquireLua))
	return hex.EncodeToString(h[:])
}()

// MinWaitTimeout is the shortest WAIT timeout AcquireSlotsConfirmed sends
// (WAIT 0 would block forever).
const MinWaitTimeout = time.Millisecond

// AcquireSlotsConfirmed is AcquireSlotsAt (epoch: see there) followed, on the same connection
// (a rueidis dedicated client: rueidis would send WAIT, a blocking
// command, on another pooled connection, where it would count nothing of
// the script's writes), by WAIT replicas waitFor. Replicas in the result
// is WAIT's reply: how many replicas acknowledged the script's writes; a
// grant fewer acknowledged also carries INFO server and INFO replication
// of the granting server (ServerInfo, ReplicationInfo), read on the same
// connection. With
// replicas <= 0 it is AcquireSlots (no WAIT, no extra round trip) and
// Replicas is 0. waitFor is clamped to at least MinWaitTimeout; keep it
// below ctx's deadline so WAIT answers before the context gives up.
func AcquireSlotsConfirmed(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax, queued, want int, stale time.Duration,
	epoch int64, replicas int, waitFor time.Duration) (AcquireResult, error) {
	return AcquireSlotsConfirmedRetry(ctx, c, instance, bucket, seedMax, queued, want, stale, epoch, replicas, max(waitFor, MinWaitTimeout), 0)
}

// AcquireSlotsConfirmedRetry is AcquireSlotsConfirmed, and if WAIT came
// back short while INFO replication shows at least replicas replicas
// online (one just came online: a short first WAIT did not give it time
// to acknowledge), WAIT again for retryWait on the same connection
// (retryWait 0: never); Replicas is then that WAIT's reply. With waitFor
// 0 the script is followed by INFO server and replication instead of
// WAIT, in the same round trip (ServerInfo, ReplicationInfo always set):
// Replicas is 0 unless INFO shows enough replicas online, and then the
// WAIT for retryWait's reply.
func AcquireSlotsConfirmedRetry(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax, queued, want int, stale time.Duration,
	epoch int64, replicas int, waitFor, retryWait time.Duration) (AcquireResult, error) {
	if replicas <= 0 {
		return AcquireSlotsAt(ctx, c, instance, bucket, seedMax, queued, want, stale, epoch)
	}
	keys, args := acquireKeysArgs(instance, bucket, seedMax, queued, want, stale, epoch)
	ms := strconv.FormatInt(max(waitFor, MinWaitTimeout).Milliseconds(), 10)
	var out AcquireResult
	err := c.Dedicated(func(d rueidis.DedicatedClient) error {
		// After the script: WAIT, or (waitFor 0) INFO server and
		// replication, in the same round trip.
		after := func() []rueidis.Completed {
			if waitFor <= 0 {
				return []rueidis.Completed{d.B().Info().Section("server").Build(), d.B().Info().Section("replication").Build()}
			}
			return []rueidis.Completed{d.B().Arbitrary("WAIT").Args(strconv.Itoa(replicas), ms).Build()}
		}
		res := d.DoMulti(ctx, append([]rueidis.Completed{
			d.B().Evalsha().Sha1(acquireSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()}, after()...)...)
		if err := res[0].Error(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			// First use on this server (a restart, a failover): send the body.
			res = d.DoMulti(ctx, append([]rueidis.Completed{
				d.B().Eval().Script(acquireLua).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()}, after()...)...)
		}
		vs, err := res[0].AsIntSlice()
		if err != nil {
			return err
		}
		if len(vs) != 5 {
			return fmt.Errorf("acquire script: %d values, want 5", len(vs))
		}
		out = AcquireResult{Status: AcquireStatus(vs[0]), Count: vs[1], Max: vs[2], Granted: vs[3], OthersWaiting: vs[4]}
		if waitFor > 0 {
			n, err := res[1].AsInt64()
			if err != nil {
				return fmt.Errorf("acquire: WAIT: %w", err)
			}
			out.Replicas = n
			if out.Status != AcquireGranted || n >= int64(replicas) {
				return nil
			}
			// Short: which server granted it, and with how many replicas?
			// Asked on the same connection, so it is the server that
			// granted, even if the client follows a new primary meanwhile.
			res = d.DoMulti(ctx, d.B().Info().Section("server").Build(), d.B().Info().Section("replication").Build())
		} else {
			res = res[1:]
		}
		server, err1 := res[0].ToString()
		repl, err2 := res[1].ToString()
		if err1 == nil && err2 == nil {
			out.ServerInfo, out.ReplicationInfo = server, repl
		}
		if _, online, ok := ReplicasIn(repl); out.Status == AcquireGranted && err2 == nil && ok && retryWait > 0 && online >= replicas {
			ms := strconv.FormatInt(max(retryWait, MinWaitTimeout).Milliseconds(), 10)
			if n, err := d.Do(ctx, d.B().Arbitrary("WAIT").Args(strconv.Itoa(replicas), ms).Build()).AsInt64(); err == nil {
				out.Replicas = n
			}
		}
		return nil
	})
	return out, err
}

// ReplicasIn counts the "slaveN:ip=...,state=...,..." lines of an INFO
// replication reply: attached whatever their state, online those with
// state=online (not in a full sync: wait_bgsave, send_bulk). false: not
// the INFO replication reply of a primary.
func ReplicasIn(repl string) (attached, online int, ok bool) {
	if !strings.Contains(repl, "connected_slaves:") {
		return 0, 0, false
	}
	for _, line := range strings.Split(repl, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, ":ip=") {
			attached++
			if strings.Contains(line, "state=online") {
				online++
			}
		}
	}
	return attached, online, true
}

// ReleaseSlotsAt gives back n slots of bucket held by instance
// (ReleaseSlotAt n times, in one round trip): an unconfirmed grant of
// AcquireSlotsConfirmed. released is how many Redis took back.
func ReleaseSlotsAt(ctx context.Context, c rueidis.Client, instance, bucket string, epoch int64, n int) (released int, count int64, err error) {
	if n <= 0 {
		return 0, 0, nil
	}
	ep := ""
	if epoch > 0 {
		ep = strconv.FormatInt(epoch, 10)
	}
	execs := make([]rueidis.LuaExec, n)
	for i := range execs {
		execs[i] = rueidis.LuaExec{Keys: []string{KeyCount(bucket), KeyConns(instance), KeyEpoch(instance), KeyWaiting(bucket)},
			Args: []string{bucket, ChanReleased(bucket), ep}}
	}
	for _, r := range releaseScript.ExecMulti(ctx, c, execs...) {
		vs, rerr := r.AsIntSlice()
		if rerr != nil {
			err = rerr
			continue
		}
		if len(vs) < 2 {
			err = fmt.Errorf("release script: %d values, want 2 or 3", len(vs))
			continue
		}
		if vs[0] == 1 {
			released++
		}
		count = vs[1]
	}
	return released, count, err
}
