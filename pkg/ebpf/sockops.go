//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

// The build constraint is the generated tracker_bpfel.go's: little-endian
// Linux. sockops_other.go covers the rest.

package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Address families as the kernel side keys them (struct backend_key).
const (
	afInet  = unix.AF_INET
	afInet6 = unix.AF_INET6
)

// SockOps is the eBPF Tracker: the sock_ops program from bpf/tracker.c
// attached to one cgroup v2.
type SockOps struct {
	log    *slog.Logger
	cgroup string

	mu     sync.Mutex
	objs   trackerObjects
	link   link.Link
	set    watchSet
	closed bool
}

var _ Tracker = (*SockOps)(nil)

// Open loads the tracker and attaches it to the cgroup v2 directory at
// cgroupPath; empty means the process's own cgroup (DefaultCgroupPath).
// Every error wraps ErrUnavailable and says which step failed. On success
// it logs one line: Info, or Warn when attached at the cgroup v2 root
// (then other processes' connections to watched backends count too).
func Open(cgroupPath string, log *slog.Logger) (*SockOps, error) {
	if log == nil {
		log = slog.Default()
	}
	if cgroupPath == "" {
		p, err := DefaultCgroupPath()
		if err != nil {
			return nil, unavailable("%w", err)
		}
		cgroupPath = p
	}
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupPath, &st); err != nil {
		return nil, unavailable("cgroup %s: %w", cgroupPath, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, unavailable("cgroup %s: not a cgroup v2 directory", cgroupPath)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, so lift it
	// (process-wide); a no-op on newer ones. Its failure only matters if
	// loading fails too, and then loading says more (EPERM: no CAP_BPF).
	memlockErr := rlimit.RemoveMemlock()

	t := &SockOps{log: log, cgroup: cgroupPath, set: newWatchSet()}
	// Loading and attaching need CAP_BPF and CAP_NET_ADMIN effective;
	// withCaps raises them when they are only permitted (caps.go).
	err := withCaps(func() error {
		if err := loadTrackerObjects(&t.objs, nil); err != nil {
			// Without privileges the library's own message can mislead
			// ("prealloc maps not supported"), so name what is missing.
			if hint := missingCaps(); hint != "" {
				return unavailable("load: %s: %w", hint, err)
			}
			if memlockErr != nil {
				return unavailable("load: %w (raising RLIMIT_MEMLOCK also failed: %v)", err, memlockErr)
			}
			return unavailable("load: %w", err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{
			Path:    cgroupPath,
			Attach:  ebpf.AttachCGroupSockOps,
			Program: t.objs.TdsgateSockops,
		})
		if err != nil {
			t.objs.Close()
			return unavailable("attach to %s: %w", cgroupPath, err)
		}
		t.link = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	if mount, err := Cgroup2Mount(); err == nil && filepath.Clean(mount) == filepath.Clean(cgroupPath) {
		log.Warn("ebpf tracker attached at the cgroup v2 root: connections that any process on this host opens to a watched backend are counted", logKeyCgroup, cgroupPath)
	} else {
		log.Info("ebpf tracker attached: counting backend connections in the kernel", logKeyCgroup, cgroupPath)
	}
	return t, nil
}

// Cgroup returns the cgroup v2 directory the program is attached to.
func (t *SockOps) Cgroup() string { return t.cgroup }

// Enabled reports true: this tracker counts.
func (t *SockOps) Enabled() bool { return true }

// Watch implements Tracker.
func (t *SockOps) Watch(bucket string, addr netip.AddrPort) error {
	addr, err := normalize(addr)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if !t.set.add(bucket, addr) {
		return nil // already watched by this or another bucket
	}
	key := keyOf(addr)
	if err := t.objs.Watched.Update(&key, uint8(1), ebpf.UpdateAny); err != nil {
		t.set.remove(bucket, addr)
		return fmt.Errorf("ebpf: watch %s for bucket %q: %w", addr, bucket, err)
	}
	return nil
}

// Unwatch implements Tracker. The address's counters stay in the kernel,
// so watching it again later still pairs each close with its open.
func (t *SockOps) Unwatch(bucket string, addr netip.AddrPort) error {
	addr, err := normalize(addr)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if !t.set.remove(bucket, addr) {
		return nil
	}
	key := keyOf(addr)
	if err := t.objs.Watched.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("ebpf: unwatch %s for bucket %q: %w", addr, bucket, err)
	}
	return nil
}

// Counts implements Tracker: one map lookup per watched address.
func (t *SockOps) Counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int64, len(t.set.buckets))
	if t.closed {
		return out
	}
	for bucket, addrs := range t.set.buckets {
		var n int64
		for addr := range addrs {
			n += t.open(addr)
		}
		out[bucket] = n
	}
	return out
}

// open returns established - closed for addr, 0 when the kernel has not
// counted any connection to it. The two counters are read in one lookup
// but not atomically together, so a close racing the read can make the
// difference briefly negative; it is clamped to 0.
func (t *SockOps) open(addr netip.AddrPort) int64 {
	key := keyOf(addr)
	var c trackerConnCounts
	if err := t.objs.Conns.Lookup(&key, &c); err != nil {
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.log.Debug("ebpf tracker: reading counters", logKeyError, err)
		}
		return 0
	}
	if c.Closed >= c.Established {
		return 0
	}
	return int64(c.Established - c.Closed)
}

