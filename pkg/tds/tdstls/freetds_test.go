package tdstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// preloginOption returns the data of option token tok in a PRELOGIN
// payload ([MS-TDS] 2.2.6.5: token, offset and length big-endian, 0xFF ends
// the table).
func preloginOption(t *testing.T, data []byte, tok byte) []byte {
	t.Helper()
	for i := 0; i < len(data) && data[i] != 0xFF; i += 5 {
		if i+5 > len(data) {
			t.Fatalf("PRELOGIN option table truncated: % x", data)
		}
		off := int(binary.BigEndian.Uint16(data[i+1:]))
		n := int(binary.BigEndian.Uint16(data[i+3:]))
		if data[i] == tok {
			if off+n > len(data) {
				t.Fatalf("PRELOGIN option 0x%02x out of bounds", tok)
			}
			return data[off : off+n]
		}
	}
	t.Fatalf("PRELOGIN has no option 0x%02x: % x", tok, data)
	return nil
}

// TestFreeTDSLoginOnly runs the real FreeTDS tsql (GnuTLS) against Server:
// tsql sends PRELOGIN with ENCRYPTION=OFF, we answer OFF (login-only TLS),
// and tsql's GnuTLS must complete our wrapped handshake and send its LOGIN7
// through it. Needs /usr/bin/tsql (Debian freetds-bin).
func TestFreeTDSLoginOnly(t *testing.T) {
	tsql, err := exec.LookPath("tsql")
	if err != nil {
		t.Fatalf("this test needs FreeTDS tsql (apt-get install freetds-bin): %v", err)
	}
	tc := ecdsaCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	conf := filepath.Join(dir, "freetds.conf")
	if err := os.WriteFile(conf, []byte("[global]\n\ttds version = 7.4\n\tencryption = request\n\tconnect timeout = 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tsql, "-H", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "sa", "-P", "x")
	cmd.Env = append(os.Environ(), "FREETDSCONF="+conf, "TDSDUMP=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out // stdin: /dev/null
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() || testing.Verbose() {
			t.Logf("tsql output:\n%s", out.String())
		}
	}()

	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // tsql's retry (a TDS 5.0 login) is refused at once
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	pre, err := tds.NewMessageReader(conn, tds.DefaultPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if pre.Type != tds.PacketPrelogin {
		t.Fatalf("first message type 0x%02x, want PRELOGIN", uint8(pre.Type))
	}
	enc := preloginOption(t, pre.Data, 0x01)
	if len(enc) != 1 || enc[0] != 0x00 {
		t.Fatalf("tsql ENCRYPTION % x, want OFF (0x00) with encryption = request", enc)
	}
	// Our answer: VERSION (token 0x00, 6 bytes), ENCRYPTION (0x01, 1 byte)
	// = OFF, terminator. Offsets count from the payload start.
	resp := []byte{
		0x00, 0x00, 11, 0x00, 6,
		0x01, 0x00, 17, 0x00, 1,
		0xFF,
		16, 0, 0x07, 0xD0, 0, 0, // 16.0.2000
		0x00, // ENCRYPT_OFF: TLS for the LOGIN7 only
	}
	if _, err := conn.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, resp)); err != nil {
		t.Fatal(err)
	}

	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	tlsConn, err := Server(hctx, conn, serverConfig(tc), tds.DefaultPacketSize)
	if err != nil {
		t.Fatalf("handshake with tsql: %v", err)
	}
	st := tlsConn.ConnectionState()
	t.Logf("tsql handshake: %s, cipher %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))

	login, err := tds.NewMessageReader(tlsConn, tds.DefaultPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatalf("reading LOGIN7 through TLS: %v", err)
	}
	if login.Type != tds.PacketLogin7 {
		t.Fatalf("message through TLS has type 0x%02x, want LOGIN7 (0x10)", uint8(login.Type))
	}
	if len(login.Data) < 8 {
		t.Fatalf("LOGIN7 of %d bytes", len(login.Data))
	}
	if l := binary.LittleEndian.Uint32(login.Data); int(l) != len(login.Data) {
		t.Fatalf("LOGIN7 length field %d, message %d bytes", l, len(login.Data))
	}
	if v := binary.LittleEndian.Uint32(login.Data[4:]); v != 0x74000004 {
		t.Fatalf("LOGIN7 TDS version 0x%08x, want 0x74000004", v)
	}
	// Login-only: the login response is plaintext on raw. Refuse the
	// login with an ERROR token and check that tsql read it.
	raw, err := Detach(tlsConn)
	if err != nil {
		t.Fatal(err)
	}
	const text = "tdstls test: login refused after login-only TLS"
	if _, err := raw.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, loginError(18456, text))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tsql did not exit after the refused login")
	}
	if !bytes.Contains(out.Bytes(), []byte(text)) || !bytes.Contains(out.Bytes(), []byte("Msg 18456")) {
		t.Fatalf("tsql did not print our plaintext ERROR token:\n%s", out.String())
	}
}

// loginError is an ERROR token (0xAA) and a DONE (0xFD) with DONE_ERROR, as
// TDS 7.2+ encodes them.
func loginError(number int32, msg string) []byte {
	ucs2 := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = binary.LittleEndian.AppendUint16(b, uint16(r))
		}
		return b
	}
	const server = "tdstls"
	var body []byte
	body = binary.LittleEndian.AppendUint32(body, uint32(number))
	body = append(body, 1, 14) // state, class
	body = binary.LittleEndian.AppendUint16(body, uint16(len(msg)))
	body = append(body, ucs2(msg)...)
	body = append(body, byte(len(server)))
	body = append(body, ucs2(server)...)
	body = append(body, 0)                           // proc name
	body = binary.LittleEndian.AppendUint32(body, 1) // line number
	tok := []byte{0xAA}
	tok = binary.LittleEndian.AppendUint16(tok, uint16(len(body)))
	tok = append(tok, body...)
	tok = append(tok, 0xFD, 0x02, 0x00, 0x00, 0x00) // DONE, DONE_ERROR, curcmd 0
	return append(tok, make([]byte, 8)...)          // row count
}
