package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clearEnv blanks every override variable (blank counts as unset), so that
// the process environment cannot leak into a test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range []string{EnvInstanceID, EnvListen, EnvListeners, EnvProxyProtocol, EnvTLSCertFile,
		EnvTLSKeyFile, EnvLogLevel, EnvHealthListen, EnvMetricsListen, EnvRedisAddr, EnvRedisPassword, EnvRedisUsername} {
		t.Setenv(name, "")
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvBucketPrefix) {
			t.Setenv(name, "")
		}
	}
}

const bucketsBase = `
buckets:
  - id: b1
    address: db1:1433
    trust_server_certificate: true
    max_connections: 5
`

const minimal = bucketsBase + "default_bucket: b1\n"

// withBucketLines appends lines to bucketsBase (more bucket keys or more
// buckets) and then the default bucket.
func withBucketLines(lines string) string { return bucketsBase + lines + "\ndefault_bucket: b1\n" }

func mustLoad(t *testing.T, y string) *Config {
	t.Helper()
	c, err := LoadBytes([]byte(y))
	if err != nil {
		t.Fatalf("LoadBytes: %v", err)
	}
	return c
}

// loadErrs loads y, expects failure, and returns the error lines.
func loadErrs(t *testing.T, y string) []string {
	t.Helper()
	_, err := LoadBytes([]byte(y))
	if err == nil {
		t.Fatalf("LoadBytes accepted:\n%s", y)
	}
	return strings.Split(err.Error(), "\n")
}

func hasLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, minimal)
	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"instance_id", c.InstanceID, host},
		{"listen", c.Listen, DefaultListen},
		{"listeners", c.Listeners, 0},
		{"proxy_protocol", c.ProxyProtocol.Enabled, false},
		{"client_encryption", fmt.Sprint(c.ClientEncryption), "[none login full strict]"},
		{"login_timeout", c.LoginTimeout, 15 * time.Second},
		{"drain_timeout", c.DrainTimeout, 30 * time.Second},
		{"log_level", c.LogLevel, "info"},
		{"log_format", c.LogFormat, "text"},
		{"health_listen", c.HealthListen, "0.0.0.0:8081"},
		{"metrics_listen", c.MetricsListen, "0.0.0.0:9091"},
		{"redis.addr", c.Redis.Addr, ""},
		{"redis.heartbeat_ttl", c.Redis.HeartbeatTTL, 30 * time.Second},
		{"redis.heartbeat_interval", c.Redis.HeartbeatInterval, 5 * time.Second},
		{"redis.reaper_interval", c.Redis.ReaperInterval, 10 * time.Second},
		{"redis.fallback_divisor", c.Redis.FallbackDivisor, 0},
		{"redis.op_timeout", c.Redis.OpTimeout, 500 * time.Millisecond},
		{"encryption", c.Buckets[0].Encryption, EncryptionLogin},
		{"server_name", c.Buckets[0].ServerName, "db1"},
		{"max_queue_size", c.Buckets[0].MaxQueueSize, 10},
		{"queue_timeout", c.Buckets[0].QueueTimeout, 30 * time.Second},
		{"dial_timeout", c.Buckets[0].DialTimeout, 5 * time.Second},
		{"bucket login_timeout", c.Buckets[0].LoginTimeout, 15 * time.Second},
		{"breaker.failures", c.Buckets[0].Breaker.Failures, 5},
		{"breaker.probe_interval", c.Buckets[0].Breaker.ProbeInterval, 2 * time.Second},
		{"SlogLevel", c.SlogLevel().String(), "INFO"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if c.Bucket("b1") != &c.Buckets[0] || c.Bucket("nope") != nil {
		t.Error("Bucket lookup")
	}
}

func TestExplicitZeroKept(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, `
health_listen: ""
drain_timeout: 0s
buckets:
  - id: b1
    address: db1:1433
    trust_server_certificate: true
    max_connections: 5
    max_queue_size: 0
default_bucket: b1
`)
	if c.Buckets[0].MaxQueueSize != 0 {
		t.Errorf("max_queue_size: 0 became %d", c.Buckets[0].MaxQueueSize)
	}
	if c.HealthListen != "" || c.DrainTimeout != 0 {
		t.Errorf("explicit empty/zero replaced: %q %v", c.HealthListen, c.DrainTimeout)
	}
	lines := loadErrs(t, strings.Replace(minimal, "max_connections: 5", "max_connections: 5\n    queue_timeout: 0s", 1))
	if !hasLine(lines, "buckets[0].queue_timeout: must be > 0 (got 0s)") {
		t.Errorf("explicit queue_timeout 0s: %q", lines)
	}
}

