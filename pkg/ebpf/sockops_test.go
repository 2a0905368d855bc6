//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// These tests load the real program, so they need root (CAP_BPF,
// CAP_NET_ADMIN, and the right to create a cgroup) and a cgroup v2 mount.
// They never skip: CI runs them as root, and where that is missing they
// fail saying what is needed (run `sudo go test ./pkg/ebpf/`).
const needs = "the eBPF tests need root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN) and a cgroup v2 mount; run them as root"

// The connecting side runs in a child process (this test binary,
// re-executed) started inside a fresh child cgroup with the program
// attached: a socket belongs to the cgroup of the process that created it,
// and moving the test process itself would leave it stranded on failure.
const envHelper = "TDSGATE_EBPF_DIAL_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envHelper); spec != "" {
		os.Exit(dialHelper(spec))
	}
	os.Exit(m.Run())
}

// dialHelper is the child process. spec is ";"-separated "network addr n"
// dials (network "mapped6" dials a v4 address through an AF_INET6 socket).
// It prints "ready" once all are connected, then obeys stdin: "close" closes
// them all, "rst" closes them with SO_LINGER 0 (a reset); it prints "done"
// and exits at stdin EOF.
func dialHelper(spec string) int {
	var fds []int
	for item := range strings.SplitSeq(spec, ";") {
		f := strings.Fields(item)
		n, _ := strconv.Atoi(f[2])
		ap := netip.MustParseAddrPort(f[1])
		for range n {
			fd, err := dialRaw(f[0], ap)
			if err != nil {
				fmt.Printf("error %s %s: %v\n", f[0], ap, err)
				return 1
			}
			fds = append(fds, fd)
		}
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "rst":
			for _, fd := range fds {
				_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			}
			fallthrough
		case "close":
			for _, fd := range fds {
				unix.Close(fd)
			}
			fds = nil
			fmt.Println("done")
		}
	}
	return 0
}

// dialRaw connects a blocking socket by hand, so the family is explicit.
func dialRaw(network string, ap netip.AddrPort) (int, error) {
	var (
		fam int
		sa  unix.Sockaddr
	)
	switch network {
	case "tcp4":
		fam, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	case "tcp6":
		fam, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	case "mapped6": // ::ffff:a.b.c.d from an AF_INET6 socket
		fam, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: netip.AddrFrom16(ap.Addr().As16()).As16()}
	default:
		return -1, fmt.Errorf("network %q", network)
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// helper is a running dialHelper.
type helper struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startHelper starts the child in cgroup (a directory fd) and waits until
// its connections are up.
func startHelper(t *testing.T, cgroupFD int, spec string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a -race child otherwise sleeps 1 s at exit.
	cmd.Env = append(os.Environ(), envHelper+"="+spec, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the dialling child in the test cgroup: %v", err)
	}
	h := &helper{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(h.stop)
	h.expect("ready")
	return h
}

func (h *helper) expect(want string) {
	h.t.Helper()
	if !h.out.Scan() {
		h.t.Fatalf("child exited before %q: %v", want, h.out.Err())
	}
	if got := h.out.Text(); got != want {
		h.t.Fatalf("child said %q, want %q", got, want)
	}
}

// do sends cmd ("close" or "rst") and waits for the child to finish it.
func (h *helper) do(cmd string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		h.t.Fatal(err)
	}
	h.expect("done")
}

func (h *helper) stop() {
	h.in.Close()
	_ = h.cmd.Wait()
}

// server accepts and holds connections on a loopback address.
type server struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func listen(t *testing.T, network, addr string) *server {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.closeConns() })
	return s
}

func (s *server) addr() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

