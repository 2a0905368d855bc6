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
// each bucket, counting the slots it already holds: share = max / divisor
// (divisor: redis.fallback_divisor, or the live instances last seen, at
// least 1), and no more than what it held plus its part (1/divisor) of the
// slots that were free when Redis was last seen. The second bound is what
// keeps the cap exact across instances when they all lose Redis at once:
// the shares of what was free add up to at most what was free. Releases
// are local. A probe loop tries Redis every ProbeInterval.
//
// reconciling: Redis answers again (possibly empty, restarted without
// persistence). The instance has run the reconcile script: its hash is
// exactly what it holds, the counts moved by the difference, max seeded if
// absent, the instance registered again. It stays here SettleTime, admitting
// only within min(share, what it told Redis), so that every other live
// instance has time to notice Redis is back and reconcile too before anyone
// takes slots from Redis again; then it reconciles once more (releases made
// meanwhile) and is connected. Tickets granted in fallback stay valid
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

// fallbackShare is the local cap of a bucket while Redis is unreachable:
// max / divisor, and, when the count was seen, no more than held plus
// (max - count) / divisor. held and count are as last seen.
func fallbackShare(maxConns, count, held int64, divisor int, countKnown bool) int64 {
	d := int64(max(divisor, 1))
	share := maxConns / d
	if countKnown {
		free := max(maxConns-count, 0)
		share = min(share, held+free/d)
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
