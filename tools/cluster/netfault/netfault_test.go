package netfault

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves a line echo on a free port.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(l))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

// TestModes: Pass forwards; Stall holds bytes (the round trip times out)
// and releases them on Pass; Drop resets open connections and refuses new
// ones; Pass again forwards new connections.
func TestModes(t *testing.T) {
	p, err := New(Fixed(echo(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if l, err := roundTrip(c, r, time.Second); err != nil || l != "ping\n" {
		t.Fatalf("pass: %q %v", l, err)
	}
	p.Set(Stall)
	if l, err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatalf("stall: got %q, want a timeout", l)
	}
	// A new connection during the stall is accepted but not served.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	if _, err := roundTrip(c2, r2, 200*time.Millisecond); err == nil {
		t.Fatal("stall: new connection served")
	}
	p.Set(Pass)
	// The stalled bytes arrive, on c and on c2.
	c.SetDeadline(time.Now().Add(time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "ping\n" {
		t.Fatalf("after stall: %q %v", l, err)
	}
	c2.SetDeadline(time.Now().Add(time.Second))
	if l, err := r2.ReadString('\n'); err != nil || l != "ping\n" {
		t.Fatalf("after stall, waiting conn: %q %v", l, err)
	}
	p.Set(Drop)
	if _, err := roundTrip(c, r, time.Second); err == nil {
		t.Fatal("drop: open connection still works")
	}
	c3, err := net.Dial("tcp", p.Addr())
	if err == nil {
		r3 := bufio.NewReader(c3)
		if _, err := roundTrip(c3, r3, time.Second); err == nil {
			t.Fatal("drop: new connection served")
		}
		c3.Close()
	}
	p.Set(Pass)
	c4, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	if l, err := roundTrip(c4, bufio.NewReader(c4), time.Second); err != nil || l != "ping\n" {
		t.Fatalf("pass after drop: %q %v", l, err)
	}
}

// TestStallAfter: traffic passes until the client sends the match; that
// request reaches the upstream, but its answer is held (the link stalls)
// until Set(Pass).
func TestStallAfter(t *testing.T) {
	p, err := New(Fixed(echo(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.StallAfter([]byte("register"))
	if l, err := roundTrip(c, r, time.Second); err != nil || l != "ping\n" {
		t.Fatalf("before the match: %q %v", l, err)
	}
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("register\n"))
	if l, err := r.ReadString('\n'); err == nil {
		t.Fatalf("after the match: got %q, want the answer held", l)
	}
	if m := p.Mode(); m != Stall {
		t.Fatalf("mode %s after the match, want stall", m)
	}
	p.Set(Pass)
	c.SetDeadline(time.Now().Add(time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "register\n" {
		t.Fatalf("after pass: %q %v (the request must have reached the upstream)", l, err)
	}
}
