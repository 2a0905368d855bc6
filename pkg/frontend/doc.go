// Package frontend owns one client session, from the first byte to the
// release of its slot, as one linear function (Handler.Serve):
//
//	handshake → route → lease → login reply → relay → release
//
// The lease (lease.go) is the bucket's pool_mode, as a strategy with no
// branch in Serve: open takes what the session needs, Login is the answer
// to the client's LOGIN7, Relay serves the client until it leaves, and
// Release — the one place a slot or backend connection is given back —
// runs once, deferred, however the session ends.
//
//   - none (dedicated): admit → connect: the client's own backend login,
//     relayed with splice (or in the kernel, sockmap.go), closed at the end.
//   - session (pooling.go, pkg/pool): an idle backend already logged in
//     with the client's login, if its password matches the one that
//     connection was accepted with; any other password is a miss and logs
//     in at the backend (admit → connect), which decides: tdsgate never
//     refuses a password itself. A pooled login the backend accepts makes
//     its password the pool's credential at once. A reused connection's
//     login reply is the backend's own answer to its login, replayed; the
//     relay is the framed one, and release returns the backend to its
//     pool, made safe first. The slot belongs to the backend connection.
//   - transaction (mux.go): the login is answered by the sub-pool once the
//     password verifies (same rule as session); the session then holds no
//     backend between requests. Each request borrows a connection of its
//     sub-pool, or opens one within the bucket's cap, or waits in the
//     bucket's queue (a timeout answers that request 50004, the session
//     stays); the connection goes back at the end of the answer unless a
//     transaction is open (ENVCHANGE 8 until 9/10/17) or the session is
//     pinned (pkg/pin on the request text, ENVCHANGEs of the answer). A
//     connection another session used last gets RESETCONNECTION (the
//     ENVCHANGE 18 stripped) or the session's SET options replayed after
//     a reset. ATTENTION goes to the request's connection, or is answered
//     DONE_ATTN by tdsgate when nothing is in flight. mux.go documents the
//     client-side states and their transitions.
//
// With relay: sockmap (sockmap.go) a plaintext session of its own joins
// the kernel relay before its login reply, and after the reply Serve's
// goroutine ends: an idle session relayed in the kernel holds no
// goroutine. Its end, reported by the kernel relay on a short-lived
// goroutine, runs the rest of Serve in Serve's own order (relayEnded,
// release, logClosed, untrack); Serve's deferred steps skip themselves
// once the session is detached.
//
// Refusals tell a client that has not logged in nothing internal: 50002
// names only the bucket (the backend's address and the cause go to the
// log), and no refusal reveals whether pooled connections exist.
//
// The handshake reads PRELOGIN and answers each client ENCRYPTION choice
// as SQL Server would (within the modes the config allows), runs TLS
// inside PRELOGIN packets or TDS 8.0 strict TLS, accepts a LOGIN7 with no
// PRELOGIN, refuses TDS 4.2/5.0 logins clearly, and reads LOGIN7 — every
// read under the login deadline. Every refusal after PRELOGIN is a TDS
// ERROR token with its own number (errors.go) and a readable message,
// never a dropped socket.
//
// The door (door.go): before the handshake a connection takes a place
// among its source address's connections that have not logged in
// (max_pending_per_source), given back once LOGIN7 is in; past the cap it
// is closed at once (nothing is readable before PRELOGIN), counted
// (Handler.Door) and logged once per interval. The login deadline counts
// from accept, PROXY header included, and stays on the socket through
// TLS (pkg/tds/tdstls). A panic in a session is recovered in Serve: the
// slot is released once as the panic unwinds through release, the stack
// logged, the panic counted, the connection closed. client_idle_timeout
// closes an idle logged-in client from a timer that reads the kernel's
// TCP_INFO last-data times, so no wrapper slows the splice path.
//
// Handler.ShedSessions(bucket, keep) is the one way in from outside a
// session: it closes the bucket's newest sessions that hold a slot until
// keep remain (a shed pooled backend is closed, not pooled; a transaction
// session holds a slot only while a backend is attached to it). The app calls
// it when the Redis limiter loses its lease with redis.lease_loss close.
//
// The session table (sessions.go) is the admin API's view: Handler.Sessions
// lists every live session with its state (handshake, queued, connecting,
// active, idle-in-transaction, pinned with a reason, closing; SessionState
// documents the transitions), login, bucket, relay mode and the client
// socket's byte counts; Handler.Kill ends one on an administrator's behalf
// with TDS error 50012 (CodeKilled) — as the login answer of a queued or
// connecting session, as the answer to the request in flight of a relaying
// one — and its slot goes back once through the session's own release.
// Serve reports into the table through a few hooks and nothing else.
package frontend
