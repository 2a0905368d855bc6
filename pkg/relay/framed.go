package relay

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// PacketSMP is the first byte of a MARS (SMP) header. tdsgate answers
// MARS=0 in PRELOGIN, so a client that sends one misuses the session.
const PacketSMP = 0x53

// resetAck is the ENVCHANGE 18 (RESETCONNECTION acknowledgement) that opens
// the answer to a request sent with RESETCONNECTION: token, length 3, type
// 18, empty new and old values.
var resetAck = [6]byte{byte(tds.TokenEnvChange), 3, 0, tds.EnvResetConnAck, 0, 0}

// DefaultStopTimeout bounds how long the framed relay waits, once the
// client has gone, for the packet the server is in the middle of sending.
const DefaultStopTimeout = 2 * time.Second

// FramedOptions configures a framed relay.
type FramedOptions struct {
	// Reset sets RESETCONNECTION on the first packet of the client's first
	// request and strips the ENVCHANGE 18 that opens the server's answer,
	// so that the client never sees it.
	Reset bool
	// Version is the session's TDS version; it fixes the length of the
	// DONE token that acknowledges an ATTENTION (0: 7.4).
	Version uint32
	// StopTimeout bounds the wait for the end of a server packet in
	// flight once the client has gone (0: DefaultStopTimeout).
	StopTimeout time.Duration
	// Walker follows the server's packet headers in the kernel (kwalk.go),
	// so that a run of the server's answer is spliced without being
	// peeked first. nil: every run is peeked.
	Walker KernelWalker
}

// Broken says why a backend connection left by a framed relay must not be
// reused. The empty value means it stopped between two packets and may be
// made safe (an ATTENTION, a drain) and reused.
type Broken string

// Reasons a framed session's backend is broken.
const (
	BrokenNone          Broken = ""
	BrokenMARS          Broken = "mars"           // the client sent an SMP (MARS) packet
	BrokenClientPartial Broken = "client_partial" // the client left in the middle of a request message
	BrokenServerClosed  Broken = "server_closed"  // the backend closed or failed
	BrokenProtocol      Broken = "protocol"       // a packet header tdsgate cannot accept
	BrokenStopTimeout   Broken = "stop_timeout"   // the server's packet in flight did not end in time
)

// FramedResult is what a framed relay did, and the state of the backend
// connection it leaves.
type FramedResult struct {
	Result
	// ClientMessages counts request messages the client sent (EOM packets
	// toward the server, ATTENTIONs not included); ServerMessages counts
	// answers completed (EOM packets toward the client), an ATTENTION
	// acknowledgement bringing it level with ClientMessages.
	ClientMessages, ServerMessages int64
	// Attention: an ATTENTION was sent whose DONE_ATTN has not arrived.
	Attention bool
	// ServerMidMessage: the server had sent part of an answer (packets
	// without EOM) when the relay stopped.
	ServerMidMessage bool
	// ResetSent: RESETCONNECTION was set on the client's first request;
	// ResetAcked: the server's answer opened with ENVCHANGE 18, which was
	// stripped.
	ResetSent, ResetAcked bool
	// Broken: why the backend must not be reused ("" if it may).
	Broken Broken
	// KernelWalked counts the server's bytes spliced on the kernel's walk
	// of their headers (FramedOptions.Walker), unpeeked.
	KernelWalked int64
}

// InFlight reports whether the backend still owes an answer: a request
// whose answer has not ended, or an unacknowledged ATTENTION.
func (r *FramedResult) InFlight() bool {
	return r.Attention || r.ClientMessages > r.ServerMessages || r.ServerMidMessage
}

