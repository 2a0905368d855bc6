package engine

import (
	"strings"
	"testing"
)

// TestImplicitTransactions follows what jTDS sends for setAutoCommit(false),
// commit() and rollback(): SET IMPLICIT_TRANSACTIONS ON, then
// IF @@TRANCOUNT > 0 COMMIT TRAN / IF @@TRANCOUNT > 0 ROLLBACK TRAN.
func TestImplicitTransactions(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	s := newSess(t, e, 72)
	other := newSess(t, e, 73)
	count := func(name string) int64 {
		t.Helper()
		r := mustOK(t, other, "SELECT COUNT(*) FROM test_table WHERE name = @n", Param{Name: "@n", Value: name})
		return r.sets()[0].rows[0][0].(int64)
	}
	scalar := func(sql string) any {
		t.Helper()
		return mustOK(t, s, sql).sets()[0].rows[0][0]
	}
	txEvents := func(r *recSink) string {
		var b []string
		for _, l := range strings.Split(r.String(), "\n") {
			if strings.HasPrefix(l, "tx: ") {
				b = append(b, l)
			}
		}
		return strings.Join(b, "; ")
	}

	if scalar("SELECT 2 & @@OPTIONS") != int64(0) {
		t.Fatal("IMPLICIT_TRANSACTIONS on at login")
	}
	r := mustOK(t, s, "SET IMPLICIT_TRANSACTIONS ON")
	if txEvents(r) != "" || s.TranCount() != 0 {
		t.Fatalf("SET alone began a transaction: %s", r)
	}
	if scalar("SELECT 2 & @@OPTIONS") != int64(2) {
		t.Fatal("@@OPTIONS bit 2 not set")
	}

	// A SELECT that reads no table starts nothing.
	for _, q := range []string{"SELECT 1", "SELECT @@TRANCOUNT", "DECLARE @x INT = 1; SET @x = @x + 1; SELECT @x", "IF @@TRANCOUNT > 0 COMMIT TRAN", "IF @@TRANCOUNT > 0 ROLLBACK TRAN"} {
		if r := mustOK(t, s, q); txEvents(r) != "" || s.TranCount() != 0 {
			t.Fatalf("%q began a transaction: %s", q, r)
		}
	}

	// INSERT begins one; ROLLBACK undoes it.
	r = mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('imp-rb', 1)")
	if txEvents(r) != "tx: begin 1" || s.TranCount() != 1 {
		t.Fatalf("INSERT: trancount %d, %s", s.TranCount(), r)
	}
	if scalar("SELECT @@TRANCOUNT") != int64(1) {
		t.Fatal("@@TRANCOUNT after INSERT")
	}
	r = mustOK(t, s, "IF @@TRANCOUNT > 0 ROLLBACK TRAN")
	if txEvents(r) != "tx: rollback 0" || s.TranCount() != 0 {
		t.Fatalf("rollback: %s", r)
	}
	if n := count("imp-rb"); n != 0 {
		t.Fatalf("rollback kept %d rows", n)
	}

	// INSERT then COMMIT keeps the row; the next statement begins anew.
	r = mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('imp-c', 1); SELECT @@TRANCOUNT")
	if txEvents(r) != "tx: begin 1" || r.sets()[0].rows[0][0] != int64(1) {
		t.Fatalf("insert in batch: %s", r)
	}
	if n := count("imp-c"); n != 0 {
		t.Fatalf("uncommitted row visible to another session: %d", n)
	}
	r = mustOK(t, s, "IF @@TRANCOUNT > 0 COMMIT TRAN")
	if txEvents(r) != "tx: commit 0" || s.TranCount() != 0 || count("imp-c") != 1 {
		t.Fatalf("commit: %s", r)
	}

	// UPDATE, DELETE, a SELECT from a table, a condition reading a table,
	// SELECT INTO and DDL each begin one; DDL rolls back too.
	for _, q := range []string{
		"UPDATE test_table SET value = 2 WHERE name = 'imp-c'",
		"DELETE FROM test_table WHERE name = 'nobody'",
		"SELECT COUNT(*) FROM test_table",
		"IF EXISTS (SELECT * FROM test_table) PRINT 'yes'",
		"DECLARE @n INT = (SELECT COUNT(*) FROM test_table)",
		"SELECT name INTO #imp FROM test_table",
		"CREATE TABLE imp_t (a INT)",
		"TRUNCATE TABLE test_table",
	} {
		r := mustOK(t, s, q)
		if txEvents(r) != "tx: begin 1" || s.TranCount() != 1 {
			t.Fatalf("%q: trancount %d, %s", q, s.TranCount(), r)
		}
		mustOK(t, s, "IF @@TRANCOUNT > 0 ROLLBACK TRAN")
	}
	if count("imp-c") != 1 {
		t.Fatal("TRUNCATE was not rolled back")
	}
	if r := run(t, s, "SELECT * FROM imp_t"); len(r.errors()) != 1 || r.errors()[0].Number != ErrInvalidObject {
		t.Fatalf("CREATE TABLE was not rolled back: %s", r)
	}
	mustOK(t, s, "IF @@TRANCOUNT > 0 ROLLBACK TRAN")

	// BEGIN TRAN opens two nested transactions, as in SQL Server; one event.
	r = mustOK(t, s, "BEGIN TRAN; SELECT @@TRANCOUNT")
	if txEvents(r) != "tx: begin 1" || r.sets()[0].rows[0][0] != int64(2) {
		t.Fatalf("BEGIN TRAN: %s", r)
	}
	if r = mustOK(t, s, "COMMIT; COMMIT"); txEvents(r) != "tx: commit 0" || s.TranCount() != 0 {
		t.Fatalf("two commits: %s", r)
	}

	// OFF does not commit an open transaction, and then nothing begins one.
	mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('imp-off', 1)")
	r = mustOK(t, s, "SET IMPLICIT_TRANSACTIONS OFF")
	if txEvents(r) != "" || s.TranCount() != 1 || count("imp-off") != 0 {
		t.Fatalf("OFF ended the transaction: %s", r)
	}
	mustOK(t, s, "COMMIT")
	if count("imp-off") != 1 || scalar("SELECT 2 & @@OPTIONS") != int64(0) {
		t.Fatal("commit after OFF")
	}
	if r := mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('imp-auto', 1)"); txEvents(r) != "" || s.TranCount() != 0 || count("imp-auto") != 1 {
		t.Fatalf("autocommit after OFF: %s", r)
	}

	// Reset turns it off (and rolls back what it began).
	mustOK(t, s, "SET IMPLICIT_TRANSACTIONS ON; INSERT INTO test_table (name, value) VALUES ('imp-reset', 1)")
	if s.TranCount() != 1 {
		t.Fatal("no transaction before reset")
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if r := mustOK(t, s, "INSERT INTO test_table (name, value) VALUES ('imp-reset', 2); SELECT 2 & @@OPTIONS"); txEvents(r) != "" || s.TranCount() != 0 || r.sets()[0].rows[0][0] != int64(0) {
		t.Fatalf("after reset: %s", r)
	}
	if count("imp-reset") != 1 {
		t.Fatal("reset did not roll back the implicit transaction")
	}

	// SET ANSI_DEFAULTS ON implies IMPLICIT_TRANSACTIONS ON; CREATE DATABASE
	// never begins a transaction.
	mustOK(t, s, "SET ANSI_DEFAULTS ON")
	if r := mustOK(t, s, "CREATE DATABASE imp_db; SELECT 2 & @@OPTIONS"); txEvents(r) != "" || r.sets()[0].rows[0][0] != int64(2) {
		t.Fatalf("ANSI_DEFAULTS ON: %s", r)
	}
	mustOK(t, s, "SET ANSI_DEFAULTS OFF")
	if scalar("SELECT 2 & @@OPTIONS") != int64(0) {
		t.Fatal("ANSI_DEFAULTS OFF")
	}
	if r := run(t, s, "SET IMPLICIT_TRANSACTIONS MAYBE"); len(r.errors()) != 1 || r.errors()[0].Number != ErrSyntax {
		t.Fatalf("bad value: %s", r)
	}
}
