// Package admin serves tdsgate's HTTP endpoints: health on health_listen
// (default 0.0.0.0:8081), Prometheus metrics on metrics_listen (default
// 0.0.0.0:9091) and the admin API on admin_listen (default
// 127.0.0.1:9092). An empty address disables that server.
//
// # GET /health/live
//
// 200 {"status":"alive","time":"<RFC3339, UTC>"} for as long as the
// process serves HTTP, draining included: liveness says "do not restart
// me", nothing more.
//
// # GET /health
//
//	{"status":"healthy|degraded|unhealthy","timestamp":"…","instance_id":"proxy-1",
//	 "components":[{"name":"redis","status":"healthy","latency":"1.2ms"},
//	               {"name":"sqlserver-bucket-001","status":"healthy","latency":"5.3ms"}, …]}
//
// Components, in this order:
//   - "redis": probed by a func the application passes (a PING). On a
//     standalone instance (no redis.addr) it is listed with status
//     "disabled", so that a reader sees at once that limits are local.
//   - "sqlserver-<bucket>" for each configured bucket: a real TDS PRELOGIN
//     exchange with its backend (backend.Probe; TLS first for a strict
//     backend), not a bare TCP connect.
//   - further components the application adds (e.g. "ebpf", with a
//     "detail" object such as {"bucket-001":{"kernel":3,"limiter":3,"drift":0}}).
//
// A component is "healthy" when its probe succeeds within the probe
// timeout (default 2 s), "unhealthy" with an "error" otherwise, "degraded"
// when its probe says so (Degraded), "disabled" when it is not in use.
// "latency" is the probe's duration, also for a failed probe.
//
// The overall status:
//   - "unhealthy" while the instance drains (SIGTERM received);
//   - "unhealthy" when every bucket's backend is unhealthy;
//   - "degraded" when any component is degraded or unhealthy — Redis down
//     (the instance serves on its local share in fallback mode), or some
//     buckets down (the others still serve);
//   - "healthy" otherwise.
//
// The HTTP status answers a load balancer's question, "should this
// instance get new connections?": 503 only while draining, 200 otherwise,
// degraded or not. In particular, every bucket down is still 200: every
// instance shares those backends, so taking all of them out of the
// balancer would only turn tdsgate's clear refusal (TDS error 50002,
// "backend unavailable", at once) into connection resets at the
// balancer, and bring them back only after its rise interval once the
// backend returns. The body says "unhealthy" for people and alerts.
//
// Probes run at most once per cache TTL (default 2 s), all components in
// parallel, and concurrent requests share one round (single flight), so
// health checks from several balancers never hammer a backend. The
// draining flag is read live, never from the cache.
//
// # GET /metrics
//
// The Prometheus text format (pkg/metrics), process_* and go_* included.
// net/http/pprof under /debug/pprof/ on the metrics address with
// Options.Pprof (the config's pprof, off by default).
//
// # Authentication (admin_auth)
//
// Off by default (a trusted admin network): every endpoint answers
// everyone, /health in full. With a bearer token ("Authorization: Bearer
// <token>") or basic auth credentials set (Auth, from files the
// application reads at start and on reload):
//   - /metrics (and pprof) answer 401 without valid credentials;
//   - /health answers authenticated callers in full, and the others with
//     its public view: the overall status, instance_id, draining and, per
//     component, only name, status and latency — no "error" (backend
//     addresses, raw probe errors) and no "detail" (eBPF counts). With
//     health_requires_auth, 401 instead;
//   - /health/live stays open (liveness probes carry no credentials, and it
//     tells nothing).
//
// # The admin API (admin_listen, default 127.0.0.1:9092)
//
// console.go: GET /admin/buckets, /admin/sessions (?bucket= ?user=
// ?state=), /admin/pools, /admin/instances; POST
// /admin/sessions/{id}/kill, /admin/buckets/{id}/{pause,resume,drain}
// (?fleet=1), /admin/reload. The application implements Console; the JSON
// types (Bucket, Session, Pool, Instances, Killed, Action, Reload) are the
// stable API, documented field by field in the README ("Admin API"), and
// `proxy admin` decodes them. Authentication is Auth (admin_auth): with
// credentials set every /admin request needs them (401 otherwise); the
// config refuses a non-loopback admin_listen without a token. Every
// request is logged with the caller's address, actions at Warn.
package admin
