package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestMultiplexIsolation is issue 14's isolation figure, with real
// clients over one bucket of pool_mode: transaction (max 8):
//
//   - holders set session state and keep it across a pause while other
//     sessions borrow the backends: SET LANGUAGE (replayed, not pinned),
//     a #temp table, an uncommitted INSERT in a driver transaction, a
//     prepared statement (jTDS: sp_prepare, then sp_execute of the same
//     handle); each holder finds its own state after the pause;
//   - observers, meanwhile, never see any of it: @@LANGUAGE stays
//     us_english, #iso_tmp does not exist (error 208), the uncommitted row
//     is not there;
//   - movers (two unpinned sessions of every client at once) run SELECT
//     @@SPID forty times: for every client, a session's requests land on
//     more than one backend, or two sessions share one (which of the two
//     depends on contention: an idle connection goes to the next borrower);
//     a transaction of their own, counted back, shows exactly their row.
//
// EXECUTE AS and cursors are not in it: the stand-in supports neither.
func TestMultiplexIsolation(t *testing.T) {
	const moverRequests = 40
	if testing.Short() {
		t.Skip("isolation scenario with real clients")
	}
	srv, host, p, _ := muxSetup(t, 8, 100, false)
	spec := func(steps ...clients.Step) clients.Spec {
		return clients.Spec{Host: host, Port: p, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", TimeoutS: 30, Steps: steps}
	}
	q := func(sql string) clients.Step { return clients.Step{Op: clients.OpQuery, SQL: sql} }
	pause := clients.Step{Op: clients.OpSleep, MS: 4000}
	const uncommitted = "iso-uncommitted"

	type job struct {
		role  string
		name  clients.Name
		spec  clients.Spec
		check func(r clients.Result) error
	}
	scalar := func(r clients.Result, i int) string { return fmt.Sprint(r.Scalar(i)) }
	jobs := []job{
		{"holder: SET LANGUAGE", clients.Pytds, spec(q("SET LANGUAGE Deutsch"), pause, q("SELECT @@LANGUAGE AS lang")),
			func(r clients.Result) error {
				if err := r.Err(); err != nil {
					return err
				}
				if got := scalar(r, 2); got != "Deutsch" {
					return fmt.Errorf("after the pause @@LANGUAGE is %q, want its own Deutsch", got)
				}
				return nil
			}},
		{"holder: #temp", clients.GoMSSQL, spec(q("CREATE TABLE #iso_tmp (v INT); INSERT INTO #iso_tmp VALUES (42)"), pause, q("SELECT v FROM #iso_tmp")),
			func(r clients.Result) error {
				if err := r.Err(); err != nil {
					return err
				}
				if got := scalar(r, 2); got != "42" {
					return fmt.Errorf("after the pause #iso_tmp holds %s, want 42", got)
				}
				return nil
			}},
		{"holder: uncommitted INSERT", clients.Tedious, spec(clients.Step{Op: clients.OpBegin},
			q("INSERT INTO test_table (name, value) VALUES ('"+uncommitted+"', 1)"), pause,
			q("SELECT COUNT(*) FROM test_table WHERE name = '"+uncommitted+"'"), clients.Step{Op: clients.OpRollback},
			q("SELECT COUNT(*) FROM test_table WHERE name = '"+uncommitted+"'")),
			func(r clients.Result) error {
				if err := r.Err(); err != nil {
					return err
				}
				if in, after := scalar(r, 3), scalar(r, 5); in != "1" || after != "0" {
					return fmt.Errorf("its own row: %s inside its transaction (want 1), %s after the rollback (want 0)", in, after)
				}
				return nil
			}},
		{"holder: prepared (sp_prepare)", clients.JTDS, spec(clients.Step{Op: clients.OpParam, SQL: "SELECT @p1 + 1 AS x", Params: []any{41}}, pause,
			clients.Step{Op: clients.OpParam, SQL: "SELECT @p1 + 1 AS x", Params: []any{1}}),
			func(r clients.Result) error {
				if err := r.Err(); err != nil {
					return err
				}
				if a, b := scalar(r, 0), scalar(r, 2); a != "42" || b != "2" {
					return fmt.Errorf("prepared statement answered %s and %s, want 42 and 2", a, b)
				}
				return nil
			}},
	}
	// Observers start once the holders have set their state, and look for
	// it from every kind of client.
	var observe []clients.Step
	for i := 0; i < 8; i++ {
		observe = append(observe, q("SELECT @@LANGUAGE AS lang"), q("SELECT COUNT(*) FROM test_table WHERE name = '"+uncommitted+"'"),
			q("SELECT v FROM #iso_tmp"), clients.Step{Op: clients.OpSleep, MS: 150})
	}
	for _, name := range []clients.Name{clients.TSQL, clients.PyODBC, clients.GoMSSQL, clients.Tedious} {
		jobs = append(jobs, job{"observer", name, spec(append([]clients.Step{{Op: clients.OpSleep, MS: 1500}}, observe...)...),
			func(r clients.Result) error {
				if !r.Connected {
					return r.Err()
				}
				for i := 1; i < len(r.Steps); i += 4 {
					if err := r.StepErr(i); err != nil {
						return err
					}
					if got := scalar(r, i); got != "us_english" {
						return fmt.Errorf("step %d sees @@LANGUAGE %q: another session's SET LANGUAGE leaked", i, got)
					}
					if got := scalar(r, i+1); got != "0" {
						return fmt.Errorf("step %d sees %s uncommitted rows of another session", i+1, got)
					}
					if e := r.Steps[i+2].Error; e == nil || e.Number != 208 {
						return fmt.Errorf("step %d: SELECT FROM another session's #iso_tmp gave %v, want error 208", i+2, r.StepErr(i+2))
					}
				}
				return nil
			}})
	}
	// Movers: unpinned sessions, two of each client at once. A client's
	// sessions share a sub-pool (same login, application, options), so
	// they take turns on its connections: each request lands on whichever
	// is free.
	var moveMu sync.Mutex
	spidsOf := map[clients.Name][]map[string]bool{} // backend SPIDs each mover saw
	for _, name := range clients.All {
		for k := 0; k < 2; k++ {
			tag := fmt.Sprintf("iso-mover-%s-%d", name, k)
			var steps []clients.Step
			// 40 requests 100 ms apart: long enough that the two
			// movers of a client overlap despite process start-up
			// jitter (a JVM takes seconds on a loaded machine).
			for i := 0; i < moverRequests; i++ {
				steps = append(steps, q("SELECT @@SPID AS spid"), clients.Step{Op: clients.OpSleep, MS: 100})
			}
			steps = append(steps, clients.Step{Op: clients.OpBegin}, q("INSERT INTO test_table (name, value) VALUES ('"+tag+"', 1)"),
				clients.Step{Op: clients.OpCommit}, q("SELECT COUNT(*) FROM test_table WHERE name = '"+tag+"'"))
			jobs = append(jobs, job{"mover", name, spec(steps...), func(r clients.Result) error {
				if err := r.Err(); err != nil {
					return err
				}
				spids := map[string]bool{}
				for i := 0; i < 2*moverRequests; i += 2 {
					spids[scalar(r, i)] = true
				}
				moveMu.Lock()
				spidsOf[name] = append(spidsOf[name], spids)
				moveMu.Unlock()
				if got := scalar(r, len(r.Steps)-1); got != "1" {
					return fmt.Errorf("counts %s rows of its own, want 1", got)
				}
				return nil
			}})
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			r, err := clients.Run(ctx, j.name, j.spec)
			if err == nil {
				err = j.check(r)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s (%s): %w\n%s", j.role, j.name, err, tail(r.Stderr))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// A session is not tied to a backend: one mover's consecutive requests
	// ran on two backends, or two movers ran on the same backend.
	for _, name := range clients.All {
		sets := spidsOf[name]
		moved, shared := false, false
		seen := map[string]int{}
		for _, set := range sets {
			moved = moved || len(set) >= 2
			for s := range set {
				seen[s]++
				shared = shared || seen[s] >= 2
			}
		}
		t.Logf("%s movers: backend SPIDs per session %v (a session on several backends: %v; sessions sharing a backend: %v)", name, sets, moved, shared)
		if len(sets) > 0 && !moved && !shared {
			t.Errorf("%s: every unpinned session stayed on a backend of its own: %v", name, sets)
		}
	}
	if st := srv.Stats(); st.Peak > 8 {
		t.Errorf("the stand-in saw %d concurrent sessions; the bucket's max is 8", st.Peak)
	}
}
