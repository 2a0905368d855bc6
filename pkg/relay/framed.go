package relay

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
}

// InFlight reports whether the backend still owes an answer: a request
// whose answer has not ended, or an unacknowledged ATTENTION.
func (r *FramedResult) InFlight() bool {
	return r.Attention || r.ClientMessages > r.ServerMessages || r.ServerMidMessage
}

// Framed relays a session packet by packet until the client leaves (or
// either side fails), tracking message boundaries so that the backend can
// be reused afterwards. It reads each 8-byte TDS header and copies the
// body with io.CopyN: from a raw *net.TCPConn into a raw *net.TCPConn the
// kernel splices bodies (the splice rule allows an io.LimitedReader around
// a raw TCPConn), through crypto/tls otherwise. client and server are the
// session's transports (raw or TLS); clientRaw and serverRaw are the TCP
// connections beneath them.
//
// When the client leaves, Framed stops the server→client direction at the
// next packet boundary (waking a read blocked on an idle server with a
// read deadline) and returns; it never closes the backend unless the
// backend itself failed, and it never half-closes it. It closes the client
// connection when the backend fails. Deadlines on server are cleared.
func Framed(client, server net.Conn, clientRaw, serverRaw *net.TCPConn, o FramedOptions) FramedResult {
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	f := &framer{client: client, server: server, clientRaw: clientRaw, serverRaw: serverRaw, o: o}
	_, cRaw := client.(*net.TCPConn)
	_, sRaw := server.(*net.TCPConn)
	f.splice = cRaw && sRaw
	f.doneLen = 13
	if o.Version != 0 && o.Version != tds.Version80 && o.Version < tds.Version72 {
		f.doneLen = 9
	}

	var wg sync.WaitGroup
	var panicked *PanicError
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer catchPanic(func(p *PanicError) { panicked = p }, client, server)
		f.serverToClient()
	}()
	f.clientToServer()
	// The client is gone (or the backend failed): stop the other direction
	// at a packet boundary.
	f.stopping.Store(true)
	serverRaw.SetReadDeadline(time.Now())
	wg.Wait()
	serverRaw.SetDeadline(time.Time{})
	if panicked != nil {
		panic(panicked)
	}

	res := FramedResult{
		Result:           Result{Mode: ModeFramed, ClientToServer: f.c2s, ServerToClient: f.s2c, Ended: f.ended, Err: f.err},
		ClientMessages:   f.clientMsgs,
		ServerMessages:   f.serverMsgs,
		Attention:        f.attn,
		ServerMidMessage: f.serverMid,
		ResetSent:        f.resetSent,
		ResetAcked:       f.resetAcked,
		Broken:           f.broken,
	}
	return res
}

