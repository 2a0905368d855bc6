package bench

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Micro-benchmarks of the hot paths, with allocations:
//
//	go test -run '^$' -bench 'Parse|Relay' -benchmem ./bench/
//
// The limiter's local acquire/release has its own in pkg/limiter
// (BenchmarkAcquireReleaseUncontended, BenchmarkAcquireRelease64On16), and
// the Redis one there too (BenchmarkRedisAcquireRelease); they are not
// repeated here.

// captured returns the payloads of the client messages of one type in a
// real client's capture (pkg/tds/testdata/clientcap: "# C->S type=0x.."
// then the packets in hex, headers included).
func captured(tb testing.TB, file string, typ tds.PacketType) [][]byte {
	tb.Helper()
	f, err := os.Open(filepath.Join("..", "pkg", "tds", "testdata", "clientcap", file))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	clientMsg := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			clientMsg = strings.HasPrefix(line, "# C->S")
			continue
		}
		if !clientMsg || line == "" {
			continue
		}
		raw, err := hex.DecodeString(line)
		if err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		m, err := tds.NewMessageReader(bytes.NewReader(raw), tds.MaxPacketSize, 1<<20).ReadMessage()
		if err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		if m.Type == typ {
			out = append(out, m.Data)
		}
	}
	if len(out) == 0 {
		tb.Fatalf("%s: no message of type 0x%02x", file, uint8(typ))
	}
	return out
}

// The clients whose PRELOGIN and LOGIN7 are captured in the clear.
var captures = []struct{ name, file string }{
	{"go-mssqldb", "gosqlcmd-conn1.log"},
	{"tsql", "tsql-conn1.log"},
	{"pytds", "pytds-conn1.log"},
	{"jtds", "jtds-conn1.log"},
}

// BenchmarkParsePrelogin decodes each client's PRELOGIN, as the frontend
// does first on every connection.
func BenchmarkParsePrelogin(b *testing.B) {
	for _, c := range captures {
		if c.name == "jtds" {
			continue // jTDS with ssl=off sends LOGIN7 with no PRELOGIN
		}
		msg := captured(b, c.file, tds.PacketPrelogin)[0]
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				p, err := tds.ParsePrelogin(msg)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := p.Encryption(); !ok {
					b.Fatal("no ENCRYPTION option")
				}
			}
		})
	}
}

// BenchmarkParseLogin7 decodes each client's LOGIN7 (user, password,
// database, server and app names, feature extensions), as the frontend
// does before routing.
func BenchmarkParseLogin7(b *testing.B) {
	for _, c := range captures {
		msg := captured(b, c.file, tds.PacketLogin7)[0]
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				l, err := tds.ParseLogin7(msg)
				if err != nil {
					b.Fatal(err)
				}
				if l.UserName == "" {
					b.Fatal("no user name")
				}
			}
		})
	}
}

// relayPair is client ⇄ [relay.Relay] ⇄ server over loopback TCP.
type relayPair struct {
	client, server net.Conn
	done           chan relay.Result
}

// newRelayPair connects a client and a server through relay.Relay. With
// wrap, the proxy's legs are hidden behind a plain net.Conn, which takes
// the user-space copy path (the one TLS legs take) instead of splice.
func newRelayPair(b *testing.B, wrap bool) *relayPair {
	b.Helper()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	back, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer front.Close()
	defer back.Close()
	p := &relayPair{done: make(chan relay.Result, 1)}
	var wg sync.WaitGroup
	var proxyClient, proxyServer net.Conn
	wg.Go(func() {
		c, err := front.Accept()
		if err != nil {
			b.Error(err)
			return
		}
		proxyClient = c
	})
	wg.Go(func() {
		c, err := back.Accept()
		if err != nil {
			b.Error(err)
			return
		}
		p.server = c
	})
	if p.client, err = net.Dial("tcp", front.Addr().String()); err != nil {
		b.Fatal(err)
	}
	if proxyServer, err = net.Dial("tcp", back.Addr().String()); err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	if wrap {
		proxyClient, proxyServer = hidden{proxyClient}, hidden{proxyServer}
	}
	go func() { p.done <- relay.Relay(proxyClient, proxyServer) }()
	b.Cleanup(func() {
		p.client.Close()
		p.server.Close()
		<-p.done
	})
	return p
}

// hidden is a net.Conn that is not a *net.TCPConn.
type hidden struct{ net.Conn }

var relayModes = []struct {
	name string
	wrap bool
	want relay.Mode
}{{"splice", false, relay.ModeSplice}, {"copy", true, relay.ModeTLS}}

// BenchmarkRelayRoundTrip: a 64-byte request and a 64-byte answer through
// the relay, as a SELECT 1 round trip sees it (the client and the server
// here are just sockets, so the time is the relay's and the kernel's).
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, m := range relayModes {
		b.Run(m.name, func(b *testing.B) {
			p := newRelayPair(b, m.wrap)
			go func() { // echo server
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(p.server, buf); err != nil {
						return
					}
					if _, err := p.server.Write(buf); err != nil {
						return
					}
				}
			}()
			msg, buf := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(p.client, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			p.client.Close()
			p.server.Close()
			r := <-p.done
			p.done <- r // for the cleanup
			if r.Mode != m.want {
				b.Fatalf("relay took %v, want %v", r.Mode, m.want)
			}
		})
	}
}

// BenchmarkRelayBulk: the server streams 32 KiB writes to the client
// through the relay, as a large result set does.
func BenchmarkRelayBulk(b *testing.B) {
	const chunk = 32 << 10
	for _, m := range relayModes {
		b.Run(m.name, func(b *testing.B) {
			p := newRelayPair(b, m.wrap)
			b.SetBytes(chunk)
			b.ReportAllocs()
			n := b.N
			go func() {
				buf := make([]byte, chunk)
				for range n {
					if _, err := p.server.Write(buf); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, chunk)
			b.ResetTimer()
			for range n {
				if _, err := io.ReadFull(p.client, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
