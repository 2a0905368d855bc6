package deployments_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/pkg/metrics"
)

// Files checked here, relative to this directory.
const (
	dashboardFile   = "grafana/dashboards/tdsgate.json"
	datasourceFile  = "grafana/provisioning/datasources/prometheus.yml"
	providerFile    = "grafana/provisioning/dashboards/dashboards.yml"
	promComposeFile = "prometheus/prometheus.yml"
	promLocalFile   = "prometheus/prometheus.local.yml"
	alertsFile      = "prometheus/alerts.yml"
	alertTestsFile  = "prometheus/alerts_test.yml"
)

// builtins are series Prometheus makes itself.
var builtins = map[string]bool{"up": true}

// exportedNames returns every series name a fresh metrics.Metrics writes,
// with each kind of series present (histogram buckets observed, the eBPF
// source on).
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New([]string{"bucket-001"})
	m.Acquired("bucket-001", 10*time.Millisecond, true)
	m.BackendConnected("bucket-001", 5*time.Millisecond, nil)
	m.Relayed("bucket-001", "splice", 10, 20, time.Second)
	m.SetEBPF(func() (map[string]int64, map[string]int64, bool) {
		return map[string]int64{"bucket-001": 1}, map[string]int64{"bucket-001": 1}, true
	})
	var buf bytes.Buffer
	m.Write(&buf)
	names := map[string]bool{}
	for line := range strings.Lines(buf.String()) {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	for _, n := range []string{metrics.NameEBPFDrift, metrics.NameQueueWait + "_bucket", metrics.NameConnectionsTotal} {
		if !names[n] {
			t.Fatalf("the metrics scrape lacks %s: the name list is incomplete", n)
		}
	}
	return names
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	reMatchers = regexp.MustCompile(`\{[^}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	keywords   = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true}
)

// grafanaVars replaces the dashboard's variables with values PromQL takes.
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$instance", ".*", "$bucket", ".*").Replace(expr)
}

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	s := reString.ReplaceAllString(expr, `""`)
	s = reMatchers.ReplaceAllString(s, " ")
	s = reRange.ReplaceAllString(s, " ")
	s = reGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range reIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if keywords[strings.ToLower(id)] {
			continue
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // a number's exponent or a duration's unit
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.95, sum by (le, bucket) (rate(proxy_queue_wait_duration_seconds_bucket{bucket=~"a|b"}[5m])))`: "[proxy_queue_wait_duration_seconds_bucket]",
		`sum by (bucket) (proxy_connections_active{instance=~".*"} + proxy_connections_idle)`:                               "[proxy_connections_active proxy_connections_idle]",
		`up{job="tdsgate"} == 0`:  "[up]",
		`proxy_ebpf_drift != 0`:   "[proxy_ebpf_drift]",
		`rate(x[1m]) > 1e3 and y`: "[x y]",
	} {
		if got := fmt.Sprint(metricNames(expr)); got != want {
			t.Errorf("metricNames(%s) = %s, want %s", expr, got, want)
		}
	}
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func flatten(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatten(p.Panels)...)
	}
	return out
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is needed to check the Prometheus files (apt-get install prometheus): %v", err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s: ok", strings.Join(args, " "))
}

