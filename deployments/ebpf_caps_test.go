package deployments_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// The distroless image's user.
const nonroot = "65532"

// dockerDefaultCaps is Docker's default capability set (its bounding set
// before cap_add), in setpriv's spelling.
var dockerDefaultCaps = []string{"chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid",
	"setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write"}

// capBits are the capabilities the test looks for in /proc/PID/status.
var capBits = map[string]uint{"net_admin": 12, "sys_admin": 21, "perfmon": 38, "bpf": 39}

// TestEBPFCapsAsNonroot: bin/proxy runs as uid 65532 with exactly the compose proxies' cap_add, in a cgroup
// v2 directory it does not own, and its eBPF tracker loads, attaches to
// that cgroup and counts a session: proxy_ebpf_backend_connections goes
// 0 → 1 → 0. Two ways to hold the capabilities:
//   - ambient: setpriv --ambient-caps (what a runtime that sets ambient
//     capabilities gives a non-root process);
//   - file: the image's way (Docker gives a non-root container's cap_add
//     only to its bounding set): permitted file capabilities on the binary
//     (setcap …=p, as deployments/Dockerfile), no ambient or inheritable
//     set, a bounding set of Docker's defaults plus cap_add; the proxy
//     raises them itself. Built static as the image builds it, and with
//     cgo as `make build` may (pkg/ebpf/caps.go's other path).
//
// And the set is minimal: without any one of them, or without cap_add in
// the bounding set, the tracker does not load (the proxy logs "ebpf
// tracker unavailable", naming what is missing, and serves on).
func TestEBPFCapsAsNonroot(t *testing.T) {
	for _, tool := range []string{"setpriv", "setcap"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: apt-get install util-linux libcap2-bin (tools/deps.sh installs them)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (to switch to uid 65532 with chosen capabilities): CI runs make test as root")
	}
	capAdd := composeCapAdd(t)
	t.Logf("compose proxies' cap_add: %v", capAdd)
	if len(capAdd) == 0 {
		t.Fatal("the compose proxies have no cap_add: the eBPF tracker cannot load in them")
	}

	dir := sharedTempDir(t)
	// bin/proxy as `make build` builds it (cgo as the toolchain has it),
	// and as the image builds it (static, CGO_ENABLED=0).
	bin, static := filepath.Join(dir, "proxy"), filepath.Join(dir, "proxy-static")
	for _, b := range []struct{ out, cgo string }{{bin, ""}, {static, "CGO_ENABLED=0"}} {
		build := exec.Command("go", "build", "-o", b.out, "./cmd/proxy/")
		build.Dir = ".."
		build.Env = append(os.Environ(), "GOFLAGS=")
		if b.cgo != "" {
			build.Env = append(build.Env, b.cgo)
		}
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/proxy %s: %v\n%s", b.cgo, err, out)
		}
	}
	// The image's file capabilities, on a copy of each.
	fcaps := "cap_" + strings.Join(capAdd, ",cap_") + "=p"
	fileBin, fileCgoBin := filepath.Join(dir, "proxy-static-filecaps"), filepath.Join(dir, "proxy-filecaps")
	for from, to := range map[string]string{static: fileBin, bin: fileCgoBin} {
		copyFile(t, from, to)
		if out, err := exec.Command("setcap", fcaps, to).CombinedOutput(); err != nil {
			t.Fatalf("setcap %s: %v\n%s", fcaps, err, out)
		}
	}
	cg := childCgroup(t)
	backend := testenv.Buckets(t, 1, nil)[0]

	type run struct {
		name    string
		bin     string
		ambient []string // ambient (and inheritable) set
		bound   []string // bounding set
		loads   bool
	}
	runs := []run{
		{name: "ambient", bin: bin, ambient: capAdd, bound: capAdd, loads: true},
		{name: "file", bin: fileBin, bound: append(slices.Clone(dockerDefaultCaps), capAdd...), loads: true},
		// A cgo binary cannot raise them on every thread: it loads on one.
		{name: "file-cgo", bin: fileCgoBin, bound: append(slices.Clone(dockerDefaultCaps), capAdd...), loads: true},
		{name: "file-without-cap_add", bin: fileBin, bound: dockerDefaultCaps},
		{name: "none", bin: bin, bound: dockerDefaultCaps},
	}
	for _, c := range capAdd {
		rest := slices.DeleteFunc(slices.Clone(capAdd), func(s string) bool { return s == c })
		runs = append(runs, run{name: "ambient-without-" + c, bin: bin, ambient: rest, bound: capAdd})
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			p := startNonroot(t, dir, r.bin, cg, backend.Addr(), r.ambient, r.bound)
			status := procStatus(t, p.pid)
			if !strings.Contains(status["Uid"], nonroot) || !strings.Contains(status["Gid"], nonroot) {
				t.Fatalf("proxy runs as Uid %q Gid %q, want %s", status["Uid"], status["Gid"], nonroot)
			}
			t.Logf("uid %s, CapEff %s (%v), CapAmb %s, CapBnd %s", nonroot, status["CapEff"], capNames(status["CapEff"]), status["CapAmb"], status["CapBnd"])
			if eff := capNames(status["CapEff"]); slices.Contains(eff, "sys_admin") || slices.Contains(eff, "perfmon") {
				t.Errorf("effective set %v holds more than asked", eff)
			}
			if !r.loads {
				p.waitLog(t, "ebpf tracker unavailable")
				if l := p.lines("ebpf tracker unavailable"); len(l) != 1 || !strings.Contains(l[0], "missing CAP_") {
					t.Errorf("want one line naming the missing capability, got %q", l)
				}
				if m := p.metrics(t); strings.Contains(m, "proxy_ebpf_") {
					t.Errorf("proxy_ebpf_* series without a tracker")
				}
				// It still serves.
				closeSession(t, p.session(t))
				return
			}
			p.waitLog(t, "ebpf tracker attached")
			if l := p.lines("ebpf tracker attached"); len(l) != 1 || !strings.Contains(l[0], cg) {
				t.Errorf("want the tracker attached to %s, got %q", cg, l)
			}
			p.waitEBPF(t, 0)
			s := p.session(t)
			p.waitEBPF(t, 1)
			closeSession(t, s)
			p.waitEBPF(t, 0)
		})
	}
}

