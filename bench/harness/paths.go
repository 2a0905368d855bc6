package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// Path names, in report order.
const (
	PathDirect       = "direct"
	PathHAProxy      = "haproxy"
	PathTdspool      = "tdspool"
	PathTdsgate      = "tdsgate"
	PathTdsgateRedis = "tdsgate+redis"
	PathTdsgatePool  = "tdsgate+pool"
	// PathTdsgateThree is three independent tdsgate instances, each on
	// its own local limiter, no Redis (clients round robin): the Redis
	// path's processes without Redis. Churn only: beside tdsgate+redis it
	// tells what Redis costs from what three processes on the machine's
	// cores cost.
	PathTdsgateThree = "tdsgate-x3"
	// PathTdsgateSockmap is tdsgate with relay: sockmap (the kernel
	// relay; it needs root, else the proxy warns and splices).
	PathTdsgateSockmap = "tdsgate+sockmap"
	// PathBare is bench/cmd/barerelay: io.Copy between the two TCP
	// conns (spliced by Go), TLS passing through: the floor for any
	// relay written in Go.
	PathBare = "bare"
	// PathBareTLS is bench/cmd/barerelay -tls: full TLS terminated on
	// both legs with crypto/tls, io.Copy between the TLS conns (mode
	// full-tls only).
	PathBareTLS = "bare+tls"
)

// Modes: how the client logs in. ModePlain is plaintext throughout;
// ModeLoginTLS is TLS for LOGIN7 only (PRELOGIN ENCRYPT_OFF), then
// plaintext, as most SQL Server clients do by default.
const (
	ModePlain    = "plain"
	ModeLoginTLS = "login-tls"
	// ModeFullTLS is TLS for the whole session (PRELOGIN ENCRYPT_ON), as
	// drivers that encrypt by default do; tdsgate terminates it on both
	// legs. Measured in the bulk section only.
	ModeFullTLS = "full-tls"
)

// in reports whether t takes part in a section: full-TLS targets and the
// bare relays are there for the relay's cost (bulk; the bare relays also
// for round trips), not for logins.
func (t *Target) in(section string) bool {
	switch {
	case t.Mode == ModeFullTLS:
		return section == "bulk"
	case t.Path == PathBare || t.Path == PathBareTLS:
		return section == "bulk" || section == "roundtrip"
	case t.Path == PathTdsgateThree:
		return section == "churn"
	}
	return true
}

// The stand-in's login, and the login tdspool accepts from clients
// (tdspool checks it itself; see tdspoolConf).
const (
	backendUser     = "sa"
	backendPassword = "YourStr0ngP@ssword1"
	backendDB       = "tenant_db"
	poolUser        = "benchapp"
	poolPassword    = "BenchP00lPass"
)

// Target is one path in one mode: where clients connect, and which
// processes relay for it (their CPU, RSS and fds are what the report
// charges to the path).
type Target struct {
	Path, Mode string
	Addrs      []string // clients are spread over these, round robin
	PIDs       []int    // the proxy processes (none for direct)
	procs      []*proc
	// maxSessions is a cap the path was configured with (HAProxy's
	// maxconn), 0 if none.
	maxSessions int
	// metrics are tdsgate's /metrics addresses (Go runtime figures).
	metrics  []string
	User     string
	Password string
	Database string
}

// Name is "path (mode)".
func (t *Target) Name() string { return t.Path + " (" + t.Mode + ")" }

// dead reports a proxy process of t that has exited, with the end of its log.
func (t *Target) dead() string {
	for _, p := range t.procs {
		if p.exited() {
			return fmt.Sprintf("%s exited (%v): %s", p.name, p.err, strings.ReplaceAll(p.tail(2), "\n", " / "))
		}
	}
	return ""
}

func (t *Target) encrypt() string {
	switch t.Mode {
	case ModeLoginTLS:
		return tdsclient.EncryptLogin
	case ModeFullTLS:
		return tdsclient.EncryptFull
	}
	return tdsclient.EncryptNone
}

// rawOptions are the tdsclient options of the i-th client.
func (t *Target) rawOptions(i int) tdsclient.Options {
	return tdsclient.Options{Addr: t.Addrs[i%len(t.Addrs)], User: t.User, Password: t.Password,
		Database: t.Database, Encrypt: t.encrypt(), App: "tdsgate-bench", Timeout: 10 * time.Second}
}

// Skipped is a path that did not run, and why.
type Skipped struct {
	Path, Mode, Reason string
}

