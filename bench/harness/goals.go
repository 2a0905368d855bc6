package harness

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// goal is one line of the goals table: what was wanted, what was measured,
// and whether this run met it. Goals are compared here, never asserted.
type goal struct {
	name, measured string
	verdict        string // verdictMet, verdictNoise or verdictShort
	known          bool   // false: not enough numbers to tell
	why            string
}

func (r *Report) rt(path, mode, client string, conc int) *RoundTrip {
	for i := range r.Results.RoundTrips {
		x := &r.Results.RoundTrips[i]
		if x.Path == path && x.Mode == mode && x.Client == client && x.Conc == conc && x.Err == "" && x.Lat.N > 0 {
			return x
		}
	}
	return nil
}

func (r *Report) bulk(path, mode, client string) *Bulk {
	for i := range r.Results.Bulks {
		x := &r.Results.Bulks[i]
		if x.Path == path && x.Mode == mode && x.Client == client && x.Err == "" && x.Bytes > 0 {
			return x
		}
	}
	return nil
}

func (r *Report) churn(path, mode, client string) *Churn {
	for i := range r.Results.Churns {
		x := &r.Results.Churns[i]
		if x.Path == path && x.Mode == mode && x.Client == client && x.Conns > 0 {
			return x
		}
	}
	return nil
}

func (r *Report) idle(path string) *Idle {
	for i := range r.Results.Idles {
		x := &r.Results.Idles[i]
		if x.Path == path && x.Held > 0 {
			return x
		}
	}
	return nil
}

var tdsgatePaths = []string{PathTdsgate, PathTdsgateRedis, PathTdsgatePool}

// Verdicts. A difference smaller than the noise band of one run on a
// shared 2-core machine is "within noise", neither met nor short.
const (
	verdictMet   = "met"
	verdictNoise = "within noise"
	verdictShort = "**short**"
)

