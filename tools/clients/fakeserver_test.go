package clients

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
)

// This file holds two tiny test servers, independent of the project's codec:
//   - firstPacketServer records what a client sends first (PRELOGIN
//     ENCRYPTION byte, a bare LOGIN7, or a TLS ClientHello), then hangs up.
//   - fakeTDS answers logins (plaintext, login-only TLS, full TLS or TDS 8.0
//     strict, using pkg/tds/tdstls and a self-signed certificate) and
//     batches just enough to exercise the harness end to end (results, an
//     error, a cancel) until the real stand-in (tools/standin) takes over.

// firstPacket is what a client sent first on a connection.
type firstPacket struct {
	Kind       string // "prelogin", "login7", "tls", "other"
	Encryption int    // PRELOGIN ENCRYPTION byte, -1 when absent
	Raw        []byte
}

func (f firstPacket) String() string {
	switch f.Kind {
	case "prelogin":
		if f.Encryption < 0 {
			return "PRELOGIN without ENCRYPTION"
		}
		return "PRELOGIN ENCRYPTION=" + encName(byte(f.Encryption))
	case "login7":
		return "LOGIN7 first (no PRELOGIN)"
	case "tls":
		return "TLS ClientHello first (TDS 8.0 strict)"
	}
	return "other first bytes " + hexPrefix(f.Raw)
}

func encName(b byte) string {
	switch b {
	case 0x00:
		return "0x00 OFF"
	case 0x01:
		return "0x01 ON"
	case 0x02:
		return "0x02 NOT_SUP"
	case 0x03:
		return "0x03 REQ"
	}
	return "0x" + hexPrefix([]byte{b})
}

func hexPrefix(b []byte) string {
	const digits = "0123456789ABCDEF"
	if len(b) > 16 {
		b = b[:16]
	}
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}

// parseFirstPacket classifies the first bytes a client sent.
func parseFirstPacket(b []byte) firstPacket {
	f := firstPacket{Kind: "other", Encryption: -1, Raw: b}
	if len(b) == 0 {
		return f
	}
	if b[0] == 0x16 { // TLS handshake record: strict mode sends TLS before any TDS
		f.Kind = "tls"
		return f
	}
	if len(b) < 8 {
		return f
	}
	switch b[0] {
	case 0x10:
		f.Kind = "login7"
		return f
	case 0x12:
		f.Kind = "prelogin"
	default:
		return f
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b) || n < 8 {
		n = len(b)
	}
	payload := b[8:n]
	// Option table: (token, offset BE16, length BE16)... 0xFF.
	for i := 0; i < len(payload) && payload[i] != 0xFF; i += 5 {
		if i+5 > len(payload) {
			break
		}
		tok := payload[i]
		off := int(binary.BigEndian.Uint16(payload[i+1:]))
		ln := int(binary.BigEndian.Uint16(payload[i+3:]))
		if tok == 0x01 && ln >= 1 && off < len(payload) {
			f.Encryption = int(payload[off])
		}
	}
	return f
}

// firstPacketServer accepts connections; for each it reads the first packet,
// reports it on the channel, and closes the connection.
type firstPacketServer struct {
	ln   net.Listener
	got  chan firstPacket
	wg   sync.WaitGroup
	done chan struct{}
}

