package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/clock"
	"github.com/tdsgate/tdsgate/pkg/metrics"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

type env struct {
	stands   []*server.Server
	redisErr atomic.Pointer[error]
	redisN   atomic.Int64
	draining atomic.Bool
	extra    []admin.Check
	srv      *admin.Server
}

func target(id string, addr string) *backend.Target {
	return &backend.Target{Bucket: id, Address: addr, Encryption: backend.EncryptLogin, DialTimeout: time.Second}
}

// start runs stand-ins and a health server over them (with a Redis probe
// unless standalone).
func start(t *testing.T, n int, standalone bool, mod func(*admin.HealthOptions)) *env {
	t.Helper()
	e := &env{stands: testenv.Buckets(t, n, nil)}
	ho := admin.HealthOptions{
		InstanceID: "proxy-1",
		Draining:   e.draining.Load,
		CacheTTL:   -1, // every request probes, unless a test says otherwise
		Checks: func() []admin.Check {
			var redis func(context.Context) error
			if !standalone {
				redis = func(context.Context) error {
					e.redisN.Add(1)
					if p := e.redisErr.Load(); p != nil {
						return *p
					}
					return nil
				}
			}
			cs := []admin.Check{admin.RedisCheck(redis)}
			for i, s := range e.stands {
				id := fmt.Sprintf("bucket-%03d", i+1)
				cs = append(cs, admin.BucketCheck(id, target(id, s.Addr())))
			}
			return append(cs, e.extra...)
		},
	}
	if mod != nil {
		mod(&ho)
	}
	srv, err := admin.Start(admin.Options{HealthAddr: "127.0.0.1:0", Health: admin.NewHealth(ho), Log: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	e.srv = srv
	return e
}

// get fetches url and decodes its JSON body into a generic map (to check
// the exact shape) and into v.
func get(t *testing.T, url string, v any) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, m
}

func (e *env) health(t *testing.T) (int, admin.Report, map[string]any) {
	t.Helper()
	var r admin.Report
	code, m := get(t, "http://"+e.srv.HealthAddr()+"/health", &r)
	return code, r, m
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func component(t *testing.T, r admin.Report, name string) admin.Component {
	t.Helper()
	for _, c := range r.Components {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %q in %+v", name, r.Components)
	return admin.Component{}
}

func TestHealthAllHealthy(t *testing.T) {
	e := start(t, 3, false, nil)
	code, r, raw := e.health(t)
	if code != http.StatusOK || r.Status != admin.StatusHealthy {
		t.Fatalf("code %d status %s: %+v", code, r.Status, r)
	}
	if got := keys(raw); !slices.Equal(got, []string{"components", "instance_id", "status", "timestamp"}) {
		t.Fatalf("top-level keys %v", got)
	}
	if r.InstanceID != "proxy-1" {
		t.Fatalf("instance_id %q", r.InstanceID)
	}
	ts, err := time.Parse(time.RFC3339, r.Timestamp)
	if err != nil || time.Since(ts) > time.Minute {
		t.Fatalf("timestamp %q: %v", r.Timestamp, err)
	}
	names := []string{}
	for i, c := range r.Components {
		names = append(names, c.Name)
		if c.Status != admin.StatusHealthy || !strings.HasSuffix(c.Latency, "ms") || c.Error != "" {
			t.Fatalf("component %+v", c)
		}
		if got := keys(raw["components"].([]any)[i].(map[string]any)); !slices.Equal(got, []string{"latency", "name", "status"}) {
			t.Fatalf("component keys %v", got)
		}
	}
	if want := []string{"redis", "sqlserver-bucket-001", "sqlserver-bucket-002", "sqlserver-bucket-003"}; !slices.Equal(names, want) {
		t.Fatalf("components %v, want %v", names, want)
	}
}

func TestHealthBucketDown(t *testing.T) {
	e := start(t, 3, false, nil)
	e.stands[1].Close()
	code, r, _ := e.health(t)
	if code != http.StatusOK || r.Status != admin.StatusDegraded {
		t.Fatalf("code %d status %s", code, r.Status)
	}
	if c := component(t, r, "sqlserver-bucket-002"); c.Status != admin.StatusUnhealthy || c.Error == "" || c.Latency == "" {
		t.Fatalf("down bucket: %+v", c)
	}
	for _, n := range []string{"redis", "sqlserver-bucket-001", "sqlserver-bucket-003"} {
		if c := component(t, r, n); c.Status != admin.StatusHealthy {
			t.Fatalf("%s: %+v", n, c)
		}
	}
}

func TestHealthEveryBucketDownIsUnhealthyBut200(t *testing.T) {
	e := start(t, 2, false, nil)
	for _, s := range e.stands {
		s.Close()
	}
	code, r, _ := e.health(t)
	if code != http.StatusOK || r.Status != admin.StatusUnhealthy {
		t.Fatalf("code %d status %s", code, r.Status)
	}
}

// TestHealthProbeIsPrelogin: a port that accepts TCP but does not speak
// TDS is unhealthy — the probe is a PRELOGIN exchange, not a connect.
func TestHealthProbeIsPrelogin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	e := start(t, 1, true, func(o *admin.HealthOptions) {
		o.ProbeTimeout = 300 * time.Millisecond
		checks := o.Checks
		o.Checks = func() []admin.Check {
			return append(checks(), admin.BucketCheck("mute", target("mute", ln.Addr().String())))
		}
	})
	start := time.Now()
	code, r, _ := e.health(t)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("health took %s with a 300ms probe timeout", el)
	}
	if c := component(t, r, "sqlserver-mute"); c.Status != admin.StatusUnhealthy {
		t.Fatalf("a TCP port that never answers PRELOGIN: %+v", c)
	}
	if code != http.StatusOK || r.Status != admin.StatusDegraded {
		t.Fatalf("code %d status %s", code, r.Status)
	}
}

func TestHealthRedisDown(t *testing.T) {
	e := start(t, 2, false, nil)
	err := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	e.redisErr.Store(&err)
	code, r, _ := e.health(t)
	if code != http.StatusOK || r.Status != admin.StatusDegraded {
		t.Fatalf("code %d status %s", code, r.Status)
	}
	if c := component(t, r, "redis"); c.Status != admin.StatusUnhealthy || !strings.Contains(c.Error, "refused") {
		t.Fatalf("redis: %+v", c)
	}
	if c := component(t, r, "sqlserver-bucket-001"); c.Status != admin.StatusHealthy {
		t.Fatalf("bucket: %+v", c)
	}
}

func TestHealthStandaloneRedisDisabled(t *testing.T) {
	e := start(t, 1, true, nil)
	code, r, raw := e.health(t)
	if code != http.StatusOK || r.Status != admin.StatusHealthy {
		t.Fatalf("code %d status %s", code, r.Status)
	}
	c := component(t, r, "redis")
	if c.Status != admin.StatusDisabled || c.Latency != "" {
		t.Fatalf("redis on a standalone instance: %+v", c)
	}
	if got := keys(raw["components"].([]any)[0].(map[string]any)); !slices.Equal(got, []string{"name", "status"}) {
		t.Fatalf("disabled component keys %v", got)
	}
}

func TestHealthDraining(t *testing.T) {
	e := start(t, 1, false, func(o *admin.HealthOptions) { o.CacheTTL = time.Minute })
	if code, r, _ := e.health(t); code != http.StatusOK || r.Status != admin.StatusHealthy {
		t.Fatalf("before drain: %d %s", code, r.Status)
	}
	e.draining.Store(true) // read live, though the probes are cached for a minute
	code, r, raw := e.health(t)
	if code != http.StatusServiceUnavailable || r.Status != admin.StatusUnhealthy || raw["draining"] != true {
		t.Fatalf("draining: %d %s %v", code, r.Status, raw["draining"])
	}
	if c := component(t, r, "sqlserver-bucket-001"); c.Status != admin.StatusHealthy {
		t.Fatalf("components still reported while draining: %+v", c)
	}
	var live admin.Live
	if code, _ := get(t, "http://"+e.srv.HealthAddr()+"/health/live", &live); code != http.StatusOK || live.Status != "alive" {
		t.Fatalf("live while draining: %d %+v", code, live)
	}
}

func TestHealthLive(t *testing.T) {
	e := start(t, 1, false, nil)
	e.stands[0].Close() // liveness does not depend on backends
	var live admin.Live
	code, raw := get(t, "http://"+e.srv.HealthAddr()+"/health/live", &live)
	if code != http.StatusOK || live.Status != "alive" {
		t.Fatalf("%d %+v", code, live)
	}
	if got := keys(raw); !slices.Equal(got, []string{"status", "time"}) {
		t.Fatalf("keys %v", got)
	}
	ts, err := time.Parse(time.RFC3339, live.Time)
	if err != nil || time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
		t.Fatalf("time %q: %v", live.Time, err)
	}
	if e.redisN.Load() != 0 || e.stands[0].Stats().Accepted != 0 {
		t.Fatal("/health/live probed components")
	}
}

