// Package limiter is tdsgate's admission control: it decides whether a
// client's login may take a backend connection now, must wait, or is refused.
//
// Each SQL Server instance behind the proxy is a bucket with a hard cap on
// connections (max_connections). A login takes one slot under its bucket's
// cap; the slot is a backend connection, so an idle pooled backend still holds
// one and a waiting client holds none. When the bucket is full the client
// waits in a bounded FIFO queue (max_queue_size); past queue_timeout it is
// refused with TDS error 50004, and when the queue is full it is refused at
// once with 50005.
//
// The package owns:
//
//   - the Limiter interface the frontend calls (Acquire, Snapshot, Close),
//     the Ticket a granted slot is held through, and the *Error that carries
//     the refusal codes (NumQueueTimeout, NumQueueFull);
//   - Queue, the FIFO wait queue with its per-waiter state machine. A Queue
//     does not count slots itself: it drives a SlotSource ("try to take a
//     slot", "give one back") and is woken when capacity may have appeared.
//     Every implementation shares it, so queueing, timeouts, cancellation and
//     the grant-versus-give-up race are solved once;
//   - Local, the implementation whose limits are local to this process: one
//     Queue per bucket over an in-memory counter, reloadable with Update;
//   - Redis, the implementation whose caps are shared by every proxy
//     instance: the same Queue over a SlotSource that runs Lua scripts
//     (package coord) on the keys of pkg/coord (keys.go). Waiters wake on a release anywhere (pub/sub from the
//     release script), on a change of max (client-side cache invalidation)
//     and on a slow poll. When Redis does not answer it keeps admitting on
//     a local share and reconciles when Redis is back, even empty: the
//     state machine is documented on RedisState (fallback.go);
//   - Clock and Timer, injected so tests drive queue timeouts with FakeClock.
//
// Waiting costs no goroutine: a waiter blocks in its own Acquire call, on a
// channel, its context and one timer.
//
// # Leases and fencing
//
// The lease scripts (package coord, lease.go) keep the cap when an instance stalls, is
// cut off from Redis, or runs twice:
//
//   - Each process draws an incarnation (coord.NewIncarnation). Its heartbeat key
//     is its lease and holds the incarnation; proxy:instance:<id>:incarnation
//     names whose holdings the conns hash records. The register script
//     claims an id (coord.ErrIDTaken if another incarnation's lease is alive: the
//     process then runs as coord.SiblingID and never touches the other's hash),
//     gives back an older incarnation's records, and makes the hash agree
//     with what the instance holds: lowered where Redis records more,
//     re-acquired — never past max — where it records less. The heartbeat
//     script renews only its own incarnation's lease and never re-creates a
//     lapsed one: a lost lease always goes back through register.
//   - The holder's lease ends, on its monotonic clock, at the send time of
//     its last successful renewal + HeartbeatTTL − LeaseMargin
//     (LeaseDeadline). Past it the limiter falls back to its share. Past
//     that deadline plus ReclaimAfter — the earliest a reaper may give any
//     of its slots away — with lease_loss close, the fence (watchLease, its own
//     goroutine) asks Shed to close the sessions over the fallback share,
//     and asks again every 100 ms until the lease is renewed.
//   - The reaper (package registry, coord.ReapInstance) fences an expired lease
//     (proxy:fenced; nothing given back), parks it after ReclaimAfter (the
//     slots above its exact share given back), forgets it after ForgetAfter.
//     A live sibling (same coord.BaseID, other incarnation: the process restarted)
//     makes an expired id forgotten at once.
//   - Slots that did not fit at a register are uncounted: releases consume
//     them first, without Redis, and the poll has Redis count them when room
//     frees. With lease_loss keep the backend may exceed max by at most
//     that many (RedisBucketStatus.Uncounted), shrinking. While reconciling
//     (settle time) the instance admits only within what the register
//     granted, never within what it held.
//   - A release that failed (timed out, link reset) may still run in Redis
//     later (a stalled link delivers it when it heals): it lowers the local
//     share by one, so the fallback never re-uses a slot Redis may have
//     given away.
//   - A different Redis answering (run_id: a Sentinel failover, a restart)
//     makes the instance re-register at once, so that count = the sum of the
//     hashes = the sessions open.
//   - Replication is asynchronous: a slot the old primary granted just
//     before a promotion may be missing on the new primary, which would
//     grant it again. With RedisOptions.WaitReplicas (config
//     redis.wait_replicas; 1 by default with Sentinel) a grant is
//     confirmed by WAIT on the acquire's connection; one that too few
//     replicas acknowledged within the op timeout is given back and
//     treated as an acquire error (fallback, then register). The replicas
//     required count those still in a full sync (Sentinel promotes them,
//     with their old data), so grants fail while one syncs, the first
//     sync after a restart or failover included. The replicas required
//     and the trade-off for a replica that is down or syncing:
//     redis_confirm.go.
//   - A register that finds the instance unlisted (coord.Registration.Fresh:
//     Redis restarted empty or failed over without it, or a reaper took
//     the id out) starts a settle time, also when it is the one that ends
//     a settle or a re-assertion while connected: the others may only now
//     be registering again, and until they have, Redis does not count
//     their sessions.
//   - A release carries the register epoch of the instance's last
//     register (coord.Register, coord.ReleaseSlotAt): one sent before a
//     re-register and delivered after it (a stalled link) changes nothing,
//     since that register already wrote what the instance held. So does
//     an acquire (coord.AcquireSlotsAt, AcquireSlotsConfirmed): one that
//     timed out (in doubt: not admitted on) and ran after the register
//     that followed would count a slot nobody holds until the next one.
//
// Fallback shares are exact (ExactShare): instance i of N ranked by id
// among proxy:instances ∪ proxy:fenced (as seen within heartbeat_ttl +
// reclaim_after) gets floor(max/N) + 1 if i < max mod N. An instance that never reached Redis uses ExpectedInstances
// (floor only) or, with 0, refuses with CodeNoShare (TDS error 50011);
// with lease_loss close only from its start + HeartbeatTTL + ReclaimAfter
// + HeartbeatInterval on (unreachedGrowAt, redis_peers.go), when the
// instances that lost Redis before it started have shed what they held
// over their own shares: admitting at once added its share to sessions
// they still held (TestReproStartDuringOutageWhilePeersHold in
// tools/cluster: 3 for a max of 2). Not covered: one started while it
// alone is cut off from Redis (its peers cannot be asked). "Never
// reached" ends at its first register, not at its first full reconcile
// (reached): from then on Redis counted its holdings and the reapers
// treat it like any instance, so in fallback it takes min(exact,
// counted) and its fence, never the never-reached share again
// (TestFaultDoubleFaultInFirstSettle: cut off during its first settle,
// then Redis restarted empty, it kept that share past its forget time).
// A first register that failed counts too when it re-asserted sessions:
// it may have run with its answer lost (registerInDoubtLocked,
// redis_fence.go; TestFaultRegisterInDoubt: 6 for a max of 4), so the
// instance takes a lease from when it was sent, and the floor share while
// it has not read the membership. How much of it an instance that lost Redis may use depends on
// lease_loss (next section).
//
// A released slot is given back by the frontend only once the backend
// has let go of the session (backend.Hangup): the backend's own count,
// the oracle of the cap, never sees a new session before the old one's
// close.
//
// # Partitions and full outages
//
// An instance that loses Redis cannot tell by itself "I am cut off" (the
// others still take every free slot through Redis) from "Redis is down
// for everyone" (nobody takes anything). So:
//
//   - lease_loss close: in fallback the instance admits no more than
//     min(exact share, counted), counted being what Redis counts for it as
//     last confirmed: what it held minus its uncounted slots when it left
//     Redis (the register's grant if it was reconciling), lowered by one
//     for each release in doubt. Those slots no other instance can be
//     granted, whatever happened: the reaper keeps them counted (parked:
//     down to the exact share) for reclaim_after + forget_after. A
//     partition of one instance is therefore exact, and so is the moment
//     right after a Redis kill (no share computed from a global count
//     that may be stale by a slot).
//   - It grows to its exact share only when a full outage is confirmed
//     (redis_peers.go): past its grow time — its lease deadline +
//     ReclaimAfter + HeartbeatInterval, when every peer (whose lease ended
//     within about one heartbeat interval of its own) has shed what it held
//     over its exact share — it asks every peer of the last-seen set
//     (proxy:instances ∪ proxy:fenced, itself excluded) at the address the
//     peer advertised in proxy:peers (config redis.peer_address) for GET
//     /peer/lease, within PeerProbeTimeout. Only if every one answers, as
//     itself, that its lease is lost (it is in fallback past its own
//     deadline), and reports the same view of the instances (a digest of
//     the ids it splits max among), are the shares the exact ones of that
//     view; they sum to max, and no one takes from Redis.
//   - The view is every id read in proxy:instances ∪ proxy:fenced within
//     heartbeat_ttl + reclaim_after, not only the last read: right after
//     Redis restarted empty, the first instance to register again reads
//     itself alone, and one that loses Redis before its next poll would
//     otherwise split max among one (the nemesis saw 19 of 10). N and the
//     rank of the exact shares come from the same view. It asks again every PeerProbeInterval and, as soon
//     as one peer answers "live" (it reached Redis: reconciling or
//     connected) or does not answer, it goes back to min(exact, counted)
//     and sheds the sessions over it. An instance that saw no peer grows
//     at once: nobody else can take a slot. One that saw a peer without an
//     address never grows (exact, less available).
//   - Why a grown instance never meets a returning peer above max: a peer
//     P that reaches Redis again registers (its hash = what it holds,
//     re-acquired never past max) and then settles for SettleTime,
//     admitting only within its register's grant, before it takes free
//     slots from Redis; from its register on it answers "live". A grown
//     instance G starts a probe round at most PeerProbeInterval after that,
//     the round ends within PeerProbeTimeout, and G then closes what it
//     holds above min(exact, counted) (allowance 250 ms). During P's
//     settle the backend holds at most what every instance held under its
//     exact share (sum ≤ max): P admits nothing past its grant, which
//     covers at most its exact share or what Redis counted for it. So
//     SettleTime > PeerProbeInterval + PeerProbeTimeout + 250 ms keeps G
//     back within what Redis counts for it before P admits past its
//     grant; NewRedis raises SettleTime to that (MinSettleTime) when peers
//     can be asked. Defaults: 1 s + 500 ms + 250 ms = 1.75 s < 2 s. The
//     argument assumes the peers share these settings.
//   - A partition longer than heartbeat_ttl + reclaim_after +
//     forget_after: the reapers forget the instance (its counted slots
//     given back). So past its lease deadline + ReclaimAfter +
//     RedisOptions.ForgetAfter (the earliest forget: the lease ends in
//     Redis no sooner than the deadline + LeaseMargin), with close, the
//     fence sets counted to 0 and closes every session of the instance —
//     unless its peers (one at least) confirmed a full outage (grown:
//     nobody reaps); when one answers "live" again the share goes to
//     min(exact, 0) = 0. One that grew because it saw no peer is not
//     spared: it may have seen only a Redis restarted empty, and a reaper
//     that forgets it is a peer it never saw.
//     Its register when the partition heals is Fresh (re-acquires, never
//     past max, from nothing).
//   - Redis restarted empty while an instance A is cut off from it (a
//     double fault): A cannot re-assert its holdings, and the others
//     re-register on a Redis that counts none of A's sessions. A register
//     that is Fresh therefore records, for each peer of its view that
//     Redis does not know at all (no membership, heartbeat, incarnation or
//     conns key), that it holds all of every bucket (max;
//     coord.ReserveAbsent, redis_absent.go): counted, fenced as if its
//     lease had been renewed at that moment, so parked heartbeat_ttl +
//     reclaim_after later, down to its exact share, and forgotten after
//     forget_after. What A was last seen holding is not enough: it is up to
//     a poll old, and A may have been granted anything since (the
//     10-minute soak met a peer seen holding 1 that held 3); in close
//     fallback A holds at most what the old Redis counted for it until its
//     own fence (lease end + reclaim_after, before the record is parked),
//     then at most its exact share, and nothing before the record can be
//     forgotten. A's register when it heals gives the record back and
//     re-asserts what A holds. The first instance to register records the
//     others too; each of them replaces its record by registering, like A,
//     so after an empty restart with every instance up the records last
//     about a probe interval, inside the registrants' settle time, when
//     nobody takes free slots anyway. The cost: a peer that is really gone
//     (killed, or left cleanly within the view window) blocks its buckets
//     for heartbeat_ttl + reclaim_after, then keeps its share counted
//     until the reapers forget it (or a process of its id registers). The
//     candidates are the peers of the view and the members of the last
//     read of proxy:instances ∪ proxy:fenced if it is no older than
//     heartbeat_ttl + reclaim_after + forget_after (Redis may have been out
//     longer than the view window). The view is read at every poll and,
//     while the instance settles (when it does not poll), at every probe
//     interval: a peer that registered and was cut off within one of those
//     reads, before any peer read the membership, is unknown to the others
//     and not recorded — the one case this does not cover.
//   - lease_loss keep: the instance keeps the old, more available share:
//     min(exact share, held + its exact share of the slots free when it
//     last saw the count), with no peer check. Summed over instances that
//     lost Redis together it is at most max. While one instance is cut off
//     alone, the others take the free slots too, so the backend may exceed
//     max by up to that instance's part of what was free,
//     ExactShare(max − count, N, rank) ≤ ⌈(max − count)/N⌉, for the
//     partition's length — on top of keep's other stated bounds (what it
//     held over its exact share once a reaper parks it; the uncounted
//     slots after its register). A partition longer than heartbeat_ttl +
//     reclaim_after + forget_after lets the reapers forget all it holds:
//     the backend may then exceed max by everything it holds until its
//     sessions end.
//
// # Slot linger and acquire n
//
// While connected, concurrent acquires of one bucket share one acquire
// script call (the Queue asks a batchSource for as many slots as it has
// waiters), and a slot released while nobody waits anywhere stays warm on
// this instance for RedisOptions.SlotLinger (config redis.slot_linger),
// still counted in Redis, for the next local acquire without a round trip.
// It goes back at once when clients wait (here, or on another instance:
// the waiting hash, proxy:pressure), when Redis, the lease or a connection
// is lost, and on Close: redis_linger.go. So count = the sum of the hashes
// = the sessions open + the warm slots.
//
// # Pause
//
// A bucket's queue can be paused (Pauser, pause.go; the admin API's pause
// and resume): it then takes no slot and hands none over, so new logins
// queue as if the bucket were full, under its max_queue_size and
// queue_timeout, until resumed.
package limiter
