package engine

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// colSpec is the expected name/kind/size of one column.
type colSpec struct {
	name string
	kind Kind
	size int
}

func TestSelectKindsAndValues(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 53)
	mustOK(t, s, `CREATE TABLE typed (
		id INT IDENTITY PRIMARY KEY, nv NVARCHAR(100), vc VARCHAR(20), d DECIMAL(10,2),
		dt2 DATETIME2, dt DATETIME, b BIT, bi BIGINT, f FLOAT, r REAL, si SMALLINT, ti TINYINT,
		vb VARBINARY(16), g UNIQUEIDENTIFIER, m NVARCHAR(MAX))`)
	mustOK(t, s, `INSERT INTO typed (nv, vc, d, dt2, dt, b, bi, f, r, si, ti, vb, g, m) VALUES
		(N'ünï', 'abc', 12.5, '2024-01-02 03:04:05.1234567', '2024-01-02 03:04:05', 1, 5000000000, 1.5, 2.5, 7, 200, 0xCAFE, 'F6A0E6B2-4E0C-4C5C-9C9A-2D0C3C7D9E11', 'long')`)
	r := mustOK(t, s, "SELECT * FROM typed")
	sets := r.sets()
	if len(sets) != 1 || len(sets[0].rows) != 1 {
		t.Fatalf("want one row:\n%s", r)
	}
	want := []colSpec{
		{"id", KindInt, 0}, {"nv", KindNVarChar, 100}, {"vc", KindVarChar, 20}, {"d", KindDecimal, 0},
		{"dt2", KindDateTime2, 0}, {"dt", KindDateTime, 0}, {"b", KindBit, 0}, {"bi", KindBigInt, 0},
		{"f", KindFloat, 0}, {"r", KindReal, 0}, {"si", KindSmallInt, 0}, {"ti", KindTinyInt, 0},
		{"vb", KindVarBinary, 16}, {"g", KindUniqueIdentifier, 16}, {"m", KindNVarChar, -1},
	}
	checkCols(t, sets[0].cols, want)
	if c := sets[0].cols[3]; c.Precision != 10 || c.Scale != 2 {
		t.Errorf("decimal P/S = %d/%d", c.Precision, c.Scale)
	}
	row := sets[0].rows[0]
	wantVals := []any{int64(1), "ünï", "abc", "12.50",
		time.Date(2024, 1, 2, 3, 4, 5, 123456700, time.UTC), time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		true, int64(5000000000), 1.5, 2.5, int64(7), int64(200), []byte{0xCA, 0xFE},
		"F6A0E6B2-4E0C-4C5C-9C9A-2D0C3C7D9E11", "long"}
	for i, w := range wantVals {
		if fmt.Sprintf("%#v", row[i]) != fmt.Sprintf("%#v", w) {
			t.Errorf("col %s = %#v, want %#v", sets[0].cols[i].Name, row[i], w)
		}
	}
}

func checkCols(t *testing.T, got []Column, want []colSpec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d columns %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Kind != w.kind || (w.size != 0 && g.Size != w.size) {
			t.Errorf("column %d = %q %s size %d, want %q %s size %d", i, g.Name, g.Kind, g.Size, w.name, w.kind, w.size)
		}
	}
}

