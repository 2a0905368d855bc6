package backend

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
)

// Encryption is a bucket's backend encryption setting.
type Encryption string

// Backend encryption settings.
const (
	// EncryptNone: no TLS; the password crosses the network obfuscated only.
	EncryptNone Encryption = "none"
	// EncryptLogin: TLS for the LOGIN7 (PRELOGIN ENCRYPT_OFF); the server
	// may upgrade to full TLS. A server without TLS is refused.
	EncryptLogin Encryption = "login"
	// EncryptFull: TLS for the whole session (ENCRYPT_ON).
	EncryptFull Encryption = "full"
	// EncryptStrict: TDS 8.0, TLS first with ALPN tds/8.0.
	EncryptStrict Encryption = "strict"
)

// Defaults.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultLoginTimeout = 15 * time.Second
	// DefaultCloseWait bounds how long Hangup waits for the server to
	// close its side of a connection tdsgate ends before the connection's
	// slot may go to another login. A server that has read the FIN closes
	// at once (the stand-in in microseconds; SQL Server when it has ended
	// the session); one that does not within it is not waited for longer,
	// so a session's end never hangs on a misbehaving backend.
	DefaultCloseWait = time.Second
)

// Target is one bucket's backend.
type Target struct {
	Bucket     string
	Address    string
	Encryption Encryption
	// TLS carries ServerName and RootCAs (or InsecureSkipVerify for
	// trust_server_certificate). Nil means InsecureSkipVerify.
	TLS *tls.Config
	// CAPEM is the PEM bundle TLS.RootCAs was built from (the bucket's
	// ca_file, as read): a reload compares it to tell a changed CA.
	CAPEM        []byte
	DialTimeout  time.Duration
	LoginTimeout time.Duration
}

// Same reports whether t and o reach the same backend the same way:
// address, encryption, timeouts, server name, verification and the very
// CA bundle. A reload keeps a bucket's breaker and pool only then.
func (t *Target) Same(o *Target) bool {
	if t.Address != o.Address || t.Encryption != o.Encryption || t.DialTimeout != o.DialTimeout ||
		t.LoginTimeout != o.LoginTimeout || !bytes.Equal(t.CAPEM, o.CAPEM) || (t.TLS == nil) != (o.TLS == nil) {
		return false
	}
	if t.TLS == nil {
		return true
	}
	return t.TLS.ServerName == o.TLS.ServerName && t.TLS.InsecureSkipVerify == o.TLS.InsecureSkipVerify &&
		(t.TLS.RootCAs == nil) == (o.TLS.RootCAs == nil)
}

// Stage says where a backend connection failed.
type Stage uint8

// Stages.
const (
	StageDial Stage = iota + 1
	StagePrelogin
	StageTLS
	StageLogin
)

func (s Stage) String() string {
	switch s {
	case StageDial:
		return "dial"
	case StagePrelogin:
		return "prelogin"
	case StageTLS:
		return "tls"
	case StageLogin:
		return "login"
	}
	return "unknown"
}