func (r *Report) goals() []goal {
	var gs []goal
	modes := []string{ModePlain, ModeLoginTLS}
	// 1. Round-trip overhead (p50 added to direct) no more than HAProxy's.
	for _, p := range tdsgatePaths {
		for _, m := range modes {
			for _, c := range r.Options.Concurrency {
				d, h, g := r.rt(PathDirect, m, ClientRaw, c), r.rt(PathHAProxy, m, ClientRaw, c), r.rt(p, m, ClientRaw, c)
				if g == nil {
					continue
				}
				x := goal{name: fmt.Sprintf("round-trip overhead ≤ HAProxy's — %s %s, %d session%s", p, m, c, plural(c))}
				if d != nil && h != nil {
					og, oh := g.Lat.P50-d.Lat.P50, h.Lat.P50-d.Lat.P50
					// Noise band: 5 µs, or 10 % of direct's p50 (queueing
					// dominates at 16 and 128 sessions).
					band := max(5*time.Microsecond, d.Lat.P50/10)
					x.known = true
					x.measured = fmt.Sprintf("+%s µs vs HAProxy +%s µs at p50; %.0f vs %.0f round trips/s", usf(max(og, 1)), usf(max(oh, 1)), g.PerSecond, h.PerSecond)
					switch {
					case og <= oh:
						x.verdict = verdictMet
					case og-oh <= band:
						x.verdict = verdictNoise
					default:
						x.verdict = verdictShort
						x.why = whyRoundTrip(p, c) + r.profileRef(profileKey("roundtrip", p, m, c))
					}
				}
				gs = append(gs, x)
			}
		}
	}
	// 2. Bulk MB/s ≥ HAProxy's, with no more CPU per GB.
	for _, p := range tdsgatePaths {
		for _, m := range modes {
			h, g := r.bulk(PathHAProxy, m, ClientRaw), r.bulk(p, m, ClientRaw)
			if g == nil {
				continue
			}
			x := goal{name: fmt.Sprintf("bulk MB/s ≥ HAProxy, CPU/GB ≤ HAProxy — %s %s", p, m)}
			if h != nil {
				x.known = true
				x.measured = fmt.Sprintf("%.0f vs %.0f MB/s; %.2f vs %.2f CPU s/GB", g.MBps, h.MBps, g.CPUPerGB, h.CPUPerGB)
				if x.verdict = bulkVerdict(g, h, 1); x.verdict == verdictShort {
					x.why = whyBulk(p, g, h) + r.profileRef(profileKey("bulk", p, m, 0))
				}
			}
			gs = append(gs, x)
		}
	}
	// 3. Churn without pooling ≥ 80% of HAProxy's conn/s (pooling shown too).
	for _, p := range tdsgatePaths {
		for _, m := range modes {
			h, g := r.churn(PathHAProxy, m, ClientRaw), r.churn(p, m, ClientRaw)
			if g == nil {
				continue
			}
			x := goal{name: fmt.Sprintf("churn ≥ 80%% of HAProxy's conn/s — %s %s", p, m)}
			if p == PathTdsgatePool {
				x.name += " (pooled: for comparison)"
			}
			if h != nil {
				x.known = true
				x.measured = fmt.Sprintf("%.0f vs %.0f conn/s (%.0f%%); p99 connect %s vs %s ms", g.PerSecond, h.PerSecond, 100*g.PerSecond/h.PerSecond, msf(g.Connect.P99), msf(h.Connect.P99))
				switch {
				case g.PerSecond >= 0.8*h.PerSecond:
					x.verdict = verdictMet
				case g.PerSecond >= 0.75*h.PerSecond:
					x.verdict = verdictNoise
				default:
					x.verdict = verdictShort
					x.why = whyChurn(p, m, r)
				}
			}
			gs = append(gs, x)
		}
	}
	// 3b. Churn through three instances and Redis ≥ 90% of standalone
	// tdsgate's conn/s, in the same run: the best passes, and the ratio of
	// each pass (the two paths run back to back in every pass) for the
	// spread.
	for _, m := range modes {
		g, s := r.churn(PathTdsgateRedis, m, ClientRaw), r.churn(PathTdsgate, m, ClientRaw)
		if g == nil || s == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("churn through Redis (3 instances) ≥ 90%% of standalone tdsgate's conn/s — %s", m), known: true}
		best := g.PerSecond / s.PerSecond
		var per []string
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range min(len(g.Passes), len(s.Passes)) {
			if s.Passes[i] > 0 {
				v := g.Passes[i] / s.Passes[i]
				lo, hi = min(lo, v), max(hi, v)
				per = append(per, fmt.Sprintf("%.0f%%", 100*v))
			}
		}
		x.measured = fmt.Sprintf("best passes %.0f vs %.0f conn/s (%.0f%%)", g.PerSecond, s.PerSecond, 100*best)
		if len(per) > 1 {
			x.measured += fmt.Sprintf("; per pass %s (spread %.0f–%.0f%%)", strings.Join(per, ", "), 100*lo, 100*hi)
		}
		x3 := r.churn(PathTdsgateThree, m, ClientRaw)
		if x3 != nil && x3.PerSecond > 0 {
			x.measured += fmt.Sprintf("; the same three instances without Redis (%s) %.0f conn/s (%.0f%% of standalone), Redis %.0f%% of them", PathTdsgateThree, x3.PerSecond, 100*x3.PerSecond/s.PerSecond, 100*g.PerSecond/x3.PerSecond)
		}
		switch {
		case best >= 0.9:
			x.verdict = verdictMet
		case best >= 0.85:
			x.verdict = verdictNoise
		default:
			x.verdict = verdictShort
			x.why = whyChurnRedis(m, g, s, x3)
		}
		gs = append(gs, x)
	}
	// 4. Idle ≤ 16 KiB RSS per session.
	for _, p := range tdsgatePaths {
		g := r.idle(p)
		if g == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("idle ≤ 16 KiB RSS per session — %s", p), known: true}
		x.measured = fmt.Sprintf("%.1f KiB, %.2f fds per session (%d sessions)", g.RSSPerSession/1024, g.FDsPerSession, g.Held)
		if g.GoroutinesPer > 0 {
			x.measured += fmt.Sprintf("; %.2f goroutines, %.1f KiB of stacks, %.1f KiB of heap in use per session", g.GoroutinesPer, g.StackPer/1024, g.HeapInusePer/1024)
		}
		if g.RSSPerSession <= 8*1024 {
			x.measured += "; stretch (≤ 8 KiB) met"
		}
		switch {
		case g.RSSPerSession <= 16*1024:
			x.verdict = verdictMet
		case g.RSSPerSession <= 17*1024:
			x.verdict = verdictNoise
		default:
			x.verdict = verdictShort
			x.why = whyIdle(p, g)
		}
		gs = append(gs, x)
	}
	// Issue 16's relay rows (goals_relay.go).
	gs = append(gs, r.relayGoals()...)
	// 5. Faster than tdspool on every row it can run (plain mode).
	for _, p := range tdsgatePaths {
		if r.rt(p, ModePlain, ClientRaw, 1) == nil || (r.idle(PathTdspool) == nil && r.rt(PathTdspool, ModePlain, ClientRaw, 1) == nil) {
			continue
		}
		var rows, shortRows []string
		verdict := verdictMet
		cmp := func(label string, gv, tv float64, higherBetter bool) {
			if gv == 0 || tv == 0 {
				return
			}
			ok, near := gv >= tv, gv >= 0.95*tv
			if !higherBetter {
				ok, near = gv <= tv, gv <= 1.05*tv
			}
			cell := fmt.Sprintf("%s: %s vs %s", label, num(gv), num(tv))
			switch {
			case ok:
			case near:
				cell += " (within noise)"
				if verdict == verdictMet {
					verdict = verdictNoise
				}
			default:
				cell = "**" + cell + "**"
				verdict = verdictShort
				shortRows = append(shortRows, label)
			}
			rows = append(rows, cell)
		}
		for _, c := range r.Options.Concurrency {
			g, t := r.rt(p, ModePlain, ClientRaw, c), r.rt(PathTdspool, ModePlain, ClientRaw, c)
			if g != nil && t != nil {
				cmp(fmt.Sprintf("round trips/s at %d", c), g.PerSecond, t.PerSecond, true)
			}
		}
		for _, cl := range []string{ClientRaw, ClientGoMSSQL} {
			if g, t := r.bulk(p, ModePlain, cl), r.bulk(PathTdspool, ModePlain, cl); g != nil && t != nil {
				cmp("bulk MB/s ("+cl+")", g.MBps, t.MBps, true)
			}
			if g, t := r.churn(p, ModePlain, cl), r.churn(PathTdspool, ModePlain, cl); g != nil && t != nil {
				cmp("churn conn/s ("+cl+")", g.PerSecond, t.PerSecond, true)
			}
		}
		if g, t := r.idle(p), r.idle(PathTdspool); g != nil && t != nil {
			if t.Held < t.Wanted && g.Held > t.Held {
				rows = append(rows, fmt.Sprintf("idle sessions held: %d vs %d (tdspool aborted)", g.Held, t.Held))
			}
			cmp("idle KiB/session (lower is better)", g.RSSPerSession/1024, t.RSSPerSession/1024, false)
		}
		x := goal{name: "faster than tdspool on every row it can run — " + p + " plain", known: len(rows) > 0, verdict: verdict,
			measured: strings.Join(rows, "; ")}
		if verdict == verdictShort {
			x.why = whyTdspool(p, shortRows, r)
		}
		gs = append(gs, x)
	}
	return append(gs, r.sockmapGoals()...)
}

