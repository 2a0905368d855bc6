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
//     (redis_scripts.go) on the keys of DESIGN.md section 3
//     (redis_keys.go). Waiters wake on a release anywhere (pub/sub from the
//     release script), on a change of max (client-side cache invalidation)
//     and on a slow poll. When Redis does not answer it keeps admitting on
//     a local share and reconciles when Redis is back, even empty: the
//     state machine is documented on RedisState (fallback.go);
//   - Clock and Timer, injected so tests drive queue timeouts with FakeClock.
//
// Waiting costs no goroutine: a waiter blocks in its own Acquire call, on a
// channel, its context and one timer.
package limiter
