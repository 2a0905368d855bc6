// Package app owns tdsgate's wiring and lifecycle: it builds the
// components from a config (limiter, buckets with their targets and
// breakers, routes, the client-facing TLS certificate, the frontend
// handler, the listeners), starts them, reloads them on SIGHUP without
// dropping sessions, and on SIGTERM stops accepting, lets sessions finish
// up to the drain timeout, closes the rest, and closes the components in
// reverse order.
//
// A reload re-reads what lives in files: each bucket's ca_file (a changed
// CA bundle gives the bucket a new target, breaker and pool), the
// client-facing certificate (certs.go; also polled every
// tls.watch_interval) and the admin_auth secrets; anything that does not
// load fails the reload and leaves the running config in force. Breaker
// limits change through Breaker.SetLimits, under its lock.
//
// observability.go wires pkg/metrics (the frontend's and the limiter's
// observer) and pkg/admin (/health, /metrics): the admin servers start
// once the TDS listeners are bound, keep answering during the drain
// (/health says 503 then), and stop after it, before the components
// close. Redis and eBPF report through App.Metrics, App.SetRedisHealth
// and App.SetEBPF.
//
// redis.go wires the Redis limiter and the registry (redis.addr or
// redis.sentinel, redis.tls, redis.username) and the lease-loss hook:
// with redis.lease_loss close the limiter calls App.shedSessions(bucket,
// keep), which closes the bucket's idle pooled connections down to
// min_idle and then, through frontend.Handler.ShedSessions, its newest
// sessions until keep of this instance's slots remain in use. SIGHUP in
// Redis mode: a changed max_connections is written to
// proxy:bucket:<id>:max (config wins on reload).
package app
