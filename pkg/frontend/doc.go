// Package frontend owns one client session, from the first byte to the
// release of its slot, as one linear function (Handler.Serve):
//
//	handshake → route → reuse or (admit → connect) → login reply → relay → release
//
// With pool_mode session (pkg/pool), reuse hands the client an idle backend
// already logged in with its login, if its password verifies (otherwise
// 18456, as SQL Server answers); its login reply is the backend's own
// answer to that connection's login, replayed; the relay is the framed one,
// and release returns the backend to its pool, made safe first. The slot
// belongs to the backend connection throughout.
//
// The handshake reads PRELOGIN and answers each client ENCRYPTION choice
// as SQL Server would (within the modes the config allows), runs TLS
// inside PRELOGIN packets or TDS 8.0 strict TLS, accepts a LOGIN7 with no
// PRELOGIN, refuses TDS 4.2/5.0 logins clearly, and reads LOGIN7 — every
// read under the login deadline. Every refusal after PRELOGIN is a TDS
// ERROR token with its own number (errors.go) and a readable message,
// never a dropped socket.
//
// Handler.ShedSessions(bucket, keep) is the one way in from outside a
// session: it closes the bucket's newest sessions that hold a slot until
// keep remain (a shed pooled backend is closed, not pooled). The app calls
// it when the Redis limiter loses its lease with redis.lease_loss close.
package frontend
