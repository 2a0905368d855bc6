package relay

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// panicReader is a conn whose Read panics once data is asked for: a bug
// in a relay direction's own goroutine.
type panicReader struct{ net.Conn }

func (p panicReader) Read([]byte) (int, error) { panic("injected relay panic") }

// runForPanic runs f on its own goroutine and returns what it panicked
// with (nil if it returned).
func runForPanic(t *testing.T, f func()) any {
	t.Helper()
	got := make(chan any, 1)
	go func() {
		defer func() { got <- recover() }()
		f()
	}()
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end after a panic in one of its goroutines")
		return nil
	}
}

// TestRelayPanicReachesCaller: a panic in a direction's goroutine does
// not end the process; both conns are closed, the other direction ends,
// and Relay raises a *PanicError with the panicking goroutine's stack on
// the caller's goroutine, where the session recovers it.
func TestRelayPanicReachesCaller(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	defer appClient.Close()
	defer appServer.Close()
	r := runForPanic(t, func() { Relay(panicReader{clientLeg}, serverLeg) })
	var pe *PanicError
	if err, ok := r.(error); !ok || !errors.As(err, &pe) {
		t.Fatalf("Relay panicked with %v (%T), want *PanicError", r, r)
	}
	if pe.Value != "injected relay panic" || !strings.Contains(string(pe.Stack), "panicReader") {
		t.Fatalf("PanicError %v, stack:\n%s", pe.Value, pe.Stack)
	}
	// Both legs were closed: the apps see the end.
	appServer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := appServer.Read(make([]byte, 1)); err == nil {
		t.Fatal("server leg still open after the panic")
	}
}

// TestFramedPanicReachesCaller: the same for the framed relay's server
// direction, which runs on its own goroutine.
func TestFramedPanicReachesCaller(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	defer appClient.Close()
	defer appServer.Close()
	r := runForPanic(t, func() {
		Framed(clientLeg, panicReader{serverLeg}, clientLeg, serverLeg, FramedOptions{})
	})
	pe, ok := r.(*PanicError)
	if !ok || pe.Value != "injected relay panic" {
		t.Fatalf("Framed panicked with %v (%T), want *PanicError", r, r)
	}
	appClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := appClient.Read(make([]byte, 1)); err == nil {
		t.Fatal("client leg still open after the panic")
	}
}
