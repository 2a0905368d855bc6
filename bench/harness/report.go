package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Render reads the results.json of a finished run and writes its report
// and charts again into outDir (the report's text may have changed since;
// the figures have not).
func Render(resultsJSON, outDir string) (*Report, error) {
	b, err := os.ReadFile(resultsJSON)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	r.Options.OutDir = outDir
	return &r, r.write()
}

// write renders the report and its charts into Options.OutDir, and copies
// it to latest.md (the image links are relative to OutDir, so the copy
// shows the same charts).
func (r *Report) write() error {
	o := &r.Options
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return err
	}
	base := o.Now.Format("2006-01-02") + "-" + r.Machine.Commit
	if o.Quick {
		base += "-quick"
	}
	chartDir := filepath.Join(o.OutDir, base)
	if err := os.MkdirAll(chartDir, 0o755); err != nil {
		return err
	}
	charts, err := r.charts(chartDir)
	r.Charts = charts
	chartErr := err
	md := r.markdown(base, chartErr)
	r.Path = filepath.Join(o.OutDir, base+".md")
	// The figures themselves, so that the report can be rendered again
	// (Render) without running the benchmark again.
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(chartDir, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(r.Path, []byte(md), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.OutDir, "latest.md"), []byte(md), 0o644)
}

type mdTable struct {
	head []string
	rows [][]string
}

func (t *mdTable) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *mdTable) String() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n|")
	for range t.head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

func usf(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	u := float64(d) / float64(time.Microsecond)
	if u < 100 {
		return fmt.Sprintf("%.1f", u)
	}
	return fmt.Sprintf("%.0f", u)
}

