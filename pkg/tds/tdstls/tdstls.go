package tdstls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// ALPN is the application protocol of TDS 8.0 strict mode.
const ALPN = "tds/8.0"

// ErrNoALPN is returned by ServerStrict when the client did not offer ALPN
// "tds/8.0", and by ClientStrict when the server chose another protocol.
var ErrNoALPN = errors.New(`tdstls: peer did not negotiate ALPN "tds/8.0"`)

// Server performs the server side of the TLS handshake carried in PRELOGIN
// packets on raw (TDS 7.x, after a PRELOGIN exchange that negotiated
// ENCRYPTION OFF, ON or REQ). It returns the tls.Conn to use for the
// encrypted part; raw stays owned by the caller, who closes it on error.
//
// cfg is cloned, never modified. The clone gets:
//   - DynamicRecordSizingDisabled = true: SQL Server-side stacks expect one
//     TLS record per TDS packet during the login, and Go's dynamic sizing
//     would split a packet over several small records.
//   - MaxVersion capped at TLS 1.2 and SessionTicketsDisabled = true. A TLS
//     1.3 server sends NewSessionTicket messages after its Finished, as
//     post-handshake records. The client has switched to raw mode by then
//     and, in login-only mode, back to plaintext after its LOGIN7: the
//     tickets would land in the middle of its plaintext TDS stream (or
//     make it wait for records that a wrapped peer never reads). TLS 1.2
//     has no post-handshake messages, and without tickets no
//     NewSessionTicket inside the handshake either. SQL Server itself
//     offers TLS 1.3 only in strict mode (ServerStrict).
//
// A MinVersion above TLS 1.2 is an error. packetSize is both the largest
// packet accepted from the peer and the size the outgoing flights are split
// at; 0 means tds.DefaultPacketSize (the packet size before LOGIN7, which is
// what the handshake uses).
//
// ctx bounds the handshake: its deadline becomes raw's deadline and stays
// set when Server returns, so that the reads that follow the handshake in
// the same login (PRELOGIN, LOGIN7) are under it too; the caller clears it
// when its login is done. Cancelling ctx sets a deadline in the past to
// wake a blocked handshake. Without a deadline in ctx, a deadline the
// caller set on raw bounds the reads. The returned conn reads in exact-record mode (see
// AllowReadAhead and Detach).
func Server(ctx context.Context, raw net.Conn, cfg *tls.Config, packetSize int) (*tls.Conn, error) {
	c, err := wrappedConfig(cfg)
	if err != nil {
		return nil, err
	}
	if c.GetConfigForClient != nil {
		userGet := c.GetConfigForClient
		c.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			nc, err := userGet(chi)
			if err != nil || nc == nil {
				return nc, err
			}
			return wrappedConfig(nc)
		}
	}
	ps, err := checkPacketSize(packetSize)
	if err != nil {
		return nil, err
	}
	w := newWrapConn(raw, ps, func(t tds.PacketType) bool { return t == tds.PacketPrelogin })
	tc := tls.Server(w, c)
	if err := handshake(ctx, raw, tc, w, "server"); err != nil {
		return nil, err
	}
	return tc, nil
}

// Client performs the client side of the TLS handshake carried in PRELOGIN
// packets: the proxy logging in to a backend SQL Server. cfg.ServerName (or
// InsecureSkipVerify, or a VerifyConnection of the caller's) decides the
// verification as usual; cfg is cloned and gets the same changes as in
// Server (one record per packet, TLS 1.2 at most, no session tickets).
//
// Besides PRELOGIN (0x12), the client accepts handshake packets of type
// REPLY (0x04): older servers answer with it, as go-mssqldb notes.
func Client(ctx context.Context, raw net.Conn, cfg *tls.Config, packetSize int) (*tls.Conn, error) {
	c, err := wrappedConfig(cfg)
	if err != nil {
		return nil, err
	}
	ps, err := checkPacketSize(packetSize)
	if err != nil {
		return nil, err
	}
	w := newWrapConn(raw, ps, func(t tds.PacketType) bool {
		return t == tds.PacketPrelogin || t == tds.PacketReply
	})
	tc := tls.Client(w, c)
	if err := handshake(ctx, raw, tc, w, "client"); err != nil {
		return nil, err
	}
	return tc, nil
}

