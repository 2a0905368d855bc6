//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Without CAP_BPF/CAP_NET_ADMIN the sockmap relay does not load: Open
// fails with ErrUnavailable naming what is missing, and NewSockmap logs
// exactly one warning and returns nil (the proxy then splices). The
// capabilities are dropped on one locked OS thread only (they are per
// thread), which is never given back to the runtime.
func TestSockmapWithoutCaps(t *testing.T) {
	if os := runtime.GOOS; os != "linux" {
		t.Fatalf("linux only, not %s", os)
	}
	type out struct {
		err    error
		nilMap bool
		log    string
	}
	var o out
	withoutCaps(t, func() {
		m, err := OpenSockmap(16)
		if m != nil {
			m.Close()
		}
		var buf bytes.Buffer
		nm := NewSockmap(16, slog.New(slog.NewTextHandler(&buf, nil)))
		o = out{err: err, nilMap: nm == nil, log: buf.String()}
	})
	if !errors.Is(o.err, ErrUnavailable) || !strings.Contains(o.err.Error(), "CAP_BPF") {
		t.Errorf("OpenSockmap without capabilities: %v; want ErrUnavailable naming CAP_BPF", o.err)
	}
	if !o.nilMap || strings.Count(o.log, "\n") != 1 || !strings.Contains(o.log, "level=WARN") || !strings.Contains(o.log, "relayed with splice") {
		t.Errorf("NewSockmap without capabilities: nil %v, logged %q; want nil and one warning", o.nilMap, o.log)
	}
}

// withoutCaps runs f on a locked OS thread whose effective capabilities
// are dropped (they are per thread); the thread is never given back to the
// runtime: it exits with its goroutine.
func withoutCaps(t *testing.T, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective, data[1].Effective = 0, 0
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("dropping the capabilities: %v", err)
	}
}

// Join puts two entries in the map (which socket each redirects to is
// checked by pkg/relay's tests, through traffic), refuses a second join of
// the same sockets, and Leave (or closing the sockets) removes them.
func TestSockmapJoinLeave(t *testing.T) {
	m, err := OpenSockmap(4)
	if err != nil {
		t.Fatalf("needs root (CAP_BPF, CAP_NET_ADMIN): %v", err)
	}
	defer m.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := func() (*net.TCPConn, *net.TCPConn) {
		ch := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); ch <- c }()
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return a.(*net.TCPConn), (<-ch).(*net.TCPConn)
	}
	a, b := dial()
	defer a.Close()
	defer b.Close()
	if err := m.Join(a, b); err != nil {
		t.Fatal(err)
	}
	if n := m.Len(); n != 2 {
		t.Fatalf("Len = %d after Join, want 2", n)
	}
	ca, _ := Cookie(a)
	cb, _ := Cookie(b)
	if ca == 0 || cb == 0 || ca == cb {
		t.Fatalf("cookies %d, %d", ca, cb)
	}
	if err := m.Join(a, b); err == nil {
		t.Error("joining the same sockets twice succeeded")
	}
	if n := m.Len(); n != 2 {
		t.Errorf("Len = %d after a refused second Join, want 2", n)
	}
	if err := m.Leave(ca, cb); err != nil {
		t.Fatal(err)
	}
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d after Leave, want 0", n)
	}
	// A closed socket leaves the map by itself.
	c, d := dial()
	if err := m.Join(c, d); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.Close()
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d after both sockets closed, want 0", n)
	}
}