func TestExpressionColumns(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 54)
	cases := []struct {
		sql  string
		cols []colSpec
		vals []any
	}{
		{"SELECT 1", []colSpec{{"", KindInt, 0}}, []any{int64(1)}},
		{"SELECT 1 AS resultado", []colSpec{{"resultado", KindInt, 0}}, []any{int64(1)}},
		{"SELECT 5000000000 AS big", []colSpec{{"big", KindBigInt, 0}}, []any{int64(5000000000)}},
		{"SELECT 1.5 AS f", []colSpec{{"f", KindFloat, 0}}, []any{1.5}},
		{"SELECT 'abc' AS s", []colSpec{{"s", KindNVarChar, 3}}, []any{"abc"}},
		{"SELECT N'ação' AS s", []colSpec{{"s", KindNVarChar, 4}}, []any{"ação"}},
		{"SELECT NULL AS n", []colSpec{{"n", KindInt, 0}}, []any{nil}},
		{"SELECT 'bucket-1' AS bucket, @@SERVERNAME AS server", []colSpec{{"bucket", KindNVarChar, 8}, {"server", KindNVarChar, 128}}, []any{"bucket-1", "bucket-1"}},
		{"SELECT CAST(7 AS BIGINT) AS x", []colSpec{{"x", KindBigInt, 0}}, []any{int64(7)}},
		{"SELECT CAST(7 AS NVARCHAR(50)) AS x", []colSpec{{"x", KindNVarChar, 50}}, []any{"7"}},
		{"SELECT CONVERT(INT, '42') AS x", []colSpec{{"x", KindInt, 0}}, []any{int64(42)}},
		{"SELECT CAST('3.14159' AS DECIMAL(5,2)) AS x", []colSpec{{"x", KindDecimal, 0}}, []any{"3.14"}},
		{"SELECT @@SPID AS spid", []colSpec{{"spid", KindSmallInt, 0}}, []any{int64(54)}},
		{"select @@spid", []colSpec{{"", KindSmallInt, 0}}, []any{int64(54)}},
		{"SELECT @@TRANCOUNT", []colSpec{{"", KindInt, 0}}, []any{int64(0)}},
		{"SELECT DB_NAME() AS db", []colSpec{{"db", KindNVarChar, 128}}, []any{"tenant_db"}},
		{"SELECT SUSER_NAME(), SUSER_SNAME(), SYSTEM_USER", []colSpec{{"", KindNVarChar, 128}, {"", KindNVarChar, 128}, {"", KindNVarChar, 128}}, []any{"sa", "sa", "sa"}},
		{"SELECT @@LANGUAGE", []colSpec{{"", KindNVarChar, 128}}, []any{"us_english"}},
		{"SELECT SERVERPROPERTY('ProductVersion')", []colSpec{{"", KindNVarChar, 128}}, []any{ProductVersion}},
		{"SELECT ISNULL(NULL, 3) AS x, LEN('abc  ') AS l", []colSpec{{"x", KindInt, 0}, {"l", KindInt, 0}}, []any{int64(3), int64(3)}},
		{"SELECT 'a' + 'b' + N'c' AS s", []colSpec{{"s", KindNVarChar, 3}}, []any{"abc"}},
		{"SELECT COUNT(*) AS n FROM test_table", []colSpec{{"n", KindInt, 0}}, []any{int64(3)}},
		{"SELECT x = 2", []colSpec{{"x", KindInt, 0}}, []any{int64(2)}},
		{"SELECT SCOPE_IDENTITY()", []colSpec{{"", KindDecimal, 0}}, []any{nil}},
		{"SELECT UPPER(name) AS u FROM test_table WHERE id = 1", []colSpec{{"u", KindNVarChar, 4000}}, []any{"SEED-1"}},
		{"SELECT name FROM test_table WHERE name = 'SEED-1'", []colSpec{{"name", KindNVarChar, 100}}, []any{"seed-1"}}, // case-insensitive collation
		{"SELECT CASE WHEN 1 = 1 THEN 'yes' ELSE 'no' END AS c", []colSpec{{"c", KindNVarChar, 3}}, []any{"yes"}},
		{"SELECT OBJECT_ID('test_table') IS NOT NULL AS e1, OBJECT_ID('dbo.nope') IS NULL AS e2", []colSpec{{"e1", KindInt, 0}, {"e2", KindInt, 0}}, []any{int64(1), int64(1)}},
	}
	for _, c := range cases {
		r := mustOK(t, s, c.sql)
		sets := r.sets()
		if len(sets) != 1 || len(sets[0].rows) != 1 {
			t.Errorf("%s: want one row:\n%s", c.sql, r)
			continue
		}
		t.Run(c.sql, func(t *testing.T) { checkCols(t, sets[0].cols, c.cols) })
		for i, w := range c.vals {
			if g := sets[0].rows[0][i]; fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", w) {
				t.Errorf("%s: value %d = %#v, want %#v", c.sql, i, g, w)
			}
		}
	}
	// Time functions report DATETIME / DATETIME2 and return time.Time.
	r := mustOK(t, s, "SELECT GETDATE() AS a, SYSDATETIME() AS b, CURRENT_TIMESTAMP AS c")
	set := r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"a", KindDateTime, 0}, {"b", KindDateTime2, 0}, {"c", KindDateTime, 0}})
	for i, v := range set.rows[0] {
		tm, ok := v.(time.Time)
		if !ok || time.Since(tm.Add(-localOffset())) > time.Minute {
			t.Errorf("time col %d = %#v", i, v)
		}
	}
	r = mustOK(t, s, "SELECT NEWID() AS g")
	if g, _ := r.sets()[0].rows[0][0].(string); len(g) != 36 || r.sets()[0].cols[0].Kind != KindUniqueIdentifier {
		t.Errorf("NEWID = %#v", r.sets()[0])
	}
	r = mustOK(t, s, "SELECT @@VERSION")
	if v, _ := r.sets()[0].rows[0][0].(string); !strings.HasPrefix(v, "Microsoft SQL Server") {
		t.Errorf("@@VERSION = %q", v)
	}
}

// localOffset is the difference between local wall clock and UTC.
func localOffset() time.Duration {
	_, off := time.Now().Zone()
	return time.Duration(off) * time.Second
}

func TestRunbookBatches(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 55)

	r := mustOK(t, s, "\nINSERT INTO test_table (name, value) VALUES ('test-exec', 42);\nSELECT SCOPE_IDENTITY() AS inserted_id;\n")
	if d := r.dones(); len(d) != 2 || d[0].RowCount != 1 || !d[0].HasCount {
		t.Fatalf("insert done: %s", r)
	}
	set := r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"inserted_id", KindDecimal, 0}})
	if set.cols[0].Precision != 38 || set.cols[0].Scale != 0 || set.rows[0][0] != "4" {
		t.Fatalf("scope identity: %s", r)
	}

	r = mustOK(t, s, "\nSELECT TOP 5 * FROM test_table ORDER BY id DESC;\n")
	set = r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"id", KindInt, 0}, {"name", KindNVarChar, 100}, {"value", KindInt, 0}})
	if len(set.rows) != 4 || set.rows[0][1] != "test-exec" || set.done.RowCount != 4 {
		t.Fatalf("top 5: %s", r)
	}

	r = mustOK(t, s, "\nUPDATE test_table SET value = 99 WHERE name = 'test-exec';\nSELECT * FROM test_table WHERE name = 'test-exec';\n")
	if d := r.dones(); d[0].RowCount != 1 || r.sets()[0].rows[0][2] != int64(99) {
		t.Fatalf("update: %s", r)
	}

	r = mustOK(t, s, "\nDELETE FROM test_table WHERE name = 'test-exec';\n")
	if d := r.dones(); len(d) != 1 || d[0].RowCount != 1 || !d[0].HasCount {
		t.Fatalf("delete: %s", r)
	}

	r = mustOK(t, s, "\nBEGIN TRANSACTION;\nINSERT INTO test_table (name, value) VALUES ('tx-test', 100);\nINSERT INTO test_table (name, value) VALUES ('tx-test', 200);\nCOMMIT TRANSACTION;\nSELECT * FROM test_table WHERE name = 'tx-test';\n")
	if got := r.String(); !strings.Contains(got, "tx: begin 1") || !strings.Contains(got, "tx: commit 0") {
		t.Fatalf("tx events: %s", got)
	}
	if rows := r.sets()[0].rows; len(rows) != 2 || rows[0][2] != int64(100) || rows[1][2] != int64(200) {
		t.Fatalf("tx rows: %s", r)
	}
	r = mustOK(t, s, "\nDELETE FROM test_table WHERE name = 'tx-test';\n")
	if r.dones()[0].RowCount != 2 {
		t.Fatalf("cleanup: %s", r)
	}
	r = mustOK(t, s, "BEGIN TRAN; SELECT 1; COMMIT;")
	if len(r.sets()) != 1 || s.TranCount() != 0 {
		t.Fatalf("BEGIN TRAN; SELECT 1; COMMIT: %s", r)
	}
	for _, q := range []string{"SELECT 'bucket-1 OK'", "SELECT 'fallback mode works' AS result"} {
		if got := mustOK(t, s, q).sets()[0].rows[0][0]; !strings.HasSuffix(q, "result") && got != "bucket-1 OK" {
			t.Fatalf("%s = %v", q, got)
		}
	}
}

