// Package pool keeps logged-in backend connections for reuse (session
// pooling): one Pool per bucket, and within it one sub-pool per Key —
// login, database, TDS version, packet size, backend encryption and the
// LOGIN7 options that shape the session (application name, language,
// option flags, feature extensions).
//
// # States
//
// Every backend connection a Pool knows is in exactly one state, and each
// state is a list of its sub-pool, as in PgBouncer's bouncer.h ("each
// state corresponds to a list"). Every transition happens under the
// Pool's lock; the slow work (the login, the clean-up after a client) is
// done outside it, by the goroutine that owns the connection in that
// state.
//
//	state      list of   meaning                                   leaves to   when
//	login      sub-pool  a client's own login is under way (a      active      the backend accepted the login (Activate)
//	                     slot is held, no backend answer yet)      closed      the dial or the login failed (Close)
//	active     sub-pool  relaying for one client                   resetting   the client left (Return)
//	                                                               closed      the session was not pooled (Close)
//	resetting  sub-pool  being made safe after its client left:    idle        made safe, and the pool wants it
//	                     ATTENTION + wait for DONE_ATTN if a       closed      it could not be made safe within
//	                     request was in flight, then a batch                   ResetTimeout, MARS was used, the
//	                     with RESETCONNECTION that rolls back an               stream broke, the pool is closed,
//	                     open transaction, read to its end                     over max_idle, max_lifetime
//	                                                                           passed, or clients wait (pressure)
//	idle       sub-pool  reusable: at a message boundary, nothing  active      Checkout: a client with the same Key
//	                     owed, its next request will carry                     whose password verifies
//	                     RESETCONNECTION                           closed      idle_timeout (above min_idle),
//	                                                                           max_lifetime, the server closed it,
//	                                                                           pressure (above min_idle), Close,
//	                                                                           credential_changed (Accept of a
//	                                                                           new password for its Key)
//	closed     none      the TCP connection is closed and the      (terminal)
//	                     limiter Ticket released
//
// A connection holds its limiter Ticket in every state but closed: an
// idle connection still counts against the bucket's max_connections, on
// this instance and (with Redis) everywhere. So when clients wait for a
// slot of a bucket anywhere (Pressure), idle connections of that bucket
// are closed down to min_idle and their slots go to the waiters.
//
// # Authentication
//
// The server decides about passwords; tdsgate keeps none. When a client's
// own login succeeds at the backend (Accept, right after the LOGINACK),
// its password is hashed (pkg/route/passhash, with few iterations: the
// hash lives only in memory) and becomes the sub-pool's credential. The
// hash serves one purpose: a later client whose password verifies against
// it may be handed an idle connection. The verdict is cached as an HMAC
// of the password under a key drawn at start, so a returning client costs
// one HMAC, not a PBKDF2.
//
// A password that does not verify is a pool miss, like a login with no
// idle connection: the client is admitted and logs in at the backend. A
// wrong password so gets SQL Server's own refusal (its 18456, its server
// name), is counted by the server's failed-login auditing and lockout,
// and tells the client nothing about the pool. A password the server
// accepts although the credential does not know it (it was changed at
// the server) becomes the credential at once, and the idle connections
// accepted under the old one are closed (reason credential_changed); busy
// ones are closed when their clients leave.
//
// # Reset on reuse
//
// A reused connection's login answer is the one the backend sent for it
// (backend.LoginResult.Response): LOGINACK, ENVCHANGE database, language,
// collation and packet size, the INFO messages and DONE, replayed byte for
// byte. The client's first request goes out with RESETCONNECTION (relay.Framed
// sets the status bit) and the ENVCHANGE 18 that opens its answer is
// stripped, so the client sees a fresh session; only @@SPID tells.
//
// # Transaction pooling
//
// With pool_mode transaction (mux.go) the same sub-pools and states serve
// client sessions that hold no connection between requests. The first
// login of a Key logs in at the backend (Open, Activate); Adopt makes its
// password the credential and its answer the sub-pool's login answer,
// which LoginAnswer then gives every client whose password verifies. A
// request borrows an idle connection (Borrow: idle → active) or waits
// (Wait) for whichever comes first: a connection Lend hands it (active →
// active, to the oldest waiter of its Key), or a slot of the bucket, on
// which it opens a connection as the client. Lend takes a connection back
// at a message boundary with nothing owed and no transaction: to a waiter,
// to idle, or closed (max_lifetime, max_idle, the pool closed, or — under
// pressure — when borrowers of another Key wait for a slot). A connection
// records its last borrower (Conn.Owner): another one resets it first, in
// the frontend. A session that ends while holding one returns it with
// Return, made safe as above. Closing a connection waits (CloseWait) for
// the server's own close before the slot is released, so the server never
// counts more sessions than the cap.
//
// # Admin
//
// admin.go: SubPools lists the sub-pools with their connections by state
// (GET /admin/pools); Drain closes every idle connection at once, min_idle
// notwithstanding, and gives their slots back (reason "drained"; the admin
// API's drain, after a backend failover).
package pool
