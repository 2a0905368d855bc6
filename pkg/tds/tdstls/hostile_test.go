package tdstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// clientHelloPackets returns a real ClientHello wrapped in a PRELOGIN packet,
// as Client sends it.
func clientHelloPackets(tb testing.TB) []byte {
	tb.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = Client(ctx, c1, &tls.Config{ServerName: "localhost"}, 0)
	}()
	hdr := make([]byte, tds.HeaderLen)
	if _, err := io.ReadFull(c2, hdr); err != nil {
		tb.Fatal(err)
	}
	h, err := tds.ParseHeader(hdr, 0)
	if err != nil {
		tb.Fatal(err)
	}
	pkt := make([]byte, h.Length)
	copy(pkt, hdr)
	if _, err := io.ReadFull(c2, pkt[tds.HeaderLen:]); err != nil {
		tb.Fatal(err)
	}
	return pkt
}

func hdr(typ tds.PacketType, status uint8, length uint16) []byte {
	b := make([]byte, tds.HeaderLen)
	tds.Header{Type: typ, Status: status, Length: length}.Put(b)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// TestHostileClient feeds Server bad handshake bytes over TCP. The peer
// keeps its end open unless the case says otherwise, so every error must
// come from the bytes, fast: not from EOF, not from the 5 s ctx deadline.
func TestHostileClient(t *testing.T) {
	tc := ecdsaCert(t)
	hello := clientHelloPackets(t)
	for _, tt := range []struct {
		name      string
		send      []byte
		closeSend bool   // half-close after sending
		want      string // substring of the error
	}{
		{"length below 8", hdr(tds.PacketPrelogin, 1, 4), false, "below 8"},
		{"length 0", hdr(tds.PacketPrelogin, 1, 0), false, "below 8"},
		{"length above packet size", hdr(tds.PacketPrelogin, 1, 4097), false, "above packet size"},
		{"LOGIN7 instead of PRELOGIN", cat(hdr(tds.PacketLogin7, 1, 20), make([]byte, 12)), false, "type 0x10"},
		{"REPLY type from a client", cat(hdr(tds.PacketReply, 1, 20), make([]byte, 12)), false, "type 0x04"},
		{"second packet of another type", cat(hdr(tds.PacketPrelogin, 0, 18), hello[8:18], hdr(tds.PacketSQLBatch, 1, 9), []byte{0}), false, "type 0x01"},
		{"truncated payload", cat(hdr(tds.PacketPrelogin, 1, 100), hello[8:28]), true, "unexpected EOF"},
		{"truncated header", []byte{0x12, 0x01, 0x00}, true, "unexpected EOF"},
		{"EOF at once", nil, true, "EOF"},
		{"EOF between packets, no EOM", cat(hdr(tds.PacketPrelogin, 0, 18), hello[8:18]), true, "unexpected EOF"},
		{"not TLS inside", cat(hdr(tds.PacketPrelogin, 1, 8+6), []byte{0x12, 0x03, 0x03, 0, 1, 0}), false, "tls"},
		{"raw TLS (strict client on a 7.x port)", hello[8:], false, "type 0x16"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, s := tcpPair(t)
			go func() {
				_, _ = c.Write(tt.send)
				if tt.closeSend {
					_ = c.(*net.TCPConn).CloseWrite()
				}
				_, _ = io.Copy(io.Discard, c) // answer nothing, read all
			}()
			start := time.Now()
			_, err := Server(ctx, s, serverConfig(tc), 0)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to mention %q", err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// TestTrailingBytesInHandshakePacket: a peer whose last handshake packet
// holds more than the handshake fails the handshake instead of leaking
// those bytes into the raw stream.
func TestTrailingBytesInHandshakePacket(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	// A server that appends junk to its last flight's packet.
	go func() {
		_, _ = Server(ctx, &junkOnFinish{Conn: s}, serverConfig(tc), 0)
	}()
	_, err := Client(ctx, c, clientConfig(tc), 0)
	if err == nil || !strings.Contains(err.Error(), "unread bytes") {
		t.Fatalf("client: %v, want an unread bytes error", err)
	}
}

// junkOnFinish adds 3 bytes inside the second packet it writes (the
// server's CCS+Finished flight), fixing up the header length.
type junkOnFinish struct {
	net.Conn
	n int
}

func (j *junkOnFinish) Write(b []byte) (int, error) {
	j.n++
	if j.n != 2 {
		return j.Conn.Write(b)
	}
	h, _ := tds.ParseHeader(b, 0)
	out := append(b[:len(b):len(b)], 0xAA, 0xBB, 0xCC)
	tds.Header{Type: h.Type, Status: h.Status, Length: h.Length + 3, PacketID: h.PacketID}.Put(out)
	_, err := j.Conn.Write(out)
	return len(b), err
}

// TestHostileServer: Client against a backend that answers badly.
func TestHostileServer(t *testing.T) {
	tc := ecdsaCert(t)
	for _, tt := range []struct {
		name   string
		answer []byte
		want   string
	}{
		{"LOGIN7 type", cat(hdr(tds.PacketLogin7, 1, 9), []byte{0}), "type 0x10"},
		{"REPLY type accepted, application data inside", cat(hdr(tds.PacketReply, 1, 8+6), []byte{0x17, 0x03, 0x03, 0, 1, 0xff}), "tls"},
		{"length 7", hdr(tds.PacketPrelogin, 1, 7), "below 8"},
		{"TLS alert, wrapped", cat(hdr(tds.PacketPrelogin, 1, 8+7), []byte{0x15, 0x03, 0x03, 0, 2, 2, 40}), "handshake failure"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, s := tcpPair(t)
			go func() {
				// Read the ClientHello packet, then answer.
				h := make([]byte, tds.HeaderLen)
				if _, err := io.ReadFull(s, h); err != nil {
					return
				}
				ph, _ := tds.ParseHeader(h, 0)
				_, _ = io.CopyN(io.Discard, s, int64(ph.Length)-tds.HeaderLen)
				_, _ = s.Write(tt.answer)
				_, _ = io.Copy(io.Discard, s)
			}()
			start := time.Now()
			_, err := Client(ctx, c, clientConfig(tc), 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// TestAlertIsWrapped: when Server refuses the handshake, its TLS alert
// reaches the client inside a PRELOGIN packet.
func TestAlertIsWrapped(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	go func() {
		// A ClientHello record with a broken body.
		_, _ = c.Write(cat(hdr(tds.PacketPrelogin, 1, 8+9), []byte{0x16, 0x03, 0x01, 0, 4, 1, 0, 0, 0}))
	}()
	if _, err := Server(ctx, s, serverConfig(tc), 0); err == nil {
		t.Fatal("handshake succeeded")
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 8+7)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x12 || got[1] != tds.StatusEOM || got[8] != 0x15 || got[13] != 2 {
		t.Fatalf("client received % x, want a fatal TLS alert in a PRELOGIN packet", got)
	}
}

// TestStall: a peer that says nothing fails the handshake at the ctx
// deadline, on both sides, and raw stays usable once the caller clears it.
func TestStall(t *testing.T) {
	tc := ecdsaCert(t)
	for _, side := range []string{"server", "client", "strict server", "strict client"} {
		t.Run(side, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			c, s := tcpPair(t)
			// The silent peer drains what it gets, so writes never block.
			go func() { _, _ = io.Copy(io.Discard, c) }()
			start := time.Now()
			var err error
			switch side {
			case "server":
				_, err = Server(ctx, s, serverConfig(tc), 0)
			case "client":
				_, err = Client(ctx, s, clientConfig(tc), 0)
			case "strict server":
				_, err = ServerStrict(ctx, s, serverConfig(tc))
			case "strict client":
				_, err = ClientStrict(ctx, s, clientConfig(tc))
			}
			d := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want DeadlineExceeded", err)
			}
			if d < 150*time.Millisecond || d > 2*time.Second {
				t.Fatalf("failed after %v, want about 200ms", d)
			}
			// The deadline stays on raw (TestDeadlineKept) until cleared.
			if err := s.SetWriteDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatalf("write on raw after the failed handshake: %v", err)
			}
		})
	}
}

// TestCancel: cancelling ctx (no deadline) aborts a blocked handshake and
// leaves raw open and usable.
func TestCancel(t *testing.T) {
	tc := ecdsaCert(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, s := tcpPair(t)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Server(ctx, s, serverConfig(tc), 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	if _, err := c.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "still open" {
		t.Fatalf("raw after cancel: %q %v", b, err)
	}
	// Already cancelled: fails at once without touching raw.
	if _, err := Client(ctx, s, clientConfig(tc), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}

// TestCallerDeadline: without a ctx deadline, a deadline set on raw by the
// caller bounds the handshake and is left in place.
func TestCallerDeadline(t *testing.T) {
	tc := ecdsaCert(t)
	c, s := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, c) }()
	_ = s.SetDeadline(time.Now().Add(150 * time.Millisecond))
	_, err := Server(context.Background(), s, serverConfig(tc), 0)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("error %v, want a deadline error", err)
	}
}

// TestEmptyPacketFlood: endless empty PRELOGIN packets end in an error
// even without any deadline.
func TestEmptyPacketFlood(t *testing.T) {
	flood := bytes.Repeat(hdr(tds.PacketPrelogin, 0, tds.HeaderLen), maxHandshakeRead/tds.HeaderLen+10)
	_, err := Server(context.Background(), &feedConn{r: bytes.NewReader(flood)}, serverConfig(ecdsaCert(t)), 0)
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("error %v, want the handshake size cap", err)
	}
}
