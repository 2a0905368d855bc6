package harness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// DefaultPoolYAML turns on session pooling for the tdsgate+pool path.
const DefaultPoolYAML = "pool_mode: session"

// Options configure a run. Zero sizes take the full or quick defaults.
type Options struct {
	// Quick runs every section smaller and shorter (CI: BENCH_QUICK=1).
	Quick bool
	// OutDir receives <date>-<sha>.md, its charts in <date>-<sha>/, and
	// latest.md.
	OutDir string
	// WorkDir holds configs and process logs; "" = a temporary directory,
	// removed after the run unless KeepWork.
	WorkDir  string
	KeepWork bool
	// ProxyBin and StandinBin are bin/proxy and the stand-in command;
	// "" = built with `go build` into WorkDir. BareRelayBin is
	// bench/cmd/barerelay, always built unless given.
	ProxyBin, StandinBin, BareRelayBin string
	// PoolYAML is merged into the tdsgate+pool path's bucket (a YAML
	// mapping; env BENCH_POOL_YAML). Default DefaultPoolYAML; "off" skips
	// the path.
	PoolYAML string
	// Command is the command line that reproduces the run, for the report.
	Command string
	// Log receives progress lines (nil: discarded).
	Log io.Writer `json:"-"`
	// Now stamps the report (zero: time.Now()).
	Now time.Time
	// Paths and Sections, if set, restrict the run (for working on the
	// harness; a report from a restricted run says so). Sections:
	// roundtrip, bulk, churn, idle, admission.
	Paths, Sections []string
	// NoProfiles turns off the CPU profiles taken of tdsgate during the
	// round trips at 16 and 128 sessions and the bulk runs (profile.go).
	NoProfiles bool

	RoundTripTime time.Duration // per concurrency level and path, all passes together
	// Passes: round trip, bulk and churn run every path this many times,
	// interleaved (all paths, then all paths again), and keep the best
	// pass (round trip, churn) or the total (bulk): one noisy moment on a
	// shared machine does not decide a comparison.
	Passes         int
	Concurrency    []int
	GoConcurrency  []int // go-mssqldb round trip levels
	BulkBytes      int64
	GoBulkBytes    int64
	ChurnTime      time.Duration
	ChurnWorkers   int
	IdleSessions   int
	IdleBudget     time.Duration
	LimiterOps     int
	OverloadTime   time.Duration
	OverloadWorker int

	// ChurnPasses is Passes for the churn section (ChurnTime is split
	// among them): more passes, because the churn goals compare paths
	// within a few percent on a shared machine, and the report gives
	// every pass's ratio (the spread), not only the best.
	ChurnPasses int
}

