package tdstls

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// feedConn is a net.Conn whose peer is a fixed byte string: reads come from
// it, then io.EOF; writes are discarded.
type feedConn struct {
	r *bytes.Reader
}

func (f *feedConn) Read(b []byte) (int, error)  { return f.r.Read(b) }
func (f *feedConn) Write(b []byte) (int, error) { return len(b), nil }
func (f *feedConn) Close() error                { return nil }
func (f *feedConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1433} }
func (f *feedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (f *feedConn) SetDeadline(time.Time) error      { return nil }
func (f *feedConn) SetReadDeadline(time.Time) error  { return nil }
func (f *feedConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServerHandshake feeds arbitrary bytes to Server as the client side of
// the handshake. It must end (the input ends in EOF) without a panic, and
// it may succeed only if the input is a whole handshake, which a fuzzer
// cannot forge (the client's Finished depends on the server's randomness).
// The committed corpus (testdata/fuzz/FuzzServerHandshake) holds a real
// ClientHello, whole and re-cut into small packets, and broken headers.
func FuzzServerHandshake(f *testing.F) {
	cfg := serverConfig(ecdsaCert(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := Server(ctx, &feedConn{r: bytes.NewReader(data)}, cfg, 0); err == nil {
			t.Fatalf("handshake succeeded on %d fuzzed bytes", len(data))
		}
	})
}

// FuzzClientHandshake does the same for Client, the fuzzed bytes being a
// server's answers.
func FuzzClientHandshake(f *testing.F) {
	cfg := clientConfig(ecdsaCert(f))
	f.Add([]byte{})
	f.Add(hdr(tds.PacketPrelogin, 1, 8))
	f.Add(cat(hdr(tds.PacketReply, 1, 8+7), []byte{0x15, 0x03, 0x03, 0, 2, 2, 40}))
	f.Add(cat(hdr(tds.PacketPrelogin, 1, 8+9), []byte{0x16, 0x03, 0x03, 0, 4, 2, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := Client(ctx, &feedConn{r: bytes.NewReader(data)}, cfg, 0); err == nil {
			t.Fatalf("handshake succeeded on %d fuzzed bytes", len(data))
		}
	})
}

// TestFeedConnServer checks the fuzz harness itself on its seeds' kind of
// input: a real ClientHello gets a server flight and then EOF.
func TestFeedConnServer(t *testing.T) {
	hello := clientHelloPackets(t)
	ctx := context.Background()
	_, err := Server(ctx, &feedConn{r: bytes.NewReader(hello)}, serverConfig(ecdsaCert(t)), 0)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(io.EOF.Error())) {
		t.Fatalf("error %v, want EOF after the ClientHello", err)
	}
}
