package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Mode is the path a session's bytes took.
type Mode uint8

// Relay modes.
const (
	// ModeSplice: both legs raw TCP, kernel-to-kernel with splice(2).
	ModeSplice Mode = iota + 1
	// ModeTLS: at least one leg is TLS; user-space copy through crypto/tls.
	ModeTLS
	// ModeFramed: a pooled session, relayed packet by packet (Framed) so
	// that its backend can be reused; bodies are spliced when both legs
	// are plaintext.
	ModeFramed
	// ModeSockmap: both legs raw TCP, joined in a BPF sockhash whose
	// stream-verdict program sends each segment on to the peer socket in
	// the kernel (Kernel); user space only watches for the ends.
	ModeSockmap
)

func (m Mode) String() string {
	switch m {
	case ModeSplice:
		return "splice"
	case ModeTLS:
		return "tls"
	case ModeFramed:
		return "framed"
	case ModeSockmap:
		return "sockmap"
	}
	return "unknown"
}

// Modes lists every mode, for metrics created at start.
var Modes = []Mode{ModeSplice, ModeTLS, ModeFramed, ModeSockmap}

// Result is what a relay did.
type Result struct {
	Mode Mode
	// ClientToServer and ServerToClient count payload bytes relayed.
	ClientToServer, ServerToClient int64
	// Ended says which side ended the session first.
	Ended Side
	// Err is the first error that was not a clean close.
	Err error
}

// Side names a leg.
type Side uint8

// Sides.
const (
	SideNone Side = iota
	SideClient
	SideServer
)

func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	}
	return "none"
}

// ModeFor reports the mode Relay will use for two legs.
func ModeFor(client, server net.Conn) Mode {
	_, c := client.(*net.TCPConn)
	_, s := server.(*net.TCPConn)
	if c && s {
		return ModeSplice
	}
	return ModeTLS
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type closeWriter interface{ CloseWrite() error }

// Relay copies client→server and server→client until both directions
// end, and returns the counts. When one direction ends cleanly (EOF), the
// other side's write half is closed so it sees the end too, and the other
// direction keeps going until its own end (half-close). When a direction
// fails, the client conn is closed and the server conn half-closed
// (HalfClose), so the other direction ends at once. The server conn is
// never closed here: the caller closes it, after the server has let go
// of the session (backend.Hangup), and only then gives its slot back.
//
// The server→client direction runs on the calling goroutine and only
// client→server on a goroutine of its own, so an idle session costs two
// goroutines (its own and one), not three. Neither holds a buffer while
// it waits on the splice path.
func Relay(client, server net.Conn) Result {
	res := Result{Mode: ModeFor(client, server)}
	type dirResult struct {
		n    int64
		err  error
		from Side
	}
	done := make(chan dirResult, 2)
	var first, abort sync.Once
	var panicked [2]*PanicError
	copyDir := func(dst, src net.Conn, from Side) {
		defer catchPanic(func(p *PanicError) {
			panicked[from-SideClient] = p
			done <- dirResult{from: from}
		}, client, server)
		var n int64
		var err error
		if res.Mode == ModeSplice {
			n, err = spliceIdleFree(dst.(*net.TCPConn), src.(*net.TCPConn))
		} else {
			n, err = copyTLS(dst, src)
		}
		first.Do(func() { res.Ended = from })
		if err == nil {
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			}
		} else {
			abort.Do(func() {
				client.Close()
				HalfClose(server)
			})
		}
		done <- dirResult{n, err, from}
	}
	go copyDir(server, client, SideClient)
	copyDir(client, server, SideServer)
	for i := 0; i < 2; i++ {
		r := <-done
		if r.from == SideClient {
			res.ClientToServer = r.n
		} else {
			res.ServerToClient = r.n
		}
		if r.err != nil && res.Err == nil && !isClosed(r.err) {
			res.Err = r.err
		}
	}
	for _, p := range panicked {
		if p != nil {
			panic(p)
		}
	}
	return res
}

// isClosed: the end of a direction that is no error of its own: a clean
// EOF, or the close or HalfClose (its deadline) that the other
// direction's failure made.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded)
}

// HalfClose ends tdsgate's side of a backend leg without letting go of
// the socket: whatever reads or writes it returns at once (a deadline in
// the past), and the server gets a FIN. The server still holds the
// session until it has read that FIN and closed its side; the caller
// closes the socket with backend.Hangup, which waits for that, before the
// session's slot may go to another login. c is the leg as relayed: a raw
// *net.TCPConn, or a *tls.Conn over one (whose CloseWrite would wait for
// a writer's lock, so the TCP conn under it is half-closed instead).
func HalfClose(c net.Conn) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	c.SetDeadline(time.Now())
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so that io.CopyBuffer
// uses the pooled buffer on the TLS path.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// copyTLS copies one direction through crypto/tls with a pooled buffer.
// A function of its own, so that its locals do not deepen the splice
// path's frames (the direction that runs on the session's goroutine
// parks with the fewest bytes of stack below it).
//
//go:noinline
func copyTLS(dst, src net.Conn) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	bufPool.Put(bp)
	return n, err
}