// sockmapGoals are issue 17's targets for relay: sockmap, against splice
// (tdsgate) and HAProxy in the same run. CPU counts the proxy's and the
// host's kernel threads' (where the kernel relay forwards), since the
// kernel relay moves its work out of the proxy process.
func (r *Report) sockmapGoals() []goal {
	var gs []goal
	for _, m := range []string{ModePlain, ModeLoginTLS} {
		for _, c := range r.Options.Concurrency {
			d, h, s, k := r.rt(PathDirect, m, ClientRaw, c), r.rt(PathHAProxy, m, ClientRaw, c), r.rt(PathTdsgate, m, ClientRaw, c), r.rt(PathTdsgateSockmap, m, ClientRaw, c)
			if k == nil {
				continue
			}
			x := goal{name: fmt.Sprintf("sockmap: round trip +p50 ≤ splice's and HAProxy's, CPU/rt (proxy + kernel threads) ≤ splice's — %s, %d session%s", m, c, plural(c))}
			if d != nil && h != nil && s != nil {
				ok, oh, os := k.Lat.P50-d.Lat.P50, h.Lat.P50-d.Lat.P50, s.Lat.P50-d.Lat.P50
				ck, cs := k.CPUPerRT()+k.KThreadPerRT(), s.CPUPerRT()+s.KThreadPerRT()
				band := max(5*time.Microsecond, d.Lat.P50/10)
				x.known = true
				x.measured = fmt.Sprintf("+p50 %s vs splice %s, HAProxy %s µs; p99 %s vs %s, %s µs; CPU/rt %.1f+%.1f vs splice %.1f+%.1f µs (proxy+kthreads)",
					usf(max(ok, 1)), usf(max(os, 1)), usf(max(oh, 1)), usf(k.Lat.P99), usf(s.Lat.P99), usf(h.Lat.P99), k.CPUPerRT(), k.KThreadPerRT(), s.CPUPerRT(), s.KThreadPerRT())
				best := min(oh, os)
				cpuOK, cpuN := ck <= cs, ck <= 1.15*cs+1
				switch {
				case ok <= best && cpuOK:
					x.verdict = verdictMet
				case ok-best <= band && cpuN:
					x.verdict = verdictNoise
				default:
					x.verdict = verdictShort
					x.why = whySockmapRT(c, ok-best > band, !cpuN)
				}
			}
			gs = append(gs, x)
		}
		s, h, k := r.bulk(PathTdsgate, m, ClientRaw), r.bulk(PathHAProxy, m, ClientRaw), r.bulk(PathTdsgateSockmap, m, ClientRaw)
		if k == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("sockmap: bulk MB/s ≥ splice's and HAProxy's, CPU/GB (proxy + kernel threads) ≤ splice's — %s", m)}
		if s != nil && h != nil {
			x.known = true
			ck, cs := k.CPUPerGB+k.KThreadPerGB, s.CPUPerGB+s.KThreadPerGB
			x.measured = fmt.Sprintf("%.0f vs splice %.0f, HAProxy %.0f MB/s; CPU/GB %.2f+%.2f vs splice %.2f+%.2f s (proxy+kthreads)", k.MBps, s.MBps, h.MBps, k.CPUPerGB, k.KThreadPerGB, s.CPUPerGB, s.KThreadPerGB)
			best := max(s.MBps, h.MBps)
			switch {
			case k.MBps >= best && ck <= cs:
				x.verdict = verdictMet
			case k.MBps >= 0.95*best && ck <= max(1.15*cs, cs+0.1):
				x.verdict = verdictNoise
			default:
				x.verdict = verdictShort
				x.why = whySockmapBulk(k, s)
			}
		}
		gs = append(gs, x)
	}
	if g := r.idle(PathTdsgateSockmap); g != nil {
		x := goal{name: "sockmap: idle ≤ 8 KiB RSS per session, no relay goroutine", known: true}
		x.measured = fmt.Sprintf("%.1f KiB, %.2f goroutines, %.2f fds per session (%d sessions)", g.RSSPerSession/1024, g.GoroutinesPer, g.FDsPerSession, g.Held)
		switch {
		case g.RSSPerSession <= 8*1024 && g.GoroutinesPer < 0.05:
			x.verdict = verdictMet
		case g.RSSPerSession <= 8.5*1024 && g.GoroutinesPer < 0.05:
			x.verdict = verdictNoise
		default:
			x.verdict = verdictShort
			x.why = fmt.Sprintf("%.2f goroutines, %.1f KiB of Go stacks and %.1f KiB of Go heap in use per session (after a GC).", g.GoroutinesPer, g.StackPer/1024, g.HeapInusePer/1024)
		}
		gs = append(gs, x)
	}
	return gs
}

