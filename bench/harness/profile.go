package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Profiles. Every tdsgate process the harness starts serves pprof on its
// metrics address (pprof: true). During the round trip runs at
// 16 and 128 sessions and the raw client's bulk runs, the harness takes a
// CPU profile of each tdsgate path's first process over the measurement,
// and keeps the top of it (`go tool pprof -top`) for the report: where
// the proxy's time went in this very run, beside every row it could
// explain. The profiles themselves stay in the work directory.

// profileKey names a profile: section, path, mode and, for round trips,
// the concurrency.
func profileKey(section, path, mode string, conc int) string {
	if conc > 0 {
		return fmt.Sprintf("%s c=%d %s (%s)", section, conc, path, mode)
	}
	return fmt.Sprintf("%s %s (%s)", section, path, mode)
}

// keyFile turns a profile key into a file name's middle.
var keyFile = strings.NewReplacer(" ", "_", "(", "", ")", "", "=", "", "+", "-")

// profileFile is where a profile of key is kept in the work directory.
func (e *env) profileFile(prefix, key, ext string) string {
	return filepath.Join(e.dir, prefix+keyFile.Replace(key)+ext)
}

// profiled reports whether a target's measurements get a CPU profile.
func profiled(t *Target) bool {
	return len(t.metrics) > 0 && t.Path != PathTdsgateSockmap
}

// startProfile starts a CPU profile of t's first tdsgate process lasting
// about d (whole seconds, at least 1), and returns a function that waits
// for it and stores its top in res.Profiles under key. It does nothing
// for a target without pprof.
func (e *env) startProfile(ctx context.Context, t *Target, key string, d time.Duration, res *Results) func() {
	if !profiled(t) || e.opts.NoProfiles {
		return func() {}
	}
	secs := max(int((d+time.Second-1)/time.Second), 1)
	file := e.profileFile("pprof-", key, ".pb.gz")
	done := make(chan error, 1)
	go func() {
		cl := http.Client{Timeout: time.Duration(secs+30) * time.Second}
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.metrics[0], secs), nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := cl.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("pprof: %s", resp.Status)
			return
		}
		f, err := os.Create(file)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	// The profile starts when the request arrives: a moment for it.
	time.Sleep(50 * time.Millisecond)
	return func() {
		if err := <-done; err != nil {
			e.opts.logf("profile %s: %v", key, err)
			return
		}
		top, err := pprofTop(ctx, e.opts.ProxyBin, file, 14)
		if err != nil {
			e.opts.logf("profile %s: %v", key, err)
			return
		}
		if res.Profiles == nil {
			res.Profiles = map[string]string{}
		}
		res.Profiles[key] = top
	}
}

// pprofTop runs `go tool pprof -top` on a profile and keeps its head: the
// totals line and the n heaviest functions by cumulative time.
func pprofTop(ctx context.Context, bin, file string, n int) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", fmt.Sprintf("-nodecount=%d", n), bin, file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v: %s", err, firstLine(string(out)))
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "File:"), strings.HasPrefix(l, "Build ID:"), strings.HasPrefix(l, "Type:"), strings.HasPrefix(l, "Time:"), strings.TrimSpace(l) == "":
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}

// profileRef is the sentence a short row adds when a profile of its
// target was taken in this run.
func (r *Report) profileRef(key string) string {
	if _, ok := r.Results.Profiles[key]; !ok {
		return ""
	}
	return fmt.Sprintf(" Profile of this run: \"%s\" under Profiles.", key)
}

func (r *Report) writeProfiles(b *strings.Builder) {
	if len(r.Results.Profiles) == 0 && len(r.Results.PerfMachine) == 0 && r.Results.PerfNote == "" {
		return
	}
	fmt.Fprintf(b, "## Profiles\n\nCPU profiles (Go's pprof, `pprof: true`) of the first tdsgate process of each path, taken over the measurement itself: the round trips at 16 and 128 sessions and the raw client's bulk runs (the last pass). `go tool pprof -top -cum`; flat is time in the function itself, cum with what it calls. Time in the kernel (the syscalls' own work: splice, TCP) counts in the function that made the call.\n\n")
	keys := make([]string, 0, len(r.Results.Profiles))
	for k := range r.Results.Profiles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "### %s\n\n```\n%s\n```\n\n", k, r.Results.Profiles[k])
	}
	r.writePerfMachine(b)
}

// perfRef is the sentence a plaintext bulk row adds when the run has a
// whole-machine profile of its path: where the machine's cores went.
func (r *Report) perfRef(path string) string {
	m, ok := r.Results.PerfMachine[profileKey("bulk", path, ModePlain, 0)]
	if !ok {
		return ""
	}
	s := m.split(r.Machine.Cores)
	return fmt.Sprintf(" perf of the whole machine over this path's last transfer, in cores of %d: the path %.2f, the stand-in %.2f, the client %.2f, kernel threads %.2f, other %.2f, idle %.2f (\"%s\" under Profiles).",
		r.Machine.Cores, s["path"], s["stand-in"], s["client"], s["kernel"], s["other"], s["idle"], perfSection)
}

// perfSection heads the whole-machine profiles.
const perfSection = "Whole machine during the plaintext bulk runs (perf)"

// writePerfMachine writes the whole-machine profiles: each plaintext
// bulk path's cores split between its processes, the stand-in, the
// client, the kernel's threads and idle, and the heaviest symbols of
// tdsgate's.
func (r *Report) writePerfMachine(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	if len(r.Results.PerfMachine) == 0 {
		if r.Results.PerfNote != "" {
			w("### %s\n\n%s.\n\n", perfSection, r.Results.PerfNote)
		}
		return
	}
	cores := r.Machine.Cores
	w("### %s\n\n`perf record -a -e cpu-clock -F 999` over the transfer alone (enabled and disabled through perf's control descriptors around it), the raw client, the last pass: each command's share of every CPU's time, in cores (of %d). cpu-clock samples idle CPUs too (the swapper), so the columns add up to the machine. \"path\" is the path's own processes (tdsgate; HAProxy; the bare relay; with Redis, redis-server too), \"kernel threads\" kworker, ksoftirqd and the like (the sockmap relay's forwarding runs there), \"other\" the rest of the machine.\n\n", perfSection, cores)
	t := &mdTable{head: []string{"path", "MB/s", "path", "stand-in", "client", "kernel threads", "other", "idle"}}
	for _, x := range r.Results.Bulks {
		if x.Mode != ModePlain || x.Client != ClientRaw {
			continue
		}
		m, ok := r.Results.PerfMachine[profileKey("bulk", x.Path, x.Mode, 0)]
		if !ok {
			continue
		}
		s := m.split(cores)
		c := func(role string) string { return fmt.Sprintf("%.2f", s[role]) }
		path := c("path")
		if x.Path == PathDirect {
			path = "—"
		}
		t.add(x.Path, num(x.MBps), path, c("stand-in"), c("client"), c("kernel"), c("other"), c("idle"))
	}
	b.WriteString(t.String())
	if m, ok := r.Results.PerfMachine[profileKey("bulk", PathTdsgate, ModePlain, 0)]; ok && m.Top != "" {
		w("\nThe heaviest symbols of the whole machine during tdsgate's (`perf report --sort comm,dso,sym`, ≥ 1 %%):\n\n```\n%s\n```\n", m.Top)
	}
	w("\n")
}