func TestEnvOverrides(t *testing.T) {
	clearEnv(t)
	t.Setenv("INSTANCE_ID", "proxy-7")
	t.Setenv("LISTEN_ADDR", "127.0.0.1:2433")
	t.Setenv("LISTENERS", "3")
	t.Setenv("PROXY_PROTOCOL", "true")
	t.Setenv("TLS_CERT_FILE", "/c.pem")
	t.Setenv("TLS_KEY_FILE", "/k.pem")
	t.Setenv("LOG_LEVEL", "DEBUG")
	t.Setenv("HEALTH_ADDR", "127.0.0.1:18081")
	t.Setenv("METRICS_ADDR", "127.0.0.1:19091")
	t.Setenv("REDIS_ADDR", "redis:6379")
	t.Setenv("REDIS_PASSWORD", "s3cret")
	t.Setenv("TDSGATE_BUCKET_BUCKET_001_ADDRESS", "sqlserver-bucket-1:1433")
	c := mustLoad(t, `
instance_id: from-file
listen: 0.0.0.0:1433
redis: {addr: "localhost:6379"}
buckets:
  - id: bucket-001
    address: 127.0.0.1:14331
    trust_server_certificate: true
    max_connections: 5
  - id: bucket-002
    address: 127.0.0.1:14332
    server_name: explicit.example
    trust_server_certificate: true
    max_connections: 5
default_bucket: bucket-001
`)
	if c.InstanceID != "proxy-7" || c.Listen != "127.0.0.1:2433" || c.Listeners != 3 || !c.ProxyProtocol.Enabled ||
		c.TLS.CertFile != "/c.pem" || c.TLS.KeyFile != "/k.pem" || c.LogLevel != "debug" ||
		c.HealthListen != "127.0.0.1:18081" || c.MetricsListen != "127.0.0.1:19091" ||
		c.Redis.Addr != "redis:6379" || c.Redis.Password != "s3cret" {
		t.Errorf("env not applied: %+v", c.Redacted())
	}
	if b := c.Bucket("bucket-001"); b.Address != "sqlserver-bucket-1:1433" || b.ServerName != "sqlserver-bucket-1" {
		t.Errorf("bucket env: address %q server_name %q", b.Address, b.ServerName)
	}
	if b := c.Bucket("bucket-002"); b.Address != "127.0.0.1:14332" || b.ServerName != "explicit.example" {
		t.Errorf("bucket-002 changed: %+v", b)
	}
	if c.SlogLevel().String() != "DEBUG" {
		t.Errorf("SlogLevel %v", c.SlogLevel())
	}
}

func TestEnvErrors(t *testing.T) {
	clearEnv(t)
	t.Setenv("LISTENERS", "many")
	t.Setenv("PROXY_PROTOCOL", "perhaps")
	t.Setenv("TDSGATE_BUCKET_B9_ADDRESS", "x:1")
	t.Setenv("TDSGATE_BUCKET_B1_ADDRESS", "no-port")
	lines := loadErrs(t, minimal)
	for _, want := range []string{
		`env LISTENERS: not an integer: "many"`,
		`env PROXY_PROTOCOL: not a boolean`,
		`env TDSGATE_BUCKET_B9_ADDRESS: no bucket has an id that maps to it (bucket ids: b1)`,
		`buckets[0].address: "no-port" is not host:port`,
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in %q", want, lines)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), "(set by env TDSGATE_BUCKET_B1_ADDRESS)") {
		t.Errorf("error does not name the env var: %q", lines)
	}
}

