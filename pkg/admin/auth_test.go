package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// authEnv runs /health (one bucket down, an extra component with detail)
// and /metrics behind auth.
func authEnv(t *testing.T, auth *admin.Auth) (health, metrics string, down string) {
	t.Helper()
	stands := testenv.Buckets(t, 1, nil)
	down = stands[0].Addr()
	stands[0].Close()
	h := admin.NewHealth(admin.HealthOptions{InstanceID: "proxy-1", CacheTTL: -1, Checks: func() []admin.Check {
		return []admin.Check{
			admin.BucketCheck("bucket-001", target("bucket-001", down)),
			{Name: "ebpf", Probe: func(context.Context) (any, error) { return map[string]int{"bucket-001": 3}, nil }},
		}
	}})
	srv, err := admin.Start(admin.Options{HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Health: h,
		Metrics: func(w io.Writer) { io.WriteString(w, "proxy_up 1\n") }, Auth: auth, Log: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return "http://" + srv.HealthAddr(), "http://" + srv.MetricsAddr(), down
}

func fetch(t *testing.T, url string, set func(*http.Request)) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if set != nil {
		set(req)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

// TestAdminAuth: with a token and basic auth set, /metrics without
// credentials (or with wrong ones) is 401 with a challenge; /health
// without credentials is the public view (names, statuses, latency; no
// address, no raw error, no detail); with credentials both are in full;
// /health/live stays open; health_requires_auth makes /health 401 too;
// a rotated token takes effect at once.
func TestAdminAuth(t *testing.T) {
	auth := admin.NewAuth()
	auth.Set("s3cret-token", "prom", "s3cret-pass", false)
	health, metrics, down := authEnv(t, auth)

	for name, set := range map[string]func(*http.Request){
		"none":         nil,
		"wrong token":  bearer("nope"),
		"wrong basic":  func(r *http.Request) { r.SetBasicAuth("prom", "nope") },
		"wrong user":   func(r *http.Request) { r.SetBasicAuth("root", "s3cret-pass") },
		"token as pwd": func(r *http.Request) { r.SetBasicAuth("prom", "s3cret-token") },
	} {
		code, body, hdr := fetch(t, metrics+"/metrics", set)
		if code != http.StatusUnauthorized || strings.Contains(body, "proxy_up") || len(hdr.Values("WWW-Authenticate")) != 2 {
			t.Errorf("/metrics, %s: %d %q %v", name, code, body, hdr.Values("WWW-Authenticate"))
		}
	}
	for _, set := range []func(*http.Request){bearer("s3cret-token"), func(r *http.Request) { r.SetBasicAuth("prom", "s3cret-pass") }} {
		if code, body, _ := fetch(t, metrics+"/metrics", set); code != 200 || !strings.Contains(body, "proxy_up 1") {
			t.Errorf("/metrics with credentials: %d %q", code, body)
		}
	}

	// /health without credentials: the public view.
	code, body, _ := fetch(t, health+"/health", nil)
	var r admin.Report
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 {
		t.Fatalf("/health public: %d %q %v", code, body, err)
	}
	if len(r.Components) != 2 || r.Components[0].Status != admin.StatusUnhealthy || r.Components[0].Latency == "" ||
		r.Components[1].Name != "ebpf" || r.Components[1].Status != admin.StatusHealthy {
		t.Fatalf("/health public components: %+v", r.Components)
	}
	for _, leak := range []string{down, "127.0.0.1", "refused", `"error"`, `"detail"`} {
		if strings.Contains(body, leak) {
			t.Errorf("/health public view reveals %q: %s", leak, body)
		}
	}
	// With credentials: the detail.
	code, body, _ = fetch(t, health+"/health", bearer("s3cret-token"))
	if code != 200 || !strings.Contains(body, `"error"`) || !strings.Contains(body, down) || !strings.Contains(body, `"detail":{"bucket-001":3}`) {
		t.Fatalf("/health authenticated: %d %s", code, body)
	}
	if code, _, _ := fetch(t, health+"/health/live", nil); code != 200 {
		t.Fatalf("/health/live: %d", code)
	}

	// health_requires_auth, and a rotated token.
	auth.Set("rotated", "prom", "s3cret-pass", true)
	if code, body, _ := fetch(t, health+"/health", nil); code != http.StatusUnauthorized || strings.Contains(body, "bucket") {
		t.Fatalf("/health with health_requires_auth, no credentials: %d %s", code, body)
	}
	if code, _, _ := fetch(t, health+"/health", bearer("s3cret-token")); code != http.StatusUnauthorized {
		t.Fatalf("the old token after rotation: %d", code)
	}
	if code, _, _ := fetch(t, health+"/health", bearer("rotated")); code != 200 {
		t.Fatalf("the rotated token: %d", code)
	}
	if code, _, _ := fetch(t, health+"/health/live", nil); code != 200 {
		t.Fatalf("/health/live with health_requires_auth: %d", code)
	}
}

// TestAdminAuthOff: without credentials (the default) everything answers
// everyone, /health in full to a loopback caller.
func TestAdminAuthOff(t *testing.T) {
	health, metrics, down := authEnv(t, admin.NewAuth())
	if code, _, _ := fetch(t, metrics+"/metrics", nil); code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	if code, body, _ := fetch(t, health+"/health", nil); code != 200 || !strings.Contains(body, down) {
		t.Fatalf("/health: %d %s", code, body)
	}
}

// TestAdminAuthOffStranger: without credentials, a caller from another
// address gets /health's public view only: no backend address, no raw
// probe error, no detail.
func TestAdminAuthOffStranger(t *testing.T) {
	stands := testenv.Buckets(t, 1, nil)
	down := stands[0].Addr()
	stands[0].Close()
	h := admin.NewHealth(admin.HealthOptions{InstanceID: "proxy-1", CacheTTL: -1, Checks: func() []admin.Check {
		return []admin.Check{
			admin.BucketCheck("bucket-001", target("bucket-001", down)),
			{Name: "ebpf", Probe: func(context.Context) (any, error) { return map[string]int{"bucket-001": 3}, nil }},
		}
	}})
	handler := h.HandlerWithAuth(admin.NewAuth())
	for _, tc := range []struct {
		remote string
		detail bool
	}{{"203.0.113.9:4444", false}, {"[2001:db8::1]:4444", false}, {"127.0.0.1:5555", true}, {"[::1]:5555", true}} {
		req := httptest.NewRequest("GET", "/health", nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		body := rec.Body.String()
		var rep admin.Report
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil || len(rep.Components) != 2 {
			t.Fatalf("%s: %d %s (%v)", tc.remote, rec.Code, body, err)
		}
		leaked := strings.Contains(body, down) || strings.Contains(body, "detail") || strings.Contains(body, "error")
		if leaked != tc.detail {
			t.Errorf("%s: detail shown = %v, want %v: %s", tc.remote, leaked, tc.detail, body)
		}
		if rep.Components[0].Name != "sqlserver-bucket-001" || rep.Components[0].Status == "" {
			t.Errorf("%s: public view lost the component: %s", tc.remote, body)
		}
	}
}
