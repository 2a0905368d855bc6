package server_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// TestResultTypes: each SQL type travels with SQL Server's TYPE_INFO and
// its value decodes back, NULLs included.
func TestResultTypes(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)
	exec(t, c, `CREATE TABLE #types (i INT, b BIGINT, bit BIT, f FLOAT, d DECIMAL(10,2), nv NVARCHAR(20), v VARCHAR(10), dt DATETIME2);
INSERT INTO #types VALUES (-7, 9000000000, 1, 2.5, 12345678.91, N'grüße ✓', 'abc', '2024-01-02 03:04:05.1234567');
INSERT INTO #types VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	r := exec(t, c, "SELECT i, b, bit, f, d, nv, v, dt, NULL AS n FROM #types ORDER BY b DESC")
	var meta *tds.ColMetadata
	for _, tok := range r.Tokens {
		if tok.ColMeta != nil {
			meta = tok.ColMeta
		}
	}
	if meta == nil || len(meta.Columns) != 9 {
		t.Fatalf("COLMETADATA %+v", meta)
	}
	want := []struct {
		name string
		ti   tds.TypeInfo
		val  any
	}{
		{"i", tds.TypeInfo{Type: tds.TypeIntN, Size: 4}, int64(-7)},
		{"b", tds.TypeInfo{Type: tds.TypeIntN, Size: 8}, int64(9000000000)},
		{"bit", tds.TypeInfo{Type: tds.TypeBitN, Size: 1}, true},
		{"f", tds.TypeInfo{Type: tds.TypeFltN, Size: 8}, 2.5},
		{"d", tds.TypeInfo{Type: tds.TypeNumericN, Size: 9, Precision: 10, Scale: 2}, "12345678.91"},
		{"nv", tds.TypeInfo{Type: tds.TypeNVarChar, Size: 40, Collation: tds.DefaultCollation}, "grüße ✓"},
		{"v", tds.TypeInfo{Type: tds.TypeBigVarChar, Size: 10, Collation: tds.DefaultCollation}, "abc"},
		{"dt", tds.TypeInfo{Type: tds.TypeDateTime2N, Scale: 7}, time.Date(2024, 1, 2, 3, 4, 5, 123456700, time.UTC)},
		{"n", tds.TypeInfo{Type: tds.TypeIntN, Size: 4}, nil},
	}
	if len(r.Rows) != 2 {
		t.Fatalf("%d rows", len(r.Rows))
	}
	for i, w := range want {
		col := meta.Columns[i]
		got := col.Type
		got.TableName = nil
		if col.Name != w.name || got.Type != w.ti.Type || got.Size != w.ti.Size || got.Precision != w.ti.Precision || got.Scale != w.ti.Scale || got.Collation != w.ti.Collation {
			t.Errorf("column %d: %q %+v, want %q %+v", i, col.Name, got, w.name, w.ti)
		}
		if col.Flags&tds.ColFlagNullable == 0 {
			t.Errorf("column %s not nullable", col.Name)
		}
		if v := r.Rows[0][i]; v != w.val {
			t.Errorf("column %s: %#v, want %#v", col.Name, v, w.val)
		}
		if v := r.Rows[1][i]; v != nil {
			t.Errorf("column %s: %#v, want NULL", col.Name, v)
		}
	}
	ds := dones(r.Tokens)
	if len(ds) != 1 || ds[0].Done.Status != tds.DoneCount || ds[0].Done.RowCount != 2 {
		t.Fatalf("DONE: %s", tokenTypes(r.Tokens))
	}
}

// TestBatchDones: one DONE per statement, DONE_MORE on all but the last,
// DONE_COUNT with the rows each statement touched.
func TestBatchDones(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)
	r := exec(t, c, `CREATE TABLE #m (x INT);
INSERT INTO #m VALUES (1), (2), (3);
UPDATE #m SET x = x + 10 WHERE x > 1;
SELECT x FROM #m ORDER BY x;
DELETE FROM #m`)
	type d struct {
		status uint16
		count  uint64
	}
	want := []d{
		{tds.DoneMore, 0},
		{tds.DoneMore | tds.DoneCount, 3},
		{tds.DoneMore | tds.DoneCount, 2},
		{tds.DoneMore | tds.DoneCount, 3},
		{tds.DoneCount, 3},
	}
	ds := dones(r.Tokens)
	if len(ds) != len(want) {
		t.Fatalf("DONEs: %s", tokenTypes(r.Tokens))
	}
	for i, w := range want {
		if ds[i].Type != tds.TokenDone || ds[i].Done.Status != w.status || ds[i].Done.RowCount != w.count {
			t.Errorf("DONE %d: status 0x%x count %d, want 0x%x %d", i, ds[i].Done.Status, ds[i].Done.RowCount, w.status, w.count)
		}
	}
	if len(r.Rows) != 3 || r.Rows[2][0] != int64(13) {
		t.Fatalf("rows %v", r.Rows)
	}
	// An error stops the batch: ERROR, then DONE with DONE_ERROR, final.
	r, err := c.Exec("SELECT 1; SELECT * FROM nope; SELECT 2", 0)
	if err != nil {
		t.Fatal(err)
	}
	ds = dones(r.Tokens)
	if len(r.Errors) != 1 || r.Errors[0].Number != 208 || r.Errors[0].Class != 16 || len(ds) != 2 ||
		ds[0].Done.Status != tds.DoneMore|tds.DoneCount || ds[1].Done.Status != tds.DoneError {
		t.Fatalf("error batch: %s", tokenTypes(r.Tokens))
	}
	for sql, num := range map[string]int32{"SELEC 1": 102, "CREATE TABLE #u (id INT PRIMARY KEY); INSERT INTO #u VALUES (1); INSERT INTO #u VALUES (1)": 2627} {
		r, err := c.Exec(sql, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Errors) != 1 || r.Errors[0].Number != num {
			t.Fatalf("%q: %s, want error %d", sql, tokenTypes(r.Tokens), num)
		}
	}
}

