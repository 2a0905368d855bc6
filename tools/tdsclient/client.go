package tdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
)

// Encryption modes.
const (
	EncryptNone       = "none"       // ENCRYPT_NOT_SUP
	EncryptLogin      = "login"      // ENCRYPT_OFF: TLS for LOGIN7 only
	EncryptFull       = "full"       // ENCRYPT_ON
	EncryptNoPrelogin = "noprelogin" // LOGIN7 as the first packet, like jTDS with ssl=off
)

// Options describe a login.
type Options struct {
	Addr       string
	User       string
	Password   string
	Database   string
	App        string
	Encrypt    string // default EncryptNone
	PacketSize int    // default 4096
	Timeout    time.Duration
	// TDSVersion defaults to 7.4.
	TDSVersion uint32
}

// Conn is a logged-in session.
type Conn struct {
	raw        net.Conn
	rw         net.Conn
	PacketSize int
	SPID       uint16
	Version    uint32
	// Login holds the tokens of the login answer.
	Login []tds.Token
}

// LoginError is a login refused with an ERROR token.
type LoginError struct{ *tds.ErrorToken }

func (e *LoginError) Error() string { return "login failed: " + e.ErrorToken.Error() }

// Dial connects and logs in.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.PacketSize == 0 {
		o.PacketSize = tds.DefaultPacketSize
	}
	if o.TDSVersion == 0 {
		o.TDSVersion = tds.Version74
	}
	if o.Encrypt == "" {
		o.Encrypt = EncryptNone
	}
	d := net.Dialer{Timeout: o.Timeout}
	raw, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{raw: raw, rw: raw, Version: o.TDSVersion}
	raw.SetDeadline(time.Now().Add(o.Timeout))
	if err := c.login(ctx, o); err != nil {
		raw.Close()
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) login(ctx context.Context, o Options) error {
	var tc *tls.Conn
	loginOnly := false
	if o.Encrypt != EncryptNoPrelogin {
		want := map[string]uint8{EncryptNone: tds.EncryptNotSup, EncryptLogin: tds.EncryptOff, EncryptFull: tds.EncryptOn}[o.Encrypt]
		p := &tds.Prelogin{}
		p.SetVersion(tds.Version{Major: 1})
		p.SetEncryption(want)
		p.Set(tds.PLInstOpt, []byte{0})
		p.Set(tds.PLThreadID, []byte{0, 0, 0, 1})
		p.Set(tds.PLMARS, []byte{0})
		if _, err := c.raw.Write(tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, 4096, p.Append(nil))); err != nil {
			return err
		}
		m, err := tds.NewMessageReader(c.raw, tds.MaxPacketSize, 1<<16).ReadMessage()
		if err != nil {
			return fmt.Errorf("prelogin answer: %w", err)
		}
		resp, err := tds.ParsePrelogin(m.Data)
		if err != nil {
			return err
		}
		enc, _ := resp.Encryption()
		if enc != tds.EncryptNotSup && want != tds.EncryptNotSup {
			tc, err = tdstls.Client(ctx, c.raw, &tls.Config{InsecureSkipVerify: true}, 4096)
			if err != nil {
				return err
			}
			loginOnly = enc == tds.EncryptOff
		} else if enc == tds.EncryptReq && want == tds.EncryptNotSup {
			return errors.New("server requires encryption")
		}
	}
	l := &tds.Login7{TDSVersion: o.TDSVersion, PacketSize: uint32(o.PacketSize), ClientProgVer: 1, ClientPID: 1,
		OptionFlags1: 0xE0, OptionFlags2: 0x03, ClientLCID: 1033, HostName: "tdsclient", UserName: o.User,
		Password: o.Password, AppName: o.App, ServerName: o.Addr, CltIntName: "tdsclient", Database: o.Database}
	if o.TDSVersion < tds.Version72 {
		l.Legacy71 = true
	}
	var w io.Writer = c.raw
	if tc != nil {
		w = tc
	}
	if _, err := w.Write(tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, 4096, l.Append(nil))); err != nil {
		return err
	}
	if tc != nil {
		if loginOnly {
			if _, err := tdstls.Detach(tc); err != nil {
				return err
			}
		} else {
			tdstls.AllowReadAhead(tc)
			c.rw = tc
		}
	}
	toks, _, err := c.readResponse()
	if err != nil {
		return err
	}
	c.Login = toks
	c.PacketSize = 4096
	for _, t := range toks {
		if t.Type == tds.TokenError {
			return &LoginError{t.Error}
		}
		if t.EnvChange != nil && t.EnvChange.Type == tds.EnvPacketSize {
			fmt.Sscan(t.EnvChange.NewString(), &c.PacketSize)
		}
	}
	for _, t := range toks {
		if t.LoginAck != nil {
			return nil
		}
	}
	return errors.New("login answer without LOGINACK")
}

