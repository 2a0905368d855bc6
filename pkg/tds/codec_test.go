package tds

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Bytes a real SQL Server 2008 SP3 sent (pytds unit tests).
func TestRealServerPytds(t *testing.T) {
	m := msg(t, loadHex(t, vec("pytds/login-response-sql2008.hex")))
	if m.SPID != 0x5A {
		t.Errorf("spid %d", m.SPID)
	}
	toks := readAll(t, m.Data, Version73B)
	var la *LoginAck
	for _, tk := range toks {
		if tk.LoginAck != nil {
			la = tk.LoginAck
		}
	}
	if la == nil || la.TDSVersion != Version73B {
		t.Fatalf("loginack %+v", la)
	}
	if toks[0].EnvChange.NewString() != "SubmissionPortal" || toks[0].EnvChange.OldString() != "master" {
		t.Errorf("db change %+v", toks[0].EnvChange)
	}
	checkReencode(t, toks, m.Data, Version73B)

	m = msg(t, loadHex(t, vec("pytds/begin-tran-envchange-response.hex")))
	toks = readAll(t, m.Data, Version73B)
	if e := toks[0].EnvChange; e.Type != EnvBeginTran || len(e.New) != 8 || len(e.Old) != 0 {
		t.Errorf("begin tran %+v", e)
	}
	checkReencode(t, toks, m.Data, Version73B)

	for _, f := range []string{"pytds/prelogin-response-sql2008.hex", "pytds/prelogin-response-fedauth-required.hex"} {
		m = msg(t, loadHex(t, vec(f)))
		p, err := ParsePrelogin(m.Data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if e, _ := p.Encryption(); e != EncryptNotSup {
			t.Errorf("%s: encryption %d", f, e)
		}
		if !bytes.Equal(p.Append(nil), m.Data) {
			t.Errorf("%s: round trip differs", f)
		}
	}
	p, _ := ParsePrelogin(msg(t, loadHex(t, vec("pytds/prelogin-response-fedauth-required.hex"))).Data)
	if v, ok := p.FedAuthRequired(); !ok || v != 1 {
		t.Errorf("fedauthrequired %v %v", v, ok)
	}
}

// What real clients sent (testdata/clientcap): every PRELOGIN and LOGIN7
// decodes and round-trips, and the fields match what each client sent
// (encryption, TDS version, application name, packet size).
func TestRealClientCaptures(t *testing.T) {
	cases := []struct {
		file       string
		encryption int // -1: no PRELOGIN
		version    uint32
		app        string
		packetSize uint32
		legacy     bool
		features   bool
	}{
		{"tsql-conn1.log", int(EncryptOff), Version74, "TSQL", 4096, false, true},
		{"pytds-conn1.log", int(EncryptNotSup), Version74, "pytds", 4096, false, false},
		{"jtds-conn1.log", -1, Version71b, "jTDS", 0, true, false},
		{"jtdsssl-conn1.log", int(EncryptOff), Version71b, "jTDS", 0, true, false},
		{"gosqlcmd-conn1.log", int(EncryptOff), Version74, "sqlcmd", 4096, false, false},
		{"gosqlcmd-conn3.log", int(EncryptNotSup), Version74, "sqlcmd", 4096, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			pkts := loadCapture(t, vec("clientcap/"+tc.file))
			i := 0
			if tc.encryption >= 0 {
				m := msg(t, pkts[0])
				p, err := ParsePrelogin(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				if e, _ := p.Encryption(); int(e) != tc.encryption {
					t.Errorf("encryption %d", e)
				}
				if !bytes.Equal(p.Append(nil), m.Data) {
					t.Error("PRELOGIN round trip differs")
				}
				i++
			}
			m := msg(t, pkts[i])
			if m.Type != PacketLogin7 {
				t.Fatalf("packet %d type %v", i, m.Type)
			}
			l, err := ParseLogin7(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if l.TDSVersion != tc.version || l.AppName != tc.app || l.PacketSize != tc.packetSize || l.Legacy71 != tc.legacy {
				t.Errorf("login %+v", l)
			}
			if l.UserName != "sa" || l.Password != capturePassword {
				t.Errorf("user %q password %q", l.UserName, l.Password)
			}
			if (l.FeatureExt != nil) != tc.features {
				t.Errorf("features %x", l.FeatureExt)
			}
			l2, err := ParseLogin7(l.Append(nil))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normLogin(l), normLogin(l2)) {
				t.Errorf("rebuild differs:\n%+v\n%+v", l, l2)
			}
			// The first request after login.
			if i+1 < len(pkts) {
				req := msg(t, pkts[i+1])
				if req.Type == PacketSQLBatch {
					if _, err := ParseSQLBatch(req.Data); err != nil {
						t.Errorf("batch: %v", err)
					}
				}
			}
		})
	}
}

func normLogin(l *Login7) Login7 {
	c := *l
	if len(c.SSPI) == 0 {
		c.SSPI = nil
	}
	return c
}

func TestLogin7RoundTrip(t *testing.T) {
	in := &Login7{
		TDSVersion: Version74, PacketSize: 8192, ClientProgVer: 7, ClientPID: 1234, ConnectionID: 0,
		OptionFlags1: 0xE0, OptionFlags2: 0x03, TypeFlags: 0, OptionFlags3: OptFlag3Extension,
		ClientTimeZone: -120, ClientLCID: 1033,
		HostName: "host-1", UserName: "sa", Password: "YourStr0ngP@ssword1", AppName: "tdsgate-test",
		ServerName: "127.0.0.1,1433", CltIntName: "tdsgate", Language: "us_english", Database: "tenant_db",
		ClientID: [6]byte{1, 2, 3, 4, 5, 6}, ChangePassword: "n€w-pässwörd",
		FeatureExt: AppendFeatures(nil, []Feature{{ID: FeatureUTF8Support, Data: nil}, {ID: FeatureSessionRecovery, Data: []byte{1, 2, 3}}}),
	}
	b := in.Append(nil)
	out, err := ParseLogin7(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normLogin(in), normLogin(out)) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
	// The password is obfuscated on the wire: neither UCS-2 nor ASCII clear text appears.
	if bytes.Contains(b, EncodeUCS2("YourStr0ngP@ssword1")) || bytes.Contains(b, []byte("YourStr0ng")) {
		t.Error("password in clear on the wire")
	}
	// Legacy TDS 7.1 layout.
	in.Legacy71, in.TDSVersion, in.ChangePassword, in.FeatureExt, in.OptionFlags3 = true, Version71b, "", nil, 0
	out, err = ParseLogin7(in.Append(nil))
	if err != nil || !out.Legacy71 || !reflect.DeepEqual(normLogin(in), normLogin(out)) {
		t.Errorf("legacy round trip: %v\n in %+v\nout %+v", err, in, out)
	}
}

func TestLogin7LogValueHidesPassword(t *testing.T) {
	l := &Login7{UserName: "sa", Password: "YourStr0ngP@ssword1"}
	if s := l.LogValue().String(); strings.Contains(s, "YourStr0ng") || !strings.Contains(s, "sa") {
		t.Errorf("LogValue: %s", s)
	}
}

func TestPasswordObfuscation(t *testing.T) {
	// [MS-TDS] 2.2.6.4: 'a' (0x61 0x00) → swap nibbles (0x16 0x00) → XOR 0xA5 (0xB3 0xA5).
	if got := ObfuscatePassword("a"); !bytes.Equal(got, []byte{0xB3, 0xA5}) {
		t.Errorf("obfuscate a: %x", got)
	}
	for _, pw := range []string{"", "x", "YourStr0ngP@ssword2", "ünïcødé🔑"} {
		if got := DeobfuscatePassword(ObfuscatePassword(pw)); got != pw {
			t.Errorf("%q → %q", pw, got)
		}
	}
}

func TestLogin7Hostile(t *testing.T) {
	good := (&Login7{TDSVersion: Version74, UserName: "sa", Password: "pw", Database: "db"}).Append(nil)
	cases := map[string][]byte{
		"empty":          nil,
		"short":          good[:50],
		"length too big": append(append([]byte{}, 0xFF, 0xFF, 0, 0), good[4:]...),
		"length too small": func() []byte {
			b := append([]byte{}, good...)
			b[0], b[1] = 10, 0
			return b
		}(),
		"user past end": func() []byte {
			b := append([]byte{}, good...)
			b[40], b[41] = 0xF0, 0x00 // ibUserName
			b[42], b[43] = 0x50, 0x00 // cchUserName
			return b
		}(),
		"offset inside fixed part": func() []byte {
			b := append([]byte{}, good...)
			b[40], b[41] = 4, 0
			return b
		}(),
	}
	for name, b := range cases {
		if _, err := ParseLogin7(b); err == nil {
			t.Errorf("%s: no error", name)
		} else if _, ok := err.(*Error); !ok {
			t.Errorf("%s: error %T", name, err)
		}
	}
}

func TestPreloginBuildParse(t *testing.T) {
	p := &Prelogin{}
	p.SetVersion(Version{Major: 16, Build: 1000})
	p.SetEncryption(EncryptReq)
	p.Set(PLInstOpt, []byte("MSSQLServer\x00"))
	p.Set(PLThreadID, []byte{0, 0, 1, 2})
	p.Set(PLMARS, []byte{0})
	p.Set(PLTraceID, bytes.Repeat([]byte{7}, 36))
	p.Set(PLFedAuthRequired, []byte{1})
	p.Set(PLNonceOpt, bytes.Repeat([]byte{9}, 32))
	b := p.Append(nil)
	q, err := ParsePrelogin(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Errorf("round trip\n%+v\n%+v", p, q)
	}
	if v, _ := q.Version(); v.Major != 16 || v.Build != 1000 {
		t.Errorf("version %v", v)
	}
	if s, _ := q.InstOpt(); s != "MSSQLServer" {
		t.Errorf("instopt %q", s)
	}
	if _, _, _, ok := q.TraceID(); !ok {
		t.Error("traceid")
	}
	if n, ok := q.Nonce(); !ok || len(n) != 32 {
		t.Error("nonce")
	}
	q.Del(PLNonceOpt)
	if _, ok := q.Nonce(); ok {
		t.Error("del")
	}
	bad := map[string][]byte{
		"no terminator":  {0, 0, 5, 0, 6},
		"offset outside": {0, 0, 6, 0, 6, 0xFF},
		"bad length":     {1, 0, 6, 0, 2, 0xFF, 0, 0},
		"inside table":   {1, 0, 0, 0, 1, 0xFF},
		"repeated":       {1, 0, 11, 0, 1, 1, 0, 11, 0, 1, 0xFF, 0},
	}
	for name, b := range bad {
		if _, err := ParsePrelogin(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestHeader(t *testing.T) {
	var b [8]byte
	h := Header{Type: PacketSQLBatch, Status: StatusEOM | StatusResetConnection, Length: 100, SPID: 0x1234, PacketID: 3, Window: 0}
	h.Put(b[:])
	got, err := ParseHeader(b[:], 4096)
	if err != nil || got != h {
		t.Fatalf("%+v %v", got, err)
	}
	for _, l := range []uint16{0, 7} {
		h.Length = l
		h.Put(b[:])
		if _, err := ParseHeader(b[:], 4096); err == nil {
			t.Errorf("length %d accepted", l)
		}
	}
	h.Length = 4097
	h.Put(b[:])
	if _, err := ParseHeader(b[:], 4096); err == nil {
		t.Error("length above packet size accepted")
	}
	if _, err := ParseHeader(b[:4], 4096); err == nil {
		t.Error("short header accepted")
	}
}

func TestMessageReassembly(t *testing.T) {
	payload := bytes.Repeat([]byte("abcdefgh"), 1500) // 12000 bytes → 3 packets of 4096
	wire := AppendPackets(nil, PacketSQLBatch, StatusResetConnection, 0, 1, 4096, payload)
	if n := bytes.Count(wire, []byte{byte(PacketSQLBatch)}); n < 3 {
		t.Fatalf("packets %d", n)
	}
	// Only the first packet carries RESETCONNECTION, only the last EOM.
	if wire[1] != StatusResetConnection || wire[4096+1] != 0 {
		t.Errorf("status bits %x %x", wire[1], wire[4096+1])
	}
	wire = append(wire, AppendPackets(nil, PacketAttention, 0, 0, 1, 4096, nil)...)
	r := NewMessageReader(bytes.NewReader(wire), 4096, 0)
	m, err := r.ReadMessage()
	if err != nil || !bytes.Equal(m.Data, payload) || m.Packets != 3 || m.Status&StatusResetConnection == 0 {
		t.Fatalf("message %d packets, %v", m.Packets, err)
	}
	m, err = r.ReadMessage()
	if err != nil || m.Type != PacketAttention || len(m.Data) != 0 {
		t.Fatalf("attention %+v %v", m, err)
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
	// Cap.
	r = NewMessageReader(bytes.NewReader(AppendPackets(nil, PacketSQLBatch, 0, 0, 1, 4096, payload)), 4096, 5000)
	if _, err := r.ReadMessage(); err == nil {
		t.Error("cap not enforced")
	}
	// Truncated inside a message.
	r = NewMessageReader(bytes.NewReader(wire[:5000]), 4096, 0)
	if _, err := r.ReadMessage(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
	// A different packet type inside a message.
	mixed := AppendPackets(nil, PacketSQLBatch, 0, 0, 1, 4096, payload)[:4096]
	mixed = append(mixed, AppendPackets(nil, PacketRPC, 0, 0, 1, 4096, []byte("x"))...)
	if _, err := NewMessageReader(bytes.NewReader(mixed), 4096, 0).ReadMessage(); err == nil {
		t.Error("mixed types accepted")
	}
}

func TestLoginFailure(t *testing.T) {
	for _, v := range []uint32{Version74, Version71b} {
		wire := LoginFailureMessage(ErrNumQueueFull, 1, 16, "bucket bucket-001: queue full (2 waiting, limit 3)", "tdsgate", v, 4096)
		m := msg(t, wire)
		if m.Type != PacketReply {
			t.Fatalf("type %v", m.Type)
		}
		toks := readAll(t, m.Data, v)
		checkTypes(t, toks, []TokenType{TokenError, TokenDone})
		e := toks[0].Error
		if e.Number != 50005 || e.Class != 16 || e.State != 1 || !strings.Contains(e.Message, "bucket-001") || e.ServerName != "tdsgate" {
			t.Errorf("error %+v", e)
		}
		if toks[1].Done.Status != DoneError {
			t.Errorf("done %+v", toks[1].Done)
		}
	}
}

func TestEnvChangeRoundTrip(t *testing.T) {
	envs := []EnvChange{
		EnvString(EnvDatabase, "tenant_db", "master"),
		EnvString(EnvLanguage, "us_english", ""),
		EnvPacketSizeChange(8000, 4096),
		{Type: EnvSQLCollation, New: DefaultCollation[:], Old: nil},
		{Type: EnvBeginTran, New: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{Type: EnvCommitTran, Old: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{Type: EnvRollbackTran, Old: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{Type: EnvResetConnAck},
		{Type: EnvPromoteTran, New: bytes.Repeat([]byte{3}, 300)},
		EnvRoutingChange(Routing{Protocol: 0, Port: 1433, Server: "replica.example"}),
	}
	var b []byte
	for _, e := range envs {
		b = AppendEnvChange(b, e)
	}
	toks := readAll(t, b, Version74)
	for i, tk := range toks {
		got := *tk.EnvChange
		if got.Type != envs[i].Type || !bytes.Equal(got.New, envs[i].New) || !bytes.Equal(got.Old, envs[i].Old) {
			t.Errorf("env %d: %+v want %+v", i, got, envs[i])
		}
	}
	r, err := toks[len(toks)-1].EnvChange.Routing()
	if err != nil || r.Port != 1433 || r.Server != "replica.example" {
		t.Errorf("routing %+v %v", r, err)
	}
	if toks[2].EnvChange.NewString() != "8000" {
		t.Errorf("packet size %q", toks[2].EnvChange.NewString())
	}
}

func TestRowValuesRoundTrip(t *testing.T) {
	when := time.Date(2026, 11, 26, 7, 30, 15, 123456700, time.UTC)
	dec, _ := EncodeDecimal("-1234.50", 10, 2)
	cols := []ColumnDef{
		{Name: "i", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeIntN, Size: 4}},
		{Name: "big", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeIntN, Size: 8}},
		{Name: "b", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeBitN, Size: 1}},
		{Name: "f", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeFltN, Size: 8}},
		{Name: "d", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeDecimalN, Size: 9, Precision: 10, Scale: 2}},
		{Name: "nv", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeNVarChar, Size: 200, Collation: DefaultCollation}},
		{Name: "v", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeBigVarChar, Size: 100, Collation: DefaultCollation}},
		{Name: "dt2", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeDateTime2N, Scale: 7}},
		{Name: "dt", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeDateTimeN, Size: 8}},
		{Name: "max", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeNVarChar, Size: MaxLen, Collation: DefaultCollation}},
		{Name: "null", Flags: ColFlagNullable, Type: TypeInfo{Type: TypeIntN, Size: 4}},
	}
	vals := [][]byte{EncodeInt(-42, 4), EncodeInt(1<<40, 8), EncodeBool(true), EncodeFloat(3.25), dec,
		EncodeUCS2("héllo"), []byte("ascii"), EncodeDateTime2(when, 7), EncodeDateTime(when), EncodeUCS2(strings.Repeat("x", 5000)), nil}
	want := []any{int64(-42), int64(1 << 40), true, 3.25, "-1234.50", "héllo", "ascii", when, when.Round(10 * time.Millisecond / 3), strings.Repeat("x", 5000), nil}
	for _, version := range []uint32{Version74, Version71b} {
		b := AppendColMetadata(nil, cols, version)
		b = AppendRow(b, cols, vals)
		b = AppendDone(b, TokenDone, Done{Status: DoneCount, CurCmd: 0xC1, RowCount: 1}, version)
		toks := readAll(t, b, version)
		checkTypes(t, toks, []TokenType{TokenColMetadata, TokenRow, TokenDone})
		for i, c := range toks[0].ColMeta.Columns {
			if c.Name != cols[i].Name || !reflect.DeepEqual(c.Type, cols[i].Type) {
				t.Errorf("col %d: %+v", i, c)
			}
			v, err := DecodeValue(&c.Type, toks[1].Row[i])
			if err != nil {
				t.Fatalf("col %s: %v", c.Name, err)
			}
			if tv, ok := v.(time.Time); ok {
				if d := tv.Sub(want[i].(time.Time)); d > 4*time.Millisecond || d < -4*time.Millisecond {
					t.Errorf("col %s: %v want %v", c.Name, v, want[i])
				}
				continue
			}
			if !reflect.DeepEqual(v, want[i]) {
				t.Errorf("col %s: %#v want %#v", c.Name, v, want[i])
			}
		}
	}
}