// Framed relays a session until the client leaves (or either side fails),
// tracking TDS packet and message boundaries so that the backend can be
// reused afterwards. client and server are the session's transports (raw
// or TLS); clientRaw and serverRaw are the TCP connections beneath them.
//
// Each direction moves the bytes as they come, a chunk at a time, and
// follows the packets through them with a walker (walker.go): a header
// is parsed where a packet ends, and the packet's body is skipped by its
// length. A chunk is what one read returns, so a small answer (header and
// body) is one read and one write, whatever packets it holds. When both
// legs are plaintext and many bytes are queued, the chunk's headers are
// found where the bytes lie (walkQueued, peek.go: MSG_PEEK, not consumed)
// and the whole chunk — several packets — is spliced kernel to kernel in
// one go. While a plaintext direction waits
// for bytes it holds no buffer and no pipe: it waits for readability (see
// splice.go), and takes a buffer from a pool only once bytes are queued.
//
// When the client leaves, Framed stops the server→client direction at the
// next packet boundary (waking a read blocked on an idle server with a
// read deadline) and returns; it never closes the backend unless the
// backend itself failed, and it never half-closes it. It closes the client
// connection when the backend fails. Deadlines on server are cleared.
func Framed(client, server net.Conn, clientRaw, serverRaw *net.TCPConn, o FramedOptions) FramedResult {
	type ended struct {
		res FramedResult
		p   *PanicError
	}
	ch := make(chan ended, 1)
	StartFramed(client, server, clientRaw, serverRaw, o, func(res FramedResult, p *PanicError) { ch <- ended{res, p} })
	e := <-ch
	if e.p != nil {
		panic(e.p)
	}
	return e.res
}

// StartFramed relays as Framed does, each direction on a goroutine of its
// own, and returns at once. end runs exactly once, on the client
// direction's goroutine once both directions have ended: with the
// result, or with the *PanicError of a direction that panicked (both
// conns are then closed, and the result must not be trusted).
//
// No goroutine waits for the two directions: an idle session costs the
// two that wait on its sockets, each parked a few frames deep, so that
// both keep the runtime's smallest stack.
func StartFramed(client, server net.Conn, clientRaw, serverRaw *net.TCPConn, o FramedOptions, end func(FramedResult, *PanicError)) {
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	f := &framer{client: client, server: server, clientRaw: clientRaw, serverRaw: serverRaw, o: o}
	_, cRaw := client.(*net.TCPConn)
	_, sRaw := server.(*net.TCPConn)
	f.splice = cRaw && sRaw
	if f.splice {
		var err1, err2 error
		f.clientRC, err1 = clientRaw.SyscallConn()
		f.serverRC, err2 = serverRaw.SyscallConn()
		f.splice = err1 == nil && err2 == nil
	}
	f.doneLen = 13
	if o.Version != 0 && o.Version != tds.Version80 && o.Version < tds.Version72 {
		f.doneLen = 9
	}
	f.end = end
	f.serverDone = make(chan struct{})
	go f.runServer()
	go f.runClient()
}

// The two directions' goroutines park a few frames below their entry
// functions, which are kept small (no closures, no locals) so that an
// idle session's goroutines fit the runtime's smallest stack.

// runServer runs the server→client direction; its end (and panic) is
// reported to the client direction's goroutine.
func (f *framer) runServer() {
	defer f.serverEnded()
	f.serverToClient()
}

func (f *framer) serverEnded() {
	if r := recover(); r != nil {
		f.serverPanic = panicked(r, f.client, f.server)
	}
	close(f.serverDone)
}

// runClient runs the client→server direction; once the client is gone
// (or the backend failed) it stops the other direction at a packet
// boundary, waits for it, and runs end.
func (f *framer) runClient() {
	f.clientDirection()
	f.finish()
}

func (f *framer) clientDirection() {
	defer f.clientEndedOrPanicked()
	f.clientToServer()
}

func (f *framer) clientEndedOrPanicked() {
	if r := recover(); r != nil {
		f.clientPanic = panicked(r, f.client, f.server)
	}
}

//go:noinline
func (f *framer) finish() {
	f.stopMu.Lock()
	f.stopping.Store(true)
	f.serverRaw.SetReadDeadline(time.Now())
	f.stopMu.Unlock()
	<-f.serverDone
	f.serverRaw.SetDeadline(time.Time{})
	p := f.clientPanic
	if p == nil {
		p = f.serverPanic
	}
	f.end(f.result(), p)
}

