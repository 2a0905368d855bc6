package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }

func (l *logBuf) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.b.String()) {
		if strings.Contains(strings.ToLower(line), substr) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// startLogged starts cfg like testenv.Proxy, logging into the returned
// buffer.
func startLogged(t *testing.T, cfg *config.Config) (*app.App, *logBuf) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a, logs
}

// requireEBPF fails the test, saying what it needs, when the tracker
// cannot load here. CI runs as root: this test must not skip.
func requireEBPF(t *testing.T) {
	t.Helper()
	tr, err := ebpf.Open("", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("this test needs the eBPF tracker: run it as root (CAP_BPF and CAP_NET_ADMIN) on Linux with a cgroup v2 mount: %v", err)
	}
	tr.Close()
}

// ebpfComponent returns /health's "ebpf" component and its detail.
func ebpfComponent(t *testing.T, a *app.App) (admin.Component, map[string]map[string]int64) {
	t.Helper()
	_, r := getHealth(t, a)
	for _, c := range r.Components {
		if c.Name != "ebpf" {
			continue
		}
		detail := map[string]map[string]int64{}
		if c.Detail != nil {
			b, _ := json.Marshal(c.Detail)
			if err := json.Unmarshal(b, &detail); err != nil {
				t.Fatalf("ebpf detail %s: %v", b, err)
			}
		}
		return c, detail
	}
	t.Fatalf("/health has no ebpf component: %+v", r)
	return admin.Component{}, nil
}