// ServerStrict performs the server side of a TDS 8.0 strict handshake:
// plain TLS from the first byte on raw, then the whole TDS session inside
// it. If the caller read the first bytes to tell a ClientHello from a
// PRELOGIN packet (LooksLikeTLSClientHello), it passes
// WithPrefix(raw, first) as raw.
//
// The server offers only ALPN "tds/8.0" and refuses a client that does not
// offer it (ErrNoALPN, with a TLS alert to the client): SQL Server requires
// it of strict clients, and every strict driver (ODBC 18, JDBC, go-mssqldb,
// Microsoft.Data.SqlClient) sends it. TLS 1.3 and session tickets stay
// allowed: the session never leaves TLS, so post-handshake messages are
// read where they belong. DynamicRecordSizingDisabled is forced as in
// Server.
func ServerStrict(ctx context.Context, raw net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	c, err := strictConfig(cfg)
	if err != nil {
		return nil, err
	}
	userGet := c.GetConfigForClient
	c.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(chi.SupportedProtos, ALPN) {
			return nil, ErrNoALPN
		}
		if userGet == nil {
			return nil, nil
		}
		nc, err := userGet(chi)
		if err != nil || nc == nil {
			return nc, err
		}
		return strictConfig(nc)
	}
	tc := tls.Server(raw, c)
	if err := handshake(ctx, raw, tc, nil, "strict server"); err != nil {
		return nil, err
	}
	return tc, nil
}

// ClientStrict performs the client side of a TDS 8.0 strict handshake,
// offering ALPN "tds/8.0" only. A server that answers without ALPN is
// accepted; crypto/tls itself refuses one that picks a protocol not offered.
func ClientStrict(ctx context.Context, raw net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	c, err := strictConfig(cfg)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, c)
	if err := handshake(ctx, raw, tc, nil, "strict client"); err != nil {
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != ALPN {
		return nil, fmt.Errorf("%w (got %q)", ErrNoALPN, p)
	}
	return tc, nil
}

// LooksLikeTLSClientHello reports whether the first bytes of a connection
// are a TLS handshake record (0x16 0x03 0x00..0x04) and, when the sixth
// byte is there, whether it starts a ClientHello (handshake type 0x01). A
// TDS client starts with a packet header instead: 0x12 for PRELOGIN, 0x10
// for a LOGIN7 without PRELOGIN, 0x02 for a TDS 4.2/5.0 login. Three bytes
// are enough; eight (a TDS header's worth, which a ClientHello always
// exceeds) make the answer firmer.
func LooksLikeTLSClientHello(first []byte) bool {
	if len(first) < 3 || first[0] != 0x16 || first[1] != 0x03 || first[2] > 0x04 {
		return false
	}
	return len(first) < 6 || first[5] == 0x01
}

// AllowReadAhead lets c's tls.Conn read from raw in big chunks instead of
// one TLS record at a time. Call it on a fully encrypted session
// (ENCRYPTION ON or REQ) for throughput: exact-record reads cost a second
// read syscall per record. Never call it on a login-only session, which
// must Detach later. It may be called while c is in use.
func AllowReadAhead(c *tls.Conn) error {
	w, ok := c.NetConn().(*wrapConn)
	if !ok {
		return ErrNotOurs
	}
	w.readAhead.Store(true)
	return nil
}

// Detach ends the TLS part of a login-only session (ENCRYPTION OFF) and
// returns raw for the plaintext rest of it. Call it only after the LOGIN7
// went through c: on the server after reading the whole LOGIN7 message
// (through its EOM packet) from c, on the client after writing it to c; and
// never while another goroutine uses c. The server's login response, and
// everything after it, is plaintext on raw in both directions.
//
// After Detach, c's methods fail with ErrDetached, and c.Close neither
// writes a close_notify alert nor closes or touches raw, so a deferred
// c.Close is harmless (it reports the close_notify it could not send, an
// error wrapping ErrDetached, which callers ignore). Detach refuses when c's reader stopped in the middle
// of a TLS record or read ahead (AllowReadAhead), because raw would then
// not be positioned at the first plaintext byte.
func Detach(c *tls.Conn) (net.Conn, error) {
	w, ok := c.NetConn().(*wrapConn)
	if !ok {
		return nil, ErrNotOurs
	}
	switch {
	case w.detached.Load():
		return nil, ErrDetached
	case w.handshaking:
		return nil, errors.New("tdstls: detach before the handshake completed")
	case w.readAhead.Load():
		return nil, errors.New("tdstls: detach after AllowReadAhead: raw may be read past the TLS records")
	case w.recLeft != 0 || len(w.pend) != 0:
		return nil, errors.New("tdstls: detach in the middle of a TLS record")
	}
	w.detached.Store(true)
	return w.raw, nil
}

