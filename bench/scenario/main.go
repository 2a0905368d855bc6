// Command scenario runs the runbook's test scenarios (sections 12–19)
// against a running stack: the local stack of deployments/local (make
// stack-up) or the docker compose stack (-stack compose).
//
//	go run ./bench/scenario [flags] <name>...    # or: all, list
//
// Scenarios: runbook-sqlcmd, phase4, queue-timeout, circuit-breaker, cb-direct, errors,
// kill-proxy, kill-redis, kill-bucket, rolling-restart, logs. Each prints ✅
// or ❌ with the numbers it saw; the command exits 1 if any failed. The
// client is go-mssqldb, as the original scripts/test_phase4*.go were,
// except runbook-sqlcmd, which runs the runbook's sqlcmd commands verbatim
// with the real go-sqlcmd.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// scenario is one runbook scenario.
type scenario struct {
	name  string
	title string
	run   func(ctx context.Context, r *runner)
}

var scenarios = []scenario{
	{"runbook-sqlcmd", "the runbook's smoke, CRUD and transaction steps with the real sqlcmd; its encryption modes (runbook 6-8)", runbookSQLCmd},
	{"phase4", "concurrent connections, then saturation and the queue (runbook 12)", phase4},
	{"queue-timeout", "queue timeout: error 50004 (runbook 13)", queueTimeout},
	{"circuit-breaker", "queue full: error 50005 (runbook 14)", circuitBreaker},
	{"cb-direct", "queue full through HAProxy: outcomes of 10 extra logins (runbook 15)", cbDirect},
	{"errors", "combined: 50004 or 50005 (runbook 16)", errorsScenario},
	{"kill-proxy", "a proxy dies: HAProxy routes around it, Redis reaps it (runbook 19.1)", killProxy},
	{"kill-redis", "Redis dies: fallback, then reconcile (runbook 19.2)", killRedis},
	{"kill-bucket", "a SQL Server dies: 50002 for its clients, others fine (runbook 19.3)", killBucket},
	{"rolling-restart", "restart the proxies one by one with zero failed logins (runbook 19.4)", rollingRestart},
	{"logs", "the runbook's log filters each find their lines (runbook 17.3)", logsScenario},
}

// runner holds the flags and the results.
type runner struct {
	st           *stack
	queueTimeout time.Duration
	heartbeatTTL time.Duration
	verbose      bool
	started      time.Time // when the run began (the logs scenario reads from here)
	sqlcmd       string    // the go-sqlcmd binary (tools/deps.sh builds bin/sqlcmd)
	tlsCA        string    // the certificate every stand-in and proxy of the stack shows

	cur    string
	failed []string
	passed int
}

func (r *runner) ok(format string, a ...any) {
	fmt.Printf("✅ %s: %s\n", r.cur, fmt.Sprintf(format, a...))
}

func (r *runner) fail(format string, a ...any) {
	fmt.Printf("❌ %s: %s\n", r.cur, fmt.Sprintf(format, a...))
	r.failed = append(r.failed, r.cur)
}

func (r *runner) info(format string, a ...any) {
	fmt.Printf("   %s\n", fmt.Sprintf(format, a...))
}