// readResponse reads one whole REPLY message and decodes its tokens.
func (c *Conn) readResponse() ([]tds.Token, tds.Message, error) {
	m, err := tds.NewMessageReader(c.rw, tds.MaxPacketSize, 1<<30).ReadMessage()
	if err != nil {
		return nil, m, err
	}
	c.SPID = m.SPID
	r := tds.NewTokenReader(m.Data, c.Version)
	var toks []tds.Token
	for r.More() {
		t, err := r.Next()
		if err != nil {
			return toks, m, err
		}
		toks = append(toks, t)
	}
	return toks, m, nil
}

// Result is the decoded answer to a batch.
type Result struct {
	Tokens []tds.Token
	// Rows holds the decoded values of every ROW, across result sets.
	Rows [][]any
	// Errors holds every ERROR token.
	Errors []*tds.ErrorToken
	// Attention reports a DONE with DONE_ATTN.
	Attention bool
}

// Scalar returns the first value of the first row.
func (r *Result) Scalar() any {
	if len(r.Rows) == 0 || len(r.Rows[0]) == 0 {
		return nil
	}
	return r.Rows[0][0]
}

// Exec runs a SQL batch and reads its whole answer. status may carry
// tds.StatusResetConnection.
func (c *Conn) Exec(sql string, status uint8) (*Result, error) {
	if err := c.Send(sql, status); err != nil {
		return nil, err
	}
	return c.Read()
}

// Send writes a SQL batch without reading the answer.
func (c *Conn) Send(sql string, status uint8) error {
	var payload []byte
	if c.Version >= tds.Version72 {
		payload = tds.AppendSQLBatch(nil, nil, sql)
	} else {
		payload = tds.EncodeUCS2(sql)
	}
	_, err := c.rw.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, status, 0, 1, c.PacketSize, payload))
	return err
}

// Attention sends an ATTENTION (cancel).
func (c *Conn) Attention() error {
	_, err := c.rw.Write(tds.AppendPackets(nil, tds.PacketAttention, 0, 0, 1, c.PacketSize, nil))
	return err
}

// Read reads one answer.
func (c *Conn) Read() (*Result, error) {
	toks, _, err := c.readResponse()
	res := &Result{Tokens: toks}
	var meta *tds.ColMetadata
	for _, t := range toks {
		switch {
		case t.ColMeta != nil:
			meta = t.ColMeta
		case t.Row != nil && meta != nil:
			row := make([]any, len(t.Row))
			for i, v := range t.Row {
				row[i], _ = tds.DecodeValue(&meta.Columns[i].Type, v)
			}
			res.Rows = append(res.Rows, row)
		case t.Type == tds.TokenError:
			res.Errors = append(res.Errors, t.Error)
		case t.Done != nil && t.Done.Status&tds.DoneAttn != 0:
			res.Attention = true
		}
	}
	return res, err
}

// SendMessage writes one request message of any type (an RPC built with
// tds.AppendRPC, a transaction manager request, ...) without reading the
// answer. status may carry tds.StatusResetConnection; EOM is added.
func (c *Conn) SendMessage(typ tds.PacketType, status uint8, payload []byte) error {
	_, err := c.rw.Write(tds.AppendPackets(nil, typ, status, 0, 1, c.PacketSize, payload))
	return err
}

// SendPackets writes request packets exactly as given (status bits,
// packet ids, split), to replay a message as a client sent it, without
// reading the answer.
func (c *Conn) SendPackets(b []byte) error {
	_, err := c.rw.Write(b)
	return err
}

