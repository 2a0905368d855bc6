package deployments_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The local stack binds the runbook's fixed ports. go test runs packages
// in parallel, so whoever starts it holds this lock for the whole run; no
// other test in the repository binds these ports (they all listen on
// 127.0.0.1:0).
const stackLock = "/tmp/tdsgate-stack.lock"

// stackPorts are every port the local stack listens on.
var stackPorts = []int{1433, 6379, 8404, 9090, 14331, 14332, 14333, 14341, 14342, 14343,
	11433, 11434, 11435, 11443, 11444, 11445, 18081, 18082, 18083, 19091, 19092, 19093}

const stackBudget = 6 * time.Minute

// TestLocalStack: make stack-up, every runbook scenario (bench/scenario
// all, the runbook's sqlcmd commands among them), the real client address through HAProxy (checkRealClientAddress),
// promtool on each proxy's /metrics (checkPromtoolStack), make stack-down; then no process from the pid files is alive, every
// port is free, and no proxy:* key was left in Redis. Under 6 minutes.
func TestLocalStack(t *testing.T) {
	for _, tool := range []string{"redis-server", "redis-cli", "haproxy", "curl", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: tools/deps.sh installs what the tests need (apt-get install redis-server haproxy curl make)", tool)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// The runbook-sqlcmd scenario runs the runbook's commands with the real sqlcmd.
	if _, err := os.Stat(filepath.Join(root, "bin", "sqlcmd")); err != nil {
		t.Fatalf("bin/sqlcmd: %v: bash tools/deps.sh builds go-sqlcmd there (make test runs it)", err)
	}
	unlock := lockStack(t)
	defer unlock()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), stackBudget)
	defer cancel()
	run := func(name string, args ...string) (string, error) {
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "MAKEFLAGS=", "GOFLAGS=")
		cmd.WaitDelay = 5 * time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		t.Logf("$ %s %s (%.1fs)\n%s", name, strings.Join(args, " "), time.Since(t0).Seconds(), out.String())
		return out.String(), err
	}

	runDir := filepath.Join(root, "deployments/local/.run")
	if pids := readPids(t, runDir); len(pids) > 0 {
		for c, pid := range pids {
			if alive(pid) {
				t.Fatalf("the local stack already runs (%s pid %d): make stack-down first", c, pid)
			}
		}
	}
	for _, p := range stackPorts {
		if !portFree(p) {
			t.Fatalf("port %d is in use before the test: something else runs on the stack's ports", p)
		}
	}

	downDone := false
	down := func() string {
		if downDone {
			return ""
		}
		downDone = true
		out, err := run("make", "--no-print-directory", "stack-down")
		if err != nil {
			t.Errorf("make stack-down: %v", err)
		}
		return out
	}
	defer down()

	if _, err := run("make", "--no-print-directory", "stack-up"); err != nil {
		t.Fatalf("make stack-up: %v", err)
	}
	tUp := time.Since(start)
	offsets := logOffsets(runDir)
	pids := readPids(t, runDir)
	for _, c := range []string{"bucket-1", "bucket-2", "bucket-3", "redis", "proxy-1", "proxy-2", "proxy-3", "haproxy"} {
		if _, ok := pids[c]; !ok {
			t.Errorf("no pid file for %s after stack-up", c)
		}
	}

	t1 := time.Now()
	out, err := run("go", "run", "./bench/scenario", "all")
	if err != nil {
		t.Errorf("scenarios: %v", err)
	}
	if !strings.Contains(out, "== summary") || strings.Contains(out, "❌") {
		t.Errorf("a scenario failed (see the output above)")
	}
	tScen := time.Since(t1)
	checkRealClientAddress(t, runDir, offsets)
	checkPromtoolStack(t)

	// The kill/restart scenarios restarted components: read the pids again.
	for c, pid := range readPids(t, runDir) {
		pids[c+"#after"] = pid
	}
	t2 := time.Now()
	downOut := down()
	tDown := time.Since(t2)
	if strings.Contains(downOut, "redis:") && !strings.Contains(downOut, "redis: 0 proxy:* keys left") {
		t.Errorf("stack-down left proxy:* keys in Redis")
	}
	for c, pid := range pids {
		if alive(pid) {
			t.Errorf("after stack-down, %s (pid %d) is still alive", strings.TrimSuffix(c, "#after"), pid)
		}
	}
	for _, p := range stackPorts {
		if !portFree(p) {
			t.Errorf("after stack-down, port %d is still in use", p)
		}
	}
	if left := readPids(t, runDir); len(left) > 0 {
		t.Errorf("pid files left after stack-down: %v", left)
	}
	total := time.Since(start)
	t.Logf("timings: stack-up %.1fs, scenarios %.1fs, stack-down %.1fs, total %.1fs", tUp.Seconds(), tScen.Seconds(), tDown.Seconds(), total.Seconds())
	if total > stackBudget {
		t.Errorf("took %s, budget %s", total.Round(time.Second), stackBudget)
	}
}

// lockStack takes the machine-wide lock on the stack's ports.
func lockStack(t *testing.T) func() {
	t.Helper()
	f, err := os.OpenFile(stackLock, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			t.Fatalf("flock %s: %v", stackLock, err)
		}
	case <-time.After(10 * time.Minute):
		f.Close()
		t.Fatalf("waited 10 minutes for %s: another run holds the stack's ports", stackLock)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// readPids reads deployments/local/.run/*.pid.
func readPids(t *testing.T, dir string) map[string]int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	out := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return out
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func portFree(p int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// checkPromtoolStack: `promtool check metrics` reports nothing on each
// running proxy's /metrics, after the scenarios (Redis, queues, refusals,
// restarts: every family has its series).
func checkPromtoolStack(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (tools/deps.sh installs it)")
	}
	for n := 1; n <= 3; n++ {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", 19090+n))
		if err != nil {
			t.Errorf("proxy-%d /metrics: %v", n, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("proxy-%d /metrics: %d %v", n, resp.StatusCode, err)
			continue
		}
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics on proxy-%d: %v\n%s", n, err, out)
			continue
		}
		t.Logf("proxy-%d /metrics: promtool clean (%d families)", n, bytes.Count(body, []byte("# TYPE ")))
	}
}