// whySockmapRT and whySockmapBulk say where the kernel relay's time goes.
// In the kernel (net/core/skmsg.c), a segment redirected to another
// socket's egress is queued on that socket's psock and sent by its backlog
// work item: a kernel worker wakes per burst of segments, in place of the
// proxy's goroutine.
const sockmapBacklog = "A segment the verdict program redirects is not sent from the softirq that received it: it is queued on the peer socket's psock and sent by the psock's backlog work item in a kernel worker (net/core/skmsg.c), so each burst still costs a wake-up and a context switch — in a kworker instead of the proxy — and the kworker competes for the same two cores."

func whySockmapRT(conc int, slow, costly bool) string {
	var b strings.Builder
	b.WriteString(sockmapBacklog)
	if slow && conc >= 16 {
		b.WriteString(" At this concurrency the cores are saturated; kernel workers run at a fixed priority beside the load generator and the stand-in, and many sessions' segments wait in the same per-CPU workqueue.")
	}
	if costly {
		b.WriteString(" The CPU per round trip moved into kernel threads is not smaller than what splice costs in the proxy.")
	}
	return b.String()
}

func whySockmapBulk(k, s *Bulk) string {
	return fmt.Sprintf("%s For a bulk stream the backlog sends 4 KiB packets' segments one skb at a time (skb_send_sock), where splice moves whatever has queued (up to its 1 MiB pipe) per wake-up: %.2f s/GB in kernel threads against splice's %.2f s/GB in the proxy.", sockmapBacklog, k.KThreadPerGB, s.CPUPerGB)
}

