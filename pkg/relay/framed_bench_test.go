package relay

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// The bulk benchmarks measure the relay's own CPU per GB: the client and
// the server apps run in a child process (this test binary, run again
// with benchAppEnv set), so that the benchmark process's CPU time
// (getrusage) is the relay's alone. Each iteration is one request and an
// answer of benchAnswer bytes in packets of the given size.
//
//	go test -run '^$' -bench 'Bulk' -benchtime 8x ./pkg/relay/
//
// cpu-s/GB is the metric to compare (lower is better); MB/s depends on
// the machine's other work.

const (
	benchAppEnv = "RELAY_BENCH_APP"
	benchAnswer = 32 << 20
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchAppEnv); spec != "" {
		if err := benchApp(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench app:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var benchCert = sync1(func() tls.Certificate {
	c, err := certutil.SelfSigned("relay-bench")
	if err != nil {
		panic(err)
	}
	return c
})

func sync1[T any](f func() T) func() T {
	var v T
	var done bool
	return func() T {
		if !done {
			v, done = f(), true
		}
		return v
	}
}

// benchApp is the child: "clientAddr serverAddr packetSize answers tls".
func benchApp(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 5 {
		return fmt.Errorf("spec %q", spec)
	}
	ps, _ := strconv.Atoi(f[2])
	answers, _ := strconv.Atoi(f[3])
	useTLS := f[4] == "tls"
	sc, err := net.Dial("tcp", f[1])
	if err != nil {
		return err
	}
	cc, err := net.Dial("tcp", f[0])
	if err != nil {
		return err
	}
	var server, client net.Conn = sc, cc
	if useTLS {
		cert := benchCert()
		server = tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}})
		client = tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	}
	req := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT bulk"))
	ans := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, ps, make([]byte, benchAnswer-benchAnswer/ps*tds.HeaderLen))
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, len(req))
		for range answers {
			if _, err := io.ReadFull(server, buf); err != nil {
				errc <- err
				return
			}
			if _, err := server.Write(ans); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 256<<10)
	for range answers {
		if _, err := client.Write(req); err != nil {
			return err
		}
		for got := 0; got < len(ans); {
			n, err := client.Read(buf[:min(len(buf), len(ans)-got)])
			if err != nil {
				return err
			}
			got += n
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	cc.Close()
	time.Sleep(50 * time.Millisecond)
	sc.Close()
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchBulk relays b.N answers of benchAnswer bytes in packets of ps
// bytes, framed or not, plaintext or with TLS on both legs.
func benchBulk(b *testing.B, framed, useTLS bool, ps int) {
	lc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lc.Close()
	ls, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ls.Close()
	mode := "plain"
	if useTLS {
		mode = "tls"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d %s", benchAppEnv, lc.Addr(), ls.Addr(), ps, b.N, mode))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	s, err := ls.Accept()
	if err != nil {
		b.Fatal(err)
	}
	c, err := lc.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	defer c.Close()
	var cl, sl net.Conn = c, s
	if useTLS {
		cl = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{benchCert()}})
		sl = tls.Client(s, &tls.Config{InsecureSkipVerify: true})
	}
	b.SetBytes(benchAnswer)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	if framed {
		r := Framed(cl, sl, c.(*net.TCPConn), s.(*net.TCPConn), FramedOptions{Version: tds.Version74})
		if r.Broken != BrokenNone || r.ServerMessages != int64(b.N) {
			b.Fatalf("%+v", r)
		}
	} else {
		// The plain relay ends when both sides have: the server app
		// closes its end after the client.
		Relay(cl, sl)
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*benchAnswer/1e9), "cpu-s/GB")
}

// benchHop runs benchBulk with walkQueued hopping from header to header
// (hop) or peeking whole runs, whatever the packet size.
func benchHop(b *testing.B, hop bool, ps int) {
	defer func(h int) { hopMin = h }(hopMin)
	hopMin = 1 << 30
	if hop {
		hopMin = 0
	}
	benchBulk(b, true, false, ps)
}

func BenchmarkBulkHop4K(b *testing.B)   { benchHop(b, true, 4096) }
func BenchmarkBulkPeek4K(b *testing.B)  { benchHop(b, false, 4096) }
func BenchmarkBulkHop8K(b *testing.B)   { benchHop(b, true, 8192) }
func BenchmarkBulkPeek8K(b *testing.B)  { benchHop(b, false, 8192) }
func BenchmarkBulkHop16K(b *testing.B)  { benchHop(b, true, 16384) }
func BenchmarkBulkPeek16K(b *testing.B) { benchHop(b, false, 16384) }
func BenchmarkBulkHop32K(b *testing.B)  { benchHop(b, true, tds.MaxPacketSize) }
func BenchmarkBulkPeek32K(b *testing.B) { benchHop(b, false, tds.MaxPacketSize) }

func BenchmarkBulkSplice4K(b *testing.B)     { benchBulk(b, false, false, 4096) }
func BenchmarkBulkFramed4K(b *testing.B)     { benchBulk(b, true, false, 4096) }
func BenchmarkBulkFramed8K(b *testing.B)     { benchBulk(b, true, false, 8192) }
func BenchmarkBulkFramed32K(b *testing.B)    { benchBulk(b, true, false, tds.MaxPacketSize) }
func BenchmarkBulkTLS4K(b *testing.B)        { benchBulk(b, false, true, 4096) }
func BenchmarkBulkFramedTLS4K(b *testing.B)  { benchBulk(b, true, true, 4096) }
func BenchmarkBulkFramedTLS32K(b *testing.B) { benchBulk(b, true, true, tds.MaxPacketSize) }
