package listener

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServe runs Serve in a goroutine; the returned stop cancels it and
// returns its error (failing the test if it takes more than 5 s).
func startServe(t *testing.T, lns []net.Listener, handle func(net.Conn), opts ...Option) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lns, handle, opts...) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return within 5 s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// settleGoroutines waits until the goroutine count is back to at most base.
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, want <= %d\n%s", n, base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeRawConnsAndCancel(t *testing.T) {
	base := runtime.NumGoroutine()
	lns, err := Listen(context.Background(), "127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	addr := lns[0].Addr().String()

	type result struct {
		raw              bool
		nodelay, keepOn  int
		keepIdle, keepIv int
		echo             string
	}
	results := make(chan result, 64)
	var handlers sync.WaitGroup
	handle := func(c net.Conn) {
		defer c.Close()
		tc, ok := c.(*net.TCPConn)
		r := result{raw: ok}
		if ok {
			r.nodelay = sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			r.keepOn = sockoptInt(t, tc, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			r.keepIdle = sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
			r.keepIv = sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err == nil {
			r.echo = string(b)
			_, _ = c.Write(b)
		}
		results <- r
	}
	stop := startServe(t, lns, handle, WithWaitGroup(&handlers))

	const conns = 20
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Fatalf("conn %d: echo %q, %v", i, got, err)
		}
		_ = c.Close()
		r := <-results
		if !r.raw {
			t.Fatal("handler got a wrapped conn, want *net.TCPConn")
		}
		if r.nodelay != 1 || r.keepOn != 1 || r.keepIdle != 30 || r.keepIv != 30 {
			t.Fatalf("sockopts: nodelay=%d keepalive=%d idle=%d interval=%d, want 1 1 30 30", r.nodelay, r.keepOn, r.keepIdle, r.keepIv)
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v after cancel", err)
	}
	// The listeners are closed: nothing accepts any more.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("dial succeeded after Serve returned")
	}
	handlers.Wait()
	settleGoroutines(t, base)
}

func TestServeKeepAliveOption(t *testing.T) {
	for _, tt := range []struct {
		d          time.Duration
		on, idleS  int
		checkValue bool
	}{
		{7 * time.Second, 1, 7, true},
		{-1, 0, 0, false},
	} {
		lns := listenT(t, "127.0.0.1:0", 1)
		got := make(chan [2]int, 1)
		startServe(t, lns, func(c net.Conn) {
			defer c.Close()
			tc := c.(*net.TCPConn)
			got <- [2]int{sockoptInt(t, tc, unix.SOL_SOCKET, unix.SO_KEEPALIVE), sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)}
		}, WithKeepAlive(tt.d))
		c, err := net.Dial("tcp", lns[0].Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		g := <-got
		_ = c.Close()
		if g[0] != tt.on || (tt.checkValue && g[1] != tt.idleS) {
			t.Errorf("WithKeepAlive(%v): SO_KEEPALIVE=%d TCP_KEEPIDLE=%d, want %d %d", tt.d, g[0], g[1], tt.on, tt.idleS)
		}
	}
}