func whyRoundTrip(path string, conc int) string {
	s := "A small message costs tdsgate what it costs HAProxy in syscalls — one read and one write per direction (relay/splice.go; HAProxy splices it: two splice(2)), and a read that finds nothing before parking — but each direction is a goroutine parked in the Go netpoller: every message is also an epoll wake-up, a trip through the scheduler (findRunnable, netpoll) and, while the write(2) that hands it to the peer runs, sysmon's polling, where HAProxy's event loop handles many connections per wake-up. Most of the proxy's own time is that write(2): the kernel delivers the segment to the peer inside it, the same for both."
	if path == PathTdsgatePool {
		s = "With pooling tdsgate relays through relay.Framed, which follows the packets through each chunk (one read and one write per small message, as the plain relay) and counts messages under a lock to know where a request and its answer end; the rest is the Go netpoller and scheduler per wake-up, as for the plain relay."
	}
	if path == PathTdsgateRedis {
		s += " This path also spreads its sessions over three tdsgate processes: three Go runtimes, each with its own netpoller and scheduler threads, competing for two cores (most likely why it trails standalone tdsgate at 16 sessions)."
	}
	if conc >= 16 {
		s += " At this concurrency the two cores are saturated by the load generator, the stand-in and the proxy together, so every microsecond of proxy CPU is also taken from the stand-in and the client."
	}
	return s
}

func whyBulk(path string, g, h *Bulk) string {
	if path == PathTdsgatePool {
		return framedWhy(g, h)
	}
	return fmt.Sprintf("Both splice a run of bytes kernel to kernel (tdsgate: exactly what SIOCINQ says is queued, through a pipe from Go's pool: two splice(2) per wake-up); the wake-ups themselves go through the Go netpoller and scheduler. On a shared 2-core machine the MB/s of one stream through any relay is bound by the client, the stand-in and the kernel's loopback work on the same cores (see the bare relay's row), and the CPU per GB moves by ±0.1 s/GB between passes (%.2f vs %.2f CPU s/GB here).", g.CPUPerGB, h.CPUPerGB)
}

// framedWhy explains the framed relay's CPU per GB against HAProxy's.
func framedWhy(g, h *Bulk) string {
	return fmt.Sprintf("relay.Framed must see every packet header to know where messages end. It walks a queued run (up to its 1 MiB pipe) where it lies, without taking it off the socket, and splices the whole run in one go; packets of 16 KiB or more it finds by hopping from header to header (SO_PEEK_OFF: 8 bytes peeked per packet, no body copied), but the stand-in's 4 KiB packets it finds by peeking the run (recv MSG_PEEK copies every byte once). The walk alone costs 0.08–0.10 CPU s/GB peeking and 0.36–0.51 hopping (two syscalls per packet) at 4 KiB (pkg/relay BenchmarkWalkRun4K, BenchmarkWalkHop4K; BenchmarkWalkTrunc4K skips bodies with MSG_PEEK|MSG_TRUNC instead: no cheaper), and peeking into a small cache-hot scratch (an iovec per header) costs the same as into a 256 KiB buffer: the copy is the floor at 4 KiB unless lengths are trusted unchecked, which could hand one session's bytes to another. Where the kernel walks the headers as segments arrive (header_walk: kernel, the default: a BPF socket filter on the backend socket, pkg/relay/kwalk.go) nothing is peeked; a session whose walk stopped, or a proxy where the filter cannot load, peeks. HAProxy's splice never copies: %.1f× HAProxy's CPU per GB.", g.CPUPerGB/h.CPUPerGB)
}

