package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestPyODBCParameters: FreeTDS ODBC through pyodbc (sp_prepexec with NTEXT
// statement and declaration) runs parameterized SELECT, INSERT and UPDATE
// with int, bigint, decimal, float, nvarchar, varbinary, datetime2 and NULL
// parameters, directly against a stand-in and through tdsgate, in plaintext
// (Encryption=off) and with TLS for the whole session (Encryption=require).
// The DML reports its row count (DONE_COUNT with CurCmd INSERT/UPDATE).
func TestPyODBCParameters(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, testenv.Config(t, buckets))
	typed := func(typ string, v any) map[string]any { return map[string]any{"type": typ, "value": v} }
	params := []any{
		int64(7),
		typed("bigint", int64(1)<<40),
		typed("decimal", "12.345"),
		1.5,
		"héllo wörld",
		typed("varbinary", "0x0102FF"),
		typed("datetime2", "2024-05-06 07:08:09.123000"),
		nil,
	}
	// What each parameter reads back as (pyodbc's Python values, as the
	// client prints them).
	// The datetime keeps milliseconds: pyodbc sends as many fraction digits
	// as sp_datatype_info_100 gives DATETIME (23: three).
	want := []any{int64(7), int64(1) << 40, "12.345", 1.5, "héllo wörld", "0x0102FF", "2024-05-06 07:08:09.123000", nil}
	long := strings.Repeat("ü", 5000)
	for _, target := range []struct{ name, addr string }{{"direct", buckets[0].Addr()}, {"proxy", a.Addr()}} {
		for _, mode := range []string{clients.EncryptNone, clients.EncryptFull} {
			target, mode := target, mode
			t.Run(target.name+"/"+mode, func(t *testing.T) {
				host, port := hostPort(t, target.addr)
				tag := fmt.Sprintf("odbc-%s-%s-%d", target.name, mode, time.Now().UnixNano())
				spec := clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", Encrypt: mode,
					Steps: []clients.Step{
						{Op: "query", SQL: fmt.Sprintf("CREATE TABLE #p_%d (i INT, b BIGINT, d DECIMAL(5,3), f FLOAT, s NVARCHAR(50), v VARBINARY(10), t DATETIME2, n INT)", 1)},
						{Op: "param", SQL: "SELECT @p1 AS i, @p2 AS b, @p3 AS d, @p4 AS f, @p5 AS s, @p6 AS v, @p7 AS t, @p8 AS n", Params: params},
						{Op: "param", SQL: "INSERT INTO #p_1 (i, b, d, f, s, v, t, n) VALUES (@p1, @p2, @p3, @p4, @p5, @p6, @p7, @p8)", Params: params},
						{Op: "param", SQL: "UPDATE #p_1 SET i = @p1, s = @p2 WHERE b = @p3", Params: []any{int64(8), tag, typed("bigint", int64(1)<<40)}},
						{Op: "query", SQL: "SELECT i, b, d, f, s, v, t, n FROM #p_1"},
						{Op: "param", SQL: "INSERT INTO test_table (name, value) VALUES (@p1, @p2)", Params: []any{tag, nil}},
						{Op: "param", SQL: "UPDATE test_table SET value = @p1 WHERE name = @p2", Params: []any{int64(5), tag}},
						{Op: "param", SQL: "SELECT name, value FROM test_table WHERE name = @p1", Params: []any{tag}},
						{Op: "param", SQL: "DELETE FROM test_table WHERE name = @p1", Params: []any{tag}},
						// Past NVARCHAR(4000) / VARBINARY(8000): sent as PLP, read back whole.
						{Op: "param", SQL: "SELECT @p1 AS s, @p2 AS v", Params: []any{long, typed("varbinary", "0x"+strings.Repeat("AB", 9000))}},
					}}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := clients.Run(ctx, clients.PyODBC, spec)
				if err == nil {
					err = res.Err()
				}
				if err != nil {
					t.Fatalf("%v (stderr %s)", err, res.Stderr)
				}
				if rows := res.Rows(1); len(rows) != 1 || fmt.Sprint(rows[0]) != fmt.Sprint(want) {
					t.Errorf("SELECT of the parameters: %v, want %v", rows, want)
				}
				for _, i := range []int{2, 3, 5, 6, 8} {
					if rc := res.Steps[i].RowCounts; len(rc) != 1 || rc[0] != 1 {
						t.Errorf("step %d (%s): row counts %v, want [1]", i, spec.Steps[i].SQL, rc)
					}
				}
				wantRow := append([]any{int64(8)}, want[1:]...)
				wantRow[4] = tag
				if rows := res.Rows(4); len(rows) != 1 || fmt.Sprint(rows[0]) != fmt.Sprint(wantRow) {
					t.Errorf("row after INSERT and UPDATE: %v, want %v", rows, wantRow)
				}
				if rows := res.Rows(7); len(rows) != 1 || rows[0][0] != tag || num(rows[0][1]) != 5 {
					t.Errorf("test_table row: %v", rows)
				}
				if rows := res.Rows(9); len(rows) != 1 || rows[0][0] != long || rows[0][1] != "0x"+strings.Repeat("AB", 9000) {
					t.Errorf("long parameters came back cut or changed")
				}
			})
		}
	}
	// Every session ended: its slot comes back (released as the proxy
	// sees the client go, so allow a moment).
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := 0
		for _, s := range a.Limiter().Snapshot() {
			busy += s.InUse
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("limiter still holds %d slots: %+v", busy, a.Limiter().Snapshot())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}
