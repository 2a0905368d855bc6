package harness

import (
	"strings"
	"testing"
)

// TestWhyBulkFast: the "1.5× HAProxy" row's why gives the same run's bare
// relay, HAProxy and tdsgate MB/s, says that HAProxy already moves the
// stream at the bare relay's rate, and, when 1.5× HAProxy is more than
// direct did, that no relay can reach it.
func TestWhyBulkFast(t *testing.T) {
	b := func(path string, mbps, cpu float64) Bulk {
		return Bulk{Row: Row{Path: path, Mode: ModePlain, Client: ClientRaw}, Bytes: 512e6, MBps: mbps, CPUPerGB: cpu}
	}
	r := &Report{}
	r.Results.Bulks = []Bulk{b(PathDirect, 1806, 0), b(PathBare, 1143, 0.25), b(PathHAProxy, 1240, 0.31), b(PathTdsgate, 1193, 0.30)}
	why := whyBulkFast(r, r.bulk(PathTdsgate, ModePlain, ClientRaw), r.bulk(PathHAProxy, ModePlain, ClientRaw))
	for _, want := range []string{"already splices one stream at the bare relay's rate", "did 1143 MB/s", "HAProxy 1240 MB/s (1.08× the bare relay)", "tdsgate 1193 MB/s (1.04×)", "1.5× HAProxy is 1860 MB/s", "more than direct's 1806 MB/s", "No relay can reach it", "Direct reached only 1806 MB/s"} {
		if !strings.Contains(why, want) {
			t.Errorf("why lacks %q:\n%s", want, why)
		}
	}
	// The CPU budget: every process's work per GB times the rate.
	for i, e := range []struct{ kt, be, cl float64 }{{0.01, 0.18, 0.22}, {0.08, 0.20, 0.30}, {0.04, 0.21, 0.37}, {0.06, 0.21, 0.27}} {
		r.Results.Bulks[i].KThreadPerGB, r.Results.Bulks[i].BackendGB, r.Results.Bulks[i].ClientGB = e.kt, e.be, e.cl
	}
	r.Machine.Cores = 2
	why = whyBulkFast(r, r.bulk(PathTdsgate, ModePlain, ClientRaw), r.bulk(PathHAProxy, ModePlain, ClientRaw))
	// tdsgate: 0.30+0.06+0.21+0.27 = 0.84 s/GB; × 1.193 GB/s = 1.00
	// cores; × 1.860 GB/s = 1.56. Busiest: haproxy, (0.31+0.04+0.21+0.37)
	// × 1.240 = 1.15 cores, so 1.15/1.860 = 0.62 s/GB at most; direct's
	// ends 0.41.
	for _, want := range []string{"costs 0.84 CPU s/GB on tdsgate's path, so at 1193 MB/s it kept 1.00 cores busy", "would need 1.56 cores of the machine's 2", "(haproxy plain) kept 1.15 cores busy", "at 0.62 CPU s/GB or less", "cost 0.41"} {
		if !strings.Contains(why, want) {
			t.Errorf("why lacks %q:\n%s", want, why)
		}
	}
	// A fast direct: the claim rests on the bare relay alone.
	r.Results.Bulks[0].MBps = 3200
	why = whyBulkFast(r, r.bulk(PathTdsgate, ModePlain, ClientRaw), r.bulk(PathHAProxy, ModePlain, ClientRaw))
	if strings.Contains(why, "No relay can reach it") || strings.Contains(why, "Direct reached only") || !strings.Contains(why, "well ahead of the bare one") {
		t.Errorf("with direct at 3200 MB/s:\n%s", why)
	}
}

// TestBulkAddClientGB: passes merge the client's CPU per GB weighted by
// their bytes, like the stand-in's.
func TestBulkAddClientGB(t *testing.T) {
	a := Bulk{Bytes: 1e9, Seconds: 1, ClientGB: 0.1, BackendGB: 0.2, MBpsMin: 1000, MBpsMax: 1000, Passes: 1}
	c := Bulk{Bytes: 3e9, Seconds: 1, ClientGB: 0.2, BackendGB: 0.1, MBpsMin: 3000, MBpsMax: 3000, Passes: 1}
	s := a.add(c)
	if d := s.ClientGB - 0.175; d > 1e-9 || d < -1e-9 {
		t.Errorf("ClientGB %v, want 0.175", s.ClientGB)
	}
	if d := s.BackendGB - 0.125; d > 1e-9 || d < -1e-9 {
		t.Errorf("BackendGB %v, want 0.125", s.BackendGB)
	}
	if s.MBps != 2000 || s.Passes != 2 {
		t.Errorf("MBps %v passes %d", s.MBps, s.Passes)
	}
}

