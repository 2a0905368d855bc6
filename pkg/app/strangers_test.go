package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminAuthStrangers: with admin_auth.token_file set, a stranger gets
// 401 from /metrics, and from /health only names, statuses and latency:
// not the down backend's address nor its error. The token (read from its
// file) gets everything; a rotated file takes effect on reload, and
// health_requires_auth makes /health 401 as well. /health/live stays open.
func TestAdminAuthStrangers(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dead := deadAddr(t)
	mk := func() *config.Config {
		cfg := testenv.Config(t, append(buckets, buckets[0]))
		cfg.Buckets[1].Address = dead
		cfg.HealthListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.AdminAuth.TokenFile = tokenFile
		return cfg
	}
	a := testenv.Proxy(t, mk())
	health, metrics := "http://"+a.HealthAddr(), "http://"+a.MetricsAddr()

	if code, body := httpGet(t, metrics+"/metrics", ""); code != http.StatusUnauthorized || strings.Contains(body, "proxy_") {
		t.Fatalf("/metrics without credentials: %d %.200s", code, body)
	}
	if code, body := httpGet(t, metrics+"/metrics", "first-token"); code != 200 || !strings.Contains(body, "proxy_") {
		t.Fatalf("/metrics with the token: %d %.200s", code, body)
	}
	code, body := httpGet(t, health+"/health", "")
	var r admin.Report
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 {
		t.Fatalf("/health without credentials: %d %s", code, body)
	}
	statuses := map[string]admin.Status{}
	for _, c := range r.Components {
		statuses[c.Name] = c.Status
		if c.Latency == "" && c.Status != admin.StatusDisabled {
			t.Errorf("component %s without latency", c.Name)
		}
	}
	if statuses["sqlserver-bucket-001"] != admin.StatusHealthy || statuses["sqlserver-bucket-002"] != admin.StatusUnhealthy {
		t.Fatalf("public /health statuses %v", statuses)
	}
	for _, leak := range []string{dead, buckets[0].Addr(), "127.0.0.1", "refused", `"error"`, `"detail"`} {
		if strings.Contains(body, leak) {
			t.Errorf("public /health reveals %q: %s", leak, body)
		}
	}
	if code, body := httpGet(t, health+"/health", "first-token"); code != 200 || !strings.Contains(body, dead) || !strings.Contains(body, `"error"`) {
		t.Fatalf("/health with the token: %d %s", code, body)
	}

	// Rotate the token and require it for /health too.
	if err := os.WriteFile(tokenFile, []byte("second-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	next := mk()
	next.AdminAuth.HealthRequiresAuth = true
	if err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, health+"/health", ""); code != http.StatusUnauthorized || strings.Contains(body, "sqlserver") {
		t.Fatalf("/health with health_requires_auth, no credentials: %d %s", code, body)
	}
	if code, _ := httpGet(t, metrics+"/metrics", "first-token"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with the old token after rotation: %d", code)
	}
	if code, _ := httpGet(t, health+"/health", "second-token"); code != 200 {
		t.Fatalf("/health with the rotated token: %d", code)
	}
	if code, _ := httpGet(t, health+"/health/live", ""); code != 200 {
		t.Fatalf("/health/live: %d", code)
	}
	// An unreadable token file fails the reload and keeps the running one.
	bad := mk()
	bad.AdminAuth.TokenFile = filepath.Join(dir, "missing")
	if err := a.Reload(bad); err == nil || !strings.Contains(err.Error(), "admin_auth.token_file") {
		t.Fatalf("reload with a missing token file: %v", err)
	}
	if code, _ := httpGet(t, metrics+"/metrics", "second-token"); code != 200 {
		t.Fatalf("/metrics after a failed reload: %d", code)
	}
}

// TestCredentialRouteFailuresPerSource: with credential_routes.max_failures
// 5, the sixth login from 127.0.0.1 whose password fails every credential
// rule (each one a PBKDF2) is refused with 50010 and a readable message, by
// tdsgate and without a PBKDF2; a real client (tsql) shows it. A login
// whose password is cached as right still gets through.
func TestCredentialRouteFailuresPerSource(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 2, nil)
	cfg := testenv.Config(t, buckets)
	cfg.CredentialRoutes = config.CredentialRoutes{MaxFailures: 5, FailureWindow: time.Minute}
	a := testenv.Proxy(t, cfg)
	ok, err := dialProxy(a.Addr(), testenv.Passwords[0]) // cached as right for rule 0
	if err != nil {
		t.Fatal(err)
	}
	ok.Close()
	for i := 0; i < 5; i++ {
		_, err := dialProxy(a.Addr(), fmt.Sprint("guess-", i))
		if n := loginNumber(err); n != int32(50001) {
			t.Fatalf("guess %d: %v, want 50001 (no route)", i, err)
		}
	}
	_, err = dialProxy(a.Addr(), "guess-6")
	var le *tdsclient.LoginError
	if !errors.As(err, &le) || le.Number != 50010 || le.Message != "too many failed logins from this address; try again later" {
		t.Fatalf("6th failure: %v, want 50010", err)
	}
	host, port := hostPort(t, a.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := clients.Run(ctx, clients.TSQL, clients.Spec{Host: host, Port: port, User: "sa", Password: "guess-7", Database: "tenant_db",
		Steps: []clients.Step{{Op: clients.OpQuery, SQL: "SELECT 1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected || res.LoginError == nil || res.LoginError.Number != 50010 || !strings.Contains(res.LoginError.Message, "too many failed logins") {
		t.Fatalf("tsql: connected %v, %+v (stderr %s)", res.Connected, res.LoginError, res.Stderr)
	}
	c, err := dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatalf("a cached right password from the throttled address: %v", err)
	}
	c.Close()
}
