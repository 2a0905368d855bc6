package limiter

import "github.com/tdsgate/tdsgate/pkg/coord"

// The Redis key names, as package coord defines them (kept here for the
// callers that spell them limiter.KeyCount and so on).
const (
	KeyPrefix          = coord.KeyPrefix
	KeyInstances       = coord.KeyInstances
	KeyFenced          = coord.KeyFenced
	KeyReleasedPattern = coord.KeyReleasedPattern
)

// KeyCount is coord.KeyCount.
func KeyCount(bucket string) string { return coord.KeyCount(bucket) }

// KeyMax is coord.KeyMax.
func KeyMax(bucket string) string { return coord.KeyMax(bucket) }

// KeyWaiting is coord.KeyWaiting.
func KeyWaiting(bucket string) string { return coord.KeyWaiting(bucket) }

// KeyConns is coord.KeyConns.
func KeyConns(instance string) string { return coord.KeyConns(instance) }

// KeyHeartbeat is coord.KeyHeartbeat.
func KeyHeartbeat(instance string) string { return coord.KeyHeartbeat(instance) }

// KeyIncarnation is coord.KeyIncarnation.
func KeyIncarnation(instance string) string { return coord.KeyIncarnation(instance) }

// KeyFence is coord.KeyFence.
func KeyFence(instance string) string { return coord.KeyFence(instance) }

// KeyRoute is coord.KeyRoute.
func KeyRoute(key string) string { return coord.KeyRoute(key) }
