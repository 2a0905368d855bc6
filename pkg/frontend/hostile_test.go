package frontend_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// The hostile-clients harness: go-mssqldb's bad_server_test.go turned
// around. A stand-in bucket and an in-process proxy with a short login
// timeout face raw TCP clients that break the protocol in every way a
// port scanner, a confused client or a truncated capture can. Each must
// get a TDS error or a close — never a panic (which would kill this test
// binary) or a hang — and afterwards the proxy must still serve a normal
// login with nothing held: no slot, no queued waiter, no backend session.

const hostileLoginTimeout = time.Second

// closeMargin is how long after the login timeout a hung client may wait
// for the proxy to close it (scheduling under -race on a small machine).
const closeMargin = 2 * time.Second

// prompt bounds the refusals the proxy can decide on the bytes it has:
// they must not wait for the login timeout. It leaves room for a slow,
// busy machine while staying clearly below the timeout.
const prompt = hostileLoginTimeout * 3 / 4

func TestHostileClients(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.LoginTimeout = hostileLoginTimeout
	a := testenv.Proxy(t, cfg)
	addr := a.Addr()

	cases := []struct {
		name string
		run  func(t *testing.T, c *net.TCPConn)
	}{
		{"garbage-random", func(t *testing.T, c *net.TCPConn) {
			// Random bytes may happen to start with a plausible header
			// (the proxy then waits for a payload that never comes), so
			// the bound is the login timeout.
			rng := rand.New(rand.NewPCG(1, 2))
			b := make([]byte, 300)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			b[0] = 0xE7             // not a packet type, not a TLS record
			b[2], b[3] = 0x10, 0x00 // yet a plausible length
			hostileWrite(t, c, b)
			expectProxyClose(t, c, prompt)
		}},
		{"garbage-random-seeds", func(t *testing.T, c *net.TCPConn) {
			c.Close()
			for seed := uint64(0); seed < 16; seed++ {
				rng := rand.New(rand.NewPCG(seed, seed*7+1))
				b := make([]byte, 1+rng.IntN(2000))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				c := hostileDial(t, addr)
				hostileWrite(t, c, b)
				expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
				c.Close()
			}
		}},
		{"garbage-http", func(t *testing.T, c *net.TCPConn) {
			// 'G' is no packet type, but "GET " also reads as a header
			// announcing 0x5420 bytes: the proxy must not wait for them.
			hostileWrite(t, c, []byte("GET / HTTP/1.1\r\nHost: tdsgate\r\n\r\n"))
			expectProxyClose(t, c, prompt)
		}},
		{"header-length-below-8", func(t *testing.T, c *net.TCPConn) {
			hostileWrite(t, c, []byte{byte(tds.PacketPrelogin), tds.StatusEOM, 0x00, 0x04, 0, 0, 1, 0})
			expectProxyClose(t, c, prompt)
		}},
		{"header-length-zero", func(t *testing.T, c *net.TCPConn) {
			hostileWrite(t, c, []byte{byte(tds.PacketLogin7), tds.StatusEOM, 0x00, 0x00, 0, 0, 1, 0, 1, 2, 3, 4})
			expectProxyClose(t, c, prompt)
		}},
		{"header-length-above-packet-size", func(t *testing.T, c *net.TCPConn) {
			b := []byte{byte(tds.PacketPrelogin), tds.StatusEOM, 0xFF, 0xFF, 0, 0, 1, 0}
			hostileWrite(t, c, append(b, make([]byte, 512)...))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-cut-halfway-left-open", func(t *testing.T, c *net.TCPConn) {
			p := preloginPacket(tds.EncryptNotSup)
			start := time.Now()
			hostileWrite(t, c, p[:len(p)/2])
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
			if d := time.Since(start); d < hostileLoginTimeout-100*time.Millisecond {
				t.Errorf("closed after %v, before the login timeout %v: a slow client would be cut off", d, hostileLoginTimeout)
			}
		}},
		{"header-only-left-open", func(t *testing.T, c *net.TCPConn) {
			hostileWrite(t, c, []byte{byte(tds.PacketPrelogin), tds.StatusEOM, 0x00, 0x40})
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
		}},
		{"silent-client", func(t *testing.T, c *net.TCPConn) {
			// Connects and sends nothing: the login timeout still applies.
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
		}},
		{"prelogin-without-eom-left-open", func(t *testing.T, c *net.TCPConn) {
			p := preloginPacket(tds.EncryptNotSup)
			p[1] = 0 // no EOM: the proxy waits for a next packet
			hostileWrite(t, c, p)
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
		}},
		{"login7-offsets-past-end", func(t *testing.T, c *net.TCPConn) {
			hostilePreloginNotSup(t, c)
			l := login7Payload("sa", testenv.Passwords[0], "tenant_db")
			binary.LittleEndian.PutUint16(l[40:], 0xFFF0) // ibUserName
			binary.LittleEndian.PutUint16(l[42:], 0x0100) // cchUserName
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, l))
			e := readLoginRefusal(t, c)
			if e.Number != 50009 || !bytes.Contains([]byte(e.Message), []byte("could not decode the LOGIN7")) {
				t.Errorf("got error %d %q, want 50009 \"... could not decode the LOGIN7 ...\"", e.Number, e.Message)
			}
			expectProxyClose(t, c, prompt)
		}},
		{"login7-length-field-past-end", func(t *testing.T, c *net.TCPConn) {
			hostilePreloginNotSup(t, c)
			l := login7Payload("sa", testenv.Passwords[0], "tenant_db")
			binary.LittleEndian.PutUint32(l[0:], uint32(len(l)+1000))
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, l))
			if e := readLoginRefusal(t, c); e.Number != 50009 {
				t.Errorf("got error %d %q, want 50009", e.Number, e.Message)
			}
			expectProxyClose(t, c, prompt)
		}},
		{"login7-truncated-no-prelogin", func(t *testing.T, c *net.TCPConn) {
			// An old client's LOGIN7 first, cut inside its fixed part.
			l := login7Payload("sa", testenv.Passwords[0], "tenant_db")[:50]
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, l))
			if e := readLoginRefusal(t, c); e.Number != 50009 {
				t.Errorf("got error %d %q, want 50009", e.Number, e.Message)
			}
			expectProxyClose(t, c, prompt)
		}},
		{"tds42-login", func(t *testing.T, c *net.TCPConn) {
			// A TDS 4.2/5.0 login record: host name, user, password, ...
			// padded with blanks, as FreeTDS's fallback sends it.
			body := make([]byte, 512)
			copy(body, "tdsclient")
			body[30] = 9
			copy(body[31:], "sa")
			body[61] = 2
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketPreTDS7Login, 0, 0, 1, tds.DefaultPacketSize, body))
			m := readProxyReply(t, c)
			num, msg := parseLegacyRefusal(t, m.Data)
			if num != 50008 {
				t.Errorf("legacy refusal number %d (%q), want 50008", num, msg)
			}
			if !bytes.Contains([]byte(msg), []byte("TDS 4.2/5.0")) {
				t.Errorf("legacy refusal message %q does not name TDS 4.2/5.0", msg)
			}
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-bad-option-table", func(t *testing.T, c *net.TCPConn) {
			// VERSION at offset 0x0100 in a payload of 12 bytes.
			p := []byte{0x00, 0x01, 0x00, 0x00, 0x06, 0xFF, 1, 2, 3, 4, 5, 6}
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, p))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-no-terminator", func(t *testing.T, c *net.TCPConn) {
			p := []byte{0x00, 0x00, 0x05, 0x00, 0x06, 0x01, 0x00, 0x0B, 0x00, 0x01}
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, p))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-empty", func(t *testing.T, c *net.TCPConn) {
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, nil))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-then-sql-batch", func(t *testing.T, c *net.TCPConn) {
			hostilePreloginNotSup(t, c)
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, tds.DefaultPacketSize, tds.AppendSQLBatch(nil, nil, "SELECT 1")))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-twice", func(t *testing.T, c *net.TCPConn) {
			hostilePreloginNotSup(t, c)
			hostileWrite(t, c, preloginPacket(tds.EncryptNotSup))
			expectProxyClose(t, c, prompt)
		}},
		{"prelogin-encrypt-on-then-garbage", func(t *testing.T, c *net.TCPConn) {
			// The client asks for TLS, then sends no ClientHello.
			hostileWrite(t, c, preloginPacket(tds.EncryptOn))
			m := readProxyReply(t, c)
			if _, err := tds.ParsePrelogin(m.Data); err != nil {
				t.Fatalf("PRELOGIN answer: %v", err)
			}
			hostileWrite(t, c, tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, []byte("this is not a TLS ClientHello")))
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
		}},
		{"strict-tls-garbage", func(t *testing.T, c *net.TCPConn) {
			// Looks like a TLS record header (strict TDS 8.0), then junk.
			hostileWrite(t, c, []byte{0x16, 0x03, 0x01, 0x00, 0x20, 0xDE, 0xAD, 0xBE, 0xEF})
			expectProxyClose(t, c, hostileLoginTimeout+closeMargin)
		}},
		{"connect-and-close", func(t *testing.T, c *net.TCPConn) {
			// A TCP health check.
			c.Close()
			for range 20 {
				hostileDial(t, addr).Close()
			}
		}},
		{"connect-and-reset", func(t *testing.T, c *net.TCPConn) {
			c.SetLinger(0) // RST instead of FIN
			c.Close()
		}},
		{"half-close-after-prelogin", func(t *testing.T, c *net.TCPConn) {
			hostileWrite(t, c, preloginPacket(tds.EncryptNotSup))
			c.CloseWrite()
			readProxyReply(t, c)
			expectProxyClose(t, c, prompt)
		}},
		{"valid-prelogin-then-reset", func(t *testing.T, c *net.TCPConn) {
			hostilePreloginNotSup(t, c)
			c.SetLinger(0)
			c.Close()
		}},
	}
	// The cases run in parallel (several wait out the login timeout);
	// the group returns when all have ended.
	t.Run("clients", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := hostileDial(t, addr)
				defer c.Close()
				tc.run(t, c)
			})
		}
	})
	checkServesAndIdle(t, a, buckets[0], addr)
}

