package tdstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// packet is one TDS packet parsed from recorded bytes.
type packet struct {
	h       tds.Header
	payload []byte
}

// parseFlight parses PRELOGIN packets from the start of b up to and
// including the first EOM packet; it returns them and what follows.
func parseFlight(t *testing.T, b []byte, packetSize int) ([]packet, []byte) {
	t.Helper()
	var ps []packet
	for {
		h, err := tds.ParseHeader(b, packetSize)
		if err != nil {
			t.Fatalf("packet %d: %v (bytes % x)", len(ps), err, b[:min(len(b), 16)])
		}
		if h.Type != tds.PacketPrelogin {
			t.Fatalf("packet %d: type 0x%02x, want 0x12", len(ps), uint8(h.Type))
		}
		if int(h.Length) > len(b) {
			t.Fatalf("packet %d: length %d, only %d bytes recorded", len(ps), h.Length, len(b))
		}
		ps = append(ps, packet{h, b[tds.HeaderLen:h.Length]})
		b = b[h.Length:]
		if h.EOM() {
			return ps, b
		}
	}
}

func joinPayloads(ps []packet) []byte {
	var out []byte
	for _, p := range ps {
		out = append(out, p.payload...)
	}
	return out
}

// exchange writes msg on w and reads it back on r, concurrently.
func exchange(t *testing.T, w io.Writer, r io.Reader, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes differing from the %d sent", len(got), len(msg))
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func TestFullSession(t *testing.T) {
	tc := ecdsaCert(t)
	p := handshakePair(t, serverConfig(tc), clientConfig(tc), 0)

	for _, c := range []*tls.Conn{p.cli, p.srv} {
		st := c.ConnectionState()
		if st.Version != tls.VersionTLS12 {
			t.Errorf("version %s, want TLS 1.2 in wrapped mode", tls.VersionName(st.Version))
		}
		if st.DidResume {
			t.Error("session resumed")
		}
	}
	handshakeCli := len(p.cliRec.Bytes())
	handshakeSrv := len(p.srvRec.Bytes())

	// Small messages in exact-record mode, both directions.
	exchange(t, p.cli, p.srv, []byte("client to server"))
	exchange(t, p.srv, p.cli, []byte("server to client"))

	// After the handshake, TLS records travel raw: no TDS header around them.
	cw := p.cliRec.Bytes()[handshakeCli:]
	sw := p.srvRec.Bytes()[handshakeSrv:]
	for name, b := range map[string][]byte{"client": cw, "server": sw} {
		if len(b) < 5 || b[0] != 0x17 || b[1] != 0x03 || b[2] != 0x03 {
			t.Errorf("%s: after the handshake, wrote % x; want a raw TLS 1.2 application_data record", name, b[:min(len(b), 8)])
		}
	}

	// Large, concurrent, both directions, with read-ahead on.
	if err := AllowReadAhead(p.cli); err != nil {
		t.Fatal(err)
	}
	if err := AllowReadAhead(p.srv); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); exchange(t, p.cli, p.srv, pattern(300_000, 1)) }()
	go func() { defer wg.Done(); exchange(t, p.srv, p.cli, pattern(200_000, 2)) }()
	wg.Wait()

	// Close sends close_notify; the peer sees EOF.
	if err := p.cli.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read after client close: %v, want EOF", err)
	}
}

