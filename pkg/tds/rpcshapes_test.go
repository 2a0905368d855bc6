package tds

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// loadHexBlocks reads a .hex file holding several messages, each after a
// "# msg" line.
func loadHexBlocks(t testing.TB, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, block := range strings.Split(string(data), "# msg")[1:] {
		_, body, _ := strings.Cut(block, "\n")
		tmp := filepath.Join(t.TempDir(), "m.hex")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, loadHex(t, tmp))
	}
	return out
}

// TestFreeTDSODBCRPC decodes what FreeTDS ODBC (pyodbc over tdsodbc,
// TDS_Version=7.4) sends for cursor.execute("SELECT ?", v): sp_prepexec
// with the declaration and the statement as NTEXT parameters, which carry
// a 4-byte length and no text pointer (the bug: they were read as ROW
// values, "need 32768 bytes at offset 28").
func TestFreeTDSODBCRPC(t *testing.T) {
	msgs := loadHexBlocks(t, vec("freetds-odbc/rpc-requests.hex"))
	if len(msgs) != 20 {
		t.Fatalf("%d messages", len(msgs))
	}
	want := []struct {
		decl string
		typ  uint8
		val  any
	}{
		{"@P1 INT", TypeIntN, int64(1)},
		{"@P1 BIGINT", TypeIntN, int64(1 << 40)},
		{"@P1 NUMERIC(5,3)", TypeNumericN, "12.345"},
		{"@P1 FLOAT", TypeFltN, 1.5},
		{"@P1 NVARCHAR(10)", TypeNVarChar, "héllo"},
		{"@P1 VARBINARY(3)", TypeBigVarBin, []byte{1, 2, 0xFF}},
		{"@P1 DATETIME2", TypeDateTime2N, time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
		{"@P1 VARCHAR(1)", 0, nil}, // None: checked below
		// A 5000-character str and 9000 bytes: FreeTDS declares
		// NVARCHAR(4000) / VARBINARY(8000), sends the value as PLP (the
		// (MAX) encoding) and cuts it to 4000 characters / 8000 bytes.
		{"@P1 NVARCHAR(4000)", TypeNVarChar, strings.Repeat("x", 4000)},
		{"@P1 VARBINARY(8000)", TypeBigVarBin, bytes.Repeat([]byte("y"), 8000)},
	}
	for i, w := range want {
		m := msg(t, msgs[2*i])
		r, err := ParseRPC(m.Data)
		if err != nil {
			t.Fatalf("msg %d: %v", 2*i, err)
		}
		if len(r.Calls) != 1 || r.Calls[0].ProcID != ProcPrepExec || len(r.Calls[0].Params) != 4 {
			t.Fatalf("msg %d: %+v", 2*i, r.Calls)
		}
		ps := r.Calls[0].Params
		if ps[0].Status != ParamByRef || ps[0].Value != nil {
			t.Errorf("msg %d: handle param %+v", 2*i, ps[0])
		}
		decl, _ := DecodeValue(&ps[1].Type, ps[1].Value)
		stmt, _ := DecodeValue(&ps[2].Type, ps[2].Value)
		if ps[1].Type.Type != TypeNText || ps[2].Type.Type != TypeNText || stmt != "SELECT @P1" {
			t.Errorf("msg %d: decl %v %q stmt %v %q", 2*i, ps[1].Type, decl, ps[2].Type, stmt)
		}
		if w.val == nil {
			if ps[3].Value != nil {
				t.Errorf("msg %d: NULL parameter decoded as %x", 2*i, ps[3].Value)
			}
		} else {
			if !strings.EqualFold(decl.(string), w.decl) {
				t.Errorf("msg %d: decl %q, want %q", 2*i, decl, w.decl)
			}
			got, err := DecodeValue(&ps[3].Type, ps[3].Value)
			if err != nil || ps[3].Type.Type != w.typ || !reflect.DeepEqual(got, w.val) {
				t.Errorf("msg %d: value type 0x%02x, %d bytes (%v), want 0x%02x %.40v", 2*i, ps[3].Type.Type, len(ps[3].Value), err, w.typ, w.val)
			}
		}
		roundTripRPC(t, r)
		// sp_unprepare of the handle follows each call.
		u, err := ParseRPC(msg(t, msgs[2*i+1]).Data)
		if err != nil || len(u.Calls) != 1 || u.Calls[0].ProcID != ProcUnprepare {
			t.Errorf("msg %d: %v %+v", 2*i+1, err, u)
		}
	}
}

// roundTripRPC re-encodes a decoded RPC and checks it decodes the same.
func roundTripRPC(t *testing.T, r *RPCRequest) {
	t.Helper()
	b := AppendRPC(nil, r.Headers, r.Calls)
	r2, err := ParseRPC(b)
	if err != nil {
		t.Fatalf("re-encoded RPC fails: %v", err)
	}
	if !reflect.DeepEqual(r.Calls, r2.Calls) {
		t.Errorf("re-encoded RPC differs:\n%+v\n%+v", r.Calls, r2.Calls)
	}
}

// TestTextParamNull: a NULL NTEXT/IMAGE parameter is a 0xFFFFFFFF length.
func TestTextParamNull(t *testing.T) {
	calls := []RPCCall{{ProcID: ProcExecuteSQL, Params: []RPCParam{
		{Type: TypeInfo{Type: TypeNText, Size: 0x7FFFFFFF, Collation: DefaultCollation}, Value: appendUCS2(nil, "SELECT @a")},
		{Type: TypeInfo{Type: TypeNText, Size: 0x7FFFFFFF, Collation: DefaultCollation}, Value: appendUCS2(nil, "@a image")},
		{Name: "@a", Type: TypeInfo{Type: TypeImage, Size: 0x7FFFFFFF}},
	}}}
	b := AppendRPC(nil, nil, calls)
	if !bytes.Contains(b, []byte{'@', 0, 'a', 0, 0, TypeImage, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF}) {
		t.Fatalf("NULL IMAGE not encoded as length 0xFFFFFFFF: %x", b)
	}
	r, err := ParseRPC(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Calls[0].Params[2].Value; got != nil {
		t.Errorf("NULL decoded as %x", got)
	}
	// A length past the end is an error, not a read out of bounds.
	bad := append([]byte{}, b[:len(b)-4]...)
	bad = append(bad, 0x10, 0, 0, 0)
	if _, err := ParseRPC(bad); err == nil {
		t.Error("text length past the end accepted")
	}
}
