package harness

import (
	"strings"
	"testing"
)

// TestPerfMachine: perf's per-command shares are read, split by role in
// cores, and written as the Profiles table and the bulk row's sentence.
func TestPerfMachine(t *testing.T) {
	out := "    26.50%  standin\n    32.50%  benchrun\n    26.00%  proxy\n     4.00%  kworker/0:1-events\n     1.00%  ksoftirqd/1\n     0.50%  sshd\n     9.50%  swapper\nnot a line\n"
	cs := parseCommShares(out)
	if len(cs) != 7 || cs[2] != (CommShare{"proxy", 26}) {
		t.Fatalf("parsed %+v", cs)
	}
	m := PerfMachine{Comms: cs, Roles: map[string]string{"proxy": "path", "standin": "stand-in", "benchrun": "client", "swapper": "idle"}}
	s := m.split(2)
	want := map[string]float64{"path": 0.52, "stand-in": 0.53, "client": 0.65, "kernel": 0.10, "other": 0.01, "idle": 0.19}
	for k, v := range want {
		if d := s[k] - v; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: %.4f cores, want %.2f", k, s[k], v)
		}
	}
	r := &Report{}
	r.Machine.Cores = 2
	r.Results.Bulks = []Bulk{{Row: Row{Path: PathTdsgate, Mode: ModePlain, Client: ClientRaw}, MBps: 2849}}
	r.Results.PerfMachine = map[string]PerfMachine{profileKey("bulk", PathTdsgate, ModePlain, 0): m}
	var b strings.Builder
	r.writePerfMachine(&b)
	if !strings.Contains(b.String(), "| tdsgate | 2849 | 0.52 | 0.53 | 0.65 | 0.10 | 0.01 | 0.19 |") {
		t.Errorf("table:\n%s", b.String())
	}
	if ref := r.perfRef(PathTdsgate); !strings.Contains(ref, "the path 0.52, the stand-in 0.53, the client 0.65, kernel threads 0.10, other 0.01, idle 0.19") {
		t.Errorf("perfRef: %s", ref)
	}
	if ref := r.perfRef(PathHAProxy); ref != "" {
		t.Errorf("perfRef without a profile: %q", ref)
	}
	// No perf: the section says why.
	r.Results.PerfMachine, r.Results.PerfNote = nil, "perf is not installed (apt-get install linux-perf): no whole-machine profiles in this run"
	b.Reset()
	r.writeProfiles(&b)
	if !strings.Contains(b.String(), "perf is not installed") {
		t.Errorf("without perf:\n%s", b.String())
	}
}
