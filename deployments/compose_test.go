package deployments_test

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route"
)

// No Docker engine runs in CI: these tests check what can be checked
// without one: the compose file against the runbook's table (section 4),
// the files it references, the proxy configs, the HAProxy configs.

var runbookPasswords = [3]string{"YourStr0ngP@ssword1", "YourStr0ngP@ssword2", "YourStr0ngP@ssword3"}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image         string            `yaml:"image"`
	ContainerName string            `yaml:"container_name"`
	Build         map[string]string `yaml:"build"`
	Environment   map[string]string `yaml:"environment"`
	Ports         []string          `yaml:"ports"`
	Volumes       []string          `yaml:"volumes"`
	DependsOn     any               `yaml:"depends_on"`
	Healthcheck   *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Entrypoint []string `yaml:"entrypoint"`
	Command    []string `yaml:"command"`
	Restart    string   `yaml:"restart"`
	CapAdd     []string `yaml:"cap_add"`
}

// deps returns service → condition ("" for the short list form).
func (s composeService) deps(t *testing.T) map[string]string {
	out := map[string]string{}
	switch d := s.DependsOn.(type) {
	case nil:
	case []any:
		for _, n := range d {
			out[n.(string)] = ""
		}
	case map[string]any:
		for n, v := range d {
			cond, _ := v.(map[string]any)["condition"].(string)
			out[n] = cond
		}
	default:
		t.Fatalf("depends_on: unexpected %T", d)
	}
	return out
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// TestComposeMatchesRunbook: the eleven containers, their host ports
// (the runbook's table), dependencies and health checks.
func TestComposeMatchesRunbook(t *testing.T) {
	c := loadCompose(t)
	want := map[string][]string{ // service → host:container ports of the runbook's table
		"sqlserver-bucket-1": {"14331:1433"},
		"sqlserver-bucket-2": {"14332:1433"},
		"sqlserver-bucket-3": {"14333:1433"},
		"redis":              {"6379:6379"},
		"init-db":            nil,
		"proxy-1":            {"18081:8081", "19091:9091"},
		"proxy-2":            {"18082:8081", "19092:9091"},
		"proxy-3":            {"18083:8081", "19093:9091"},
		"haproxy":            {"1433:1433", "8404:8404"},
		"prometheus":         {"9090:9090"},
		"grafana":            {"3000:3000"},
	}
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(c.Services) != 11 {
		t.Errorf("%d services, want the runbook's 11: %v", len(c.Services), names)
	}
	hostPorts := map[string]string{}
	for name, ports := range want {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if s.ContainerName != name {
			t.Errorf("%s: container_name %q (the runbook runs docker inspect/exec %s)", name, s.ContainerName, name)
		}
		for _, p := range ports {
			if !slices.Contains(s.Ports, p) {
				t.Errorf("%s: ports %v lack %s", name, s.Ports, p)
			}
		}
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			if other, dup := hostPorts[host]; dup {
				t.Errorf("host port %s published by %s and %s", host, other, name)
			}
			hostPorts[host] = name
		}
	}

	// SQL Servers: 2022 image, their sa password, sqlcmd health check.
	for n := 1; n <= 3; n++ {
		s := c.Services[fmt.Sprintf("sqlserver-bucket-%d", n)]
		if s.Image != "mcr.microsoft.com/mssql/server:2022-latest" {
			t.Errorf("sqlserver-bucket-%d image %q", n, s.Image)
		}
		if s.Environment["MSSQL_SA_PASSWORD"] != runbookPasswords[n-1] || s.Environment["ACCEPT_EULA"] != "Y" {
			t.Errorf("sqlserver-bucket-%d environment %v", n, s.Environment)
		}
		hc := ""
		if s.Healthcheck != nil {
			hc = strings.Join(s.Healthcheck.Test, " ")
		}
		for _, w := range []string{"/opt/mssql-tools18/bin/sqlcmd", " -C", "SELECT 1"} {
			if !strings.Contains(hc, w) {
				t.Errorf("sqlserver-bucket-%d healthcheck %q lacks %q", n, hc, w)
			}
		}
	}
	if r := c.Services["redis"]; r.Healthcheck == nil || !strings.Contains(strings.Join(r.Healthcheck.Test, " "), "redis-cli ping") {
		t.Errorf("redis healthcheck: %+v", r.Healthcheck)
	}

	// init-db: once, after the three SQL Servers are healthy.
	db := c.Services["init-db"]
	if d := db.deps(t); len(d) != 3 || d["sqlserver-bucket-1"] != "service_healthy" ||
		d["sqlserver-bucket-2"] != "service_healthy" || d["sqlserver-bucket-3"] != "service_healthy" {
		t.Errorf("init-db depends_on %v, want the three SQL Servers service_healthy", d)
	}
	if db.Restart != "no" {
		t.Errorf("init-db restart %q, want \"no\" (it runs once)", db.Restart)
	}

	// Proxies: built from the Dockerfile, env overrides, the config mounted.
	for n := 1; n <= 3; n++ {
		name := fmt.Sprintf("proxy-%d", n)
		s := c.Services[name]
		if s.Build["dockerfile"] != "deployments/Dockerfile" || s.Build["context"] != ".." {
			t.Errorf("%s build %v", name, s.Build)
		}
		env := s.Environment
		if env["INSTANCE_ID"] != name || env["REDIS_ADDR"] != "redis:6379" {
			t.Errorf("%s environment %v", name, env)
		}
		for b := 1; b <= 3; b++ {
			k := fmt.Sprintf("TDSGATE_BUCKET_BUCKET_%03d_ADDRESS", b)
			if env[k] != fmt.Sprintf("sqlserver-bucket-%d:1433", b) {
				t.Errorf("%s %s = %q", name, k, env[k])
			}
		}
		if !slices.Contains(s.Volumes, "./proxy.yaml:/etc/tdsgate/proxy.yaml:ro") {
			t.Errorf("%s volumes %v lack the config", name, s.Volumes)
		}
		if d := s.deps(t); d["redis"] != "service_healthy" || d["init-db"] != "service_completed_successfully" {
			t.Errorf("%s depends_on %v", name, d)
		}
	}
	if d := c.Services["haproxy"].deps(t); len(d) != 3 {
		t.Errorf("haproxy depends_on %v, want the three proxies", d)
	}
	if d := c.Services["grafana"].deps(t); !slices.Contains(slices.Collect(maps.Keys(d)), "prometheus") {
		t.Errorf("grafana depends_on %v", d)
	}
	if g := c.Services["grafana"].Environment; g["GF_SECURITY_ADMIN_USER"] != "admin" || g["GF_SECURITY_ADMIN_PASSWORD"] != "admin" {
		t.Errorf("grafana credentials %v, want admin/admin", g)
	}
}

