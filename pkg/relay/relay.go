package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
// A panic in a direction is raised again on the caller as a *PanicError.
//
// Relay waits for Start; a session that does not need to wait uses Start.
func Relay(client, server net.Conn) Result {
	type ended struct {
		res Result
		p   *PanicError
	}
	ch := make(chan ended, 1)
	Start(client, server, func(res Result, p *PanicError) { ch <- ended{res, p} })
	e := <-ch
	if e.p != nil {
		panic(e.p)
	}
	return e.res
}

// Start relays as Relay does, each direction on a goroutine of its own,
// and returns at once. end runs exactly once, on the goroutine of the
// direction that ended last, when both have ended: with the counts, or
// with the *PanicError of a direction that panicked (both conns are then
// closed, and the Result is partial).
//
// No goroutine waits for the two directions: an idle session costs the
// two that wait on its sockets, each parked a few frames deep, so that
// both keep the runtime's smallest stack; on the splice path neither
// holds a buffer or a pipe while it waits.
func Start(client, server net.Conn, end func(Result, *PanicError)) {
	r := &relayRun{client: client, server: server, end: end}
	r.res.Mode = ModeFor(client, server)
	r.left.Store(2)
	go r.direction(server, client, SideClient)
	go r.direction(client, server, SideServer)
}

// relayRun is one Start: what both directions share.
type relayRun struct {
	client, server net.Conn
	end            func(Result, *PanicError)
	left           atomic.Int32 // directions still running
	mu             sync.Mutex
	res            Result
	panicked       *PanicError
	abort          sync.Once // the failure's close, once for both directions
}

// direction copies src to dst until src ends, then, if it is the last
// direction to end, runs end. Its frame and copy's are kept small: the
// goroutine parks below them for the session's life.
func (r *relayRun) direction(dst, src net.Conn, from Side) {
	r.copy(dst, src, from)
	if r.left.Add(-1) == 0 {
		r.finish()
	}
}

//go:noinline
func (r *relayRun) finish() { r.end(r.res, r.panicked) }

// copy moves one direction, records its count and error, and ends it: a
// clean end half-closes dst; a failure closes the client conn and
// half-closes the server's (a panic closes both).
func (r *relayRun) copy(dst, src net.Conn, from Side) {
	defer r.recoverDirection()
	var n int64
	var err error
	if r.res.Mode == ModeSplice {
		n, err = spliceIdleFree(dst.(*net.TCPConn), src.(*net.TCPConn))
	} else {
		n, err = copyTLS(dst, src)
	}
	r.mu.Lock()
	if r.res.Ended == SideNone {
		r.res.Ended = from // before either end below wakes the other direction
	}
	if from == SideClient {
		r.res.ClientToServer = n
	} else {
		r.res.ServerToClient = n
	}
	if err != nil && r.res.Err == nil && !isClosed(err) {
		r.res.Err = err
	}
	r.mu.Unlock()
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
	} else {
		r.abort.Do(func() {
			r.client.Close()
			HalfClose(r.server)
		})
	}
}

// recoverDirection, deferred by copy, keeps a direction's panic (the
// first) and closes both conns so that the other direction ends too.
func (r *relayRun) recoverDirection() {
	if v := recover(); v != nil {
		p := panicked(v, r.client, r.server)
		r.mu.Lock()
		if r.panicked == nil {
			r.panicked = p
		}
		r.mu.Unlock()
	}
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
