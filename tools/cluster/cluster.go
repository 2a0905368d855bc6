// Package cluster runs tdsgate instances as separate processes for
// multi-instance tests: it builds cmd/proxy once, writes each instance's
// YAML config (instance_id, a free loopback port, the redis section,
// buckets), starts the processes, and can SIGKILL, SIGTERM, SIGSTOP,
// SIGCONT and SIGHUP (with a rewritten config) them. Its tests check that
// a bucket's cap holds across instances sharing a real redis-server,
// through churn, instance death, Redis death and restart, clean stops, and
// the faults of the nemesis (subpackage nemesis).
//
// The instances' binary is built from this tree unless the environment
// names another one:
//
//	TDSGATE_CLUSTER_PROXY=/tmp/proxy-main   use this binary instead
//	TDSGATE_CLUSTER_OLDCONFIG=1             leave out the redis keys an
//	                                        older binary does not know
//	                                        (lease_loss, expected_instances,
//	                                        reclaim_after, forget_after,
//	                                        username, tls, sentinel)
//	TDSGATE_CLUSTER_LOGDIR=/tmp/logs        write every instance's log there
//
// so that the same tests can be run against a binary built from an older
// commit, to show what they catch.
package cluster

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Environment variables that choose the instances' binary (package doc).
const (
	EnvProxy     = "TDSGATE_CLUSTER_PROXY"
	EnvOldConfig = "TDSGATE_CLUSTER_OLDCONFIG"
	// EnvLogDir names a directory where each instance's whole log is
	// written at the end of the test (<id>-<pid>.log).
	EnvLogDir = "TDSGATE_CLUSTER_LOGDIR"
)

// OldConfig reports whether configs leave out the keys an older binary
// does not know (EnvOldConfig).
func OldConfig() bool { return os.Getenv(EnvOldConfig) != "" }

// Binary builds ./cmd/proxy once per test process (without -race: the
// instances are the system under test, the race detector runs in the test
// process) and returns its path. Cleanup removes it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if bin := os.Getenv(EnvProxy); bin != "" {
			if _, buildErr = os.Stat(bin); buildErr == nil {
				buildBin = bin
			}
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "tdsgate-cluster-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "proxy")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/proxy")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/proxy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Bucket is one bucket of an instance's config.
type Bucket struct {
	ID             string
	Address        string
	MaxConnections int
	MaxQueueSize   int
	QueueTimeout   time.Duration
	// PoolMode is pool_mode (none or session); "" leaves the default.
	PoolMode string
}

// RedisTLS is the redis.tls section.
type RedisTLS struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// Sentinel is the redis.sentinel section.
type Sentinel struct {
	MasterSet string
	Addrs     []string
}

// Config is what varies between the test instances' configs.
type Config struct {
	InstanceID string
	// Listen is the TDS address; "" picks a free loopback port.
	Listen string
	// RedisAddr is redis.addr. With Sentinel set it is written only under
	// EnvOldConfig (an older binary has no sentinel support and talks to
	// the primary given here).
	RedisAddr     string
	RedisUsername string
	RedisPassword string
	RedisTLS      *RedisTLS
	Sentinel      *Sentinel
	// LeaseLoss is redis.lease_loss (close or keep); "" leaves the default.
	LeaseLoss string
	// WaitReplicas is redis.wait_replicas (nil: not written, the default:
	// 1 with Sentinel, 0 otherwise).
	WaitReplicas *int
	// ExpectedInstances is redis.expected_instances (0: not written).
	ExpectedInstances int
	// ReclaimAfter and ForgetAfter are redis.reclaim_after and
	// redis.forget_after (0: not written, the binary's defaults).
	ReclaimAfter, ForgetAfter time.Duration
	HeartbeatTTL              time.Duration // default 3s
	HeartbeatInterval         time.Duration // default 500ms
	ReaperInterval            time.Duration // default 1s
	OpTimeout                 time.Duration // default 300ms
	FallbackDivisor           int
	DrainTimeout              time.Duration // default 2s
	Buckets                   []Bucket
	// DefaultBucket takes every login no route matches; default the
	// first bucket.
	DefaultBucket string
	// AppRoutes routes a login by its application name: app → bucket id.
	AppRoutes map[string]string
	// LogLevel is log_level; default info.
	LogLevel string
	// Metrics serves /metrics on a free loopback port (Proxy.MetricsAddr).
	Metrics bool
	// NoHealth leaves health_listen empty: no /health and no /peer/lease
	// (the instance then advertises no peer address). By default each
	// start picks a free loopback port (Proxy.HealthAddr), which is also
	// the redis.peer_address it advertises.
	NoHealth bool

	// Admin serves the admin API on a free port (Proxy.AdminAddr), bound
	// to AdminHost (default 127.0.0.1; a non-loopback host needs
	// AdminTokenFile, admin_auth.token_file).
	Admin          bool
	AdminHost      string
	AdminTokenFile string

	metricsListen, healthListen, adminListen string
}