// TestComposeReferences: every file or directory the compose file mounts
// or builds from exists (prometheus/ and grafana/ belong to the
// observability work; this checks the paths the compose file uses).
func TestComposeReferences(t *testing.T) {
	c := loadCompose(t)
	want := map[string]string{
		"./haproxy.cfg":          "/usr/local/etc/haproxy/haproxy.cfg",
		"./proxy.yaml":           "/etc/tdsgate/proxy.yaml",
		"./init-db":              "/init-db",
		"./prometheus":           "/etc/prometheus",
		"./grafana/provisioning": "/etc/grafana/provisioning",
		"./grafana/dashboards":   "/var/lib/grafana/dashboards",
	}
	seen := map[string]bool{}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, rest, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s: volume %q is not declared", name, src)
				}
				continue
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
			dst, _, _ := strings.Cut(rest, ":")
			if w, ok := want[src]; ok && w != dst {
				t.Errorf("%s mounts %s at %s, want %s", name, src, dst, w)
			}
			seen[src] = true
		}
	}
	for src := range want {
		if !seen[src] {
			t.Errorf("nothing mounts %s", src)
		}
	}
	for _, f := range []string{"prometheus/prometheus.yml", "init-db/init.sh", "init-db/init.sql", "Dockerfile"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if p := c.Services["prometheus"]; !slices.Contains(p.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus command %v", p.Command)
	}
	if e := c.Services["init-db"].Entrypoint; !slices.Contains(e, "/init-db/init.sh") {
		t.Errorf("init-db entrypoint %v", e)
	}
	sql, _ := os.ReadFile("init-db/init.sql")
	for _, w := range []string{"CREATE DATABASE tenant_db", "CREATE TABLE dbo.test_table", "id    INT IDENTITY(1,1) PRIMARY KEY",
		"name  NVARCHAR(100)", "value INT", "INSERT INTO dbo.test_table"} {
		if !strings.Contains(string(sql), w) {
			t.Errorf("init-db/init.sql lacks %q", w)
		}
	}
}