// result is what the relay did, once both directions have ended.
func (f *framer) result() FramedResult {
	return FramedResult{
		Result:           Result{Mode: ModeFramed, ClientToServer: f.c2s, ServerToClient: f.s2c, Ended: f.ended, Err: f.err},
		ClientMessages:   f.clientMsgs,
		ServerMessages:   f.serverMsgs,
		Attention:        f.attn,
		ServerMidMessage: f.serverMid,
		ResetSent:        f.resetSent,
		ResetAcked:       f.resetAcked,
		Broken:           f.broken,
		KernelWalked:     f.kwBytes,
	}
}

// framer is one framed relay's state. Counters are written by one
// direction each and read after both have stopped, except attn, resetSent
// and the message counts, which the server direction reads under mu.
type framer struct {
	client, server       net.Conn
	clientRaw, serverRaw *net.TCPConn
	o                    FramedOptions
	splice               bool
	clientRC, serverRC   syscall.RawConn // the raw conns' descriptors, when splicing
	doneLen              int

	stopping atomic.Bool // the client direction has ended
	// stopMu orders the stop's deadline (finish) before any extension of
	// it (extendStop): a direction that sees stopping has its extension
	// applied after the stop's "now", never overwritten by it.
	stopMu     sync.Mutex
	serverDone chan struct{} // closed when the server direction has ended
	// end runs once both directions have ended; clientPanic and
	// serverPanic are the directions' panics (set before they end).
	end                      func(FramedResult, *PanicError)
	clientPanic, serverPanic *PanicError
	clientGone               atomic.Bool // writes to the client are pointless: discard

	mu         sync.Mutex
	clientMsgs int64
	serverMsgs int64
	attn       bool
	broken     Broken
	err        error
	ended      Side
	resetSent  bool

	c2s, s2c   int64 // bytes
	serverMid  bool
	resetAcked bool

	// The kernel's walk of the server's stream (server direction only):
	// kwPos bytes taken from the server since it was armed, kwEOMs EOM
	// packet ends counted since, kwBytes bytes moved on its word alone.
	kw      KernelWalk
	kwPos   uint64
	kwEOMs  uint64
	kwBytes int64
}

func (f *framer) fail(b Broken, side Side, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken == BrokenNone {
		f.broken = b
	}
	if f.ended == SideNone {
		f.ended = side
	}
	if f.err == nil && err != nil && !isClosed(err) {
		f.err = err
	}
}

// errMARS and the header errors of tds.ParseHeader reject a packet.
var errMARS = errors.New("the client sent a MARS (SMP) packet; tdsgate answered MARS=0")