// Error is a failure to reach or log in to a backend.
type Error struct {
	Bucket  string
	Address string
	Stage   Stage
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("backend %s (%s): %s: %v", e.Bucket, e.Address, e.Stage, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Conn is a connection to a backend after PRELOGIN (and TLS).
type Conn struct {
	// Raw is the TCP connection.
	Raw *net.TCPConn
	// Conn is the session's transport: Raw, or TLS for the whole session.
	Conn       net.Conn
	Encryption uint8 // what the server answered in PRELOGIN
	tlsConn    *tls.Conn
	loginOnly  bool
	target     *Target
}

// TLS reports whether the session after login runs over TLS.
func (c *Conn) TLS() bool { return c.Conn != net.Conn(c.Raw) }

// Close closes the connection at once. A connection whose slot is given
// back after it is ended with Hangup instead.
func (c *Conn) Close() error { return c.Raw.Close() }

// Hangup ends the connection the way its slot may be given back after
// it: see Hangup.
func (c *Conn) Hangup(wait time.Duration) { Hangup(c.Raw, wait) }

// Hangup ends a backend connection so that the server has let go of the
// session when it returns: FIN (CloseWrite), then the server's own close
// read (everything it still sends is discarded, up to its EOF or reset),
// for at most wait, then Close. A slot released right after a plain Close
// lets a new login reach the server while the server still counts the
// old session (it sees the FIN only when its reader next runs), one past
// max_connections for a few milliseconds: the backend is the oracle of a
// cap, and SQL Server too keeps the session until it has processed the
// close. wait <= 0 closes at once. The connection may have been
// half-closed already (HalfClose in pkg/relay: the relay's abort); a
// closed one returns at once.
func Hangup(raw *net.TCPConn, wait time.Duration) {
	defer raw.Close()
	if wait <= 0 {
		return
	}
	// A second CloseWrite, or one after the server's FIN and ours
	// crossed, may fail (ENOTCONN): the read below still sees the end.
	if err := raw.CloseWrite(); errors.Is(err, net.ErrClosed) {
		return
	}
	end := time.Now().Add(wait)
	buf := make([]byte, 8<<10)
	for {
		if raw.SetReadDeadline(end) != nil {
			return
		}
		_, err := raw.Read(buf)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(end):
			// Another goroutine's deadline (an abort's HalfClose racing
			// this end), not ours.
		default:
			return // the server's close (EOF, reset), or wait is up
		}
	}
}

func (t *Target) fail(stage Stage, err error) *Error {
	return &Error{Bucket: t.Bucket, Address: t.Address, Stage: stage, Err: err}
}

func (t *Target) tlsConfig() *tls.Config {
	if t.TLS != nil {
		return t.TLS
	}
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
}

// Connect dials the backend and runs PRELOGIN and TLS as t says. The
// returned Conn is ready for Login.
func Connect(ctx context.Context, t *Target) (*Conn, error) {
	dt := t.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	d := net.Dialer{Timeout: dt, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return nil, t.fail(StageDial, err)
	}
	c := &Conn{Raw: nc.(*net.TCPConn), target: t}
	c.Conn = c.Raw
	if err := c.prelogin(ctx); err != nil {
		c.Raw.Close()
		return nil, err
	}
	return c, nil
}

// loginDeadline is when a handshake or login step must be done: the
// bucket's login timeout from now, or ctx's deadline if sooner.
func (t *Target) loginDeadline(ctx context.Context) time.Time {
	lt := t.LoginTimeout
	if lt <= 0 {
		lt = DefaultLoginTimeout
	}
	deadline := time.Now().Add(lt)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}

func (c *Conn) prelogin(ctx context.Context) error {
	t := c.target
	deadline := t.loginDeadline(ctx)
	c.Raw.SetDeadline(deadline)
	defer c.Raw.SetDeadline(time.Time{})
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var transport net.Conn = c.Raw
	want := tds.EncryptOff
	switch t.Encryption {
	case EncryptNone:
		want = tds.EncryptNotSup
	case EncryptFull:
		want = tds.EncryptOn
	case EncryptStrict:
		tc, err := tdstls.ClientStrict(hctx, c.Raw, t.tlsConfig())
		if err != nil {
			return t.fail(StageTLS, err)
		}
		c.tlsConn, transport, want = tc, tc, tds.EncryptStrict
	}
	enc, err := exchangePrelogin(transport, want)
	if err != nil {
		return t.fail(StagePrelogin, err)
	}
	c.Encryption = enc
	if t.Encryption == EncryptStrict {
		return nil // TLS from the first byte; nothing left to negotiate
	}
	switch {
	case enc == tds.EncryptNotSup && t.Encryption != EncryptNone:
		return t.fail(StagePrelogin, fmt.Errorf("the server does not support encryption, and the bucket's encryption is %q (set encryption: none to allow plaintext logins)", t.Encryption))
	case enc != tds.EncryptNotSup && t.Encryption == EncryptNone:
		if enc == tds.EncryptReq || enc == tds.EncryptOn {
			return t.fail(StagePrelogin, errors.New("the server requires encryption, and the bucket's encryption is \"none\""))
		}
		return nil
	case enc == tds.EncryptNotSup:
		return nil
	}
	tc, err := tdstls.Client(hctx, c.Raw, t.tlsConfig(), tds.DefaultPacketSize)
	if err != nil {
		return t.fail(StageTLS, err)
	}
	c.tlsConn = tc
	c.loginOnly = enc == tds.EncryptOff && t.Encryption == EncryptLogin
	return nil
}

// LoginResult is the backend's answer to a LOGIN7.
type LoginResult struct {
	// Response is the whole response message as the server framed it,
	// to relay to the client unchanged.
	Response []byte
	// OK reports a LOGINACK.
	OK bool
	// Error is the first ERROR token, when the login failed.
	Error *tds.ErrorToken
	// Values of the session, from the response.
	LoginAck   *tds.LoginAck
	PacketSize int
	Database   string
	Language   string
	Collation  []byte
	SPID       uint16
}

// Login sends a LOGIN7 payload and reads the response. clientVersion is
// the TDS version the client asked for, which fixes the token layouts of
// the answer.
func (c *Conn) Login(ctx context.Context, login7 []byte, clientVersion uint32) (*LoginResult, error) {
	t := c.target
	c.Raw.SetDeadline(t.loginDeadline(ctx))
	defer c.Raw.SetDeadline(time.Time{})

	var w io.Writer = c.Raw
	if c.tlsConn != nil {
		w = c.tlsConn
	}
	if _, err := w.Write(tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, login7)); err != nil {
		return nil, t.fail(StageLogin, err)
	}
	switch {
	case c.tlsConn != nil && c.loginOnly:
		raw, err := tdstls.Detach(c.tlsConn)
		if err != nil {
			return nil, t.fail(StageLogin, err)
		}
		c.Conn = raw
	case c.tlsConn != nil:
		if t.Encryption != EncryptStrict {
			if err := tdstls.AllowReadAhead(c.tlsConn); err != nil {
				return nil, t.fail(StageLogin, err)
			}
		}
		c.Conn = c.tlsConn
	}
	res := &LoginResult{}
	var payload []byte
	r := tds.NewMessageReader(c.Conn, tds.MaxPacketSize, 0)
	for {
		h, err := r.ReadHeader()
		if err != nil {
			return nil, t.fail(StageLogin, err)
		}
		if h.Type != tds.PacketReply {
			return nil, t.fail(StageLogin, fmt.Errorf("login answer of packet type 0x%02x", uint8(h.Type)))
		}
		var hb [tds.HeaderLen]byte
		h.Put(hb[:])
		start := len(res.Response)
		res.Response = append(res.Response, hb[:]...)
		res.Response = append(res.Response, make([]byte, int(h.Length)-tds.HeaderLen)...)
		if _, err := io.ReadFull(c.Conn, res.Response[start+tds.HeaderLen:]); err != nil {
			return nil, t.fail(StageLogin, err)
		}
		payload = append(payload, res.Response[start+tds.HeaderLen:]...)
		res.SPID = h.SPID
		if h.EOM() {
			break
		}
		if len(res.Response) > 1<<20 {
			return nil, t.fail(StageLogin, errors.New("login answer exceeds 1 MiB"))
		}
	}
	tr := tds.NewTokenReader(payload, tokenVersion(clientVersion))
	for tr.More() {
		tok, err := tr.Next()
		if err != nil {
			return nil, t.fail(StageLogin, fmt.Errorf("login answer: %w", err))
		}
		switch {
		case tok.LoginAck != nil:
			res.OK, res.LoginAck = true, tok.LoginAck
		case tok.Type == tds.TokenError && res.Error == nil:
			res.Error = tok.Error
		case tok.EnvChange != nil:
			switch tok.EnvChange.Type {
			case tds.EnvPacketSize:
				if n, err := strconv.Atoi(tok.EnvChange.NewString()); err == nil {
					res.PacketSize = n
				}
			case tds.EnvDatabase:
				res.Database = tok.EnvChange.NewString()
			case tds.EnvLanguage:
				res.Language = tok.EnvChange.NewString()
			case tds.EnvSQLCollation:
				// A copy: a slice of payload would keep the whole
				// login answer's payload alive with the session.
				res.Collation = bytes.Clone(tok.EnvChange.New)
			}
		case tok.Type == tds.TokenSSPI || tok.Type == tds.TokenFedAuthInfo:
			return nil, t.fail(StageLogin, errors.New("the server asked for integrated or federated authentication, which tdsgate does not relay"))
		}
	}
	if res.Error != nil {
		res.OK = false
	}
	if res.PacketSize == 0 {
		res.PacketSize = tds.DefaultPacketSize
	}
	return res, nil
}

