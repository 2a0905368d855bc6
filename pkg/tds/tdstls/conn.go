package tdstls

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Limits of the handshake phase. A TLS 1.2 handshake with a long
// certificate chain is tens of KiB; these caps only stop a peer that
// floods the handshake (for instance with endless empty packets) from
// costing unbounded memory or CPU when the caller set no deadline.
const (
	maxHandshakeRead  = 1 << 20 // bytes read from raw (headers included) during the handshake
	maxHandshakeWrite = 1 << 20 // bytes buffered by one flight
)

// tlsRecordHeaderLen is the size of a TLS record header: type, version, length.
const tlsRecordHeaderLen = 5

// Errors returned by the adapter.
var (
	// ErrDetached is returned by a tls.Conn after Detach handed its raw
	// connection back to plaintext use.
	ErrDetached = errors.New("tdstls: connection detached to plaintext")
	// ErrNotOurs is returned by the helpers given a tls.Conn that this
	// package did not create.
	ErrNotOurs = errors.New("tdstls: not a connection made by tdstls")
)

// wrapConn is the net.Conn under the tls.Conn. During the handshake it
// carries TLS bytes inside PRELOGIN packets (like go-mssqldb's
// tlsHandshakeConn); afterwards it passes bytes through to raw (like
// go-mssqldb's passthroughConn).
//
// It never reads ahead on raw. In the handshake it reads exactly one packet
// header and then at most what that header announces. In exact-record mode
// (always during the handshake, afterwards until AllowReadAhead) it also
// returns bytes only up to the end of the current TLS record, so the
// tls.Conn above it never pulls in bytes that follow the last record it
// needed. That makes the switch back to plaintext of a login-only session
// safe, and lets finish detect bytes a peer left in its last handshake
// packet (which would otherwise sit in tls.Conn's buffer).
//
// Concurrency: the handshake runs on one goroutine. After it, Read and
// Write may run concurrently (one reader, one writer), as tls.Conn allows:
// the read state is touched only by Read, the write path holds no state.
type wrapConn struct {
	raw        net.Conn
	packetSize int
	// accept reports whether a handshake packet of this type is accepted.
	accept func(tds.PacketType) bool

	// Handshake phase (single goroutine; published to later readers and
	// writers by the return of Server/Client).
	handshaking bool
	wbuf        []byte // outgoing TLS bytes not yet sent as PRELOGIN packets
	left        int    // payload bytes left in the current incoming packet
	readTotal   int    // bytes read from raw during the handshake
	hdr         [tds.HeaderLen]byte
	lastEOM     bool // the last packet header read carried EOM
	packets     int  // packets read during the handshake

	// Exact-record reads (recLeft, recHdr, pend: Read only) and the
	// switches set after the handshake.
	readAhead atomic.Bool // exact-record reads are off (set once, by AllowReadAhead)
	detached  atomic.Bool // Detach handed raw back: every method fails or does nothing
	recLeft   int         // exact mode: body bytes left in the current TLS record
	recHdr    [tlsRecordHeaderLen]byte
	pend      []byte // exact mode: record header bytes read but not yet returned
}

func newWrapConn(raw net.Conn, packetSize int, accept func(tds.PacketType) bool) *wrapConn {
	return &wrapConn{raw: raw, packetSize: packetSize, accept: accept, handshaking: true}
}