func TestHandshakeIsWrapped(t *testing.T) {
	tc := ecdsaCert(t)
	p := handshakePair(t, serverConfig(tc), clientConfig(tc), 0)

	cw := p.cliRec.Bytes()
	if len(cw) < tds.HeaderLen+6 {
		t.Fatalf("client wrote only %d bytes", len(cw))
	}
	if cw[0] != 0x12 {
		t.Fatalf("first byte 0x%02x, want PRELOGIN 0x12", cw[0])
	}
	// Client flights: ClientHello; then ClientKeyExchange+CCS+Finished.
	hello, rest := parseFlight(t, cw, tds.DefaultPacketSize)
	pl := joinPayloads(hello)
	if pl[0] != 0x16 || pl[1] != 0x03 || pl[5] != 0x01 {
		t.Fatalf("first payload % x, want a TLS handshake record holding a ClientHello", pl[:6])
	}
	if !LooksLikeTLSClientHello(pl) {
		t.Fatal("LooksLikeTLSClientHello false on the wrapped ClientHello")
	}
	if LooksLikeTLSClientHello(cw) {
		t.Fatal("LooksLikeTLSClientHello true on a PRELOGIN packet")
	}
	fin, rest := parseFlight(t, rest, tds.DefaultPacketSize)
	pl = joinPayloads(fin)
	if pl[0] != 0x16 || pl[5] != 0x10 {
		t.Fatalf("second client flight starts % x, want ClientKeyExchange (0x10)", pl[:6])
	}
	if !bytes.Contains(pl, []byte{0x14, 0x03, 0x03, 0x00, 0x01, 0x01}) {
		t.Fatal("second client flight has no ChangeCipherSpec")
	}
	if len(rest) != 0 {
		t.Fatalf("%d client bytes after its last flight", len(rest))
	}

	// Server flights: ServerHello..Done; then CCS+Finished.
	sw := p.srvRec.Bytes()
	first, rest := parseFlight(t, sw, tds.DefaultPacketSize)
	pl = joinPayloads(first)
	if pl[0] != 0x16 || pl[5] != 0x02 {
		t.Fatalf("server flight starts % x, want ServerHello (0x02)", pl[:6])
	}
	last, rest := parseFlight(t, rest, tds.DefaultPacketSize)
	if pl = joinPayloads(last); pl[0] != 0x14 {
		t.Fatalf("last server flight starts % x, want ChangeCipherSpec", pl[:6])
	}
	if len(rest) != 0 {
		t.Fatalf("%d server bytes after its last flight", len(rest))
	}
	for _, ps := range [][]packet{hello, fin, first, last} {
		if len(ps) != 1 || ps[0].h.Status != tds.StatusEOM {
			t.Fatalf("flight of %d packets, status 0x%02x: want one EOM packet at 4096", len(ps), ps[0].h.Status)
		}
	}
}