// env is everything the harness started: the stand-in, Redis, the proxy
// processes, and the targets in front of them.
type env struct {
	nofile    uint64 // RLIMIT_NOFILE in force for the children
	dir       string
	opts      *Options
	procs     []*proc
	standin   *proc
	backend   string // stand-in address
	redis     string // redis-server address, "" if none
	redisProc *proc
	targets   []*Target
	skipped   []Skipped
	versions  map[string]string
	// poolExtra is BENCH_POOL_YAML, parsed: merged into the pooled path's bucket.
	poolExtra map[string]any
	// perfNote says why this run has no whole-machine profiles (perf.go),
	// "" while it may have them.
	perfNote string
}

func (e *env) close() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop(5 * time.Second)
	}
}

func (e *env) start(name string, envv []string, bin string, args ...string) (*proc, error) {
	p, err := startProc(e.dir, name, envv, bin, args...)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	return p, nil
}

func (e *env) skip(path, mode, format string, args ...any) {
	e.skipped = append(e.skipped, Skipped{path, mode, fmt.Sprintf(format, args...)})
	e.opts.logf("skip %s (%s): %s", path, mode, fmt.Sprintf(format, args...))
}

// setup starts the stand-in, Redis, and every path.
func (e *env) setup(ctx context.Context) error {
	if err := e.startStandin(ctx); err != nil {
		return err
	}
	for _, m := range []string{ModePlain, ModeLoginTLS, ModeFullTLS} {
		e.add(e.direct(m))
	}
	if ts, err := e.startHAProxy(ctx, "haproxy"); err != nil {
		e.skip(PathHAProxy, "*", "%v", err)
	} else {
		e.add(ts...)
	}
	if t, err := e.startTdspool(ctx, "tdspool"); err != nil {
		e.skip(PathTdspool, ModePlain, "%v", err)
	} else {
		e.add(t)
	}
	e.skip(PathTdspool, ModeLoginTLS, "tdspool supports no encryption on either leg (FreeTDS user guide, \"TDS Connection Pooling\")")
	if ts, err := e.startBare(ctx); err != nil {
		e.skip(PathBare, "*", "%v", err)
	} else {
		e.add(ts...)
	}
	for _, mode := range []string{ModePlain, ModeLoginTLS, ModeFullTLS} {
		if t, err := e.startTdsgate(ctx, PathTdsgate, mode, 1, "", nil, ""); err != nil {
			e.skip(PathTdsgate, mode, "%v", err)
		} else {
			e.add(t)
		}
	}
	for _, mode := range []string{ModePlain, ModeLoginTLS} {
		if t, err := e.startTdsgate(ctx, PathTdsgateSockmap, mode, 1, "", nil, ""); err != nil {
			e.skip(PathTdsgateSockmap, mode, "%v", err)
		} else {
			e.add(t)
		}
	}
	if err := e.startRedis(ctx); err != nil {
		e.skip(PathTdsgateRedis, "*", "%v", err)
	} else {
		for _, mode := range []string{ModePlain, ModeLoginTLS} {
			if t, err := e.startTdsgate(ctx, PathTdsgateRedis, mode, 3, e.redis, nil, ""); err != nil {
				e.skip(PathTdsgateRedis, mode, "%v", err)
			} else {
				e.add(t)
			}
		}
	}
	for _, mode := range []string{ModePlain, ModeLoginTLS} {
		if t, err := e.startTdsgate(ctx, PathTdsgateThree, mode, 3, "", nil, ""); err != nil {
			e.skip(PathTdsgateThree, mode, "%v", err)
		} else {
			e.add(t)
		}
	}
	// tdsgate with session pooling: Options.PoolYAML (BENCH_POOL_YAML) is
	// a YAML mapping merged into the bucket; the default turns on session
	// pooling (pkg/pool). "off" skips the path.
	if y := e.opts.PoolYAML; y == "off" {
		e.skip(PathTdsgatePool, "*", "BENCH_POOL_YAML=off")
	} else if err := yaml.Unmarshal([]byte(y), &e.poolExtra); err != nil {
		e.skip(PathTdsgatePool, "*", "BENCH_POOL_YAML: %v", err)
	} else {
		for _, mode := range []string{ModePlain, ModeLoginTLS, ModeFullTLS} {
			if t, err := e.startTdsgate(ctx, PathTdsgatePool, mode, 1, "", e.poolExtra, ""); err != nil {
				e.skip(PathTdsgatePool, mode, "%v", err)
			} else {
				e.add(t)
			}
		}
	}
	var keep []*Target
	for _, t := range e.targets {
		if e.opts.wantPath(t.Path) {
			keep = append(keep, t)
		}
	}
	e.targets = keep
	return nil
}

