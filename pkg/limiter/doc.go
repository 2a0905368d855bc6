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
//     (package coord) on the keys of DESIGN.md section 3. Waiters wake on a release anywhere (pub/sub from the
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
//
// Fallback shares are exact (ExactShare): instance i of N ranked by id
// among proxy:instances ∪ proxy:fenced gets floor(max/N) + 1 if i < max
// mod N, and no more than it held plus its exact share of the free slots.
// An instance that never reached Redis uses ExpectedInstances (floor only)
// or, with 0, refuses with CodeNoShare (TDS error 50011).
//
// # Pause
//
// A bucket's queue can be paused (Pauser, pause.go; the admin API's pause
// and resume): it then takes no slot and hands none over, so new logins
// queue as if the bucket were full, under its max_queue_size and
// queue_timeout, until resumed.
package limiter