func TestRPCRoundTrip(t *testing.T) {
	stmt := EncodeUCS2("SELECT @p1 + 1")
	calls := []RPCCall{{ProcID: ProcExecuteSQL, Params: []RPCParam{
		{Type: TypeInfo{Type: TypeNVarChar, Size: MaxLen, Collation: DefaultCollation}, Value: stmt},
		{Type: TypeInfo{Type: TypeNVarChar, Size: 8000, Collation: DefaultCollation}, Value: EncodeUCS2("@p1 int")},
		{Name: "@p1", Type: TypeInfo{Type: TypeIntN, Size: 4}, Value: EncodeInt(41, 4)},
		{Name: "@out", Status: ParamByRef, Type: TypeInfo{Type: TypeIntN, Size: 8}, Value: nil},
	}}, {ProcName: "sp_unprepare", Params: []RPCParam{{Type: TypeInfo{Type: TypeIntN, Size: 4}, Value: EncodeInt(1, 4)}}}}
	r, err := ParseRPC(AppendRPC(nil, nil, calls))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Calls) != 2 || r.Calls[0].ProcName != "sp_executesql" || r.Calls[1].ProcName != "sp_unprepare" {
		t.Fatalf("calls %+v", r.Calls)
	}
	for i, p := range r.Calls[0].Params {
		if p.Name != calls[0].Params[i].Name || p.Status != calls[0].Params[i].Status || !bytes.Equal(p.Value, calls[0].Params[i].Value) {
			t.Errorf("param %d: %+v", i, p)
		}
	}
	if v, _ := DecodeValue(&r.Calls[0].Params[0].Type, r.Calls[0].Params[0].Value); v != "SELECT @p1 + 1" {
		t.Errorf("stmt %v", v)
	}
}