func (e *env) direct(mode string) *Target {
	return &Target{Path: PathDirect, Mode: mode, Addrs: []string{e.backend}, User: backendUser, Password: backendPassword, Database: backendDB}
}

// fresh starts a new set of processes for t's path in t's mode, so that a
// measurement of memory starts from a process that has served nothing
// else. stop ends them.
func (e *env) fresh(ctx context.Context, t *Target) (*Target, func(), error) {
	var nt *Target
	var err error
	switch t.Path {
	case PathDirect:
		return e.direct(t.Mode), func() {}, nil
	case PathHAProxy:
		var ts []*Target
		ts, err = e.startHAProxy(ctx, "haproxy-fresh")
		if err == nil {
			nt = ts[0]
			if t.Mode == ModeLoginTLS {
				nt = ts[1]
			}
		}
	case PathTdspool:
		nt, err = e.startTdspool(ctx, "tdspool-fresh")
	case PathTdsgate, PathTdsgateSockmap:
		nt, err = e.startTdsgate(ctx, t.Path, t.Mode, 1, "", nil, "-fresh")
	case PathTdsgateRedis:
		nt, err = e.startTdsgate(ctx, t.Path, t.Mode, 3, e.redis, nil, "-fresh")
	case PathTdsgateThree:
		nt, err = e.startTdsgate(ctx, t.Path, t.Mode, 3, "", nil, "-fresh")
	case PathTdsgatePool:
		nt, err = e.startTdsgate(ctx, t.Path, t.Mode, 1, "", e.poolExtra, "-fresh")
	default:
		err = fmt.Errorf("no fresh start for %s", t.Path)
	}
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		for _, p := range nt.procs {
			p.stop(5 * time.Second)
		}
	}
	return nt, stop, nil
}

func (e *env) add(ts ...*Target) { e.targets = append(e.targets, ts...) }

// startStandin runs tools/standin as its own process, one server.
func (e *env) startStandin(ctx context.Context) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	e.backend = "127.0.0.1:" + strconv.Itoa(ports[0])
	cfg := map[string]any{"servers": []any{map[string]any{
		"name":          "bench-standin",
		"listen":        e.backend,
		"logins":        map[string]string{backendUser: backendPassword},
		"databases":     map[string]string{backendDB: "CREATE TABLE test_table (id INT IDENTITY(1,1) PRIMARY KEY, name NVARCHAR(100), value INT);"},
		"data_dir":      filepath.Join(e.dir, "standin-data"),
		"encryption":    "optional",
		"login_timeout": "30s",
		// Bulk answers come from memory (tools/standin BulkPrefix), so
		// that the source outruns every relay.
		"bulk_source": true,
	}}}
	path := filepath.Join(e.dir, "standin.yaml")
	if err := writeYAML(path, cfg); err != nil {
		return err
	}
	p, err := e.start("standin", nil, e.opts.StandinBin, "-config", path)
	if err != nil {
		return err
	}
	e.standin = p
	return waitTCP(ctx, p, e.backend, 30*time.Second)
}

// startHAProxy runs Debian's haproxy in TCP mode with splice on both
// directions. TLS is end to end through it (client to stand-in), so both
// modes use the same frontend.
func (e *env) startHAProxy(ctx context.Context, name string) ([]*Target, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, fmt.Errorf("haproxy not installed (apt-get install haproxy; tools/deps.sh installs it)")
	}
	e.versions["HAProxy"] = firstLine(cmdOutput(bin, "-v"))
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	// HAProxy wants 2 fds per connection, 2 per splice pipe (maxpipes;
	// by default maxconn/4) and a few of its own, and will not start if
	// RLIMIT_NOFILE cannot cover them all. Pipes are only held while
	// data is in flight, so 500 of them are plenty here.
	maxconn := min(e.opts.IdleSessions+2000, (int(e.nofile)-1200)/2)
	cfg := fmt.Sprintf(`global
	maxconn %d
	maxpipes 500
	log stderr format raw local0 err

defaults
	mode tcp
	timeout connect 5s
	timeout client 1h
	timeout server 1h
	option splice-request
	option splice-response

frontend tds
	bind %s
	maxconn %d
	default_backend standin

backend standin
	server s1 %s maxconn %d
`, maxconn, addr, maxconn, e.backend, maxconn)
	path := filepath.Join(e.dir, name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := e.start(name, nil, bin, "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
		return nil, err
	}
	var ts []*Target
	for _, mode := range []string{ModePlain, ModeLoginTLS, ModeFullTLS} {
		ts = append(ts, &Target{Path: PathHAProxy, Mode: mode, Addrs: []string{addr}, PIDs: []int{p.pid()}, procs: []*proc{p}, maxSessions: maxconn - 10,
			User: backendUser, Password: backendPassword, Database: backendDB})
	}
	return ts, nil
}