// closeConns closes the server ends (the backend hanging up).
func (s *server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// openInChildCgroup makes a fresh cgroup v2 directory under the cgroup2
// mount, opens the tracker on it and returns the tracker and an fd of the
// directory for starting children in it. Cleanup closes the tracker and
// removes the cgroup.
func openInChildCgroup(t *testing.T) (*SockOps, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s (euid is %d)", needs, os.Geteuid())
	}
	mount, err := Cgroup2Mount()
	if err != nil {
		t.Fatalf("%s: %v", needs, err)
	}
	dir, err := os.MkdirTemp(mount, "tdsgate-test-")
	if err != nil {
		t.Fatalf("%s: creating a test cgroup under %s: %v", needs, mount, err)
	}
	t.Cleanup(func() {
		// The children have been reaped by now (helper cleanups ran
		// first), so the cgroup is empty.
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing test cgroup: %v", err)
		}
	})
	tr, err := Open(dir, discard())
	if err != nil {
		t.Fatalf("%s: %v", needs, err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return tr, int(f.Fd())
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitCount polls Counts()[bucket] until it is want, for up to 2 s.
func waitCount(t *testing.T, tr Tracker, bucket string, want int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := tr.Counts()[bucket]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Counts()[%q] = %d after 2s, want %d (all: %v)", bucket, got, want, tr.Counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// raw returns the kernel counters for addr, and whether there are any.
func raw(t *testing.T, tr *SockOps, addr netip.AddrPort) (trackerConnCounts, bool) {
	t.Helper()
	key := keyOf(addr)
	var c trackerConnCounts
	err := tr.objs.Conns.Lookup(&key, &c)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return c, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

func spec(network string, addr netip.AddrPort, n int) string {
	return fmt.Sprintf("%s %s %d", network, addr, n)
}

func TestCountsOpenThenClose(t *testing.T) {
	tr, cg := openInChildCgroup(t)
	backend := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0") // not watched
	idle := listen(t, "tcp4", "127.0.0.1:0")  // watched, never dialled
	if err := tr.Watch("b1", backend.addr()); err != nil {
		t.Fatal(err)
	}
	if err := tr.Watch("idle", idle.addr()); err != nil {
		t.Fatal(err)
	}

	h := startHelper(t, cg, spec("tcp4", backend.addr(), 7)+";"+spec("tcp4", other.addr(), 3))
	waitCount(t, tr, "b1", 7)
	got := tr.Counts()
	t.Logf("after 7 connects to %s and 3 to unwatched %s: Counts() = %v", backend.addr(), other.addr(), got)
	if len(got) != 2 || got["idle"] != 0 {
		t.Errorf("Counts() = %v, want exactly b1:7 idle:0", got)
	}
	if c, ok := raw(t, tr, other.addr()); ok {
		t.Errorf("unwatched %s has kernel counters %+v", other.addr(), c)
	}

	h.do("close") // the proxy closes first
	waitCount(t, tr, "b1", 0)
	if c, _ := raw(t, tr, backend.addr()); c.Established != 7 || c.Closed != 7 {
		t.Errorf("kernel counters %+v, want 7 established, 7 closed", c)
	}
	t.Logf("after closing them: Counts() = %v", tr.Counts())
}

func TestBackendHangsUpFirst(t *testing.T) {
	tr, cg := openInChildCgroup(t)
	backend := listen(t, "tcp4", "127.0.0.1:0")
	if err := tr.Watch("b1", backend.addr()); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, cg, spec("tcp4", backend.addr(), 7))
	waitCount(t, tr, "b1", 7)

	// The backend closing its end leaves ours in CLOSE_WAIT: still held
	// by the proxy, still counted.
	backend.closeConns()
	time.Sleep(200 * time.Millisecond)
	if got := tr.Counts()["b1"]; got != 7 {
		t.Errorf("after the backend hung up (CLOSE_WAIT): Counts()[b1] = %d, want 7", got)
	}
	h.do("close")
	waitCount(t, tr, "b1", 0)
}

func TestReset(t *testing.T) {
	tr, cg := openInChildCgroup(t)
	backend := listen(t, "tcp4", "127.0.0.1:0")
	if err := tr.Watch("b1", backend.addr()); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, cg, spec("tcp4", backend.addr(), 7))
	waitCount(t, tr, "b1", 7)
	h.do("rst") // ESTABLISHED straight to CLOSE
	waitCount(t, tr, "b1", 0)
	if c, _ := raw(t, tr, backend.addr()); c.Established != 7 || c.Closed != 7 {
		t.Errorf("kernel counters %+v, want 7 established, 7 closed", c)
	}
}

func TestIPv6AndMapped(t *testing.T) {
	tr, cg := openInChildCgroup(t)
	v4 := listen(t, "tcp4", "127.0.0.1:0")
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("this test needs an IPv6 loopback (::1; sysctl net.ipv6.conf.lo.disable_ipv6=0): %v", err)
	}
	ln6.Close()
	v6 := listen(t, "tcp6", "[::1]:0")
	if err := tr.Watch("v4", v4.addr()); err != nil {
		t.Fatal(err)
	}
	if err := tr.Watch("v6", v6.addr()); err != nil {
		t.Fatal(err)
	}
	// A v4 backend reached from an AF_INET6 socket (::ffff:127.0.0.1)
	// counts under the v4 key; so does one watched in mapped form.
	if err := tr.Watch("v4-mapped-watch", netip.AddrPortFrom(netip.AddrFrom16(v4.addr().Addr().As16()), v4.addr().Port())); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, cg, spec("tcp4", v4.addr(), 2)+";"+spec("mapped6", v4.addr(), 3)+";"+spec("tcp6", v6.addr(), 4))
	waitCount(t, tr, "v4", 5)
	waitCount(t, tr, "v4-mapped-watch", 5)
	waitCount(t, tr, "v6", 4)
	t.Logf("2 tcp4 + 3 v4-mapped tcp6 to %s, 4 tcp6 to %s: Counts() = %v", v4.addr(), v6.addr(), tr.Counts())
	h.do("close")
	waitCount(t, tr, "v4", 0)
	waitCount(t, tr, "v6", 0)
}