// TestDockerfile: multi-stage, static, non-root.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(b)
	for _, w := range []string{"FROM golang:1.26 AS build", "CGO_ENABLED=0", "go build", "./cmd/proxy/",
		"FROM gcr.io/distroless/static", "USER 65532:65532", `ENTRYPOINT ["/usr/local/bin/proxy"]`} {
		if !strings.Contains(d, w) {
			t.Errorf("Dockerfile lacks %q", w)
		}
	}
	if strings.Contains(d, "USER root") || strings.Contains(d, "USER 0") {
		t.Error("Dockerfile runs as root")
	}
	// The eBPF tracker's capabilities: permitted file capabilities (the
	// proxy raises them), never effective ("e"), with which a container
	// started without cap_add could not exec the binary at all.
	if !strings.Contains(d, "setcap cap_bpf,cap_net_admin=p /out/proxy") {
		t.Error("Dockerfile lacks `setcap cap_bpf,cap_net_admin=p /out/proxy`")
	}
	if strings.Contains(d, "=ep") || strings.Contains(d, "+ep") || strings.Contains(d, "=eip") {
		t.Error("Dockerfile sets effective file capabilities")
	}
}

// loadComposeProxyConfig loads proxy.yaml with the compose service's
// environment.
func loadComposeProxyConfig(t *testing.T, service string) *config.Config {
	t.Helper()
	clearProxyEnv(t)
	for k, v := range loadCompose(t).Services[service].Environment {
		t.Setenv(k, v)
	}
	cfg, err := config.Load("proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// routeTo reports which bucket the config routes sa/tenant_db with pw to.
func routeTo(t *testing.T, cfg *config.Config, pw string) string {
	t.Helper()
	for _, r := range cfg.Routes {
		if r.User != "sa" || r.Database != "tenant_db" || r.PasswordHash == "" {
			continue
		}
		ok, err := route.VerifyPassword(r.PasswordHash, pw)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return r.Bucket
		}
	}
	return ""
}

func clearProxyEnv(t *testing.T) {
	for _, k := range []string{"INSTANCE_ID", "LISTEN_ADDR", "REDIS_ADDR", "HEALTH_ADDR", "METRICS_ADDR", "LISTENERS", "LOG_LEVEL",
		"TDSGATE_BUCKET_BUCKET_001_ADDRESS", "TDSGATE_BUCKET_BUCKET_002_ADDRESS", "TDSGATE_BUCKET_BUCKET_003_ADDRESS"} {
		t.Setenv(k, "")
	}
}

// TestProxyConfigs: deployments/proxy.yaml with each compose proxy's
// environment, and deployments/local/proxy-N.yaml, load; their routes
// send each runbook password to its bucket; addresses are the runbook's.
func TestProxyConfigs(t *testing.T) {
	c := loadCompose(t)
	for n := 1; n <= 3; n++ {
		name := fmt.Sprintf("proxy-%d", n)
		t.Run("compose/"+name, func(t *testing.T) {
			clearProxyEnv(t)
			for k, v := range c.Services[name].Environment {
				t.Setenv(k, v)
			}
			cfg := loadComposeProxyConfig(t, name)
			if !cfg.ProxyProtocol.Enabled || len(cfg.ProxyProtocol.Trusted) != 1 {
				t.Errorf("proxy_protocol %+v: want on, trusting HAProxy alone", cfg.ProxyProtocol)
			}
			if cfg.InstanceID != name || cfg.Redis.Addr != "redis:6379" || cfg.Listen != "0.0.0.0:1433" ||
				cfg.HealthListen != "0.0.0.0:8081" || cfg.MetricsListen != "0.0.0.0:9091" {
				t.Errorf("id %s redis %s listen %s health %s metrics %s", cfg.InstanceID, cfg.Redis.Addr, cfg.Listen, cfg.HealthListen, cfg.MetricsListen)
			}
			checkBuckets(t, cfg, func(b int) string { return fmt.Sprintf("sqlserver-bucket-%d:1433", b) })
			if cfg.DrainDelay <= 0 {
				t.Error("drain_delay is 0: a rolling restart would fail logins")
			}
		})
		t.Run("local/"+name, func(t *testing.T) {
			clearProxyEnv(t)
			cfg, err := config.Load(filepath.Join("local", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.InstanceID != name || cfg.Redis.Addr != "127.0.0.1:6379" ||
				cfg.Listen != fmt.Sprintf("127.0.0.1:%d", 11442+n) ||
				cfg.HealthListen != fmt.Sprintf("127.0.0.1:%d", 18080+n) || cfg.MetricsListen != fmt.Sprintf("127.0.0.1:%d", 19090+n) {
				t.Errorf("id %s redis %s listen %s health %s metrics %s", cfg.InstanceID, cfg.Redis.Addr, cfg.Listen, cfg.HealthListen, cfg.MetricsListen)
			}
			checkBuckets(t, cfg, func(b int) string { return fmt.Sprintf("127.0.0.1:%d", 14330+b) })
			if !cfg.ProxyProtocol.Enabled || !slices.Equal(cfg.ProxyProtocol.Trusted, []string{"127.0.0.3/32"}) {
				t.Errorf("proxy_protocol %+v: want on, trusting HAProxy's source 127.0.0.3 alone", cfg.ProxyProtocol)
			}
			if cfg.Redis.HeartbeatTTL.Seconds() != 5 || cfg.Buckets[0].QueueTimeout.Seconds() != 3 || cfg.Redis.ReaperInterval.Seconds() > 2 {
				t.Errorf("test timeouts: heartbeat_ttl %s queue_timeout %s reaper %s", cfg.Redis.HeartbeatTTL, cfg.Buckets[0].QueueTimeout, cfg.Redis.ReaperInterval)
			}
			if cfg.DrainDelay <= 0 {
				t.Error("drain_delay is 0: a rolling restart would fail logins")
			}
		})
	}
}

func checkBuckets(t *testing.T, cfg *config.Config, addr func(int) string) {
	t.Helper()
	if len(cfg.Buckets) != 3 {
		t.Fatalf("%d buckets", len(cfg.Buckets))
	}
	for i, b := range cfg.Buckets {
		id := fmt.Sprintf("bucket-%03d", i+1)
		if b.ID != id || b.Address != addr(i+1) || !b.TrustServerCertificate || b.MaxQueueSize != 2 || b.MaxConnections != 20 {
			t.Errorf("bucket %d: %+v", i, b)
		}
		if got := routeTo(t, cfg, runbookPasswords[i]); got != id {
			t.Errorf("password %d routes to %q, want %s", i+1, got, id)
		}
	}
	if got := routeTo(t, cfg, "wrong"); got != "" || cfg.DefaultBucket != "" {
		t.Errorf("a wrong password routes to %q (default %q)", got, cfg.DefaultBucket)
	}
}

// TestHAProxyConfigs: haproxy -c on both configs; both check /health/live
// and /health on the proxies' health ports and retry/redispatch.
func TestHAProxyConfigs(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is not installed: apt-get install haproxy (tools/deps.sh installs it)")
	}
	for _, f := range []string{"haproxy.cfg", "local/haproxy.cfg"} {
		out, err := exec.Command("haproxy", "-c", "-f", f).CombinedOutput()
		if err != nil {
			t.Errorf("haproxy -c -f %s: %v\n%s", f, err, out)
		}
		b, _ := os.ReadFile(f)
		cfg := string(b)
		for _, w := range []string{"mode tcp", "option httpchk GET /health/live", "uri /health/live", "uri /health ver",
			"retries 3", "option redispatch", "timeout connect", "stats uri /stats", "balance roundrobin"} {
			if !strings.Contains(cfg, w) {
				t.Errorf("%s lacks %q", f, w)
			}
		}
		// Real client addresses: the PROXY protocol to every proxy, none
		// to the health checks (HTTP on the health port).
		for _, w := range []string{"send-proxy-v2", "bind :11433", "bind :11434", "bind :11435", "track tdsgate/proxy-1"} {
			if f != "haproxy.cfg" {
				w = strings.Replace(w, "bind :", "bind 127.0.0.1:", 1)
			}
			if !strings.Contains(cfg, w) {
				t.Errorf("%s lacks %q", f, w)
			}
		}
		for l := range strings.Lines(cfg) {
			if l = strings.TrimSpace(l); !strings.HasPrefix(l, "#") && strings.Contains(l, "check-send-proxy") {
				t.Errorf("%s sends the PROXY header to the HTTP health checks: %s", f, l)
			}
		}
		if f != "haproxy.cfg" && strings.Count(cfg, "source 127.0.0.3") != 4 {
			t.Errorf("%s: every backend must connect from 127.0.0.3 (the proxies' proxy_protocol.trusted)", f)
		}
		for n := 1; n <= 3; n++ {
			var line string
			if f == "haproxy.cfg" {
				line = fmt.Sprintf("server proxy-%d proxy-%d:1433 check port 8081", n, n)
			} else {
				line = fmt.Sprintf("server proxy-%d 127.0.0.1:%d check port %d", n, 11442+n, 18080+n)
			}
			if !strings.Contains(cfg, line) {
				t.Errorf("%s lacks %q", f, line)
			}
		}
	}
}

// TestPromtoolLocal: the local stack's Prometheus config is valid (the
// observability tests check it too).
func TestPromtoolLocal(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (make test installs it)")
	}
	out, err := exec.Command("promtool", "check", "config", "--syntax-only", "prometheus/prometheus.local.yml").CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config prometheus/prometheus.local.yml: %v\n%s", err, out)
	}
}
