package relay

import (
	"fmt"
	"net"
	"runtime/debug"
)

// PanicError is a panic raised in one of a relay's own goroutines (a
// direction of Start or StartFramed). A panic there would end the whole
// process, since the session's recovery is not on that goroutine;
// instead the relay closes both conns, lets the other direction end, and
// hands a *PanicError to the relay's end (Relay and Framed raise it again
// on their caller), where the session recovers it (slot released once,
// logged with Stack, counted).
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the stack of the goroutine that panicked
}

func (p *PanicError) Error() string { return fmt.Sprintf("relay panic: %v", p.Value) }

// panicked turns a recovered panic v into a *PanicError with the current
// stack (call it from the deferred function that recovered), and closes
// conns so that the other direction ends too.
func panicked(v any, conns ...net.Conn) *PanicError {
	p := &PanicError{Value: v, Stack: debug.Stack()}
	for _, c := range conns {
		c.Close()
	}
	return p
}