// checkServesAndIdle runs after every hostile subtest: the proxy still
// logs a client in and runs SELECT 1, and once that client has gone
// nothing is held anywhere.
func checkServesAndIdle(t *testing.T, a *app.App, s *server.Server, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tdsclient.Dial(ctx, tdsclient.Options{Addr: addr, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("normal login after the hostile clients: %v", err)
	}
	res, err := c.Exec("SELECT 1", 0)
	if err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if v := res.Scalar(); v != int64(1) && v != int32(1) && v != 1 {
		t.Errorf("SELECT 1 returned %v (%T)", v, v)
	}
	c.Close()
	waitUntilClear(t, 5*time.Second, func() string {
		if n := a.Handler().Active(); n != 0 {
			return fmt.Sprintf("%d sessions still active", n)
		}
		for _, b := range a.Limiter().Snapshot() {
			if b.InUse != 0 || b.Queued != 0 {
				return fmt.Sprintf("bucket %s: in use %d, queued %d", b.Bucket, b.InUse, b.Queued)
			}
		}
		if n := s.Stats().Current; n != 0 {
			return fmt.Sprintf("stand-in: %d sessions still logged in", n)
		}
		return ""
	})
}

// waitUntilClear polls cond (which returns "" when satisfied, or what is still
// wrong) until it holds or d passes.
func waitUntilClear(t testing.TB, d time.Duration, cond func() string) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostileDial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

func hostileWrite(t testing.TB, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectProxyClose reads until the proxy closes the connection, failing if that
// takes longer than within. A reset counts as a close.
func expectProxyClose(t testing.TB, c net.Conn, within time.Duration) []byte {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return got
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the proxy did not close the connection within %v (got %d bytes: %x)", within, len(got), hexHead(got))
		}
		t.Fatalf("read: %v", err)
	}
}