// composeCapAdd returns the compose proxies' cap_add (the same for the
// three), lower case, without CAP_.
func composeCapAdd(t *testing.T) []string {
	t.Helper()
	c := loadCompose(t)
	var caps []string
	for n := 1; n <= 3; n++ {
		s := c.Services[fmt.Sprintf("proxy-%d", n)]
		var got []string
		for _, cp := range s.CapAdd {
			got = append(got, strings.ToLower(strings.TrimPrefix(strings.ToUpper(cp), "CAP_")))
		}
		if n == 1 {
			caps = got
		} else if !slices.Equal(got, caps) {
			t.Errorf("proxy-%d cap_add %v, proxy-1 %v", n, got, caps)
		}
	}
	return caps
}

// sharedTempDir is a temporary directory uid 65532 can read.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tdsgate-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// childCgroup creates a cgroup v2 directory owned by root (mode 0755, as a
// container's own cgroup is to its non-root process) and removes it at
// cleanup, once empty.
func childCgroup(t *testing.T) string {
	t.Helper()
	mount, err := ebpf.Cgroup2Mount()
	if err != nil {
		t.Fatalf("no cgroup v2 mount: %v (the eBPF tracker needs one)", err)
	}
	dir := filepath.Join(mount, fmt.Sprintf("tdsgate-caps-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("creating a cgroup v2 directory: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cgroup %s not removed", dir)
	})
	return dir
}

type nonrootProxy struct {
	pid     int
	addr    string
	metrics func(t *testing.T) string
	logMu   sync.Mutex
	log     bytes.Buffer
}

func (p *nonrootProxy) Write(b []byte) (int, error) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.Write(b)
}

