// Package cluster runs tdsgate instances as separate processes for
// multi-instance tests: it builds cmd/proxy once, writes each instance's
// YAML config (instance_id, a free loopback port, redis.addr, buckets),
// starts the processes, and can SIGKILL or SIGTERM them. Its tests
// (cluster_test.go) check that a bucket's cap holds across instances
// sharing a real redis-server, through churn, instance death, Redis death
// and restart, and clean stops.
package cluster

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// Binary builds ./cmd/proxy once per test process (without -race: the
// instances are the system under test, the race detector runs in the test
// process) and returns its path. Cleanup removes it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
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
}

// Config is what varies between the test instances' configs.
type Config struct {
	InstanceID        string
	RedisAddr         string
	HeartbeatTTL      time.Duration // default 3s
	HeartbeatInterval time.Duration // default 500ms
	ReaperInterval    time.Duration // default 1s
	OpTimeout         time.Duration // default 300ms
	FallbackDivisor   int
	DrainTimeout      time.Duration // default 2s
	Buckets           []Bucket
	// DefaultBucket takes every login (no routes); default the first bucket.
	DefaultBucket string
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
	b.WriteString("log_level: info\nhealth_listen: \"\"\nmetrics_listen: \"\"\n")
	fmt.Fprintf(&b, "redis:\n  addr: %q\n  heartbeat_ttl: %s\n  heartbeat_interval: %s\n  reaper_interval: %s\n  op_timeout: %s\n  fallback_divisor: %d\n",
		c.RedisAddr, d(c.HeartbeatTTL, 3*time.Second), d(c.HeartbeatInterval, 500*time.Millisecond),
		d(c.ReaperInterval, time.Second), d(c.OpTimeout, 300*time.Millisecond), c.FallbackDivisor)
	b.WriteString("buckets:\n")
	for _, k := range c.Buckets {
		fmt.Fprintf(&b, "  - id: %s\n    address: %s\n    encryption: login\n    trust_server_certificate: true\n    server_name: localhost\n", k.ID, k.Address)
		fmt.Fprintf(&b, "    max_connections: %d\n    max_queue_size: %d\n    queue_timeout: %s\n    dial_timeout: 2s\n    login_timeout: 10s\n",
			k.MaxConnections, k.MaxQueueSize, d(k.QueueTimeout, 30*time.Second))
		b.WriteString("    breaker:\n      failures: 50\n      probe_interval: 200ms\n")
	}
	def := c.DefaultBucket
	if def == "" && len(c.Buckets) > 0 {
		def = c.Buckets[0].ID
	}
	fmt.Fprintf(&b, "default_bucket: %s\n", def)
	return b.String()
}

// Proxy is one running instance.
type Proxy struct {
	ID   string
	Addr string
	t    testing.TB

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{}
	state  *os.ProcessState
	log    *syncBuffer
}

// Start writes c's config and starts an instance on a free port; it waits
// until the port accepts connections and stops the process at cleanup.
func Start(t testing.TB, c Config) *Proxy {
	t.Helper()
	bin := Binary(t)
	addr := freeAddr(t)
	path := filepath.Join(t.TempDir(), c.InstanceID+".yaml")
	if err := os.WriteFile(path, []byte(c.YAML(addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ID: c.InstanceID, Addr: addr, t: t, log: &syncBuffer{}}
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
		if t.Failed() || os.Getenv("TDSGATE_TEST_LOG") != "" {
			t.Logf("log of %s:\n%s", p.ID, p.Log())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("instance %s exited at start:\n%s", p.ID, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s not listening on %s after 10s:\n%s", p.ID, addr, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the exit (no-op if already gone).
func (p *Proxy) Kill() {
	p.proc.Signal(syscall.SIGKILL)
	<-p.exited
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

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