// YAML renders c as a tdsgate config listening on listen.
func (c Config) YAML(listen string) string {
	d := func(v, def time.Duration) string {
		if v == 0 {
			v = def
		}
		return v.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "instance_id: %s\nlisten: %s\nlisteners: 1\nlogin_timeout: 60s\ndrain_timeout: %s\n", c.InstanceID, listen, d(c.DrainTimeout, 2*time.Second))
	lvl := c.LogLevel
	if lvl == "" {
		lvl = "info"
	}
	fmt.Fprintf(&b, "log_level: %s\nhealth_listen: %q\nmetrics_listen: %q\n", lvl, c.healthListen, c.metricsListen)
	old := OldConfig()
	if !old {
		fmt.Fprintf(&b, "admin_listen: %q\n", c.adminListen)
		if c.AdminTokenFile != "" {
			fmt.Fprintf(&b, "admin_auth:\n  token_file: %q\n", c.AdminTokenFile)
		}
	}
	b.WriteString("redis:\n")
	if c.Sentinel == nil || old {
		fmt.Fprintf(&b, "  addr: %q\n", c.RedisAddr)
	}
	if c.RedisPassword != "" {
		fmt.Fprintf(&b, "  password: %q\n", c.RedisPassword)
	}
	fmt.Fprintf(&b, "  heartbeat_ttl: %s\n  heartbeat_interval: %s\n  reaper_interval: %s\n  op_timeout: %s\n  fallback_divisor: %d\n",
		d(c.HeartbeatTTL, 3*time.Second), d(c.HeartbeatInterval, 500*time.Millisecond),
		d(c.ReaperInterval, time.Second), d(c.OpTimeout, 300*time.Millisecond), c.FallbackDivisor)
	if !old {
		if c.LeaseLoss != "" {
			fmt.Fprintf(&b, "  lease_loss: %s\n", c.LeaseLoss)
		}
		if c.WaitReplicas != nil {
			fmt.Fprintf(&b, "  wait_replicas: %d\n", *c.WaitReplicas)
		}
		if c.ExpectedInstances > 0 {
			fmt.Fprintf(&b, "  expected_instances: %d\n", c.ExpectedInstances)
		}
		if c.ReclaimAfter > 0 {
			fmt.Fprintf(&b, "  reclaim_after: %s\n", c.ReclaimAfter)
		}
		if c.ForgetAfter > 0 {
			fmt.Fprintf(&b, "  forget_after: %s\n", c.ForgetAfter)
		}
		if c.RedisUsername != "" {
			fmt.Fprintf(&b, "  username: %q\n", c.RedisUsername)
		}
		if t := c.RedisTLS; t != nil {
			fmt.Fprintf(&b, "  tls:\n    ca_file: %q\n    cert_file: %q\n    key_file: %q\n    server_name: %q\n    insecure_skip_verify: %t\n",
				t.CAFile, t.CertFile, t.KeyFile, t.ServerName, t.InsecureSkipVerify)
		}
		if s := c.Sentinel; s != nil {
			fmt.Fprintf(&b, "  sentinel:\n    master_set: %q\n    addrs:\n", s.MasterSet)
			for _, a := range s.Addrs {
				fmt.Fprintf(&b, "      - %q\n", a)
			}
		}
	}
	b.WriteString("buckets:\n")
	for _, k := range c.Buckets {
		fmt.Fprintf(&b, "  - id: %s\n    address: %s\n    encryption: login\n    trust_server_certificate: true\n    server_name: localhost\n", k.ID, k.Address)
		fmt.Fprintf(&b, "    max_connections: %d\n    max_queue_size: %d\n    queue_timeout: %s\n    dial_timeout: 2s\n    login_timeout: 10s\n",
			k.MaxConnections, k.MaxQueueSize, d(k.QueueTimeout, 30*time.Second))
		if k.PoolMode != "" {
			fmt.Fprintf(&b, "    pool_mode: %s\n", k.PoolMode)
		}
		b.WriteString("    breaker:\n      failures: 50\n      probe_interval: 200ms\n")
	}
	def := c.DefaultBucket
	if def == "" && len(c.Buckets) > 0 {
		def = c.Buckets[0].ID
	}
	fmt.Fprintf(&b, "default_bucket: %s\n", def)
	if len(c.AppRoutes) > 0 {
		apps := make([]string, 0, len(c.AppRoutes))
		for a := range c.AppRoutes {
			apps = append(apps, a)
		}
		slices.Sort(apps)
		b.WriteString("routes:\n")
		for _, a := range apps {
			fmt.Fprintf(&b, "  - app: %q\n    bucket: %s\n", a, c.AppRoutes[a])
		}
	}
	return b.String()
}

