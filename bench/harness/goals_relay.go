package harness

import "fmt"

// relayGoals are issue 16's rows for the relay, against the same-run
// anchors: a bulk source that outruns the relays, bulk through tdsgate
// against HAProxy, the pooled (framed) relay's CPU per GB, and full TLS
// against a bare crypto/tls relay.
func (r *Report) relayGoals() []goal {
	var gs []goal
	// The source: direct must reach 2 GB/s, or the bulk ratios say little.
	if d := r.bulk(PathDirect, ModePlain, ClientRaw); d != nil {
		x := goal{name: "bulk source not the bottleneck — direct plain ≥ 2 GB/s", known: true,
			measured: fmt.Sprintf("%.0f MB/s direct; bare Go relay %s, HAProxy %s", d.MBps, mbps(r.bulk(PathBare, ModePlain, ClientRaw)), mbps(r.bulk(PathHAProxy, ModePlain, ClientRaw)))}
		switch {
		case d.MBps >= 2000:
			x.verdict = verdictMet
		case d.MBps >= 1900:
			x.verdict = verdictNoise
		default:
			x.verdict = verdictShort
			x.why = fmt.Sprintf("The stand-in writes pre-encoded packets a megabyte per write (%.2f CPU s/GB of its own), and the raw client reads 256 KiB at a time; on this machine's two cores, shared with the rest of the run, loopback TCP between two processes is what tops out.", d.BackendGB)
		}
		gs = append(gs, x)
	}
	// tdsgate plaintext: ≥ 1.5× HAProxy's MB/s at no more CPU per GB.
	for _, p := range []string{PathTdsgate, PathTdsgateRedis} {
		h, g := r.bulk(PathHAProxy, ModePlain, ClientRaw), r.bulk(p, ModePlain, ClientRaw)
		if g == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("bulk ≥ 1.5× HAProxy MB/s at ≤ its CPU/GB — %s plain", p)}
		if h != nil {
			x.known = true
			x.measured = fmt.Sprintf("%.0f vs %.0f MB/s (%.2f×); %.2f vs %.2f CPU s/GB%s", g.MBps, h.MBps, g.MBps/h.MBps, g.CPUPerGB, h.CPUPerGB, spreadNote(g, h))
			if x.verdict = bulkVerdict(g, h, 1.5); x.verdict == verdictShort {
				x.why = whyBulkFast(r, g, h) + r.profileRef(profileKey("bulk", p, ModePlain, 0))
			}
		}
		gs = append(gs, x)
	}
	// The framed relay of pooled sessions: CPU per GB ≤ HAProxy's.
	for _, m := range []string{ModePlain, ModeLoginTLS} {
		h, g := r.bulk(PathHAProxy, m, ClientRaw), r.bulk(PathTdsgatePool, m, ClientRaw)
		if g == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("framed relay CPU/GB ≤ HAProxy's — tdsgate+pool %s", m)}
		if h != nil {
			x.known = true
			x.measured = fmt.Sprintf("%.2f vs %.2f CPU s/GB; %.0f vs %.0f MB/s%s", g.CPUPerGB, h.CPUPerGB, g.MBps, h.MBps, spreadNote(g, h))
			switch {
			case g.CPUPerGB <= h.CPUPerGB:
				x.verdict = verdictMet
			case g.CPUPerGB <= max(1.15*h.CPUPerGB, h.CPUPerGB+0.1):
				x.verdict = verdictNoise
			default:
				x.verdict = verdictShort
				x.why = framedWhy(g, h) + r.profileRef(profileKey("bulk", PathTdsgatePool, m, 0))
			}
		}
		gs = append(gs, x)
	}
	// Full TLS against a bare crypto/tls relay.
	b := r.bulk(PathBareTLS, ModeFullTLS, ClientRaw)
	for _, p := range []string{PathTdsgate, PathTdsgatePool} {
		g := r.bulk(p, ModeFullTLS, ClientRaw)
		if g == nil {
			continue
		}
		x := goal{name: fmt.Sprintf("full-TLS bulk CPU/GB ≤ 1.2× the bare crypto/tls relay's — %s full-tls", p)}
		if b != nil {
			x.known = true
			x.measured = fmt.Sprintf("%.2f vs %.2f CPU s/GB (%.2f×); %.0f vs %.0f MB/s%s", g.CPUPerGB, b.CPUPerGB, g.CPUPerGB/b.CPUPerGB, g.MBps, b.MBps, spreadNote(g, b))
			switch {
			case g.CPUPerGB <= 1.2*b.CPUPerGB:
				x.verdict = verdictMet
			case g.CPUPerGB <= max(1.35*b.CPUPerGB, 1.2*b.CPUPerGB+0.1):
				x.verdict = verdictNoise
			default:
				x.verdict = verdictShort
				x.why = fmt.Sprintf("Both decrypt every record from one leg and encrypt it for the other with crypto/tls (AES-GCM); the difference is what tdsgate does around the copy: %s.", map[bool]string{true: "the framed relay walks each record's packets and writes each chunk on, where the bare relay only copies", false: "its TLS relay copies with 32 KiB buffers like the bare one, so the difference is in reading (tdstls's read-ahead) and in the Go runtime's wake-ups"}[p == PathTdsgatePool]) + r.profileRef(profileKey("bulk", p, ModeFullTLS, 0))
			}
		}
		gs = append(gs, x)
	}
	return gs
}

func mbps(b *Bulk) string {
	if b == nil {
		return "—"
	}
	return fmt.Sprintf("%.0f MB/s", b.MBps)
}

// spreadNote gives the per-pass spread of two bulk rows' CPU per GB.
func spreadNote(g, ref *Bulk) string {
	if g.Passes < 2 || ref.Passes < 2 {
		return ""
	}
	return fmt.Sprintf(" (passes: %.2f–%.2f vs %.2f–%.2f CPU s/GB)", g.CPUPerGBMin, g.CPUPerGBMax, ref.CPUPerGBMin, ref.CPUPerGBMax)
}

func whyBulkFast(r *Report, g, h *Bulk) string {
	s := fmt.Sprintf("tdsgate splices a run as HAProxy does (splice.go: SIOCINQ, then (*net.TCPConn).ReadFrom of exactly the bytes queued: two splice(2) calls per wake-up), at the same or lower CPU per GB (%.2f vs %.2f), but 1.5× HAProxy's MB/s is not in reach of any relay here: one stream's MB/s is bound by the client, the stand-in and the kernel's loopback work sharing two cores with the relay.", g.CPUPerGB, h.CPUPerGB)
	if d := r.bulk(PathDirect, ModePlain, ClientRaw); d != nil && d.MBps < 2000 {
		s += fmt.Sprintf(" Direct reached only %.0f MB/s in this run, so the client and the stand-in, not the relays, bound the MB/s of both.", d.MBps)
	}
	if b := r.bulk(PathBare, ModePlain, ClientRaw); b != nil {
		s += fmt.Sprintf(" The bare Go io.Copy relay (the same splice without anything around it) did %.0f MB/s at %.2f CPU s/GB.", b.MBps, b.CPUPerGB)
	}
	return s
}
