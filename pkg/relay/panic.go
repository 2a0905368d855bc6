package relay

import (
	"fmt"
	"net"
	"runtime/debug"
)

// PanicError is a panic raised in one of a relay's own goroutines (a
// direction of Relay, the server direction of Framed). A panic there
// would end the whole process, since the session's recovery runs on
// another goroutine; instead the relay closes both conns, waits for the
// other direction, and raises a *PanicError on the goroutine that called
// it, where the session recovers it (slot released once, logged with
// Stack, counted).
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the stack of the goroutine that panicked
}

func (p *PanicError) Error() string { return fmt.Sprintf("relay panic: %v", p.Value) }

// catchPanic, deferred first in a relay goroutine, turns a panic into a
// *PanicError stored by keep, and closes both conns so that the other
// direction ends too.
func catchPanic(keep func(*PanicError), conns ...net.Conn) {
	r := recover()
	if r == nil {
		return
	}
	keep(&PanicError{Value: r, Stack: debug.Stack()})
	for _, c := range conns {
		c.Close()
	}
}
