package bench

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// Multiplexing at scale (issue 14): many client sessions of four real
// drivers, each held open for the whole run and sending a query or a small
// insert transaction every MinMS..MaxMS at random, over one bucket of
// pool_mode: transaction with a small max. The oracle for the cap is the
// stand-in's own session count.
type multiplexRun struct {
	PerClient    int // sessions per client, for each of clients.LoadClients
	Duration     time.Duration
	Max          int // the bucket's max_connections
	MinMS, MaxMS int
	MinRatio     float64 // client sessions per backend connection (stand-in peak) at least
	Report       string  // file to write the Markdown report to ("" = only the test log)
	// Direct runs the same load straight against the stand-in, without
	// tdsgate: the baseline of what the machine and the drivers manage. The
	// cap and ratio checks do not apply.
	Direct bool
}

// multiplexPoolMode is the bucket's pool mode: transaction, the mode under
// test. BENCH_MULTIPLEX_POOL_MODE overrides it to compare (session and
// none hold a backend per session, so they fail the ratio by design).
func multiplexPoolMode() config.PoolMode {
	if m := os.Getenv("BENCH_MULTIPLEX_POOL_MODE"); m != "" {
		return config.PoolMode(m)
	}
	return config.PoolMode("transaction")
}

// insertRatio is the share of requests that are insert transactions:
// BENCH_MULTIPLEX_INSERT_RATIO, default 0.5.
func insertRatio() float64 {
	var r float64
	if _, err := fmt.Sscan(os.Getenv("BENCH_MULTIPLEX_INSERT_RATIO"), &r); err == nil && r >= 0 && r <= 1 {
		return r
	}
	return 0.5
}

// TestMultiplexShort is the make-test version: 50 sessions of each of
// go-mssqldb, pytds, tedious and jTDS (200) for 12 s over a bucket of max
// 5, so the same 40:1 ratio as the full run. The four drivers log in with
// different application names and LOGIN7 options, so they form four
// sub-pools: the bucket needs more slots than sub-pools, or every borrow
// from another sub-pool closes a connection and logs in a new one. Under
// the race detector (make test), which slows tdsgate and the stand-in in
// this process several times, it runs 15 of each (60 sessions, 12:1).
func TestMultiplexShort(t *testing.T) {
	if testing.Short() {
		t.Skip("multiplexing scenario: 200 real client sessions for 12 s")
	}
	m := multiplexRun{PerClient: 50, Duration: 12 * time.Second, Max: 5, MinMS: 100, MaxMS: 1000, MinRatio: 40}
	if raceEnabled {
		m.PerClient, m.MinRatio = 15, 12
	}
	runMultiplex(t, m)
}

// TestMultiplexAtScale is the figure: 1,000 sessions (250 each of
// go-mssqldb, pytds, tedious, jTDS) for 60 s over a bucket of max 20. It runs
// with BENCH_MULTIPLEX=1 (make bench-multiplex) and writes
// bench/results/<date>-multiplex.md.
func TestMultiplexAtScale(t *testing.T) {
	if os.Getenv("BENCH_MULTIPLEX") == "" {
		t.Skip("set BENCH_MULTIPLEX=1 (make bench-multiplex): 1,000 real client sessions for 60 s")
	}
	name := time.Now().UTC().Format("2006-01-02") + "-multiplex"
	if r := insertRatio(); r != 0.5 {
		name += fmt.Sprintf("-insert%.2f", r)
	}
	report := filepath.Join("results", name+".md")
	runMultiplex(t, multiplexRun{PerClient: 250, Duration: 60 * time.Second, Max: 20, MinMS: 100, MaxMS: 1000, MinRatio: 40, Report: report})
}