// TestLoginOnly follows ENCRYPTION=OFF: LOGIN7 through TLS, then plaintext
// on raw both ways. The client pipelines plaintext right behind its LOGIN7,
// so a server that read ahead on raw would lose it.
func TestLoginOnly(t *testing.T) {
	tc := ecdsaCert(t)
	p := handshakePair(t, serverConfig(tc), clientConfig(tc), 0)

	// A two-packet LOGIN7 message (6000 bytes at packet size 4096), each
	// packet in its own TLS write, as a TDS client writes them.
	login := tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, pattern(6000, 9))
	for len(login) > 0 {
		h, err := tds.ParseHeader(login, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.cli.Write(login[:h.Length]); err != nil {
			t.Fatal(err)
		}
		login = login[h.Length:]
	}
	cliRaw, err := Detach(p.cli)
	if err != nil {
		t.Fatal(err)
	}
	if cliRaw != p.cliRec {
		t.Fatal("Detach returned another conn than raw")
	}
	afterLogin := []byte("plaintext right behind the LOGIN7")
	if _, err := cliRaw.Write(afterLogin); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let it all arrive before the server reads

	msg, err := tds.NewMessageReader(p.srv, tds.DefaultPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != tds.PacketLogin7 || msg.Packets != 2 || !bytes.Equal(msg.Data, pattern(6000, 9)) {
		t.Fatalf("LOGIN7 through TLS: type 0x%02x, %d packets, %d bytes", uint8(msg.Type), msg.Packets, len(msg.Data))
	}
	srvRaw, err := Detach(p.srv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.Read(make([]byte, 1)); !errors.Is(err, ErrDetached) {
		t.Fatalf("read on detached tls.Conn: %v, want ErrDetached", err)
	}
	if _, err := p.cli.Write([]byte("x")); !errors.Is(err, ErrDetached) {
		t.Fatalf("write on detached tls.Conn: %v, want ErrDetached", err)
	}
	// Closing the detached tls.Conn must leave raw alone; it reports the
	// close_notify it did not send.
	if err := p.srv.Close(); !errors.Is(err, ErrDetached) {
		t.Fatalf("Close after Detach: %v", err)
	}
	if err := p.cli.Close(); !errors.Is(err, ErrDetached) {
		t.Fatalf("Close after Detach: %v", err)
	}

	got := make([]byte, len(afterLogin))
	if _, err := io.ReadFull(srvRaw, got); err != nil || !bytes.Equal(got, afterLogin) {
		t.Fatalf("plaintext after LOGIN7: %q, %v", got, err)
	}
	// The login response and the rest of the session, plaintext both ways.
	exchange(t, srvRaw, cliRaw, pattern(5000, 3))
	exchange(t, cliRaw, srvRaw, pattern(70_000, 4))
	exchange(t, srvRaw, cliRaw, pattern(70_000, 5))

	// Byte-for-byte on the wire: what the server wrote after the
	// handshake and the close is exactly the plaintext.
	sw := p.srvRec.Bytes()
	want := append(pattern(5000, 3), pattern(70_000, 5)...)
	if !bytes.HasSuffix(sw, want) {
		t.Fatal("server's plaintext is not on the wire as is")
	}
	_, rest := parseFlight(t, sw, 0)
	_, rest = parseFlight(t, rest, 0)
	if !bytes.Equal(rest, want) {
		t.Fatalf("server wrote %d bytes after the handshake, want exactly the %d plaintext bytes (no close_notify)", len(rest), len(want))
	}
}

func TestDetachRefusals(t *testing.T) {
	tc := ecdsaCert(t)
	p := handshakePair(t, serverConfig(tc), clientConfig(tc), 0)
	plain := tls.Client(p.cliRaw, clientConfig(tc))
	if _, err := Detach(plain); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("Detach(foreign): %v", err)
	}
	if err := AllowReadAhead(plain); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("AllowReadAhead(foreign): %v", err)
	}
	// Mid-record: the server read one byte of a 10-byte record.
	if _, err := p.cli.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// The record is read whole by tls (exact mode ends at its boundary),
	// so Detach is allowed even though 9 decrypted bytes are unread; that
	// is the caller's contract (read the whole LOGIN7 first).
	if _, err := Detach(p.srv); err != nil {
		t.Fatalf("Detach at a record boundary: %v", err)
	}
	if _, err := Detach(p.srv); !errors.Is(err, ErrDetached) {
		t.Fatalf("second Detach: %v", err)
	}
	if err := AllowReadAhead(p.cli); err != nil {
		t.Fatal(err)
	}
	if _, err := Detach(p.cli); err == nil {
		t.Fatal("Detach after AllowReadAhead succeeded")
	}
}

// TestPacketSplit uses packet size 512 and an RSA-4096 certificate: every
// server flight and the client's key exchange exceed one packet.
func TestPacketSplit(t *testing.T) {
	tc := bigCert(t)
	p := handshakePair(t, serverConfig(tc), clientConfig(tc), 512)

	first, _ := parseFlight(t, p.srvRec.Bytes(), 512)
	if len(first) < 2 {
		t.Fatalf("server flight in %d packet(s) at packet size 512", len(first))
	}
	for i, pk := range first {
		eom := i == len(first)-1
		if pk.h.EOM() != eom {
			t.Fatalf("packet %d of %d: EOM %v", i, len(first), pk.h.EOM())
		}
		if !eom && pk.h.Length != 512 {
			t.Fatalf("packet %d: length %d, want full 512", i, pk.h.Length)
		}
		if pk.h.PacketID != uint8(i+1) {
			t.Fatalf("packet %d: id %d", i, pk.h.PacketID)
		}
	}
	exchange(t, p.cli, p.srv, pattern(40_000, 7))
	exchange(t, p.srv, p.cli, pattern(40_000, 8))
}

