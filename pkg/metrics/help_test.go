package metrics

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// populated returns the document of an instance with two buckets, every
// kind of series touched once and eBPF counts present, so every family
// the package can write is in it.
func populated(t *testing.T) string {
	t.Helper()
	m := New([]string{"bucket-001", "bucket-002"})
	m.Acquired("bucket-001", 3*time.Millisecond, true)
	m.BackendConnected("bucket-001", 2*time.Millisecond, nil)
	m.BackendConnected("bucket-001", 0, errors.New("x"))
	m.Refused("", 50007, "")
	m.Relayed("bucket-001", "splice", 10, 20, time.Second)
	m.Checkout("bucket-001", true)
	m.Discarded("bucket-001", "closed")
	m.RedisOp(OpAcquire, nil)
	m.Heartbeat(time.Now())
	m.SetEBPF(func() (map[string]int64, map[string]int64, bool) {
		return map[string]int64{"bucket-001": 2, "bucket-002": 0}, map[string]int64{"bucket-001": 1}, true
	})
	var b bytes.Buffer
	m.Write(&b)
	return b.String()
}

// TestMetadata: every family in /metrics has exactly one HELP line with
// text and one TYPE line, before its samples, and every sample belongs to
// the family announced last. Every tdsgate family with help text is
// written (no stale entry). A metric added without an entry in help.go
// fails here.
func TestMetadata(t *testing.T) {
	doc := populated(t)
	helpOf, typeOf := map[string]string{}, map[string]string{}
	var cur string
	for i, l := range strings.Split(strings.TrimSuffix(doc, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "# HELP "):
			fam, text, _ := strings.Cut(strings.TrimPrefix(l, "# HELP "), " ")
			if _, dup := helpOf[fam]; dup {
				t.Errorf("line %d: second HELP for %s (its samples are not in one group)", i+1, fam)
			}
			helpOf[fam] = text
			if text == "" {
				t.Errorf("%s has no help text: add it to pkg/metrics/help.go", fam)
			}
			cur = fam
		case strings.HasPrefix(l, "# TYPE "):
			fam, typ, _ := strings.Cut(strings.TrimPrefix(l, "# TYPE "), " ")
			if fam != cur {
				t.Errorf("line %d: TYPE of %s after HELP of %s", i+1, fam, cur)
			}
			switch typ {
			case "counter", "gauge", "histogram", "summary":
			default:
				t.Errorf("line %d: %s has type %q", i+1, fam, typ)
			}
			typeOf[fam] = typ
		case strings.HasPrefix(l, "#"):
		default:
			name := l[:strings.IndexAny(l, "{ ")]
			fam := name
			if typ := typeOf[cur]; typ == "histogram" || typ == "summary" {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suf); ok && b == cur {
						fam = b
					}
				}
			}
			if fam != cur {
				t.Errorf("line %d: sample %s without its own HELP/TYPE (last announced: %s)", i+1, name, cur)
			}
			if typeOf[cur] == "counter" && !strings.HasSuffix(fam, "_total") {
				t.Errorf("counter %s does not end in _total", fam)
			}
		}
	}
	for fam := range help {
		if _, ok := helpOf[fam]; !ok && strings.HasPrefix(fam, "proxy_") {
			t.Errorf("help.go describes %s, which /metrics does not write", fam)
		}
	}
	for fam, typ := range typeOf {
		if _, ok := helpOf[fam]; !ok {
			t.Errorf("%s (%s) has no HELP line", fam, typ)
		}
	}
	if len(helpOf) < 60 {
		t.Errorf("only %d families", len(helpOf))
	}
}

// TestPromtoolCheckMetrics: Prometheus' own linter finds nothing in the
// document (pkg/app's TestPromtoolLiveMetrics does the same on a running
// proxy's /metrics).
func TestPromtoolCheckMetrics(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (tools/deps.sh installs it)")
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(populated(t))
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestWriteWithHelpRenames(t *testing.T) {
	in := "# HELP go_cgo_calls_count\n# TYPE go_cgo_calls_count counter\ngo_cgo_calls_count 3\n" +
		"# HELP process_io_read_bytes_total\n# TYPE process_io_read_bytes_total gauge\nprocess_io_read_bytes_total 5\n" +
		"# HELP proxy_new_thing\n# TYPE proxy_new_thing gauge\nproxy_new_thing{a=\"b\"} 1\n"
	var b bytes.Buffer
	writeWithHelp(&b, []byte(in))
	want := "# HELP go_cgo_calls_total " + help["go_cgo_calls_total"] + "\n# TYPE go_cgo_calls_total counter\ngo_cgo_calls_total 3\n" +
		"# HELP process_io_read_bytes_total " + help["process_io_read_bytes_total"] + "\n# TYPE process_io_read_bytes_total counter\nprocess_io_read_bytes_total 5\n" +
		"# HELP proxy_new_thing\n# TYPE proxy_new_thing gauge\nproxy_new_thing{a=\"b\"} 1\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// BenchmarkWrite is one scrape of an instance with three buckets: the
// metric set, the runtime's metrics and the help pass (writeWithHelp).
func BenchmarkWrite(b *testing.B) {
	m := New([]string{"bucket-001", "bucket-002", "bucket-003"})
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		m.Write(&buf)
	}
	b.SetBytes(int64(buf.Len()))
}

// BenchmarkWriteWithHelp is the help pass alone over one scrape's document.
func BenchmarkWriteWithHelp(b *testing.B) {
	m := New([]string{"bucket-001", "bucket-002", "bucket-003"})
	var doc bytes.Buffer
	m.set.WritePrometheus(&doc)
	var out bytes.Buffer
	for b.Loop() {
		out.Reset()
		writeWithHelp(&out, doc.Bytes())
	}
	b.SetBytes(int64(doc.Len()))
}
