package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/microsoft/go-mssqldb"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

var encNames = map[uint8]string{tds.EncryptOff: "OFF", tds.EncryptOn: "ON", tds.EncryptNotSup: "NOT_SUP", tds.EncryptReq: "REQ"}

// TestPreloginEncryption answers each client ENCRYPTION choice as SQL
// Server does, with and without forced encryption, then does the TLS the
// answer implies (none, login only, whole session) and logs in.
func TestPreloginEncryption(t *testing.T) {
	servers := map[string]*server.Server{
		server.EncryptionOptional: start(t, nil),
		server.EncryptionForce:    start(t, func(c *server.Config) { c.Encryption = server.EncryptionForce }),
	}
	cases := []struct {
		setting      string
		client, want uint8
	}{
		{server.EncryptionOptional, tds.EncryptOff, tds.EncryptOff}, // TLS for LOGIN7 only
		{server.EncryptionOptional, tds.EncryptOn, tds.EncryptOn},
		{server.EncryptionOptional, tds.EncryptNotSup, tds.EncryptNotSup},
		{server.EncryptionOptional, tds.EncryptReq, tds.EncryptOn},
		{server.EncryptionForce, tds.EncryptOff, tds.EncryptReq}, // then TLS for the whole session
		{server.EncryptionForce, tds.EncryptOn, tds.EncryptOn},
		{server.EncryptionForce, tds.EncryptReq, tds.EncryptOn},
		{server.EncryptionForce, tds.EncryptNotSup, tds.EncryptReq}, // then refused
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%s", tc.setting, encNames[tc.client]), func(t *testing.T) {
			srv := servers[tc.setting]
			raw, answer := prelogin(t, srv.Addr(), tc.client)
			if answer != tc.want {
				t.Fatalf("ENCRYPTION answer %s, want %s", encNames[answer], encNames[tc.want])
			}
			if tc.client == tds.EncryptNotSup && answer != tds.EncryptNotSup {
				// The client cannot do TLS and the server requires it: the
				// server closes the connection.
				waitClosed(t, raw, 3*time.Second)
				return
			}
			rw, toks, tlsConn := rawLogin(t, raw, answer, login7(tds.Version74, 4096))
			if len(toks) == 0 || toks[len(toks)-1].Done == nil || envChanges(toks, tds.EnvPacketSize) == nil {
				t.Fatalf("login answer: %s", tokenTypes(toks))
			}
			for _, tok := range toks {
				if tok.Type == tds.TokenError {
					t.Fatalf("login refused: %v", tok.Error)
				}
			}
			switch answer {
			case tds.EncryptNotSup, tds.EncryptOff:
				if rw != raw {
					t.Fatal("session is not plaintext")
				}
			default:
				if rw != tlsConn {
					t.Fatal("session is not in TLS")
				}
			}
			// The session works on the transport the answer implies: a
			// server expecting the other one would not understand it.
			if v := batchScalar(t, rw, "SELECT 40 + 2"); v != int64(42) {
				t.Fatalf("SELECT 40 + 2 = %#v", v)
			}
		})
	}
	for setting, want := range map[string]int64{server.EncryptionOptional: 4, server.EncryptionForce: 3} {
		srv := servers[setting]
		waitCurrent(t, srv, 0)
		if st := srv.Stats(); st.Total != want {
			t.Errorf("%s: %d sessions, want %d (%+v)", setting, st.Total, want, st)
		}
	}
}

// TestLoginWithoutPrelogin: an old client (jTDS ssl=off) sends LOGIN7
// first. Accepted when encryption is optional; refused with a readable
// error when it is forced.
func TestLoginWithoutPrelogin(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, func(o *tdsclient.Options) { o.Encrypt = tdsclient.EncryptNoPrelogin })
	if v := scalar(t, c, "SELECT DB_NAME()"); v != testDB {
		t.Fatalf("DB_NAME() = %#v", v)
	}

	forced := start(t, func(c *server.Config) { c.Encryption = server.EncryptionForce })
	_, err := dialErr(forced, func(o *tdsclient.Options) { o.Encrypt = tdsclient.EncryptNoPrelogin })
	var le *tdsclient.LoginError
	if !errors.As(err, &le) {
		t.Fatalf("LOGIN7 without PRELOGIN against force: %v, want a login error", err)
	}
	if le.Number != tds.ErrNumLoginFailed || le.Class != 14 || !strings.Contains(le.Message, "encryption") {
		t.Fatalf("error %d class %d %q", le.Number, le.Class, le.Message)
	}
	if st := forced.Stats(); st.Current != 0 || st.Total != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTDS71Login: a TDS 7.1 client (jTDS) gets LOGINACK 7.1 and the 7.1
