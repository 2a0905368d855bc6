package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// The runbook's bucket 1, which every test server is.
const (
	testUser = "sa"
	testPass = "YourStr0ngP@ssword1"
	testDB   = "tenant_db"
)

// start runs a stand-in like the runbook's bucket 1 (sa, tenant_db),
// adjusted by mod, and closes it at cleanup.
func start(t testing.TB, mod func(c *server.Config)) *server.Server {
	t.Helper()
	return testenv.Buckets(t, 1, func(_ int, c *server.Config) {
		if mod != nil {
			mod(c)
		}
	})[0]
}

// dial logs in with tdsclient.
func dial(t testing.TB, srv *server.Server, mod func(o *tdsclient.Options)) *tdsclient.Conn {
	t.Helper()
	c, err := dialErr(srv, mod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(srv *server.Server, mod func(o *tdsclient.Options)) (*tdsclient.Conn, error) {
	o := tdsclient.Options{Addr: srv.Addr(), User: testUser, Password: testPass, Database: testDB, App: "standin-test", Timeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return tdsclient.Dial(ctx, o)
}

// exec runs a batch that must not fail.
func exec(t testing.TB, c *tdsclient.Conn, sql string) *tdsclient.Result {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	r, err := c.Exec(sql, 0)
	if err != nil {
		t.Fatalf("%q: %v", sql, err)
	}
	if len(r.Errors) > 0 {
		t.Fatalf("%q: %v", sql, r.Errors[0])
	}
	return r
}

// scalar runs a batch and returns its first value.
func scalar(t testing.TB, c *tdsclient.Conn, sql string) any {
	t.Helper()
	return exec(t, c, sql).Scalar()
}

// rpc sends an RPC request and reads its answer.
func rpc(t testing.TB, c *tdsclient.Conn, calls ...tds.RPCCall) *tdsclient.Result {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if err := c.SendMessage(tds.PacketRPC, 0, tds.AppendRPC(nil, nil, calls)); err != nil {
		t.Fatal(err)
	}
	r, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Typed RPC parameters.
func nvarchar(name, v string) tds.RPCParam {
	return tds.RPCParam{Name: name, Type: tds.TypeInfo{Type: tds.TypeNVarChar, Size: 8000, Collation: tds.DefaultCollation}, Value: tds.EncodeUCS2(v)}
}

func intParam(name string, v int64) tds.RPCParam {
	return tds.RPCParam{Name: name, Type: tds.TypeInfo{Type: tds.TypeIntN, Size: 4}, Value: tds.EncodeInt(v, 4)}
}

// outInt is an INT output parameter (NULL in).
func outInt(name string) tds.RPCParam {
	return tds.RPCParam{Name: name, Status: tds.ParamByRef, Type: tds.TypeInfo{Type: tds.TypeIntN, Size: 4}}
}

// tokenTypes lists the types of toks, for failure messages.
func tokenTypes(toks []tds.Token) string {
	s := ""
	for _, t := range toks {
		switch {
		case t.EnvChange != nil:
			s += fmt.Sprintf("ENVCHANGE(%d) ", t.EnvChange.Type)
		case t.Error != nil && t.Type == tds.TokenInfo:
			s += fmt.Sprintf("INFO(%d) ", t.Error.Number)
		case t.Error != nil:
			s += fmt.Sprintf("ERROR(%d) ", t.Error.Number)
		case t.Done != nil:
			s += fmt.Sprintf("DONE%02x(0x%x,%d) ", uint8(t.Type), t.Done.Status, t.Done.RowCount)
		default:
			s += fmt.Sprintf("0x%02x ", uint8(t.Type))
		}
	}
	return s
}

// dones returns the DONE/DONEPROC/DONEINPROC tokens.
func dones(toks []tds.Token) []tds.Token {
	var out []tds.Token
	for _, t := range toks {
		if t.Done != nil {
			out = append(out, t)
		}
	}
	return out
}

// envChanges returns the ENVCHANGE tokens of type typ.
func envChanges(toks []tds.Token, typ uint8) []*tds.EnvChange {
	var out []*tds.EnvChange
	for _, t := range toks {
		if t.EnvChange != nil && t.EnvChange.Type == typ {
			out = append(out, t.EnvChange)
		}
	}
	return out
}

// login7 is a LOGIN7 like tdsclient's.
func login7(version uint32, packetSize int) *tds.Login7 {
	l := &tds.Login7{TDSVersion: version, PacketSize: uint32(packetSize), ClientProgVer: 1, ClientPID: 1,
		OptionFlags1: 0xE0, OptionFlags2: 0x03, ClientLCID: 1033, HostName: "standin-test", UserName: testUser,
		Password: testPass, AppName: "standin-test", ServerName: "127.0.0.1", CltIntName: "standin-test", Database: testDB}
	if version < tds.Version72 {
		l.Legacy71 = true
	}
	return l
}

// prelogin sends a PRELOGIN with the given ENCRYPTION byte on a new
// connection and returns the connection and the server's ENCRYPTION.
func prelogin(t testing.TB, addr string, enc uint8) (net.Conn, uint8) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	p := &tds.Prelogin{}
	p.SetVersion(tds.Version{Major: 1})
	p.SetEncryption(enc)
	p.Set(tds.PLInstOpt, []byte{0})
	p.Set(tds.PLThreadID, []byte{0, 0, 0, 1})
	p.Set(tds.PLMARS, []byte{0})
	if _, err := raw.Write(tds.AppendPackets(nil, tds.PacketPrelogin, 0, 0, 1, tds.DefaultPacketSize, p.Append(nil))); err != nil {
		t.Fatal(err)
	}
	m, err := tds.NewMessageReader(raw, tds.MaxPacketSize, 1<<16).ReadMessage()
	if err != nil {
		t.Fatalf("PRELOGIN answer: %v", err)
	}
	if m.Type != tds.PacketReply {
		t.Fatalf("PRELOGIN answer of packet type 0x%02x", uint8(m.Type))
	}
	resp, err := tds.ParsePrelogin(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	answer, ok := resp.Encryption()
	if !ok {
		t.Fatal("PRELOGIN answer without ENCRYPTION")
	}
	return raw, answer
}

// rawLogin finishes what prelogin began: TLS as the answer asks (login
// only for OFF, the whole session for ON/REQ), LOGIN7, and the login
// answer. It returns the session's transport (plaintext raw after a
// login-only TLS) and the tokens of the answer.
func rawLogin(t testing.TB, raw net.Conn, answer uint8, l *tds.Login7) (io.ReadWriter, []tds.Token, *tls.Conn) {
	t.Helper()
	var rw io.ReadWriter = raw
	var tc *tls.Conn
	if answer != tds.EncryptNotSup {
		var err error
		tc, err = tdstls.Client(context.Background(), raw, &tls.Config{InsecureSkipVerify: true}, tds.DefaultPacketSize)
		if err != nil {
			t.Fatalf("TLS: %v", err)
		}
		rw = tc
	}
	if _, err := rw.Write(tds.AppendPackets(nil, tds.PacketLogin7, 0, 0, 1, tds.DefaultPacketSize, l.Append(nil))); err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		if answer == tds.EncryptOff {
			if _, err := tdstls.Detach(tc); err != nil {
				t.Fatal(err)
			}
			rw = raw
		} else if err := tdstls.AllowReadAhead(tc); err != nil {
			t.Fatal(err)
		}
	}
	toks, _, err := readTokens(rw, l.TDSVersion)
	if err != nil {
		t.Fatalf("login answer: %v", err)
	}
	return rw, toks, tc
}

// readTokens reads one message and decodes its tokens.
func readTokens(r io.Reader, version uint32) ([]tds.Token, tds.Message, error) {
	m, err := tds.NewMessageReader(r, tds.MaxPacketSize, 1<<30).ReadMessage()
	if err != nil {
		return nil, m, err
	}
	tr := tds.NewTokenReader(m.Data, version)
	var toks []tds.Token
	for tr.More() {
		tok, err := tr.Next()
		if err != nil {
			return toks, m, err
		}
		toks = append(toks, tok)
	}
	return toks, m, nil
}

// batchScalar sends a SQL batch on a raw transport and returns the first
// value of its first row.
func batchScalar(t testing.TB, rw io.ReadWriter, sql string) any {
	t.Helper()
	if _, err := rw.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, tds.DefaultPacketSize, tds.AppendSQLBatch(nil, nil, sql))); err != nil {
		t.Fatal(err)
	}
	toks, _, err := readTokens(rw, tds.Version74)
	if err != nil {
		t.Fatal(err)
	}
	var meta *tds.ColMetadata
	for _, tok := range toks {
		if tok.ColMeta != nil {
			meta = tok.ColMeta
		}
		if tok.Error != nil && tok.Type == tds.TokenError {
			t.Fatalf("%q: %v", sql, tok.Error)
		}
		if tok.Row != nil {
			v, err := tds.DecodeValue(&meta.Columns[0].Type, tok.Row[0])
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%q: no row in %s", sql, tokenTypes(toks))
	return nil
}

// waitClosed reads from c until the peer closes it and fails if that
// takes longer than within.
func waitClosed(t testing.TB, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
}

// waitCurrent waits for Stats().Current to reach want.
func waitCurrent(t testing.TB, srv *server.Server, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Current != want {
		if time.Now().After(deadline) {
			t.Fatalf("Stats().Current = %d, want %d (%+v)", srv.Stats().Current, want, srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