func (o *Options) defaults() {
	full := !o.Quick
	pick := func(f, q time.Duration) time.Duration {
		if full {
			return f
		}
		return q
	}
	if o.RoundTripTime == 0 {
		o.RoundTripTime = pick(3*time.Second, 300*time.Millisecond)
	}
	if o.Passes == 0 {
		o.Passes = map[bool]int{true: 2, false: 1}[full]
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 16, 128}
	}
	if len(o.GoConcurrency) == 0 {
		o.GoConcurrency = []int{16}
	}
	if o.BulkBytes == 0 {
		o.BulkBytes = map[bool]int64{true: 512e6, false: 16e6}[full]
	}
	if o.GoBulkBytes == 0 {
		o.GoBulkBytes = map[bool]int64{true: 208e6, false: 8e6}[full]
	}
	if o.ChurnPasses == 0 {
		o.ChurnPasses = map[bool]int{true: 4, false: 1}[full]
	}
	if o.ChurnTime == 0 {
		o.ChurnTime = pick(6*time.Second, 400*time.Millisecond)
	}
	if o.ChurnWorkers == 0 {
		o.ChurnWorkers = 32
	}
	if o.IdleSessions == 0 {
		o.IdleSessions = map[bool]int{true: 10000, false: 300}[full]
	}
	if o.IdleBudget == 0 {
		o.IdleBudget = pick(90*time.Second, 20*time.Second)
	}
	if o.LimiterOps == 0 {
		o.LimiterOps = map[bool]int{true: 20000, false: 640}[full]
	}
	if o.OverloadTime == 0 {
		o.OverloadTime = pick(3*time.Second, 400*time.Millisecond)
	}
	if o.OverloadWorker == 0 {
		o.OverloadWorker = 64
	}
	if o.PoolYAML == "" {
		o.PoolYAML = DefaultPoolYAML
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

func (o *Options) wantPath(p string) bool {
	return len(o.Paths) == 0 || slices.Contains(o.Paths, p)
}

func (o *Options) wantSection(s string) bool {
	return len(o.Sections) == 0 || slices.Contains(o.Sections, s)
}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Log, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Machine describes where the run happened.
type Machine struct {
	CPU, Kernel, GoVersion, OS string
	Cores                      int
	NoFile                     uint64
	Versions                   map[string]string
	Commit                     string
}

// Report is a finished run.
type Report struct {
	Options  Options
	Machine  Machine
	Started  time.Time
	Duration time.Duration
	Targets  []*Target
	Skipped  []Skipped
	Results  Results
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end.
	LoadStart, LoadEnd string
	// Path is the Markdown file written; Charts its PNG files.
	Path   string
	Charts []string
}

// Run starts everything, measures every section, and writes the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	rep := &Report{Started: time.Now(), LoadStart: loadAvg()}
	work := o.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "tdsgate-bench-")
		if err != nil {
			return nil, err
		}
		work = d
		if !o.KeepWork {
			defer os.RemoveAll(d)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	o.logf("work dir %s", work)
	// Idle capacity: the harness holds one fd per session, a proxy two, the
	// stand-in one; children inherit the limit.
	// A tdsgate session holds up to six fds (two sockets and a splice pipe
	// pair per relay direction), HAProxy two, the harness and the
	// stand-in one each.
	nofile := raiseNoFile(uint64(max(8*o.IdleSessions+4096, 65536)))
	if err := buildBinaries(ctx, &o, work); err != nil {
		return nil, err
	}
	rep.Machine = machine(nofile)
	e := &env{dir: work, opts: &o, versions: rep.Machine.Versions, nofile: nofile}
	defer e.close()
	if err := e.setup(ctx); err != nil {
		return nil, err
	}
	rep.Targets, rep.Skipped = e.targets, e.skipped
	for _, t := range e.targets {
		o.logf("path %s on %v (pids %v)", t.Name(), t.Addrs, t.PIDs)
	}
	res := &rep.Results
	raw, gc := rawClient{}, newGoClient()
	defer gc.closeAll()

	// Each section runs every path back to back, so that the paths are
	// compared under the same conditions.
	if !o.wantSection("roundtrip") {
		o.Concurrency, o.GoConcurrency = nil, nil
	}
	passN := func(n int, name string, f func()) {
		for i := range n {
			if n > 1 {
				o.logf("%s: pass %d of %d", name, i+1, n)
			}
			f()
		}
	}
	pass := func(name string, f func()) { passN(o.Passes, name, f) }
	// Round trips: the best pass of each path and level.
	rtBest := map[string]int{}
	keepRT := func(r RoundTrip) {
		k := fmt.Sprint(r.Path, r.Mode, r.Client, r.Conc)
		if i, ok := rtBest[k]; !ok {
			rtBest[k] = len(res.RoundTrips)
			res.RoundTrips = append(res.RoundTrips, r)
		} else {
			old := res.RoundTrips[i]
			rates := old.PassRates
			if r.Err == "" {
				rates = append(rates[:len(rates):len(rates)], r.PerSecond)
			}
			if r.Err == "" && (old.Err != "" || r.PerSecond > old.PerSecond) {
				res.RoundTrips[i] = r
			}
			res.RoundTrips[i].PassRates = rates
		}
	}
	for _, lv := range []struct {
		cl    client
		concs []int
	}{{raw, o.Concurrency}, {gc, o.GoConcurrency}} {
		for _, c := range lv.concs {
			pass(fmt.Sprintf("roundtrip %s c=%d", lv.cl.name(), c), func() {
				for _, t := range e.targets {
					if !t.in("roundtrip") {
						continue
					}
					d := o.RoundTripTime / time.Duration(o.Passes)
					stop := func() {}
					if lv.cl == client(raw) && c >= 16 {
						// The last pass's profile is kept.
						stop = e.startProfile(ctx, t, profileKey("roundtrip", t.Path, t.Mode, c), d+min(d/5, 500*time.Millisecond), res)
					}
					r := e.measureRoundTrip(ctx, t, lv.cl, c, d)
					stop()
					o.logf("roundtrip %-26s %s c=%-3d %8.0f/s p50 %v p99 %v %s", t.Name(), lv.cl.name(), c, r.PerSecond, r.Lat.P50, r.Lat.P99, r.Err)
					keepRT(r)
				}
			})
		}
		lv.cl.closeAll()
	}
	// Bulk: every pass's bytes, time and CPU added up.
	bulkAt := map[string]int{}
	for _, cl := range []client{raw, gc} {
		if !o.wantSection("bulk") {
			break
		}
		n := o.BulkBytes
		if cl == client(gc) {
			n = o.GoBulkBytes
		}
		pass("bulk "+cl.name(), func() {
			for _, t := range e.targets {
				if !t.in("bulk") {
					continue
				}
				stop := func() {}
				var perf *perfRun
				key := profileKey("bulk", t.Path, t.Mode, 0)
				if cl == client(raw) && t.Mode == ModePlain {
					perf = e.startPerf(ctx, key, e.perfRoles(t))
				}
				if cl == client(raw) {
					// About the transfer's time at the first pass's pace.
					d := 2 * time.Second
					if i, ok := bulkAt[t.Name()+cl.name()]; ok && res.Bulks[i].MBps > 0 {
						d = time.Duration(float64(n)/1e6/res.Bulks[i].MBps*float64(time.Second)) + 200*time.Millisecond
					}
					stop = e.startProfile(ctx, t, profileKey("bulk", t.Path, t.Mode, 0), d, res)
				}
				r := e.measureBulk(ctx, t, cl, n, perf)
				stop()
				if perf != nil {
					// The last pass's profile is kept.
					if m, err := perf.finish(ctx); err != nil {
						o.logf("perf %s: %v", key, err)
					} else {
						if res.PerfMachine == nil {
							res.PerfMachine = map[string]PerfMachine{}
						}
						res.PerfMachine[key] = m
					}
				}
				o.logf("bulk %-26s %s %6.0f MB/s proxy %.2f CPU-s/GB %s", t.Name(), cl.name(), r.MBps, r.CPUPerGB, r.Err)
				k := t.Name() + cl.name()
				i, ok := bulkAt[k]
				if !ok {
					bulkAt[k] = len(res.Bulks)
					res.Bulks = append(res.Bulks, r)
					continue
				}
				res.Bulks[i] = res.Bulks[i].add(r)
			}
		})
		cl.closeAll()
	}
	res.PerfNote = e.perfNote
	// Churn: the best pass, with every pass's conn/s (Churn.Passes).
	churnAt := map[string]int{}
	for _, cl := range []client{raw, gc} {
		if !o.wantSection("churn") {
			break
		}
		passN(o.ChurnPasses, "churn "+cl.name(), func() {
			for _, t := range e.targets {
				if !t.in("churn") {
					continue
				}
				r := e.measureChurn(ctx, t, cl, o.ChurnWorkers, o.ChurnTime/time.Duration(o.ChurnPasses))
				o.logf("churn %-26s %s %6.0f conn/s p99 connect %v %s", t.Name(), cl.name(), r.PerSecond, r.Connect.P99, r.Err)
				k := t.Name() + cl.name()
				r.Passes = []float64{r.PerSecond}
				i, ok := churnAt[k]
				if !ok {
					churnAt[k] = len(res.Churns)
					res.Churns = append(res.Churns, r)
				} else {
					r.Passes = append(res.Churns[i].Passes, r.PerSecond)
					if r.PerSecond > res.Churns[i].PerSecond {
						res.Churns[i] = r
					} else {
						res.Churns[i].Passes = r.Passes
					}
				}
			}
		})
		cl.closeAll()
	}
	for _, t := range e.targets {
		if t.Mode != ModePlain || !o.wantSection("idle") || !t.in("idle") {
			continue
		}
		// Fresh processes: what earlier sections left in a heap is not
		// charged to the idle sessions.
		ft, stop, err := e.fresh(ctx, t)
		if err != nil {
			o.logf("idle %s: %v", t.Name(), err)
			res.Idles = append(res.Idles, Idle{Row: Row{Path: t.Path, Mode: t.Mode, Client: ClientRaw, Err: err.Error()}, Wanted: o.IdleSessions})
			continue
		}
		r := e.measureIdle(ctx, ft, o.IdleSessions, o.IdleBudget)
		stop()
		o.logf("idle %-26s held %d in %.1fs: %.0f B RSS, %.2f fds per session %s", t.Name(), r.Held, r.Seconds, r.RSSPerSession, r.FDsPerSession, r.Err)
		res.Idles = append(res.Idles, r)
	}
	if o.wantSection("admission") {
		res.Limiter = e.measureLimiter(ctx, o.LimiterOps)
		for _, l := range res.Limiter {
			o.logf("limiter %-36s x%-2d %8.0f/s p50 %v p99 %v %s", l.Name, l.Callers, l.PerSecond, l.Lat.P50, l.Lat.P99, l.Err)
		}
		res.Rejections = e.measureRejections(ctx, o.OverloadWorker, o.OverloadTime)
		for _, r := range res.Rejections {
			o.logf("overload %-16s %6.0f refusals/s p99 %v %s", r.Path, r.PerSecond, r.Lat.P99, r.Err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Duration = time.Since(rep.Started)
	rep.LoadEnd = loadAvg()
	rep.Options = o
	if err := rep.write(); err != nil {
		return nil, err
	}
	o.logf("report %s (%s)", rep.Path, rep.Duration.Round(time.Second))
	return rep, nil
}

// buildBinaries builds bin/proxy and the stand-in unless given.
func buildBinaries(ctx context.Context, o *Options, work string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	for _, b := range []struct {
		bin *string
		pkg string
	}{{&o.ProxyBin, "./cmd/proxy"}, {&o.StandinBin, "./tools/standin"}, {&o.BareRelayBin, "./bench/cmd/barerelay"}} {
		if *b.bin != "" {
			// The processes start in the work dir: the path must not be relative.
			abs, err := filepath.Abs(*b.bin)
			if err != nil {
				return err
			}
			*b.bin = abs
			continue
		}
		out := filepath.Join(work, filepath.Base(b.pkg))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, b.pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, msg)
		}
		*b.bin = out
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the tdsgate module")
	}
	return filepath.Dir(mod), nil
}

func machine(nofile uint64) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		NoFile: nofile, Versions: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	m.Kernel = cmdOutput("uname", "-r")
	if root, err := moduleRoot(); err == nil {
		m.Commit = cmdOutput("git", "-C", root, "rev-parse", "--short", "HEAD")
	}
	if m.Commit == "" {
		m.Commit = "nogit"
	}
	return m
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
