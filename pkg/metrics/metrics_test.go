package metrics_test

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/metrics"
)

var (
	_ frontend.Observer = (*metrics.Metrics)(nil)
	_ limiter.Observer  = (*metrics.Metrics)(nil)
)

// line is one sample of the text exposition format: name, optional
// labels with quoted values, one space, a number.
var line = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:, ?[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$`)

// scrape writes m and parses every line, failing on any that is not a
// comment or a well-formed sample. It returns series → value.
func scrape(t testing.TB, m *metrics.Metrics) (map[string]float64, string) {
	t.Helper()
	var buf bytes.Buffer
	m.Write(&buf)
	out := map[string]float64{}
	for i, l := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		g := line.FindStringSubmatch(l)
		if g == nil {
			t.Fatalf("line %d does not parse: %q", i+1, l)
		}
		v, err := strconv.ParseFloat(g[3], 64)
		if err != nil {
			t.Fatalf("line %d: value %q: %v", i+1, g[3], err)
		}
		series := g[1] + g[2]
		if _, dup := out[series]; dup {
			t.Fatalf("line %d: series %s written twice", i+1, series)
		}
		out[series] = v
	}
	return out, buf.String()
}

func want(t *testing.T, s map[string]float64, series string, v float64) {
	t.Helper()
	got, ok := s[series]
	if !ok {
		t.Fatalf("series %s missing", series)
	}
	if got != v {
		t.Fatalf("%s = %v, want %v", series, got, v)
	}
}

func TestScrapeParsesAndHasEverySeries(t *testing.T) {
	m := metrics.New([]string{"bucket-001", "bucket-002"})
	s, text := scrape(t, m)
	for _, b := range []string{"bucket-001", "bucket-002"} {
		for _, n := range []string{metrics.NameConnectionsActive, metrics.NameConnectionsIdle, metrics.NameConnectionsTotal,
			metrics.NameQueueLength, metrics.NameQueueAbandoned, metrics.NameGlobalConnections, metrics.NameGlobalMax, metrics.NameBreakerOpen} {
			want(t, s, fmt.Sprintf(`%s{bucket="%s"}`, n, b), 0)
		}
		for code := 50001; code <= 50009; code++ {
			want(t, s, fmt.Sprintf(`proxy_rejections_total{bucket="%s",code="%d"}`, b, code), 0)
		}
		want(t, s, fmt.Sprintf(`proxy_queue_wait_duration_seconds_count{bucket="%s"}`, b), 0)
		want(t, s, fmt.Sprintf(`proxy_backend_connect_duration_seconds_count{bucket="%s"}`, b), 0)
	}
	for _, op := range metrics.RedisOps {
		want(t, s, fmt.Sprintf(`proxy_redis_operations_total{op="%s",result="ok"}`, op), 0)
		want(t, s, fmt.Sprintf(`proxy_redis_operations_total{op="%s",result="error"}`, op), 0)
	}
	for _, r := range metrics.ErrorReasons {
		want(t, s, fmt.Sprintf(`proxy_connection_errors_total{reason="%s"}`, r), 0)
	}
	for _, mode := range []string{"splice", "tls", "framed", "sockmap"} {
		want(t, s, fmt.Sprintf(`proxy_sessions_total{mode="%s"}`, mode), 0)
		want(t, s, fmt.Sprintf(`proxy_relay_bytes_total{direction="client_to_server",mode="%s"}`, mode), 0)
		want(t, s, fmt.Sprintf(`proxy_relay_bytes_total{direction="server_to_client",mode="%s"}`, mode), 0)
	}
	want(t, s, "proxy_instance_heartbeat", 0)
	want(t, s, "proxy_fallback_mode", 0)
	for _, p := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if _, ok := s[p]; !ok {
			t.Errorf("runtime metric %s missing", p)
		}
	}
	if strings.Contains(text, "proxy_ebpf_") {
		t.Error("eBPF series written without an eBPF source")
	}
}

func TestCountersMove(t *testing.T) {
	m := metrics.New([]string{"bucket-001"})
	m.Acquired("bucket-001", 0, false)
	m.Acquired("bucket-001", 30*time.Millisecond, true)
	m.Released("bucket-001")
	m.Enqueued("bucket-001", 2)
	m.Canceled("bucket-001", time.Second)
	m.Refused("bucket-001", 50005, "queue_full")
	m.Refused("bucket-001", 50004, "queue_timeout")
	m.Refused("bucket-001", 50004, "queue_timeout")
	m.Refused("", 50001, "no_route")
	m.Refused("bucket-001", 12345, "not ours") // ignored
	m.Relayed("bucket-001", "splice", 100, 2000, time.Second)
	m.Relayed("bucket-001", "tls", 7, 9, time.Second)
	m.Relayed("bucket-001", "framed-someday", 1, 1, time.Second) // ignored
	m.Relayed("bucket-001", "sockmap", 300, 4000, time.Second)
	m.BackendConnected("bucket-001", 3*time.Millisecond, nil)
	m.BackendConnected("bucket-001", time.Second, &backend.Error{Stage: backend.StageDial, Err: errors.New("refused")})
	m.BackendConnected("bucket-001", time.Second, fmt.Errorf("wrapped: %w", &backend.Error{Stage: backend.StageLogin, Err: errors.New("eof")}))
	m.BackendConnected("bucket-001", time.Second, errors.New("something else"))
	m.ClientHandshake("none", nil)
	m.ClientHandshake("full", errors.New("tls: bad"))
	m.RelayError("bucket-001", "splice", errors.New("reset"))
	m.RedisOp(metrics.OpAcquire, nil)
	m.RedisOp(metrics.OpAcquire, nil)
	m.RedisOp(metrics.OpHeartbeat, errors.New("timeout"))
	m.RedisOp("unknown-op", nil) // ignored
	hb := time.Unix(1736937000, 0)
	m.Heartbeat(hb)
	m.SetFallback(true)
	m.SetGlobal("bucket-001", 7, 50)
	m.SetBreakerOpen("bucket-001", true)
	m.SetIdle("bucket-001", 4)

	s, _ := scrape(t, m)
	b := `{bucket="bucket-001"}`
	want(t, s, metrics.NameConnectionsActive+b, 1)
	want(t, s, metrics.NameConnectionsTotal+b, 2)
	want(t, s, metrics.NameConnectionsIdle+b, 4)
	want(t, s, metrics.NameQueueLength+b, 2)
	want(t, s, metrics.NameQueueAbandoned+b, 1)
	want(t, s, `proxy_rejections_total{bucket="bucket-001",code="50005"}`, 1)
	want(t, s, `proxy_rejections_total{bucket="bucket-001",code="50004"}`, 2)
	want(t, s, `proxy_rejections_total{bucket="",code="50001"}`, 1)
	want(t, s, `proxy_rejections_total{bucket="bucket-001",code="50001"}`, 0)
	want(t, s, `proxy_sessions_total{mode="splice"}`, 1)
	want(t, s, `proxy_sessions_total{mode="tls"}`, 1)
	want(t, s, `proxy_relay_bytes_total{direction="client_to_server",mode="splice"}`, 100)
	want(t, s, `proxy_relay_bytes_total{direction="server_to_client",mode="splice"}`, 2000)
	want(t, s, `proxy_relay_bytes_total{direction="client_to_server",mode="tls"}`, 7)
	want(t, s, `proxy_sessions_total{mode="sockmap"}`, 1)
	want(t, s, `proxy_relay_bytes_total{direction="client_to_server",mode="sockmap"}`, 300)
	want(t, s, `proxy_relay_bytes_total{direction="server_to_client",mode="sockmap"}`, 4000)
	want(t, s, `proxy_backend_connect_duration_seconds_count`+b, 1)
	want(t, s, `proxy_connection_errors_total{reason="backend_dial"}`, 1)
	want(t, s, `proxy_connection_errors_total{reason="backend_login"}`, 1)
	want(t, s, `proxy_connection_errors_total{reason="backend_other"}`, 1)
	want(t, s, `proxy_connection_errors_total{reason="client_handshake"}`, 1)
	want(t, s, `proxy_connection_errors_total{reason="relay"}`, 1)
	want(t, s, `proxy_redis_operations_total{op="acquire",result="ok"}`, 2)
	want(t, s, `proxy_redis_operations_total{op="heartbeat",result="error"}`, 1)
	want(t, s, `proxy_redis_operations_total{op="heartbeat",result="ok"}`, 0)
	want(t, s, "proxy_instance_heartbeat", float64(hb.Unix()))
	want(t, s, "proxy_fallback_mode", 1)
	want(t, s, metrics.NameGlobalConnections+b, 7)
	want(t, s, metrics.NameGlobalMax+b, 50)
	want(t, s, metrics.NameBreakerOpen+b, 1)

	m.SetFallback(false)
	m.Released("bucket-001")
	s, _ = scrape(t, m)
	want(t, s, "proxy_fallback_mode", 0)
	want(t, s, metrics.NameConnectionsActive+b, 0)
}

func TestHistogramIsPrometheusStyle(t *testing.T) {
	m := metrics.New([]string{"bucket-001"})
	for _, w := range []time.Duration{0, 3 * time.Millisecond, 40 * time.Millisecond, 2 * time.Second, 2 * time.Minute} {
		m.Acquired("bucket-001", w, w > 0)
	}
	s, text := scrape(t, m)
	for _, l := range []string{
		`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="0.005"} 2`,
		`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="0.05"} 3`,
		`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="2.5"} 4`,
		`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="60"} 4`,
		`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="+Inf"} 5`,
		`proxy_queue_wait_duration_seconds_count{bucket="bucket-001"} 5`,
		`proxy_backend_connect_duration_seconds_bucket{bucket="bucket-001",le="0.001"} 0`,
	} {
		if !strings.Contains(text, l+"\n") {
			t.Errorf("missing line %q", l)
		}
	}
	if got := s[`proxy_queue_wait_duration_seconds_sum{bucket="bucket-001"}`]; got < 122.04 || got > 122.05 {
		t.Errorf("_sum = %v, want 122.043", got)
	}
	if strings.Contains(text, "vmrange") {
		t.Error("a VictoriaMetrics vmrange histogram in the output")
	}
	// Cumulative buckets never decrease.
	prev := -1.0
	for _, ub := range metrics.QueueWaitBuckets {
		v := s[fmt.Sprintf(`proxy_queue_wait_duration_seconds_bucket{bucket="bucket-001",le="%v"}`, ub)]
		if v < prev {
			t.Fatalf("le=%v: %v < %v", ub, v, prev)
		}
		prev = v
	}
}

// TestNoSeriesPerRequest: the set of series does not grow with sessions,
// only the counters' values do.
func TestNoSeriesPerRequest(t *testing.T) {
	m := metrics.New([]string{"bucket-001", "bucket-002"})
	proxyLines := func() int {
		_, text := scrape(t, m)
		return strings.Count(text, "\nproxy_") + map[bool]int{true: 1}[strings.HasPrefix(text, "proxy_")]
	}
	before := proxyLines()
	before2 := len(m.Set().ListMetricNames())
	for i := range 5000 {
		b := []string{"bucket-001", "bucket-002"}[i%2]
		m.Acquired(b, time.Duration(i)*time.Microsecond, i%3 == 0)
		m.BackendConnected(b, time.Millisecond, nil)
		m.Relayed(b, "splice", int64(i), int64(2*i), time.Millisecond)
		m.Refused(b, int32(50001+i%9), "x")
		m.Refused("", 50001, "no_route")
		m.Released(b)
	}
	if after := proxyLines(); after != before {
		t.Fatalf("proxy_ lines: %d before 5000 sessions, %d after", before, after)
	}
	if after2 := len(m.Set().ListMetricNames()); after2 != before2 {
		t.Fatalf("registered metrics: %d before, %d after", before2, after2)
	}
	s, _ := scrape(t, m)
	want(t, s, `proxy_connections_total{bucket="bucket-001"}`, 2500)
	want(t, s, `proxy_sessions_total{mode="splice"}`, 5000)
}

func TestSetBucketsOnReload(t *testing.T) {
	m := metrics.New([]string{"bucket-001"})
	m.Acquired("bucket-001", 0, false)
	m.SetBuckets([]string{"bucket-002"}) // bucket-001 removed, bucket-002 new
	m.SetBuckets([]string{"bucket-002"}) // idempotent
	m.Acquired("bucket-002", 0, false)
	m.Released("bucket-001") // a slot held across the reload comes back
	m.Acquired("nobody", 0, false)
	s, _ := scrape(t, m)
	want(t, s, `proxy_connections_active{bucket="bucket-001"}`, 0)
	want(t, s, `proxy_connections_total{bucket="bucket-001"}`, 1)
	want(t, s, `proxy_connections_active{bucket="bucket-002"}`, 1)
	for series := range s {
		if strings.Contains(series, "nobody") {
			t.Fatalf("series for an unconfigured bucket: %s", series)
		}
	}
	if got := m.Buckets(); len(got) != 2 {
		t.Fatalf("Buckets() = %v", got)
	}
}

func TestScrapeHooksAndEBPF(t *testing.T) {
	m := metrics.New([]string{"bucket-001", "bucket-002"})
	calls := 0
	m.OnScrape(func() { calls++; m.SetQueueLength("bucket-001", 3); m.SetBreakerOpen("bucket-002", true) })
	m.Acquired("bucket-001", 0, false)
	m.Acquired("bucket-001", 0, false)
	enabled := false
	m.SetEBPF(func() (map[string]int64, map[string]int64, bool) {
		return map[string]int64{"bucket-001": 3, "bucket-002": 0}, map[string]int64{"bucket-001": 2, "bucket-002": 1}, enabled
	})
	s, text := scrape(t, m)
	if calls != 1 {
		t.Fatalf("hook ran %d times", calls)
	}
	want(t, s, `proxy_queue_length{bucket="bucket-001"}`, 3)
	want(t, s, `proxy_breaker_open{bucket="bucket-002"}`, 1)
	if strings.Contains(text, "proxy_ebpf_") {
		t.Fatal("eBPF series while the source says disabled")
	}
	enabled = true
	s, _ = scrape(t, m)
	want(t, s, `proxy_ebpf_backend_connections{bucket="bucket-001"}`, 3)
	want(t, s, `proxy_ebpf_drift{bucket="bucket-001"}`, 1)
	want(t, s, `proxy_ebpf_backend_connections{bucket="bucket-002"}`, 0)
	want(t, s, `proxy_ebpf_drift{bucket="bucket-002"}`, -1)
	// A bucket the tracker does not watch has no series.
	m.SetBuckets([]string{"bucket-001", "bucket-002", "bucket-003"})
	if _, text = scrape(t, m); strings.Contains(text, `proxy_ebpf_backend_connections{bucket="bucket-003"}`) ||
		strings.Contains(text, `proxy_ebpf_drift{bucket="bucket-003"}`) {
		t.Fatalf("eBPF series for an unwatched bucket:\n%s", text)
	}
	m.SetEBPF(nil)
	if _, text = scrape(t, m); strings.Contains(text, "proxy_ebpf_") {
		t.Fatal("eBPF series after the source was removed")
	}
}

// TestConcurrentUse exercises the observers, reloads and scrapes at once
// (meaningful under -race), then checks the books balance.
func TestConcurrentUse(t *testing.T) {
	m := metrics.New([]string{"b0", "b1"})
	var wg sync.WaitGroup
	const workers, per = 8, 500
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := fmt.Sprintf("b%d", w%2)
			for range per {
				m.Acquired(b, time.Millisecond, false)
				m.Relayed(b, "tls", 1, 1, 0)
				m.Released(b)
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 50 {
			m.SetBuckets([]string{"b0", "b1", fmt.Sprintf("extra-%d", i)})
		}
	}()
	go func() {
		defer wg.Done()
		for range 20 {
			var buf bytes.Buffer
			m.Write(&buf)
		}
	}()
	wg.Wait()
	s, _ := scrape(t, m)
	want(t, s, `proxy_connections_total{bucket="b0"}`, workers/2*per)
	want(t, s, `proxy_connections_active{bucket="b0"}`, 0)
	want(t, s, `proxy_connections_active{bucket="b1"}`, 0)
	want(t, s, `proxy_sessions_total{mode="tls"}`, workers*per)
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	m := metrics.New([]string{"bucket-001"})
	err := errors.New("x")
	for name, f := range map[string]func(){
		"Acquired":         func() { m.Acquired("bucket-001", time.Millisecond, true) },
		"Released":         func() { m.Released("bucket-001") },
		"Relayed":          func() { m.Relayed("bucket-001", "splice", 10, 20, time.Second) },
		"Refused":          func() { m.Refused("bucket-001", 50005, "queue_full") },
		"BackendConnected": func() { m.BackendConnected("bucket-001", time.Millisecond, nil) },
		"ClientHandshake":  func() { m.ClientHandshake("none", err) },
		"RedisOp":          func() { m.RedisOp(metrics.OpAcquire, nil) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per call", name, n)
		}
	}
}

func BenchmarkRelayed(b *testing.B) {
	m := metrics.New([]string{"bucket-001", "bucket-002", "bucket-003"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Relayed("bucket-002", "splice", 512, 4096, time.Millisecond)
		}
	})
}

func BenchmarkAcquiredReleased(b *testing.B) {
	m := metrics.New([]string{"bucket-001", "bucket-002", "bucket-003"})
	b.ReportAllocs()
	for b.Loop() {
		m.Acquired("bucket-002", 3*time.Millisecond, false)
		m.Released("bucket-002")
	}
}

func BenchmarkAcquiredParallel(b *testing.B) {
	m := metrics.New([]string{"bucket-001", "bucket-002", "bucket-003"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Acquired("bucket-002", 3*time.Millisecond, false)
		}
	})
}

func BenchmarkScrape(b *testing.B) {
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = fmt.Sprintf("bucket-%03d", i)
	}
	m := metrics.New(ids)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		m.Write(&buf)
	}
}
