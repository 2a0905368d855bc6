package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
)

// ebpfResolveTimeout bounds the resolution of every bucket's backend
// address at start and at each reload.
const ebpfResolveTimeout = 5 * time.Second

// ebpfWatch keeps the eBPF tracker's watches in step with the buckets'
// backend addresses, and sums what the tracker counts into a per-bucket
// figure for /metrics and /health (App.SetEBPF).
//
// Each bucket watches every address its backend's host:port resolves to
// (a literal IP, or all of a name's A and AAAA records), resolved at start
// and at each reload; later DNS changes are not followed.
//
// When a reload changes a bucket's address, sessions already relayed to the
// old backend go on and still hold their slots. So the old addresses are
// not dropped at once: they are retired, still watched (under a key of
// their own in the tracker) and still added to the bucket's count, until no
// connection to them is open. A bucket removed by a reload is unwatched at
// once, as its slots leave the limiter's snapshot too.
type ebpfWatch struct {
	tr  ebpf.Tracker
	app *App

	mu      sync.Mutex
	current map[string]bucketWatch                 // bucket → its backend's address and what it resolved to
	retired map[string]map[netip.AddrPort]struct{} // bucket → old addresses still counted
	closed  bool
}

type bucketWatch struct {
	address string // host:port as configured
	addrs   []netip.AddrPort
}

// retiredKey is the tracker bucket under which an old address of bucket is
// watched. Bucket ids cannot contain '|'.
func retiredKey(bucket string, addr netip.AddrPort) string {
	return "retired|" + bucket + "|" + addr.String()
}

// startEBPF opens the tracker as the config says, watches every bucket's
// backend and wires the counts into /metrics and /health. Unavailable
// eBPF is not an error: ebpf.New logs one line and returns the no-op
// tracker, and the instance carries on without the kernel's count.
func (a *App) startEBPF(cfg *config.Config) {
	var tr ebpf.Tracker
	if cfg.EBPF.Enabled {
		tr = ebpf.New(cfg.EBPF.Cgroup, a.log)
	} else {
		tr = ebpf.NoOp{}
		a.log.Info("ebpf tracker disabled by config (ebpf.enabled: false): backend connections are not counted by the kernel")
	}
	w := &ebpfWatch{tr: tr, app: a, current: map[string]bucketWatch{}, retired: map[string]map[netip.AddrPort]struct{}{}}
	a.ebpf = w
	w.sync(cfg) // nothing to do without a working tracker
	// Without one, /health shows "ebpf" as disabled and /metrics has no
	// proxy_ebpf_* series.
	a.SetEBPF(tr.Enabled, w.counts)
}

// sync watches the backend addresses of cfg's buckets and unwatches (or
// retires) the rest. A bucket whose address is unchanged keeps its watch
// as it is. An address that does not resolve is logged and left
// unwatched: the bucket then has no proxy_ebpf_* series.
func (w *ebpfWatch) sync(cfg *config.Config) {
	if w == nil || !w.tr.Enabled() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	log := w.app.log
	var changed []config.Bucket
	want := map[string]bool{}
	for _, b := range cfg.Buckets {
		want[b.ID] = true
		if cur, ok := w.current[b.ID]; !ok || cur.address != b.Address {
			changed = append(changed, b)
		}
	}
	// Buckets gone from the config: their slots leave the limiter too.
	for id, cur := range w.current {
		if !want[id] {
			w.unwatch(id, cur.addrs)
			delete(w.current, id)
		}
	}
	for id, old := range w.retired {
		if !want[id] {
			for a := range old {
				w.unretire(id, a)
			}
		}
	}
	resolved := resolveAll(changed)
	for i, b := range changed {
		r := resolved[i]
		old, had := w.current[b.ID]
		if r.err != nil {
			log.Warn("ebpf: backend address does not resolve, its connections are not counted by the kernel",
				"bucket", b.ID, "address", b.Address, "err", r.err)
			if had {
				w.retire(b.ID, old.addrs)
				delete(w.current, b.ID)
			}
			continue
		}
		var stale []netip.AddrPort
		for _, a := range old.addrs {
			if !slices.Contains(r.addrs, a) {
				stale = append(stale, a)
			}
		}
		w.retire(b.ID, stale)
		var watched []netip.AddrPort
		for _, a := range r.addrs {
			err := w.tr.Watch(b.ID, a)
			w.unretire(b.ID, a) // back to an address it had before: watched again first, so no connect is missed
			if err != nil {
				log.Warn("ebpf: watching a backend address failed", "bucket", b.ID, "address", a.String(), "err", err)
				continue
			}
			watched = append(watched, a)
		}
		w.current[b.ID] = bucketWatch{address: b.Address, addrs: watched}
		log.Debug("ebpf: watching backend", "bucket", b.ID, "address", b.Address, "resolved", fmt.Sprint(watched))
	}
}