func TestRowCountsAndNocount(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 56)
	r := mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('a', 1), ('b', 2), ('c', 3)")
	if d := r.dones(); len(d) != 1 || d[0].RowCount != 3 || !d[0].HasCount {
		t.Fatalf("multi-row insert: %s", r)
	}
	r = mustOK(t, s, "SELECT @@ROWCOUNT AS rc")
	if r.sets()[0].rows[0][0] != int64(0) { // @@ROWCOUNT is per batch statement; a new batch starts after the last statement
		t.Logf("@@ROWCOUNT across batches = %v", r.sets()[0].rows[0][0])
	}
	r = mustOK(t, s, "UPDATE test_table SET value = value + 1 WHERE name IN ('a','b'); SELECT @@ROWCOUNT AS rc")
	if r.sets()[0].rows[0][0] != int64(2) {
		t.Fatalf("@@ROWCOUNT: %s", r)
	}
	r = mustOK(t, s, "SET NOCOUNT ON; DELETE FROM test_table WHERE name IN ('a','b','c'); SELECT 1")
	for _, d := range r.dones() {
		if d.HasCount {
			t.Fatalf("NOCOUNT ON still counts: %s", r)
		}
	}
	r = mustOK(t, s, "SET NOCOUNT OFF; SELECT 1")
	if d := r.dones(); !d[len(d)-1].HasCount {
		t.Fatalf("NOCOUNT OFF: %s", r)
	}
}

func TestTransactions(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 57)
	other := newSess(t, e, 58)
	count := func(sess *Session, name string) int64 {
		t.Helper()
		r := mustOK(t, sess, "SELECT COUNT(*) FROM test_table WHERE name = @n", Param{Name: "@n", Value: name})
		return r.sets()[0].rows[0][0].(int64)
	}

	// ROLLBACK undoes inserts.
	r := mustOK(t, s, "BEGIN TRAN\nINSERT INTO test_table (name, value) VALUES ('rb', 1)\nSELECT @@TRANCOUNT AS tc")
	if r.sets()[0].rows[0][0] != int64(1) || s.TranCount() != 1 {
		t.Fatalf("trancount in tx: %s", r)
	}
	if n := count(s, "rb"); n != 1 {
		t.Fatalf("own insert not visible: %d", n)
	}
	r = mustOK(t, s, "ROLLBACK")
	if !strings.Contains(r.String(), "tx: rollback 0") {
		t.Fatalf("rollback event: %s", r)
	}
	if n := count(other, "rb"); n != 0 {
		t.Fatalf("rollback did not undo: %d", n)
	}

	// Nested BEGIN: only the outermost COMMIT commits; events only on real changes.
	r = mustOK(t, s, "BEGIN TRANSACTION; BEGIN TRAN; SELECT @@TRANCOUNT; INSERT INTO test_table (name, value) VALUES ('nest', 1); COMMIT; SELECT @@TRANCOUNT")
	sets := r.sets()
	if sets[0].rows[0][0] != int64(2) || sets[1].rows[0][0] != int64(1) {
		t.Fatalf("nested trancount: %s", r)
	}
	if strings.Count(r.String(), "tx: ") != 1 {
		t.Fatalf("nested tx events: %s", r)
	}
	r = mustOK(t, s, "COMMIT WORK")
	if !strings.Contains(r.String(), "tx: commit 0") || count(other, "nest") != 1 {
		t.Fatalf("outer commit: %s", r)
	}

	// ROLLBACK inside nested rolls back everything.
	mustOK(t, s, "BEGIN TRAN; BEGIN TRAN; INSERT INTO test_table (name, value) VALUES ('nest2', 1)")
	r = mustOK(t, s, "ROLLBACK TRANSACTION; SELECT @@TRANCOUNT")
	if r.sets()[0].rows[0][0] != int64(0) || count(s, "nest2") != 0 {
		t.Fatalf("nested rollback: %s", r)
	}

	// Errors 3902 / 3903.
	r = run(t, s, "COMMIT")
	if errs := r.errors(); len(errs) != 1 || errs[0].Number != 3902 || errs[0].Class != 16 {
		t.Fatalf("commit without begin: %s", r)
	}
	r = run(t, s, "ROLLBACK TRAN")
	if errs := r.errors(); len(errs) != 1 || errs[0].Number != 3903 {
		t.Fatalf("rollback without begin: %s", r)
	}

	// IF @@TRANCOUNT > 0 ROLLBACK, both ways.
	r = mustOK(t, s, "IF @@TRANCOUNT > 0 ROLLBACK")
	if len(r.ev) != 0 {
		t.Fatalf("no-op IF: %s", r)
	}
	mustOK(t, s, "BEGIN TRAN")
	r = mustOK(t, s, "IF @@TRANCOUNT > 0 ROLLBACK")
	if s.TranCount() != 0 || !strings.Contains(r.String(), "tx: rollback") {
		t.Fatalf("IF ROLLBACK: %s", r)
	}

	// Transaction manager API.
	if err := s.Begin(); err != nil {
		t.Fatal(err)
	}
	mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('tm', 1)")
	if err := s.Rollback(); err != nil {
		t.Fatal(err)
	}
	if count(other, "tm") != 0 {
		t.Fatal("TM rollback did not undo")
	}
	if err := s.Begin(); err != nil {
		t.Fatal(err)
	}
	mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('tm', 1)")
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if count(other, "tm") != 1 {
		t.Fatal("TM commit lost")
	}
	if err := s.Commit(); err == nil {
		t.Fatal("commit without tx succeeded")
	}

	// Savepoints.
	r = mustOK(t, s, `BEGIN TRAN
		INSERT INTO test_table (name, value) VALUES ('sp', 1)
		SAVE TRANSACTION s1
		INSERT INTO test_table (name, value) VALUES ('sp', 2)
		ROLLBACK TRANSACTION s1
		COMMIT`)
	if count(other, "sp") != 1 {
		t.Fatalf("savepoint: %s", r)
	}
}