// token layouts: 4-byte DONE row counts, no DATETIME2.
func TestTDS71Login(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, func(o *tdsclient.Options) { o.TDSVersion = tds.Version71b })
	var ack *tds.LoginAck
	for _, tok := range c.Login {
		if tok.LoginAck != nil {
			ack = tok.LoginAck
		}
	}
	if ack == nil || ack.TDSVersion != tds.Version71b {
		t.Fatalf("LOGINACK %+v, want TDS 7.1 (0x%08x)", ack, tds.Version71b)
	}
	// tdsclient decodes with the 7.1 layouts: 8-byte counts would not parse.
	r := exec(t, c, "SELECT value FROM generate_series(1, 3); SELECT CAST('2024-05-06 07:08:09' AS DATETIME2) AS d")
	ds := dones(r.Tokens)
	if len(ds) != 2 || ds[0].Done.RowCount != 3 || ds[0].Done.Status != tds.DoneMore|tds.DoneCount || ds[1].Done.RowCount != 1 {
		t.Fatalf("DONEs: %s", tokenTypes(r.Tokens))
	}
	var metas []*tds.ColMetadata
	for _, tok := range r.Tokens {
		if tok.ColMeta != nil {
			metas = append(metas, tok.ColMeta)
		}
	}
	if len(metas) != 2 || metas[1].Columns[0].Type.Type != tds.TypeDateTimeN {
		t.Fatalf("DATETIME2 for TDS 7.1: %+v, want DATETIMEN", metas)
	}
	if len(r.Rows) != 4 || r.Rows[3][0] != time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC) {
		t.Fatalf("rows %v", r.Rows)
	}
}

// TestStrictTDS80 runs go-mssqldb with encrypt=strict (TLS first, ALPN
// tds/8.0, certificate verified against the server's) and checks that a
// TLS client without the ALPN is refused.
func TestStrictTDS80(t *testing.T) {
	srv := start(t, nil)
	ca, err := clients.WriteCAFile(t.TempDir(), srv.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"database": {testDB}, "encrypt": {"strict"}, "certificate": {ca}, "dial timeout": {"5"}}
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword(testUser, testPass), Host: srv.Addr(), RawQuery: q.Encode()}
	db, err := sql.Open("sqlserver", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 over strict TLS: %v, %d", err, one)
	}
	var name string
	if err := db.QueryRowContext(ctx, "SELECT @@SERVERNAME").Scan(&name); err != nil || name != srv.Name() {
		t.Fatalf("@@SERVERNAME: %v, %q", err, name)
	}
	db.Close()

	// TLS first without ALPN tds/8.0: the handshake fails, nothing is served.
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate().Leaf)
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", srv.Addr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err == nil {
		conn.Close()
		t.Fatal("TLS without ALPN tds/8.0 accepted")
	}
	t.Logf("without ALPN: %v", err)
	// With the ALPN (tdstls.ClientStrict) the same server answers PRELOGIN.
	raw, err := d.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc, err := tdstls.ClientStrict(ctx, raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("strict TLS with ALPN: %v", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != tdstls.ALPN {
		t.Fatalf("ALPN %q", p)
	}
	waitCurrent(t, srv, 0)
}

// TestCertificateFromFiles: cert_file/key_file are what TLS presents.
func TestCertificateFromFiles(t *testing.T) {
	cert, err := certutil.SelfSigned("from-files")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, func(c *server.Config) { c.CertFile, c.KeyFile = certFile, keyFile })
	want := certutil.Fingerprint(cert)
	if got := certutil.Fingerprint(srv.Certificate()); got != want {
		t.Fatalf("Certificate() %s, want %s", got, want)
	}
	// What a client sees in the TLS inside PRELOGIN.
	raw, answer := prelogin(t, srv.Addr(), tds.EncryptOn)
	if answer != tds.EncryptOn {
		t.Fatalf("answer %s", encNames[answer])
	}
	tc, err := tdstls.Client(context.Background(), raw, &tls.Config{InsecureSkipVerify: true}, tds.DefaultPacketSize)
	if err != nil {
		t.Fatal(err)
	}
	peer := tc.ConnectionState().PeerCertificates
	if len(peer) == 0 || certutil.Fingerprint(tls.Certificate{Certificate: [][]byte{peer[0].Raw}}) != want {
		t.Fatalf("peer certificate is not the one from %s", certFile)
	}

	// Two servers without files generate different certificates.
	a, b := start(t, nil), start(t, nil)
	if certutil.Fingerprint(a.Certificate()) == certutil.Fingerprint(b.Certificate()) {
		t.Fatal("generated certificates are equal")
	}
	if _, err := server.Start(server.Config{CertFile: certFile, Logins: map[string]string{"sa": "x"}}, nil); err == nil {
		t.Fatal("cert_file without key_file accepted")
	}
}

