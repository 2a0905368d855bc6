package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// The sockmap tests run sessions through relay: sockmap and check that
// they really took the kernel path (the handler's per-mode count, the
// verdict program's counters) and that the kernel map is empty after.
// They need root (CAP_BPF and CAP_NET_ADMIN), as CI has; they fail, not
// skip, without it.

// requireSockmap fails the test when a did not load the sockmap relay.
func requireSockmap(t *testing.T, a *app.App) {
	t.Helper()
	if a.Sockmap() == nil {
		t.Fatal("relay: sockmap did not load (see the log's warning): run the test as root (CAP_BPF and CAP_NET_ADMIN) on Linux with sockhash support")
	}
}

// sockmapSettled waits until a has no session left and its kernel map is
// empty, and checks that the verdict program found every peer (missed 0).
func sockmapSettled(t *testing.T, a *app.App) {
	t.Helper()
	testenv.WaitUntil(t, func() bool { return a.Handler().Active() == 0 && a.Sockmap().Len() == 0 })
	if _, missed := a.Sockmap().Stats(); missed != 0 {
		t.Errorf("the verdict program found no peer for %d segments", missed)
	}
}

// TestSockmapRunbook: the runbook's CRUD and transaction steps with every
// real client, 3 buckets, all relayed in the kernel. A segment redirected
// to the wrong socket would land in another client's session (another
// bucket's answer) or break the TDS stream, and fail the runbook.
func TestSockmapRunbook(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 3, nil)
	cfg := testenv.Config(t, buckets)
	cfg.Relay = config.RelaySockmap
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	r0, _ := a.Sockmap().Stats()
	runRunbook(t, a, buckets)
	sockmapSettled(t, a)
	want := int64(len(clients.All) * len(buckets))
	h := a.Handler()
	if got := h.Relayed(relay.ModeSockmap); got != want {
		t.Errorf("%d sessions relayed by sockmap, want %d (splice %d, tls %d)", got, want, h.Relayed(relay.ModeSplice), h.Relayed(relay.ModeTLS))
	}
	if r1, _ := a.Sockmap().Stats(); r1 <= r0 {
		t.Errorf("the verdict program redirected nothing (%d → %d)", r0, r1)
	}
}

// streamHash runs query on c and returns the bytes and the SHA-256 of the
// answer's packet payloads (headers left out: their SPID differs).
func streamHash(t *testing.T, c *tdsclient.Conn, query string) (int64, []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	if err := c.Send(query, 0); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var n int64
	if err := c.StreamPackets(func(_ tds.Header, p []byte) error {
		n += int64(len(p))
		h.Write(p)
		return nil
	}); err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	return n, h.Sum(nil)
}

