package engine

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// FuzzCompile: the batch splitter and the T-SQL translator take text from
// any client; no input may panic or hang them.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "SELECT nAm,, value FROM test_table", "SELECT TOP 5 * FROM test_table ORDER BY id DESC",
		"BEGIN TRANSACTION; INSERT INTO t (a) VALUES (1); COMMIT", "CREATE TABLE #t (id INT IDENTITY(1,1) PRIMARY KEY, n NVARCHAR(10))",
		"IF @@TRANCOUNT > 0 ROLLBACK", "WAITFOR DELAY '00:00:01'", "DECLARE @x INT = 5; SELECT @x", "SELECT 'a' + 'b', N'é'",
		"WITH n AS (SELECT 1 AS v UNION ALL SELECT v+1 FROM n WHERE v < 3) SELECT v FROM n", "/* c */ SELECT -- x\n 1",
		"SELECT ,", "SELECT (", "INSERT INTO", "UPDATE SET", "SELECT * FROM [a]]b]", "'unterminated",
	} {
		f.Add(s)
	}
	for _, s := range wellFormed {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		// The fuzzer does not notice hangs: a lexer or splitter loop that
		// never ends crashes the worker instead, which it records.
		hang := time.AfterFunc(fuzzHang, func() { panic(fmt.Sprintf("compile(%q) still running after %v", sql, fuzzHang)) })
		defer hang.Stop()
		compile(sql)
	})
}

// A batch the translator cannot handle costs one error, not the process.
func TestBatchPanicIsAnError(t *testing.T) {
	s := newSess(t, openTest(t), 51)
	rec := &recSink{}
	if err := s.ExecBatch(context.Background(), "SELECT nAm,, value FROM test_table", nil, rec); err != nil {
		t.Fatal(err)
	}
	if errs := rec.errors(); len(errs) != 1 || errs[0].Number != ErrSyntax {
		t.Fatalf("errors %+v", errs)
	}
}

// How long FuzzExecBatch lets a batch with a 200 ms deadline run: longer
// than fuzzSlow fails the input, longer than fuzzHang crashes the worker.
const (
	fuzzSlow = 2 * time.Second
	fuzzHang = 10 * time.Second
)

// FuzzExecBatch runs fuzzed batches through a session (translation and
// execution on SQLite) under a short deadline: errors are fine, panics and
// hangs are not (ExecBatch recovers panics into error 8630, so a panic
// shows as that error here and fails the target). WAITFOR, WHILE loops and
// long queries must give up at the 200 ms deadline: a batch still running
// well after it fails the target, and one that never returns crashes the
// fuzzing process (the fuzzer itself does not notice hangs), which records
// the input as a failure too.
func FuzzExecBatch(f *testing.F) {
	for _, s := range []string{"SELECT 1", "SELECT nAm,, value FROM test_table", "SELECT TOP 2 name, value FROM test_table ORDER BY id",
		"INSERT INTO test_table (name, value) VALUES ('x', 1); SELECT SCOPE_IDENTITY()", "UPDATE test_table SET value = 2 WHERE id = 1",
		"BEGIN TRAN; SELECT @@TRANCOUNT; ROLLBACK", "SELECT CAST(1 AS BIGINT), CONVERT(NVARCHAR(5), 12), ISNULL(NULL, 3)",
		"SELECT x = 1, 'a' AS b", "SELECT * FROM test_table WHERE name LIKE 's%'", "DECLARE @v INT; SELECT @v = COUNT(*) FROM test_table; SELECT @v"} {
		f.Add(s)
	}
	for _, s := range wellFormed { // every statement kind (malformed_test.go)
		f.Add(s)
	}
	e := openTest(f)
	f.Fuzz(func(t *testing.T, sql string) {
		s, err := e.NewSession(SessionInfo{ServerName: "fuzz", SPID: 51}, "tenant_db")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		rec := &recSink{}
		hang := time.AfterFunc(fuzzHang, func() {
			panic(fmt.Sprintf("ExecBatch(%q) still running after %v (ctx deadline 200ms)", sql, fuzzHang))
		})
		start := time.Now()
		s.ExecBatch(ctx, sql, nil, rec)
		took := time.Since(start)
		hang.Stop()
		if took > fuzzSlow {
			t.Fatalf("ExecBatch took %v (ctx deadline 200ms)", took)
		}
		for _, e := range rec.errors() {
			if e.Number == 8630 {
				t.Fatalf("panic in the engine: %s", e.Message)
			}
		}
	})
}