func newFirstPacketServer(t *testing.T) *firstPacketServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &firstPacketServer{ln: ln, got: make(chan firstPacket, 16), done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				buf := make([]byte, 0, 4096)
				tmp := make([]byte, 4096)
				for {
					n, err := c.Read(tmp)
					buf = append(buf, tmp[:n]...)
					if err != nil || complete(buf) {
						break
					}
				}
				select {
				case s.got <- parseFirstPacket(buf):
				case <-s.done:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// complete reports whether buf holds a whole first packet (or enough to classify it).
func complete(buf []byte) bool {
	if len(buf) > 0 && buf[0] == 0x16 {
		return len(buf) >= 5
	}
	if len(buf) < 8 {
		return false
	}
	return len(buf) >= int(binary.BigEndian.Uint16(buf[2:4]))
}

func (s *firstPacketServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// ---- fakeTDS: a minimal plaintext TDS responder ----

type fakeTDS struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mode string // EncryptNone, EncryptLogin, EncryptFull, EncryptStrict
	tls  *tls.Config
	logf func(format string, args ...any)

	mu       sync.Mutex
	batches  []string
	attns    int
	closeAll []net.Conn
}

var (
	certOnce sync.Once
	certVal  tls.Certificate
	certErr  error
)

// fakeCert is the fake server's self-signed certificate (one per test binary).
func fakeCert(t *testing.T) tls.Certificate {
	t.Helper()
	certOnce.Do(func() { certVal, certErr = certutil.SelfSigned("localhost") })
	if certErr != nil {
		t.Fatal(certErr)
	}
	return certVal
}

func newFakeTDS(t *testing.T, mode string) *fakeTDS {
	t.Helper()
	fakeCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeTDS{ln: ln, mode: mode, tls: &tls.Config{Certificates: []tls.Certificate{certVal}}, logf: t.Logf}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.closeAll = append(s.closeAll, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.closeAll {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeTDS) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// readMessage reads packets up to EOM and returns the type and payload.
func readMessage(r io.Reader) (byte, []byte, error) {
	var payload []byte
	for {
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return 0, nil, err
		}
		n := int(binary.BigEndian.Uint16(h[2:4]))
		if n < 8 {
			return 0, nil, errors.New("bad packet length")
		}
		body := make([]byte, n-8)
		if _, err := io.ReadFull(r, body); err != nil {
			return 0, nil, err
		}
		payload = append(payload, body...)
		if h[1]&0x01 != 0 {
			return h[0], payload, nil
		}
	}
}

func writeMessage(w io.Writer, typ byte, payload []byte) error {
	const max = 4096 - 8
	id := byte(1)
	for {
		chunk := payload
		status := byte(0x01)
		if len(chunk) > max {
			chunk, status = chunk[:max], 0
		}
		h := []byte{typ, status, 0, 0, 0, 51, id, 0} // SPID 51
		binary.BigEndian.PutUint16(h[2:], uint16(len(chunk)+8))
		if _, err := w.Write(append(h, chunk...)); err != nil {
			return err
		}
		payload = payload[len(chunk):]
		id++
		if status == 0x01 {
			return nil
		}
	}
}

func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUCS2(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func bVarchar(s string) []byte { return append([]byte{byte(len(utf16.Encode([]rune(s))))}, ucs2(s)...) }

func envchange(typ byte, newV, oldV []byte) []byte {
	body := append([]byte{typ}, newV...)
	body = append(body, oldV...)
	out := []byte{0xE3, 0, 0}
	binary.LittleEndian.PutUint16(out[1:], uint16(len(body)))
	return append(out, body...)
}

func done(tds72 bool, token byte, status, curcmd uint16, rows uint64) []byte {
	b := []byte{token, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(b[1:], status)
	binary.LittleEndian.PutUint16(b[3:], curcmd)
	if tds72 {
		return binary.LittleEndian.AppendUint64(b, rows)
	}
	return binary.LittleEndian.AppendUint32(b, uint32(rows))
}

func errorToken(tds72 bool, number int32, class byte, msg string) []byte {
	body := binary.LittleEndian.AppendUint32(nil, uint32(number))
	body = append(body, 1, class)
	body = binary.LittleEndian.AppendUint16(body, uint16(len(utf16.Encode([]rune(msg)))))
	body = append(body, ucs2(msg)...)
	body = append(body, bVarchar("fake")...)
	body = append(body, bVarchar("")...)
	if tds72 {
		body = binary.LittleEndian.AppendUint32(body, 1)
	} else {
		body = binary.LittleEndian.AppendUint16(body, 1)
	}
	out := []byte{0xAA, 0, 0}
	binary.LittleEndian.PutUint16(out[1:], uint16(len(body)))
	return append(out, body...)
}

// intResult is COLMETADATA + ROW + DONE for one INT column x = v.
func intResult(tds72 bool, col string, v int32) []byte {
	b := []byte{0x81, 1, 0}
	if tds72 {
		b = append(b, 0, 0, 0, 0) // UserType (ULONG in 7.2+)
	} else {
		b = append(b, 0, 0) // UserType (USHORT in 7.1)
	}
	b = append(b, 0x01, 0x00) // Flags: nullable
	b = append(b, 0x26, 4)    // INTN(4)
	b = append(b, bVarchar(col)...)
	b = append(b, 0xD1, 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(v))
	return append(b, done(tds72, 0xFD, 0x10, 0xC1, 1)...)
}

func (s *fakeTDS) serve(raw net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first [1]byte
	if _, err := io.ReadFull(raw, first[:]); err != nil {
		s.logf("fake server: login phase step %d: %v", 1, err)
		return
	}
	var c net.Conn = tdstls.WithPrefix(raw, first[:])
	if first[0] == 0x16 { // TDS 8.0 strict: TLS before anything
		if s.mode != EncryptStrict {
			s.logf("fake server: strict ClientHello in mode %s", s.mode)
			return
		}
		tc, err := tdstls.ServerStrict(ctx, c, s.tls)
		if err != nil {
			s.logf("fake server: login phase step %d: %v", 3, err)
			return
		}
		c = tc
	}
	typ, payload, err := readMessage(c)
	if err != nil {
		s.logf("fake server: login phase step %d: %v", 4, err)
		return
	}
	if typ == 0x12 { // PRELOGIN: answer the ENCRYPTION this server's mode wants
		enc := byte(0x02) // NOT_SUP
		switch s.mode {
		case EncryptLogin:
			enc = 0x00 // OFF: TLS for LOGIN7 only
		case EncryptFull, EncryptStrict:
			enc = 0x01 // ON (in strict mode clients ignore it: TLS is already up)
		}
		resp := []byte{
			0x00, 0, 21, 0, 6,
			0x01, 0, 27, 0, 1,
			0x02, 0, 28, 0, 1,
			0x04, 0, 29, 0, 1,
			0xFF,
			16, 0, 0x07, 0xD0, 0, 0, // version 16.0.2000
			enc,
			0x00, // INSTOPT
			0x00, // MARS off
		}
		if err := writeMessage(c, 0x04, resp); err != nil {
			s.logf("fake server: login phase step %d: %v", 5, err)
			return
		}
		var tc *tls.Conn
		if enc == 0x00 || (enc == 0x01 && s.mode == EncryptFull) {
			if tc, err = tdstls.Server(ctx, c, s.tls, 4096); err != nil {
				s.logf("fake server: login phase step %d: %v", 6, err)
				return
			}
		}
		if tc != nil && enc == 0x01 {
			_ = tdstls.AllowReadAhead(tc)
			c = tc
		}
		if tc != nil && enc == 0x00 {
			typ, payload, err = readMessage(tc) // LOGIN7 inside TLS
			if err != nil {
				s.logf("fake server: login phase step %d: %v", 7, err)
				return
			}
			if c, err = tdstls.Detach(tc); err != nil {
				s.logf("fake server: login phase step %d: %v", 8, err)
				return
			}
		} else if typ, payload, err = readMessage(c); err != nil {
			s.logf("fake server: login phase step %d: %v", 9, err)
			return
		}
	}
	if typ != 0x10 || len(payload) < 8 {
		s.logf("fake server: want LOGIN7, got type 0x%02X (%d bytes)", typ, len(payload))
		return
	}
	ver := binary.LittleEndian.Uint32(payload[4:8]) // e.g. 0x74000004
	if ver == 0x08000000 {
		// go-mssqldb's strict LOGIN7 says TDS 8.0; SQL Server answers 7.4.
		ver = 0x74000004
	}
	tds72 := ver >= 0x72000000
	var login []byte
	login = append(login, envchange(1, bVarchar("master"), bVarchar("master"))...)
	ack := []byte{1}
	ack = binary.BigEndian.AppendUint32(ack, ver)
	ack = append(ack, bVarchar("Microsoft SQL Server\x00\x00")...)
	ack = append(ack, 16, 0, 0x07, 0xD0)
	login = append(login, 0xAD, 0, 0)
	binary.LittleEndian.PutUint16(login[len(login)-2:], uint16(len(ack)))
	login = append(login, ack...)
	login = append(login, envchange(7, []byte{5, 0x09, 0x04, 0xD0, 0x00, 0x34}, []byte{0})...)
	login = append(login, envchange(4, bVarchar("4096"), bVarchar("4096"))...)
	login = append(login, done(tds72, 0xFD, 0, 0, 0)...)
	if err := writeMessage(c, 0x04, login); err != nil {
		return
	}

	for {
		typ, payload, err := readMessage(c)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logf("fake server: read request: %v", err)
			}
			return
		}
		switch typ {
		case 0x01: // SQLBatch
			text := payload
			if tds72 && len(text) >= 4 {
				if n := int(binary.LittleEndian.Uint32(text)); n <= len(text) {
					text = text[n:]
				}
			}
			sql := fromUCS2(text)
			s.mu.Lock()
			s.batches = append(s.batches, sql)
			s.mu.Unlock()
			up := strings.ToUpper(sql)
			var resp []byte
			switch {
			case strings.Contains(up, "MISSING_TABLE"):
				resp = append(errorToken(tds72, 208, 16, "Invalid object name 'missing_table'."), done(tds72, 0xFD, 0x02, 0xC1, 0)...)
			case strings.Contains(up, "WAITFOR"):
				// Hold the request until ATTENTION (or 10 s), like SQL Server.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				t2, _, err := readMessage(c)
				_ = c.SetReadDeadline(time.Time{})
				if err == nil && t2 == 0x06 {
					s.mu.Lock()
					s.attns++
					s.mu.Unlock()
					// Like SQL Server: first the (cut short) response to the
					// request, then a separate message acknowledging the
					// ATTENTION (tedious depends on the two messages).
					if err := writeMessage(c, 0x04, done(tds72, 0xFD, 0, 0, 0)); err != nil {
						return
					}
					resp = done(tds72, 0xFD, 0x20, 0, 0) // DONE_ATTN
				} else if err != nil && !isTimeout(err) {
					return
				} else {
					resp = done(tds72, 0xFD, 0, 0, 0)
				}
			case !strings.Contains(up, "SELECT"):
				resp = done(tds72, 0xFD, 0, 0, 0) // SET ... (e.g. tedious's initial batch)
			default:
				resp = intResult(tds72, "x", 1)
			}
			if err := writeMessage(c, 0x04, resp); err != nil {
				return
			}
		case 0x06: // a late ATTENTION
			if err := writeMessage(c, 0x04, done(tds72, 0xFD, 0x20, 0, 0)); err != nil {
				return
			}
		default: // RPC, TM...: a generic result
			if err := writeMessage(c, 0x04, intResult(tds72, "x", 1)); err != nil {
				return
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *fakeTDS) attentions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attns
}