// TestPacketSizeMismatch: a client that caps packets at 512 refuses a
// server flight sent in 4096-byte packets.
func TestPacketSizeMismatch(t *testing.T) {
	tc := bigCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	go func() {
		_, _ = Server(ctx, s, serverConfig(tc), 4096)
		s.Close()
	}()
	_, err := Client(ctx, c, clientConfig(tc), 512)
	if err == nil || !strings.Contains(err.Error(), "above packet size 512") {
		t.Fatalf("client: %v, want a packet size error", err)
	}
}

func TestConfigChecks(t *testing.T) {
	tc := ecdsaCert(t)
	c, s := tcpPair(t)
	ctx := context.Background()
	if _, err := Server(ctx, s, nil, 0); err == nil {
		t.Error("Server with nil config succeeded")
	}
	cfg := serverConfig(tc)
	cfg.MinVersion = tls.VersionTLS13
	if _, err := Server(ctx, s, cfg, 0); err == nil {
		t.Error("Server with MinVersion 1.3 succeeded")
	}
	if _, err := Client(ctx, c, clientConfig(tc), 100); err == nil {
		t.Error("Client with packet size 100 succeeded")
	}
	if _, err := Client(ctx, c, clientConfig(tc), 40000); err == nil {
		t.Error("Client with packet size 40000 succeeded")
	}
	// The caller's config is not modified.
	cfg = serverConfig(tc)
	p := handshakePair(t, cfg, clientConfig(tc), 0)
	_ = p
	if cfg.MaxVersion != 0 || cfg.DynamicRecordSizingDisabled || cfg.SessionTicketsDisabled {
		t.Error("Server modified the caller's tls.Config")
	}
}

// TestGetConfigForClient: a config returned by the caller's
// GetConfigForClient is capped too.
func TestGetConfigForClient(t *testing.T) {
	tc := ecdsaCert(t)
	scfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return serverConfig(tc), nil
	}}
	ccfg := clientConfig(tc)
	ccfg.MaxVersion = tls.VersionTLS13 // offered, must not be chosen
	p := handshakePair(t, scfg, ccfg, 0)
	if v := p.srv.ConnectionState().Version; v != tls.VersionTLS12 {
		t.Fatalf("version %s", tls.VersionName(v))
	}
}

// TestDeadlineKept: a ctx deadline bounds the handshake and stays on raw
// afterwards, so that the login reads that follow TLS are bounded too
// (a client that finished TLS and then went silent used to hold its
// connection forever); the caller clears it when its login is done.
func TestDeadlineKept(t *testing.T) {
	tc := ecdsaCert(t)
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			c, s := tcpPair(t)
			errc := make(chan error, 1)
			var srv *tls.Conn
			go func() {
				var err error
				if strict {
					srv, err = ServerStrict(ctx, s, serverConfig(tc))
				} else {
					srv, err = Server(ctx, s, serverConfig(tc), 0)
				}
				errc <- err
			}()
			var cli *tls.Conn
			var err error
			if strict {
				cli, err = ClientStrict(context.Background(), c, clientConfig(tc))
			} else {
				cli, err = Client(context.Background(), c, clientConfig(tc), 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			exchange(t, cli, srv, []byte("before the ctx deadline"))
			// The client goes silent: the server's next read ends at the
			// ctx deadline, not never.
			start := time.Now()
			backstop := time.AfterFunc(3*time.Second, func() { s.Close() }) // fail, not hang
			defer backstop.Stop()
			_, err = srv.Read(make([]byte, 1))
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read after TLS from a silent client: %v, want a deadline error", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("read ended after %v", d)
			}
		})
	}
	// The caller clears it, and the connection goes on.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, s := tcpPair(t)
	errc := make(chan error, 1)
	var srv *tls.Conn
	go func() {
		var err error
		srv, err = Server(ctx, s, serverConfig(tc), 0)
		errc <- err
	}()
	cli, err := Client(ctx, c, clientConfig(tc), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	_ = s.SetDeadline(time.Time{})
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	exchange(t, cli, srv, []byte("after the ctx deadline"))
	exchange(t, srv, cli, []byte("both ways"))
}