// tokenVersion is the layout version of a server's answer to a client
// that asked for v.
func tokenVersion(v uint32) uint32 {
	if v == tds.Version80 || v >= tds.Version72 {
		return tds.Version74
	}
	return tds.Version71b
}

// Probe checks that the backend answers a real PRELOGIN exchange (no
// login), for health checks and for closing an open breaker. A strict
// bucket's probe completes the TLS handshake first. It returns how long
// the exchange took.
func Probe(ctx context.Context, t *Target) (time.Duration, error) {
	start := time.Now()
	dt := t.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	d := net.Dialer{Timeout: dt}
	nc, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return 0, t.fail(StageDial, err)
	}
	defer nc.Close()
	deadline := time.Now().Add(dt)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	nc.SetDeadline(deadline)
	var transport net.Conn = nc
	want := tds.EncryptNotSup
	if t.Encryption == EncryptStrict {
		tc, err := tdstls.ClientStrict(ctx, nc, t.tlsConfig())
		if err != nil {
			return 0, t.fail(StageTLS, err)
		}
		transport, want = tc, tds.EncryptStrict
	}
	if _, err := exchangePrelogin(transport, want); err != nil {
		return 0, t.fail(StagePrelogin, err)
	}
	return time.Since(start), nil
}

// exchangePrelogin sends tdsgate's PRELOGIN asking for encryption want and
// returns the server's ENCRYPTION answer.
func exchangePrelogin(transport net.Conn, want uint8) (uint8, error) {
	p := &tds.Prelogin{}
	p.SetVersion(tds.Version{Major: 16, Minor: 0, Build: 1000})
	p.SetEncryption(want)
	p.Set(tds.PLInstOpt, []byte{0})
	p.Set(tds.PLThreadID, []byte{0, 0, 0, 0})
	p.Set(tds.PLMARS, []byte{0})
	if _, err := transport.Write(tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, p.Append(nil))); err != nil {
		return 0, err
	}
	m, err := tds.NewMessageReader(transport, tds.DefaultPacketSize, 64<<10).ReadMessage()
	if err != nil {
		return 0, err
	}
	if m.Type != tds.PacketReply && m.Type != tds.PacketPrelogin {
		return 0, fmt.Errorf("answer of packet type 0x%02x", uint8(m.Type))
	}
	resp, err := tds.ParsePrelogin(m.Data)
	if err != nil {
		return 0, err
	}
	enc, ok := resp.Encryption()
	if !ok {
		return 0, errors.New("no ENCRYPTION in the PRELOGIN answer")
	}
	return enc, nil
}