// unwatch stops counting addrs under bucket. Errors only mean the tracker
// was closed, so they are ignored.
func (w *ebpfWatch) unwatch(bucket string, addrs []netip.AddrPort) {
	for _, a := range addrs {
		_ = w.tr.Unwatch(bucket, a)
	}
}

// retire moves addrs from bucket's current watch to its retired ones.
// The retired watch starts before the current one ends, so no close of a
// connection already open is missed (the kernel pairs closes with opens as
// long as someone watches the address).
func (w *ebpfWatch) retire(bucket string, addrs []netip.AddrPort) {
	for _, a := range addrs {
		if err := w.tr.Watch(retiredKey(bucket, a), a); err == nil {
			set := w.retired[bucket]
			if set == nil {
				set = map[netip.AddrPort]struct{}{}
				w.retired[bucket] = set
			}
			set[a] = struct{}{}
		}
		_ = w.tr.Unwatch(bucket, a)
	}
}

// unretire stops counting a retired address of bucket.
func (w *ebpfWatch) unretire(bucket string, a netip.AddrPort) {
	set := w.retired[bucket]
	if _, ok := set[a]; !ok {
		return
	}
	_ = w.tr.Unwatch(retiredKey(bucket, a), a)
	delete(set, a)
	if len(set) == 0 {
		delete(w.retired, bucket)
	}
}

// counts is the kernel's count of open backend connections per bucket
// that has a watch: its current addresses plus its retired ones (a
// retired address whose count is back to 0 is unwatched here).
func (w *ebpfWatch) counts() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	raw := w.tr.Counts()
	out := make(map[string]int64, len(w.current))
	for id := range w.current {
		out[id] = raw[id]
	}
	for id, set := range w.retired {
		for a := range set {
			n := raw[retiredKey(id, a)]
			if n == 0 {
				w.unretire(id, a)
				continue
			}
			out[id] += n
		}
	}
	return out
}

// close detaches the tracker (at the end of Shutdown).
func (w *ebpfWatch) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	if err := w.tr.Close(); err != nil {
		w.app.log.Warn("ebpf: closing the tracker", "err", err)
	}
}

type resolution struct {
	addrs []netip.AddrPort
	err   error
}

// resolveAll resolves the buckets' addresses in parallel under one
// ebpfResolveTimeout.
func resolveAll(bs []config.Bucket) []resolution {
	out := make([]resolution, len(bs))
	if len(bs) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), ebpfResolveTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() {
			addrs, err := resolveBackend(ctx, net.DefaultResolver, b.Address)
			out[i] = resolution{addrs, err}
		})
	}
	wg.Wait()
	return out
}

// resolveBackend turns a backend's host:port into the addresses the dialer
// may connect to: a literal IP as it is, a name as every address it
// resolves to; the port as a number or a service name. The result is
// sorted and without duplicates.
func resolveBackend(ctx context.Context, r *net.Resolver, hostport string) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := r.LookupPort(ctx, "tcp", portStr)
		if lerr != nil {
			return nil, lerr
		}
		port = uint64(p)
	}
	if port == 0 {
		return nil, errors.New("port 0")
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(strings.TrimSuffix(host, ".")); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = r.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	set := map[netip.AddrPort]struct{}{}
	for _, ip := range ips {
		set[netip.AddrPortFrom(ip.Unmap().WithZone(""), uint16(port))] = struct{}{}
	}
	out := slices.SortedFunc(maps.Keys(set), func(a, b netip.AddrPort) int { return a.Compare(b) })
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no address", host)
	}
	return out, nil
}
