package main

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/admin/*.golden from the current output")

// adminFixture serves testdata/admin/<name>.json for each admin API path
// and records the requests.
type adminFixture struct {
	mu   sync.Mutex
	seen []string
	auth []string
}

func (f *adminFixture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Method+" "+r.URL.RequestURI())
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	routes := map[string]string{
		"GET /admin/buckets":                    "buckets",
		"GET /admin/sessions":                   "sessions",
		"GET /admin/pools":                      "pools",
		"GET /admin/instances":                  "instances",
		"POST /admin/sessions/7/kill":           "kill",
		"POST /admin/buckets/bucket-002/pause":  "pause",
		"POST /admin/buckets/bucket-002/resume": "pause",
		"POST /admin/buckets/bucket-002/drain":  "drain",
		"POST /admin/reload":                    "reload",
	}
	name, ok := routes[r.Method+" "+r.URL.Path]
	if !ok {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	b, err := os.ReadFile(filepath.Join("testdata", "admin", name+".json"))
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	if name == "reload" {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	w.Write(b)
}

// The table output of every `proxy admin` command, against fixed API
// answers, matches testdata/admin/<case>.golden (go test -run
// TestAdminGolden ./cmd/proxy -update rewrites them).
func TestAdminGolden(t *testing.T) {
	fx := &adminFixture{}
	srv := httptest.NewServer(fx)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	cases := []struct {
		golden string
		args   []string
		code   int
		req    string
	}{
		{"buckets", []string{"buckets"}, 0, "GET /admin/buckets"},
		{"sessions", []string{"sessions", "--bucket", "bucket-002", "--state", "active"}, 0, "GET /admin/sessions?bucket=bucket-002&state=active"},
		{"pools", []string{"pools"}, 0, "GET /admin/pools"},
		{"instances", []string{"instances"}, 0, "GET /admin/instances"},
		{"kill", []string{"kill", "7"}, 0, "POST /admin/sessions/7/kill"},
		{"pause", []string{"pause", "bucket-002", "--fleet"}, 0, "POST /admin/buckets/bucket-002/pause?fleet=1"},
		{"drain", []string{"drain", "bucket-002"}, 0, "POST /admin/buckets/bucket-002/drain"},
		{"reload", []string{"reload"}, 1, "POST /admin/reload"},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runAdmin(append([]string{"--addr", addr, "--token-file", tok}, c.args...), &out, &errb)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, c.code, errb.String())
			}
			fx.mu.Lock()
			last, auth := fx.seen[len(fx.seen)-1], fx.auth[len(fx.auth)-1]
			fx.mu.Unlock()
			if last != c.req || auth != "Bearer s3cret" {
				t.Fatalf("request %q (auth %q), want %q with the token", last, auth, c.req)
			}
			golden := filepath.Join("testdata", "admin", c.golden+".golden")
			if *updateGolden {
				os.WriteFile(golden, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("output differs from %s (-update rewrites it):\n--- got\n%s--- want\n%s", golden, out.String(), want)
			}
		})
	}

	// -o json prints the API's body as is.
	var out, errb bytes.Buffer
	if code := runAdmin([]string{"--addr", addr, "-o", "json", "instances"}, &out, &errb); code != 0 {
		t.Fatalf("-o json: exit %d: %s", code, errb.String())
	}
	want, _ := os.ReadFile(filepath.Join("testdata", "admin", "instances.json"))
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("-o json printed %q", out.String())
	}
}

// --addr and --token-file default from the config file's admin_listen
// (a wildcard host dials loopback) and admin_auth.token_file.
func TestAdminDefaultsFromConfig(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("t0k"), 0o600)
	cfg := filepath.Join(dir, "proxy.yaml")
	os.WriteFile(cfg, []byte(`admin_listen: 0.0.0.0:19999
admin_auth: {token_file: `+tok+`}
buckets: [{id: b1, address: "127.0.0.1:1", max_connections: 1, encryption: none}]
default_bucket: b1
`), 0o600)
	c := &adminCLI{configPath: cfg}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.addr != "127.0.0.1:19999" || c.tokenFile != tok {
		t.Fatalf("from the config: addr %q token file %q", c.addr, c.tokenFile)
	}
	c = &adminCLI{}
	if err := c.defaults(); err != nil || c.addr != "127.0.0.1:9092" {
		t.Fatalf("no config: addr %q, %v", c.addr, err)
	}
	var out, errb bytes.Buffer
	if code := runAdmin([]string{"frobnicate"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("unknown command: exit %d, %q", code, errb.String())
	}
}
