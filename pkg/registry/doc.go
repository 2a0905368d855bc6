// Package registry keeps this instance's lease among the live tdsgate
// instances in Redis (the layout in pkg/coord/keys.go) and reclaims the slots of dead
// ones (the scripts are package coord's):
//
//   - heartbeat: every heartbeat_interval it renews
//     proxy:instance:<id>:heartbeat ("<incarnation> <time>", TTL
//     heartbeat_ttl), only while the lease is still this incarnation's
//     (coord.RenewLease), and reports the send time of each successful
//     renewal (Renewed): the holder's lease deadline runs from it. A lost
//     lease (expired and fenced, claimed by a restarted process, Redis
//     restarted empty) is never re-created here: Missing makes the limiter
//     re-register through its register script, which re-acquires the
//     instance's slots instead of re-adding them.
//   - reaper: every reaper_interval, on every instance, one step of the
//     reclaim script (coord.ReapInstance) for each member of
//     proxy:instances whose heartbeat is gone and each member of
//     proxy:fenced: fence it (out of proxy:instances, slots still counted:
//     it may be frozen or cut off), park it after reclaim_after (slots above
//     its fallback share given back), forget it after forget_after (the
//     rest). The script checks the expiry and the incarnation itself, so
//     of several reapers exactly one takes each step, and a re-registered
//     instance is never reclaimed.
//   - leave: on a clean shutdown, after the sessions drained, the instance
//     gives back whatever its incarnation still holds and removes its keys
//     and membership at once, instead of waiting for a reaper.
//
// Registration itself (SADD and the first heartbeat) is done by the
// limiter's register script, so that an instance never appears in the set
// with counts Redis does not know.
//
// Subpackage redistest runs real redis-server and redis-sentinel processes
// for tests: plain, TLS (generated CA and certificates), ACL users,
// replicas, and a Sentinel setup with failover.
package registry
