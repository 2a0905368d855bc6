package frontend_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/route"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// FuzzHandshake drives a whole client session from bytes: one input is
// everything a client sends (PRELOGIN, TLS records, LOGIN7, batches, or
// garbage), written to a real loopback connection to a Handler, which
// then half-closes. The handler routes every login to a bucket, so a
// decodable LOGIN7 goes on through admission, the backend login, the
// login reply and the relay. The properties: no panic (a panic in a
// session kills the fuzz process), the client sees the end of the
// connection within a bound, the session ends, and its slot is given
// back.
//
// The bucket's backend is fuzzBackend, a TDS server in this file that
// logs in sa with the runbook's first password and answers every request
// with DONE. It is not the stand-in because the stand-in runs the
// relayed SQL: fuzzed batches reach its T-SQL translator, whose panics
// (it found one in a minute: "SELECT a,, b FROM t") kill the fuzz
// process and stop the run on a bug that is not the proxy's. Set
// TDSGATE_FUZZ_STANDIN=1 to fuzz through a real stand-in instead. Logins
// to database "closedport" go to a bucket whose backend port is closed.
//
// The seed corpus in testdata/fuzz/FuzzHandshake holds the real clients'
// first messages (pkg/tds/testdata/clientcap, as captured and with
// PRELOGIN ENCRYPTION rewritten to NOT_SUP so that their LOGIN7 is read
// in clear), valid PRELOGIN + LOGIN7 (+ SQL batch) inputs built with
// pkg/tds, TLS ClientHellos (inside PRELOGIN, and strict), and the
// hostile clients of TestHostileClients. Run it with
//
//	go test -run '^$' -fuzz '^FuzzHandshake$' -fuzztime 3m ./pkg/frontend/
func FuzzHandshake(f *testing.F) {
	env := newHandshakeEnv(f)
	f.Add(preloginPacket(0x02))
	f.Fuzz(func(t *testing.T, in []byte) {
		env.run(t, in)
	})
}

// fuzzLoginTimeout is the handler's login timeout in the fuzz target.
const fuzzLoginTimeout = 300 * time.Millisecond

// handshakeEnv is the per-process world of FuzzHandshake: a backend, a
// handler in front of it, and a loopback listener serving the handler.
type handshakeEnv struct {
	addr string
	h    *frontend.Handler
	lim  *limiter.Local
	// current counts the backend's live sessions.
	current func() int64
}

// fuzzRouter sends database "closedport" to the bucket of that name and
// every other login to "fuzz".
type fuzzRouter struct{}

func (fuzzRouter) Route(l route.Login) (string, int, bool) {
	if l.Database == "closedport" {
		return "closedport", 1, true
	}
	return "fuzz", 0, true
}

func newHandshakeEnv(tb testing.TB) *handshakeEnv {
	tb.Helper()
	env := &handshakeEnv{}
	var backendAddr string
	if os.Getenv("TDSGATE_FUZZ_STANDIN") != "" {
		std, err := server.Start(server.RunbookConfig(1, "127.0.0.1:0"), slog.New(slog.DiscardHandler))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { std.Close() })
		backendAddr, env.current = std.Addr(), func() int64 { return std.Stats().Current }
	} else {
		fb := startFuzzBackend(tb)
		backendAddr, env.current = fb.addr, fb.current.Load
	}
	// A port that was listening a moment ago and is closed now.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cert, err := certutil.SelfSigned("tdsgate-fuzz", "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	bucket := func(id, addr string) *frontend.Bucket {
		br := &backend.Breaker{
			Bucket: id, Failures: 1 << 30, ProbeInterval: time.Hour,
			Probe: func(context.Context) error { return nil },
		}
		tb.Cleanup(br.Close)
		return &frontend.Bucket{ID: id, Breaker: br, Target: &backend.Target{
			Bucket: id, Address: addr, Encryption: backend.EncryptNone,
			TLS: &tls.Config{InsecureSkipVerify: true}, DialTimeout: time.Second, LoginTimeout: 2 * time.Second,
		}}
	}
	rt := &frontend.Runtime{
		Settings: &frontend.Settings{
			ServerName:   frontend.DefaultServerName,
			LoginTimeout: fuzzLoginTimeout,
			Allowed: map[frontend.Mode]bool{
				frontend.ModeNone: true, frontend.ModeLogin: true, frontend.ModeFull: true, frontend.ModeStrict: true,
			},
			TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			// The front door's limits are on: the per-source count must
			// come back to zero after every input (held), and the idle
			// watch must never outlive its session.
			MaxPendingPerSource: 4,
			ClientIdleTimeout:   2 * time.Second,
		},
		Router:  fuzzRouter{},
		Buckets: map[string]*frontend.Bucket{"fuzz": bucket("fuzz", backendAddr), "closedport": bucket("closedport", closedAddr)},
	}
	env.lim = limiter.NewLocal([]limiter.BucketConfig{
		{ID: "fuzz", MaxConnections: 1000, MaxQueueSize: 10, QueueTimeout: time.Second},
		{ID: "closedport", MaxConnections: 1000, MaxQueueSize: 10, QueueTimeout: time.Second},
	})
	tb.Cleanup(func() { env.lim.Close() })
	env.h = frontend.NewHandler(rt, env.lim, testenv.Logger(), nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	env.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go env.h.Serve(context.Background(), c)
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
		env.h.CloseAll()
		env.h.Wait()
	})
	return env
}