// Close implements Tracker: it detaches the program and frees the maps.
func (t *SockOps) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return errors.Join(t.link.Close(), t.objs.Close())
}

// missingCaps names the capabilities loading and attaching a sock_ops
// program needs that this process lacks in its effective set: CAP_BPF and
// CAP_NET_ADMIN, either of which CAP_SYS_ADMIN stands in for. "" when none
// is missing (or the set cannot be read).
func missingCaps() string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return ""
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return ""
	}
	var missing []string
	if !has(unix.CAP_BPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) == 0 {
		return ""
	}
	return "missing " + strings.Join(missing, " and ") + " (or CAP_SYS_ADMIN)"
}

// keyOf is the kernel's key for a normalized address.
func keyOf(addr netip.AddrPort) trackerBackendKey {
	k := trackerBackendKey{Port: uint32(addr.Port())}
	ip := addr.Addr()
	if ip.Is4() {
		k.Family = afInet
		a := ip.As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Family = afInet6
		k.Addr = ip.As16()
	}
	return k
}

// DefaultCgroupPath returns the process's own cgroup v2 directory: its
// "0::" line in /proc/self/cgroup joined to the cgroup2 mount point from
// /proc/self/mountinfo (so it also works under a hybrid v1/v2 layout, where
// cgroup2 is mounted at /sys/fs/cgroup/unified).
func DefaultCgroupPath() (string, error) {
	mount, root, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading own cgroup: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			// A mount of a sub-tree (root other than /) shows the
			// paths below its root.
			if root != "/" {
				if r, ok := strings.CutPrefix(rel, root); ok {
					rel = r
				}
			}
			return filepath.Join(mount, rel), nil
		}
	}
	return "", errors.New("no cgroup v2 entry (0::) in /proc/self/cgroup")
}

// Cgroup2Mount returns where the cgroup2 filesystem is mounted.
func Cgroup2Mount() (string, error) {
	mount, _, err := cgroup2Mount()
	return mount, err
}

// cgroup2Mount returns the first cgroup2 mount point and the cgroup path
// at its root.
func cgroup2Mount() (mount, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) == 0 || fs[0] != "cgroup2" {
			continue
		}
		if fs := strings.Fields(pre); len(fs) >= 5 {
			return unescapeMount(fs[4]), unescapeMount(fs[3]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	return "", "", errors.New("no cgroup2 filesystem mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
