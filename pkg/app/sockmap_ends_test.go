package app_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
	"golang.org/x/sys/unix"
)

// TestSockmapClientEnds: the client leg ends abruptly in the middle of a
// large answer the kernel is relaying: a reset (SO_LINGER 0), or a close
// right after sending the query, before any answer (its FIN, then the
// client's kernel resets the answer's first segment). Either way the
// session ends, the backend leg is closed (the stand-in's own session
// count is back to 0), the slot comes back and the map is empty.
func TestSockmapClientEnds(t *testing.T) {
	for _, how := range []string{"reset", "close"} {
		t.Run(how, func(t *testing.T) {
			std := testenv.Buckets(t, 1, nil)
			a, c := sockmapSession(t, testenv.Config(t, std))
			if got := std[0].Stats().Current; got != 1 {
				t.Fatalf("stand-in sessions %d, want 1", got)
			}
			if err := c.Send("SELECT value, CAST(REPLICATE('x', 8000) AS VARCHAR(8000)) FROM generate_series(1, 8000)", 0); err != nil {
				t.Fatal(err)
			}
			nc := c.NetConn().(*net.TCPConn)
			if how == "reset" {
				// Part of the answer first: the kernel is relaying it.
				buf := make([]byte, 64<<10)
				if _, err := nc.Read(buf); err != nil {
					t.Fatal(err)
				}
				nc.SetLinger(0)
			}
			nc.Close()
			sockmapSettled(t, a)
			deadline := time.Now().Add(10 * time.Second)
			for std[0].Stats().Current != 0 || a.Limiter().Snapshot()[0].InUse != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("10 s after the session ended: stand-in sessions %d, slots in use %d; want 0 and 0",
						std[0].Stats().Current, a.Limiter().Snapshot()[0].InUse)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if n := a.Handler().Relayed(relay.ModeSockmap); n != 1 {
				t.Errorf("%d sessions relayed by sockmap, want 1", n)
			}
		})
	}
}

// TestSockmapIdleSessionsHoldNoGoroutine: 200 idle logged-in sessions
// relayed in the kernel hold no goroutine of the proxy's (frontend or
// relay code) beyond the one end watcher they all share; each still
// answers afterwards.
func TestSockmapIdleSessionsHoldNoGoroutine(t *testing.T) {
	const n = 200
	cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
	cfg.Relay = config.RelaySockmap
	cfg.Buckets[0].MaxConnections = n
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	proxyGoroutines := func() (n int, sample string) {
		buf := make([]byte, 64<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "tdsgate/pkg/frontend.") || strings.Contains(g, "tdsgate/pkg/relay.") {
				n++
				sample = g
			}
		}
		return n, sample
	}
	g0, _ := proxyGoroutines()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := make([]*tdsclient.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := dialBucket1(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Exec("SELECT 1", 0); err != nil {
			t.Fatal(err)
		}
	}
	var g int
	var sample string
	for range 200 {
		if g, sample = proxyGoroutines(); g-g0 <= 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g-g0 > 1 {
		t.Errorf("%d idle sessions relayed in the kernel hold %d proxy goroutines, want at most 1 (the shared end watcher); one:\n%s", n, g-g0, sample)
	}
	for _, c := range conns {
		if r, err := c.Exec("SELECT 2", 0); err != nil || len(r.Rows) != 1 {
			t.Fatalf("SELECT 2 after idling: %v %v", r, err)
		}
		c.Close()
	}
	conns = nil
	sockmapSettled(t, a)
	if got := a.Handler().Relayed(relay.ModeSockmap); got != n {
		t.Errorf("%d sessions relayed by sockmap, want %d", got, n)
	}
}

// sockmapSession starts cfg with relay: sockmap and returns a session
// through it that has run SELECT 1 (closed when the test ends).
func sockmapSession(t *testing.T, cfg *config.Config) (*app.App, *tdsclient.Conn) {
	t.Helper()
	cfg.Relay = config.RelaySockmap
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	c := selectOnce(t, a)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return a, c
}

// selectOnce logs in through a and runs SELECT 1.
func selectOnce(t *testing.T, a *app.App) *tdsclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := c.Exec("SELECT 1", 0); err != nil || len(r.Rows) != 1 {
		t.Fatalf("SELECT 1: %v %v", r, err)
	}
	return c
}