// clientToServer copies request packets until the client leaves. It
// returns when the client has closed (at a packet boundary: clean), or
// when either side failed.
func (f *framer) clientToServer() {
	src := newSource(f.client)
	defer src.release()
	var w walker
	first := f.o.Reset // the first packet may need RESETCONNECTION
	mid := false       // inside a client message (its last packet had no EOM)
	v := visitor{
		header: func(hdr []byte) (tds.Header, error) {
			if hdr[0] == PacketSMP {
				return tds.Header{}, errMARS
			}
			return tds.ParseHeader(hdr, tds.MaxPacketSize)
		},
		end: func(h tds.Header) {
			mid = !h.EOM()
			if !h.EOM() {
				return
			}
			// Counted before the packet leaves, so that an answer can
			// never be seen before its request.
			f.mu.Lock()
			if h.Type == tds.PacketAttention {
				f.attn = true
			} else {
				f.clientMsgs++
			}
			f.mu.Unlock()
		},
	}
	for {
		b, n, avail, err := src.read(0, func() bool { return f.splice && !first })
		if n == 0 && avail == 0 {
			f.clientEnded(err, &w, mid)
			return
		}
		var werr error
		if avail > 0 {
			var moved int64
			var rerr, wrerr error
			moved, werr, rerr, wrerr = f.spliceChunk(f.serverRaw, src, &w, &v, avail)
			f.c2s += moved
			switch {
			case wrerr != nil:
				f.clientGone.Store(true)
				f.fail(BrokenServerClosed, SideServer, wrerr)
				f.client.Close()
				return
			case rerr != nil:
				f.clientEnded(rerr, &w, true)
				return
			}
		} else {
			if first {
				// RESETCONNECTION goes on the first packet of the
				// client's first request: its whole header first.
				if n < tds.HeaderLen {
					m, err := io.ReadAtLeast(f.client, b[n:], tds.HeaderLen-n)
					n += m
					if err != nil {
						f.clientEnded(err, &w, true)
						return
					}
				}
				if isRequest(tds.PacketType(b[0])) && b[1]&(tds.StatusResetConnection|tds.StatusResetConnectionSkipTran) == 0 {
					b[1] |= tds.StatusResetConnection
					f.mu.Lock()
					f.resetSent = true
					f.mu.Unlock()
				}
				first = false
			}
			k, e := w.walk(b[:n], &v)
			werr = e
			if k > 0 {
				if _, err := f.server.Write(b[:k]); err != nil {
					f.clientGone.Store(true)
					f.fail(BrokenServerClosed, SideServer, err)
					f.client.Close()
					return
				}
				f.c2s += int64(k)
			}
			src.idle()
		}
		if werr != nil {
			f.clientGone.Store(true)
			b := BrokenProtocol
			if werr == errMARS {
				b = BrokenMARS
			}
			f.fail(b, SideClient, werr)
			f.client.Close()
			return
		}
	}
}

// clientEnded records why the client direction ended: a clean close
// between two messages, or a client that left in the middle of one.
func (f *framer) clientEnded(err error, w *walker, mid bool) {
	f.clientGone.Store(true)
	f.mu.Lock()
	serverFailed := f.broken != BrokenNone
	f.mu.Unlock()
	switch {
	case serverFailed:
		// The server direction failed and closed the client.
	case w.atBoundary() && !mid && (err == nil || errors.Is(err, io.EOF) || isClosed(err) || isReset(err) || errors.Is(err, syscall.ECONNRESET)):
		f.mu.Lock()
		if f.ended == SideNone {
			f.ended = SideClient
		}
		f.mu.Unlock()
	default:
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		f.fail(BrokenClientPartial, SideClient, err)
	}
}