func TestTempTables(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	a := newSess(t, e, 60)
	b := newSess(t, e, 61)
	mustOK(t, a, "CREATE TABLE #t (id INT IDENTITY(1,1) PRIMARY KEY, v NVARCHAR(10)); INSERT INTO #t (v) VALUES ('x'), ('y')")
	r := mustOK(t, a, "SELECT * FROM #t ORDER BY id; SELECT SCOPE_IDENTITY()")
	if rows := r.sets()[0].rows; len(rows) != 2 || rows[1][0] != int64(2) || r.sets()[1].rows[0][0] != "2" {
		t.Fatalf("temp table: %s", r)
	}
	r = run(t, b, "SELECT * FROM #t")
	if errs := r.errors(); len(errs) != 1 || errs[0].Number != 208 || errs[0].Message != "Invalid object name '#t'." {
		t.Fatalf("other session sees #t: %s", r)
	}
	// Another session may create its own #t.
	mustOK(t, b, "CREATE TABLE #t (z INT); INSERT INTO #t VALUES (7)")
	if r := mustOK(t, b, "SELECT z FROM #t"); r.sets()[0].rows[0][0] != int64(7) {
		t.Fatal(r)
	}
	if err := a.Reset(); err != nil {
		t.Fatal(err)
	}
	r = run(t, a, "SELECT * FROM #t")
	if errs := r.errors(); len(errs) != 1 || errs[0].Number != 208 {
		t.Fatalf("#t survived Reset: %s", r)
	}
	// A pooled connection must never leak #t to the next session.
	b.Close()
	for i := range 5 {
		c := newSess(t, e, uint16(70+i))
		if r := run(t, c, "SELECT OBJECT_ID('tempdb..#t')"); r.sets()[0].rows[0][0] != nil {
			t.Fatalf("new session sees a #t: %s", r)
		}
	}
	// IF OBJECT_ID(...) IS NOT NULL DROP TABLE
	mustOK(t, a, "CREATE TABLE #d (x INT)")
	mustOK(t, a, "IF OBJECT_ID('tempdb..#d') IS NOT NULL DROP TABLE #d")
	if r := run(t, a, "SELECT * FROM #d"); len(r.errors()) != 1 {
		t.Fatalf("#d not dropped: %s", r)
	}
	// SELECT INTO #temp
	r = mustOK(t, a, "SELECT id, name INTO #copy FROM test_table; SELECT COUNT(*) FROM #copy")
	if r.dones()[0].RowCount != 3 || r.sets()[0].rows[0][0] != int64(3) {
		t.Fatalf("select into: %s", r)
	}
}

func TestResetRestoresState(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 62)
	mustOK(t, s, "SET LANGUAGE Deutsch; SET NOCOUNT ON; USE other_db; BEGIN TRAN")
	if s.Language() != "Deutsch" || s.Database() != "other_db" || s.TranCount() != 1 {
		t.Fatalf("state not set: %s %s %d", s.Language(), s.Database(), s.TranCount())
	}
	if r := mustOK(t, s, "SELECT @@LANGUAGE"); r.sets()[0].rows[0][0] != "Deutsch" {
		t.Fatal(r)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	r := mustOK(t, s, "SELECT @@LANGUAGE AS l, DB_NAME() AS d, @@TRANCOUNT AS t")
	row := r.sets()[0].rows[0]
	if row[0] != "us_english" || row[1] != "tenant_db" || row[2] != int64(0) || !r.sets()[0].done.HasCount {
		t.Fatalf("after reset: %s", r)
	}
}

