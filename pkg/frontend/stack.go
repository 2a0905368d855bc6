package frontend

import (
	"runtime/debug"

	"github.com/tdsgate/tdsgate/pkg/relay"
)

// onFreshStack runs f on a goroutine of its own and waits for it to
// return.
//
// A goroutine's stack grows to the deepest call it has made and shrinks
// back only when a garbage collection finds it mostly unused, which an
// idle proxy may not run for hours. The login's calls are the deepest a
// session makes (TLS handshakes, LOGIN7, the backend's login), and the
// session goroutine then idles in the relay: run there, they would leave
// it holding a stack several times what the relay needs, for the
// session's whole life. Run here, that stack goes back to the runtime
// when f returns, and the session goroutine keeps the small one it
// started with. A panic in f is raised again on the caller as a
// *relay.PanicError carrying f's stack.
func onFreshStack(f func()) {
	done := make(chan *relay.PanicError, 1)
	go func() {
		var p *relay.PanicError
		defer func() { done <- p }()
		defer func() {
			if r := recover(); r != nil {
				p = &relay.PanicError{Value: r, Stack: debug.Stack()}
			}
		}()
		f()
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}
