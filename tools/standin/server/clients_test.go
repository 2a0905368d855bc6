package server_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

var updateMatrix = flag.Bool("update-matrix", false, "rewrite the client matrix in tools/standin/README.md")

// feature names one checked behaviour of the matrix; check reads it off
// a client's result.
type feature struct {
	name  string
	steps func(tag string) []clients.Step
	check func(r clients.Result, first int) error
	op    string // the op a client must support ("" = query)
	// notFor lists clients that cannot show this feature ("n/a").
	notFor []clients.Name
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case string:
		var f float64
		_, err := fmt.Sscan(x, &f)
		return f, err == nil
	}
	return 0, false
}

func wantScalar(r clients.Result, i int, want float64) error {
	if err := r.StepErr(i); err != nil {
		return err
	}
	got, ok := num(r.Scalar(i))
	if !ok || got != want {
		return fmt.Errorf("step %d: got %v, want %v", i, r.Scalar(i), want)
	}
	return nil
}

var features = []feature{
	{name: "select", steps: func(string) []clients.Step {
		return []clients.Step{{Op: "query", SQL: "SELECT 1 AS resultado"}}
	}, check: func(r clients.Result, i int) error { return wantScalar(r, i, 1) }},
	{name: "server name", steps: func(string) []clients.Step {
		return []clients.Step{{Op: "query", SQL: "SELECT 'bucket-1' AS bucket, @@SERVERNAME AS server"}}
	}, check: func(r clients.Result, i int) error {
		if err := r.StepErr(i); err != nil {
			return err
		}
		rows := r.Rows(i)
		if len(rows) != 1 || len(rows[0]) != 2 || rows[0][1] != "sqlserver-bucket-1" {
			return fmt.Errorf("rows %v", rows)
		}
		return nil
	}},
	{name: "crud", steps: func(tag string) []clients.Step {
		return []clients.Step{
			{Op: "query", SQL: fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s', 42);\nSELECT SCOPE_IDENTITY() AS inserted_id;", tag)},
			{Op: "query", SQL: "SELECT TOP 5 * FROM test_table ORDER BY id DESC;"},
			{Op: "query", SQL: fmt.Sprintf("UPDATE test_table SET value = 99 WHERE name = '%s';\nSELECT value FROM test_table WHERE name = '%s';", tag, tag)},
			{Op: "query", SQL: fmt.Sprintf("DELETE FROM test_table WHERE name = '%s';", tag)},
			{Op: "query", SQL: fmt.Sprintf("SELECT COUNT(*) FROM test_table WHERE name = '%s'", tag)},
		}
	}, check: func(r clients.Result, i int) error {
		for k := 0; k < 5; k++ {
			if err := r.StepErr(i + k); err != nil {
				return err
			}
		}
		if id, ok := num(r.Scalar(i)); !ok || id < 4 {
			return fmt.Errorf("SCOPE_IDENTITY() = %v", r.Scalar(i))
		}
		if n := len(r.Rows(i + 1)); n < 4 || n > 5 { // other clients insert and delete concurrently
			return fmt.Errorf("TOP 5 returned %d rows", n)
		}
		if err := wantScalar(r, i+2, 99); err != nil {
			return err
		}
		return wantScalar(r, i+4, 0)
	}},
	{name: "transaction", steps: func(tag string) []clients.Step {
		return []clients.Step{
			{Op: "begin"},
			{Op: "query", SQL: fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s-tx', 100); INSERT INTO test_table (name, value) VALUES ('%s-tx', 200);", tag, tag)},
			{Op: "commit"},
			{Op: "query", SQL: fmt.Sprintf("SELECT COUNT(*) FROM test_table WHERE name = '%s-tx'", tag)},
			{Op: "begin"},
			{Op: "query", SQL: fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s-tx', 300)", tag)},
			{Op: "rollback"},
			{Op: "query", SQL: fmt.Sprintf("SELECT COUNT(*) FROM test_table WHERE name = '%s-tx'", tag)},
			{Op: "query", SQL: "BEGIN TRANSACTION; SELECT @@TRANCOUNT; COMMIT TRANSACTION;"},
		}
	}, check: func(r clients.Result, i int) error {
		for k := 0; k < 9; k++ {
			if err := r.StepErr(i + k); err != nil {
				return err
			}
		}
		if err := wantScalar(r, i+3, 2); err != nil {
			return fmt.Errorf("after commit: %w", err)
		}
		if err := wantScalar(r, i+7, 2); err != nil {
			return fmt.Errorf("after rollback: %w", err)
		}
		return wantScalar(r, i+8, 1)
	}},
	{name: "parameterized", op: "param", steps: func(string) []clients.Step {
		return []clients.Step{{Op: "param", SQL: "SELECT @p1 + 1 AS x, @p2 AS s", Params: []any{41, "hé"}}}
	}, check: func(r clients.Result, i int) error {
		if err := wantScalar(r, i, 42); err != nil {
			return err
		}
		if rows := r.Rows(i); len(rows[0]) < 2 || rows[0][1] != "hé" {
			return fmt.Errorf("string parameter: %v", rows)
		}
		return nil
	}},
	// What the runbook's sqlcmd prints as "(1 row affected)": DONE_COUNT
	// with CurCmd INSERT/UPDATE/DELETE. FreeTDS tsql prints counts only
	// after result sets (tools/clients/README.md).
	{name: "rows affected", notFor: []clients.Name{clients.TSQL}, steps: func(tag string) []clients.Step {
		return []clients.Step{
			{Op: "query", SQL: fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s-ra', 1)", tag)},
			{Op: "query", SQL: fmt.Sprintf("UPDATE test_table SET value = 2 WHERE name = '%s-ra'", tag)},
			{Op: "query", SQL: fmt.Sprintf("DELETE FROM test_table WHERE name = '%s-ra'", tag)},
		}
	}, check: func(r clients.Result, i int) error {
		for k, verb := range []string{"INSERT", "UPDATE", "DELETE"} {
			if err := r.StepErr(i + k); err != nil {
				return err
			}
			if rc := r.Steps[i+k].RowCounts; len(rc) != 1 || rc[0] != 1 {
				return fmt.Errorf("%s: rows affected %v, want [1]", verb, rc)
			}
		}
		return nil
	}},
	{name: "sql error", steps: func(string) []clients.Step {
		return []clients.Step{{Op: "query", SQL: "SELECT * FROM no_such_table"}, {Op: "query", SQL: "SELECT 7"}}
	}, check: func(r clients.Result, i int) error {
		e := r.Steps[i].Error
		if e == nil || e.Number != 208 {
			return fmt.Errorf("error %v, want 208", e)
		}
		return wantScalar(r, i+1, 7)
	}},
	{name: "cancel", op: "cancel", steps: func(string) []clients.Step {
		return []clients.Step{{Op: "cancel", SQL: "WAITFOR DELAY '00:00:10'", AfterMS: 300}, {Op: "query", SQL: "SELECT 3"}}
	}, check: func(r clients.Result, i int) error {
		st := r.Steps[i]
		// jTDS sometimes ends the statement on the first of the two
		// answer messages and reports a normal completion, the DONE_ATTN
		// being read later (tools/clients/README.md): for jTDS, a
		// 10 s WAITFOR ending in well under 5 s is the cancel.
		canceled := st.Canceled || r.Client == clients.JTDS && st.OK && st.Error == nil
		if !canceled || st.MS > 5000 {
			return fmt.Errorf("canceled=%v after %.0f ms (error %v)", st.Canceled, st.MS, st.Error)
		}
		return wantScalar(r, i+1, 3)
	}},
}

// TestClientMatrix connects each real client directly to the stand-in,
// with each encryption mode it supports, and runs every feature.
func TestClientMatrix(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	cfg := server.RunbookConfig(1, "127.0.0.1:0")
	srv, err := server.Start(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ca, err := clients.WriteCAFile(t.TempDir(), srv.Certificate())
	if err != nil {
		t.Fatal(err)
	}

	type cell struct{ client, mode, feature, outcome string }
	var mu sync.Mutex
	var cells []cell
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for _, name := range clients.All {
		for _, mode := range []string{clients.EncryptNone, clients.EncryptLogin, clients.EncryptFull, clients.EncryptStrict} {
			if !clients.Supports(name, mode) {
				continue
			}
			name, mode := name, mode
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				tag := fmt.Sprintf("%s-%s-%d", name, mode, time.Now().UnixNano())
				var steps []clients.Step
				first := map[string]int{}
				var run []feature
				for _, f := range features {
					if f.op != "" && !clients.SupportsOp(name, f.op) || slices.Contains(f.notFor, name) {
						mu.Lock()
						cells = append(cells, cell{string(name), mode, f.name, "n/a"})
						mu.Unlock()
						continue
					}
					first[f.name] = len(steps)
					steps = append(steps, f.steps(tag)...)
					run = append(run, f)
				}
				spec := clients.Spec{Host: "127.0.0.1", Port: srv.Port(), User: "sa", Password: "YourStr0ngP@ssword1", Database: "tenant_db", Encrypt: mode, App: "standin-matrix", Steps: steps}
				if mode == clients.EncryptStrict {
					spec.CAFile = ca
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				res, err := clients.Run(ctx, name, spec)
				for _, f := range run {
					outcome := "pass"
					var ferr error
					switch {
					case err != nil:
						ferr = err
					case !res.Connected:
						ferr = fmt.Errorf("not connected: %v (stderr: %s)", res.LoginError, res.Stderr)
					default:
						ferr = f.check(res, first[f.name])
					}
					if ferr != nil {
						outcome = "FAIL"
						t.Errorf("%s / %s / %s: %v", name, mode, f.name, ferr)
					}
					mu.Lock()
					cells = append(cells, cell{string(name), mode, f.name, outcome})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()

	// The matrix, client × feature, one column per encryption mode.
	sort.Slice(cells, func(i, j int) bool {
		a, b := cells[i], cells[j]
		if a.client != b.client {
			return a.client < b.client
		}
		return a.feature < b.feature
	})
	var sb strings.Builder
	sb.WriteString("| client | feature | none | login | full | strict |\n|---|---|---|---|---|---|\n")
	type key struct{ client, feature string }
	rows := map[key]map[string]string{}
	var order []key
	for _, c := range cells {
		k := key{c.client, c.feature}
		if rows[k] == nil {
			rows[k] = map[string]string{}
			order = append(order, k)
		}
		rows[k][c.mode] = c.outcome
	}
	for _, k := range order {
		sb.WriteString("| " + k.client + " | " + k.feature + " |")
		for _, m := range []string{"none", "login", "full", "strict"} {
			v := rows[k][m]
			if v == "" {
				v = "—"
			}
			sb.WriteString(" " + v + " |")
		}
		sb.WriteString("\n")
	}
	t.Logf("client matrix:\n%s", sb.String())
	if *updateMatrix {
		readme := filepath.Join("..", "README.md")
		b, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		const begin, end = "<!-- matrix:begin -->\n", "<!-- matrix:end -->"
		s := string(b)
		i, j := strings.Index(s, begin), strings.Index(s, end)
		if i < 0 || j < i {
			t.Fatal("README.md has no matrix markers")
		}
		s = s[:i+len(begin)] + sb.String() + s[j:]
		if err := os.WriteFile(readme, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := srv.Stats()
	if st.Current != 0 {
		t.Errorf("sessions still open: %+v", st)
	}
}