func msf(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

func num(v float64) string {
	switch {
	case v == 0:
		return "—"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// ratio is v/ref as "1.23×", or "—".
func ratio(v, ref float64) string {
	if v == 0 || ref == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/ref)
}

func errCell(s string) string {
	if s == "" {
		return ""
	}
	s = strings.ReplaceAll(s, "|", "/")
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func (r *Report) markdown(base string, chartErr error) string {
	o := &r.Options
	m := &r.Machine
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	mode := "full"
	if o.Quick {
		mode = "quick (BENCH_QUICK=1: smaller and shorter; for CI, not for quoting)"
	}
	w("# tdsgate benchmark — %s, commit %s\n\n", o.Now.Format("2006-01-02 15:04 MST"), m.Commit)
	w("Every path below ran side by side in this one run, against the same SQL Server stand-in process, on 127.0.0.1. Run mode: %s; it took %s.\n\n",
		mode, r.Duration.Round(time.Second))
	w("## Machine\n\n")
	mt := &mdTable{head: []string{"", ""}}
	mt.add("CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores))
	mt.add("kernel", m.Kernel+" ("+m.OS+")")
	mt.add("Go", m.GoVersion)
	keys := make([]string, 0, len(m.Versions))
	for k := range m.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		mt.add(k, m.Versions[k])
	}
	mt.add("RLIMIT_NOFILE", fmt.Sprint(m.NoFile))
	b.WriteString(mt.String())
	w("\nLoad generator, proxies, stand-in and Redis share these cores: absolute numbers are this machine's; the ratios are the point. "+
		"Load average (1, 5, 15 min) at the start: %s; at the end: %s (above the core count means other work shared the machine during the run).\n\n", r.LoadStart, r.LoadEnd)
	w("## Reproduce\n\n```sh\n%s\n```\n\n", o.Command)
	r.writePaths(&b)
	r.writeGoals(&b)
	r.writeRoundTrips(&b, base)
	r.writeBulk(&b, base)
	r.writeChurn(&b, base)
	r.writeIdle(&b, base)
	r.writeAdmission(&b)
	r.writeProfiles(&b)
	if chartErr != nil {
		w("\nCharts: %v\n", chartErr)
	}
	return b.String()
}

func (r *Report) writePaths(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Paths\n\n")
	t := &mdTable{head: []string{"path", "what", "processes measured"}}
	desc := map[string]string{
		PathDirect:         "client → stand-in",
		PathHAProxy:        "client → HAProxy (TCP mode, `option splice-request` + `splice-response`) → stand-in; TLS passes through end to end",
		PathTdspool:        "client → FreeTDS tdspool (session pool; plaintext only) → stand-in",
		PathTdsgate:        "client → tdsgate (bin/proxy, local limiter, no pooling) → stand-in",
		PathTdsgateRedis:   "client → one of three tdsgate instances sharing the bucket's cap through redis-server (clients round robin) → stand-in; redis-server's CPU and memory count as the path's",
		PathTdsgateThree:   "client → one of three independent tdsgate instances, each with its own local limiter, no Redis (clients round robin) → stand-in; churn only: tdsgate+redis without Redis, to tell what Redis costs from what three processes cost",
		PathTdsgatePool:    "client → tdsgate with session pooling (`pool_mode: session`: a backend connection is reset and reused by the next client; `header_walk: kernel`, the default: a BPF socket filter walks the server's packet headers, so the framed relay splices answers unpeeked) → stand-in",
		PathTdsgateSockmap: "client → tdsgate with `relay: sockmap` (after the login, a BPF sockhash + sk_skb verdict program moves each segment between the two sockets in the kernel) → stand-in",
		PathBare:           "client → bench/cmd/barerelay (Go's io.Copy both ways between the two TCP conns, spliced by Go; TLS passes through end to end): the floor for a relay written in Go → stand-in",
		PathBareTLS:        "client → bench/cmd/barerelay -tls (full TLS terminated on both legs with crypto/tls, io.Copy with 32 KiB buffers between the TLS conns) → stand-in; full-tls only",
	}
	seen := map[string]bool{}
	for _, x := range r.Targets {
		if seen[x.Path] {
			continue
		}
		seen[x.Path] = true
		procs := fmt.Sprintf("%d", len(x.PIDs))
		if len(x.PIDs) == 0 {
			procs = "— (no proxy)"
		}
		t.add(x.Path, desc[x.Path], procs)
	}
	b.WriteString(t.String())
	w("\ntdsgate runs with its defaults but for the bucket (the stand-in, `max_connections` above the idle-session count) and logs at warn; /metrics is on (as by default), the health endpoint off.\n")
	w("\nModes: **plain** is plaintext on every leg (PRELOGIN ENCRYPT_NOT_SUP). **login-tls** is TLS for LOGIN7 only " +
		"(ENCRYPT_OFF, what most SQL Server drivers do by default), then plaintext: tdsgate terminates that TLS on both " +
		"legs (client and backend) and relays the rest with splice(2); HAProxy passes the client↔stand-in handshake through. " +
		"**full-tls** is TLS for the whole session (ENCRYPT_ON, what drivers that encrypt by default do): tdsgate and " +
		"bare+tls decrypt and encrypt every byte, HAProxy and bare pass TLS through; measured in the bulk section only. " +
		"The bare paths run in the round trip and bulk sections only.\n\n")
	w("tdspool authenticates clients itself: pool.conf's `user` and `password` are the one login it accepts, compared " +
		"as plain strings with LOGIN7's (a mismatch is a silent close, no ERROR token); its members log in to the server " +
		"as `server user` / `server password`. A client keeps the member it was given until it disconnects (session " +
		"pooling), so `max pool conn` is set above the idle-session count. tdspool listens with a backlog of 5 and is single-threaded.\n\n")
	if len(r.Skipped) > 0 {
		w("Not run:\n\n")
		for _, s := range r.Skipped {
			w("- %s (%s): %s\n", s.Path, s.Mode, s.Reason)
		}
		w("\n")
	}
}

// ref finds the reference value of a row: direct or haproxy, same mode.
func refRT(rs []RoundTrip, path string, x RoundTrip) *RoundTrip {
	for i := range rs {
		y := &rs[i]
		if y.Path == path && y.Mode == x.Mode && y.Client == x.Client && y.Conc == x.Conc && y.Err == "" {
			return y
		}
	}
	return nil
}

func (r *Report) writeRoundTrips(b *strings.Builder, base string) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Round trip: SELECT 1 on a logged-in session\n\n")
	w("Each session runs SELECT 1 back to back; latency is per round trip, throughput is the total over all sessions. %s "+
		"\"+p50\" is the latency the path adds to direct's p50. Ratios compare with direct and HAProxy in the same mode and client. "+
		"\"proxy CPU\" is user+sys of the path's proxy processes per counted round trip; \"kthread CPU\" is that of every kernel thread on the host (kworker, ksoftirqd: "+
		"where the sockmap relay's forwarding runs, outside the proxy process) over the same time, per round trip — the whole machine's, so other work shows in it too; "+
		"\"passes\" lists every pass's round trips/s (the run's spread).\n\n", r.passText(r.Options.RoundTripTime, "the table keeps each path's best pass (by round trips/s)"))
	type key struct {
		client string
		conc   int
	}
	var keys []key
	for _, c := range r.Options.Concurrency {
		keys = append(keys, key{ClientRaw, c})
	}
	for _, c := range r.Options.GoConcurrency {
		keys = append(keys, key{ClientGoMSSQL, c})
	}
	for _, k := range keys {
		rows := filterRT(r.Results.RoundTrips, k.client, k.conc)
		w("### %d concurrent session%s, %s client\n\n", k.conc, plural(k.conc), clientName(k.client))
		t := &mdTable{head: []string{"path", "mode", "round trips/s", "p50 µs", "p99 µs", "p99.9 µs", "+p50 µs", "/s vs direct", "/s vs HAProxy", "p99 vs HAProxy", "proxy CPU µs/rt", "kthread CPU µs/rt", "passes", "note"}}
		for _, x := range rows {
			d, h := refRT(rows, PathDirect, x), refRT(rows, PathHAProxy, x)
			add, vd, vh, ph := "—", "—", "—", "—"
			if d != nil && x.Err == "" {
				add = fmt.Sprintf("%+.1f", float64(x.Lat.P50-d.Lat.P50)/float64(time.Microsecond))
				vd = ratio(x.PerSecond, d.PerSecond)
			}
			if h != nil && x.Err == "" {
				vh = ratio(x.PerSecond, h.PerSecond)
				ph = ratio(float64(x.Lat.P99), float64(h.Lat.P99))
			}
			pc := "—"
			if x.Path != PathDirect && x.Err == "" {
				pc = fmt.Sprintf("%.1f", x.CPUPerRT())
			}
			kc := "—"
			if x.Err == "" && x.Counted > 0 {
				kc = fmt.Sprintf("%.1f", x.KThreadPerRT())
			}
			var passes []string
			for _, v := range x.PassRates {
				passes = append(passes, num(v))
			}
			t.add(x.Path, x.Mode, num(x.PerSecond), usf(x.Lat.P50), usf(x.Lat.P99), usf(x.Lat.P999), add, vd, vh, ph, pc, kc, strings.Join(passes, ", "), errCell(x.Err))
		}
		b.WriteString(t.String())
		if k.client == ClientRaw {
			w("\n![latency, %d sessions](%s/roundtrip-latency-c%d.png)\n", k.conc, base, k.conc)
		}
		w("\n")
	}
	w("![round trips per second](%s/roundtrip-throughput.png)\n\n", base)
}

func (r *Report) writeBulk(b *strings.Builder, base string) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Bulk: one large result set\n\n")
	w("`%s` (the stand-in's bulk source: one row per 4096-byte packet, pre-encoded in memory and written a megabyte at a time, so that the source outruns the relays): one result set of %.0f MB with the raw client (read in 256 KiB chunks, packet headers followed, nothing decoded), %.0f MB with go-mssqldb (every row scanned), "+
		fmt.Sprintf("in each of %d pass(es) over all the paths; MB/s and CPU are over all passes together. ", r.Options.Passes)+
		"MB/s counts wire bytes (10^6 B/s). CPU is user+sys of the path's proxy processes from /proc/<pid>/task/*/schedstat (nanoseconds) over the transfer, per 10^9 bytes relayed; "+
		"the stand-in's own CPU per GB and the client's (this process's) are shown for scale, and so is the CPU of every kernel thread on the host over the transfer (kworker, ksoftirqd: where the sockmap relay's forwarding runs; the whole machine's, so other work shows in it too). "+
		"\"cores busy\" adds them all (proxy, kernel threads, stand-in, client) and multiplies by the rate: how many of the machine's cores the stream kept busy.\n\n",
		"-- standin:bulk N",
		float64(r.Options.BulkBytes)/1e6, float64(r.Options.GoBulkBytes)/1e6)
	t := &mdTable{head: []string{"path", "mode", "client", "MB", "MB/s", "proxy CPU s/GB", "kthread CPU s/GB", "stand-in CPU s/GB", "client CPU s/GB", "cores busy", "MB/s vs direct", "MB/s vs HAProxy", "CPU/GB vs HAProxy", "spread over passes (MB/s; CPU s/GB)", "note"}}
	find := func(path string, x Bulk) *Bulk {
		for i := range r.Results.Bulks {
			y := &r.Results.Bulks[i]
			if y.Path == path && y.Mode == x.Mode && y.Client == x.Client && y.Err == "" {
				return y
			}
		}
		return nil
	}
	for _, x := range r.Results.Bulks {
		vd, vh, ch := "—", "—", "—"
		if d := find(PathDirect, x); d != nil {
			vd = ratio(x.MBps, d.MBps)
		}
		if h := find(PathHAProxy, x); h != nil {
			vh = ratio(x.MBps, h.MBps)
			ch = ratio(x.CPUPerGB, h.CPUPerGB)
		}
		cpu := "—"
		if x.Path != PathDirect && x.Err == "" {
			cpu = fmt.Sprintf("%.2f", x.CPUPerGB)
		}
		kc := "—"
		if x.Err == "" {
			kc = fmt.Sprintf("%.2f", x.KThreadPerGB)
		}
		busy := "—"
		if x.Err == "" && x.ClientGB > 0 {
			busy = fmt.Sprintf("%.2f", x.coresBusy())
		}
		spread := "—"
		if x.Passes > 1 {
			spread = fmt.Sprintf("%s–%s", num(x.MBpsMin), num(x.MBpsMax))
			if x.Path != PathDirect {
				spread += fmt.Sprintf("; %.2f–%.2f", x.CPUPerGBMin, x.CPUPerGBMax)
			}
		}
		t.add(x.Path, x.Mode, clientName(x.Client), num(float64(x.Bytes)/1e6), num(x.MBps), cpu, kc, num(x.BackendGB), num(x.ClientGB), busy, vd, vh, ch, spread, errCell(x.Err))
	}
	b.WriteString(t.String())
	w("\n![bulk MB/s](%s/bulk-mbps.png)\n\n![bulk CPU per GB](%s/bulk-cpu.png)\n\n", base, base)
}

func (r *Report) writeChurn(b *strings.Builder, base string) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Churn: connect, log in, SELECT 1, close\n\n")
	w("%d workers, each in a loop. %s Connect time is from dial to the login answer (LOGINACK). tdspool and tdsgate+pool reuse backend connections "+
		"(a reset instead of a backend login); the other paths log in to the stand-in on every connection. The kernel's TCP counters during each run "+
		"(whole machine) explain 1 s outliers: a retransmitted SYN waits the 1 s initial RTO, and a full listen backlog drops SYNs.\n\n",
		r.Options.ChurnWorkers, r.passTextN(r.Options.ChurnTime, r.Options.ChurnPasses, "the table keeps each path's best pass (by connections/s), and lists every pass's conn/s in run order"))
	t := &mdTable{head: []string{"path", "mode", "client", "conn/s", "p50 connect ms", "p99 connect ms", "proxy CPU ms/conn", "vs direct", "vs HAProxy", "TCP retrans / listen overflows", "conn/s per pass", "note"}}
	find := func(path string, x Churn) *Churn {
		for i := range r.Results.Churns {
			y := &r.Results.Churns[i]
			if y.Path == path && y.Mode == x.Mode && y.Client == x.Client && y.Conns > 0 {
				return y
			}
		}
		return nil
	}
	for _, x := range r.Results.Churns {
		vd, vh := "—", "—"
		if d := find(PathDirect, x); d != nil {
			vd = ratio(x.PerSecond, d.PerSecond)
		}
		if h := find(PathHAProxy, x); h != nil {
			vh = ratio(x.PerSecond, h.PerSecond)
		}
		cpu := "—"
		if x.Path != PathDirect && x.Conns > 0 {
			cpu = fmt.Sprintf("%.3f", x.CPUPerK)
		}
		per := make([]string, len(x.Passes))
		for i, v := range x.Passes {
			per[i] = num(v)
		}
		t.add(x.Path, x.Mode, clientName(x.Client), num(x.PerSecond), msf(x.Connect.P50), msf(x.Connect.P99), cpu, vd, vh,
			fmt.Sprintf("%d / %d", x.Net.Retrans, x.Net.ListenOverflows), strings.Join(per, ", "), errCell(x.Err))
	}
	b.WriteString(t.String())
	w("\n![churn](%s/churn-cps.png)\n\n", base)
}

