package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// event is one call recorded by recSink.
type event struct {
	kind   string // columns, row, done, error, info, tx, database
	cols   []Column
	row    []any
	done   Done
	err    *SQLError
	number int32
	msg    string
	tx     TxEvent
	count  int
}

// recSink records every call.
type recSink struct{ ev []event }

func (r *recSink) Columns(c []Column) error {
	r.ev = append(r.ev, event{kind: "columns", cols: append([]Column(nil), c...)})
	return nil
}
func (r *recSink) Row(v []any) error { r.ev = append(r.ev, event{kind: "row", row: v}); return nil }
func (r *recSink) Done(d Done) error { r.ev = append(r.ev, event{kind: "done", done: d}); return nil }
func (r *recSink) Error(e *SQLError) error {
	r.ev = append(r.ev, event{kind: "error", err: e})
	return nil
}
func (r *recSink) Info(n int32, m string) error {
	r.ev = append(r.ev, event{kind: "info", number: n, msg: m})
	return nil
}
func (r *recSink) Tx(ev TxEvent, n int) error {
	r.ev = append(r.ev, event{kind: "tx", tx: ev, count: n})
	return nil
}
func (r *recSink) Database(n string) error {
	r.ev = append(r.ev, event{kind: "database", msg: n})
	return nil
}

// resultSet is one Columns call with its rows and Done.
type resultSet struct {
	cols []Column
	rows [][]any
	done Done
}

func (r *recSink) sets() []resultSet {
	var out []resultSet
	var cur *resultSet
	for _, e := range r.ev {
		switch e.kind {
		case "columns":
			out = append(out, resultSet{cols: e.cols})
			cur = &out[len(out)-1]
		case "row":
			cur.rows = append(cur.rows, e.row)
		case "done":
			if cur != nil {
				cur.done = e.done
				cur = nil
			}
		}
	}
	return out
}

func (r *recSink) errors() []*SQLError {
	var out []*SQLError
	for _, e := range r.ev {
		if e.kind == "error" {
			out = append(out, e.err)
		}
	}
	return out
}

func (r *recSink) dones() []Done {
	var out []Done
	for _, e := range r.ev {
		if e.kind == "done" {
			out = append(out, e.done)
		}
	}
	return out
}

func (r *recSink) String() string {
	var b strings.Builder
	for _, e := range r.ev {
		switch e.kind {
		case "columns":
			fmt.Fprintf(&b, "columns:")
			for _, c := range e.cols {
				fmt.Fprintf(&b, " %q:%s", c.Name, c.TypeName())
			}
			b.WriteByte('\n')
		case "row":
			fmt.Fprintf(&b, "row: %#v\n", e.row)
		case "done":
			fmt.Fprintf(&b, "done: %+v\n", e.done)
		case "error":
			fmt.Fprintf(&b, "error: %d %s (line %d)\n", e.err.Number, e.err.Message, e.err.Line)
		case "info":
			fmt.Fprintf(&b, "info: %d %s\n", e.number, e.msg)
		case "tx":
			fmt.Fprintf(&b, "tx: %s %d\n", e.tx, e.count)
		case "database":
			fmt.Fprintf(&b, "database: %s\n", e.msg)
		}
	}
	return b.String()
}

const runbookInit = `
CREATE TABLE test_table (id INT IDENTITY(1,1) PRIMARY KEY, name NVARCHAR(100), value INT);
INSERT INTO test_table (name, value) VALUES ('seed-1', 1), ('seed-2', 2), ('seed-3', 3);
`

func openTest(t testing.TB) *Engine {
	t.Helper()
	e, err := Open(Config{Dir: t.TempDir(), Databases: map[string]string{"tenant_db": runbookInit, "other_db": ""}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newSess(t testing.TB, e *Engine, spid uint16) *Session {
	t.Helper()
	s, err := e.NewSession(SessionInfo{ServerName: "bucket-1", SPID: spid, Login: "sa"}, "tenant_db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// run executes a batch and returns the recording.
func run(t testing.TB, s *Session, sql string, params ...Param) *recSink {
	t.Helper()
	r := &recSink{}
	if err := s.ExecBatch(context.Background(), sql, params, r); err != nil {
		t.Fatalf("ExecBatch(%q): %v", sql, err)
	}
	return r
}

// mustOK runs a batch that must not report errors.
func mustOK(t testing.TB, s *Session, sql string, params ...Param) *recSink {
	t.Helper()
	r := run(t, s, sql, params...)
	if errs := r.errors(); len(errs) > 0 {
		t.Fatalf("batch %q: unexpected error %v\n%s", sql, errs[0], r)
	}
	return r
}