func TestUnwatchKeepsPairing(t *testing.T) {
	tr, cg := openInChildCgroup(t)
	backend := listen(t, "tcp4", "127.0.0.1:0")
	a := backend.addr()
	if err := tr.Watch("b1", a); err != nil {
		t.Fatal(err)
	}
	if err := tr.Watch("b2", a); err != nil { // shared address
		t.Fatal(err)
	}
	h := startHelper(t, cg, spec("tcp4", a, 4))
	waitCount(t, tr, "b1", 4)
	waitCount(t, tr, "b2", 4)

	// b1 stops watching: b2 still does, so the kernel keeps counting.
	if err := tr.Unwatch("b1", a); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Counts()["b1"]; ok {
		t.Errorf("b1 still reported after Unwatch: %v", tr.Counts())
	}
	h2 := startHelper(t, cg, spec("tcp4", a, 2))
	waitCount(t, tr, "b2", 6)

	// Nobody watches it: new connections are not counted, but the closes
	// of the counted ones still are.
	if err := tr.Unwatch("b2", a); err != nil {
		t.Fatal(err)
	}
	h3 := startHelper(t, cg, spec("tcp4", a, 5))
	h.do("close")
	h2.do("close")
	h3.do("close")
	if err := tr.Watch("b2", a); err != nil {
		t.Fatal(err)
	}
	waitCount(t, tr, "b2", 0)
	if c, _ := raw(t, tr, a); c.Established != 6 || c.Closed != 6 {
		t.Errorf("kernel counters %+v, want 6 established, 6 closed", c)
	}
}

func TestClosed(t *testing.T) {
	tr, _ := openInChildCgroup(t)
	if !tr.Enabled() {
		t.Error("Enabled() = false")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Watch("b1", netip.MustParseAddrPort("127.0.0.1:1433")); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if got := tr.Counts(); len(got) != 0 {
		t.Errorf("Counts after Close = %v", got)
	}
}

func TestUnavailable(t *testing.T) {
	for _, path := range []string{"/nonexistent/tdsgate-cgroup", t.TempDir()} {
		tr, err := Open(path, discard())
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Open(%q) = %v, %v; want ErrUnavailable", path, tr, err)
			continue
		}
		t.Logf("Open(%q): %v", path, err)
	}

	var buf bytes.Buffer
	tr := New("/nonexistent/tdsgate-cgroup", slog.New(slog.NewTextHandler(&buf, nil)))
	if _, ok := tr.(NoOp); !ok || tr.Enabled() {
		t.Fatalf("New on a bad path = %T (Enabled %v), want NoOp", tr, tr.Enabled())
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), "level=WARN") {
		t.Errorf("New logged %d lines, want one warning:\n%s", n, buf.String())
	}
	if err := tr.Watch("b1", netip.MustParseAddrPort("127.0.0.1:1433")); err != nil {
		t.Error(err)
	}
	if got := tr.Counts(); got == nil || len(got) != 0 {
		t.Errorf("NoOp Counts() = %#v, want empty", got)
	}
	if err := tr.Unwatch("b1", netip.MustParseAddrPort("127.0.0.1:1433")); err != nil {
		t.Error(err)
	}
	if err := tr.Close(); err != nil {
		t.Error(err)
	}
}

// TestOpenDefault attaches to the test process's own cgroup (the proxy's
// default) and detaches again.
func TestOpenDefault(t *testing.T) {
	var buf bytes.Buffer
	tr, err := Open("", slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatalf("%s: %v", needs, err)
	}
	defer tr.Close()
	if want, _ := DefaultCgroupPath(); tr.Cgroup() != want {
		t.Errorf("Cgroup() = %q, want %q", tr.Cgroup(), want)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("Open logged %d lines, want one:\n%s", n, buf.String())
	}
	t.Logf("Open(\"\") logged: %s", strings.TrimSpace(buf.String()))
	tr2 := New("", discard())
	defer tr2.Close()
	if !tr2.Enabled() {
		t.Error(`New("") fell back to NoOp where Open("") works`)
	}
}

func TestDefaultCgroupPath(t *testing.T) {
	p, err := DefaultCgroupPath()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Errorf("DefaultCgroupPath() = %q: statfs type %#x, %v; want a cgroup2 directory", p, st.Type, err)
	}
	t.Logf("DefaultCgroupPath() = %s", p)
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup/unified`: "/sys/fs/cgroup/unified",
		`/mnt/a\040b`:            "/mnt/a b",
		`/x\134y`:                `/x\y`,
		`/trailing\04`:           `/trailing\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
