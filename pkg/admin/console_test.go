package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeConsole records what the handler asked of it.
type fakeConsole struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeConsole) note(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }

func (f *fakeConsole) Buckets() []Bucket {
	f.note("buckets")
	return []Bucket{{Bucket: "b1", Max: 3, MaxSource: "config", PoolMode: "none", Breaker: "closed", Fallback: "standalone"}}
}

func (f *fakeConsole) Sessions(q SessionQuery) ([]Session, error) {
	f.note(fmt.Sprintf("sessions %s/%s/%s", q.Bucket, q.User, q.State))
	if q.State == "bogus" {
		return nil, fmt.Errorf("%w: state", ErrBadInput)
	}
	return []Session{}, nil
}

func (f *fakeConsole) Pools() []Pool { f.note("pools"); return []Pool{} }

func (f *fakeConsole) Instances(context.Context) (Instances, error) {
	f.note("instances")
	return Instances{Instances: []Instance{}}, nil
}

func (f *fakeConsole) Kill(id uint64, by string) (Killed, error) {
	f.note(fmt.Sprintf("kill %d", id))
	if id != 7 {
		return Killed{}, fmt.Errorf("%w: no session %d", ErrNotFound, id)
	}
	return Killed{ID: 7, State: "active", ErrorSent: true}, nil
}

func (f *fakeConsole) BucketCommand(_ context.Context, action, bucket string, fleet bool, by string) (Action, error) {
	f.note(fmt.Sprintf("%s %s %v", action, bucket, fleet))
	return Action{Action: action, Bucket: bucket, Fleet: fleet, Acks: []Ack{{Instance: "i1", OK: true}}}, nil
}

func (f *fakeConsole) Reload(by string) Reload {
	f.note("reload")
	return Reload{Errors: []FieldError{{Path: "buckets[0].max_connections", Message: "must be >= 0"}}}
}

func do(t *testing.T, h http.Handler, method, target, token string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "10.9.8.7:5555"
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestConsoleRoutes(t *testing.T) {
	f := &fakeConsole{}
	var logs bytes.Buffer
	h := ConsoleHandler(f, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	cases := []struct {
		method, target string
		code           int
		call, body     string
	}{
		{"GET", "/admin/buckets", 200, "buckets", `"max_source":"config"`},
		{"GET", "/admin/sessions?bucket=b1&user=u&state=active", 200, "sessions b1/u/active", "[]"},
		{"GET", "/admin/sessions?state=bogus", 400, "sessions //bogus", `"error":"invalid request: state"`},
		{"GET", "/admin/pools", 200, "pools", "[]"},
		{"GET", "/admin/instances", 200, "instances", `"instances":[]`},
		{"POST", "/admin/sessions/7/kill", 200, "kill 7", `"error_sent":true`},
		{"POST", "/admin/sessions/8/kill", 404, "kill 8", `no session 8`},
		{"POST", "/admin/sessions/x/kill", 400, "", "decimal"},
		{"GET", "/admin/sessions/7/kill", 405, "", ""},
		{"POST", "/admin/buckets/b1/pause?fleet=1", 200, "pause b1 true", `"fleet":true`},
		{"POST", "/admin/buckets/b1/resume", 200, "resume b1 false", `"action":"resume"`},
		{"POST", "/admin/buckets/b1/drain", 200, "drain b1 false", `"action":"drain"`},
		{"POST", "/admin/buckets/b1/explode", 404, "", "pause, resume and drain"},
		{"POST", "/admin/reload", 422, "reload", `"path":"buckets[0].max_connections"`},
	}
	for _, c := range cases {
		f.calls = nil
		code, body := do(t, h, c.method, c.target, "")
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s %s: %d %s, want %d with %q", c.method, c.target, code, body, c.code, c.body)
		}
		if c.call != "" && (len(f.calls) != 1 || f.calls[0] != c.call) {
			t.Errorf("%s %s: console calls %v, want %q", c.method, c.target, f.calls, c.call)
		}
		if c.call == "" && len(f.calls) != 0 {
			t.Errorf("%s %s: console called %v", c.method, c.target, f.calls)
		}
		if code == 200 && !json.Valid([]byte(body)) {
			t.Errorf("%s %s: not JSON: %s", c.method, c.target, body)
		}
	}
	// Actions are logged with the caller's address.
	if !strings.Contains(logs.String(), `msg="admin: action" method=POST path=/admin/buckets/b1/pause query="fleet=1" from=10.9.8.7:5555`) {
		t.Fatalf("no action log line with the caller:\n%s", logs.String())
	}
}

// With a token set, every /admin request needs it: 401 without (and the
// console is not called), 200 with.
func TestConsoleRequiresToken(t *testing.T) {
	f := &fakeConsole{}
	a := NewAuth()
	a.Set("tok", "", "", false)
	var logs bytes.Buffer
	h := ConsoleHandler(f, a, slog.New(slog.NewTextHandler(&logs, nil)))
	for _, tc := range []struct{ method, target string }{{"GET", "/admin/buckets"}, {"POST", "/admin/buckets/b1/pause"}, {"POST", "/admin/sessions/7/kill"}} {
		if code, _ := do(t, h, tc.method, tc.target, ""); code != http.StatusUnauthorized {
			t.Fatalf("%s %s without the token: %d", tc.method, tc.target, code)
		}
		if code, _ := do(t, h, tc.method, tc.target, "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("%s %s with a wrong token: %d", tc.method, tc.target, code)
		}
	}
	if len(f.calls) != 0 {
		t.Fatalf("console called without credentials: %v", f.calls)
	}
	if !strings.Contains(logs.String(), "admin: request refused: no valid credentials (admin_auth)\" method=POST path=/admin/buckets/b1/pause from=10.9.8.7:5555") {
		t.Fatalf("refusals not logged with the caller:\n%s", logs.String())
	}
	if code, _ := do(t, h, "POST", "/admin/buckets/b1/pause", "tok"); code != 200 || len(f.calls) != 1 {
		t.Fatalf("with the token: %d, calls %v", code, f.calls)
	}
}

// Start serves the admin API on AdminAddr and needs a Console for it.
func TestStartAdminAddr(t *testing.T) {
	if _, err := Start(Options{AdminAddr: "127.0.0.1:0"}); err == nil {
		t.Fatal("admin address without a Console started")
	}
	s, err := Start(Options{AdminAddr: "127.0.0.1:0", Console: &fakeConsole{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	resp, err := http.Get("http://" + s.AdminAddr() + "/admin/buckets")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || s.HealthAddr() != "" || s.MetricsAddr() != "" {
		t.Fatalf("%d %q %q", resp.StatusCode, s.HealthAddr(), s.MetricsAddr())
	}
}
