package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// sample is one "name{labels} value" line of the text format.
var sample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// scrapeMetrics GETs /metrics and returns series → value.
func scrapeMetrics(t *testing.T, a *app.App) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		g := sample.FindStringSubmatch(l)
		if g == nil {
			t.Fatalf("/metrics line does not parse: %q", l)
		}
		v, err := strconv.ParseFloat(g[2], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		out[g[1]] = v
	}
	return out
}

func getHealth(t *testing.T, a *app.App) (int, admin.Report) {
	t.Helper()
	resp, err := http.Get("http://" + a.HealthAddr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r admin.Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

func observedConfig(t *testing.T, n int) *config.Config {
	cfg := testenv.Config(t, testenv.Buckets(t, n, nil))
	cfg.HealthListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	return cfg
}

func dialBucket1(ctx context.Context, a *app.App) (*tdsclient.Conn, error) {
	return tdsclient.Dial(ctx, tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", Encrypt: tdsclient.EncryptLogin, Timeout: 10 * time.Second})
}

func loginErrNumber(err error) int32 {
	var le *tdsclient.LoginError
	if errors.As(err, &le) {
		return le.Number
	}
	return 0
}

// TestMetricsThroughProxy: max_connections 1, max_queue_size 1. One
// holder, one queued client that times out (50004), one refused at once
// (50005); then the holder's session ends. /metrics moves by exactly that.
func TestMetricsThroughProxy(t *testing.T) {
	cfg := observedConfig(t, 1)
	cfg.Buckets[0].MaxConnections = 1
	cfg.Buckets[0].MaxQueueSize = 1
	cfg.Buckets[0].QueueTimeout = 400 * time.Millisecond
	a := testenv.Proxy(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const b = `{bucket="bucket-001"}`
	rej := func(code int) string {
		return fmt.Sprintf(`proxy_rejections_total{bucket="bucket-001",code="%d"}`, code)
	}

	before := scrapeMetrics(t, a)
	for _, s := range []string{rej(50004), rej(50005), "proxy_connections_total" + b, "proxy_queue_wait_duration_seconds_count" + b,
		`proxy_sessions_total{mode="splice"}`, "proxy_connections_active" + b, "proxy_queue_length" + b} {
		if _, ok := before[s]; !ok {
			t.Fatalf("series %s missing before any session", s)
		}
	}

	holder, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if m := scrapeMetrics(t, a); m["proxy_connections_active"+b] != 1 {
		t.Fatalf("active %v with one holder", m["proxy_connections_active"+b])
	}

	queued := make(chan error, 1)
	go func() { _, err := dialBucket1(ctx, a); queued <- err }()
	testenv.WaitUntil(t, func() bool { return a.Limiter().Snapshot()[0].Queued == 1 })
	if m := scrapeMetrics(t, a); m["proxy_queue_length"+b] != 1 {
		t.Fatalf("queue length %v with one client queued", m["proxy_queue_length"+b])
	}
	if _, err := dialBucket1(ctx, a); loginErrNumber(err) != 50005 {
		t.Fatalf("third client: %v, want 50005", err)
	}
	if err := <-queued; loginErrNumber(err) != 50004 {
		t.Fatalf("queued client: %v, want 50004", err)
	}

	if _, err := holder.Exec("SELECT 1", 0); err != nil {
		t.Fatal(err)
	}
	holder.Close()
	testenv.WaitUntil(t, func() bool {
		return scrapeMetrics(t, a)[`proxy_sessions_total{mode="splice"}`] == before[`proxy_sessions_total{mode="splice"}`]+1
	})

	after := scrapeMetrics(t, a)
	delta := func(s string) float64 { return after[s] - before[s] }
	for s, want := range map[string]float64{
		rej(50005):                    1,
		rej(50004):                    1,
		rej(50002):                    0,
		"proxy_connections_total" + b: 1,
		"proxy_queue_wait_duration_seconds_count" + b:      1,
		"proxy_backend_connect_duration_seconds_count" + b: 1,
		`proxy_sessions_total{mode="splice"}`:              1,
		`proxy_sessions_total{mode="tls"}`:                 0,
	} {
		if got := delta(s); got != want {
			t.Errorf("%s moved by %v, want %v", s, got, want)
		}
	}
	if after["proxy_connections_active"+b] != 0 || after["proxy_queue_length"+b] != 0 {
		t.Errorf("active %v, queue %v after every client left", after["proxy_connections_active"+b], after["proxy_queue_length"+b])
	}
	if delta(`proxy_relay_bytes_total{direction="client_to_server",mode="splice"}`) <= 0 ||
		delta(`proxy_relay_bytes_total{direction="server_to_client",mode="splice"}`) <= 0 {
		t.Error("relay bytes did not move")
	}
	les := 0
	for s := range after {
		if strings.HasPrefix(s, `proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="`) {
			les++
		}
	}
	if les < 10 {
		t.Errorf("%d proxy_queue_wait_duration_seconds_bucket lines with le labels", les)
	}
	if _, ok := after[`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="+Inf"}`]; !ok {
		t.Error("no le=\"+Inf\" bucket")
	}
	// Standalone: the "global" view is this instance's.
	if after["proxy_bucket_global_max"+b] != 1 || after["proxy_bucket_global_connections"+b] != 0 {
		t.Errorf("global max %v count %v", after["proxy_bucket_global_max"+b], after["proxy_bucket_global_connections"+b])
	}
	if _, ok := after["process_cpu_seconds_total"]; !ok {
		t.Error("no process metrics")
	}
}

// TestHealthThroughProxy: the app's /health lists redis (disabled when
// standalone, then as probed) and every bucket, follows a reload, shows
// a bucket down, the eBPF hook, and /metrics follows the reload.
func TestHealthThroughProxy(t *testing.T) {
	cfg := observedConfig(t, 1)
	a := testenv.Proxy(t, cfg)
	code, r := getHealth(t, a)
	if code != 200 || r.Status != admin.StatusHealthy || r.InstanceID != "test-proxy" || len(r.Components) != 3 ||
		r.Components[0] != (admin.Component{Name: "redis", Status: admin.StatusDisabled}) ||
		r.Components[1].Name != "sqlserver-bucket-001" || r.Components[1].Status != admin.StatusHealthy ||
		r.Components[2] != (admin.Component{Name: "ebpf", Status: admin.StatusDisabled}) {
		t.Fatalf("%d %+v", code, r)
	}

	// Reload with a second bucket whose backend is down.
	nc := *cfg
	nc.Buckets = append([]config.Bucket(nil), cfg.Buckets...)
	down := testenv.Buckets(t, 1, nil)[0]
	nb := cfg.Buckets[0]
	nb.ID, nb.Address = "bucket-002", down.Addr()
	down.Close()
	nc.Buckets = append(nc.Buckets, nb)
	if err := a.Reload(&nc); err != nil {
		t.Fatal(err)
	}
	a.SetRedisHealth(func(context.Context) error { return errors.New("redis: connection refused") })
	a.SetEBPF(func() bool { return true }, func() map[string]int64 { return map[string]int64{"bucket-001": 2} })
	time.Sleep(admin.DefaultCacheTTL + 100*time.Millisecond) // let the cached round expire
	code, r = getHealth(t, a)
	if code != 200 || r.Status != admin.StatusDegraded {
		t.Fatalf("%d %s", code, r.Status)
	}
	got := map[string]admin.Status{}
	for _, c := range r.Components {
		got[c.Name] = c.Status
	}
	want := map[string]admin.Status{"redis": admin.StatusUnhealthy, "sqlserver-bucket-001": admin.StatusHealthy,
		"sqlserver-bucket-002": admin.StatusUnhealthy, "ebpf": admin.StatusHealthy}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("components %v, want %v", got, want)
	}
	d, _ := json.Marshal(r.Components[len(r.Components)-1].Detail)
	if string(d) != `{"bucket-001":{"drift":2,"kernel":2,"limiter":0}}` { // bucket-002 is not watched
		t.Fatalf("ebpf detail %s", d)
	}
	m := scrapeMetrics(t, a)
	for s, v := range map[string]float64{
		`proxy_connections_active{bucket="bucket-002"}`:       0,
		`proxy_ebpf_backend_connections{bucket="bucket-001"}`: 2,
		`proxy_ebpf_drift{bucket="bucket-001"}`:               2,
		`proxy_breaker_open{bucket="bucket-001"}`:             0,
	} {
		if got, ok := m[s]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", s, got, ok, v)
		}
	}

	// Logins to the dead bucket open its breaker: proxy_breaker_open and
	// backend_dial errors move.
	nc2 := nc
	nc2.Routes = append([]config.Route{{Bucket: "bucket-002", User: "sa", Database: "down_db"}}, nc.Routes...)
	if err := a.Reload(&nc2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range nb.Breaker.Failures {
		_, err := tdsclient.Dial(ctx, tdsclient.Options{Addr: a.Addr(), User: "sa", Password: "x", Database: "down_db"})
		if loginErrNumber(err) != 50002 {
			t.Fatalf("login to a dead bucket: %v, want 50002", err)
		}
	}
	m = scrapeMetrics(t, a)
	if m[`proxy_breaker_open{bucket="bucket-002"}`] != 1 || m[`proxy_connection_errors_total{reason="backend_dial"}`] < float64(nb.Breaker.Failures) ||
		m[`proxy_rejections_total{bucket="bucket-002",code="50002"}`] != float64(nb.Breaker.Failures) {
		t.Fatalf("breaker %v, dial errors %v, 50002s %v", m[`proxy_breaker_open{bucket="bucket-002"}`],
			m[`proxy_connection_errors_total{reason="backend_dial"}`], m[`proxy_rejections_total{bucket="bucket-002",code="50002"}`])
	}
}

// TestHealthDuringDrain: while Shutdown drains, /health answers 503
// unhealthy and /health/live 200; once it returns, both ports are closed.
func TestHealthDuringDrain(t *testing.T) {
	cfg := observedConfig(t, 1)
	cfg.DrainTimeout = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	holder, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if code, r := getHealth(t, a); code != 200 || r.Status != admin.StatusHealthy {
		t.Fatalf("before drain: %d %s", code, r.Status)
	}
	healthAddr, metricsAddr := a.HealthAddr(), a.MetricsAddr()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown(ctx) }()
	testenv.WaitUntil(t, func() bool { code, _ := getHealth(t, a); return code == http.StatusServiceUnavailable })
	code, r := getHealth(t, a)
	if code != 503 || r.Status != admin.StatusUnhealthy || !r.Draining {
		t.Fatalf("draining: %d %+v", code, r)
	}
	resp, err := http.Get("http://" + healthAddr + "/health/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/health/live while draining: %d", resp.StatusCode)
	}
	if m := scrapeMetrics(t, a); m[`proxy_connections_active{bucket="bucket-001"}`] != 1 {
		t.Fatal("metrics not served during the drain")
	}
	holder.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, addr := range []string{healthAddr, metricsAddr} {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			t.Errorf("%s still serves after Shutdown", addr)
		}
	}
}

// TestAdminDisabled: testenv's default config turns both servers off.
func TestAdminDisabled(t *testing.T) {
	a := testenv.Proxy(t, testenv.Config(t, testenv.Buckets(t, 1, nil)))
	if a.HealthAddr() != "" || a.MetricsAddr() != "" {
		t.Fatalf("health %q metrics %q with both disabled", a.HealthAddr(), a.MetricsAddr())
	}
}