// Bounds of one fuzz input.
const (
	// fuzzAnswerBound bounds the wait for the proxy to end the
	// connection. The client has half-closed, so every read of the proxy
	// ends at once; the login timeout (300 ms), the backend's dial and
	// login timeouts (1 s, 2 s) and the backend's own work are the most
	// any input can legitimately cost.
	fuzzAnswerBound = 10 * time.Second
	// fuzzSessionBound bounds the end of the session after the client has
	// seen the end of the connection.
	fuzzSessionBound = 5 * time.Second
)

func (e *handshakeEnv) run(t *testing.T, in []byte) {
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	start := time.Now()
	tc.SetDeadline(start.Add(fuzzAnswerBound))

	// Write and read at once: an input full of batches can fill both
	// directions' buffers.
	wrote := make(chan error, 1)
	go func() {
		_, err := tc.Write(in)
		tc.CloseWrite()
		wrote <- err
	}()
	n, err := io.Copy(io.Discard, tc)
	werr := <-wrote
	switch {
	case err == nil, errors.Is(err, syscall.ECONNRESET):
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("the proxy did not end the connection within %v (read %d bytes; write: %v)", fuzzAnswerBound, n, werr)
	default:
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if werr != nil && !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("write: %v", werr)
	}
	c.Close()

	end := time.Now().Add(fuzzSessionBound)
	for {
		msg := e.held()
		if msg == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%v after the client saw the end of the connection: %s", fuzzSessionBound, msg)
		}
		time.Sleep(time.Millisecond)
	}
}

// held reports what the input's session still holds, or "". Inputs run
// one at a time in a fuzz process, so anything held is this input's.
func (e *handshakeEnv) held() string {
	if n := e.h.Active(); n != 0 {
		return fmt.Sprintf("%d sessions still active", n)
	}
	if n := e.h.Pending(netip.MustParseAddr("127.0.0.1")); n != 0 {
		return fmt.Sprintf("%d connections still pending for 127.0.0.1", n)
	}
	for _, b := range e.lim.Snapshot() {
		if b.InUse != 0 || b.Queued != 0 {
			return fmt.Sprintf("bucket %s: %d slots in use, %d queued", b.Bucket, b.InUse, b.Queued)
		}
	}
	if n := e.current(); n != 0 {
		return fmt.Sprintf("the backend still has %d sessions", n)
	}
	return ""
}

// fuzzBackend is the smallest SQL Server the proxy can log in to:
// PRELOGIN answered with ENCRYPT_NOT_SUP, LOGIN7 accepted for sa with
// testenv.Passwords[0] (LOGINACK, packet size, DONE) and refused with
// 18456 otherwise, then every request message answered with a DONE
// (DONE_ATTN for an ATTENTION) until the proxy closes its write half.
type fuzzBackend struct {
	addr    string
	current atomic.Int64
}

func startFuzzBackend(tb testing.TB) *fuzzBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &fuzzBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.serve(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

func (b *fuzzBackend) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := tds.NewMessageReader(c, tds.MaxPacketSize, tds.MaxLogin7Len)
	m, err := r.ReadMessage()
	if err != nil || m.Type != tds.PacketPrelogin {
		return
	}
	p := &tds.Prelogin{}
	p.SetVersion(tds.Version{Major: 16, Build: 1000})
	p.SetEncryption(tds.EncryptNotSup)
	p.Set(tds.PLInstOpt, []byte{0})
	p.Set(tds.PLThreadID, nil)
	p.Set(tds.PLMARS, []byte{0})
	if _, err := c.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, p.Append(nil))); err != nil {
		return
	}
	if m, err = r.ReadMessage(); err != nil || m.Type != tds.PacketLogin7 {
		return
	}
	l, err := tds.ParseLogin7(m.Data)
	if err != nil {
		return
	}
	v := l.TDSVersion
	if l.UserName != "sa" || l.Password != testenv.Passwords[0] {
		c.Write(tds.LoginFailureMessage(tds.ErrNumLoginFailed, 1, 14, "Login failed for user '"+l.UserName+"'.", "fuzzbackend", v, tds.DefaultPacketSize))
		return
	}
	b.current.Add(1)
	defer b.current.Add(-1)
	ok := tds.AppendLoginAck(nil, &tds.LoginAck{Interface: 1, TDSVersion: v, ProgName: "fuzzbackend", ProgVer: [4]byte{16, 0, 3, 232}})
	ok = tds.AppendEnvChange(ok, tds.EnvPacketSizeChange(tds.DefaultPacketSize, tds.DefaultPacketSize))
	ok = tds.AppendDone(ok, tds.TokenDone, tds.Done{}, v)
	if _, err := c.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 51, 1, tds.DefaultPacketSize, ok)); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	r = tds.NewMessageReader(c, tds.DefaultPacketSize, 0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		d := tds.Done{}
		if m.Type == tds.PacketAttention {
			d.Status = tds.DoneAttn
		}
		if _, err := c.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 51, 1, tds.DefaultPacketSize, tds.AppendDone(nil, tds.TokenDone, d, v))); err != nil {
			return
		}
	}
}