// serverToClient copies answer packets to the client. Once the client has
// gone it finishes the packet it is in and stops at its end.
func (f *framer) serverToClient() {
	src := newSource(f.server)
	defer src.release()
	f.armKernelWalk(src)
	defer f.dropKernelWalk()
	var w walker
	var tail [13]byte // the last bytes of the server's stream, while an ATTENTION is pending
	tailLen := 0
	tracking := false // an ATTENTION was pending when the chunk was read
	firstAnswer := true
	extended := false // the stop deadline was pushed back to let a packet end
	v := visitor{
		header: func(hdr []byte) (tds.Header, error) {
			h, err := tds.ParseHeader(hdr, tds.MaxPacketSize)
			if err == nil && h.Type != tds.PacketReply {
				err = errors.New("server packet of a type other than REPLY")
			}
			return h, err
		},
		body: func(p []byte) {
			if tracking {
				tailLen = pushTail(&tail, tailLen, p)
			}
		},
		end: func(h tds.Header) {
			f.serverMid = !h.EOM()
			if !h.EOM() {
				return
			}
			f.kwEOMs++
			f.mu.Lock()
			f.serverMsgs++
			if f.attn && tailLen >= f.doneLen && isDoneAttn(tail[len(tail)-f.doneLen:]) {
				// An ATTENTION is acknowledged: every request before it
				// is over.
				f.attn = false
				f.serverMsgs = f.clientMsgs
				tailLen = 0
				tracking = false
			}
			f.mu.Unlock()
		},
	}
	// failed handles a read error; it reports whether to go on.
	failed := func(err error) bool {
		if f.stopping.Load() && isTimeout(err) {
			if w.atBoundary() {
				return false // stopped at a packet boundary
			}
			if !extended {
				// Part of a packet: let it end, then stop.
				extended = true
				f.extendStop()
				return true
			}
			f.fail(BrokenStopTimeout, SideServer, err)
			return false
		}
		if f.stopping.Load() && extended {
			f.fail(BrokenStopTimeout, SideServer, err)
			return false
		}
		f.fail(BrokenServerClosed, SideServer, err)
		f.client.Close()
		return false
	}
	for {
		stopping := f.stopping.Load()
		if stopping && w.atBoundary() {
			return
		}
		limit := 0
		if stopping {
			limit = w.rest() // finish this packet, read nothing of the next
		}
		var attn, strip bool
		b, n, avail, err := src.read(limit, func() bool {
			f.mu.Lock()
			attn, strip = f.attn, firstAnswer && f.resetSent
			f.mu.Unlock()
			return f.splice && !attn && !strip && !f.clientGone.Load() && !stopping
		})
		if n == 0 && avail == 0 {
			if err == nil {
				err = io.EOF
			}
			if failed(err) {
				continue
			}
			return
		}
		if avail > 0 {
			// Only the bytes queued before attn was read are moved: an
			// acknowledgement of a later ATTENTION cannot be among them.
			taken, werr, rerr, wrerr := f.spliceChunk(f.clientRaw, src, &w, &v, avail)
			f.s2c += taken
			firstAnswer = false
			if wrerr != nil {
				f.clientWriteFailed() // the chunk was taken whole: go on, discarding
			}
			if rerr != nil {
				if isTimeout(rerr) && f.stopping.Load() {
					// spliceChunk already let the chunk end.
					f.fail(BrokenStopTimeout, SideServer, rerr)
					return
				}
				f.fail(BrokenServerClosed, SideServer, rerr)
				f.client.Close()
				return
			}
			if werr != nil {
				f.fail(BrokenProtocol, SideServer, werr)
				f.client.Close()
				return
			}
			continue
		}
		// The bytes are in hand: an ATTENTION sent before now is seen, so
		// its acknowledgement, if among them, is looked for.
		f.mu.Lock()
		attn, strip = f.attn, firstAnswer && f.resetSent
		f.mu.Unlock()
		tracking = tracking || attn
		taken := n // bytes taken from the server
		if strip {
			// The answer to the first request opens with ENVCHANGE 18:
			// take it out of the first packet, before the walker sees it.
			acked := f.resetAcked
			if n, err = f.stripResetAck(b, n); err != nil {
				f.dropKernelWalk() // bytes were taken uncounted
				if failed(err) {
					continue
				}
				return
			}
			taken = n
			if f.resetAcked && !acked {
				taken += len(resetAck)
			}
		}
		f.kwPos += uint64(taken)
		firstAnswer = false
		k, werr := w.walk(b[:n], &v)
		if k > 0 && !f.clientGone.Load() {
			if _, err := f.client.Write(b[:k]); err != nil {
				f.clientWriteFailed() // the bytes were read: go on, discarding
			}
		}
		f.s2c += int64(k)
		src.idle()
		if werr != nil {
			f.fail(BrokenProtocol, SideServer, werr)
			f.client.Close()
			return
		}
	}
}