func TestBucketEnvVar(t *testing.T) {
	for id, want := range map[string]string{
		"bucket-001": "TDSGATE_BUCKET_BUCKET_001_ADDRESS",
		"eu.west_1":  "TDSGATE_BUCKET_EU_WEST_1_ADDRESS",
		"B2":         "TDSGATE_BUCKET_B2_ADDRESS",
	} {
		if got := BucketEnvVar(id); got != want {
			t.Errorf("BucketEnvVar(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestValidationErrorsNameTheirPath(t *testing.T) {
	clearEnv(t)
	hash := Demo().Routes[0].PasswordHash
	cases := []struct {
		yaml string
		want string
	}{
		{`instance_id: "a b"` + minimal, `instance_id: "a b": use letters`},
		{`listen: nowhere` + minimal, `listen: "nowhere" is not host:port`},
		{`listen: ":99999"` + minimal, `listen: ":99999": port "99999" is not a number`},
		{`listeners: -1` + minimal, `listeners: must be >= 0 (got -1)`},
		{"tls: {cert_file: c.pem}" + minimal, `tls.key_file: required when tls.cert_file is set`},
		{"tls: {key_file: k.pem}" + minimal, `tls.cert_file: required when tls.key_file is set`},
		{"client_encryption: []" + minimal, `client_encryption: must allow at least one mode`},
		{"client_encryption: [none, tls]" + minimal, `client_encryption[1]: unknown mode "tls"`},
		{"client_encryption: [full, full]" + minimal, `client_encryption[1]: duplicate mode "full"`},
		{"login_timeout: 0s" + minimal, `login_timeout: must be > 0 (got 0s)`},
		{"drain_timeout: -1s" + minimal, `drain_timeout: must be >= 0 (got -1s)`},
		{"drain_delay: -1s" + minimal, `drain_delay: must be >= 0 (got -1s)`},
		{"log_level: loud" + minimal, `log_level: unknown level "loud"`},
		{"log_format: xml" + minimal, `log_format: unknown format "xml"`},
		{"health_listen: x" + minimal, `health_listen: "x" is not host:port`},
		{"metrics_listen: 0.0.0.0:1433" + minimal, `metrics_listen: "0.0.0.0:1433" would bind the same port as listen`},
		{"health_listen: 127.0.0.1:9091" + minimal, `metrics_listen: "0.0.0.0:9091" would bind the same port as health_listen`},
		{"redis: {addr: redis}" + minimal, `redis.addr: "redis" is not host:port`},
		{"redis: {addr: ':6379'}" + minimal, `redis.addr: ":6379": host is empty`},
		{"redis: {db: -1}" + minimal, `redis.db: must be >= 0 (got -1)`},
		{"redis: {heartbeat_ttl: 0s}" + minimal, `redis.heartbeat_ttl: must be > 0 (got 0s)`},
		{"redis: {heartbeat_interval: 30s}" + minimal, `redis.heartbeat_interval: must be shorter than redis.heartbeat_ttl (30s)`},
		{"redis: {reaper_interval: 0s}" + minimal, `redis.reaper_interval: must be > 0`},
		{"redis: {fallback_divisor: -2}" + minimal, `redis.fallback_divisor: must be >= 0 (got -2)`},
		{"redis: {op_timeout: 0s}" + minimal, `redis.op_timeout: must be > 0`},
		{"default_bucket: x", `buckets: at least one bucket is required`},
		{"buckets: [{address: 'a:1', trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: x", `buckets[0].id: required`},
		{"buckets: [{id: 'a b', address: 'a:1', trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: x", `buckets[0].id: "a b": use letters`},
		{withBucketLines("  - {id: b1, address: 'a:1', trust_server_certificate: true, max_connections: 1}"), `buckets[1].id: duplicate id "b1" (also buckets[0])`},
		{"buckets: [{id: b-1, address: 'a:1', encryption: none, max_connections: 1}, {id: b_1, address: 'a:1', encryption: none, max_connections: 1}]\ndefault_bucket: b-1",
			`buckets[1].id: "b_1" and buckets[0].id "b-1" share the env override TDSGATE_BUCKET_B_1_ADDRESS`},
		{"buckets: [{id: b, trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: b", `buckets[0].address: required`},
		{"buckets: [{id: b, address: 'b:0', trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: b", `buckets[0].address: "b:0": port "0" is not a number in 1..65535`},
		{"buckets: [{id: b, address: 'b:1', encryption: tls, max_connections: 1}]\ndefault_bucket: b", `buckets[0].encryption: unknown mode "tls"`},
		{"buckets: [{id: b, address: 'b:1', max_connections: 1}]\ndefault_bucket: b", `buckets[0].encryption: "login" uses TLS, so the server's certificate must be checked`},
		{"buckets: [{id: b, address: 'b:1', encryption: strict, max_connections: 1}]\ndefault_bucket: b", `buckets[0].encryption: "strict" uses TLS`},
		{"buckets: [{id: b, address: 'b:1', ca_file: ca.pem, trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: b", `buckets[0].trust_server_certificate: true skips verification`},
		{"buckets: [{id: b, address: 'b:1', encryption: none, ca_file: ca.pem, max_connections: 1}]\ndefault_bucket: b", `buckets[0].ca_file: has no effect with encryption "none"`},
		{"buckets: [{id: b, address: 'b:1', encryption: none, trust_server_certificate: true, max_connections: 1}]\ndefault_bucket: b", `buckets[0].trust_server_certificate: has no effect`},
		{withBucketLines("  - {id: b2, address: 'a:1', trust_server_certificate: true, max_connections: 0}"), `buckets[1].max_connections: must be > 0 (got 0)`},
		{withBucketLines("    max_queue_size: -1"), `buckets[0].max_queue_size: must be >= 0 (got -1)`},
		{withBucketLines("    queue_timeout: -1s"), `buckets[0].queue_timeout: must be > 0 (got -1s)`},
		{withBucketLines("    dial_timeout: 0s"), `buckets[0].dial_timeout: must be > 0`},
		{withBucketLines("    login_timeout: 0s"), `buckets[0].login_timeout: must be > 0`},
		{withBucketLines("    breaker: {failures: 0}"), `buckets[0].breaker.failures: must be > 0 (got 0)`},
		{withBucketLines("    breaker: {probe_interval: 0s}"), `buckets[0].breaker.probe_interval: must be > 0`},
		{strings.Replace(minimal, "default_bucket: b1", "", 1), `routes: no routes and no default_bucket`},
		{minimal + "\nroutes: [{bucket: bucket-9, user: u}]", `routes[0].bucket: unknown bucket "bucket-9"`},
		{minimal + "\nroutes: [{user: u}]", `routes[0].bucket: required`},
		{minimal + "\nroutes: [{bucket: b1, user: u}, {bucket: b1}]", `routes[1]: no matcher set`},
		{minimal + "\nroutes: [{bucket: b1, server: ',1433'}]", `routes[0].server: ",1433" names no host`},
		{minimal + "\nroutes: [{bucket: b1, user: u, password_hash: hunter2}]", `routes[0].password_hash: malformed hash`},
		{minimal + "\nroutes: [{bucket: b1, password_hash: '" + hash + "'}]", `routes[0].user: required by password_hash`},
		{strings.Replace(minimal, "default_bucket: b1", "default_bucket: b2", 1), `default_bucket: unknown bucket "b2"`},
	}
	for _, tc := range cases {
		lines := loadErrs(t, tc.yaml)
		if !hasLine(lines, tc.want) {
			t.Errorf("want a line starting %q, got:\n  %s\nconfig:\n%s", tc.want, strings.Join(lines, "\n  "), tc.yaml)
		}
		// Every error names a path before its colon.
		for _, l := range lines {
			if !strings.Contains(l, ": ") {
				t.Errorf("error line names no path: %q", l)
			}
		}
	}
}

func TestAllErrorsCollected(t *testing.T) {
	clearEnv(t)
	_, err := LoadBytes([]byte(`
log_level: loud
buckets:
  - id: b1
    address: db1:1433
    trust_server_certificate: true
    max_connections: 0
  - id: b2
    address: db2:1433
    trust_server_certificate: true
    max_connections: 0
routes:
  - bucket: bucket-9
    user: u
`))
	if err == nil {
		t.Fatal("accepted")
	}
	var fes []*FieldError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("not a *FieldError: %v", e)
		}
		fes = append(fes, fe)
	}
	var paths []string
	for _, fe := range fes {
		paths = append(paths, fe.Path)
	}
	want := "log_level buckets[0].max_connections buckets[1].max_connections routes[0].bucket"
	if strings.Join(paths, " ") != want {
		t.Fatalf("paths %q, want %q\n%v", paths, want, err)
	}
	if !strings.Contains(err.Error(), "buckets[1].max_connections: must be > 0 (got 0)") ||
		!strings.Contains(err.Error(), `routes[0].bucket: unknown bucket "bucket-9"`) {
		t.Fatalf("message: %v", err)
	}
}

func TestUnknownKeysAndTypes(t *testing.T) {
	clearEnv(t)
	lines := loadErrs(t, `
listn: 0.0.0.0:1433
redis:
  adr: redis:6379
buckets:
  - id: b1
    address: db1:1433
    trust_server_certificate: true
    max_connections: 5
  - id: b2
    address: db2:1433
    max_conections: 5
    breaker: {failures: 1, probes: 2}
routes:
  - {bucket: b1, usr: sa}
default_bucket: b1
`)
	for _, want := range []string{
		"listn: unknown field (line 2)",
		"redis.adr: unknown field (line 4)",
		"buckets[1].max_conections: unknown field (line 12)",
		"buckets[1].breaker.probes: unknown field (line 13)",
		"routes[0].usr: unknown field (line 15)",
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}

	lines = loadErrs(t, `
login_timeout: 15
proxy_protocol: maybe
listeners: two
client_encryption: none
buckets:
  - id: b1
    address: db1:1433
    max_connections: "many"
    queue_timeout: soon
    breaker: 3
default_bucket: b1
`)
	for _, want := range []string{
		`login_timeout: want a duration such as "30s" or "500ms", got "15" (line 2)`,
		`proxy_protocol: want true or false, got "maybe" (line 3)`,
		`listeners: want an integer, got "two" (line 4)`,
		`client_encryption: want a list, got "none" (line 5)`,
		`buckets[0].max_connections: want an integer, got "many" (line 9)`,
		`buckets[0].queue_timeout: want a duration such as "30s" or "500ms", got "soon" (line 10)`,
		`buckets[0].breaker: want a mapping, got "3" (line 11)`,
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}

	if _, err := LoadBytes([]byte("buckets: [")); err == nil || !strings.Contains(err.Error(), "yaml") {
		t.Errorf("syntax error: %v", err)
	}
	if _, err := LoadBytes([]byte("- a\n- b\n")); err == nil {
		t.Error("a list as the document accepted")
	}
	if _, err := LoadBytes(nil); err == nil || !strings.Contains(err.Error(), "buckets: at least one bucket is required") {
		t.Errorf("empty document: %v", err)
	}
}

func TestMergeKeysCountAsPresent(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, `
buckets:
  - &base
    id: b1
    address: db1:1433
    trust_server_certificate: true
    max_connections: 5
    max_queue_size: 0
    queue_timeout: 3s
  - <<: *base
    id: b2
default_bucket: b1
`)
	b2 := c.Bucket("b2")
	if b2 == nil || b2.MaxQueueSize != 0 || b2.QueueTimeout != 3*time.Second || b2.Address != "db1:1433" {
		t.Fatalf("merged bucket: %+v", b2)
	}
}