// Proxy is one running instance.
type Proxy struct {
	ID   string
	Addr string
	// Config is the config it was started with (or last reloaded with).
	Config Config
	t      testing.TB
	path   string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{}
	state  *os.ProcessState
	log    *syncBuffer
	paused bool
}

// Start writes c's config and starts an instance on c.Listen or a free
// port; it waits until the port accepts connections and stops the process
// at cleanup. A process that exits at start fails the test.
func Start(t testing.TB, c Config) *Proxy {
	t.Helper()
	p, err := StartErr(t, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartErr is Start that returns an instance exiting at start (or not
// listening within 10 s) as an error, with its log, instead of failing:
// for a second process that is expected to refuse to start. The process
// is stopped either way.
func StartErr(t testing.TB, c Config) (*Proxy, error) {
	t.Helper()
	bin := Binary(t)
	// Pick the free ports while holding them all, so that two picks
	// cannot return the same port.
	var hold []net.Listener
	pick := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, l)
		return l.Addr().String()
	}
	addr := c.Listen
	if addr == "" {
		addr = pick()
	}
	c.Listen = addr
	pickOther := func() string { // not addr: c.Listen may name a port no one holds
		a := pick()
		for a == addr {
			a = pick()
		}
		return a
	}
	c.metricsListen, c.healthListen = "", ""
	if c.Metrics {
		c.metricsListen = pickOther()
	}
	if !c.NoHealth {
		c.healthListen = pickOther()
	}
	if c.Admin {
		c.adminListen = pick()
		if h := c.AdminHost; h != "" {
			_, port, _ := net.SplitHostPort(c.adminListen)
			c.adminListen = net.JoinHostPort(h, port)
		}
	}
	for _, l := range hold {
		l.Close()
	}
	path := filepath.Join(t.TempDir(), c.InstanceID+".yaml")
	if err := os.WriteFile(path, []byte(c.YAML(addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ID: c.InstanceID, Addr: addr, Config: c, t: t, path: path, log: &syncBuffer{}}
	cmd := exec.Command(bin, "-config", path)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.proc, p.exited = cmd.Process, make(chan struct{})
	go func() {
		cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill()
		if dir := os.Getenv(EnvLogDir); dir != "" {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.log", p.ID, p.proc.Pid)), []byte(p.Log()), 0o644)
		}
		if os.Getenv("TDSGATE_TEST_LOG") != "" {
			t.Logf("log of %s (pid %d):\n%s", p.ID, p.proc.Pid, p.Log())
		} else if t.Failed() {
			t.Logf("log of %s (pid %d), last %d lines (TDSGATE_TEST_LOG=1: all):\n%s", p.ID, p.proc.Pid, failLogLines, p.Tail(failLogLines))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return p, fmt.Errorf("instance %s exited at start (code %d):\n%s", p.ID, p.ExitCode(), p.Log())
		default:
		}
		if time.Now().After(deadline) {
			p.Kill()
			return p, fmt.Errorf("instance %s not listening on %s after 10s:\n%s", p.ID, addr, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts a new process with p's config on p's address (after a
// Kill or Term of p).
func (p *Proxy) Restart() *Proxy {
	p.t.Helper()
	return Start(p.t, p.Config)
}

// MetricsAddr is the address of /metrics ("" without Config.Metrics).
func (p *Proxy) MetricsAddr() string { return p.Config.metricsListen }

// HealthAddr is the address of /health and /peer/lease ("" with
// Config.NoHealth).
func (p *Proxy) HealthAddr() string { return p.Config.healthListen }

// AdminAddr is the admin API's listen address ("" without Config.Admin).
func (p *Proxy) AdminAddr() string { return p.Config.adminListen }

// Pid is the process id.
func (p *Proxy) Pid() int { return p.proc.Pid }

// Pause stops the process with SIGSTOP, as a VM pause or a frozen
// container does: its sockets stay open, nothing runs. Resume undoes it.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proc.Signal(syscall.SIGSTOP)
	p.paused = true
}

// Resume continues a paused process (SIGCONT).
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proc.Signal(syscall.SIGCONT)
	p.paused = false
}

// Paused reports whether the process is stopped by Pause.
func (p *Proxy) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Reload rewrites the config file with c (same instance id and address)
// and sends SIGHUP.
func (p *Proxy) Reload(c Config) {
	p.t.Helper()
	c.InstanceID, c.Listen = p.ID, p.Addr
	if err := os.WriteFile(p.path, []byte(c.YAML(p.Addr)), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.Config = c
	p.mu.Unlock()
	p.proc.Signal(syscall.SIGHUP)
}

// ExitCode is the exit code once the process is gone (-1 if killed by a
// signal or still running).
func (p *Proxy) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return -1
	}
	return p.state.ExitCode()
}

// Kill sends SIGKILL and waits for the exit (no-op if already gone).
func (p *Proxy) Kill() {
	p.proc.Signal(syscall.SIGKILL)
	<-p.exited
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Term sends SIGTERM and waits up to d for the exit; it reports the exit
// code (-1: killed after d).
func (p *Proxy) Term(d time.Duration) int {
	p.proc.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(d):
		p.Kill()
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode()
}

// Exited reports whether the process is gone.
func (p *Proxy) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log is the instance's output (slog text lines) so far.
func (p *Proxy) Log() string { return p.log.String() }

// failLogLines is how much of an instance's log a failed test shows.
const failLogLines = 300

// Tail is the last n lines of the log.
func (p *Proxy) Tail(n int) string {
	ls := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// LogLines returns the log lines containing substr (case-insensitive), as
// `grep -i` would.
func (p *Proxy) LogLines(substr string) []string {
	var out []string
	s := strings.ToLower(substr)
	for _, l := range strings.Split(p.Log(), "\n") {
		if strings.Contains(strings.ToLower(l), s) {
			out = append(out, l)
		}
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