// framer is one framed relay's state. Counters are written by one
// direction each and read after both have stopped, except attn and the
// message counts, which the server direction reads under mu.
type framer struct {
	client, server       net.Conn
	clientRaw, serverRaw *net.TCPConn
	o                    FramedOptions
	splice               bool
	doneLen              int

	stopping   atomic.Bool // the client direction has ended
	clientGone atomic.Bool // writes to the client are pointless: discard

	mu         sync.Mutex
	clientMsgs int64
	serverMsgs int64
	attn       bool
	broken     Broken
	err        error
	ended      Side

	c2s, s2c   int64 // bytes
	serverMid  bool
	resetSent  bool
	resetAcked bool
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

// clientToServer copies request packets until the client leaves. It
// returns when the client has closed (at a packet boundary: clean), or
// when either side failed.
func (f *framer) clientToServer() {
	var hdr [tds.HeaderLen]byte
	buf := getBuf()
	defer putBuf(buf)
	first := true
	mid := false // inside a client message
	for {
		n, err := io.ReadFull(f.client, hdr[:])
		if err != nil {
			f.clientGone.Store(true)
			f.mu.Lock()
			serverFailed := f.broken != BrokenNone
			f.mu.Unlock()
			switch {
			case serverFailed:
				// The server direction failed and closed the client.
			case n == 0 && !mid && (errors.Is(err, io.EOF) || isClosed(err) || isReset(err)):
				f.mu.Lock()
				if f.ended == SideNone {
					f.ended = SideClient
				}
				f.mu.Unlock()
			default:
				f.fail(BrokenClientPartial, SideClient, err)
			}
			return
		}
		if hdr[0] == PacketSMP {
			f.clientGone.Store(true)
			f.fail(BrokenMARS, SideClient, errors.New("the client sent a MARS (SMP) packet; tdsgate answered MARS=0"))
			f.client.Close()
			return
		}
		h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
		if err != nil {
			f.clientGone.Store(true)
			f.fail(BrokenProtocol, SideClient, err)
			f.client.Close()
			return
		}
		if first && f.o.Reset && isRequest(h.Type) {
			if hdr[1]&(tds.StatusResetConnection|tds.StatusResetConnectionSkipTran) == 0 {
				hdr[1] |= tds.StatusResetConnection
				f.mu.Lock()
				f.resetSent = true
				f.mu.Unlock()
			}
		}
		first = false
		if h.EOM() {
			// Counted before the packet leaves, so that an answer can
			// never be seen before its request.
			f.mu.Lock()
			if h.Type == tds.PacketAttention {
				f.attn = true
			} else {
				f.clientMsgs++
			}
			f.mu.Unlock()
		}
		body := int64(h.Length) - tds.HeaderLen
		if err := f.copyPacket(f.server, f.serverRaw, f.client, f.clientRaw, hdr[:], body, buf, false); err != nil {
			f.clientGone.Store(true)
			if errors.Is(err, errDstWrite) {
				f.fail(BrokenServerClosed, SideServer, err)
			} else {
				f.fail(BrokenClientPartial, SideClient, err)
			}
			f.client.Close()
			return
		}
		f.c2s += int64(h.Length)
		mid = !h.EOM()
	}
}

// serverToClient copies answer packets to the client. Once the client has
// gone it stops at the next packet boundary.
func (f *framer) serverToClient() {
	var hdr [tds.HeaderLen]byte
	buf := getBuf()
	defer putBuf(buf)
	var tail [13]byte // the last bytes of the server's stream, while an ATTENTION is pending
	tailLen := 0
	firstAnswer := true
	for {
		if f.stopping.Load() {
			return
		}
		n, err := io.ReadFull(f.server, hdr[:])
		if err != nil {
			if f.stopping.Load() && isTimeout(err) {
				if n == 0 {
					return // stopped at a packet boundary
				}
				// Part of a header: finish the packet, then stop.
				f.serverRaw.SetReadDeadline(time.Now().Add(f.o.StopTimeout))
				if _, err = io.ReadFull(f.server, hdr[n:]); err != nil {
					f.fail(BrokenStopTimeout, SideServer, err)
					return
				}
			} else {
				f.fail(BrokenServerClosed, SideServer, err)
				f.client.Close()
				return
			}
		}
		h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
		if err == nil && h.Type != tds.PacketReply {
			err = errors.New("server packet of a type other than REPLY")
		}
		if err != nil {
			f.fail(BrokenProtocol, SideServer, err)
			f.client.Close()
			return
		}
		body := int64(h.Length) - tds.HeaderLen
		f.mu.Lock()
		attn := f.attn
		strip := firstAnswer && f.resetSent
		f.mu.Unlock()
		firstAnswer = false
		discard := f.clientGone.Load()
		if attn || strip {
			// Read this packet into user space: to strip the reset
			// acknowledgement, or to see the DONE_ATTN at its end.
			p := buf[:tds.HeaderLen+int(body)]
			if err := f.readFull(p[tds.HeaderLen:]); err != nil {
				f.fail(f.serverReadBroken(), SideServer, err)
				f.client.Close()
				return
			}
			payload := p[tds.HeaderLen:]
			if strip && len(payload) >= len(resetAck) && [6]byte(payload[:6]) == resetAck {
				f.resetAcked = true
				payload = payload[len(resetAck):]
				binary.BigEndian.PutUint16(hdr[2:4], uint16(tds.HeaderLen+len(payload)))
			}
			if attn {
				tailLen = pushTail(&tail, tailLen, payload)
			}
			if !discard && (len(payload) > 0 || h.EOM()) {
				out := p[len(p)-len(payload)-tds.HeaderLen:]
				copy(out, hdr[:])
				if _, err := f.client.Write(out); err != nil {
					f.clientWriteFailed()
				}
			}
		} else if err := f.copyPacket(f.client, f.clientRaw, f.server, f.serverRaw, hdr[:], body, buf, discard); err != nil {
			if !errors.Is(err, errDstWrite) {
				f.fail(f.serverReadBroken(), SideServer, err)
				f.client.Close()
				return
			}
			f.clientWriteFailed() // the packet was read whole: go on, discarding
		}
		f.s2c += int64(h.Length)
		f.serverMid = !h.EOM()
		if h.EOM() {
			f.mu.Lock()
			f.serverMsgs++
			if f.attn && tailLen >= f.doneLen && isDoneAttn(tail[len(tail)-f.doneLen:]) {
				// An ATTENTION is acknowledged: every request before it
				// is over.
				f.attn = false
				f.serverMsgs = f.clientMsgs
				tailLen = 0
			}
			f.mu.Unlock()
		}
	}
}

// serverReadBroken is the reason for a failed read of a server packet's
// body: a timeout while stopping, or the backend gone.
func (f *framer) serverReadBroken() Broken {
	if f.stopping.Load() {
		return BrokenStopTimeout
	}
	return BrokenServerClosed
}

// readFull reads a server packet body; once the client is gone, a read
// woken by the stop deadline gets StopTimeout more to finish the packet.
func (f *framer) readFull(p []byte) error {
	n, err := io.ReadFull(f.server, p)
	if err != nil && f.stopping.Load() && isTimeout(err) {
		f.serverRaw.SetReadDeadline(time.Now().Add(f.o.StopTimeout))
		_, err = io.ReadFull(f.server, p[n:])
	}
	return err
}

func (f *framer) clientWriteFailed() {
	f.clientGone.Store(true)
	f.client.Close()
}

// errDstWrite: the packet was read whole from its source, but writing it
// on failed; the source stream is intact at a packet boundary.
var errDstWrite = errors.New("relay: write failed")

// copyPacket writes hdr and copies body bytes of the packet from src to
// dst (or reads and drops them when discard). Small bodies, and every
// body when a leg is TLS, go with their header in one write; larger
// plaintext bodies are spliced. An error wrapping errDstWrite means only
// dst failed and the packet was consumed whole; any other error leaves
// src's stream broken.
func (f *framer) copyPacket(dst net.Conn, dstRaw *net.TCPConn, src net.Conn, srcRaw *net.TCPConn, hdr []byte, body int64, buf []byte, discard bool) error {
	fromServer := src == f.server
	read := func(p []byte) error {
		if fromServer {
			return f.readFull(p)
		}
		_, err := io.ReadFull(src, p)
		return err
	}
	if discard {
		return read(buf[:body])
	}
	if !f.splice || body <= spliceMin {
		copy(buf, hdr)
		if err := read(buf[tds.HeaderLen : tds.HeaderLen+body]); err != nil {
			return err
		}
		if _, err := dst.Write(buf[:tds.HeaderLen+body]); err != nil {
			return errors.Join(errDstWrite, err)
		}
		return nil
	}
	if _, err := dst.Write(hdr); err != nil {
		if err := read(buf[:body]); err != nil {
			return err
		}
		return errors.Join(errDstWrite, err)
	}
	// (*net.TCPConn).ReadFrom splices from an io.LimitedReader around a
	// raw *net.TCPConn.
	lr := &io.LimitedReader{R: srcRaw, N: body}
	_, err := dstRaw.ReadFrom(lr)
	if err != nil && fromServer && f.stopping.Load() && isTimeout(err) {
		f.serverRaw.SetReadDeadline(time.Now().Add(f.o.StopTimeout))
		_, err = dstRaw.ReadFrom(lr)
	}
	if err == nil && lr.N > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// spliceMin is the body size from which a plaintext packet is spliced
// rather than read and written with its header in one write (two
// syscalls either way; below it the copy is cheaper than the pipe).
const spliceMin = 2048

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

var framedBufs = sync.Pool{New: func() any { b := make([]byte, tds.MaxPacketSize+tds.HeaderLen); return &b }}

func getBuf() []byte  { return *(framedBufs.Get().(*[]byte)) }
func putBuf(b []byte) { framedBufs.Put(&b) }