// TestRPC drives sp_executesql and the prepared-statement procedures with
// hand-built RPC requests.
func TestRPC(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)

	// sp_executesql with typed parameters, by procedure id.
	r := rpc(t, c, tds.RPCCall{ProcID: tds.ProcExecuteSQL, Params: []tds.RPCParam{
		nvarchar("", "SELECT @a + 1 AS x, @b AS s"),
		nvarchar("", "@a INT, @b NVARCHAR(10)"),
		intParam("@a", 41),
		nvarchar("@b", "hé"),
	}})
	if len(r.Errors) > 0 || len(r.Rows) != 1 || r.Rows[0][0] != int64(42) || r.Rows[0][1] != "hé" {
		t.Fatalf("sp_executesql: %v %v %s", r.Rows, r.Errors, tokenTypes(r.Tokens))
	}
	last := r.Tokens[len(r.Tokens)-1]
	if last.Type != tds.TokenDoneProc || last.Done.Status != 0 {
		t.Fatalf("sp_executesql ends with %s", tokenTypes(r.Tokens))
	}
	if !hasReturnStatus(r.Tokens) {
		t.Fatalf("no RETURNSTATUS: %s", tokenTypes(r.Tokens))
	}
	// And by name.
	r = rpc(t, c, tds.RPCCall{ProcName: "sp_executesql", Params: []tds.RPCParam{nvarchar("@stmt", "SELECT @p1 * 3"), nvarchar("@params", "@p1 INT"), intParam("@p1", 5)}})
	if r.Scalar() != int64(15) {
		t.Fatalf("sp_executesql by name: %v %v", r.Rows, r.Errors)
	}

	// sp_prepare returns a handle in RETURNVALUE.
	r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcPrepare, Params: []tds.RPCParam{
		outInt("@handle"), nvarchar("", "@P0 INT, @P1 NVARCHAR(20)"), nvarchar("", "SELECT @P0 * 2 AS y, @P1 AS s"), intParam("", 1),
	}})
	h := returnedHandle(t, r)
	// sp_execute binds unnamed parameters by the declaration's order.
	for _, n := range []int64{21, 50} {
		r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcExecute, Params: []tds.RPCParam{intParam("", h), intParam("", n), nvarchar("", "p")}})
		if len(r.Errors) > 0 || len(r.Rows) != 1 || r.Rows[0][0] != 2*n || r.Rows[0][1] != "p" {
			t.Fatalf("sp_execute %d: %v %v", n, r.Rows, r.Errors)
		}
	}
	// sp_unprepare drops it: sp_execute then fails with 8179.
	r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcUnprepare, Params: []tds.RPCParam{intParam("", h)}})
	if len(r.Errors) > 0 {
		t.Fatalf("sp_unprepare: %v", r.Errors)
	}
	r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcExecute, Params: []tds.RPCParam{intParam("", h), intParam("", 1), nvarchar("", "p")}})
	if len(r.Errors) != 1 || r.Errors[0].Number != 8179 {
		t.Fatalf("sp_execute after sp_unprepare: %s", tokenTypes(r.Tokens))
	}
	if last := r.Tokens[len(r.Tokens)-1]; last.Type != tds.TokenDoneProc || last.Done.Status&tds.DoneError == 0 {
		t.Fatalf("failed call ends with %s", tokenTypes(r.Tokens))
	}

	// sp_prepexec prepares and runs at once.
	r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcPrepExec, Params: []tds.RPCParam{
		outInt("@handle"), nvarchar("", "@P0 INT"), nvarchar("", "SELECT @P0 + 100 AS z"), intParam("", 1),
	}})
	h2 := returnedHandle(t, r)
	if len(r.Rows) != 1 || r.Rows[0][0] != int64(101) || h2 == h {
		t.Fatalf("sp_prepexec: rows %v, handle %d (first %d)", r.Rows, h2, h)
	}
	r = rpc(t, c, tds.RPCCall{ProcID: tds.ProcExecute, Params: []tds.RPCParam{intParam("", h2), intParam("", 7)}})
	if r.Scalar() != int64(107) {
		t.Fatalf("sp_execute after sp_prepexec: %v %v", r.Rows, r.Errors)
	}

	// Two calls in one request: each ends with DONEPROC, DONE_MORE on the first.
	r = rpc(t, c,
		tds.RPCCall{ProcID: tds.ProcExecuteSQL, Params: []tds.RPCParam{nvarchar("", "SELECT 1")}},
		tds.RPCCall{ProcID: tds.ProcExecuteSQL, Params: []tds.RPCParam{nvarchar("", "SELECT 2")}})
	var procs []*tds.Done
	for _, tok := range r.Tokens {
		if tok.Type == tds.TokenDoneProc {
			procs = append(procs, tok.Done)
		}
	}
	if len(r.Rows) != 2 || len(procs) != 2 || procs[0].Status != tds.DoneMore|tds.DoneRPCInBatch || procs[1].Status != 0 {
		t.Fatalf("two calls: %s", tokenTypes(r.Tokens))
	}
	// An unknown procedure: 2812.
	r = rpc(t, c, tds.RPCCall{ProcName: "sp_nothing"})
	if len(r.Errors) != 1 || r.Errors[0].Number != 2812 {
		t.Fatalf("unknown procedure: %s", tokenTypes(r.Tokens))
	}
}