func runMultiplex(t *testing.T, m multiplexRun) {
	total := m.PerClient * len(clients.LoadClients)
	srv, host, port, mode := muxSetup(t, m.Max, total, m.Direct)
	srv.ResetPeak()
	before := srv.Stats()

	// Logins first (a JVM and 250 logins take a while on a loaded machine),
	// then every session's requests in the same window.
	login := 10*time.Second + time.Duration(m.PerClient)*40*time.Millisecond
	if raceEnabled {
		login *= 3
	}
	start := time.Now().Add(login)
	end := start.Add(m.Duration)
	tag := fmt.Sprintf("mux-%d", time.Now().UnixNano())

	// Sample the stand-in's sessions through the run.
	var samples []int64
	stop := make(chan struct{})
	var sw sync.WaitGroup
	sw.Add(1)
	go func() {
		defer sw.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				samples = append(samples, srv.Stats().Current)
			}
		}
	}()

	results := make([]clients.LoadResult, len(clients.LoadClients))
	errs := make([]error, len(clients.LoadClients))
	var wg sync.WaitGroup
	for i, name := range clients.LoadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = clients.Load(context.Background(), name, clients.LoadSpec{
				Host: host, Port: port, User: "sa", Password: testenv.Passwords[0], Database: muxDatabase(name),
				Sessions: m.PerClient, StartAtMS: start.UnixMilli(), EndAtMS: end.UnixMilli(),
				MinMS: m.MinMS, MaxMS: m.MaxMS, InsertRatio: insertRatio(), Tag: tag + "-" + string(name), Seed: int64(i + 1),
			})
		}()
	}
	wg.Wait()
	close(stop)
	sw.Wait()
	after := srv.Stats()

	var rep strings.Builder
	var failures []string
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		failures = append(failures, strings.SplitN(msg, "\n", 2)[0])
		t.Error(msg)
	}
	fmt.Fprintf(&rep, "# Multiplexing at scale: %d client sessions over a bucket of max %d (pool_mode: %s)\n\n", total, m.Max, mode)
	fmt.Fprintf(&rep, "%d sessions of each of %d clients (each driver its own database on the one stand-in: SQLite has one writer per database), held open for the whole run; each sends `SELECT 1` or (with probability %.2f) a driver-API transaction (begin, one INSERT, commit), every %d–%d ms at random for %s. tdsgate and the stand-in run in the test process (`go test -run TestMultiplex ./bench/`), the drivers in their own processes (one JVM, one node, one python; go-mssqldb in the test process). Machine: %s.\n\n",
		m.PerClient, len(clients.LoadClients), insertRatio(), m.MinMS, m.MaxMS, m.Duration, machine())
	rep.WriteString("| client | sessions | queries | transactions | failed | errors | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|---|\n")
	var sessions, requests, failed int64
	for i, r := range results {
		name := clients.LoadClients[i]
		if errs[i] != nil {
			fail("%s: %v", name, errs[i])
			continue
		}
		sessions += r.Sessions
		requests += r.Queries + r.Inserts
		failed += r.Failed
		p50, p99, mx := quantiles(r.LatMS)
		fmt.Fprintf(&rep, "| %s | %d | %d | %d | %d | %s | %.1f | %.1f | %.1f |\n", name, r.Sessions, r.Queries, r.Inserts, r.Failed, errorCounts(r.Errors), p50, p99, mx)
		if r.Sessions != int64(m.PerClient) || r.Failed != 0 {
			fail("%s: %d of %d sessions logged in, %d requests failed %v; first error: %s\n%s", name, r.Sessions, m.PerClient, r.Failed, r.Errors, r.FirstError, tail(r.Stderr))
		}
		if r.Errors["50004"] != 0 {
			fail("%s: %d queue timeouts (50004)", name, r.Errors["50004"])
		}
		// The schedule is best effort (a loaded machine stretches every
		// request), but the sessions must have been busy.
		if r.Queries+r.Inserts < int64(m.PerClient) {
			fail("%s: only %d requests succeeded for %d sessions", name, r.Queries+r.Inserts, m.PerClient)
		}
		// Every committed insert is in the table exactly once.
		var n int64
		if err := standinDB(t, srv, muxDatabase(name)).QueryRow("SELECT COUNT(*) FROM test_table WHERE name = '" + tag + "-" + string(name) + "'").Scan(&n); err != nil {
			fail("%s: counting its rows on the stand-in: %v", name, err)
		} else if n != r.Inserts {
			fail("%s: %d transactions committed, %d rows in test_table", name, r.Inserts, n)
		}
	}
	peak := after.Peak
	ratio := float64(sessions) / float64(max(peak, 1))
	fmt.Fprintf(&rep, "\n| figure | value |\n|---|---|\n")
	fmt.Fprintf(&rep, "| client sessions held | %d |\n| requests succeeded | %d (%.0f/s) |\n| requests failed | %d |\n", sessions, requests, float64(requests)/m.Duration.Seconds(), failed)
	fmt.Fprintf(&rep, "| stand-in peak concurrent sessions | %d (cap %d) |\n| stand-in logins during the run | %d |\n| stand-in RESETCONNECTIONs | %d |\n", peak, m.Max, after.Total-before.Total, after.Resets-before.Resets)
	fmt.Fprintf(&rep, "| stand-in sessions, median of %d samples | %d |\n| client sessions per backend connection | %.1f : 1 (goal ≥ %.0f : 1) |\n", len(samples), median(samples), ratio, m.MinRatio)
	if m.Direct {
		return
	}
	if peak > int64(m.Max) {
		fail("the stand-in saw %d concurrent sessions; the bucket's max is %d", peak, m.Max)
	}
	if ratio < m.MinRatio {
		fail("%d client sessions over a peak of %d backend sessions: %.1f:1, want ≥ %.0f:1", sessions, peak, ratio, m.MinRatio)
	}
	rep.WriteString("\n## Outcome\n\n")
	if len(failures) == 0 {
		rep.WriteString("Every assertion met: every session logged in, every request succeeded, no 50004, the stand-in's peak within the cap, the ratio at or above the goal, every committed row in the table once.\n")
	}
	for _, f := range failures {
		fmt.Fprintf(&rep, "- FAILED: %s\n", f)
	}
	t.Log("\n" + rep.String())
	if m.Report != "" {
		if err := os.WriteFile(m.Report, []byte(rep.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// muxDatabase is the database a load client's sessions use: each driver its
// own, on the one stand-in behind the one bucket. The stand-in executes on
// SQLite, which has one writer per database file at a time (a writer waits
// for the other's transaction, up to engine.LockWait); SQL Server locks rows, and independent INSERTs
// of different applications do not wait for each other. A database per
// driver keeps the stand-in's single writer from turning the scenario into a
// lock-queue test. The drivers form a sub-pool each anyway (application
// name and LOGIN7 options differ), so this adds no sub-pool.
func muxDatabase(name clients.Name) string {
	if name == clients.GoMSSQL {
		return "tenant_db"
	}
	return "tenant_db_" + string(name)
}

// muxSetup checks the real clients, starts a stand-in and, unless direct,
// tdsgate in front of it with one bucket of multiplexPoolMode, max slots
// and room for queue waiters, and returns where clients connect.
func muxSetup(t *testing.T, max, queue int, direct bool) (srv *server.Server, host string, port int, mode string) {
	t.Helper()
	if err := clients.Check(); err != nil {
		t.Fatalf("real SQL Server clients are missing (run tools/deps.sh as root):\n%v", err)
	}
	srv = testenv.Buckets(t, 1, func(_ int, c *server.Config) {
		for _, name := range clients.LoadClients {
			c.Databases[muxDatabase(name)] = server.TenantDBInit
		}
	})[0]
	addr, mode := srv.Addr(), "direct, no tdsgate"
	if !direct {
		cfg := testenv.Config(t, []*server.Server{srv})
		b := &cfg.Buckets[0]
		b.PoolMode = multiplexPoolMode()
		b.MaxConnections, b.MaxQueueSize, b.QueueTimeout = max, queue, 30*time.Second
		b.IdleTimeout, b.MaxLifetime = config.DefaultIdleTimeout, config.DefaultMaxLifetime
		loadedMachine(cfg)
		addr, mode = testenv.Proxy(t, cfg).Addr(), string(b.PoolMode)
	}
	h, p, _ := net.SplitHostPort(addr)
	port, _ = strconv.Atoi(p)
	return srv, h, port, mode
}

// loadedMachine gives the scenario's proxy the timeouts of a real
// deployment instead of testenv's short ones: these scenarios start
// hundreds of sessions and several JVMs on a shared two-core machine, where
// a client can take seconds between connect and LOGIN7 and a
// RESETCONNECTION (with SET replay) seconds to answer.
func loadedMachine(cfg *config.Config) {
	cfg.LoginTimeout = 30 * time.Second
	for i := range cfg.Buckets {
		cfg.Buckets[i].LoginTimeout = 30 * time.Second
		cfg.Buckets[i].ResetTimeout = 10 * time.Second
	}
}

// standinDB opens a go-mssqldb pool straight to the stand-in (not through
// tdsgate), to check what the run left in the table.
func standinDB(t *testing.T, srv *server.Server, database string) *sql.DB {
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", testenv.Passwords[0]), Host: srv.Addr(),
		RawQuery: url.Values{"database": {database}, "encrypt": {"disable"}}.Encode()}
	db, err := sql.Open("sqlserver", u.String())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func errorCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(out, " ")
}

func quantiles(v []float64) (p50, p99, mx float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	load := ""
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		load = ", commit " + strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load += ", load average at the end " + strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%s%s", cpu, load)
}