func whyChurn(path, mode string, r *Report) string {
	var b strings.Builder
	b.WriteString("HAProxy only forwards bytes: one accept and one connect per connection. tdsgate without pooling terminates the login: it parses PRELOGIN and LOGIN7, routes, admits, dials the stand-in and logs in to it itself (its own PRELOGIN and LOGIN7), relays the answer, then starts the relay — more syscalls, allocations and goroutines per connection, on cores the stand-in and the clients need too")
	if g, h := r.churn(path, mode, ClientRaw), r.churn(PathHAProxy, mode, ClientRaw); g != nil && h != nil && g.CPUPerK > 0 && h.CPUPerK > 0 {
		fmt.Fprintf(&b, " (%.3f ms of proxy CPU per connection against HAProxy's %.3f)", g.CPUPerK, h.CPUPerK)
	}
	b.WriteString(".")
	if mode == ModeLoginTLS {
		b.WriteString(" With login TLS it runs two TLS handshakes per connection (client leg and backend leg) where HAProxy's path runs one end to end.")
	}
	if path == PathTdsgateRedis {
		if g, t := r.churn(PathTdsgateRedis, mode, ClientRaw), r.churn(PathTdsgate, mode, ClientRaw); g != nil && t != nil && g.CPUPerK > 0 && t.CPUPerK > 0 {
			fmt.Fprintf(&b, " With Redis a login that finds no warm slot (slot_linger) runs the acquire script, and a close whose slot is not kept warm the release script: %.2f ms of CPU per connection across the three instances and redis-server, against %.2f ms for one standalone instance.", g.CPUPerK, t.CPUPerK)
		} else {
			b.WriteString(" With Redis a login that finds no warm slot runs the acquire script, and a close whose slot is not kept warm the release script.")
		}
		b.WriteString(" Session pooling (tdsgate+pool) takes the backend login off this path.")
	}
	return b.String()
}

func whyChurnRedis(mode string, g, s, x3 *Churn) string {
	var b strings.Builder
	b.WriteString("With the slot linger (default 100 ms) a login through Redis takes a warm slot and its close keeps it warm, so the steady churn runs no script; " +
		"what remains is three tdsgate processes and redis-server on two cores, beside the load generator and the stand-in: three Go runtimes, " +
		"each with its sysmon thread and its idle processors spinning for work and parking again, where one process batches the same work " +
		"(perf on this path attributes most of the difference to runtime.sysmon and runtime.findRunnable, not to the Redis client or the limiter)")
	if g.CPUPerK > 0 && s.CPUPerK > 0 {
		fmt.Fprintf(&b, " (%.3f ms of CPU per connection across the three instances and redis-server, against %.3f ms for one standalone instance)", g.CPUPerK, s.CPUPerK)
	}
	b.WriteString(".")
	if x3 != nil && x3.PerSecond > 0 && s.PerSecond > 0 {
		fmt.Fprintf(&b, " The same three instances without Redis, each on its own local limiter (%s), did %.0f conn/s in this run, %.0f%% of one standalone instance; through Redis they did %.0f%% of that: ", PathTdsgateThree, x3.PerSecond, 100*x3.PerSecond/s.PerSecond, 100*g.PerSecond/x3.PerSecond)
		if g.PerSecond >= 0.95*x3.PerSecond {
			b.WriteString("the shortfall is the three processes, not Redis.")
		} else {
			b.WriteString("Redis itself costs the rest.")
		}
	}
	if mode == ModeLoginTLS {
		b.WriteString(" With login TLS the two TLS handshakes per connection dominate both paths.")
	}
	return b.String()
}

func whyIdle(path string, g *Idle) string {
	var b strings.Builder
	if g.GoroutinesPer > 0 {
		fmt.Fprintf(&b, "Per idle session tdsgate holds %.1f goroutines whose stacks take %.1f KiB (they grew during the login and stay grown), and %.1f KiB of Go heap in use", g.GoroutinesPer, g.StackPer/1024, g.HeapInusePer/1024)
		if g.HeapInusePer > 1.5*g.RSSPerSession {
			b.WriteString(" — more than the RSS, because buffers allocated per session are mostly untouched pages: a session that once moves a large result keeps them resident")
		}
		b.WriteString(". ")
	} else {
		b.WriteString("Most of it is goroutine stacks (a session goroutine and the relay's) and per-session buffers. ")
	}
	b.WriteString("An idle session is two goroutines: the session's (4 KiB: it idles below Serve's frame, running one direction) and one for the other direction (2 KiB, with GODEBUG=adaptivestackstart=0, which the proxy sets for itself); the rest is Go heap (the session, its login and log state, two goroutine descriptors) and the runtime's own overhead. ")
	if g.FDsPerSession > 2.5 {
		fmt.Fprintf(&b, "It also holds %.0f fds per session instead of 2: Go's splice takes a pipe pair from its pool before it waits for data, so each idle direction keeps a pipe (2 fds, sized to 1 MiB with F_SETPIPE_SZ, kernel memory outside RSS). Waiting for readability before splicing (or a 1-byte peek) would return them; under RLIMIT_NOFILE 20000 this is what caps one instance at about 3,300 sessions.", g.FDsPerSession)
	}
	return strings.TrimSpace(b.String())
}