func hasReturnStatus(toks []tds.Token) bool {
	for _, tok := range toks {
		if tok.Type == tds.TokenReturnStatus && tok.Status == 0 {
			return true
		}
	}
	return false
}

// returnedHandle is the INT of the answer's RETURNVALUE.
func returnedHandle(t *testing.T, r *tdsclient.Result) int64 {
	t.Helper()
	for _, tok := range r.Tokens {
		if tok.Return != nil {
			v, err := tds.DecodeValue(&tok.Return.Type, tok.Return.Value)
			if n, ok := v.(int64); err == nil && ok && tok.Return.Name == "@handle" && tok.Return.Status == 1 {
				return n
			}
			t.Fatalf("RETURNVALUE %+v (%v)", tok.Return, err)
		}
	}
	t.Fatalf("no RETURNVALUE: %s %v", tokenTypes(r.Tokens), r.Errors)
	return 0
}

// tm sends a transaction manager request and reads its answer.
func tm(t *testing.T, c *tdsclient.Conn, desc uint64, typ uint16) *tdsclient.Result {
	t.Helper()
	p := (&tds.AllHeaders{TransactionDescriptor: desc}).Append(nil)
	p = binary.LittleEndian.AppendUint16(p, typ)
	switch typ {
	case tds.TMBeginXact:
		p = append(p, 0, 0) // isolation unchanged, no name
	default:
		p = append(p, 0, 0) // no name, no flags
	}
	if err := c.SendMessage(tds.PacketTransMgrReq, 0, p); err != nil {
		t.Fatal(err)
	}
	r, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		t.Fatalf("TM request %d: %v", typ, r.Errors[0])
	}
	return r
}