func TestSQLBatchRoundTrip(t *testing.T) {
	b, err := ParseSQLBatch(AppendSQLBatch(nil, &AllHeaders{TransactionDescriptor: 7, ActivityID: bytes.Repeat([]byte{1}, 20)}, "SELECT 1"))
	if err != nil || b.Text != "SELECT 1" || b.Headers.TransactionDescriptor != 7 || len(b.Headers.ActivityID) != 20 {
		t.Errorf("%+v %v", b, err)
	}
	// TDS 7.1 batch without ALL_HEADERS (jTDS).
	b, err = ParseSQLBatch(EncodeUCS2("select 1"))
	if err != nil || b.Text != "select 1" || b.Headers != nil {
		t.Errorf("%+v %v", b, err)
	}
}

// capturePassword is what the clientcap clients were given.
const capturePassword = "secret"

func TestReturnValueRoundTrip(t *testing.T) {
	for _, v := range []uint32{Version74, Version71b} {
		rv := &ReturnValue{Ordinal: 0, Name: "@handle", Status: 1, Type: TypeInfo{Type: TypeIntN, Size: 4}, Value: EncodeInt(7, 4)}
		toks := readAll(t, AppendReturnValue(nil, rv, v), v)
		got := toks[0].Return
		if got == nil || got.Name != "@handle" || got.Status != 1 || !bytes.Equal(got.Value, rv.Value) {
			t.Errorf("version %x: %+v", v, got)
		}
	}
}