func (r *runner) debug(format string, a ...any) {
	if r.verbose {
		r.info(format, a...)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// hostPorts turns "18081,18082" or "host:18081,…" into addresses.
func hostPorts(s string) []string {
	var out []string
	for _, f := range splitList(s) {
		if !strings.Contains(f, ":") {
			f = "localhost:" + f
		}
		out = append(out, f)
	}
	return out
}

func main() {
	os.Exit(run())
}

func run() int {
	st := &stack{}
	r := &runner{st: st}
	flag.StringVar(&st.tds, "tds", "localhost:1433", "HAProxy's TDS address")
	direct := flag.String("direct", "11433,11434,11435", "one proxy each (or host:port), proxy-1..3: HAProxy's single-proxy ports, which send the PROXY header the proxies require")
	flag.StringVar(&st.redis, "redis", "localhost:6379", "Redis address")
	health := flag.String("health", "18081,18082,18083", "the proxies' health ports (or host:port), proxy-1..3")
	metrics := flag.String("metrics", "19091,19092,19093", "the proxies' metrics ports (or host:port), proxy-1..3")
	flag.StringVar(&st.stats, "haproxy-stats", "localhost:8404", "HAProxy stats address (GET /stats;csv)")
	flag.StringVar(&st.kind, "stack", "local", "how to stop and start components: local (deployments/local/stack.sh) or compose (docker compose)")
	flag.StringVar(&st.script, "local-script", "deployments/local/stack.sh", "the local stack's control script")
	flag.StringVar(&st.logDir, "local-logs", "deployments/local/.run", "the local stack's log directory (proxy-N.log)")
	flag.StringVar(&st.composeFile, "compose-file", "deployments/docker-compose.yml", "the compose file (-stack compose)")
	flag.DurationVar(&r.queueTimeout, "queue-timeout", 3*time.Second, "bucket-001's queue_timeout in the proxies' config")
	flag.DurationVar(&r.heartbeatTTL, "heartbeat-ttl", 5*time.Second, "redis.heartbeat_ttl in the proxies' config")
	flag.BoolVar(&r.verbose, "v", false, "print more detail")
	flag.StringVar(&r.sqlcmd, "sqlcmd", "bin/sqlcmd", "the go-sqlcmd binary (bash tools/deps.sh builds it)")
	flag.StringVar(&r.tlsCA, "tls-ca", "deployments/local/.run/tls/cert.pem", "the stack's TLS certificate, trusted as a CA for sqlcmd -N m / -N s")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench/scenario [flags] <scenario>... | all | list\n\nscenarios:\n")
		for _, s := range scenarios {
			fmt.Fprintf(os.Stderr, "  %-16s %s\n", s.name, s.title)
		}
		fmt.Fprintf(os.Stderr, "\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	st.direct, st.health, st.metrics = hostPorts(*direct), hostPorts(*health), hostPorts(*metrics)
	if st.kind != "local" && st.kind != "compose" {
		fmt.Fprintf(os.Stderr, "scenario: -stack %q: want local or compose\n", st.kind)
		return 2
	}
	if len(st.direct) != 3 || len(st.health) != 3 || len(st.metrics) != 3 {
		fmt.Fprintln(os.Stderr, "scenario: -direct, -health and -metrics each need three entries (proxy-1..3)")
		return 2
	}
	names := flag.Args()
	if len(names) == 0 {
		flag.Usage()
		return 2
	}
	var todo []scenario
	for _, n := range names {
		switch n {
		case "list":
			for _, s := range scenarios {
				fmt.Printf("%-16s %s\n", s.name, s.title)
			}
			return 0
		case "all":
			todo = append(todo, scenarios...)
			continue
		}
		found := false
		for _, s := range scenarios {
			if s.name == n {
				todo = append(todo, s)
				found = true
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "scenario: unknown scenario %q (go run ./bench/scenario list)\n", n)
			return 2
		}
	}

	ctx := context.Background()
	r.started = time.Now()
	type timing struct {
		name string
		d    time.Duration
		ok   bool
	}
	var times []timing
	for _, s := range todo {
		r.cur = s.name
		fmt.Printf("\n== %s: %s\n", s.name, s.title)
		before := len(r.failed)
		t0 := time.Now()
		if err := st.waitReady(30 * time.Second); err != nil {
			r.fail("the stack is not ready: %v (make stack-up; make stack-status)", err)
		} else {
			s.run(ctx, r)
			// Every scenario leaves the buckets idle: no slot held in Redis.
			if c, ok := st.waitIdle(10 * time.Second); !ok {
				r.fail("after the scenario the counts in Redis are %v, not 0 0 0", c)
			}
		}
		d := time.Since(t0)
		times = append(times, timing{s.name, d, len(r.failed) == before})
	}
	if len(todo) > 1 {
		fmt.Printf("\n== summary\n")
		for _, t := range times {
			mark := "✅"
			if !t.ok {
				mark = "❌"
			}
			fmt.Printf("%s %-16s %6.1fs\n", mark, t.name, t.d.Seconds())
		}
		fmt.Printf("total %.1fs\n", time.Since(r.started).Seconds())
	}
	if len(r.failed) > 0 {
		return 1
	}
	return 0
}