// TestHostileInput: what is not a TDS 7+ login gets the connection closed
// (at once, or at the login timeout for a stalled one), never a session,
// a panic or a stuck goroutine.
func TestHostileInput(t *testing.T) {
	srv := start(t, func(c *server.Config) { c.LoginTimeout = 300 * time.Millisecond })
	prePayload := func() []byte {
		p := &tds.Prelogin{}
		p.SetVersion(tds.Version{Major: 1})
		p.SetEncryption(tds.EncryptNotSup)
		return p.Append(nil)
	}
	full := tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, 4096, prePayload())
	legacy := make([]byte, 0, 600)
	legacy = append(legacy, 0x02, 0x01, 0x02, 0x08, 0, 0, 1, 0) // TDS 4.2 login, 520 bytes, EOM
	legacy = append(legacy, make([]byte, 512)...)
	copy(legacy[8:], "standin-test")
	cases := []struct {
		name string
		send []byte
		// within is how soon the server must close: quickly, or at the login timeout.
		within time.Duration
		// refusal: the server answers a legacy refusal first.
		refusal bool
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), time.Second, false},
		{"garbage", []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0x04}, time.Second, false},
		{"header length < 8", []byte{0x12, 0x01, 0x00, 0x04, 0, 0, 0, 0}, time.Second, false},
		{"header length 0", []byte{0x10, 0x01, 0x00, 0x00, 0, 0, 0, 0}, time.Second, false},
		{"truncated PRELOGIN held open", full[:len(full)-5], 3 * time.Second, false},
		{"header only", full[:8], 3 * time.Second, false},
		{"nothing", nil, 3 * time.Second, false},
		{"PRELOGIN then garbage", append(append([]byte{}, full...), 0x10, 0x01, 0x00, 0x0c, 0, 0, 1, 0, 1, 2, 3, 4), time.Second, false},
		{"LOGIN7 too short", []byte{0x10, 0x01, 0x00, 0x0c, 0, 0, 1, 0, 1, 2, 3, 4}, time.Second, false},
		{"TDS 4.2 login", legacy, time.Second, true},
		{"SQL batch first", tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT 1")), time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", srv.Addr(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			if tc.refusal {
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				m, err := tds.NewMessageReader(c, tds.MaxPacketSize, 1<<16).ReadMessage()
				if err != nil || m.Type != tds.PacketReply || !strings.Contains(string(m.Data), "4.2") {
					t.Fatalf("legacy refusal: %v %q", err, m.Data)
				}
			}
			waitClosed(t, c, tc.within)
			t.Logf("closed after %v", time.Since(began).Round(time.Millisecond))
		})
	}
	// The server is unharmed: no session was counted, logins still work.
	if st := srv.Stats(); st.Current != 0 || st.Total != 0 || st.Accepted != int64(len(cases)) {
		t.Fatalf("stats %+v", st)
	}
	c := dial(t, srv, nil)
	if v := scalar(t, c, "SELECT 1"); v != int64(1) {
		t.Fatalf("SELECT 1 = %#v", v)
	}
}