// startTdspool runs FreeTDS tdspool (Debian freetds-bin) configured as its
// user guide says: pool.conf names the pool's section; there, `server` is
// a freetds.conf entry (host, port, TDS version) and `port` the port the
// pool listens on; `server user` / `server password` are the fixed login
// the pool's members use to log in to SQL Server; `user` / `password` are
// the one login the pool accepts from clients. tdspool authenticates a
// client by comparing LOGIN7's user name and password, as plain strings,
// with those two values (user.c, pool_user_login); a mismatch closes the
// connection without an ERROR token. It then forges the login answer
// (ENVCHANGE database and language, LOGINACK, DONE) and gives the client
// an idle member — or opens one, up to `max pool conn` — which the client
// keeps until it disconnects (session pooling): a client past `max pool
// conn` waits, with no timeout. Encryption is not supported on either leg.
func (e *env) startTdspool(ctx context.Context, name string) (*Target, error) {
	bin, err := exec.LookPath("tdspool")
	if err != nil {
		return nil, fmt.Errorf("tdspool not installed (apt-get install freetds-bin)")
	}
	if v := cmdOutput("dpkg-query", "-W", "-f", "${Version}", "freetds-bin"); v != "" {
		e.versions["tdspool"] = "FreeTDS tdspool " + v + " (Debian freetds-bin)"
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	host, bport, _ := strings.Cut(e.backend, ":")
	freetds := fmt.Sprintf("[global]\n\ttds version = 7.4\n\n[benchstandin]\n\thost = %s\n\tport = %s\n\ttds version = 7.4\n\tencryption = off\n", host, bport)
	maxConn := e.opts.IdleSessions + 256
	pool := fmt.Sprintf(`[global]
	min pool conn = 1
	max pool conn = %d

[benchpool]
	server = benchstandin
	port = %d
	server user = %s
	server password = %s
	user = %s
	password = %s
	database = %s
`, maxConn, ports[0], backendUser, backendPassword, poolUser, poolPassword, backendDB)
	fpath := filepath.Join(e.dir, name+"-freetds.conf")
	ppath := filepath.Join(e.dir, name+"-pool.conf")
	if err := os.WriteFile(fpath, []byte(freetds), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ppath, []byte(pool), 0o644); err != nil {
		return nil, err
	}
	p, err := e.start(name, []string{"FREETDSCONF=" + fpath}, bin, "-c", ppath, "benchpool")
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
		return nil, err
	}
	return &Target{Path: PathTdspool, Mode: ModePlain, Addrs: []string{addr}, PIDs: []int{p.pid()}, procs: []*proc{p},
		User: poolUser, Password: poolPassword, Database: backendDB}, nil
}

// startRedis runs a throwaway redis-server on a free port.
func (e *env) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not installed (apt-get install redis-server)")
	}
	e.versions["Redis"] = firstLine(cmdOutput(bin, "--version"))
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	p, err := e.start("redis", nil, bin, "--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--maxclients", "10000")
	if err != nil {
		return err
	}
	e.redis = "127.0.0.1:" + strconv.Itoa(ports[0])
	e.redisProc = p
	return waitTCP(ctx, p, e.redis, 10*time.Second)
}

// tdsgateBucket is the bucket every tdsgate path uses: the stand-in, with
// room for the idle-capacity sessions.
func (e *env) tdsgateBucket(id, mode string, maxConns, maxQueue int) map[string]any {
	b := map[string]any{
		"id": id, "address": e.backend, "max_connections": maxConns,
		"max_queue_size": maxQueue, "queue_timeout": "30s",
		"dial_timeout": "5s", "login_timeout": "15s",
	}
	if mode == ModeLoginTLS || mode == ModeFullTLS {
		b["encryption"] = map[string]string{ModeLoginTLS: "login", ModeFullTLS: "full"}[mode]
		b["trust_server_certificate"] = true
		b["server_name"] = "localhost"
	} else {
		b["encryption"] = "none"
	}
	return b
}