// Read implements net.Conn. In exact-record mode (always during the
// handshake, afterwards until AllowReadAhead) it returns bytes only up to
// the end of the current TLS record: first the record's 5-byte header, then
// at most the rest of its body. crypto/tls asks for a header and then for
// the body, so it never holds a byte of raw beyond the record it needs.
func (c *wrapConn) Read(b []byte) (int, error) {
	if c.detached.Load() {
		return 0, ErrDetached
	}
	if len(c.pend) > 0 {
		n := copy(b, c.pend)
		c.pend = c.pend[n:]
		return n, nil
	}
	if len(b) == 0 {
		return 0, nil
	}
	if !c.handshaking && c.readAhead.Load() {
		return c.raw.Read(b)
	}
	if c.recLeft == 0 {
		// Start of a record: read exactly its header, then hand it up.
		if _, err := io.ReadFull(readerFunc(c.source), c.recHdr[:]); err != nil {
			return 0, err
		}
		c.recLeft = int(c.recHdr[3])<<8 | int(c.recHdr[4])
		n := copy(b, c.recHdr[:])
		c.pend = c.recHdr[n:]
		return n, nil
	}
	if len(b) > c.recLeft {
		b = b[:c.recLeft]
	}
	n, err := c.source(b)
	c.recLeft -= n
	if err == io.EOF && c.recLeft > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// source reads the TLS byte stream: the payload of PRELOGIN packets during
// the handshake, raw afterwards.
func (c *wrapConn) source(b []byte) (int, error) {
	if c.handshaking {
		return c.readHandshake(b)
	}
	return c.raw.Read(b)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// readHandshake returns TLS bytes from the payload of PRELOGIN packets.
func (c *wrapConn) readHandshake(b []byte) (int, error) {
	// The TLS stack reads only when it needs the peer's answer: what it
	// wrote so far is a complete flight and must go out first.
	if err := c.flush(); err != nil {
		return 0, err
	}
	for c.left == 0 {
		if c.readTotal+tds.HeaderLen > maxHandshakeRead {
			return 0, fmt.Errorf("tdstls: handshake exceeds %d bytes", maxHandshakeRead)
		}
		if _, err := io.ReadFull(c.raw, c.hdr[:]); err != nil {
			if err == io.EOF && c.packets > 0 && !c.lastEOM {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("tdstls: reading handshake packet header: %w", err)
		}
		c.readTotal += tds.HeaderLen
		h, err := tds.ParseHeader(c.hdr[:], c.packetSize)
		if err != nil {
			return 0, fmt.Errorf("tdstls: handshake packet: %w", err)
		}
		if !c.accept(h.Type) {
			return 0, fmt.Errorf("tdstls: handshake packet of type 0x%02x, want PRELOGIN (0x%02x)", uint8(h.Type), uint8(tds.PacketPrelogin))
		}
		c.packets++
		c.lastEOM = h.EOM()
		c.left = int(h.Length) - tds.HeaderLen
	}
	if len(b) > c.left {
		b = b[:c.left]
	}
	n, err := c.raw.Read(b)
	c.left -= n
	c.readTotal += n
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Write implements net.Conn.
func (c *wrapConn) Write(b []byte) (int, error) {
	if c.detached.Load() {
		return 0, ErrDetached
	}
	if !c.handshaking {
		return c.raw.Write(b)
	}
	if len(c.wbuf)+len(b) > maxHandshakeWrite {
		return 0, fmt.Errorf("tdstls: handshake flight exceeds %d bytes", maxHandshakeWrite)
	}
	c.wbuf = append(c.wbuf, b...)
	return len(b), nil
}

// flush sends the buffered TLS bytes as one PRELOGIN message: packets of at
// most packetSize bytes, EOM on the last, packet ids counting from 1.
func (c *wrapConn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	out := tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, c.packetSize, c.wbuf)
	c.wbuf = c.wbuf[:0]
	if _, err := c.raw.Write(out); err != nil {
		return fmt.Errorf("tdstls: writing handshake packet: %w", err)
	}
	return nil
}

// finish ends the handshake phase: the last flight goes out wrapped, and
// from now on bytes pass through raw. A handshake packet that still holds
// unread payload is a protocol error: those bytes would otherwise be taken
// for the first TLS record of the raw stream.
func (c *wrapConn) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	if c.left != 0 || c.recLeft != 0 || len(c.pend) != 0 {
		return fmt.Errorf("tdstls: %d unread bytes after the handshake in a PRELOGIN packet", c.left+len(c.pend))
	}
	c.handshaking = false
	c.wbuf = nil
	return nil
}

// Close implements net.Conn. After Detach it does nothing: raw belongs to
// the plaintext session then.
func (c *wrapConn) Close() error {
	if c.detached.Load() {
		return nil
	}
	return c.raw.Close()
}

// LocalAddr implements net.Conn.
func (c *wrapConn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *wrapConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline implements net.Conn. After Detach it does nothing, so that
// tls.Conn.Close (which sets a write deadline) leaves raw alone.
func (c *wrapConn) SetDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.raw.SetDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *wrapConn) SetReadDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.raw.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *wrapConn) SetWriteDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.raw.SetWriteDeadline(t)
}
