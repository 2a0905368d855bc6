package tds

import (
	"bytes"
	"testing"
)

// Fixtures from [MS-TDS] v39.0 section 4, "Protocol Examples". Each test
// names the section its bytes come from.

// 4.1 Pre-Login Request.
func TestSpec41PreloginRequest(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/01-pre-login-request.hex")))
	if m.Type != PacketPrelogin {
		t.Fatalf("type %v", m.Type)
	}
	p, err := ParsePrelogin(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := p.Version()
	if v.Major != 9 || v.Minor != 0 {
		t.Errorf("version %v", v)
	}
	if e, ok := p.Encryption(); !ok || e != EncryptOn {
		t.Errorf("encryption %v %v", e, ok)
	}
	if s, ok := p.InstOpt(); !ok || s != "" {
		t.Errorf("instopt %q", s)
	}
	if id, ok := p.ThreadID(); !ok || id != 0xB80D0000 {
		t.Errorf("threadid %x", id)
	}
	if mars, ok := p.MARS(); !ok || !mars {
		t.Errorf("mars %v", mars)
	}
	if got := p.Append(nil); !bytes.Equal(got, m.Data) {
		t.Errorf("round trip:\n got %x\nwant %x", got, m.Data)
	}
}

// 4.2 Login Request.
func TestSpec42LoginRequest(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/02-login-request.hex")))
	l, err := ParseLogin7(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if l.TDSVersion != Version72 || l.PacketSize != 4096 || l.HostName != "skostov1" || l.UserName != "sa" ||
		l.AppName != "OSQL-32" || l.CltIntName != "ODBC" || l.ClientLCID != 1033 || l.Password != "" {
		t.Errorf("fields: %+v", l)
	}
	if got := l.Append(nil); !bytes.Equal(got, m.Data) {
		t.Errorf("round trip:\n got %x\nwant %x", got, m.Data)
	}
}

// 4.3 Login Request with Federated Authentication.
func TestSpec43LoginFedAuth(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/03-login-request-federated-auth.hex")))
	l, err := ParseLogin7(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if l.ServerName != "cloud.dev.mscds.com,1435" || l.AppName != "SQLCMD" {
		t.Errorf("fields: %+v", l)
	}
	fs, err := l.Features()
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 || fs[0].ID != FeatureFedAuth {
		t.Fatalf("features %+v", fs)
	}
	// The FeatureExt block survives a rebuild byte for byte.
	l2, err := ParseLogin7(l.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l2.FeatureExt, l.FeatureExt) {
		t.Error("FeatureExt changed by a rebuild")
	}
}

// 4.4 Login Response.
func TestSpec44LoginResponse(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/04-login-response.hex")))
	toks := readAll(t, m.Data, Version72)
	wantTypes := []TokenType{TokenEnvChange, TokenInfo, TokenEnvChange, TokenEnvChange, TokenEnvChange, TokenInfo, TokenLoginAck, TokenDone}
	checkTypes(t, toks, wantTypes)
	if toks[0].EnvChange.Type != EnvDatabase || toks[0].EnvChange.NewString() != "master" {
		t.Errorf("env db %+v", toks[0].EnvChange)
	}
	if toks[1].Error.Number != InfoNumDatabaseChanged {
		t.Errorf("info %+v", toks[1].Error)
	}
	if toks[2].EnvChange.Type != EnvSQLCollation || !bytes.Equal(toks[2].EnvChange.New, DefaultCollation[:]) {
		t.Errorf("collation %x", toks[2].EnvChange.New)
	}
	if toks[4].EnvChange.Type != EnvPacketSize || toks[4].EnvChange.NewString() != "4096" {
		t.Errorf("packet size %+v", toks[4].EnvChange)
	}
	la := toks[6].LoginAck
	if la.TDSVersion != Version72 || la.ProgName != "Microsoft SQL Server\x00\x00" || la.Interface != 1 {
		t.Errorf("loginack %+v", la)
	}
	// Re-encoding every token reproduces the message.
	checkReencode(t, toks, m.Data, Version72)
}

// 4.5 Login Response with Federated Authentication Feature Extension.
func TestSpec45LoginResponseFeatureExtAck(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/05-login-response-federated-auth.hex")))
	toks := readAll(t, m.Data, Version74)
	var ack *Token
	for i := range toks {
		if toks[i].Type == TokenFeatureExtAck {
			ack = &toks[i]
		}
	}
	if ack == nil || len(ack.Features) != 1 || ack.Features[0].ID != FeatureFedAuth {
		t.Fatalf("featureextack %+v", ack)
	}
	checkReencode(t, toks, m.Data, Version74)
}

// 4.6 SQL Batch Client Request.
func TestSpec46SQLBatch(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/06-sql-batch-client-request.hex")))
	b, err := ParseSQLBatch(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if b.Headers == nil || !b.Headers.HasTransaction {
		t.Fatalf("headers %+v", b.Headers)
	}
	if want := "\nselect 'foo' as 'bar'\n        "; b.Text != want {
		t.Errorf("text %q", b.Text)
	}
}

// 4.7 SQL Batch Server Response.
func TestSpec47SQLBatchResponse(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/07-sql-batch-server-response.hex")))
	toks := readAll(t, m.Data, Version72)
	checkTypes(t, toks, []TokenType{TokenColMetadata, TokenRow, TokenDone})
	col := toks[0].ColMeta.Columns[0]
	if col.Name != "bar" || col.Type.Type != TypeBigVarChar || col.Type.Size != 3 {
		t.Errorf("column %+v", col)
	}
	v, err := DecodeValue(&col.Type, toks[1].Row[0])
	if err != nil || v != "foo" {
		t.Errorf("value %v %v", v, err)
	}
	if d := toks[2].Done; d.Status != DoneCount || d.RowCount != 1 || d.CurCmd != 0xC1 {
		t.Errorf("done %+v", d)
	}
	checkReencode(t, toks, m.Data, Version72)
}

// 4.8 RPC Client Request.
func TestSpec48RPCRequest(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/08-rpc-client-request.hex")))
	r, err := ParseRPC(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Calls) != 1 || r.Calls[0].ProcName != "foo3" || len(r.Calls[0].Params) != 1 {
		t.Fatalf("calls %+v", r.Calls)
	}
	p := r.Calls[0].Params[0]
	if p.Type.Type != TypeIntN || p.Type.Size != 2 || p.Status != ParamDefault {
		t.Errorf("param %+v", p)
	}
}

// 4.9 RPC Server Response.
func TestSpec49RPCResponse(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/09-rpc-server-response.hex")))
	toks := readAll(t, m.Data, Version72)
	checkTypes(t, toks, []TokenType{TokenDoneInProc, TokenReturnStatus, TokenDoneProc})
	if toks[0].Done.RowCount != 1 || toks[0].Done.Status != DoneCount|DoneMore {
		t.Errorf("doneinproc %+v", toks[0].Done)
	}
	checkReencode(t, toks, m.Data, Version72)
}

// 4.10 Attention Request: a header with no payload.
func TestSpec410Attention(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/10-attention-request.hex")))
	if m.Type != PacketAttention || len(m.Data) != 0 || m.Status&StatusEOM == 0 {
		t.Errorf("attention %+v", m)
	}
}

// 4.13 Transaction Manager Request. The example's ALL_HEADERS carries
// descriptor bytes shifted by one (the same erratum as 4.6), so only the
// framing is checked here.
func TestSpec413TransMgr(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/13-transaction-manager-request.hex")))
	r, err := ParseTransMgrReq(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if r.Headers == nil || !r.Headers.HasTransaction {
		t.Errorf("headers %+v", r.Headers)
	}
	// A well-formed TM_BEGIN_XACT built by the codec parses back.
	req := (&AllHeaders{}).Append(nil)
	req = appendU16(req, TMBeginXact)
	req = append(req, 0)
	req = appendBVarchar(req, "tx1")
	r2, err := ParseTransMgrReq(req)
	if err != nil || r2.Type != TMBeginXact || r2.Name != "tx1" {
		t.Errorf("begin xact %+v %v", r2, err)
	}
}

// 4.14 TVP insert statement: refused with a clear error, not a panic.
func TestSpec414TVPRefused(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/14-tvp-insert-statement.hex")))
	_, err := ParseRPC(m.Data)
	if e, ok := err.(*Error); !ok || e.Code != ErrUnsupported {
		t.Errorf("err %v", err)
	}
}

// 4.15 Sparse column select: COLMETADATA with XML, ROW and NBCROW.
func TestSpec415SparseColumns(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/15-sparse-column-select.hex")))
	toks := readAll(t, m.Data, Version74)
	rows := 0
	for _, tk := range toks {
		if tk.Type == TokenRow || tk.Type == TokenNBCRow {
			rows++
		}
	}
	last := toks[len(toks)-1]
	if rows != 10 || last.Done == nil || last.Done.RowCount != 10 {
		t.Errorf("rows %d, last %+v", rows, last)
	}
}

// 4.16 FeatureExt with SESSIONRECOVERY.
func TestSpec416FeatureExtSessionRecovery(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/16-featureext-sessionrecovery.hex")))
	l, err := ParseLogin7(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := l.Features()
	if err != nil || len(fs) == 0 || fs[0].ID != FeatureSessionRecovery {
		t.Fatalf("features %+v %v", fs, err)
	}
	if l.Database != "tempdb" || l.UserName != "sa" {
		t.Errorf("fields %+v", l)
	}
}

// 4.17 FEATUREEXTACK with SESSIONRECOVERY. The example has a stray 0x00
// after the collation ENVCHANGE (406 bytes announced, 407 given): the
// reader must stop there with a clear error.
func TestSpec417Erratum(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/17-featureextack-sessionrecovery.hex")))
	r := NewTokenReader(m.Data, Version74)
	var err error
	for r.More() && err == nil {
		_, err = r.Next()
	}
	if e, ok := err.(*Error); !ok || e.Code != ErrBadType {
		t.Errorf("want a bad_type error at the stray byte, got %v", err)
	}
}

// 4.18 SESSIONSTATE token is skipped by its length.
func TestSpec418SessionState(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/18-table-response-sessionstate.hex")))
	toks := readAll(t, m.Data, Version74)
	checkTypes(t, toks, []TokenType{TokenDone, TokenSessionState, TokenDone})
}

// 4.20 / 4.21 AZURESQLSUPPORT feature and its acknowledgement.
func TestSpec420AzureSQLSupport(t *testing.T) {
	m := msg(t, loadHex(t, vec("ms-tds/20-featureext-azuresqlsupport.hex")))
	l, err := ParseLogin7(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := l.Features()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fs {
		found = found || f.ID == FeatureAzureSQLSupport
	}
	if !found || l.PacketSize != 8000 {
		t.Errorf("features %+v packet %d", fs, l.PacketSize)
	}
	m = msg(t, loadHex(t, vec("ms-tds/21-featureextack-azuresqlsupport.hex")))
	toks := readAll(t, m.Data, Version74)
	if toks[len(toks)-2].Type != TokenFeatureExtAck || len(toks[len(toks)-2].Features) != 4 {
		t.Errorf("ack %+v", toks[len(toks)-2])
	}
	checkReencode(t, toks, m.Data, Version74)
}

func readAll(t *testing.T, b []byte, version uint32) []Token {
	t.Helper()
	r := NewTokenReader(b, version)
	var out []Token
	for r.More() {
		tok, err := r.Next()
		if err != nil {
			t.Fatalf("token %d: %v", len(out), err)
		}
		out = append(out, tok)
	}
	return out
}

func checkTypes(t *testing.T, toks []Token, want []TokenType) {
	t.Helper()
	if len(toks) != len(want) {
		t.Fatalf("got %d tokens, want %d", len(toks), len(want))
	}
	for i := range want {
		if toks[i].Type != want[i] {
			t.Errorf("token %d: type 0x%02x, want 0x%02x", i, toks[i].Type, want[i])
		}
	}
}

// checkReencode encodes each decoded token with the codec's builders and
// compares the result with the original bytes.
func checkReencode(t *testing.T, toks []Token, want []byte, version uint32) {
	t.Helper()
	var b []byte
	for _, tk := range toks {
		switch {
		case tk.Type == TokenError || tk.Type == TokenInfo:
			b = AppendError(b, tk.Error, tk.Type == TokenInfo, version)
		case tk.LoginAck != nil:
			b = AppendLoginAck(b, tk.LoginAck)
		case tk.EnvChange != nil:
			b = AppendEnvChange(b, *tk.EnvChange)
		case tk.Done != nil:
			b = AppendDone(b, tk.Type, *tk.Done, version)
		case tk.Type == TokenFeatureExtAck:
			b = AppendFeatureExtAck(b, tk.Features)
		case tk.Type == TokenReturnStatus:
			b = AppendReturnStatus(b, tk.Status)
		case tk.ColMeta != nil:
			b = AppendColMetadata(b, tk.ColMeta.Columns, version)
		case tk.Type == TokenRow:
			b = AppendRow(b, toks[0].ColMeta.Columns, tk.Row)
		default:
			b = append(b, tk.Raw...)
		}
	}
	if !bytes.Equal(b, want) {
		t.Errorf("re-encoded tokens differ:\n got %x\nwant %x", b, want)
	}
}