func TestServeProxyProtocol(t *testing.T) {
	lns := listenT(t, "127.0.0.1:0", 2)
	addr := lns[0].Addr().String()
	var logs syncBuffer
	type result struct {
		conn    net.Conn
		payload string
	}
	results := make(chan result, 4)
	var handled atomic.Int32
	var refused sync.Map // reason → *atomic.Int32
	count := func(reason string) {
		n, _ := refused.LoadOrStore(reason, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	}
	startServe(t, lns, func(c net.Conn) {
		handled.Add(1)
		b := make([]byte, 5)
		_, _ = io.ReadFull(c, b)
		results <- result{c, string(b)}
	}, WithProxyProtocol(200*time.Millisecond), WithTrustedProxies([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		WithLogger(testLogger(&logs)), WithRefusals(NewRefusalLog(testLogger(&logs), time.Nanosecond), count))

	t.Run("valid header", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(append(AppendProxyHeader(nil, false, v4Src, v4Dst, sampleTLVs()), "hello"...)); err != nil {
			t.Fatal(err)
		}
		r := <-results
		defer r.conn.Close()
		pc, ok := r.conn.(*Conn)
		if !ok {
			t.Fatalf("handler got %T, want *listener.Conn", r.conn)
		}
		if pc.RemoteAddr().String() != v4Src.String() || pc.LocalAddr().String() != v4Dst.String() {
			t.Fatalf("addresses %v -> %v, want %v -> %v", pc.RemoteAddr(), pc.LocalAddr(), v4Src, v4Dst)
		}
		raw, ok := TCPConn(pc)
		if !ok || raw != pc.TCPConn || pc.NetConn() != net.Conn(raw) {
			t.Fatal("TCPConn/NetConn do not return the embedded *net.TCPConn")
		}
		if raw.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("raw conn's peer %v, want the dialer %v", raw.RemoteAddr(), c.LocalAddr())
		}
		if r.payload != "hello" {
			t.Fatalf("payload after header %q, want hello", r.payload)
		}
	})
	t.Run("bad headers are closed without calling handle", func(t *testing.T) {
		before := handled.Load()
		for _, in := range []string{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nhello", "\x12\x01\x00\x2f\x00\x00\x01\x00hello-tds-prelogin", ""} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if in != "" {
				if _, err := c.Write([]byte(in)); err != nil {
					t.Fatal(err)
				}
			}
			// "" is a silent client: closed after the header timeout.
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
				t.Fatalf("%q: read %d, %v; want the server to close (EOF or RST)", in, n, err)
			}
			_ = c.Close()
		}
		if handled.Load() != before {
			t.Fatal("handle was called for a connection without a valid header")
		}
		if n, _ := refused.Load(RefusedBadProxyHeader); n == nil || n.(*atomic.Int32).Load() != 3 {
			t.Errorf("refusals counted as %s: %v, want 3", RefusedBadProxyHeader, refusedCount(n))
		}
		out := logs.String()
		for _, want := range []string{"PROXY protocol v1 is not supported; use send-proxy-v2", "missing PROXY protocol v2 signature", "i/o timeout"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("health check connect-close logs at debug", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(logs.String(), "level=DEBUG msg=\"rejected connection: bad PROXY header\"") {
			if time.Now().After(deadline) {
				t.Fatalf("no debug line for a connect-close:\n%s", logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// fakeListener returns queued errors from Accept, then blocks until closed.
type fakeListener struct {
	mu      sync.Mutex
	errs    []error
	calls   []time.Time
	closed  chan struct{}
	closeMu sync.Once
	conns   chan net.Conn
}

func newFakeListener(errs ...error) *fakeListener {
	return &fakeListener{errs: errs, closed: make(chan struct{}), conns: make(chan net.Conn, 1)}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.closeMu.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func (f *fakeListener) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: &osSyscallError{"accept4", errno}}
}

// osSyscallError mimics os.SyscallError (which net wraps accept errors in).
type osSyscallError struct {
	call string
	err  error
}

func (e *osSyscallError) Error() string { return e.call + ": " + e.err.Error() }
func (e *osSyscallError) Unwrap() error { return e.err }

func TestServeBacksOffOnTemporaryErrors(t *testing.T) {
	var errs []error
	for range 4 {
		errs = append(errs, acceptErr(syscall.EMFILE))
	}
	errs = append(errs, acceptErr(syscall.ENFILE), acceptErr(syscall.ECONNABORTED))
	f := newFakeListener(errs...)
	var logs syncBuffer
	handled := make(chan net.Conn, 1)
	stop := startServe(t, []net.Listener{f}, func(c net.Conn) { handled <- c }, WithLogger(testLogger(&logs)))

	// 5+10+20+40+80+160 ms of back-off, then Accept blocks.
	deadline := time.Now().Add(3 * time.Second)
	for len(f.callTimes()) < 7 {
		if time.Now().After(deadline) {
			t.Fatalf("Accept called %d times, want 7", len(f.callTimes()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	calls := f.callTimes()
	if len(calls) != 7 {
		t.Fatalf("Accept called %d times, want 7", len(calls))
	}
	want := 5 * time.Millisecond
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("retry %d after %v, want >= %v", i, gap, want)
		}
		want *= 2
	}
	// A good accept after the errors is handled (and a net.Pipe conn,
	// not being TCP, is passed through untouched).
	a, b := net.Pipe()
	defer b.Close()
	f.conns <- a
	select {
	case c := <-handled:
		if c != a {
			t.Fatal("handler got a different conn")
		}
		_ = c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("conn after the errors not handled")
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	out := logs.String()
	for _, w := range []string{"too many open files", "backoff=160ms", "listener=127.0.0.1:1"} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
}

func TestServeBackoffCapAndCancelDuringBackoff(t *testing.T) {
	var errs []error
	for range 12 {
		errs = append(errs, acceptErr(syscall.EMFILE))
	}
	f := newFakeListener(errs...)
	var logs syncBuffer
	stop := startServe(t, []net.Listener{f}, func(c net.Conn) { _ = c.Close() }, WithLogger(testLogger(&logs)))
	// Back-offs after calls 1..8 are 5, 10, ..., 640 ms (1.275 s in all);
	// after call 9 the doubling is capped at 1 s. Cancel during that wait:
	// Serve must return at once, not when the timer fires.
	deadline := time.Now().Add(5 * time.Second)
	for len(f.callTimes()) < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("Accept called %d times in 5 s, want 9", len(f.callTimes()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Serve took %v to return when canceled during a 1 s back-off", d)
	}
	if n := len(f.callTimes()); n != 9 {
		t.Fatalf("%d Accept calls, want 9", n)
	}
	out := logs.String()
	if !strings.Contains(out, "backoff=1s") || strings.Contains(out, "backoff=1.28s") || strings.Contains(out, "backoff=2s") {
		t.Fatalf("back-off not capped at 1 s:\n%s", out)
	}
}

func TestServePermanentErrorStopsAll(t *testing.T) {
	bad := newFakeListener(acceptErr(syscall.EBADF))
	good := listenT(t, "127.0.0.1:0", 1)[0]
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), []net.Listener{good, bad}, func(c net.Conn) { _ = c.Close() })
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, syscall.EBADF) || !strings.Contains(err.Error(), "accept on 127.0.0.1:1") {
			t.Fatalf("Serve returned %v, want the EBADF naming the listener", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after a permanent accept error")
	}
	if _, err := good.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("other listener not closed: %v", err)
	}
}

func TestServeListenersClosedElsewhere(t *testing.T) {
	lns, err := Listen(context.Background(), "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), lns, func(c net.Conn) { _ = c.Close() }) }()
	closeListeners(lns)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return once every listener was closed")
	}
	if err := Serve(context.Background(), nil, func(net.Conn) {}); err == nil {
		t.Fatal("Serve with no listeners: no error")
	}
}

// TestServeWaitGroup: a session accepted before cancel is counted before
// Serve returns, so cancel → Serve returns → wg.Wait() drains it.
func TestServeWaitGroup(t *testing.T) {
	lns := listenT(t, "127.0.0.1:0", 2)
	var wg sync.WaitGroup
	entered := make(chan struct{})
	release := make(chan struct{})
	stop := startServe(t, lns, func(c net.Conn) {
		defer c.Close()
		close(entered)
		<-release
	}, WithWaitGroup(&wg))
	c, err := net.Dial("tcp", lns[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-entered
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("wg.Wait returned while the session was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		t.Fatal("wg.Wait did not return after the session ended")
	}
}

func refusedCount(n any) int32 {
	if n == nil {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// TestListenLeavesKeepAliveToServe: a connection accepted from Listen's
// listeners has no keepalive until Serve sets it, so that an accepted
// connection pays for one keepalive setup, not two.
func TestListenLeavesKeepAliveToServe(t *testing.T) {
	lns := listenT(t, "127.0.0.1:0", 1)
	c, err := net.Dial("tcp", lns[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := lns[0].Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tc := s.(*net.TCPConn)
	if on := sockoptInt(t, tc, unix.SOL_SOCKET, unix.SO_KEEPALIVE); on != 0 {
		t.Errorf("SO_KEEPALIVE=%d on a connection Serve has not seen, want 0 (Serve sets it)", on)
	}
	if nd := sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_NODELAY); nd != 1 {
		t.Errorf("TCP_NODELAY=%d, want 1", nd)
	}
}
