package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the proxy once per test process.
func binary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tdsgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "proxy")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type proc struct {
	cmd *exec.Cmd
	out *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T, config string) *proc {
	cmd := exec.Command(binary(t), "-config", config)
	p := &proc{cmd: cmd, out: &syncBuf{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return p
}

func (p *proc) waitLog(t *testing.T, s string) {
	t.Helper()
	testenv.WaitUntil(t, func() bool { return strings.Contains(p.out.String(), s) })
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeConfig(t *testing.T, path, listen, backend string, maxConns int) {
	h, err := passhash.NewWithIterations(testenv.Passwords[0], passhash.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`instance_id: %s
listen: %s
listeners: 2
health_listen: ""
metrics_listen: ""
admin_listen: ""
drain_timeout: 5s
buckets:
  - id: bucket-001
    address: %s
    encryption: none
    max_connections: %d
    max_queue_size: 0
routes:
  - bucket: bucket-001
    user: sa
    password_hash: "%s"
`, filepath.Base(path), listen, backend, maxConns, h)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two proxy processes bind the same port (SO_REUSEPORT); SIGTERM drains
// one while the other keeps serving; SIGHUP reloads the limits of the
// other from its file without dropping its sessions.
func TestProcessesShareAPortAndSignals(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	cfgA, cfgB := filepath.Join(dir, "proxy-a"), filepath.Join(dir, "proxy-b")
	writeConfig(t, cfgA, listen, buckets[0].Addr(), 30)
	writeConfig(t, cfgB, listen, buckets[0].Addr(), 30)
	a := start(t, cfgA)
	a.waitLog(t, "tdsgate listening")
	b := start(t, cfgB)
	b.waitLog(t, "tdsgate listening")

	login := tdsclient.Options{Addr: listen, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db"}
	dial := func() (*tdsclient.Conn, error) { return tdsclient.Dial(context.Background(), login) }
	// Both instances serve the port.
	var held []*tdsclient.Conn
	for i := 0; i < 20; i++ {
		c, err := dial()
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		held = append(held, c)
	}
	if !strings.Contains(a.out.String(), "session accepted") || !strings.Contains(b.out.String(), "session accepted") {
		t.Error("the kernel did not spread connections over both processes")
	}
	for _, c := range held {
		c.Close()
	}

	// SIGTERM A: it drains and exits; B keeps serving every new login.
	a.cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- a.cmd.Wait() }()
	deadline := time.Now().Add(3 * time.Second)
	failures := 0
	for time.Now().Before(deadline) {
		c, err := dial()
		if err != nil {
			failures++
			continue
		}
		c.Close()
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("instance A exited with %v\n%s", err, a.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("instance A did not exit after SIGTERM")
	}
	if !strings.Contains(a.out.String(), "shutdown: done") {
		t.Errorf("no clean shutdown in A's log:\n%s", a.out.String())
	}
	t.Logf("logins during A's shutdown that failed: %d", failures)

	// SIGHUP B with max_connections 1: a held session survives, and a
	// second login is refused by the new limit (50005, no queue).
	held1, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer held1.Close()
	writeConfig(t, cfgB, listen, buckets[0].Addr(), 1)
	b.cmd.Process.Signal(syscall.SIGHUP)
	b.waitLog(t, "config reloaded")
	if r, err := held1.Exec("SELECT 3", 0); err != nil || r.Scalar() != int64(3) {
		t.Fatalf("session across SIGHUP: %v %v", r, err)
	}
	_, err = dial()
	if le, ok := err.(*tdsclient.LoginError); !ok || le.Number != 50005 {
		t.Fatalf("after SIGHUP: %v, want 50005", err)
	}
	// A reload that fails keeps the running config.
	os.WriteFile(cfgB, []byte("listen: [not valid"), 0o600)
	b.cmd.Process.Signal(syscall.SIGHUP)
	b.waitLog(t, "reload failed, keeping the running config")
}