func TestExampleYAML(t *testing.T) {
	clearEnv(t)
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.InstanceID != "proxy-1" || len(c.Buckets) != 2 || len(c.Routes) != 3 || c.DefaultBucket != "bucket-001" {
		t.Fatalf("example: %+v", c.Redacted())
	}
	b2 := c.Bucket("bucket-002")
	if b2.Encryption != EncryptionFull || b2.CAFile == "" || b2.MaxQueueSize != 0 || b2.QueueTimeout != DefaultQueueTimeout {
		t.Fatalf("bucket-002: %+v", b2)
	}
	if c.Routes[2].PasswordHash == "" || c.Routes[1].App != "Power BI*" {
		t.Fatalf("routes: %+v", c.Routes)
	}
}

func TestLoadFileErrors(t *testing.T) {
	clearEnv(t)
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("listen: x\n"+minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	var fe *FieldError
	if err == nil || !strings.Contains(err.Error(), p) || !errors.As(err, &fe) || fe.Path != "listen" {
		t.Errorf("invalid file: %v", err)
	}
}

func TestDemo(t *testing.T) {
	c := Demo()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1433" || c.HealthListen != "127.0.0.1:8081" || c.MetricsListen != "127.0.0.1:9091" ||
		c.Redis.Addr != "" || c.DefaultBucket != "" || len(c.Buckets) != 3 || len(c.Routes) != 3 {
		t.Fatalf("demo: %+v", c.Redacted())
	}
	for i, b := range c.Buckets {
		id := fmt.Sprintf("bucket-%03d", i+1)
		if b.ID != id || b.Address != fmt.Sprintf("127.0.0.1:%d", 14331+i) || b.Encryption != EncryptionLogin ||
			!b.TrustServerCertificate || b.MaxConnections != 20 || b.MaxQueueSize != 10 ||
			b.QueueTimeout != 30*time.Second || b.ServerName != "127.0.0.1" {
			t.Errorf("bucket %d: %+v", i, b)
		}
		r := c.Routes[i]
		if r.Bucket != id || r.User != "sa" || r.Database != "tenant_db" || !strings.HasPrefix(r.PasswordHash, "pbkdf2-sha256$10000$") {
			t.Errorf("route %d: %+v", i, r)
		}
		for _, pw := range DemoPasswords {
			if strings.Contains(r.PasswordHash, pw) {
				t.Errorf("route %d carries a password", i)
			}
		}
	}
	// Fresh copies: mutating one does not affect the next.
	c.Buckets[0].MaxConnections = 1
	if Demo().Buckets[0].MaxConnections != 20 {
		t.Error("Demo shares state between calls")
	}
}

func TestRedacted(t *testing.T) {
	c := Demo()
	c.Redis.Password = "s3cret"
	r := c.Redacted()
	s := fmt.Sprintf("%+v", r)
	if strings.Contains(s, "s3cret") || strings.Contains(s, c.Routes[0].PasswordHash) {
		t.Fatalf("not redacted: %s", s)
	}
	if c.Redis.Password != "s3cret" || !strings.HasPrefix(c.Routes[0].PasswordHash, "pbkdf2") {
		t.Fatal("Redacted modified the original")
	}
}

func TestSplitServerName(t *testing.T) {
	for in, want := range map[string][2]string{
		"localhost":                   {"localhost", ""},
		"LocalHost,1433":              {"localhost", ""},
		"  tcp:DB.Example.com.,1433 ": {"db.example.com", ""},
		`db.example.com\Sales,14330`:  {"db.example.com", "sales"},
		`np:\\.\pipe\sql\query`:       {"", `\.\pipe\sql\query`},
		"[::1],1433":                  {"::1", ""},
		"::1":                         {"::1", ""},
		"admin:db":                    {"db", ""},
		"127.0.0.1":                   {"127.0.0.1", ""},
		"":                            {"", ""},
		"*.example.com":               {"*.example.com", ""},
	} {
		h, i := SplitServerName(in)
		if h != want[0] || i != want[1] {
			t.Errorf("SplitServerName(%q) = %q, %q; want %q, %q", in, h, i, want[0], want[1])
		}
	}
}

func TestAddDemoMultiplexed(t *testing.T) {
	c := Demo()
	if err := AddDemoMultiplexed(c); err != nil {
		t.Fatal(err)
	}
	if len(c.Buckets) != 4 || len(c.Routes) != 4 {
		t.Fatalf("%d buckets, %d routes", len(c.Buckets), len(c.Routes))
	}
	b := c.Buckets[3]
	if b.ID != DemoMuxBucket || b.PoolMode != PoolModeTransaction || b.Address != c.Buckets[0].Address || b.MaxConnections != DemoMuxMax {
		t.Errorf("the multiplexed bucket: %+v", b)
	}
	if r := c.Routes[0]; r.Bucket != DemoMuxBucket || r.User != DemoMuxUser || strings.Contains(r.PasswordHash, DemoMuxPassword) {
		t.Errorf("its route: %+v", r)
	}
	for _, b := range c.Buckets[:3] {
		if b.PoolMode != DefaultPoolMode {
			t.Errorf("%s: pool_mode %s", b.ID, b.PoolMode)
		}
	}
}