// batchIn runs a batch whose ALL_HEADERS carry a transaction descriptor.
func batchIn(t *testing.T, c *tdsclient.Conn, desc uint64, sql string) *tdsclient.Result {
	t.Helper()
	if err := c.SendMessage(tds.PacketSQLBatch, 0, tds.AppendSQLBatch(nil, &tds.AllHeaders{TransactionDescriptor: desc}, sql)); err != nil {
		t.Fatal(err)
	}
	r, err := c.Read()
	if err != nil || len(r.Errors) > 0 {
		t.Fatalf("%q: %v %v", sql, err, r.Errors)
	}
	return r
}

// TestTransactionManager: TM_BEGIN/COMMIT/ROLLBACK_XACT answer ENVCHANGE
// 8/9/10 with real descriptors, and the transaction is real.
func TestTransactionManager(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)
	exec(t, c, "CREATE TABLE tm_t (v INT)")

	begin := func() uint64 {
		t.Helper()
		r := tm(t, c, 0, tds.TMBeginXact)
		ecs := envChanges(r.Tokens, tds.EnvBeginTran)
		if len(ecs) != 1 || len(ecs[0].New) != 8 || len(ecs[0].Old) != 0 {
			t.Fatalf("TM_BEGIN_XACT: %s", tokenTypes(r.Tokens))
		}
		d := binary.LittleEndian.Uint64(ecs[0].New)
		if d == 0 {
			t.Fatal("zero transaction descriptor")
		}
		// As a real SQL Server 2008 answers it: DONE status 0 (no
		// DONE_INXACT), CurCmd 0xFD.
		if ds := dones(r.Tokens); len(ds) != 1 || ds[0].Done.Status != 0 || ds[0].Done.CurCmd != engine.CmdTransMgr {
			t.Fatalf("TM_BEGIN_XACT DONE: %s", tokenTypes(r.Tokens))
		}
		return d
	}
	end := func(typ uint16, desc uint64, env uint8) {
		t.Helper()
		r := tm(t, c, desc, typ)
		ecs := envChanges(r.Tokens, env)
		if len(ecs) != 1 || len(ecs[0].New) != 0 || len(ecs[0].Old) != 8 || binary.LittleEndian.Uint64(ecs[0].Old) != desc {
			t.Fatalf("TM request %d: %s, want ENVCHANGE %d with old value %x", typ, tokenTypes(r.Tokens), env, desc)
		}
	}

	d1 := begin()
	if v := batchIn(t, c, d1, "INSERT INTO tm_t VALUES (1); SELECT @@TRANCOUNT").Scalar(); v != int64(1) {
		t.Fatalf("@@TRANCOUNT %v", v)
	}
	end(tds.TMRollbackXact, d1, tds.EnvRollbackTran)
	if v := scalar(t, c, "SELECT COUNT(*) FROM tm_t"); v != int64(0) {
		t.Fatalf("after rollback: %v rows", v)
	}

	d2 := begin()
	if d2 == d1 {
		t.Fatalf("descriptor %x reused", d2)
	}
	batchIn(t, c, d2, "INSERT INTO tm_t VALUES (2)")
	// Another session does not see the uncommitted row.
	other := dial(t, srv, nil)
	if v := scalar(t, other, "SELECT COUNT(*) FROM tm_t"); v != int64(0) {
		t.Fatalf("uncommitted row visible: %v", v)
	}
	end(tds.TMCommitXact, d2, tds.EnvCommitTran)
	if v := scalar(t, other, "SELECT COUNT(*) FROM tm_t"); v != int64(1) {
		t.Fatalf("after commit: %v rows", v)
	}
	if v := scalar(t, c, "SELECT @@TRANCOUNT"); v != int64(0) {
		t.Fatalf("@@TRANCOUNT after commit %v", v)
	}

	// BEGIN TRAN in SQL gets the same ENVCHANGEs.
	r := exec(t, c, "BEGIN TRAN; INSERT INTO tm_t VALUES (3); ROLLBACK")
	b, rb := envChanges(r.Tokens, tds.EnvBeginTran), envChanges(r.Tokens, tds.EnvRollbackTran)
	if len(b) != 1 || len(rb) != 1 || string(b[0].New) != string(rb[0].Old) {
		t.Fatalf("SQL transaction: %s", tokenTypes(r.Tokens))
	}
	exec(t, c, "DROP TABLE tm_t")
}