func TestStrict(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	rec := &recConn{Conn: c}
	type res struct {
		c   *tls.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The server tells a strict client from a PRELOGIN one by its
		// first 8 bytes, then hands them back.
		first := make([]byte, tds.HeaderLen)
		if _, err := io.ReadFull(s, first); err != nil {
			ch <- res{nil, err}
			return
		}
		if !LooksLikeTLSClientHello(first) {
			ch <- res{nil, errors.New("not detected as TLS")}
			return
		}
		sc, err := ServerStrict(ctx, WithPrefix(s, first), serverConfig(tc))
		ch <- res{sc, err}
	}()
	cli, err := ClientStrict(ctx, rec, clientConfig(tc))
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, c := range []*tls.Conn{cli, r.c} {
		st := c.ConnectionState()
		if st.NegotiatedProtocol != ALPN {
			t.Errorf("ALPN %q", st.NegotiatedProtocol)
		}
		if st.Version != tls.VersionTLS13 {
			t.Errorf("strict version %s, want TLS 1.3", tls.VersionName(st.Version))
		}
	}
	if w := rec.Bytes(); w[0] != 0x16 || w[1] != 0x03 {
		t.Fatalf("strict client starts % x, want a raw TLS record", w[:3])
	}
	// PRELOGIN inside TLS.
	prelogin := tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, 4096, []byte{0xff})
	exchange(t, cli, r.c, prelogin)
	exchange(t, r.c, cli, pattern(100_000, 6))
}

func TestStrictRequiresALPN(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, protos := range [][]string{nil, {"h2"}} {
		c, s := tcpPair(t)
		errc := make(chan error, 1)
		go func() {
			_, err := ServerStrict(ctx, s, serverConfig(tc))
			errc <- err
		}()
		ccfg := clientConfig(tc)
		ccfg.NextProtos = protos
		cli := tls.Client(c, ccfg)
		cerr := cli.HandshakeContext(ctx)
		serr := <-errc
		if !errors.Is(serr, ErrNoALPN) && protos == nil {
			t.Errorf("ALPN %v: server error %v, want ErrNoALPN", protos, serr)
		}
		if serr == nil || cerr == nil {
			t.Errorf("ALPN %v: server %v, client %v: want both to fail", protos, serr, cerr)
		}
	}
	// A server that ignores ALPN is accepted by ClientStrict.
	c, s := tcpPair(t)
	go func() {
		sc := tls.Server(s, serverConfig(tc))
		_ = sc.HandshakeContext(ctx)
	}()
	if _, err := ClientStrict(ctx, c, clientConfig(tc)); err != nil {
		t.Fatalf("ClientStrict against a server without ALPN: %v", err)
	}
}