func TestUseDatabase(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 63)
	r := mustOK(t, s, "USE other_db; SELECT DB_NAME()")
	if !strings.Contains(r.String(), "database: other_db") || r.sets()[0].rows[0][0] != "other_db" {
		t.Fatal(r)
	}
	if r := run(t, s, "SELECT * FROM test_table"); len(r.errors()) != 1 || r.errors()[0].Number != 208 {
		t.Fatalf("test_table visible in other_db: %s", r)
	}
	r = run(t, s, "USE nope")
	errs := r.errors()
	if len(errs) != 1 || errs[0].Number != 911 || errs[0].Class != 16 ||
		errs[0].Message != "Database 'nope' does not exist. Make sure that the name is entered correctly." {
		t.Fatalf("USE nope: %s", r)
	}
	mustOK(t, s, "USE [tenant_db]")
	if s.Database() != "tenant_db" {
		t.Fatal(s.Database())
	}
	if _, err := e.NewSession(SessionInfo{}, "nope"); err == nil {
		t.Fatal("NewSession on missing db succeeded")
	}
	if !e.HasDatabase("TENANT_DB") || !e.HasDatabase("master") || e.HasDatabase("nope") {
		t.Fatal("HasDatabase")
	}
	m, err := e.NewSession(SessionInfo{}, "")
	if err != nil || m.Database() != "master" {
		t.Fatalf("default db: %v %v", m, err)
	}
	m.Close()
}

func TestErrors(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 64)
	cases := []struct {
		sql    string
		number int32
		class  uint8
		line   int32
		msg    string
	}{
		{"SELECT * FROM nosuch", 208, 16, 1, "Invalid object name 'nosuch'."},
		{"SELECT nosuch FROM test_table", 207, 16, 1, "Invalid column name 'nosuch'."},
		{"SELECT 1\n\nSELEC 2", 102, 15, 3, "Incorrect syntax near '2'."},
		{"SELECT 1\nFROM\nWHERE", 102, 15, 3, "Incorrect syntax near 'WHERE'."},
		{"SELECT FROM WHERE", 102, 15, 1, ""},
		{"INSERT INTO test_table (id, name) VALUES (1, 'dup')", 2627, 14, 1, "Violation of PRIMARY KEY constraint 'PK_test_table'. Cannot insert duplicate key in object 'dbo.test_table'."},
		{"CREATE TABLE nn (a INT NOT NULL); INSERT INTO nn VALUES (NULL)", 515, 16, 1, "Cannot insert the value NULL into column 'a', table 'tenant_db.dbo.nn'; column does not allow nulls. INSERT fails."},
		{"SELECT 1/0", 8134, 16, 1, "Divide by zero error encountered."},
		{"SELECT @undeclared", 137, 15, 1, `Must declare the scalar variable "@undeclared".`},
		{"SELECT 'unterminated", 105, 15, 1, ""},
		{"EXEC no_such_proc", 2812, 16, 1, "Could not find stored procedure 'no_such_proc'."},
		{"CREATE TABLE test_table (x INT)", 2714, 16, 1, "There is already an object named 'test_table' in the database."},
		{"DROP TABLE nosuch", 3701, 11, 1, ""},
		{"THROW 50001, 'boom', 1", 50001, 16, 1, "boom"},
	}
	for _, c := range cases {
		r := run(t, s, c.sql)
		errs := r.errors()
		if len(errs) != 1 {
			t.Errorf("%q: want 1 error:\n%s", c.sql, r)
			continue
		}
		g := errs[0]
		if g.Number != c.number || g.Class != c.class || g.Line != c.line || g.State != 1 || c.msg != "" && g.Message != c.msg {
			t.Errorf("%q: got %d/%d line %d state %d %q, want %d/%d line %d %q", c.sql, g.Number, g.Class, g.Line, g.State, g.Message, c.number, c.class, c.line, c.msg)
		}
		if d := r.dones(); len(d) == 0 || !d[len(d)-1].Error {
			t.Errorf("%q: last Done lacks Error:\n%s", c.sql, r)
		}
	}
	// An error stops the batch.
	r := run(t, s, "SELECT 1; SELECT * FROM nosuch; SELECT 2")
	if len(r.sets()) != 1 || len(r.errors()) != 1 {
		t.Fatalf("batch continued after error: %s", r)
	}
	// The line is the failing statement's.
	r = run(t, s, "SELECT 1\nSELECT 2\n\nINSERT INTO nosuch VALUES (1)")
	if r.errors()[0].Line != 4 {
		t.Fatalf("line: %s", r)
	}
	// RAISERROR continues the batch; low severity is informational.
	r = run(t, s, "RAISERROR('bad %s %d', 16, 1, 'thing', 5); PRINT 'after'; RAISERROR('note', 10, 1)")
	if errs := r.errors(); len(errs) != 1 || errs[0].Message != "bad thing 5" || errs[0].Number != 50000 ||
		!strings.Contains(r.String(), "info: 0 after") || !strings.Contains(r.String(), "info: 50000 note") {
		t.Fatalf("raiserror: %s", r)
	}
	// TRY/CATCH.
	r = mustOK(t, s, "BEGIN TRY SELECT * FROM nosuch END TRY BEGIN CATCH SELECT ERROR_NUMBER() AS n, ERROR_MESSAGE() AS m END CATCH")
	if row := r.sets()[0].rows[0]; row[0] != int64(208) || row[1] != "Invalid object name 'nosuch'." {
		t.Fatalf("catch: %s", r)
	}
}