// stripResetAck removes the ENVCHANGE 18 that opens the payload of the
// server's first packet in b[:n] (the first bytes of the server's first
// answer), reading on until that packet's first bytes are in, and fixes
// the packet's length. It returns the new n.
func (f *framer) stripResetAck(b []byte, n int) (int, error) {
	need := tds.HeaderLen
	for {
		if n < need {
			m, err := io.ReadAtLeast(f.server, b[n:], need-n)
			n += m
			if err != nil {
				return n, err
			}
		}
		if need > tds.HeaderLen {
			break
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		if l < tds.HeaderLen+len(resetAck) {
			return n, nil // too short to hold it; the walker judges the header
		}
		need = tds.HeaderLen + len(resetAck)
	}
	if [6]byte(b[tds.HeaderLen:tds.HeaderLen+6]) != resetAck {
		return n, nil
	}
	l := binary.BigEndian.Uint16(b[2:4])
	copy(b[tds.HeaderLen:], b[tds.HeaderLen+len(resetAck):n])
	binary.BigEndian.PutUint16(b[2:4], l-uint16(len(resetAck)))
	f.resetAcked = true
	return n - len(resetAck), nil
}

func (f *framer) clientWriteFailed() {
	f.clientGone.Store(true)
	f.client.Close()
}

// spliceChunk moves queued bytes of src to dst in the kernel (spliceN):
// the next avail bytes (up to maxChunk), once walkQueued has found the
// packet headers among them without taking them off the socket. It
// returns the bytes taken from src, the walker's error if it rejected a
// header (the bytes before it were moved), a read error (src failed),
// and a write error (dst failed: the rest of the walked bytes have been
// read and dropped, so src stays in step with the walker). Once the
// client has gone and the server direction's read deadline fires, the
// chunk is let end within StopTimeout.
func (f *framer) spliceChunk(dst *net.TCPConn, src *source, w *walker, v *visitor, avail int) (taken int64, werr, rerr, wrerr error) {
	if src.conn == f.server && f.kw != nil {
		if st, m, ok := f.kernelRun(avail); ok {
			taken, rerr, wrerr = f.spliceRun(dst, src, m)
			f.kwPos += uint64(taken)
			if int(taken) == m {
				if werr = f.adoptKernelWalk(st, w, v); werr == nil {
					f.kwBytes += taken
				}
			}
			return taken, werr, rerr, wrerr
		}
	}
	m, werr, err := walkQueued(src.w.rc, w, v, min(avail, maxChunk))
	if err != nil {
		if src.conn == f.server && f.stopping.Load() && isTimeout(err) {
			// The client left after the chunk was found queued: the
			// stop's own deadline failed the walk, and nothing was
			// taken. The caller stops at this boundary, or reads the
			// rest of the packet in flight.
			return 0, nil, nil, nil
		}
		return 0, nil, err, nil
	}
	if m == 0 {
		return 0, werr, nil, nil
	}
	taken, rerr, wrerr = f.spliceRun(dst, src, m)
	if src.conn == f.server {
		f.kwPos += uint64(taken)
	}
	return taken, werr, rerr, wrerr
}

// spliceRun splices the next m bytes of src, which have been walked, to
// dst (spliceN). When dst fails it takes the rest of them off src (they
// are coming), so that src stays at the walker's place.
func (f *framer) spliceRun(dst *net.TCPConn, src *source, m int) (taken int64, rerr, wrerr error) {
	drc := f.serverRC
	if dst == f.clientRaw {
		drc = f.clientRC
	}
	t, _, rerr, wrerr := spliceN(drc, src.w.rc, m)
	if rerr != nil && src.conn == f.server && f.stopping.Load() && isTimeout(rerr) {
		f.extendStop()
		var t2 int
		t2, _, rerr, wrerr = spliceN(drc, src.w.rc, m-t)
		t += t2
	}
	if wrerr != nil && rerr == nil && t < m {
		// dst failed: take the rest of the walked bytes off src (they
		// are queued) so that it stays at the walker's place.
		b := src.buffer()
		extended := false
		for t < m && rerr == nil {
			var k int
			k, rerr = src.conn.Read(b[:min(len(b), m-t)])
			t += k
			if rerr != nil && !extended && src.conn == f.server && f.stopping.Load() && isTimeout(rerr) {
				// The walked bytes are queued: only the stop's own
				// deadline was in the way (the client left during the
				// chunk).
				extended = true
				f.extendStop()
				rerr = nil
			}
		}
		src.idle()
	}
	return int64(t), rerr, wrerr
}

// extendStop gives the server's packet in flight StopTimeout to end,
// once the client has gone (stopping): after the stop's own deadline.
func (f *framer) extendStop() {
	f.stopMu.Lock()
	f.serverRaw.SetReadDeadline(time.Now().Add(f.o.StopTimeout))
	f.stopMu.Unlock()
}

// chunkSize is the buffer a direction reads a chunk into: two of the
// largest packets, four TLS records.
const chunkSize = 64 << 10

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// source is one direction's input. A raw TCP conn is waited on without a
// buffer (waiter): a small chunk is read into a buffer from a pool taken
// for the attempt, and a run of bytes is left queued for the caller to
// splice; the buffer goes back once the chunk is on its way (idle). A TLS
// conn can only be waited on by reading it, so its buffer, taken at its
// first bytes, stays until the relay ends.
type source struct {
	conn net.Conn
	w    *waiter // nil: not a raw TCP conn
	buf  *[]byte
}

func newSource(c net.Conn) *source {
	s := &source{conn: c}
	if tc, ok := c.(*net.TCPConn); ok {
		if w, err := newWaiter(tc, &chunkBufs); err == nil {
			s.w = w
		}
	}
	return s
}

// read waits for the next chunk: n bytes read into b (whose room past n
// may be read into), or avail bytes queued on a raw conn in a run, left
// there when canSplice (called once they are queued) says the caller
// will splice them; neither (n and avail 0) at EOF or on err. limit > 0
// caps what it reads.
func (s *source) read(limit int, canSplice func() bool) (b []byte, n, avail int, err error) {
	if s.w != nil {
		n, avail, err = s.w.next(limit)
		if n > 0 {
			return s.w.buffer(), n, 0, nil
		}
		if err != nil || avail == 0 {
			return nil, 0, 0, err
		}
		if canSplice() {
			return nil, 0, avail, nil
		}
	}
	b = s.buffer()
	rb := b
	if limit > 0 && limit < len(rb) {
		rb = rb[:limit]
	}
	n, err = s.conn.Read(rb)
	if n == 0 && err == nil {
		err = io.ErrNoProgress
	}
	return b, n, 0, err
}

func (s *source) buffer() []byte {
	if s.buf == nil {
		s.buf = chunkBufs.Get().(*[]byte)
	}
	return *s.buf
}

// idle gives the buffers back while the direction waits (raw TCP only).
func (s *source) idle() {
	if s.w != nil {
		s.w.done()
		s.release()
	}
}

func (s *source) release() {
	if s.w != nil {
		s.w.done()
	}
	if s.buf != nil {
		chunkBufs.Put(s.buf)
		s.buf = nil
	}
}

// pushTail keeps the last len(tail) bytes seen.
func pushTail(tail *[13]byte, n int, p []byte) int {
	if len(p) >= len(tail) {
		copy(tail[:], p[len(p)-len(tail):])
		return len(tail)
	}
	copy(tail[:], tail[len(p):])
	copy(tail[len(tail)-len(p):], p)
	return min(n+len(p), len(tail))
}

// isDoneAttn reports whether b is a DONE (or DONEPROC) token with
// DONE_ATTN.
func isDoneAttn(b []byte) bool {
	t := tds.TokenType(b[0])
	return (t == tds.TokenDone || t == tds.TokenDoneProc) && binary.LittleEndian.Uint16(b[1:3])&tds.DoneAttn != 0
}

// IsDoneAttn reports whether the payload of an answer message ends with
// a DONE carrying DONE_ATTN, for a session of TDS version v.
func IsDoneAttn(payload []byte, v uint32) bool {
	n := 13
	if v != 0 && v != tds.Version80 && v < tds.Version72 {
		n = 9
	}
	return len(payload) >= n && isDoneAttn(payload[len(payload)-n:])
}

func isRequest(t tds.PacketType) bool {
	switch t {
	case tds.PacketSQLBatch, tds.PacketRPC, tds.PacketTransMgrReq, tds.PacketBulkLoad:
		return true
	}
	return false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read"
}