func hexHead(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func preloginPacket(enc uint8) []byte {
	p := &tds.Prelogin{}
	p.SetVersion(tds.Version{Major: 1})
	p.SetEncryption(enc)
	p.Set(tds.PLInstOpt, []byte{0})
	p.Set(tds.PLThreadID, []byte{0, 0, 0, 1})
	p.Set(tds.PLMARS, []byte{0})
	return tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, p.Append(nil))
}

func login7Payload(user, password, database string) []byte {
	l := &tds.Login7{TDSVersion: tds.Version74, PacketSize: tds.DefaultPacketSize, ClientProgVer: 1, ClientPID: 1,
		OptionFlags1: 0xE0, OptionFlags2: 0x03, ClientLCID: 1033, HostName: "hostile", UserName: user,
		Password: password, AppName: "hostile_test", ServerName: "127.0.0.1", CltIntName: "hostile", Database: database}
	return l.Append(nil)
}

// hostilePreloginNotSup sends PRELOGIN ENCRYPT_NOT_SUP and checks the answer
// leaves the connection in plaintext.
func hostilePreloginNotSup(t testing.TB, c net.Conn) {
	t.Helper()
	hostileWrite(t, c, preloginPacket(tds.EncryptNotSup))
	m := readProxyReply(t, c)
	p, err := tds.ParsePrelogin(m.Data)
	if err != nil {
		t.Fatalf("PRELOGIN answer: %v", err)
	}
	if enc, _ := p.Encryption(); enc != tds.EncryptNotSup {
		t.Fatalf("PRELOGIN answer ENCRYPTION 0x%02x, want NOT_SUP", enc)
	}
}

