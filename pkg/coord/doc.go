// Package coord owns the Redis side of the shared caps in one small place:
// the key layout (keys.go: the runbook's keys), and
// the Lua scripts every instance runs on them with their Go wrappers —
// acquire, release and the fairness entry (scripts.go); the lease
// scripts: register, heartbeat renewal, and the reaper's reclaim steps
// (lease.go). Each script runs atomically in Redis, so no interleaving of
// instances can let a count exceed its max, drop below 0, or reclaim a
// lease twice.
//
// It holds no state and starts nothing: the limiter (admission, fallback,
// fencing) and the registry (heartbeat, reaper, leave) call it with the
// client package redisconn owns.
package coord