// StreamPackets reads one answer packet by packet, handing fn each
// header and payload (valid only during the call) until the packet with
// EOM. If fn returns an error, StreamPackets returns it at once and the
// rest of the answer is left unread on the connection.
func (c *Conn) StreamPackets(fn func(h tds.Header, payload []byte) error) error {
	mr := tds.NewMessageReader(c.rw, tds.MaxPacketSize, 0)
	pkt := make([]byte, tds.MaxPacketSize)
	for {
		h, err := mr.ReadHeader()
		if err != nil {
			return err
		}
		if h.Type != tds.PacketReply {
			return fmt.Errorf("tdsclient: packet type 0x%02x in an answer", uint8(h.Type))
		}
		n := int(h.Length) - tds.HeaderLen
		if _, err := io.ReadFull(c.rw, pkt[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		c.SPID = h.SPID
		if err := fn(h, pkt[:n]); err != nil {
			return err
		}
		if h.EOM() {
			return nil
		}
	}
}

// streamChunk is how many undecoded bytes Stream gathers before decoding:
// a few packets, so tokens rarely straddle a decode.
const streamChunk = 32 << 10

// Stream reads one answer and hands each token to fn as soon as the
// packets holding it have arrived, keeping in memory only the bytes of
// tokens not yet decoded (a few packets), however big the answer. Use it
// for results too big for Read. The byte slices of a token (Row values,
// Raw, Return.Value) are only valid during the call; ROW tokens decode
// against the last COLMETADATA, which fn sees first. If fn returns an
// error, Stream returns it at once and the rest of the answer is left
// unread on the connection.
func (c *Conn) Stream(fn func(tds.Token) error) error {
	var meta []byte // the raw COLMETADATA of the current result set
	var work []byte // meta, then the bytes not yet decoded
	err := c.StreamPackets(func(h tds.Header, payload []byte) error {
		work = append(work, payload...)
		eom := h.EOM()
		if !eom && len(work)-len(meta) < streamChunk {
			return nil
		}
		r := tds.NewTokenReader(work, c.Version)
		if len(meta) > 0 {
			if _, err := r.Next(); err != nil { // re-read the COLMETADATA the rows need
				return err
			}
		}
		done := r.Offset()
		for r.More() {
			t, err := r.Next()
			if err != nil {
				if !eom {
					break // the token continues in the next packets
				}
				return err
			}
			done = r.Offset()
			if t.Type == tds.TokenColMetadata {
				meta = append(meta[:0:0], t.Raw...)
			}
			if err := fn(t); err != nil {
				return err
			}
		}
		// Keep meta and the undecoded rest, in place: the rest starts at
		// done, past the end of wherever meta was read from.
		k := copy(work, meta)
		k += copy(work[k:], work[done:])
		work = work[:k]
		return nil
	})
	if err == nil && len(work) > len(meta) {
		err = fmt.Errorf("tdsclient: %d bytes after the last token", len(work)-len(meta))
	}
	return err
}

// SetDeadline sets the deadline of the underlying connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// Close closes the connection.
func (c *Conn) Close() error { return c.raw.Close() }

// NetConn is the TCP connection under the session (for tests that
// half-close or reset it).
func (c *Conn) NetConn() net.Conn { return c.raw }

// StreamWire reads one answer as fast as the connection delivers it: it
// reads into buf (64 KiB or more is best) as much as has arrived and
// follows the packet headers by their lengths, without decoding a token,
// until the packet with EOM ends. It returns the answer's wire bytes
// (headers included). For benchmarks that must not be bound by the
// client; StreamPackets hands over packet by packet.
func (c *Conn) StreamWire(buf []byte) (int64, error) {
	if len(buf) < tds.HeaderLen {
		buf = make([]byte, 64<<10)
	}
	var total int64
	var hdr [tds.HeaderLen]byte
	hn, left := 0, 0 // header bytes gathered; body bytes of the packet still to come
	eom := false
	for {
		n, err := c.rw.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			if hn < tds.HeaderLen {
				k := copy(hdr[hn:], p)
				hn += k
				p = p[k:]
				total += int64(k)
				if hn < tds.HeaderLen {
					break
				}
				h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
				if err != nil {
					return total, err
				}
				if h.Type != tds.PacketReply {
					return total, fmt.Errorf("tdsclient: packet type 0x%02x in an answer", uint8(h.Type))
				}
				c.SPID = h.SPID
				left, eom = int(h.Length)-tds.HeaderLen, h.EOM()
			}
			k := min(left, len(p))
			left -= k
			p = p[k:]
			total += int64(k)
			if left == 0 {
				if eom {
					if len(p) > 0 {
						return total, fmt.Errorf("tdsclient: %d bytes after the answer's last packet", len(p))
					}
					return total, nil
				}
				hn = 0
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return total, err
		}
	}
}