// TestWhySource: the source row's why gives the run's client and
// stand-in CPU per GB and its passes' spread.
func TestWhySource(t *testing.T) {
	d := &Bulk{MBps: 1806, MBpsMin: 1415, MBpsMax: 2498, Passes: 2, ClientGB: 0.14, BackendGB: 0.17, Seconds: 0.57, BackendRun: 0.17, BackendWait: 0.6, ClientRun: 0.14, ClientWait: 0.3}
	why := whySource(d)
	for _, want := range []string{"client took 0.14 and the stand-in 0.17 CPU s/GB", "about 17% of one core per GB/s", "passes ran at 1415–2498 MB/s", "stand-in ran 0.17 s and waited 0.60 s for a CPU, the client ran 0.14 s and waited 0.30 s: they waited longer than they ran"} {
		if !strings.Contains(why, want) {
			t.Errorf("why lacks %q:\n%s", want, why)
		}
	}
	d.BackendWait, d.ClientWait = 0.01, 0.01
	if why := whySource(d); strings.Contains(why, "waited longer") {
		t.Errorf("little waiting, yet:\n%s", why)
	}
	if got := passSpread(d); got != " (passes 1415–2498 MB/s), client 0.14 + stand-in 0.17 CPU s/GB" {
		t.Errorf("passSpread %q", got)
	}
}

// TestCPUWithinNoise: passes that do not overlap are a difference, however
// small the absolute gap (the 2026-12-02 quiet run: framed 0.19–0.20 vs
// HAProxy 0.12–0.13 CPU s/GB was called "within noise" by a 0.1 s/GB band).
func TestCPUWithinNoise(t *testing.T) {
	bulk := func(cpu, lo, hi float64, passes int) *Bulk {
		return &Bulk{CPUPerGB: cpu, CPUPerGBMin: lo, CPUPerGBMax: hi, Passes: passes}
	}
	for _, c := range []struct {
		name   string
		g, ref *Bulk
		want   bool
	}{
		{"apart", bulk(0.19, 0.19, 0.20, 2), bulk(0.12, 0.12, 0.13, 2), false},
		{"overlapping", bulk(0.33, 0.27, 0.36, 2), bulk(0.31, 0.27, 0.36, 2), true},
		{"one pass, close", bulk(0.33, 0.33, 0.33, 1), bulk(0.31, 0.31, 0.31, 1), true},
		{"one pass, far", bulk(0.70, 0.70, 0.70, 1), bulk(0.31, 0.31, 0.31, 1), false},
	} {
		if got := cpuWithinNoise(c.g, c.ref); got != c.want {
			t.Errorf("%s: cpuWithinNoise = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestChurnRedisThree: the churn-through-Redis row gives the same run's
// three instances without Redis, and its why says whether the shortfall
// is the three processes or Redis.
func TestChurnRedisThree(t *testing.T) {
	c := func(path string, cps float64) Churn {
		return Churn{Row: Row{Path: path, Mode: ModePlain, Client: ClientRaw}, Conns: 1000, PerSecond: cps, Passes: []float64{cps}}
	}
	row := func(r *Report) goal {
		for _, g := range r.goals() {
			if strings.HasPrefix(g.name, "churn through Redis") {
				return g
			}
		}
		t.Fatal("no churn-through-Redis row")
		return goal{}
	}
	r := &Report{}
	r.Results.Churns = []Churn{c(PathTdsgate, 2600), c(PathTdsgateRedis, 2150), c(PathTdsgateThree, 2216)}
	g := row(r)
	for _, want := range []string{"best passes 2150 vs 2600 conn/s (83%)", "without Redis (tdsgate-x3) 2216 conn/s (85% of standalone), Redis 97% of them"} {
		if !strings.Contains(g.measured, want) {
			t.Errorf("measured lacks %q:\n%s", want, g.measured)
		}
	}
	if g.verdict != verdictShort || !strings.Contains(g.why, "did 2216 conn/s in this run, 85% of one standalone instance; through Redis they did 97% of that: the shortfall is the three processes, not Redis.") {
		t.Errorf("verdict %q, why:\n%s", g.verdict, g.why)
	}
	r.Results.Churns[2].PerSecond = 2500
	if g := row(r); !strings.Contains(g.why, "Redis itself costs the rest") {
		t.Errorf("with Redis at 86%% of the three instances, why:\n%s", g.why)
	}
	// Without the reference path the row stands as before.
	r.Results.Churns = r.Results.Churns[:2]
	if g := row(r); strings.Contains(g.measured, "without Redis") {
		t.Errorf("no tdsgate-x3 row, measured:\n%s", g.measured)
	}
}