func whyTdspool(path string, rows []string, r *Report) string {
	var parts []string
	for _, row := range rows {
		switch {
		case row == "round trips/s at 1":
			parts = append(parts, "with one session nothing contends, and tdspool's single-threaded select(2) loop (one read(2), one write(2) per packet, no goroutine wake-ups) is as quick as a relay gets")
		case strings.HasPrefix(row, "round trips/s"):
			part := "at " + strings.TrimPrefix(row, "round trips/s at ") + " sessions the difference is the per-packet cost of the relay on cores the stand-in and the clients share"
			if path == PathTdsgateRedis {
				part += ", and this path's sessions are spread over three tdsgate processes — three Go runtimes, each with its own netpoller and scheduler threads, competing for two cores"
			}
			parts = append(parts, part)
		case strings.HasPrefix(row, "bulk MB/s (gomssql)"):
			g, t := r.bulk(path, ModePlain, ClientGoMSSQL), r.bulk(PathTdspool, ModePlain, ClientGoMSSQL)
			if g != nil && t != nil {
				parts = append(parts, fmt.Sprintf("bulk through go-mssqldb is bound by the driver decoding rows on the same two cores, so the stand-in's and the proxy's CPU come off the client (proxy %.2f vs %.2f CPU s/GB, stand-in %.2f vs %.2f)", g.CPUPerGB, t.CPUPerGB, g.BackendGB, t.BackendGB))
			}
		case strings.HasPrefix(row, "bulk MB/s"):
			if path == PathTdsgatePool {
				parts = append(parts, "the pooled path's framed relay reads every packet header (see the bulk goal)")
			} else {
				parts = append(parts, "bulk within a few percent is inside this machine's run-to-run spread")
			}
		case strings.HasPrefix(row, "churn"):
			parts = append(parts, "tdspool never logs in to the server for a client (its members stay logged in); tdsgate without pooling does, on every connection")
		}
	}
	if len(parts) == 0 {
		return "See the tables."
	}
	return strings.ToUpper(parts[0][:1]) + strings.Join(parts, "; ")[1:] + "."
}

func (r *Report) writeGoals(b *strings.Builder) {
	gs := r.goals()
	fmt.Fprintf(b, "## Goals (compared, not asserted)\n\n")
	fmt.Fprintf(b, "\"within noise\": the difference is inside the noise band of one run on this shared machine (round trip: 5 µs or 10 %% of direct's p50; bulk: 5 %% of MB/s, 15 %% or 0.1 s/GB of CPU; churn: 75–80 %%; tdspool rows: 5 %%).\n\n")
	t := &mdTable{head: []string{"goal", "measured (tdsgate vs reference)", "this run"}}
	var short []goal
	for _, g := range gs {
		v := "n/a"
		if g.known {
			v = g.verdict
			if g.verdict == verdictShort {
				short = append(short, g)
			}
		}
		t.add(g.name, g.measured, v)
	}
	b.WriteString(t.String())
	if len(short) > 0 {
		fmt.Fprintf(b, "\n### Where tdsgate falls short, and why\n\n")
		for _, g := range short {
			fmt.Fprintf(b, "- **%s** (%s). %s\n", g.name, g.measured, g.why)
		}
	}
	fmt.Fprintf(b, "\n")
}

// bulkVerdict compares a bulk row g with HAProxy's h: met when g moves at
// least ratio × h's MB/s at no more CPU per GB; within noise when it is
// within 5 % of that MB/s and within 15 % or 0.1 s/GB of that CPU.
func bulkVerdict(g, h *Bulk, ratio float64) string {
	fast, lean := g.MBps >= ratio*h.MBps, g.CPUPerGB <= h.CPUPerGB
	fastN, leanN := g.MBps >= (ratio-0.05)*h.MBps, g.CPUPerGB <= max(1.15*h.CPUPerGB, h.CPUPerGB+0.1)
	switch {
	case fast && lean:
		return verdictMet
	case fastN && leanN:
		return verdictNoise
	}
	return verdictShort
}