// waitEBPF polls /metrics until bucket's kernel count and drift are as
// given.
func waitEBPF(t *testing.T, a *app.App, bucket string, conns, drift float64) {
	t.Helper()
	c := fmt.Sprintf(`proxy_ebpf_backend_connections{bucket=%q}`, bucket)
	d := fmt.Sprintf(`proxy_ebpf_drift{bucket=%q}`, bucket)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrapeMetrics(t, a)
		gc, okc := m[c]
		gd, okd := m[d]
		if okc && okd && gc == conns && gd == drift {
			t.Logf("%s = %v, %s = %v", c, gc, d, gd)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s = %v (present %v), %s = %v (present %v); want %v and %v", c, gc, okc, d, gd, okd, conns, drift)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHealthDrift polls /health (a fresh round every admin.DefaultCacheTTL)
// until bucket's ebpf detail is {kernel, limiter, drift 0}.
func waitHealthDrift(t *testing.T, a *app.App, bucket string, kernel int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, d := ebpfComponent(t, a)
		if c.Status != admin.StatusHealthy {
			t.Fatalf("ebpf component %+v, want healthy", c)
		}
		got := d[bucket]
		if got["kernel"] == kernel && got["limiter"] == kernel && got["drift"] == 0 {
			t.Logf("/health ebpf detail: %v", d)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s /health ebpf detail %v, want %s kernel %d limiter %d drift 0", d, bucket, kernel, kernel)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ebpfConfig(t *testing.T, n int) *config.Config {
	cfg := observedConfig(t, n)
	cfg.EBPF.Enabled = true
	return cfg
}

func dialN(t *testing.T, a *app.App, n int) []*tdsclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cs []*tdsclient.Conn
	for range n {
		c, err := dialBucket1(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if r, err := c.Exec("SELECT 1", 0); err != nil || len(r.Rows) != 1 {
			t.Fatalf("SELECT 1: %v %v", r, err)
		}
		cs = append(cs, c)
	}
	return cs
}

func closeAll(cs []*tdsclient.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// TestEBPFCountsBackendConnections: with the tracker attached (to the
// test process's cgroup: the stand-in is in-process on a port of its own,
// so nothing else connects to it), five sessions are five backend
// connections in the kernel and no drift, in /metrics and in /health;
// closing them brings both back to 0.
func TestEBPFCountsBackendConnections(t *testing.T) {
	requireEBPF(t)
	a, logs := startLogged(t, ebpfConfig(t, 1))
	if c, _ := ebpfComponent(t, a); c.Status != admin.StatusHealthy {
		t.Fatalf("ebpf component %+v, want healthy; logs:\n%s", c, strings.Join(logs.lines("ebpf"), "\n"))
	}
	if l := logs.lines("ebpf tracker"); len(l) != 1 || !strings.Contains(l[0], "attached") {
		t.Errorf("want one line saying the tracker is attached, got %q", l)
	}
	waitEBPF(t, a, "bucket-001", 0, 0)

	const n = 5
	cs := dialN(t, a, n)
	waitEBPF(t, a, "bucket-001", n, 0)
	waitHealthDrift(t, a, "bucket-001", n)

	closeAll(cs)
	waitEBPF(t, a, "bucket-001", 0, 0)
	waitHealthDrift(t, a, "bucket-001", 0)
}

// TestEBPFReload: a reload that moves a bucket to another backend watches
// the new address; sessions still on the old one count under the bucket
// until they end (their slots are still held). A bucket removed by a
// reload has no series any more.
func TestEBPFReload(t *testing.T) {
	requireEBPF(t)
	cfg := ebpfConfig(t, 2)
	a := testenv.Proxy(t, cfg)
	waitEBPF(t, a, "bucket-001", 0, 0)
	waitEBPF(t, a, "bucket-002", 0, 0)
	old := dialN(t, a, 2)
	waitEBPF(t, a, "bucket-001", 2, 0)

	// bucket-001 moves to another stand-in (like the first, it takes
	// bucket-001's password), and bucket-002 goes.
	other := testenv.Buckets(t, 1, nil)[0]
	nc := *cfg
	nc.Buckets = []config.Bucket{cfg.Buckets[0]}
	nc.Buckets[0].Address = other.Addr()
	nc.Routes = cfg.Routes[:1]
	if err := a.Reload(&nc); err != nil {
		t.Fatal(err)
	}
	moved := dialN(t, a, 3)
	waitEBPF(t, a, "bucket-001", 5, 0)
	if _, ok := scrapeMetrics(t, a)[`proxy_ebpf_backend_connections{bucket="bucket-002"}`]; ok {
		t.Error("bucket-002 still has eBPF series after it was removed")
	}
	closeAll(old)
	waitEBPF(t, a, "bucket-001", 3, 0)
	closeAll(moved)
	waitEBPF(t, a, "bucket-001", 0, 0)

	// Back to the first address: counted again.
	if err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	again := dialN(t, a, 1)
	waitEBPF(t, a, "bucket-001", 1, 0)
	closeAll(again)
	waitEBPF(t, a, "bucket-001", 0, 0)
}

// TestStartWithoutEBPF: a tracker that cannot load (the cgroup is not a
// cgroup v2 directory) or is switched off costs one log line; the proxy
// serves logins and /health shows ebpf as disabled, healthy overall.
func TestStartWithoutEBPF(t *testing.T) {
	for _, tc := range []struct {
		name string
		ebpf config.EBPF
		want string
	}{
		{"unavailable", config.EBPF{Enabled: true, Cgroup: t.TempDir()}, "unavailable"},
		{"disabled", config.EBPF{Enabled: false}, "disabled by config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := observedConfig(t, 1)
			cfg.EBPF = tc.ebpf
			a, logs := startLogged(t, cfg)
			c, err := dialBucket1(context.Background(), a)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := c.Exec("SELECT 1", 0); err != nil || len(r.Rows) != 1 {
				t.Fatalf("SELECT 1: %v %v", r, err)
			}
			c.Close()
			if l := logs.lines("ebpf"); len(l) != 1 || !strings.Contains(l[0], tc.want) {
				t.Errorf("want exactly one eBPF log line saying %q, got %d:\n%s", tc.want, len(l), strings.Join(l, "\n"))
			} else {
				t.Logf("log: %s", l[0])
			}
			code, r := getHealth(t, a)
			if code != 200 || r.Status != admin.StatusHealthy {
				t.Errorf("/health %d %s, want 200 healthy: %+v", code, r.Status, r.Components)
			}
			if comp, _ := ebpfComponent(t, a); comp != (admin.Component{Name: "ebpf", Status: admin.StatusDisabled}) {
				t.Errorf("ebpf component %+v, want disabled", comp)
			}
			if m := scrapeMetrics(t, a); len(m) == 0 {
				t.Fatal("empty scrape")
			} else {
				for s := range m {
					if strings.HasPrefix(s, "proxy_ebpf_") {
						t.Errorf("series %s without a tracker", s)
					}
				}
			}
		})
	}
}

// TestEBPFPooled: an idle pooled backend connection still holds its slot,
// so after the clients leave, the kernel still counts the connections the
// pool keeps, and drift stays 0 throughout.
func TestEBPFPooled(t *testing.T) {
	requireEBPF(t)
	cfg := pooledConfig(t, testenv.Buckets(t, 1, nil))
	cfg.HealthListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.EBPF.Enabled = true
	a := testenv.Proxy(t, cfg)
	cs := dialN(t, a, 3)
	waitEBPF(t, a, "bucket-001", 3, 0)
	closeAll(cs)
	waitIdle(t, poolOf(t, a), 3)
	waitEBPF(t, a, "bucket-001", 3, 0)
	waitHealthDrift(t, a, "bucket-001", 3)
	again := dialN(t, a, 2) // reused: no new backend connection
	waitEBPF(t, a, "bucket-001", 3, 0)
	closeAll(again)
}