func (r *Report) writeIdle(b *strings.Builder, base string) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Idle capacity\n\n")
	w("%d idle logged-in sessions opened (plaintext, raw client, 32 at a time), each running one SELECT 1 (the relay has moved bytes both ways, as an application's connection has before it idles), and held; RSS (VmRSS) and open fds of the proxy processes read before and, 1 s after the last and a garbage collection in each tdsgate process (its `pprof` endpoint, `/debug/pprof/heap?gc=1`), after, divided by the sessions held. "+
		"TLS-on-login sessions hold the same after login (the TLS state is dropped), so this runs in plain mode only. Each path runs on freshly started processes. "+
		"For tdsgate, the Go runtime's own figures from its /metrics (goroutines, stack and heap bytes in use) show where the memory goes; "+
		"heap *in use* counts buffers whose pages were never touched, which RSS does not. The stand-in's RSS per session is shown for scale.\n\n", r.Options.IdleSessions)
	if nf := r.Machine.NoFile; nf > 0 && nf < uint64(8*r.Options.IdleSessions) {
		w("RLIMIT_NOFILE is %d here and could not be raised (no CAP_SYS_RESOURCE): a process with two sockets per session cannot hold %d sessions within it. "+
			"After each batch the harness projects, per process, where the fds run out and stops just short of it (HAProxy: its `maxconn`); the note says where and why. "+
			"The per-session figures hold at any count.\n\n", nf, r.Options.IdleSessions)
	}
	t := &mdTable{head: []string{"path", "sessions held", "open s", "proxy RSS KiB/session", "proxy fds/session", "proxy RSS MiB (held)",
		"goroutines/session", "Go stacks KiB/session", "Go heap in use KiB/session", "stand-in RSS KiB/session", "RSS vs HAProxy", "note"}}
	var hap float64
	for _, x := range r.Results.Idles {
		if x.Path == PathHAProxy && x.Held > 0 {
			hap = x.RSSPerSession
		}
	}
	for _, x := range r.Results.Idles {
		rss, fds, tot, vh := "—", "—", "—", "—"
		if x.Path != PathDirect && x.Held > 0 {
			rss = fmt.Sprintf("%.1f", x.RSSPerSession/1024)
			fds = fmt.Sprintf("%.2f", x.FDsPerSession)
			tot = fmt.Sprintf("%.1f", float64(x.ProxyRSS)/(1<<20))
			vh = ratio(x.RSSPerSession, hap)
		}
		note := errCell(x.Err)
		if x.Capped > 0 && x.Held >= x.Capped {
			note = strings.TrimPrefix(note+fmt.Sprintf("; capped at %d: %s (RLIMIT_NOFILE %d)", x.Capped, x.CapReason, x.NoFile), "; ")
		}
		backend := "—"
		if x.BackendRSSPer > 0 {
			backend = fmt.Sprintf("%.1f", x.BackendRSSPer/1024)
		}
		gr, st, hp := "—", "—", "—"
		if x.HeapInusePer != 0 || x.GoroutinesPer != 0 { // scraped from its /metrics (0 goroutines is a figure)
			gr = fmt.Sprintf("%.2f", x.GoroutinesPer)
			st = fmt.Sprintf("%.1f", x.StackPer/1024)
			hp = fmt.Sprintf("%.1f", x.HeapInusePer/1024)
		}
		t.add(x.Path, fmt.Sprintf("%d / %d", x.Held, x.Wanted), fmt.Sprintf("%.1f", x.Seconds), rss, fds, tot, gr, st, hp, backend, vh, note)
	}
	b.WriteString(t.String())
	w("\n![idle RSS](%s/idle-rss.png)\n\n", base)
}