func readProxyReply(t testing.TB, c net.Conn) tds.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := tds.NewMessageReader(c, tds.MaxPacketSize, 1<<20).ReadMessage()
	if err != nil {
		t.Fatalf("reading the proxy's answer: %v", err)
	}
	if m.Type != tds.PacketReply {
		t.Fatalf("answer of packet type 0x%02x, want REPLY", uint8(m.Type))
	}
	return m
}

// readLoginRefusal reads a REPLY that must hold an ERROR token and a DONE
// with DONE_ERROR, and returns the error.
func readLoginRefusal(t testing.TB, c net.Conn) *tds.ErrorToken {
	t.Helper()
	m := readProxyReply(t, c)
	r := tds.NewTokenReader(m.Data, tds.Version74)
	var e *tds.ErrorToken
	var done *tds.Done
	for r.More() {
		tok, err := r.Next()
		if err != nil {
			t.Fatalf("decoding the answer: %v (%x)", err, m.Data)
		}
		if tok.Type == tds.TokenError {
			e = tok.Error
		}
		if tok.Done != nil {
			done = tok.Done
		}
	}
	if e == nil {
		t.Fatalf("answer without an ERROR token: %x", m.Data)
	}
	if done == nil || done.Status&tds.DoneError == 0 {
		t.Errorf("answer without DONE_ERROR: %+v", done)
	}
	return e
}

// parseLegacyRefusal decodes the ERROR token of a TDS 4.2/5.0 refusal: the
// number, then state, class, a 2-byte length and single-byte text.
func parseLegacyRefusal(t testing.TB, b []byte) (int32, string) {
	t.Helper()
	if len(b) < 3 || b[0] != byte(tds.TokenError) {
		t.Fatalf("legacy refusal does not start with an ERROR token: %x", hexHead(b))
	}
	n := int(binary.LittleEndian.Uint16(b[1:]))
	body := b[3:]
	if n > len(body) || n < 8 {
		t.Fatalf("legacy ERROR token of length %d in %d bytes", n, len(body))
	}
	body = body[:n]
	num := int32(binary.LittleEndian.Uint32(body))
	ml := int(binary.LittleEndian.Uint16(body[6:]))
	if 8+ml > len(body) {
		t.Fatalf("legacy ERROR message of %d bytes in a token of %d", ml, n)
	}
	rest := b[3+n:]
	if len(rest) < 1 || rest[0] != byte(tds.TokenDone) {
		t.Errorf("legacy refusal: no DONE after the ERROR token: %x", hexHead(rest))
	}
	return num, string(body[8 : 8+ml])
}