// WithPrefix returns a conn that reads prefix first and then from raw; all
// else goes to raw. Use it to hand the bytes read to detect a strict client
// back to ServerStrict.
func WithPrefix(raw net.Conn, prefix []byte) net.Conn {
	return &prefixConn{Conn: raw, prefix: slices.Clone(prefix)}
}

type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func wrappedConfig(cfg *tls.Config) (*tls.Config, error) {
	if cfg == nil {
		return nil, errors.New("tdstls: nil tls.Config")
	}
	if cfg.MinVersion > tls.VersionTLS12 {
		return nil, fmt.Errorf("tdstls: MinVersion %s: TLS inside PRELOGIN packets allows TLS 1.2 at most (TLS 1.3 needs strict mode)", tls.VersionName(cfg.MinVersion))
	}
	c := cfg.Clone()
	c.DynamicRecordSizingDisabled = true
	if c.MaxVersion == 0 || c.MaxVersion > tls.VersionTLS12 {
		c.MaxVersion = tls.VersionTLS12
	}
	c.SessionTicketsDisabled = true
	return c, nil
}

func strictConfig(cfg *tls.Config) (*tls.Config, error) {
	if cfg == nil {
		return nil, errors.New("tdstls: nil tls.Config")
	}
	c := cfg.Clone()
	c.DynamicRecordSizingDisabled = true
	c.NextProtos = []string{ALPN}
	return c, nil
}

func checkPacketSize(n int) (int, error) {
	if n == 0 {
		return tds.DefaultPacketSize, nil
	}
	if n < tds.MinPacketSize || n > tds.MaxPacketSize {
		return 0, fmt.Errorf("tdstls: packet size %d outside %d..%d", n, tds.MinPacketSize, tds.MaxPacketSize)
	}
	return n, nil
}

// aLongTimeAgo is a deadline in the past: it wakes blocked I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// handshake runs tc's handshake bounded by ctx. w is the PRELOGIN adapter
// (nil in strict mode); on success its last flight is flushed and it
// switches to passthrough, on failure the TLS alert it buffered is sent.
func handshake(ctx context.Context, raw net.Conn, tc *tls.Conn, w *wrapConn, side string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tdstls: %s handshake: %w", side, err)
	}
	dl, hasDL := ctx.Deadline()
	if hasDL {
		if err := raw.SetDeadline(dl); err != nil {
			return fmt.Errorf("tdstls: %s handshake: %w", side, err)
		}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = raw.SetDeadline(aLongTimeAgo)
		close(fired)
	})
	// Handshake, not HandshakeContext: the latter closes the conn on
	// cancellation, and raw belongs to the caller.
	err := tc.Handshake()
	if w != nil {
		if err == nil {
			err = w.finish()
		} else {
			_ = w.flush() // best effort: the alert tls wrote, wrapped
		}
	}
	ctxFired := !stop()
	if ctxFired {
		<-fired
		// Undo the wake-up deadline: back to ctx's deadline, which stays
		// on raw (see Server), or to none.
		var restore time.Time
		if hasDL {
			restore = dl
		}
		_ = raw.SetDeadline(restore)
	}
	cerr := ctx.Err()
	if cerr == nil && hasDL && err != nil && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded // raw's deadline fired before ctx's timer
	}
	switch {
	case err != nil && cerr != nil:
		return fmt.Errorf("tdstls: %s handshake: %w: %w", side, cerr, err)
	case err != nil:
		return fmt.Errorf("tdstls: %s handshake: %w", side, err)
	case ctxFired:
		return fmt.Errorf("tdstls: %s handshake: %w", side, cerr)
	}
	return nil
}