func (r *Report) writeAdmission(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Admission\n\n")
	w("### Acquire + release\n\nThe limiter itself (pkg/limiter), called from this process: the local one, and the Redis one against the harness's redis-server " +
		"(an acquire script, then a release script, which publishes only while some instance has clients waiting: two Redis round trips per login; " +
		"concurrent acquires share one acquire script call), and the Redis one with the default slot linger (tdsgate's default: a released slot stays warm, " +
		"still counted in Redis, and the next acquire takes it without a round trip). Its share of a login through tdsgate+redis is " +
		"also visible in the churn table as the connect-time difference from tdsgate.\n\n")
	t := &mdTable{head: []string{"limiter", "callers", "acquire+release/s", "p50 µs", "p99 µs", "p99.9 µs", "note"}}
	for _, l := range r.Results.Limiter {
		t.add(l.Name, fmt.Sprint(l.Callers), num(l.PerSecond), usf(l.Lat.P50), usf(l.Lat.P99), usf(l.Lat.P999), errCell(l.Err))
	}
	b.WriteString(t.String())
	w("\n### Overload: refusals (50005) per second\n\nA bucket of 2 slots with no queue (`max_connections: 2`, `max_queue_size: 0`), both slots held by two open sessions; "+
		"then %d connectors log in as fast as they can for %s and each gets ERROR 50005. The refusal is measured from dial to the ERROR token. HAProxy and tdspool have no TDS-level refusal to compare with.\n\n",
		r.Options.OverloadWorker, r.Options.OverloadTime)
	t = &mdTable{head: []string{"path", "instances", "connectors", "refusals/s", "p50 ms", "p99 ms", "proxy CPU ms/refusal", "note"}}
	for _, x := range r.Results.Rejections {
		cpu := "—"
		if x.Refused > 0 {
			cpu = fmt.Sprintf("%.3f", x.CPUPerK)
		}
		t.add(x.Path, fmt.Sprint(x.Instances), fmt.Sprint(x.Workers), num(x.PerSecond), msf(x.Lat.P50), msf(x.Lat.P99), cpu, errCell(x.Err))
	}
	b.WriteString(t.String())
	w("\n")
}

// passText says how long each path ran, in how many interleaved passes.
func (r *Report) passText(total time.Duration, keep string) string {
	return r.passTextN(total, r.Options.Passes, keep)
}

// passTextN is passText for a section run in p passes.
func (r *Report) passTextN(total time.Duration, p int, keep string) string {
	p = max(p, 1)
	if p == 1 {
		return fmt.Sprintf("Each path runs for %s.", total)
	}
	return fmt.Sprintf("Each path runs for %s in each of %d passes (all paths, then all paths again); %s.", total/time.Duration(p), p, keep)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func clientName(c string) string {
	switch c {
	case ClientRaw:
		return "raw TDS (tools/tdsclient)"
	case ClientGoMSSQL:
		return "go-mssqldb"
	}
	return c
}