// TestSockmapLargeResult: a 256 MB result through the kernel relay is
// byte for byte the one the stand-in sends directly (SHA-256 of every
// packet payload), and the session's bytes reach the log line and
// proxy_relay_bytes_total / proxy_sessions_total under mode="sockmap".
func TestSockmapLargeResult(t *testing.T) {
	const rows = 256 << 20 / 8000 // 8000-byte rows: 256 MB
	query := fmt.Sprintf("SELECT value, CAST(REPLICATE('x', 8000) AS VARCHAR(8000)) AS pad FROM generate_series(1, %d)", rows)
	cfg := observedConfig(t, 1)
	cfg.Relay = config.RelaySockmap
	cfg.Buckets[0].Encryption, cfg.Buckets[0].TrustServerCertificate = config.EncryptionNone, false
	a, logs := startLogged(t, cfg)
	requireSockmap(t, a)
	// Each login has its own 10 s (opts.Timeout): one deadline for both
	// ran out during the direct 256 MB stream on a loaded machine, and
	// the login through the proxy failed with "i/o timeout".
	opts := tdsclient.Options{User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", Timeout: 10 * time.Second}

	opts.Addr = cfg.Buckets[0].Address
	direct, err := tdsclient.Dial(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantN, want := streamHash(t, direct, query)
	direct.Close()

	opts.Addr = a.Addr()
	c, err := tdsclient.Dial(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	gotN, got := streamHash(t, c, query)
	t.Logf("%d MB through the sockmap relay in %v", gotN>>20, time.Since(start).Round(time.Millisecond))
	c.Close()
	if wantN < 256<<20 || gotN != wantN || !bytes.Equal(got, want) {
		t.Fatalf("through the proxy: %d bytes, sha256 %x; direct: %d bytes, sha256 %x", gotN, got, wantN, want)
	}
	sockmapSettled(t, a)
	if n := a.Handler().Relayed(relay.ModeSockmap); n != 1 {
		t.Errorf("%d sessions relayed by sockmap, want 1", n)
	}
	m := scrapeMetrics(t, a)
	if v := m[`proxy_sessions_total{mode="sockmap"}`]; v != 1 {
		t.Errorf(`proxy_sessions_total{mode="sockmap"} = %v, want 1`, v)
	}
	// Wire bytes: the payload plus an 8-byte header per packet.
	if v := m[`proxy_relay_bytes_total{direction="server_to_client",mode="sockmap"}`]; v < float64(gotN) || v > float64(gotN)*1.01 {
		t.Errorf(`proxy_relay_bytes_total{direction="server_to_client",mode="sockmap"} = %v, want the %d payload bytes plus headers`, v, gotN)
	}
	if v := m[`proxy_relay_bytes_total{direction="client_to_server",mode="sockmap"}`]; v <= 0 || v > 4096 {
		t.Errorf(`proxy_relay_bytes_total{direction="client_to_server",mode="sockmap"} = %v, want the query's bytes`, v)
	}
	if lines := logs.lines("relay_mode=sockmap"); len(lines) != 1 || !strings.Contains(lines[0], "session closed") || strings.Contains(lines[0], "bytes_out=0 ") {
		t.Errorf("session closed log lines with relay_mode=sockmap: %q", lines)
	}
}

// TestSockmapClientHalfClose: the client sends a query and half-closes at
// once; the whole answer still reaches it, then the end.
func TestSockmapClientHalfClose(t *testing.T) {
	cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
	cfg.Relay = config.RelaySockmap
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.Send("SELECT value FROM generate_series(1, 20000)", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Read()
	if err != nil || len(res.Rows) != 20000 || fmt.Sprint(res.Rows[19999][0]) != "20000" {
		t.Fatalf("answer after the client's half-close: %v rows, err %v", func() int {
			if res == nil {
				return -1
			}
			return len(res.Rows)
		}(), err)
	}
	if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("after the answer: %d bytes, %v; want EOF", n, err)
	}
	sockmapSettled(t, a)
	if n := a.Handler().Relayed(relay.ModeSockmap); n != 1 {
		t.Errorf("%d sessions relayed by sockmap, want 1", n)
	}
}

// forwarder is a TCP relay between the proxy and a stand-in, so that a
// test can half-close or reset the backend leg from the server's side.
type forwarder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	legs   []*net.TCPConn // the proxy-facing ends, in accept order
	// got collects what the proxy sent after ignoreBefore was set.
	got bytes.Buffer
}

func newForwarder(t *testing.T, target string) *forwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.legs {
			c.Close()
		}
		f.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.legs = append(f.legs, c.(*net.TCPConn))
			f.mu.Unlock()
			go func() { io.Copy(b, io.TeeReader(c, lockedWriter{&f.mu, &f.got})); b.Close() }()
			go func() { io.Copy(c, b); c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	return f
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (f *forwarder) leg(t *testing.T) *net.TCPConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.legs) != 1 {
		t.Fatalf("forwarder has %d connections, want 1", len(f.legs))
	}
	return f.legs[0]
}

func (f *forwarder) received() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.got.Bytes()...)
}

