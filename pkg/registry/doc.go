// Package registry keeps this instance's entry among the live tdsgate
// instances in Redis (DESIGN.md section 3) and reclaims the slots of dead
// ones:
//
//   - heartbeat: every heartbeat_interval it refreshes
//     proxy:instance:<id>:heartbeat with a TTL of heartbeat_ttl, as long as
//     the instance is still in proxy:instances. If it is not (a reaper took
//     it for dead, or Redis restarted empty), the registry does not simply
//     add it back: it calls Missing, and the limiter re-registers through
//     its reconcile script, which restores the instance's slot counts in
//     the same step.
//   - reaper: every reaper_interval, on every instance, it runs the reclaim
//     script for each member of proxy:instances whose heartbeat is gone.
//     The script checks the heartbeat itself, so of several reapers exactly
//     one reclaims a dead instance.
//   - leave: on a clean shutdown, after the sessions drained, the instance
//     gives back whatever it still holds and removes its keys and its
//     membership at once, instead of waiting for a reaper.
//
// Registration itself (SADD and the first heartbeat) is done by the
// limiter's reconcile script, so that an instance never appears in the set
// with counts Redis does not know.
package registry
