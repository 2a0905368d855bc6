package harness

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuick runs the whole benchmark in quick mode (what `BENCH_QUICK=1
// make bench` runs) on free ports and checks that every section produced
// numbers and that the report and its charts were written. It asserts
// nothing about speed: goals are compared in the report, never here.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every proxy path for about a minute; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := t.TempDir()
	var log strings.Builder
	rep, err := Run(ctx, Options{Quick: true, OutDir: out, WorkDir: t.TempDir(), Log: &log,
		Command: "BENCH_QUICK=1 make bench", Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("quick run took %s\n%s", rep.Duration.Round(time.Second), log.String())

	res := rep.Results
	// Every path that started has a round trip figure at every level.
	for _, tg := range rep.Targets {
		if !tg.in("roundtrip") {
			continue
		}
		for _, c := range rep.Options.Concurrency {
			if x := rep.rt(tg.Path, tg.Mode, ClientRaw, c); x == nil || x.PerSecond <= 0 {
				if tg.Path != PathTdspool { // tdspool is a reference we do not own
					t.Errorf("round trip %s c=%d: no figure", tg.Name(), c)
				}
			}
		}
	}
	// The paths tdsgate is compared on must have run.
	for _, p := range []string{PathDirect, PathTdsgate} {
		if rep.rt(p, ModePlain, ClientRaw, 1) == nil {
			t.Errorf("path %s did not run", p)
		}
	}
	sections := map[string]bool{
		"round trip (raw)":     positive(len(res.RoundTrips), func(i int) float64 { r := res.RoundTrips[i]; return b(r.Client == ClientRaw) * r.PerSecond }),
		"round trip (gomssql)": positive(len(res.RoundTrips), func(i int) float64 { r := res.RoundTrips[i]; return b(r.Client == ClientGoMSSQL) * r.PerSecond }),
		"bulk (raw)":           positive(len(res.Bulks), func(i int) float64 { r := res.Bulks[i]; return b(r.Client == ClientRaw) * r.MBps }),
		"bulk (gomssql)":       positive(len(res.Bulks), func(i int) float64 { r := res.Bulks[i]; return b(r.Client == ClientGoMSSQL) * r.MBps }),
		"churn":                positive(len(res.Churns), func(i int) float64 { return res.Churns[i].PerSecond }),
		"idle":                 positive(len(res.Idles), func(i int) float64 { return res.Idles[i].RSSPerSession }),
		"limiter":              positive(len(res.Limiter), func(i int) float64 { return res.Limiter[i].PerSecond }),
		"overload refusals":    positive(len(res.Rejections), func(i int) float64 { return res.Rejections[i].PerSecond }),
	}
	for name, ok := range sections {
		if !ok {
			t.Errorf("section %s produced no numbers", name)
		}
	}
	// Issue 16's references: the bare relays and full TLS ran in bulk, and
	// tdsgate was profiled during the runs.
	for _, x := range []struct{ path, mode string }{{PathBare, ModePlain}, {PathBareTLS, ModeFullTLS}, {PathTdsgate, ModeFullTLS}, {PathDirect, ModeFullTLS}} {
		if rep.bulk(x.path, x.mode, ClientRaw) == nil {
			t.Errorf("bulk %s (%s): no figure", x.path, x.mode)
		}
	}
	if _, ok := res.Profiles[profileKey("bulk", PathTdsgate, ModePlain, 0)]; !ok {
		t.Errorf("no profile of tdsgate's bulk run; have %d profiles", len(res.Profiles))
	}

	md, err := os.ReadFile(rep.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"## Machine", "## Reproduce", "## Goals", "## Round trip", "## Bulk", "## Churn", "## Idle capacity", "## Admission", "## Profiles",
		"kthread CPU µs/rt", "sockmap: idle ≤ 8 KiB RSS per session"} {
		if !strings.Contains(string(md), h) {
			t.Errorf("report lacks %q", h)
		}
	}
	if len(rep.Charts) == 0 {
		t.Error("no charts")
	}
	for _, c := range rep.Charts {
		if st, err := os.Stat(c); err != nil || st.Size() == 0 {
			t.Errorf("chart %s: %v", c, err)
		}
		if !strings.Contains(string(md), filepath.Base(c)) {
			t.Errorf("report does not link %s", filepath.Base(c))
		}
	}
	if latest, err := os.ReadFile(filepath.Join(out, "latest.md")); err != nil || string(latest) != string(md) {
		t.Errorf("latest.md is not the report: %v", err)
	}
}

func b(ok bool) float64 {
	if ok {
		return 1
	}
	return 0
}

func positive(n int, v func(int) float64) bool {
	for i := range n {
		if v(i) > 0 {
			return true
		}
	}
	return false
}
