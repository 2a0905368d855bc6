// Package backend owns tdsgate's side of the conversation with a bucket's
// SQL Server: dialing with a timeout, PRELOGIN and TLS as the bucket's
// encryption setting says (none, login-only, full, TDS 8.0 strict),
// forwarding the client's LOGIN7 and reading the login response to relay,
// the health probe (a real PRELOGIN exchange, not a bare TCP connect), and
// the per-bucket circuit breaker that makes logins fail fast while a
// backend is down.
package backend
