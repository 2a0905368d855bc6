package listener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var (
	v4Src = netip.MustParseAddrPort("192.0.2.10:54321")
	v4Dst = netip.MustParseAddrPort("198.51.100.1:1433")
	v6Src = netip.MustParseAddrPort("[2001:db8::10]:40000")
	v6Dst = netip.MustParseAddrPort("[2001:db8::1]:1433")
)

// tlv encodes one TLV.
func tlv(typ byte, v []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// sampleTLVs is what HAProxy may send: ALPN, authority, unique id, NOOP.
func sampleTLVs() []byte {
	var b []byte
	b = append(b, tlv(0x01, []byte("tds/8.0"))...)
	b = append(b, tlv(0x02, []byte("sql.example.com"))...)
	b = append(b, tlv(0x05, bytes.Repeat([]byte{'u'}, 64))...)
	b = append(b, tlv(0x04, make([]byte, 7))...)
	return b
}

// v2Raw builds a header by hand (not with AppendProxyHeader) so the tests
// check the encoder too.
func v2Raw(verCmd, fam byte, body []byte) []byte {
	b := append([]byte{}, proxyV2Sig[:]...)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestParseProxyHeaderValid(t *testing.T) {
	tcp4Body := []byte{192, 0, 2, 10, 198, 51, 100, 1, 0xD4, 0x31, 0x05, 0x99}
	tests := []struct {
		name      string
		in        []byte
		local     bool
		src, dst  netip.AddrPort
		wantBytes int
	}{
		{"tcp4 by hand", v2Raw(0x21, 0x11, tcp4Body), false, v4Src, v4Dst, 28},
		{"tcp4", AppendProxyHeader(nil, false, v4Src, v4Dst, nil), false, v4Src, v4Dst, 28},
		{"tcp6", AppendProxyHeader(nil, false, v6Src, v6Dst, nil), false, v6Src, v6Dst, 52},
		{"tcp4 with TLVs", AppendProxyHeader(nil, false, v4Src, v4Dst, sampleTLVs()), false, v4Src, v4Dst, 28 + len(sampleTLVs())},
		{"tcp6 with TLVs", AppendProxyHeader(nil, false, v6Src, v6Dst, sampleTLVs()), false, v6Src, v6Dst, 52 + len(sampleTLVs())},
		{"local", AppendProxyHeader(nil, true, netip.AddrPort{}, netip.AddrPort{}, nil), true, netip.AddrPort{}, netip.AddrPort{}, 16},
		{"local with tcp4 block", v2Raw(0x20, 0x11, tcp4Body), true, netip.AddrPort{}, netip.AddrPort{}, 28},
		{"local with odd family", v2Raw(0x20, 0x99, []byte{1, 2, 3}), true, netip.AddrPort{}, netip.AddrPort{}, 19},
		{"proxy unspec", v2Raw(0x21, 0x00, nil), false, netip.AddrPort{}, netip.AddrPort{}, 16},
		{"proxy unix stream", v2Raw(0x21, 0x31, make([]byte, 216)), false, netip.AddrPort{}, netip.AddrPort{}, 232},
		{"max length", AppendProxyHeader(nil, false, v4Src, v4Dst, tlv(0x04, make([]byte, MaxProxyHeaderLen-12-3))), false, v4Src, v4Dst, 16 + MaxProxyHeaderLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const after = "\x12\x01\x00\x2fPRELOGIN..."
			for _, mode := range []string{"whole", "one byte at a time"} {
				var r io.Reader = strings.NewReader(string(tt.in) + after)
				if mode != "whole" {
					r = iotest.OneByteReader(r)
				}
				h, err := ParseProxyHeader(r)
				if err != nil {
					t.Fatalf("%s: %v", mode, err)
				}
				if h.Local != tt.local || h.Src != tt.src || h.Dst != tt.dst || h.Len != tt.wantBytes {
					t.Fatalf("%s: got %+v, want local=%v src=%v dst=%v len=%d", mode, h, tt.local, tt.src, tt.dst, tt.wantBytes)
				}
				// Exactly the header was consumed: the rest is still there.
				rest, _ := io.ReadAll(r)
				if string(rest) != after {
					t.Fatalf("%s: after the header %q remains, want %q", mode, rest, after)
				}
			}
		})
	}
}

func TestParseProxyHeaderInvalid(t *testing.T) {
	good4 := AppendProxyHeader(nil, false, v4Src, v4Dst, nil)
	tooLong := v2Raw(0x21, 0x11, nil)
	binary.BigEndian.PutUint16(tooLong[14:], MaxProxyHeaderLen+1)
	tests := []struct {
		name    string
		in      []byte
		is      error  // errors.Is target, besides ErrProxyHeader
		contain string // substring of the message
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 54321 1433\r\n\x12\x01"), ErrProxyV1, "v1 is not supported; use send-proxy-v2"},
		{"v1 unknown, 15 bytes", []byte("PROXY UNKNOWN\r\n"), ErrProxyV1, "send-proxy-v2"},
		{"v1 cut short", []byte("PRO"), ErrProxyV1, "send-proxy-v2"},
		{"tds prelogin", []byte("\x12\x01\x00\x2f\x00\x00\x01\x00\x00\x00\x1a\x00\x06\x01\x00\x20\x00\x01"), ErrNoProxySignature, "missing PROXY protocol v2 signature"},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNoProxySignature, "signature"},
		{"signature off by one byte", append(append([]byte{}, good4[:11]...), append([]byte{0x0B}, good4[12:]...)...), ErrNoProxySignature, "signature"},
		{"short garbage", []byte{0x16, 0x03}, ErrNoProxySignature, "signature"},
		{"empty", nil, io.EOF, "closed before a PROXY header"},
		{"oversized length", tooLong, ErrProxyHeaderLen, "exceeds 512"},
		{"version 1 binary", v2Raw(0x11, 0x11, make([]byte, 12)), nil, "version 1"},
		{"version 3", v2Raw(0x31, 0x11, make([]byte, 12)), nil, "version 3"},
		{"unknown command", v2Raw(0x22, 0x11, make([]byte, 12)), nil, "command 0x2"},
		{"udp4", v2Raw(0x21, 0x12, make([]byte, 12)), nil, "0x12 is not TCP"},
		{"udp6", v2Raw(0x21, 0x22, make([]byte, 36)), nil, "0x22 is not TCP"},
		{"unknown family", v2Raw(0x21, 0x41, make([]byte, 12)), nil, "not TCP"},
		{"tcp4 too short", v2Raw(0x21, 0x11, make([]byte, 11)), nil, "TCP4 header length 11"},
		{"tcp6 too short", v2Raw(0x21, 0x21, make([]byte, 12)), nil, "TCP6 header length 12"},
		{"truncated fixed part", good4[:14], io.ErrUnexpectedEOF, "cut short after 14 of 16"},
		{"truncated signature", good4[:8], io.ErrUnexpectedEOF, "cut short after 8 of 16"},
		{"truncated addresses", good4[:20], io.ErrUnexpectedEOF, "cut short after 20 of 28"},
		{"truncated TLVs", AppendProxyHeader(nil, false, v4Src, v4Dst, sampleTLVs())[:40], io.ErrUnexpectedEOF, "cut short after 40 of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProxyHeader(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrProxyHeader) {
				t.Errorf("error %v does not wrap ErrProxyHeader", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.contain) {
				t.Errorf("error %q does not contain %q", err, tt.contain)
			}
		})
	}
}

