// Package metrics owns tdsgate's Prometheus metrics: their names, their
// labels, and the one github.com/VictoriaMetrics/metrics Set that holds
// them for an instance.
//
// Every metric object is created ahead of the events it counts: the
// instance-wide ones in New, a bucket's when the bucket is configured
// (SetBuckets, again on reload for new buckets). Hot-path methods
// (Acquired, Released, Relayed, …) look a bucket up in an immutable map
// behind an atomic pointer and touch existing counters: no lock, no
// allocation, and never GetOrCreate*. A bucket removed by a reload keeps
// its series (its held slots are still released into them); the set of
// series is bounded by the buckets ever configured.
//
// Metrics implements frontend.Observer and limiter.Observer. The Redis
// limiter reports through RedisOp, Heartbeat, SetFallback and SetGlobal;
// values that are cheaper to read than to track (queue lengths, breaker
// states, eBPF counts) are set by OnScrape hooks just before each scrape.
//
// # Metrics
//
// Per bucket (label bucket):
//
//	proxy_connections_active           gauge     slots held on this instance
//	proxy_connections_idle             gauge     idle pooled backends (pool_mode session); they hold slots, so they are counted in proxy_connections_active too
//	proxy_connections_total            counter   admitted logins (slots granted)
//	proxy_queue_length                 gauge     clients waiting for a slot
//	proxy_queue_wait_duration_seconds  histogram wait from entering the queue to the grant, for every admitted login (≈0 when a slot was free)
//	proxy_queue_abandoned_total        counter   clients that hung up while queued
//	proxy_backend_connect_duration_seconds histogram dial + PRELOGIN + TLS + LOGIN7 to the backend, successful logins only
//	proxy_bucket_global_connections    gauge     slots held by all instances, as last seen (standalone: this instance's); formerly proxy_bucket_global_count, a name promtool rejects for a gauge
//	proxy_bucket_global_max            gauge     the bucket's cap, as last seen
//	proxy_breaker_open                 gauge     1 while the bucket's circuit breaker is open
//	proxy_rejections_total{code}       counter   refusals sent to clients, code 50001..50011
//	proxy_pool_hits_total              counter   logins handed an idle pooled backend (pool_mode session)
//	proxy_pool_misses_total            counter   logins to a pooling bucket that found none and logged in at the backend
//	proxy_pool_resets_total            counter   returned backends made safe (ATTENTION if needed, rollback with RESETCONNECTION)
//	proxy_pool_reset_failures_total    counter   returned backends that could not be made safe within reset_timeout (closed)
//	proxy_pool_discarded_total{reason} counter   pooled backends closed: login_failed, not_pooled, broken, mars, reset_failed, max_idle, max_lifetime, idle_timeout, pressure, dead, credential_changed, closed
//	proxy_client_sessions              gauge     logged-in client sessions (every mode); over proxy_connections_active: the multiplexing ratio
//	proxy_sessions_pinned_total{reason} counter  pool_mode transaction sessions pinned to their backend, by first reason (PinReasons; other)
//	proxy_borrow_wait_duration_seconds histogram a pool_mode transaction request's wait for a backend connection
//	proxy_ebpf_backend_connections     gauge     backend connections open, counted by the kernel (only while eBPF runs, for watched buckets)
//	proxy_ebpf_drift                   gauge     kernel count − slots this instance holds (the limiter's InUse); sampled
//
// A refusal before a bucket is known (no route, encryption, a bad LOGIN7)
// counts under proxy_rejections_total{bucket="",code=…}.
//
// Instance-wide:
//
//	proxy_connection_errors_total{reason}     counter client_handshake, backend_dial, backend_prelogin, backend_tls, backend_login, backend_other, relay
//	proxy_redis_operations_total{op,result}   counter op acquire|release|reclaim|reconcile|heartbeat, result ok|error
//	proxy_instance_heartbeat                  gauge   unix time of the last successful Redis heartbeat (0: never)
//	proxy_fallback_mode                       gauge   1 while the limiter runs on its local share (Redis unreachable)
//	proxy_relay_bytes_total{direction,mode}   counter direction client_to_server|server_to_client, mode splice|tls|framed|sockmap
//	proxy_sessions_total{mode}                counter relayed sessions by relay mode (splice|tls|framed|sockmap)
//	proxy_header_walks_total{result}          counter kernel header walks of pooled sessions: armed, stopped (the session peeked from there)
//	proxy_client_refused_total{reason}        counter connections closed at the door before PRELOGIN: max_client_connections|max_pending_per_source|untrusted_proxy_peer|bad_proxy_header
//	proxy_session_panics_total                counter session panics recovered (session closed, slot released once)
//	proxy_client_idle_timeouts_total          counter logged-in sessions closed by client_idle_timeout
//	proxy_client_connections                  gauge   client connections held, logged in or not
//	proxy_client_connections_max              gauge   max_client_connections in force (0: no cap)
//	process_*, go_*                           the runtime's metrics (metrics.WriteProcessMetrics), with
//	                                          go_cgo_calls_count, go_gc_forced_count and go_cpu_count renamed
//	                                          go_cgo_calls_total, go_gc_forced_total and go_cpus, and
//	                                          process_io_*_total typed counter (help.go)
//
// Reasons: client_handshake counts failed client handshakes, the refusals
// during it (50007-50009) included; backend_* count failed backend
// logins by the stage that failed (backend.Error.Stage). relay is counted
// by RelayError, which the frontend does not call yet: its Observer's
// Relayed carries no error.
//
// Every family has "# HELP" (what it counts and its unit) and "# TYPE"
// lines: help.go holds the texts, and `promtool check metrics` finds
// nothing to report in the document (TestMetadata, and pkg/app's
// TestPromtoolLiveMetrics on a running proxy).
//
// Histogram buckets are Prometheus-style (_bucket{le="…"}, _sum, _count),
// so histogram_quantile(0.95, rate(proxy_queue_wait_duration_seconds_bucket[5m]))
// works as the runbook's Grafana section expects.
package metrics