// tdsgateConfig is a tdsgate config: one listener address, quiet logs, no
// health endpoint, /metrics on metrics if set (on by default in tdsgate;
// the harness reads the Go runtime's figures there), the given buckets,
// everything routed to the first.
func tdsgateConfig(id, listen, metrics, redisAddr string, buckets ...map[string]any) map[string]any {
	c := map[string]any{
		"instance_id":       id,
		"listen":            listen,
		"listeners":         0,
		"client_encryption": []string{"none", "login", "full", "strict"},
		"login_timeout":     "15s",
		"drain_timeout":     "0s",
		"log_level":         "warn",
		"health_listen":     "",
		"metrics_listen":    metrics,
		// pprof: the idle section forces a GC through it; CPU profiles of
		// the proxy during the runs (profile.go).
		"pprof":          metrics != "",
		"admin_listen":   "",
		"buckets":        buckets,
		"default_bucket": buckets[0]["id"],
	}
	if redisAddr != "" {
		c["redis"] = map[string]any{"addr": redisAddr}
	}
	return c
}

// startTdsgate runs n bin/proxy processes for a path and mode (n > 1 with
// Redis: the instances share the bucket's cap; without, each has its own). extra is merged into the
// bucket (the pooling hook).
func (e *env) startTdsgate(ctx context.Context, path, mode string, n int, redisAddr string, extra map[string]any, suffix string) (*Target, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	t := &Target{Path: path, Mode: mode, User: backendUser, Password: backendPassword, Database: backendDB}
	for i := range n {
		id := fmt.Sprintf("bench-%s-%s-%d%s", strings.NewReplacer("+", "-").Replace(path), mode, i+1, suffix)
		addr := "127.0.0.1:" + strconv.Itoa(ports[i])
		b := e.tdsgateBucket("bench-"+mode, mode, e.opts.IdleSessions+1000, 1000)
		for k, v := range extra {
			b[k] = v
		}
		cfgPath := filepath.Join(e.dir, id+".yaml")
		metrics := "127.0.0.1:" + strconv.Itoa(ports[n+i])
		if err := writeYAML(cfgPath, tdsgateConfig(id, addr, metrics, redisAddr, b)); err != nil {
			return nil, err
		}
		var env []string
		if path == PathTdsgateSockmap {
			env = []string{"RELAY=sockmap"}
		}
		p, err := e.start(id, env, e.opts.ProxyBin, "-config", cfgPath)
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
		if err := waitTCP(ctx, p, addr, 20*time.Second); err != nil {
			return nil, err
		}
		t.Addrs = append(t.Addrs, addr)
		t.PIDs = append(t.PIDs, p.pid())
		t.metrics = append(t.metrics, metrics)
	}
	if redisAddr != "" && e.redisProc != nil {
		// redis-server is part of this path: its CPU and memory count.
		t.PIDs = append(t.PIDs, e.redisProc.pid())
	}
	// One login proves the path end to end before it is measured.
	c, err := tdsclient.Dial(ctx, t.rawOptions(0))
	if err != nil {
		return nil, fmt.Errorf("login through %s: %w", t.Name(), err)
	}
	c.Close()
	return t, nil
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// startBare runs bench/cmd/barerelay twice: as a plain io.Copy relay (every
// mode; TLS passes through) and terminating full TLS (full-tls only).
func (e *env) startBare(ctx context.Context) ([]*Target, error) {
	if e.opts.BareRelayBin == "" {
		return nil, fmt.Errorf("no barerelay binary")
	}
	var ts []*Target
	for _, tc := range []struct {
		path  string
		modes []string
		args  []string
	}{{PathBare, []string{ModePlain, ModeLoginTLS, ModeFullTLS}, nil}, {PathBareTLS, []string{ModeFullTLS}, []string{"-tls"}}} {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		p, err := e.start(tc.path, nil, e.opts.BareRelayBin, append([]string{"-listen", addr, "-backend", e.backend}, tc.args...)...)
		if err != nil {
			return nil, err
		}
		if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
			return nil, err
		}
		for _, m := range tc.modes {
			ts = append(ts, &Target{Path: tc.path, Mode: m, Addrs: []string{addr}, PIDs: []int{p.pid()}, procs: []*proc{p},
				User: backendUser, Password: backendPassword, Database: backendDB})
		}
	}
	return ts, nil
}