func (p *nonrootProxy) lines(substr string) []string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	var out []string
	for l := range strings.Lines(p.log.String()) {
		if strings.Contains(l, substr) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

func (p *nonrootProxy) waitLog(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.lines(substr)) == 0 {
		if time.Now().After(deadline) {
			p.logMu.Lock()
			defer p.logMu.Unlock()
			t.Fatalf("no log line with %q in 10s; log:\n%s", substr, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEBPF waits until /metrics shows n kernel-counted backend connections
// of bucket-001 and no drift.
func (p *nonrootProxy) waitEBPF(t *testing.T, n int) {
	t.Helper()
	want := []string{fmt.Sprintf("proxy_ebpf_backend_connections{bucket=\"bucket-001\"} %d\n", n), "proxy_ebpf_drift{bucket=\"bucket-001\"} 0\n"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := p.metrics(t)
		if strings.Contains(m, want[0]) && strings.Contains(m, want[1]) {
			t.Logf("%s", strings.TrimSpace(want[0]))
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for l := range strings.Lines(m) {
				if strings.HasPrefix(l, "proxy_ebpf_") {
					got = append(got, strings.TrimSpace(l))
				}
			}
			t.Fatalf("after 10s /metrics has %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *nonrootProxy) session(t *testing.T) *tdsclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := tdsclient.Dial(ctx, tdsclient.Options{Addr: p.addr, User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", Encrypt: tdsclient.EncryptLogin})
	if err != nil {
		t.Fatalf("session through the proxy: %v", err)
	}
	if r, err := c.Exec("SELECT 1", 0); err != nil || len(r.Rows) != 1 {
		c.Close()
		t.Fatalf("SELECT 1: %v %v", r, err)
	}
	return c
}

func closeSession(t *testing.T, c *tdsclient.Conn) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Logf("close: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNonroot starts bin under setpriv as uid/gid 65532 with no
// supplementary groups, ambient (and inheritable) capabilities ambient
// and bounding set bound, in cgroup cg, in front of backend.
func startNonroot(t *testing.T, dir, bin, cg, backend string, ambient, bound []string) *nonrootProxy {
	t.Helper()
	h, err := passhash.NewWithIterations(testenv.Passwords[0], passhash.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	p := &nonrootProxy{addr: freeAddr(t)}
	metricsAddr, healthAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`instance_id: caps-test
listen: %s
health_listen: %s
metrics_listen: %s
admin_listen: ""
log_level: info
log_format: text
drain_timeout: 2s
ebpf:
  enabled: true
buckets:
  - id: bucket-001
    address: %s
    encryption: login
    trust_server_certificate: true
    server_name: localhost
    max_connections: 5
    max_queue_size: 1
    queue_timeout: 5s
routes:
  - bucket: bucket-001
    user: sa
    password_hash: %s
`, p.addr, healthAddr, metricsAddr, backend, h)
	cfgPath := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	setCaps := func(cs []string) string {
		s := "-all"
		for _, c := range cs {
			s += ",+" + c
		}
		return s
	}
	args := []string{"--reuid", nonroot, "--regid", nonroot, "--clear-groups",
		"--inh-caps", setCaps(ambient), "--bounding-set", setCaps(bound)}
	if len(ambient) > 0 {
		args = append(args, "--ambient-caps", setCaps(ambient))
	}
	args = append(args, bin, "-config", cfgPath)
	cgFD, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgFD.Close()
	cmd := exec.Command("setpriv", args...)
	cmd.Stdout, cmd.Stderr = p, p
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgFD.Fd())}
	cmd.Env = append(os.Environ(), "REDIS_ADDR=", "INSTANCE_ID=", "LISTEN_ADDR=", "HEALTH_ADDR=", "METRICS_ADDR=", "EBPF_ENABLED=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("setpriv %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("setpriv %s", strings.Join(args, " "))
	p.pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("the proxy did not stop on SIGTERM within 10s")
		}
		if t.Failed() {
			p.logMu.Lock()
			t.Logf("proxy log:\n%s", p.log.String())
			p.logMu.Unlock()
		}
	})
	p.metrics = func(t *testing.T) string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + healthAddr + "/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("the proxy exited at start; log:\n%s", p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy is not live after 15s; log:\n%s", p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// procStatus returns the "Key:\tvalue" lines of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// capNames names the capabilities of capBits set in a hex mask.
func capNames(hex string) []string {
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return []string{"?" + hex}
	}
	var out []string
	for n, b := range capBits {
		if v&(1<<b) != 0 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
