package listener

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type reasonCounter struct{ m sync.Map }

func (r *reasonCounter) count(reason string) {
	n, _ := r.m.LoadOrStore(reason, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
}

func (r *reasonCounter) get(reason string) int32 {
	n, ok := r.m.Load(reason)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// expectClosed fails unless the server closes c (EOF or RST) within d.
func expectClosed(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("read %d, %v; want the server to close (EOF or RST)", n, err)
	}
}

// TestUntrustedProxyPeer: with the PROXY protocol on, a header from a peer
// outside the trusted list is refused at accept — closed without a byte
// read, handle never called, counted and logged — while a trusted peer's
// header is honoured. A trusted peer without a header is refused too.
func TestUntrustedProxyPeer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		ok      bool
	}{
		{"other network", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"empty list trusts nobody", nil, false},
		{"loopback trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lns := listenT(t, "127.0.0.1:0", 1)
			var logs syncBuffer
			var refused reasonCounter
			handled := make(chan string, 1)
			startServe(t, lns, func(c net.Conn) {
				handled <- c.RemoteAddr().String()
				_ = c.Close()
			}, WithProxyProtocol(time.Second), WithTrustedProxies(tc.trusted), WithLogger(testLogger(&logs)),
				WithRefusals(NewRefusalLog(testLogger(&logs), time.Hour), refused.count))
			c, err := net.Dial("tcp", lns[0].Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A client that forges its own header, as in the report.
			spoof := netip.MustParseAddrPort("203.0.113.9:4444")
			if _, err := c.Write(append(AppendProxyHeader(nil, false, spoof, v4Dst, nil), "\x12\x01"...)); err != nil {
				t.Fatal(err)
			}
			if tc.ok {
				if got := <-handled; got != spoof.String() {
					t.Fatalf("handled %s, want %s", got, spoof)
				}
				// Trusted, but no header: refused.
				c2, err := net.Dial("tcp", lns[0].Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c2.Close()
				if _, err := c2.Write([]byte("\x12\x01\x00\x2f\x00\x00\x01\x00 plain TDS, no header")); err != nil {
					t.Fatal(err)
				}
				expectClosed(t, c2, 3*time.Second)
				if n := refused.get(RefusedBadProxyHeader); n != 1 {
					t.Errorf("%s counted %d, want 1", RefusedBadProxyHeader, n)
				}
				return
			}
			expectClosed(t, c, 3*time.Second)
			select {
			case got := <-handled:
				t.Fatalf("handle called for an untrusted peer (%s)", got)
			case <-time.After(50 * time.Millisecond):
			}
			if n := refused.get(RefusedUntrustedPeer); n != 1 {
				t.Errorf("%s counted %d, want 1", RefusedUntrustedPeer, n)
			}
			if out := logs.String(); !strings.Contains(out, "PROXY protocol peer not in proxy_protocol.trusted") || !strings.Contains(out, "remote=127.0.0.1:") {
				t.Errorf("log:\n%s", out)
			}
		})
	}
}

// TestMaxConns: past the cap, a new connection is closed at accept; once
// a held one ends, a new one is served again. The live count goes back
// to zero.
func TestMaxConns(t *testing.T) {
	lns := listenT(t, "127.0.0.1:0", 2)
	var logs syncBuffer
	var refused reasonCounter
	var live atomic.Int64
	release := make(chan struct{})
	handled := make(chan struct{}, 10)
	startServe(t, lns, func(c net.Conn) {
		handled <- struct{}{}
		<-release
		_ = c.Close()
	}, WithMaxConns(3), WithConnCount(&live), WithLogger(testLogger(&logs)),
		WithRefusals(NewRefusalLog(testLogger(&logs), time.Hour), refused.count))
	addr := lns[0].Addr().String()
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		<-handled
	}
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c, 3*time.Second)
		c.Close()
	}
	if n := refused.get(RefusedMaxConns); n != 5 {
		t.Errorf("refused %d, want 5", n)
	}
	if got := strings.Count(logs.String(), "max_client_connections reached"); got != 1 {
		t.Errorf("%d log lines for 5 refusals, want 1 (once per interval):\n%s", got, logs.String())
	}
	if n := live.Load(); n != 3 {
		t.Errorf("live %d, want 3", n)
	}
	close(release)
	deadline := time.Now().Add(3 * time.Second)
	for live.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("live %d after the handlers ended", live.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-handled:
	case <-time.After(3 * time.Second):
		t.Fatal("not served after the cap freed up")
	}
	_ = held
}

// TestRefusalLogInterval: one line per reason per interval, with the
// number suppressed in between.
func TestRefusalLogInterval(t *testing.T) {
	var logs syncBuffer
	r := NewRefusalLog(testLogger(&logs), time.Minute)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for i := range 100 {
		r.Refused(RefusedPerSource, "10.0.0.1:1", "refused")
		if i == 50 {
			r.Refused(RefusedMaxConns, "10.0.0.2:1", "refused")
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, logs.String())
	}
	now = now.Add(time.Minute)
	r.Refused(RefusedPerSource, "10.0.0.1:2", "refused")
	out := logs.String()
	if !strings.Contains(out, "refused_since_last_line=99") {
		t.Fatalf("want the 99 suppressed refusals reported:\n%s", out)
	}
}
