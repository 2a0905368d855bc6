package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// ErrUnavailable is wrapped by every error Open returns: the tracker could
// not be loaded or attached here (no CAP_BPF, no cgroup v2, an old kernel,
// not Linux). The proxy logs it once and runs without the tracker.
var ErrUnavailable = errors.New("ebpf tracker unavailable")

// ErrClosed is returned by Watch and Unwatch after Close.
var ErrClosed = errors.New("ebpf tracker closed")

// Log attribute keys used by this package.
const (
	logKeyCgroup = "cgroup"
	logKeyError  = "err"
)

// Tracker counts the TCP connections this host holds open to each bucket's
// backend address. SockOps and NoOp implement it. Its methods are safe for
// concurrent use.
type Tracker interface {
	// Watch starts counting connections to addr under bucket. Connections
	// already open are not picked up. Watching the same pair twice is a
	// no-op; a bucket may watch several addresses, and several buckets
	// may watch one address (each then reports its total).
	Watch(bucket string, addr netip.AddrPort) error
	// Unwatch stops reporting addr under bucket, and stops counting new
	// connections to addr once no bucket watches it.
	Unwatch(bucket string, addr netip.AddrPort) error
	// Counts returns, per watched bucket, the connections currently open
	// to its addresses (established minus closed). A bucket watched but
	// with none open reports 0. NoOp returns an empty map.
	Counts() map[string]int64
	// Close detaches the program and frees its maps. Idempotent.
	Close() error
	// Enabled reports whether this is a working kernel tracker.
	Enabled() bool
}

// New opens the tracker on cgroupPath (empty: the process's own cgroup) and
// falls back to NoOp when that fails. It logs exactly one line: Open's when
// attached, a Warn with the reason when not.
func New(cgroupPath string, log *slog.Logger) Tracker {
	if log == nil {
		log = slog.Default()
	}
	t, err := Open(cgroupPath, log)
	if err != nil {
		log.Warn("ebpf tracker unavailable, backend connections are not counted by the kernel", logKeyError, err)
		return NoOp{}
	}
	return t
}

// NoOp is the Tracker used when eBPF is unavailable or disabled: it
// accepts watches and counts nothing.
type NoOp struct{}

var _ Tracker = NoOp{}

func (NoOp) Watch(string, netip.AddrPort) error   { return nil }
func (NoOp) Unwatch(string, netip.AddrPort) error { return nil }
func (NoOp) Counts() map[string]int64             { return map[string]int64{} }
func (NoOp) Close() error                         { return nil }
func (NoOp) Enabled() bool                        { return false }

// unavailable wraps err in ErrUnavailable.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, fmt.Errorf(format, args...))
}

// normalize checks addr and returns it in the form the kernel side keys
// it: an IPv4-mapped IPv6 address as IPv4, and no IPv6 zone (the key has
// none).
func normalize(addr netip.AddrPort) (netip.AddrPort, error) {
	ip := addr.Addr()
	if !ip.IsValid() || addr.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("ebpf: watch %v: need an IP address and a non-zero port", addr)
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), addr.Port()), nil
}

// watchSet is the userspace bookkeeping behind Watch/Unwatch: which
// addresses each bucket reports, and how many buckets watch each address
// (the kernel's watched map holds an address while that is above zero).
type watchSet struct {
	buckets map[string]map[netip.AddrPort]struct{}
	refs    map[netip.AddrPort]int
}

func newWatchSet() watchSet {
	return watchSet{buckets: map[string]map[netip.AddrPort]struct{}{}, refs: map[netip.AddrPort]int{}}
}

// add records bucket→addr. It reports whether addr was watched by no
// bucket before (the caller must add it to the kernel map).
func (w *watchSet) add(bucket string, addr netip.AddrPort) (firstForAddr bool) {
	set := w.buckets[bucket]
	if set == nil {
		set = map[netip.AddrPort]struct{}{}
		w.buckets[bucket] = set
	}
	if _, ok := set[addr]; ok {
		return false
	}
	set[addr] = struct{}{}
	w.refs[addr]++
	return w.refs[addr] == 1
}

// remove undoes add. It reports whether addr is no longer watched by any
// bucket (the caller must delete it from the kernel map).
func (w *watchSet) remove(bucket string, addr netip.AddrPort) (lastForAddr bool) {
	set := w.buckets[bucket]
	if _, ok := set[addr]; !ok {
		return false
	}
	delete(set, addr)
	if len(set) == 0 {
		delete(w.buckets, bucket)
	}
	w.refs[addr]--
	if w.refs[addr] > 0 {
		return false
	}
	delete(w.refs, addr)
	return true
}