// TestDashboard: every panel query of the Grafana dashboard is valid
// PromQL (promtool, as recording rules) and selects only metrics tdsgate
// exports; the panels the runbook's monitoring section needs are there;
// the dashboard uses the provisioned datasource.
func TestDashboard(t *testing.T) {
	names := exportedNames(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var ds struct {
		Datasources []struct {
			UID, Type, URL string
		}
	}
	loadYAML(t, datasourceFile, &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("%s: %+v, want one prometheus datasource at http://prometheus:9090", datasourceFile, ds.Datasources)
	}
	uid := ds.Datasources[0].UID

	used := map[string]bool{}
	var exprs []string
	ids := map[int]bool{}
	for _, p := range flatten(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Datasource == nil || p.Datasource.UID != uid {
			t.Errorf("panel %q: datasource %+v, want uid %q", p.Title, p.Datasource, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			e := grafanaVars(tg.Expr)
			exprs = append(exprs, e)
			ms := metricNames(e)
			if len(ms) == 0 {
				t.Errorf("panel %q: %s selects no metric", p.Title, tg.Expr)
			}
			for _, m := range ms {
				used[m] = true
				if !names[m] && !builtins[m] {
					t.Errorf("panel %q: %s is not a metric tdsgate exports (query %s)", p.Title, m, tg.Expr)
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		e := grafanaVars(v.Definition)
		if m := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),\s*\w+\)$`).FindStringSubmatch(e); m == nil || !names[m[1]] {
			t.Errorf("variable %s: %q is not label_values of an exported metric", v.Name, v.Definition)
		}
	}
	for _, want := range []string{
		metrics.NameConnectionsActive, metrics.NameConnectionsIdle, metrics.NameConnectionsTotal,
		metrics.NameQueueLength, metrics.NameQueueWait + "_bucket", metrics.NameRejections,
		metrics.NameFallbackMode, metrics.NameRedisOperations, metrics.NameEBPFDrift,
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	t.Logf("%d queries over %d metrics", len(exprs), len(used))

	// promtool parses each query as a recording rule.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", f)
}

// TestPrometheusConfigs: both Prometheus configs pass promtool, scrape the
// three proxies where each stack runs them, and the alert rules parse,
// select exported metrics and pass their unit tests.
func TestPrometheusConfigs(t *testing.T) {
	names := exportedNames(t)
	for file, want := range map[string][]string{
		promComposeFile: {"proxy-1:9091", "proxy-2:9091", "proxy-3:9091"},
		promLocalFile:   {"127.0.0.1:19091", "127.0.0.1:19092", "127.0.0.1:19093"},
	} {
		runPromtool(t, "check", "config", file)
		var cfg struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				StaticConfigs []struct {
					Targets []string
					Labels  map[string]string
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		loadYAML(t, file, &cfg)
		var targets, instances []string
		for _, sc := range cfg.ScrapeConfigs {
			if sc.JobName != "tdsgate" {
				continue
			}
			for _, st := range sc.StaticConfigs {
				targets = append(targets, st.Targets...)
				instances = append(instances, st.Labels["instance"])
			}
		}
		if fmt.Sprint(targets) != fmt.Sprint(want) || fmt.Sprint(instances) != "[proxy-1 proxy-2 proxy-3]" {
			t.Errorf("%s: job tdsgate scrapes %v as %v, want %v as proxy-1..3", file, targets, instances, want)
		}
		for _, rf := range cfg.RuleFiles {
			if _, err := os.Stat(filepath.Join(filepath.Dir(file), rf)); err != nil {
				t.Errorf("%s: rule file %s: %v", file, rf, err)
			}
		}
	}

	runPromtool(t, "check", "rules", alertsFile)
	runPromtool(t, "test", "rules", alertTestsFile)
	var alerts struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	loadYAML(t, alertsFile, &alerts)
	for _, g := range alerts.Groups {
		for _, r := range g.Rules {
			for _, m := range metricNames(r.Expr) {
				if !names[m] && !builtins[m] {
					t.Errorf("alert %s: %s is not a metric tdsgate exports", r.Alert, m)
				}
			}
		}
	}
}

// TestGrafanaProvider: the dashboard provider loads the directory the
// dashboards are mounted at.
func TestGrafanaProvider(t *testing.T) {
	var p struct {
		Providers []struct {
			Type    string
			Options struct{ Path string }
		}
	}
	loadYAML(t, providerFile, &p)
	if len(p.Providers) != 1 || p.Providers[0].Type != "file" || p.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Fatalf("%s: %+v", providerFile, p.Providers)
	}
}