// TestSockmapFallbackNoProgram: relay: sockmap where the program cannot
// load (here: its loader runs on a thread without CAP_BPF and
// CAP_NET_ADMIN). The proxy logs one warning, whatever the number of
// sessions, and relays them with splice.
func TestSockmapFallbackNoProgram(t *testing.T) {
	defer app.SetOpenSockmap(func(log *slog.Logger) *ebpf.Sockmap {
		got := make(chan *ebpf.Sockmap, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				got <- nil
				return
			}
			data[0].Effective, data[1].Effective = 0, 0
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				got <- nil
				return
			}
			got <- ebpf.NewSockmap(16, log)
		}()
		return <-got
	})()
	cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
	cfg.Relay = config.RelaySockmap
	a, logs := startLogged(t, cfg)
	if a.Sockmap() != nil {
		t.Fatal("the sockmap relay loaded without capabilities")
	}
	for range 3 {
		selectOnce(t, a).Close()
	}
	h := a.Handler()
	testenv.WaitUntil(t, func() bool { return h.Active() == 0 })
	if s, k := h.Relayed(relay.ModeSplice), h.Relayed(relay.ModeSockmap); s != 3 || k != 0 {
		t.Errorf("relayed: splice %d, sockmap %d; want 3 and 0", s, k)
	}
	if w := logs.lines("sockmap relay unavailable"); len(w) != 1 || !strings.Contains(w[0], "level=WARN") || !strings.Contains(w[0], "CAP_BPF") {
		t.Errorf("warnings: %q; want one, naming CAP_BPF", w)
	}
}

// TestSockmapFallbackMapFull: a map with room for one session: the
// second session, while the first holds it, is relayed with splice (and
// logged so); both answer, and the map is empty at the end.
func TestSockmapFallbackMapFull(t *testing.T) {
	defer app.SetOpenSockmap(func(log *slog.Logger) *ebpf.Sockmap { return ebpf.NewSockmap(1, log) })()
	cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
	cfg.Relay = config.RelaySockmap
	a, logs := startLogged(t, cfg)
	requireSockmap(t, a)
	c1 := selectOnce(t, a)
	c2 := selectOnce(t, a)
	for _, c := range []*tdsclient.Conn{c1, c2} {
		if r, err := c.Exec("SELECT 2", 0); err != nil || len(r.Rows) != 1 {
			t.Fatalf("SELECT 2: %v %v", r, err)
		}
	}
	if n := a.Sockmap().Len(); n != 2 {
		t.Errorf("map holds %d entries, want the first session's 2", n)
	}
	c1.Close()
	c2.Close()
	sockmapSettled(t, a)
	h := a.Handler()
	if s, k := h.Relayed(relay.ModeSplice), h.Relayed(relay.ModeSockmap); s != 1 || k != 1 {
		t.Errorf("relayed: splice %d, sockmap %d; want 1 and 1", s, k)
	}
	if l := logs.lines("relayed with splice"); len(l) != 1 || !strings.Contains(l[0], ebpf.ErrSockmapFull.Error()) {
		t.Errorf("log: %q; want one line naming the full map", l)
	}
	// The freed room takes the next session.
	selectOnce(t, a).Close()
	sockmapSettled(t, a)
	if k := h.Relayed(relay.ModeSockmap); k != 2 {
		t.Errorf("after the first left: %d sessions relayed by sockmap, want 2", k)
	}
}