func TestVariablesAndControlFlow(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 65)
	r := mustOK(t, s, "DECLARE @x INT = 5; SELECT @x AS x, @x * 2 AS y")
	checkCols(t, r.sets()[0].cols, []colSpec{{"x", KindInt, 0}, {"y", KindInt, 0}})
	if row := r.sets()[0].rows[0]; row[0] != int64(5) || row[1] != int64(10) {
		t.Fatal(r)
	}
	r = mustOK(t, s, `DECLARE @i INT = 0, @s NVARCHAR(20) = N'';
		WHILE @i < 5 BEGIN SET @i = @i + 1; IF @i = 3 CONTINUE; SET @s += CAST(@i AS NVARCHAR(2)) END
		SELECT @i AS i, @s AS s`)
	if row := r.sets()[0].rows[0]; row[0] != int64(5) || row[1] != "1245" {
		t.Fatalf("while: %s", r)
	}
	checkCols(t, r.sets()[0].cols, []colSpec{{"i", KindInt, 0}, {"s", KindNVarChar, 20}})
	r = mustOK(t, s, "DECLARE @n INT; SELECT @n = COUNT(*) FROM test_table; IF @n = 3 PRINT 'three' ELSE PRINT 'other'")
	if !strings.Contains(r.String(), "info: 0 three") {
		t.Fatal(r)
	}
	r = mustOK(t, s, "PRINT 'x'")
	if len(r.ev) != 1 || r.ev[0].kind != "info" || r.ev[0].number != 0 || r.ev[0].msg != "x" {
		t.Fatalf("PRINT: %s", r)
	}
	// Variables are batch-scoped.
	if r := run(t, s, "SELECT @x"); len(r.errors()) != 1 {
		t.Fatal("variable survived its batch")
	}
}

func TestParams(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 66)
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	r := mustOK(t, s, "SELECT @p1 AS a, @p2 AS b, @p3 AS c, @p4 AS d, @p5 AS e, @name AS f, @p6 AS g",
		Param{Name: "@p1", Value: int64(7)}, Param{Name: "@p2", Value: "héllo"}, Param{Name: "@p3", Value: true},
		Param{Name: "@p4", Value: 2.5}, Param{Name: "@p5", Value: when}, Param{Name: "name", Value: nil},
		Param{Name: "@p6", Value: []byte{1, 2}})
	set := r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"a", KindInt, 0}, {"b", KindNVarChar, 5}, {"c", KindBit, 0}, {"d", KindFloat, 0}, {"e", KindDateTime2, 0}, {"f", KindInt, 0}, {"g", KindVarBinary, 0}})
	want := []any{int64(7), "héllo", true, 2.5, when, nil, []byte{1, 2}}
	for i, w := range want {
		if fmt.Sprintf("%#v", set.rows[0][i]) != fmt.Sprintf("%#v", w) {
			t.Errorf("param %d = %#v, want %#v", i, set.rows[0][i], w)
		}
	}
	r = mustOK(t, s, "INSERT INTO test_table (name, value) VALUES (@name, @v); SELECT value FROM test_table WHERE name = @name",
		Param{Name: "@name", Value: "param-row"}, Param{Name: "@v", Value: int64(11)})
	if r.sets()[0].rows[0][0] != int64(11) {
		t.Fatal(r)
	}
	// Textual sp_executesql.
	r = mustOK(t, s, "EXEC sp_executesql N'SELECT @a + 1 AS x, @b AS y', N'@a INT, @b NVARCHAR(10)', @a = 41, @b = N'z'")
	set = r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"x", KindInt, 0}, {"y", KindNVarChar, 10}})
	if set.rows[0][0] != int64(42) || set.rows[0][1] != "z" {
		t.Fatal(r)
	}
	// The runbook's phase-4 probe: SELECT @id.
	r = mustOK(t, s, "SELECT @id", Param{Name: "@id", Value: int64(3)})
	if r.sets()[0].rows[0][0] != int64(3) {
		t.Fatal(r)
	}
}

func TestDriverConnectQueries(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 67)
	for _, q := range []string{
		"set textsize 2147483647",
		"SET TEXTSIZE 2147483647; SET ANSI_NULLS ON; SET QUOTED_IDENTIFIER ON",
		"set implicit_transactions off",
		"SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
		"SET LANGUAGE us_english; SET DATEFORMAT mdy; SET DATEFIRST 7",
		"SET ANSI_NULL_DFLT_ON ON; SET ANSI_PADDING ON; SET ANSI_WARNINGS ON; SET CONCAT_NULL_YIELDS_NULL ON; SET ARITHABORT ON",
		"SET XACT_ABORT ON; SET XACT_ABORT OFF",
		"select @@spid",
		"SELECT @@VERSION",
		"SELECT SERVERPROPERTY('ProductVersion'), SERVERPROPERTY('Edition'), SERVERPROPERTY('EngineEdition')",
		"select @@MAX_PRECISION, @@TRANCOUNT, @@OPTIONS",
		"SELECT CAST(SERVERPROPERTY('ProductVersion') AS NVARCHAR(128))",
		"EXEC sp_reset_connection",
	} {
		mustOK(t, s, q)
	}
}