// TestAttention: an ATTENTION during WAITFOR ends the request at once:
// its answer, then a separate message with DONE_ATTN. The session stays
// usable.
func TestAttention(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Send("WAITFOR DELAY '00:00:10'", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	if err := c.Attention(); err != nil {
		t.Fatal(err)
	}
	first, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if first.Attention {
		t.Fatalf("DONE_ATTN in the interrupted request's own answer: %s", tokenTypes(first.Tokens))
	}
	ack, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	if ds := dones(ack.Tokens); len(ack.Tokens) != 1 || len(ds) != 1 || ds[0].Done.Status != tds.DoneAttn {
		t.Fatalf("attention ack: %s", tokenTypes(ack.Tokens))
	}
	if took > time.Second {
		t.Fatalf("cancel took %v", took)
	}
	c.SetDeadline(time.Time{})
	if v := scalar(t, c, "SELECT 5"); v != int64(5) {
		t.Fatalf("after cancel: %v", v)
	}

	// An ATTENTION sent right behind its request cancels it too, even
	// before it starts running.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	began = time.Now()
	if err := c.Send("WAITFOR DELAY '00:00:10'", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Attention(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	if ack, err := c.Read(); err != nil || !ack.Attention {
		t.Fatalf("second cancel: %v %s", err, tokenTypes(ack.Tokens))
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("immediate cancel took %v", took)
	}

	// A result set being streamed stops too.
	if err := c.Send("SELECT n FROM standin_numbers", 0); err != nil {
		t.Fatal(err)
	}
	rows := 0
	attnSent := false
	err = c.Stream(func(tok tds.Token) error {
		if tok.Row != nil {
			rows++
			if rows == 1000 && !attnSent {
				attnSent = true
				return c.Attention()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := c.Read(); err != nil || !ack.Attention {
		t.Fatalf("streaming cancel: %v %s", err, tokenTypes(ack.Tokens))
	}
	if rows > 10_000_000 {
		t.Fatalf("%d rows after the cancel", rows)
	}
	c.SetDeadline(time.Time{})
	if v := scalar(t, c, "SELECT 6"); v != int64(6) {
		t.Fatalf("after streaming cancel: %v", v)
	}
	if st := srv.Stats(); st.Attns != 3 {
		t.Fatalf("Attns = %d", st.Attns)
	}
}

// TestResetConnection: RESETCONNECTION on a request drops #temp tables,
// restores SET options, rolls back an open transaction, and is
// acknowledged by ENVCHANGE 18 first.
func TestResetConnection(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, nil)
	exec(t, c, "CREATE TABLE reset_t (v INT)")
	t.Cleanup(func() {
		d := dial(t, srv, nil)
		exec(t, d, "DROP TABLE reset_t")
	})
	exec(t, c, "CREATE TABLE #tmp (v INT); INSERT INTO #tmp VALUES (1)")
	r := exec(t, c, "SET LANGUAGE Deutsch")
	if ecs := envChanges(r.Tokens, tds.EnvLanguage); len(ecs) != 1 || ecs[0].NewString() != "Deutsch" || ecs[0].OldString() != "us_english" ||
		!strings.Contains(tokenTypes(r.Tokens), "INFO(5703)") {
		t.Fatalf("SET LANGUAGE: %s", tokenTypes(r.Tokens))
	}
	r = exec(t, c, "BEGIN TRANSACTION; INSERT INTO reset_t VALUES (1)")
	if len(envChanges(r.Tokens, tds.EnvBeginTran)) != 1 {
		t.Fatalf("BEGIN TRANSACTION: %s", tokenTypes(r.Tokens))
	}
	if v := scalar(t, c, "SELECT @@LANGUAGE"); v != "Deutsch" {
		t.Fatalf("@@LANGUAGE %v", v)
	}

	r, err := c.Exec("SELECT @@TRANCOUNT AS tc, @@LANGUAGE AS lang, DB_NAME() AS db", tds.StatusResetConnection)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Tokens) == 0 || r.Tokens[0].EnvChange == nil || r.Tokens[0].EnvChange.Type != tds.EnvResetConnAck {
		t.Fatalf("first token after RESETCONNECTION: %s", tokenTypes(r.Tokens))
	}
	if len(r.Rows) != 1 || r.Rows[0][0] != int64(0) || r.Rows[0][1] != "us_english" || r.Rows[0][2] != testDB {
		t.Fatalf("after reset: %v", r.Rows)
	}
	r, err = c.Exec("SELECT * FROM #tmp", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) != 1 || r.Errors[0].Number != 208 {
		t.Fatalf("#tmp after reset: %s", tokenTypes(r.Tokens))
	}
	if v := scalar(t, c, "SELECT COUNT(*) FROM reset_t"); v != int64(0) {
		t.Fatalf("insert of the reset transaction kept: %v rows", v)
	}
	if v := scalar(t, c, "SELECT @@TRANCOUNT"); v != int64(0) {
		t.Fatalf("@@TRANCOUNT %v", v)
	}
	// Without the status bit, nothing is reset and no ENVCHANGE 18 is sent.
	exec(t, c, "CREATE TABLE #tmp2 (v INT)")
	r = exec(t, c, "SELECT COUNT(*) FROM #tmp2")
	if len(envChanges(r.Tokens, tds.EnvResetConnAck)) != 0 {
		t.Fatalf("ENVCHANGE 18 without RESETCONNECTION: %s", tokenTypes(r.Tokens))
	}
	// The reset also applies to RPC requests.
	if err := c.SendMessage(tds.PacketRPC, tds.StatusResetConnection, tds.AppendRPC(nil, nil, []tds.RPCCall{{ProcID: tds.ProcExecuteSQL, Params: []tds.RPCParam{nvarchar("", "SELECT COUNT(*) FROM #tmp2")}}})); err != nil {
		t.Fatal(err)
	}
	r, err = c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if r.Tokens[0].EnvChange == nil || r.Tokens[0].EnvChange.Type != tds.EnvResetConnAck || len(r.Errors) != 1 || r.Errors[0].Number != 208 {
		t.Fatalf("RPC with RESETCONNECTION: %s", tokenTypes(r.Tokens))
	}
	if !strings.Contains(tokenTypes(r.Tokens), "DONEfe") {
		t.Fatalf("RPC answer: %s", tokenTypes(r.Tokens))
	}
	// The database goes back to the login's.
	exec(t, c, "USE master")
	r, err = c.Exec("SELECT DB_NAME()", tds.StatusResetConnection)
	if err != nil || r.Scalar() != testDB {
		t.Fatalf("DB_NAME() after reset: %v %v", err, r.Rows)
	}
	if st := srv.Stats(); st.Resets != 3 {
		t.Fatalf("Resets = %d", st.Resets)
	}
}
