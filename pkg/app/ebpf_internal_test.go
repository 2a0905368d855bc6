package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
)

// fakeTracker is an ebpf.Tracker whose per-address open counts the test
// sets; it follows the real one's bookkeeping (Counts reports every
// watched bucket, each address's total).
type fakeTracker struct {
	mu      sync.Mutex
	open    map[netip.AddrPort]int64
	watches map[string]map[netip.AddrPort]bool
	closed  bool
}

var _ ebpf.Tracker = (*fakeTracker)(nil)

func newFakeTracker() *fakeTracker {
	return &fakeTracker{open: map[netip.AddrPort]int64{}, watches: map[string]map[netip.AddrPort]bool{}}
}

func (f *fakeTracker) Watch(b string, a netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.watches[b] == nil {
		f.watches[b] = map[netip.AddrPort]bool{}
	}
	f.watches[b][a] = true
	return nil
}

func (f *fakeTracker) Unwatch(b string, a netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watches[b], a)
	if len(f.watches[b]) == 0 {
		delete(f.watches, b)
	}
	return nil
}

func (f *fakeTracker) Counts() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int64{}
	for b, as := range f.watches {
		for a := range as {
			out[b] += f.open[a]
		}
	}
	return out
}

func (f *fakeTracker) Close() error  { f.closed = true; return nil }
func (f *fakeTracker) Enabled() bool { return true }

func (f *fakeTracker) set(a netip.AddrPort, n int64) {
	f.mu.Lock()
	f.open[a] = n
	f.mu.Unlock()
}

// keys lists the tracker's watch keys, sorted.
func (f *fakeTracker) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for b, as := range f.watches {
		for a := range as {
			out = append(out, b+"="+a.String())
		}
	}
	slices.Sort(out)
	return out
}

func cfgWith(addrs ...string) *config.Config {
	c := &config.Config{}
	for i, a := range addrs {
		c.Buckets = append(c.Buckets, config.Bucket{ID: fmt.Sprintf("b%d", i+1), Address: a})
	}
	return c
}

func TestEBPFWatchSync(t *testing.T) {
	tr := newFakeTracker()
	a := &App{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w := &ebpfWatch{tr: tr, app: a, current: map[string]bucketWatch{}, retired: map[string]map[netip.AddrPort]struct{}{}}
	x := netip.MustParseAddrPort("127.0.0.1:14331")
	y := netip.MustParseAddrPort("127.0.0.1:14332")
	z := netip.MustParseAddrPort("127.0.0.1:14333")
	check := func(step string, wantKeys []string, wantCounts map[string]int64) {
		t.Helper()
		got := w.counts()
		if fmt.Sprint(got) != fmt.Sprint(wantCounts) {
			t.Errorf("%s: counts %v, want %v", step, got, wantCounts)
		}
		if k := tr.keys(); fmt.Sprint(k) != fmt.Sprint(wantKeys) {
			t.Errorf("%s: watches %v, want %v", step, k, wantKeys)
		}
	}

	w.sync(cfgWith(x.String(), y.String()))
	tr.set(x, 2)
	tr.set(y, 1)
	check("start", []string{"b1=" + x.String(), "b2=" + y.String()}, map[string]int64{"b1": 2, "b2": 1})

	// Unchanged addresses are left alone.
	w.sync(cfgWith(x.String(), y.String()))
	check("same", []string{"b1=" + x.String(), "b2=" + y.String()}, map[string]int64{"b1": 2, "b2": 1})

	// b1 moves to z, b2 goes: x is retired (2 still open), y unwatched.
	w.sync(cfgWith(z.String()))
	tr.set(z, 3)
	check("moved", []string{"b1=" + z.String(), retiredKey("b1", x) + "=" + x.String()}, map[string]int64{"b1": 5})

	// The old connections end: the retired watch goes.
	tr.set(x, 0)
	check("drained", []string{"b1=" + z.String()}, map[string]int64{"b1": 3})

	// Back to x while connections to z are open: z retired, x current.
	tr.set(x, 1)
	w.sync(cfgWith(x.String()))
	check("back", []string{"b1=" + x.String(), retiredKey("b1", z) + "=" + z.String()}, map[string]int64{"b1": 4})
	// And to z again: its retired watch becomes the current one.
	w.sync(cfgWith(z.String()))
	check("again", []string{"b1=" + z.String(), retiredKey("b1", x) + "=" + x.String()}, map[string]int64{"b1": 4})

	// An address that does not resolve: not watched, no count, the old
	// one retired.
	w.sync(cfgWith("no-such-host.invalid:1433"))
	check("unresolvable", []string{retiredKey("b1", x) + "=" + x.String(), retiredKey("b1", z) + "=" + z.String()}, map[string]int64{"b1": 4})

	w.close()
	w.close()
	if !tr.closed {
		t.Error("tracker not closed")
	}
	w.sync(cfgWith(y.String())) // after close: nothing
}

func TestResolveBackend(t *testing.T) {
	ctx := context.Background()
	r := net.DefaultResolver
	for in, want := range map[string]string{
		"127.0.0.1:1433":          "[127.0.0.1:1433]",
		"[::ffff:10.0.0.1]:1433":  "[10.0.0.1:1433]",
		"[fe80::1%lo]:1433":       "[[fe80::1]:1433]",
		"[2001:db8::1]:1433":      "[[2001:db8::1]:1433]",
		"localhost:1433":          "", // checked below: whatever it resolves to, all of it
		"127.0.0.1:ms-sql-s":      "[127.0.0.1:1433]",
		"127.0.0.1:0":             "error",
		"127.0.0.1":               "error",
		"no-such-host.invalid:14": "error",
	} {
		got, err := resolveBackend(ctx, r, in)
		switch {
		case want == "error":
			if err == nil {
				t.Errorf("resolveBackend(%q) = %v, want an error", in, got)
			}
		case err != nil:
			if in == "127.0.0.1:ms-sql-s" { // no services database here
				t.Logf("resolveBackend(%q): %v", in, err)
				continue
			}
			t.Errorf("resolveBackend(%q): %v", in, err)
		case want == "":
			ips, _ := r.LookupNetIP(ctx, "ip", "localhost")
			if len(got) == 0 || len(got) > len(ips) || !slices.ContainsFunc(got, func(a netip.AddrPort) bool { return a.Addr().IsLoopback() }) {
				t.Errorf("resolveBackend(%q) = %v (lookup %v)", in, got, ips)
			}
		case fmt.Sprint(got) != want:
			t.Errorf("resolveBackend(%q) = %v, want %s", in, got, want)
		}
	}
}
