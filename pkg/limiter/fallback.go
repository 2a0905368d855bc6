package limiter

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// RedisState is where the Redis limiter stands with Redis. The transitions
// (all made under Redis.mu held exclusively, so no acquire or release is
// half-way through one):
//
//	           start: reconcile ok                    any Redis call fails or times out
//	  ┌───────────────────────────► connected ──────────────────────────────────────┐
//	  │                               ▲   │  (acquire, release, poll), or Redis no  │
//	  │   reconcile ok after settle   │   │  longer knows this instance (reaped,    │
//	  │   (counts now exact)          │   │  restarted empty): "fallback"           │
//	  │                               │   ▼                                         ▼
//	new ──start: Redis down──────► reconciling ◄──── a probe (PING) answers ──── fallback
//	                                  │                                          ▲
//	                                  └───── the reconcile fails ────────────────┘
//
// connected: every acquire and release runs its script on Redis; the count
// in Redis is the truth. Releases do not hand slots to local waiters (so a
// freed slot is offered to every instance, and waiters elsewhere get their
// turn); the release script publishes, and waiters everywhere retry.
//
// fallback: Redis does not answer. The instance admits on a local share of
// each bucket, counting the slots it already holds, within its exact share
// of max (instance i of N ranked by id: floor(max/N) + 1 if i < max mod N;
// N is redis.fallback_divisor, or the ids in proxy:instances ∪
// proxy:fenced last seen, or redis.expected_instances before Redis was
// ever reached). With lease_loss close, no more than what Redis counts for
// it, unless every peer confirms a full outage (doc.go, "Partitions and
// full outages"); with keep, no more than what it held plus its exact
// share of the slots that were free when Redis was last seen. Releases
// are local. A probe loop tries Redis every ProbeInterval; the peer check
// runs in its own goroutine (watchPeers).
//
// reconciling: Redis answers again (possibly empty, restarted without
// persistence). The instance has run the register script: its hash is
// what it holds, lowered where Redis recorded more and re-acquired where it
// recorded less, but never past max (what does not fit stays uncounted and,
// with lease_loss close, is shed); max seeded if absent, the instance
// registered again. It stays here SettleTime, admitting only within
// min(share, what Redis now counts for it), so that every other live
// instance has time to notice Redis is back and reconcile too before anyone
// takes slots from Redis again; then it reconciles once more (releases made
// meanwhile) and is connected — unless that register finds this instance
// unlisted (coord.Registration.Fresh: Redis restarted empty or lost it
// meanwhile), in which case it settles again, as it does when a register
// made while connected (a new run_id) finds it unlisted. Tickets granted in fallback stay valid
// throughout: their release after reconnection is accounted by the hash the
// reconcile wrote.
type RedisState int32

const (
	// StateConnected: admission runs on Redis.
	StateConnected RedisState = iota + 1
	// StateFallback: Redis unreachable; local share.
	StateFallback
	// StateReconciling: Redis back; reconciled once, settling on the local
	// share before going back to Redis.
	StateReconciling
)

// String returns the state's name.
func (s RedisState) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateFallback:
		return "fallback"
	case StateReconciling:
		return "reconciling"
	}
	return fmt.Sprintf("RedisState(%d)", int32(s))
}

// errUnregistered: Redis no longer lists this instance in proxy:instances
// (a reaper reclaimed it, or Redis restarted empty without the connection
// noticing). Its holdings are unknown to Redis until it reconciles.
var errUnregistered = errors.New("this instance is not in proxy:instances (reaped, or redis lost its data)")

// ExactShare is instance rank's part of n when total is split among n
// instances ranked 0..n-1 by id: floor(total/n), plus 1 for the first
// total mod n ranks, so the parts add up to exactly total. A rank < 0
// (unknown: the instance never saw the others) gets floor(total/n) only.
// n <= 0 gets 0.
func ExactShare(total int64, n, rank int) int64 {
	if n <= 0 || total <= 0 {
		return 0
	}
	s := total / int64(n)
	if rank >= 0 && int64(rank) < total%int64(n) {
		s++
	}
	return s
}

// fallbackShare is the local cap of a bucket while Redis is unreachable:
// the instance's exact share of max (ExactShare), and, when the count was
// seen, no more than held plus its exact share of the slots that were
// free (max - count). Summed over instances that saw the same count, the
// second bound is count + free = max: the holdings at the moment of
// fallback count against the share. divisor 0: no share.
func fallbackShare(maxConns, count, held int64, divisor, rank int, countKnown bool) int64 {
	if divisor <= 0 {
		return 0
	}
	share := ExactShare(maxConns, divisor, rank)
	if countKnown {
		free := max(maxConns-count, 0)
		share = min(share, held+ExactShare(free, divisor, rank))
	}
	return max(share, 0)
}

// formatShares renders bucket=share pairs for a log line.
func formatShares(m map[string]int64) string {
	var b strings.Builder
	first := true
	for _, id := range sortedKeys(m) {
		if !first {
			b.WriteByte(' ')
		}
		first = false
		fmt.Fprintf(&b, "%s=%d", id, m[id])
	}
	return b.String()
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
