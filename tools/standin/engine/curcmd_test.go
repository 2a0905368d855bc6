package engine

import "testing"

// TestCurCmd: each statement's DONE carries SQL Server's CurCmd, and the
// DML statements a row count (what sqlcmd prints as "(1 row affected)").
func TestCurCmd(t *testing.T) {
	s := newSess(t, openTest(t), 51)
	r := mustOK(t, s, `CREATE TABLE cc (v INT);
INSERT INTO cc VALUES (1);
UPDATE cc SET v = 2;
SELECT v FROM cc;
DELETE FROM cc;
SET NOCOUNT OFF;
SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
BEGIN TRANSACTION;
COMMIT TRANSACTION;
BEGIN TRAN; ROLLBACK;
DROP TABLE cc;`)
	want := []struct {
		cmd   uint16
		count bool
	}{
		{CmdCreate, false}, {CmdInsert, true}, {CmdUpdate, true}, {CmdSelect, true}, {CmdDelete, true},
		{CmdSet, false}, {CmdSetIsolation, false}, {CmdBeginTran, false}, {CmdCommit, false},
		{CmdBeginTran, false}, {CmdRollback, false}, {CmdDrop, false},
	}
	ds := r.dones()
	if len(ds) != len(want) {
		t.Fatalf("%d DONEs, want %d: %s", len(ds), len(want), r)
	}
	for i, w := range want {
		if ds[i].Cmd != w.cmd || ds[i].HasCount != w.count || (w.count && ds[i].RowCount != 1) {
			t.Errorf("statement %d: %+v, want CurCmd 0x%02X count %v", i+1, ds[i], w.cmd, w.count)
		}
	}
}

// TestDatatypeInfo: sp_datatype_info_100, called bare as FreeTDS ODBC does
// ("sp_datatype_info_100 93,3") or with EXEC, lists the asked type's rows;
// the first TIMESTAMP row is DATETIME with PRECISION 23.
func TestDatatypeInfo(t *testing.T) {
	s := newSess(t, openTest(t), 51)
	for _, q := range []string{"sp_datatype_info_100 93,3", "EXEC sp_datatype_info_100 93, 3"} {
		r := mustOK(t, s, q)
		sets := r.sets()
		if len(sets) != 1 || len(sets[0].rows) != 3 || sets[0].rows[0][0] != "datetime" || sets[0].rows[0][2] != int64(23) {
			t.Fatalf("%q: %s", q, r)
		}
	}
	for typ, size := range map[string]int64{"-9": 4000, "12": 8000, "-3": 8000} {
		r := mustOK(t, s, "sp_datatype_info_100 "+typ+",3")
		if sets := r.sets(); len(sets) != 1 || len(sets[0].rows) != 1 || sets[0].rows[0][2] != size {
			t.Errorf("type %s: %s", typ, r)
		}
	}
	if r := run(t, s, "sp_no_such_proc 1"); len(r.errors()) != 1 || r.errors()[0].Number != ErrProcNotFound {
		t.Errorf("unknown procedure: %s", r)
	}
}
