package relay

import (
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// benchPeek runs benchBulk with walkQueued finding the headers the way
// mode says (peek_test.go), whatever the packet size.
func benchPeek(b *testing.B, mode peekMode, ps int) {
	defer setPeekMode(mode)()
	benchBulk(b, true, false, ps)
}

func BenchmarkBulkHop4K(b *testing.B)   { benchPeek(b, modeHop, 4096) }
func BenchmarkBulkPeek4K(b *testing.B)  { benchPeek(b, modeRun, 4096) }
func BenchmarkBulkHop8K(b *testing.B)   { benchPeek(b, modeHop, 8192) }
func BenchmarkBulkPeek8K(b *testing.B)  { benchPeek(b, modeRun, 8192) }
func BenchmarkBulkHop16K(b *testing.B)  { benchPeek(b, modeHop, 16384) }
func BenchmarkBulkPeek16K(b *testing.B) { benchPeek(b, modeRun, 16384) }
func BenchmarkBulkHop32K(b *testing.B)  { benchPeek(b, modeHop, tds.MaxPacketSize) }
func BenchmarkBulkPeek32K(b *testing.B) { benchPeek(b, modeRun, tds.MaxPacketSize) }

func BenchmarkBulkSplice4K(b *testing.B)     { benchBulk(b, false, false, 4096) }
func BenchmarkBulkFramed4K(b *testing.B)     { benchBulk(b, true, false, 4096) }
func BenchmarkBulkFramed8K(b *testing.B)     { benchBulk(b, true, false, 8192) }
func BenchmarkBulkFramed32K(b *testing.B)    { benchBulk(b, true, false, tds.MaxPacketSize) }
func BenchmarkBulkTLS4K(b *testing.B)        { benchBulk(b, false, true, 4096) }
func BenchmarkBulkFramedTLS4K(b *testing.B)  { benchBulk(b, true, true, 4096) }
func BenchmarkBulkFramedTLS32K(b *testing.B) { benchBulk(b, true, true, tds.MaxPacketSize) }

// benchWalk measures walkQueued alone, as the mode says (peek_test.go),
// on 1 MiB of ps-byte packets freshly queued by another thread (so that
// the peeked bytes come from another core's cache, as in a relay), each
// time after a few bytes of another length taken off first (so that the
// bytes start anywhere in a page, as a chunk in a relay does: a copy
// whose destination lies 1 to 32 bytes past its source modulo 4 KiB runs
// 5–7 times slower on this machine). It reports the walking thread's CPU
// time per GB walked (walk-cpu-s/GB), the queueing and draining not
// counted.
func benchWalk(b *testing.B, mode peekMode, ps int) { benchWalkHow(b, mode, false, ps) }

// hopTrunc hops from header to header of n queued bytes the other way:
// SO_PEEK_OFF set once, a header peeked (the offset moves on by 8), the
// body skipped with MSG_PEEK|MSG_TRUNC (the offset moves on by its
// length, nothing copied). Two calls per packet, like walkFD's hop
// (setsockopt and a peek); evaluated only (BenchmarkWalkTrunc*).
func hopTrunc(fd, n int, v *visitor) (int, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return 0, err
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
	var hdr [tds.HeaderLen]byte
	m := 0
	for m < n {
		if k, err := peekOnce(fd, hdr[:]); err != nil || k < len(hdr) {
			return m, err
		}
		h, err := v.header(hdr[:])
		if err != nil {
			return m, err
		}
		if body := int(h.Length) - tds.HeaderLen; body > 0 {
			k, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(body), unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
			if e != 0 || int(k) != body {
				return m, fmt.Errorf("skip: %d, %v", k, e)
			}
		}
		m += int(h.Length)
	}
	return m, nil
}

func benchWalkHow(b *testing.B, mode peekMode, trunc bool, ps int) {
	defer setPeekMode(mode)()
	s := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, ps, make([]byte, (1<<20)/ps*(ps-tds.HeaderLen)))
	s[len(s)-ps+1] &^= tds.StatusEOM // one message, going on
	a, c := pair(b)
	defer a.Close()
	defer c.Close()
	c.SetReadBuffer(4 << 20)
	a.SetWriteBuffer(4 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	v := &visitor{
		header: func(hdr []byte) (tds.Header, error) { return tds.ParseHeader(hdr, tds.MaxPacketSize) },
		end:    func(tds.Header) {},
	}
	var w walker
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	drain := make([]byte, 256<<10)
	take := func(n int) {
		for k := 0; k < n; {
			m, err := unix.Read(fd, drain[:min(len(drain), n-k)])
			if err != nil {
				b.Fatal(err)
			}
			k += m
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	var cpu time.Duration
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		pad := rnd.IntN(4096)
		go func() { a.Write(drain[:pad]); a.Write(s) }()
		for {
			n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
			if n >= pad+len(s) {
				break
			}
			runtime.Gosched()
		}
		take(pad)
		t0 := threadCPU()
		var m int
		var werr error
		if trunc {
			m, err = hopTrunc(fd, len(s), v)
		} else {
			m, werr, err = walkQueued(rc, &w, v, len(s))
		}
		cpu += threadCPU() - t0
		if m != len(s) || werr != nil || err != nil {
			b.Fatal(m, werr, err)
		}
		take(len(s))
	}
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(len(s))/1e9), "walk-cpu-s/GB")
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func BenchmarkWalkRun4K(b *testing.B)    { benchWalk(b, modeRun, 4096) }
func BenchmarkWalkHop4K(b *testing.B)    { benchWalk(b, modeHop, 4096) }
func BenchmarkWalkTrunc4K(b *testing.B)  { benchWalkHow(b, modeHop, true, 4096) }
func BenchmarkWalkRun8K(b *testing.B)    { benchWalk(b, modeRun, 8192) }
func BenchmarkWalkHop8K(b *testing.B)    { benchWalk(b, modeHop, 8192) }
func BenchmarkWalkRun16K(b *testing.B)   { benchWalk(b, modeRun, 16384) }
func BenchmarkWalkHop16K(b *testing.B)   { benchWalk(b, modeHop, 16384) }
func BenchmarkWalkTrunc16K(b *testing.B) { benchWalkHow(b, modeHop, true, 16384) }
func BenchmarkWalkRun32K(b *testing.B)   { benchWalk(b, modeRun, tds.MaxPacketSize) }
func BenchmarkWalkHop32K(b *testing.B)   { benchWalk(b, modeHop, tds.MaxPacketSize) }
