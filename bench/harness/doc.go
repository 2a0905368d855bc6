// Package harness is the benchmark behind `make bench`: it starts a SQL
// Server stand-in (tools/standin, its own process), puts each proxy path in
// front of it — none (direct), HAProxy in TCP mode with splice, FreeTDS
// tdspool, tdsgate standalone, three tdsgate instances sharing limits
// through a real redis-server, and (once pkg/pool lands) tdsgate with
// session pooling — and measures them side by side in one run on
// 127.0.0.1:
//
//   - round trip: SELECT 1 on a logged-in session at 1, 16 and 128
//     concurrent sessions (p50, p99, p99.9, round trips per second);
//   - bulk: one large result set streamed (MB/s, and the CPU seconds each
//     proxy spent per GB relayed, from /proc/<pid>/stat);
//   - churn: connect, log in, SELECT 1, close from 32 workers
//     (connections per second, p99 connect time);
//   - idle capacity: thousands of idle logged-in sessions (proxy RSS and
//     file descriptors per session);
//   - admission: acquire+release through Redis, and 50005 refusals per
//     second under overload.
//
// The load runs in this process with the raw TDS client (tools/tdsclient,
// the lowest overhead) and with go-mssqldb (a real driver). Every figure
// is written to a Markdown report with PNG charts (gonum.org/v1/plot);
// goals are compared, never asserted. Run it with `make bench` (about 6
// minutes on 2 cores) or `BENCH_QUICK=1 make bench` (well under 2
// minutes: the same sections, smaller and shorter).
package harness