// TestWaitforCancel is not parallel: it times how soon a canceled WAITFOR
// returns.
func TestWaitforCancel(t *testing.T) {
	e := openTest(t)
	s := newSess(t, e, 68)
	r := mustOK(t, s, "WAITFOR DELAY '00:00:00.050'; SELECT 1")
	if len(r.sets()) != 1 {
		t.Fatal(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.ExecBatch(ctx, "WAITFOR DELAY '00:00:30'; SELECT 1", nil, &recSink{}) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	start := time.Now()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("WAITFOR returned %v after cancel", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WAITFOR ignored cancel")
	}
	// The session is still usable.
	mustOK(t, s, "SELECT 1")
	if r := run(t, s, "WAITFOR DELAY 'soon'"); len(r.errors()) != 1 || r.errors()[0].Number != 148 {
		t.Fatalf("bad delay: %s", r)
	}
}

// countSink counts rows and tracks memory while streaming.
type countSink struct {
	recSink
	rows    int64
	maxHeap uint64
	cancel  func()
	stopAt  int64
}

func (c *countSink) Row([]any) error {
	c.rows++
	if c.rows%5000 == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		c.maxHeap = max(c.maxHeap, ms.HeapAlloc)
	}
	if c.stopAt > 0 && c.rows == c.stopAt {
		c.cancel()
	}
	return nil
}

// streamSizes returns the row counts TestStreaming uses: 100k rows streamed
// and a 20k-row table normally; 10x fewer under the race detector, where the
// same checks still exercise every path in a fraction of the time.
func streamSizes() (stream, table int) {
	if raceEnabled {
		return 10000, 2000
	}
	return 100000, 20000
}

// TestStreaming is not parallel: its heap check reads process-wide MemStats.
// (Non-parallel tests run before the parallel ones, so it runs alone.)
func TestStreaming(t *testing.T) {
	e := openTest(t)
	s := newSess(t, e, 69)
	n, tableRows := streamSizes()
	for _, q := range []string{
		"SELECT value FROM generate_series(1, %d)",
		"SELECT TOP %d n FROM standin_numbers",
		"SELECT TOP (%d) n, 'row-' + CAST(n AS NVARCHAR(10)) AS label FROM standin_numbers ORDER BY n",
		"WITH n AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM n WHERE i < %d) SELECT i FROM n",
	} {
		q = fmt.Sprintf(q, n)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		cs := &countSink{}
		if err := s.ExecBatch(context.Background(), q, nil, cs); err != nil {
			t.Fatal(err)
		}
		if errs := cs.errors(); len(errs) > 0 {
			t.Fatalf("%s: %v", q, errs[0])
		}
		if cs.rows != int64(n) || cs.dones()[0].RowCount != int64(n) {
			t.Fatalf("%s: rows = %d, done %+v", q, cs.rows, cs.dones())
		}
		// 100k rows kept in memory would be several MB; streaming stays far
		// below. (A heap check, so it only bites at the full size.)
		if grow := int64(cs.maxHeap) - int64(before.HeapAlloc); grow > 32<<20 {
			t.Errorf("%s: heap grew %d bytes while streaming", q, grow)
		}
	}
	// A table: fill it, stream it, and stop mid-stream on cancel. (Fewer rows
	// than above: the per-row IDENTITY trigger is slow.)
	mustOK(t, s, "CREATE TABLE big (id INT IDENTITY(1,1) PRIMARY KEY, v NVARCHAR(50))")
	r := mustOK(t, s, fmt.Sprintf("INSERT INTO big (v) SELECT 'value-' + CAST(value AS NVARCHAR(20)) FROM generate_series(1, %d)", tableRows))
	if r.dones()[0].RowCount != int64(tableRows) {
		t.Fatal(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs := &countSink{cancel: cancel, stopAt: 1000}
	err := s.ExecBatch(ctx, "SELECT * FROM big", nil, cs)
	if err != context.Canceled || cs.rows != 1000 {
		t.Fatalf("cancel mid-stream: err=%v rows=%d", err, cs.rows)
	}
	r = mustOK(t, s, "SELECT MAX(id) AS m FROM big")
	if r.sets()[0].rows[0][0] != int64(tableRows) {
		t.Fatal(r)
	}
}

func TestConcurrentSessions(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	mustOK(t, newSess(t, e, 99), "CREATE TABLE conc (id INT IDENTITY(1,1) PRIMARY KEY, worker INT, n INT)")
	workers, per := 20, 25
	if raceEnabled {
		workers, per = 10, 10 // still contended; a quarter of the batches
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.NewSession(SessionInfo{SPID: uint16(100 + w), Login: "sa"}, "tenant_db")
			if err != nil {
				errc <- err
				return
			}
			defer s.Close()
			ids := map[string]bool{}
			for i := range per {
				q := "INSERT INTO conc (worker, n) VALUES (@w, @n); SELECT SCOPE_IDENTITY() AS id"
				if i%5 == 0 {
					q = "BEGIN TRAN; " + q + "; COMMIT"
				}
				r := &recSink{}
				if err := s.ExecBatch(context.Background(), q, []Param{{Name: "@w", Value: int64(w)}, {Name: "@n", Value: int64(i)}}, r); err != nil {
					errc <- err
					return
				}
				if errs := r.errors(); len(errs) > 0 {
					errc <- errs[0]
					return
				}
				id := r.sets()[0].rows[0][0].(string)
				if ids[id] {
					errc <- fmt.Errorf("worker %d: duplicate identity %s", w, id)
					return
				}
				ids[id] = true
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	r := mustOK(t, newSess(t, e, 98), "SELECT COUNT(*), COUNT(DISTINCT id), MAX(id) FROM conc")
	row := r.sets()[0].rows[0]
	if row[0] != int64(workers*per) || row[1] != int64(workers*per) || row[2] != int64(workers*per) {
		t.Fatalf("concurrent inserts: %s", r)
	}
}

func TestDDL(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 70)
	mustOK(t, s, `CREATE TABLE [dbo].[orders] (
		[id] [bigint] IDENTITY(100, 10) NOT NULL,
		[customer] [nvarchar](50) NOT NULL DEFAULT N'anon',
		[total] [decimal](12, 2) NULL,
		[created] DATETIME2 DEFAULT SYSDATETIME(),
		CONSTRAINT [PK_orders] PRIMARY KEY CLUSTERED ([id] ASC)
	) ON [PRIMARY]`)
	mustOK(t, s, "CREATE NONCLUSTERED INDEX ix_orders_customer ON dbo.orders (customer) INCLUDE (total)")
	r := mustOK(t, s, "INSERT INTO orders (total) VALUES (1.5); INSERT orders (customer, total) VALUES ('bob', 2); SELECT id, customer, total, created FROM orders ORDER BY id; SELECT @@IDENTITY")
	set := r.sets()[0]
	checkCols(t, set.cols, []colSpec{{"id", KindBigInt, 0}, {"customer", KindNVarChar, 50}, {"total", KindDecimal, 0}, {"created", KindDateTime2, 0}})
	if set.rows[0][0] != int64(100) || set.rows[1][0] != int64(110) || set.rows[0][1] != "anon" || set.rows[0][2] != "1.50" {
		t.Fatalf("identity/defaults: %s", r)
	}
	if _, ok := set.rows[0][3].(time.Time); !ok {
		t.Fatalf("default SYSDATETIME: %#v", set.rows[0][3])
	}
	if r.sets()[1].rows[0][0] != "110" {
		t.Fatalf("@@IDENTITY: %s", r)
	}
	mustOK(t, s, "ALTER TABLE orders ADD note NVARCHAR(20) NULL")
	mustOK(t, s, "TRUNCATE TABLE orders; INSERT INTO orders (customer) VALUES ('c')")
	if r := mustOK(t, s, "SELECT id, note FROM orders"); r.sets()[0].rows[0][0] != int64(100) {
		t.Fatalf("truncate resets identity: %s", r)
	}
	mustOK(t, s, "DROP TABLE orders")
	mustOK(t, s, "DROP TABLE IF EXISTS orders")
	mustOK(t, s, "CREATE TABLE orders (id INT IDENTITY, x INT)")
	if r := mustOK(t, s, "INSERT INTO orders (x) VALUES (1); SELECT id FROM orders"); r.sets()[0].rows[0][0] != int64(1) {
		t.Fatalf("recreated identity: %s", r)
	}
	// A view over a table keeps the declared types.
	mustOK(t, s, "CREATE VIEW v_names AS SELECT name FROM dbo.test_table")
	checkCols(t, mustOK(t, s, "SELECT * FROM v_names").sets()[0].cols, []colSpec{{"name", KindNVarChar, 100}})
	// CREATE DATABASE makes a usable database.
	mustOK(t, s, "CREATE DATABASE scratch")
	mustOK(t, s, "USE scratch; CREATE TABLE t (a INT); INSERT INTO t VALUES (1)")
	if !e.HasDatabase("scratch") {
		t.Fatal("scratch missing")
	}
}

func TestInitRunsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{Dir: dir, Databases: map[string]string{"tenant_db": runbookInit}}
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newSess(t, e, 1)
	mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('kept', 1)")
	s.Close()
	e.Close()
	e, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r := mustOK(t, newSess(t, e, 2), "SELECT COUNT(*) FROM test_table")
	if r.sets()[0].rows[0][0] != int64(4) {
		t.Fatalf("reopen: %s", r)
	}
	if _, err := Open(Config{Databases: map[string]string{"bad": "CREATE TABLE ("}}); err == nil {
		t.Fatal("bad init SQL accepted")
	}
	tmp, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSelect1(b *testing.B) {
	e := openTest(b)
	s := newSess(b, e, 1)
	sink := &errSink{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.ExecBatch(ctx, "SELECT 1", nil, sink); err != nil {
			b.Fatal(err)
		}
	}
	if sink.err != nil {
		b.Fatal(sink.err)
	}
}

func BenchmarkStream100k(b *testing.B) {
	e := openTest(b)
	s := newSess(b, e, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		cs := &countSink{}
		if err := s.ExecBatch(ctx, "SELECT TOP 100000 n FROM standin_numbers", nil, cs); err != nil {
			b.Fatal(err)
		}
		if cs.rows != 100000 {
			b.Fatal(cs.rows, cs.errors())
		}
	}
}

// reentrantSink calls the session's getters from inside callbacks, as a TDS
// writer filling ENVCHANGE / DONE flags would.
type reentrantSink struct {
	recSink
	s     *Session
	trans []int
	dbs   []string
}

func (r *reentrantSink) Tx(ev TxEvent, n int) error {
	r.trans = append(r.trans, r.s.TranCount())
	return r.recSink.Tx(ev, n)
}

func (r *reentrantSink) Database(n string) error {
	r.dbs = append(r.dbs, r.s.Database()+"/"+r.s.Language())
	return r.recSink.Database(n)
}

func TestGettersFromSink(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 71)
	rs := &reentrantSink{s: s}
	done := make(chan error, 1)
	go func() {
		done <- s.ExecBatch(context.Background(), "BEGIN TRAN; COMMIT; SET LANGUAGE x; USE other_db", nil, rs)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("getter deadlocked inside a Sink callback")
	}
	if fmt.Sprint(rs.trans) != "[1 0]" || fmt.Sprint(rs.dbs) != "[other_db/x]" {
		t.Fatalf("trans=%v dbs=%v", rs.trans, rs.dbs)
	}
}