// TestHealthCache: within the TTL, requests share one round of probes,
// concurrent ones included; after it, one new round.
func TestHealthCache(t *testing.T) {
	e := start(t, 2, false, func(o *admin.HealthOptions) { o.CacheTTL = 500 * time.Millisecond })
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + e.srv.HealthAddr() + "/health")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	e.health(t)
	if n := e.redisN.Load(); n != 1 {
		t.Fatalf("redis probed %d times for 21 requests within the TTL", n)
	}
	for i, s := range e.stands {
		if n := s.Stats().Accepted; n != 1 {
			t.Fatalf("bucket %d probed %d times for 21 requests within the TTL", i+1, n)
		}
	}
	time.Sleep(600 * time.Millisecond)
	e.health(t)
	e.health(t)
	if n := e.redisN.Load(); n != 2 {
		t.Fatalf("redis probed %d times after the TTL, want 2", n)
	}
	if n := e.stands[0].Stats().Accepted; n != 2 {
		t.Fatalf("bucket probed %d times after the TTL, want 2", n)
	}
}

// TestHealthSingleFlight: requests that arrive while a slow round runs wait
// for it instead of starting their own.
func TestHealthSingleFlight(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	h := admin.NewHealth(admin.HealthOptions{InstanceID: "x", CacheTTL: -1, Checks: func() []admin.Check {
		return []admin.Check{{Name: "slow", Probe: func(ctx context.Context) (any, error) {
			calls.Add(1)
			<-release
			return nil, nil
		}}}
	}})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := h.Report(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d concurrent rounds, want 1", n)
	}
}