func TestLooksLikeTLSClientHello(t *testing.T) {
	// A real ClientHello, as crypto/tls writes it.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		_ = tls.Client(c1, &tls.Config{ServerName: "x", NextProtos: []string{ALPN}}).Handshake()
	}()
	hello := make([]byte, 64)
	if _, err := io.ReadFull(c2, hello); err != nil {
		t.Fatal(err)
	}
	prelogin := tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, 4096, make([]byte, 40))
	for _, tt := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"crypto/tls ClientHello", hello, true},
		{"three bytes", hello[:3], true},
		{"eight bytes", hello[:8], true},
		{"PRELOGIN", prelogin, false},
		{"LOGIN7 header", []byte{0x10, 0x01, 0x00, 0x90, 0, 0, 1, 0}, false},
		{"TDS 5.0 login", []byte{0x02, 0x00, 0x02, 0x00, 0, 0, 0, 0}, false},
		{"short", []byte{0x16, 0x03}, false},
		{"empty", nil, false},
		{"SSLv3 record", []byte{0x16, 0x03, 0x00, 0x00, 0x40, 0x01}, true},
		{"bad minor", []byte{0x16, 0x03, 0x09, 0x00, 0x40, 0x01}, false},
		{"ServerHello", []byte{0x16, 0x03, 0x03, 0x00, 0x40, 0x02}, false},
		{"application data", []byte{0x17, 0x03, 0x03, 0x00, 0x40}, false},
	} {
		if got := LooksLikeTLSClientHello(tt.b); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// resplitConn re-cuts each PRELOGIN message it writes into packets of
// `chunk` payload bytes, so TLS record headers and bodies straddle packet
// boundaries. Writes that are not PRELOGIN packets pass as they are.
type resplitConn struct {
	net.Conn
	chunk int
}

func (r *resplitConn) Write(b []byte) (int, error) {
	if len(b) == 0 || b[0] != byte(tds.PacketPrelogin) {
		return r.Conn.Write(b)
	}
	var payload, out []byte
	for rest := b; len(rest) > 0; {
		h, err := tds.ParseHeader(rest, 0)
		if err != nil {
			return 0, err
		}
		payload = append(payload, rest[tds.HeaderLen:h.Length]...)
		rest = rest[h.Length:]
	}
	for i := 0; i < len(payload); i += r.chunk {
		end := min(i+r.chunk, len(payload))
		st := uint8(0)
		if end == len(payload) {
			st = tds.StatusEOM
		}
		out = append(out, hdr(tds.PacketPrelogin, st, uint16(tds.HeaderLen+end-i))...)
		out = append(out, payload[i:end]...)
	}
	if _, err := r.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// TestTinyPackets: records split over many packets (3 payload bytes each,
// so even the 5-byte record headers straddle packets) reassemble.
func TestTinyPackets(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	errc := make(chan error, 1)
	var srv *tls.Conn
	go func() {
		var err error
		srv, err = Server(ctx, &resplitConn{Conn: s, chunk: 3}, serverConfig(tc), 0)
		errc <- err
	}()
	cli, err := Client(ctx, &resplitConn{Conn: c, chunk: 3}, clientConfig(tc), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	exchange(t, cli, srv, pattern(10_000, 1))
	exchange(t, srv, cli, pattern(10_000, 2))
}

// TestRealStrictClientHello uses the first bytes go-sqlcmd sent in strict
// mode (testdata, provenance in the file): detected as TLS, and its ALPN
// passes ServerStrict's check (the handshake then ends at the input's end,
// not with ErrNoALPN).
func TestRealStrictClientHello(t *testing.T) {
	raw, err := os.ReadFile("testdata/gosqlcmd-strict-clienthello.hex")
	if err != nil {
		t.Fatal(err)
	}
	var hexText []byte
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("#")) {
			hexText = append(hexText, bytes.TrimSpace(line)...)
		}
	}
	hello, err := hex.DecodeString(string(hexText))
	if err != nil {
		t.Fatal(err)
	}
	if !LooksLikeTLSClientHello(hello[:tds.HeaderLen]) {
		t.Fatal("go-sqlcmd's strict ClientHello not detected")
	}
	if !bytes.Contains(hello, []byte("\x07tds/8.0")) {
		t.Fatal("capture carries no ALPN tds/8.0")
	}
	_, err = ServerStrict(context.Background(), &feedConn{r: bytes.NewReader(hello)}, serverConfig(ecdsaCert(t)))
	if err == nil || errors.Is(err, ErrNoALPN) {
		t.Fatalf("ServerStrict on go-sqlcmd's hello: %v, want an EOF after the ALPN check", err)
	}
	if !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("ServerStrict on go-sqlcmd's hello: %v, want EOF", err)
	}
	// The same hello sent to the wrapped-mode Server is refused at once.
	_, err = Server(context.Background(), &feedConn{r: bytes.NewReader(hello)}, serverConfig(ecdsaCert(t)), 0)
	if err == nil || !strings.Contains(err.Error(), "type 0x16") {
		t.Fatalf("Server on a strict hello: %v", err)
	}
}
