package relay

import (
	"io"
	"net"
	"testing"
)

// benchLegs is client app ⇄ [relay] ⇄ echo server, over loopback.
func benchLegs(b *testing.B, kernel bool) (ac *net.TCPConn, stop func()) {
	ac, cl := pair(b)
	sl, as := pair(b)
	go func() { io.Copy(as, as); as.CloseWrite() }() // echo
	done := make(chan struct{})
	if kernel {
		m, err := openSockmapB(b)
		if err != nil {
			b.Fatal(err)
		}
		k, err := JoinKernel(m, cl, sl)
		if err != nil {
			b.Fatal(err)
		}
		k.Start(0, func(Result) { close(done) })
	} else {
		go func() { Relay(cl, sl); close(done) }()
	}
	return ac, func() {
		ac.CloseWrite()
		io.Copy(io.Discard, ac)
		<-done
		for _, c := range []*net.TCPConn{ac, cl, sl, as} {
			c.Close()
		}
	}
}

func benchRoundTrip(b *testing.B, kernel bool, size int) {
	ac, stop := benchLegs(b, kernel)
	defer stop()
	msg := make([]byte, size)
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		if _, err := ac.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(ac, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// Small round trips (a TDS request and its answer are usually a packet
// each): the relay's latency.
func BenchmarkRoundTripSplice64(b *testing.B)  { benchRoundTrip(b, false, 64) }
func BenchmarkRoundTripSockmap64(b *testing.B) { benchRoundTrip(b, true, 64) }

// 1 MiB echoed: throughput.
func BenchmarkEchoSplice1M(b *testing.B)  { benchRoundTrip(b, false, 1<<20) }
func BenchmarkEchoSockmap1M(b *testing.B) { benchRoundTrip(b, true, 1<<20) }