// TestSockmapCountsMatchSplice: the same session (two queries, then the
// client closes) through a splicing proxy and a sockmap proxy in front of
// the same stand-in counts the same bytes each way in
// proxy_relay_bytes_total: TCP_INFO's counts, less the FINs, are the
// relayed bytes splice counts.
func TestSockmapCountsMatchSplice(t *testing.T) {
	std := testenv.Buckets(t, 1, nil)
	counts := map[config.RelayMode][2]float64{}
	for _, mode := range []config.RelayMode{config.RelaySplice, config.RelaySockmap} {
		cfg := testenv.Config(t, std)
		cfg.Relay = mode
		cfg.MetricsListen = "127.0.0.1:0"
		a := testenv.Proxy(t, cfg)
		c := selectOnce(t, a)
		if r, err := c.Exec("SELECT value FROM generate_series(1, 5000)", 0); err != nil || len(r.Rows) != 5000 {
			t.Fatalf("%s: %v %v", mode, r, err)
		}
		c.Close()
		testenv.WaitUntil(t, func() bool { return a.Handler().Active() == 0 })
		m := scrapeMetrics(t, a)
		counts[mode] = [2]float64{
			m[`proxy_relay_bytes_total{direction="client_to_server",mode="`+string(mode)+`"}`],
			m[`proxy_relay_bytes_total{direction="server_to_client",mode="`+string(mode)+`"}`],
		}
	}
	s, k := counts[config.RelaySplice], counts[config.RelaySockmap]
	if s[0] == 0 || s[1] < 5000 || s != k {
		t.Errorf("bytes client→server, server→client: splice %v, sockmap %v; want equal and non-zero", s, k)
	}
}

// TestSockmapShed: ShedSessions (redis.lease_loss close) reaches sessions
// that hold no goroutine in the kernel relay: of 3, the 2 newest are
// closed (their clients see the end, the stand-in's count drops to 1, the
// map keeps only the oldest's entries), and the oldest still answers.
func TestSockmapShed(t *testing.T) {
	std := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, std)
	cfg.Relay = config.RelaySockmap
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	var conns []*tdsclient.Conn
	for range 3 {
		c := selectOnce(t, a)
		defer c.Close()
		conns = append(conns, c)
		time.Sleep(5 * time.Millisecond) // distinct start times: newest first
	}
	if n := a.Handler().ShedSessions("bucket-001", 1); n != 2 {
		t.Fatalf("shed %d sessions, want 2", n)
	}
	for _, c := range conns[1:] {
		c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || err == nil || isTimeoutErr(err) {
			t.Fatalf("shed client: read %d, %v; want its connection ended", n, err)
		}
	}
	testenv.WaitUntil(t, func() bool {
		return std[0].Stats().Current == 1 && a.Sockmap().Len() == 2 && a.Limiter().Snapshot()[0].InUse == 1
	})
	if r, err := conns[0].Exec("SELECT 2", 0); err != nil || len(r.Rows) != 1 {
		t.Fatalf("the oldest session after the shed: %v %v", r, err)
	}
	conns[0].Close()
	sockmapSettled(t, a)
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestSockmapKeepsOtherRelays: with relay: sockmap, a session encrypted
// end to end keeps the TLS relay and a pooled session the framed relay;
// neither enters the map, and both answer.
func TestSockmapKeepsOtherRelays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pooled bool
		enc    string
		want   relay.Mode
	}{{"tls", false, tdsclient.EncryptFull, relay.ModeTLS}, {"pooled", true, tdsclient.EncryptLogin, relay.ModeFramed}} {
		t.Run(tc.name, func(t *testing.T) {
			std := testenv.Buckets(t, 1, nil)
			cfg := testenv.Config(t, std)
			if tc.pooled {
				cfg = pooledConfig(t, std)
			}
			cfg.Relay = config.RelaySockmap
			a := testenv.Proxy(t, cfg)
			requireSockmap(t, a)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := tdsclient.Dial(ctx, tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
				Database: "tenant_db", Encrypt: tc.enc, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := c.Exec("SELECT 1", 0); err != nil || len(r.Rows) != 1 {
				t.Fatalf("SELECT 1: %v %v", r, err)
			}
			if n := a.Sockmap().Len(); n != 0 {
				t.Errorf("map holds %d entries during a %s session", n, tc.name)
			}
			c.Close()
			sockmapSettled(t, a)
			h := a.Handler()
			if got, k := h.Relayed(tc.want), h.Relayed(relay.ModeSockmap); got != 1 || k != 0 {
				t.Errorf("relayed: %s %d, sockmap %d; want 1 and 0", tc.want, got, k)
			}
		})
	}
}
