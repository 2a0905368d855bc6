package cluster_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAppRedisWiring: an in-process instance with redis.addr uses the
// Redis limiter; /metrics shows the global count, the Redis operations
// and the fallback gauge, /health's redis component follows Redis, and
// Shutdown leaves Redis clean.
func TestAppRedisWiring(t *testing.T) {
	rs := redistest.Start(t)
	rc := rs.Client(t)
	bs := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, bs)
	cfg.InstanceID = "inproc"
	cfg.Redis.Addr = rs.Addr()
	cfg.MetricsListen, cfg.HealthListen = "127.0.0.1:0", "127.0.0.1:0"
	a := testenv.Proxy(t, cfg)
	rl := a.RedisLimiter()
	if rl == nil || a.Limiter() != limiter.Limiter(rl) {
		t.Fatal("redis.addr set but the app does not use the Redis limiter")
	}
	c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0], Database: "tenant_db"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := redistest.Int(t, rc, "GET", limiter.KeyCount("bucket-001")); n != 1 {
		t.Fatalf("count %d with one session", n)
	}
	// The count is as last read from Redis: a poll whose read raced the
	// acquire may show the count before it until the next poll (1 s).
	wants := []string{`proxy_fallback_mode 0`, `proxy_bucket_global_connections{bucket="bucket-001"} 1`,
		`proxy_bucket_global_max{bucket="bucket-001"} 20`, `proxy_redis_operations_total{op="acquire",result="ok"} 1`}
	var m string
	waitUntil(3*time.Second, func() bool {
		m = get(t, "http://"+a.MetricsAddr()+"/metrics")
		for _, want := range wants {
			if !strings.Contains(m, want) {
				return false
			}
		}
		return true
	})
	for _, want := range wants {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
	if h := get(t, "http://"+a.HealthAddr()+"/health"); !strings.Contains(h, `"redis"`) {
		t.Errorf("/health without a redis component: %s", h)
	}
	rs.Kill()
	waitFor(t, 3*time.Second, "fallback", rl.InFallback)
	time.Sleep(2200 * time.Millisecond) // past /health's probe cache (2 s)
	if m := get(t, "http://"+a.MetricsAddr()+"/metrics"); !strings.Contains(m, "proxy_fallback_mode 1") {
		t.Error("/metrics does not show fallback")
	}
	h := get(t, "http://"+a.HealthAddr()+"/health")
	t.Logf("/health with redis down: %s", h)
	if !strings.Contains(h, "local share") {
		t.Errorf("/health does not report the fallback: %s", h)
	}
	rs.Restart()
	waitFor(t, 5*time.Second, "reconciled", func() bool { return !rl.InFallback() })
	c.Close()
	waitFor(t, 2*time.Second, "count 0", func() bool { return redistest.Int(t, rc, "GET", limiter.KeyCount("bucket-001")) == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := redistest.Int(t, rc, "EXISTS", limiter.KeyConns("inproc"), limiter.KeyHeartbeat("inproc")); n != 0 {
		t.Fatalf("%d keys left after Shutdown", n)
	}
	if n := redistest.Int(t, rc, "SISMEMBER", limiter.KeyInstances, "inproc"); n != 0 {
		t.Fatal("still in proxy:instances after Shutdown")
	}
}