// TestSockmapServerEnds: the backend leg ends from the server's side. A
// half-close reaches the client as EOF while the client's bytes still
// reach the server; a reset closes the client at once; an abrupt close
// reaches the client as EOF, and what it sends after is refused. Every
// way the slot comes back and the map is empty.
func TestSockmapServerEnds(t *testing.T) {
	for _, how := range []string{"half-close", "reset", "close"} {
		t.Run(how, func(t *testing.T) {
			std := testenv.Buckets(t, 1, nil)
			f := newForwarder(t, std[0].Addr())
			cfg := testenv.Config(t, std)
			cfg.Buckets[0].Address = f.ln.Addr().String()
			a, c := sockmapSession(t, cfg)
			leg := f.leg(t)
			before := len(f.received())
			switch how {
			case "reset":
				leg.SetLinger(0)
				leg.Close()
				if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || err == nil {
					t.Fatalf("client after the server's reset: %d bytes, %v; want the connection closed", n, err)
				}
			case "close":
				// Gone without a word: FIN, and a reset for anything
				// sent after it.
				leg.Close()
				if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("client after the server's close: %d bytes, %v; want EOF", n, err)
				}
				c.NetConn().Write([]byte("into a closed server"))
				c.Close()
			default:
				leg.CloseWrite()
				if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("client after the server's half-close: %d bytes, %v; want EOF", n, err)
				}
				// The other direction still flows.
				msg := []byte("after the server's FIN")
				if _, err := c.NetConn().Write(msg); err != nil {
					t.Fatal(err)
				}
				testenv.WaitUntil(t, func() bool { return bytes.HasSuffix(f.received()[before:], msg) })
				c.Close()
				leg.Close()
			}
			sockmapSettled(t, a)
			testenv.WaitUntil(t, func() bool { return a.Limiter().Snapshot()[0].InUse == 0 })
			if n := a.Handler().Relayed(relay.ModeSockmap); n != 1 {
				t.Errorf("%d sessions relayed by sockmap, want 1", n)
			}
		})
	}
}

// TestSockmapChurn: TestNoLeaks' 10,000 sessions (500 at a time, a quarter
// of them abrupt: half logins, resets, closes without reading) through the
// kernel relay with the eBPF tracker on. Afterwards goroutines, fds and
// slots are back at the baseline, the map is empty, and the tracker counts
// no backend connection the limiter does not (drift 0).
func TestSockmapChurn(t *testing.T) {
	requireEBPF(t)
	a := runNoLeaks(t, func(cfg *config.Config) {
		cfg.Relay = config.RelaySockmap
		cfg.EBPF.Enabled = true
		cfg.MetricsListen = "127.0.0.1:0"
	})
	if t.Failed() {
		return
	}
	requireSockmap(t, a)
	sockmapSettled(t, a)
	h := a.Handler()
	// Every session whose client was still there at its login reply used
	// the kernel: the 500 of the warm-up, the 7,500 normal ones and the
	// 714 whose batch went unread or was reset. Only the 714 clients that
	// reset or closed right after LOGIN7 may fall back to splice (their
	// FIN or RST arrives around the join, which then refuses) or end
	// before any relay.
	if n, s := h.Relayed(relay.ModeSockmap), h.Relayed(relay.ModeSplice); n < 8000+714 || s > 714 {
		t.Errorf("relayed: sockmap %d (want ≥ %d), splice %d (want ≤ 714)", n, 8000+714, s)
	}
	waitEBPF(t, a, "bucket-001", 0, 0)
}

// TestSockmapDrain: TestDrain through the kernel relay. The lingering
// session's Run is stopped when the drain deadline closes its sockets
// (which wake nothing in the kernel relay), so Shutdown returns.
func TestSockmapDrain(t *testing.T) {
	requireEBPF(t)
	a := runDrain(t, func(cfg *config.Config) { cfg.Relay = config.RelaySockmap })
	if n := a.Handler().Relayed(relay.ModeSockmap); n != 2 {
		t.Errorf("%d sessions relayed by sockmap, want 2", n)
	}
}

// TestSockmapWithClientIdleTimeout: with client_idle_timeout set, a
// plaintext session splices instead of joining the kernel relay (the idle
// check reads the client socket), and the idle timeout still closes it.
func TestSockmapWithClientIdleTimeout(t *testing.T) {
	cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
	cfg.Relay = config.RelaySockmap
	cfg.ClientIdleTimeout = 500 * time.Millisecond
	a := testenv.Proxy(t, cfg)
	requireSockmap(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Exec("SELECT 1", 0); err != nil {
		t.Fatal(err)
	}
	c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if n, err := c.NetConn().Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("idle client: read %d bytes, %v; want the proxy to close it", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle client closed after %v, client_idle_timeout 500ms", d)
	}
	sockmapSettled(t, a)
	if n, s := a.Handler().Relayed(relay.ModeSockmap), a.Handler().Relayed(relay.ModeSplice); n != 0 || s != 1 {
		t.Errorf("relayed: sockmap %d, splice %d; want 0 and 1", n, s)
	}
}
