package listener

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenT opens n listeners on 127.0.0.1:port (0 for a free port) and closes
// them at the end of the test.
func listenT(t *testing.T, addr string, n int) []net.Listener {
	t.Helper()
	lns, err := Listen(context.Background(), addr, n)
	if err != nil {
		t.Fatalf("Listen(%s, %d): %v", addr, n, err)
	}
	t.Cleanup(func() { closeListeners(lns) })
	return lns
}

func closeListeners(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

func portOf(t *testing.T, a net.Addr) int {
	t.Helper()
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		t.Fatalf("address %v is %T, want *net.TCPAddr", a, a)
	}
	return ta.Port
}

// sockoptInt reads an integer socket option from a listener or conn. It
// reports a failure with t.Errorf and returns -1, so handlers may call it.
func sockoptInt(t *testing.T, sc syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Errorf("SyscallConn: %v", err)
		return -1
	}
	v, gerr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		gerr = err
	}
	if gerr != nil {
		t.Errorf("getsockopt(%d, %d): %v", level, opt, gerr)
		return -1
	}
	return v
}

func TestListenSharesPortAndSpreads(t *testing.T) {
	const n, conns = 4, 200
	lns := listenT(t, "127.0.0.1:0", n)
	if len(lns) != n {
		t.Fatalf("got %d listeners, want %d", len(lns), n)
	}
	port := portOf(t, lns[0].Addr())
	if port == 0 {
		t.Fatal("port 0 after Listen")
	}
	for i, ln := range lns {
		if p := portOf(t, ln.Addr()); p != port {
			t.Errorf("listener %d on port %d, want %d", i, p, port)
		}
		tl := ln.(*net.TCPListener)
		if v := sockoptInt(t, tl, unix.SOL_SOCKET, unix.SO_REUSEPORT); v != 1 {
			t.Errorf("listener %d: SO_REUSEPORT = %d", i, v)
		}
		if v := sockoptInt(t, tl, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
			t.Errorf("listener %d: SO_REUSEADDR = %d", i, v)
		}
	}

	counts := make([]int, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				counts[i]++
				mu.Unlock()
				_ = c.Close()
			}
		}()
	}
	addr := lns[0].Addr().String()
	clients := make([]net.Conn, 0, conns)
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		clients = append(clients, c)
	}
	// Every connection is accepted by some listener.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, c := range counts {
			total += c
		}
		mu.Unlock()
		if total == conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("accepted %d of %d connections", total, conns)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range clients {
		_ = c.Close()
	}
	closeListeners(lns)
	wg.Wait()
	used := 0
	for _, c := range counts {
		if c > 0 {
			used++
		}
	}
	t.Logf("connections per listener: %v", counts)
	if used < 2 {
		t.Errorf("only %d of %d listeners accepted connections: %v", used, n, counts)
	}
}

func TestListenDefaultN(t *testing.T) {
	lns := listenT(t, "127.0.0.1:0", 0)
	if want := runtime.GOMAXPROCS(0); len(lns) != want {
		t.Fatalf("n=0 gave %d listeners, want GOMAXPROCS=%d", len(lns), want)
	}
}

// acceptAny accepts on any of lns and reports which one.
func acceptAny(lns []net.Listener) (<-chan int, func()) {
	got := make(chan int, 64)
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
				got <- i
			}
		}()
	}
	return got, wg.Wait
}

// TestListenSecondSetZeroDowntime is the restart: a second Listen on the same
// address while the first set is open, then the first set goes away and new
// connections land on the second.
func TestListenSecondSetZeroDowntime(t *testing.T) {
	first, err := Listen(context.Background(), "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeListeners(first)
	addr := first[0].Addr().String()

	second := listenT(t, addr, 2)
	if second[0].Addr().String() != addr {
		t.Fatalf("second set on %s, want %s", second[0].Addr(), addr)
	}
	got, wait := acceptAny(second)

	closeListeners(first)
	const conns = 20
	for range conns {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("dial after closing the first set: %v", err)
		}
		_ = c.Close()
	}
	for i := range conns {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("second set accepted %d of %d connections", i, conns)
		}
	}
	closeListeners(second)
	wait()
}

func TestListenPortHeldWithoutReusePort(t *testing.T) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	addr := plain.Addr().String()

	lns, err := Listen(context.Background(), addr, 2)
	if err == nil {
		closeListeners(lns)
		t.Fatalf("Listen on %s held by a plain listener succeeded", addr)
	}
	want := "address " + addr + " already in use (by a process without SO_REUSEPORT?)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q\ndoes not contain %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %v does not wrap EADDRINUSE", err)
	}
}

func TestListenErrorsAndRelease(t *testing.T) {
	// Bad address: nothing opened, error names the address.
	if _, err := Listen(context.Background(), "127.0.0.1", 2); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("Listen without port: err = %v", err)
	}
	if _, err := Listen(context.Background(), "192.0.2.1:0", 1); err == nil || !strings.Contains(err.Error(), "192.0.2.1:0") {
		t.Fatalf("Listen on a foreign address: err = %v", err)
	}
	// A port that can be bound then released: opening 3 on it succeeds and
	// closing them frees it for a plain listener.
	lns := listenT(t, "127.0.0.1:0", 3)
	addr := lns[0].Addr().String()
	closeListeners(lns)
	plain, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s not freed after Close: %v", addr, err)
	}
	_ = plain.Close()
}