func TestHealthDetailAndDegraded(t *testing.T) {
	type drift struct {
		Kernel  int64 `json:"kernel"`
		Limiter int64 `json:"limiter"`
		Drift   int64 `json:"drift"`
	}
	e := start(t, 1, false, nil)
	e.extra = []admin.Check{
		{Name: "ebpf", Probe: func(context.Context) (any, error) {
			return map[string]drift{"bucket-001": {3, 3, 0}}, nil
		}},
		{Name: "thing", Probe: func(context.Context) (any, error) {
			return nil, admin.Degraded(errors.New("half there"))
		}},
		{Name: "panicky", Probe: func(context.Context) (any, error) { panic("boom") }},
	}
	_, r, raw := e.health(t)
	comps := raw["components"].([]any)
	ebpf := comps[2].(map[string]any)
	if ebpf["name"] != "ebpf" || ebpf["status"] != "healthy" {
		t.Fatalf("ebpf component %v", ebpf)
	}
	d, _ := json.Marshal(ebpf["detail"])
	if string(d) != `{"bucket-001":{"drift":0,"kernel":3,"limiter":3}}` {
		t.Fatalf("detail %s", d)
	}
	if c := component(t, r, "thing"); c.Status != admin.StatusDegraded || c.Error != "half there" {
		t.Fatalf("degraded component %+v", c)
	}
	if c := component(t, r, "panicky"); c.Status != admin.StatusUnhealthy {
		t.Fatalf("panicking probe %+v", c)
	}
	if r.Status != admin.StatusDegraded {
		t.Fatalf("overall %s", r.Status)
	}
}

