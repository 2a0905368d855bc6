package app_test

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestPromtoolLiveMetrics: `promtool check metrics` (Prometheus' own
// linter) reports nothing on a running proxy's /metrics: every family has
// HELP text and a TYPE, counters end in _total, no name misuses a suffix.
// The proxy runs with two buckets, the eBPF tracker on (so the
// proxy_ebpf_* families are in the document) and one relayed session.
func TestPromtoolLiveMetrics(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (tools/deps.sh installs it)")
	}
	requireEBPF(t)
	a, _ := startLogged(t, ebpfConfig(t, 2))
	closeAll(dialN(t, a, 1))
	waitEBPF(t, a, "bucket-001", 0, 0)

	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	doc := string(body)
	for _, w := range []string{"# HELP proxy_connections_active ", "# TYPE proxy_connections_active gauge",
		"# TYPE proxy_queue_wait_duration_seconds histogram", "# TYPE proxy_sessions_total counter",
		"# HELP proxy_ebpf_backend_connections ", "# TYPE process_cpu_seconds_total counter"} {
		if !strings.Contains(doc, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(doc)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics on a live /metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: clean on %d lines, %d families", strings.Count(doc, "\n"), strings.Count(doc, "# TYPE "))
}