// TestParseProxyHeaderStopsEarly: a bad length or family is reported from
// the 16 fixed bytes, without waiting for the body it announces.
func TestParseProxyHeaderStopsEarly(t *testing.T) {
	tooLong := v2Raw(0x21, 0x11, nil)
	binary.BigEndian.PutUint16(tooLong[14:], 0xFFFF)
	for _, in := range [][]byte{tooLong, v2Raw(0x21, 0x12, nil)[:16]} {
		r := &countingReader{r: bytes.NewReader(in)}
		if _, err := ParseProxyHeader(r); err == nil {
			t.Fatalf("%x: no error", in)
		}
		if r.n != 16 {
			t.Errorf("%x: read %d bytes, want 16", in, r.n)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// connPair returns both ends of a real TCP connection on 127.0.0.1: the
// client side and our (accepted) side.
func connPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); _ = sc.Close() })
	return cc.(*net.TCPConn), sc.(*net.TCPConn)
}

func TestReadProxyHeaderOnSocket(t *testing.T) {
	t.Run("tcp4 then payload", func(t *testing.T) {
		client, server := connPair(t)
		payload := []byte("\x12\x01\x00\x08\x00\x00\x01\x00after the header")
		if _, err := client.Write(append(AppendProxyHeader(nil, false, v4Src, v4Dst, sampleTLVs()), payload...)); err != nil {
			t.Fatal(err)
		}
		src, dst, err := ReadProxyHeader(server, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if src.String() != v4Src.String() || dst.String() != v4Dst.String() {
			t.Fatalf("src, dst = %v, %v; want %v, %v", src, dst, v4Src, v4Dst)
		}
		if _, ok := src.(*net.TCPAddr); !ok {
			t.Errorf("src is %T, want *net.TCPAddr", src)
		}
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(server, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("after the header got %q, want %q", got, payload)
		}
		// The deadline was cleared: a later read blocks past the old timeout
		// rather than failing with a timeout at once.
		if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err = server.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after header: %v, want our own deadline", err)
		}
	})
	t.Run("tcp6", func(t *testing.T) {
		client, server := connPair(t)
		if _, err := client.Write(AppendProxyHeader(nil, false, v6Src, v6Dst, nil)); err != nil {
			t.Fatal(err)
		}
		src, dst, err := ReadProxyHeader(server, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if src.String() != v6Src.String() || dst.String() != v6Dst.String() {
			t.Fatalf("src, dst = %v, %v; want %v, %v", src, dst, v6Src, v6Dst)
		}
	})
	t.Run("local uses the conn's addresses", func(t *testing.T) {
		client, server := connPair(t)
		if _, err := client.Write(AppendProxyHeader(nil, true, netip.AddrPort{}, netip.AddrPort{}, nil)); err != nil {
			t.Fatal(err)
		}
		src, dst, err := ReadProxyHeader(server, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if src.String() != client.LocalAddr().String() || dst.String() != server.LocalAddr().String() {
			t.Fatalf("src, dst = %v, %v; want %v, %v", src, dst, client.LocalAddr(), server.LocalAddr())
		}
	})
	t.Run("timeout on a silent client", func(t *testing.T) {
		_, server := connPair(t)
		start := time.Now()
		_, _, err := ReadProxyHeader(server, 50*time.Millisecond)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, ErrProxyHeader) {
			t.Fatalf("err = %v, want a deadline error wrapping ErrProxyHeader", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("v1 client that waits is named after the timeout", func(t *testing.T) {
		client, server := connPair(t)
		if _, err := client.Write([]byte("PROXY UNKNOWN\r\n")); err != nil {
			t.Fatal(err)
		}
		_, _, err := ReadProxyHeader(server, 50*time.Millisecond)
		if !errors.Is(err, ErrProxyV1) {
			t.Fatalf("err = %v, want ErrProxyV1", err)
		}
	})
}