func TestHealthMethodNotAllowed(t *testing.T) {
	e := start(t, 1, true, nil)
	resp, err := http.Post("http://"+e.srv.HealthAddr()+"/health", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /health: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + e.srv.HealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on the health port: %d", resp.StatusCode)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	m := metrics.New([]string{"bucket-001"})
	m.Acquired("bucket-001", time.Millisecond, false)
	for _, pprof := range []bool{false, true} {
		srv, err := admin.Start(admin.Options{MetricsAddr: "127.0.0.1:0", Metrics: m.Write, Pprof: pprof})
		if err != nil {
			t.Fatal(err)
		}
		if srv.HealthAddr() != "" {
			t.Fatal("health server started without an address")
		}
		resp, err := http.Get("http://" + srv.MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, l := range []string{`proxy_connections_active{bucket="bucket-001"} 1`, `proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="0.001"} 1`, "go_goroutines "} {
			if !strings.Contains(string(body), l) {
				t.Fatalf("/metrics lacks %q", l)
			}
		}
		resp, err = http.Get("http://" + srv.MetricsAddr() + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: 404, true: 200}[pprof]; resp.StatusCode != want {
			t.Fatalf("pprof %v: /debug/pprof/ %d, want %d", pprof, resp.StatusCode, want)
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get("http://" + srv.MetricsAddr() + "/metrics"); err == nil {
			t.Fatal("metrics still served after Shutdown")
		}
	}
}

func TestServersDisabled(t *testing.T) {
	srv, err := admin.Start(admin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.HealthAddr() != "" || srv.MetricsAddr() != "" {
		t.Fatal("an address with both servers disabled")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var nilSrv *admin.Server
	if nilSrv.HealthAddr() != "" || nilSrv.Shutdown(context.Background()) != nil {
		t.Fatal("nil server")
	}
}

func TestStartBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := admin.NewHealth(admin.HealthOptions{})
	_, err = admin.Start(admin.Options{HealthAddr: "127.0.0.1:0", Health: h, MetricsAddr: ln.Addr().String(), Metrics: func(io.Writer) {}})
	if err == nil {
		t.Fatal("Start bound a port already in use")
	}
}

func TestLatencyFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1200 * time.Microsecond: "1.2ms",
		5330 * time.Microsecond: "5.3ms",
		350 * time.Microsecond:  "0.35ms",
		2 * time.Second:         "2000.0ms",
	} {
		if got := admin.Latency(d); got != want {
			t.Errorf("Latency(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestHealthCacheOnFakeClock: the cache runs on the injected clock: a
// round is reused until the fake clock passes CacheTTL, with no sleeping.
func TestHealthCacheOnFakeClock(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	e := start(t, 1, false, func(o *admin.HealthOptions) { o.CacheTTL, o.Clock = time.Minute, fake })
	e.health(t)
	e.health(t)
	if n := e.redisN.Load(); n != 1 {
		t.Fatalf("%d rounds within the TTL, want 1", n)
	}
	fake.Advance(59 * time.Second)
	e.health(t)
	if n := e.redisN.Load(); n != 1 {
		t.Fatalf("%d rounds at 59s of a 1m TTL, want 1", n)
	}
	fake.Advance(time.Second)
	e.health(t)
	if n := e.redisN.Load(); n != 2 {
		t.Fatalf("%d rounds after the TTL, want 2", n)
	}
}
