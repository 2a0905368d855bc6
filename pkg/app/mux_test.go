package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// muxConfig is testenv's config with pool_mode transaction and
// max_connections max on bucket-001, where every login goes. Its queue
// holds 1,000: every request waiting for a backend waits in it.
func muxConfig(t testing.TB, buckets []*server.Server, max int) *config.Config {
	cfg := pooledConfig(t, buckets)
	for i := range cfg.Buckets {
		cfg.Buckets[i].PoolMode = config.PoolModeTransaction
	}
	cfg.Buckets[0].MaxConnections = max
	cfg.Buckets[0].MaxQueueSize = 1000
	return cfg
}

// goDB is a go-mssqldb (database/sql) pool of up to n connections to addr
// as sa of bucket-001, application app.
func goDB(t testing.TB, addr, app string, n int) *sql.DB {
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", testenv.Passwords[0]), Host: addr,
		RawQuery: url.Values{"database": {"tenant_db"}, "encrypt": {"disable"}, "dial timeout": {"30"}, "app name": {app}}.Encode()}
	db, err := sql.Open("sqlserver", u.String())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestMuxManySessionsFewBackends: 120 go-mssqldb sessions, each held open
// for the whole test, over a bucket with max_connections 5: every
// request and transaction succeeds, the stand-in never has more than 5
// sessions, each session sees only its own rows, and unpinned sessions'
// requests land on different backends (several @@SPIDs per session).
func TestMuxManySessionsFewBackends(t *testing.T) {
	const sessions, max, rounds = 120, 5, 4
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, muxConfig(t, buckets, max))
	db := goDB(t, a.Addr(), "mux-many", sessions)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conns := make([]*sql.Conn, sessions)
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	tag := fmt.Sprintf("mux-%d", time.Now().UnixNano())
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	spids := make([]map[int64]bool, sessions)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spids[i] = map[int64]bool{}
			name := fmt.Sprintf("%s-%d", tag, i)
			for r := range rounds {
				var spid int64
				if err := c.QueryRowContext(ctx, "SELECT @@SPID").Scan(&spid); err != nil {
					errs <- fmt.Errorf("session %d round %d: SELECT @@SPID: %w", i, r, err)
					return
				}
				spids[i][spid] = true
				tx, err := c.BeginTx(ctx, nil)
				if err != nil {
					errs <- fmt.Errorf("session %d: begin: %w", i, err)
					return
				}
				if _, err := tx.ExecContext(ctx, "INSERT INTO test_table (name, value) VALUES (@p1, @p2)", name, r); err != nil {
					errs <- fmt.Errorf("session %d: insert: %w", i, err)
					tx.Rollback()
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- fmt.Errorf("session %d: commit: %w", i, err)
					return
				}
				var n int
				if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM test_table WHERE name = @p1", name).Scan(&n); err != nil {
					errs <- fmt.Errorf("session %d: count: %w", i, err)
					return
				}
				if n != r+1 {
					errs <- fmt.Errorf("session %d round %d sees %d of its rows", i, r, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := buckets[0].Stats()
	if st.Peak > max {
		t.Errorf("the stand-in had %d sessions at once, max_connections %d", st.Peak, max)
	}
	moved := 0
	for _, m := range spids {
		if len(m) > 1 {
			moved++
		}
	}
	if moved == 0 {
		t.Errorf("no session's requests landed on more than one backend")
	}
	t.Logf("%d client sessions over a peak of %d backend sessions (%d logins at the stand-in); %d of %d sessions saw more than one @@SPID",
		sessions, st.Peak, st.Total, moved, sessions)
}

// muxRPC sends one RPC call on c and reads its answer.
func muxRPC(t testing.TB, c *tdsclient.Conn, call tds.RPCCall) *tdsclient.Result {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if err := c.SendMessage(tds.PacketRPC, 0, tds.AppendRPC(nil, nil, []tds.RPCCall{call})); err != nil {
		t.Fatal(err)
	}
	r, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rpcInt(v int64) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeIntN, Size: 4}, Value: tds.EncodeInt(v, 4)}
}

func rpcNVarChar(v string) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeNVarChar, Size: 8000, Collation: tds.DefaultCollation}, Value: tds.EncodeUCS2(v)}
}

// TestMuxIsolationPerPinReason: five go-mssqldb and raw-TDS sessions each
// set one kind of session state and stay connected — a #temp table, SET
// LANGUAGE (replayed, not pinned), an open transaction with an
// uncommitted insert, a prepared statement (sp_prepare), EXECUTE AS —
// while every real client runs requests on the same bucket (max 5). No
// real client sees any of that state; afterwards each holder still has
// its own: the pinned ones on the same backend (same @@SPID), the
// language on whatever backend its request lands on (SET replay).
func TestMuxIsolationPerPinReason(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	cfg := muxConfig(t, buckets, 5)
	cfg.MetricsListen = "127.0.0.1:0"
	a := testenv.Proxy(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	tag := fmt.Sprintf("pin-%d", time.Now().UnixNano())
	db := goDB(t, a.Addr(), "mux-pin", 5)
	hold := func() *sql.Conn {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	scalar := func(c *sql.Conn, q string, args ...any) any {
		t.Helper()
		var v any
		if err := c.QueryRowContext(ctx, q, args...).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return v
	}
	exec := func(c *sql.Conn, q string) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	temp := hold()
	exec(temp, "CREATE TABLE #pin (a int); INSERT INTO #pin VALUES (7)")
	tempSPID := scalar(temp, "SELECT @@SPID")

	lang := hold()
	exec(lang, "SET LANGUAGE Deutsch")

	tran := hold()
	tx, err := tran.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO test_table (name, value) VALUES (@p1, 1)", tag); err != nil {
		t.Fatal(err)
	}

	execAs := hold()
	execAs.ExecContext(ctx, "EXECUTE AS USER = 'dbo'") // the stand-in may refuse it; the session pins on the text
	execAsSPID := scalar(execAs, "SELECT @@SPID")

	prep, err := tdsclient.Dial(ctx, tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "mux-pin", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer prep.Close()
	r := muxRPC(t, prep, tds.RPCCall{ProcID: tds.ProcPrepare, Params: []tds.RPCParam{
		{Name: "@handle", Status: tds.ParamByRef, Type: tds.TypeInfo{Type: tds.TypeIntN, Size: 4}},
		rpcNVarChar("@P0 INT"), rpcNVarChar("SELECT @P0 * 2 AS y, @@SPID AS spid"), rpcInt(1),
	}})
	var handle int64
	for _, tok := range r.Tokens {
		if tok.Return != nil {
			v, _ := tds.DecodeValue(&tok.Return.Type, tok.Return.Value)
			handle, _ = v.(int64)
		}
	}
	if handle == 0 {
		t.Fatalf("sp_prepare: no handle (%v)", r.Errors)
	}
	prepSPID := mustExec(t, prep, "SELECT @@SPID").Scalar()

	// Every real client, on the same bucket, sees none of it.
	host, port := hostPort(t, a.Addr())
	for _, name := range clients.All {
		spec := clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "mux-pin",
			Steps: []clients.Step{
				{Op: clients.OpQuery, SQL: "SELECT a FROM #pin"},
				{Op: clients.OpQuery, SQL: "SELECT @@LANGUAGE AS lang"},
				{Op: clients.OpQuery, SQL: fmt.Sprintf("SELECT COUNT(*) AS n FROM test_table WITH (NOLOCK) WHERE name = '%s'", tag)},
				{Op: clients.OpQuery, SQL: "SELECT @@TRANCOUNT AS tc"},
				{Op: clients.OpQuery, SQL: "SELECT SUSER_NAME() AS u"},
			}}
		res, err := clients.Run(ctx, name, spec)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Connected {
			t.Fatalf("%s: %v (stderr %s)", name, res.Err(), res.Stderr)
		}
		if e := res.Steps[0].Error; e == nil || e.Number != 208 {
			t.Errorf("%s sees another session's #temp table: %+v %v", name, e, res.Rows(0))
		}
		if l := res.Scalar(1); l != "us_english" {
			t.Errorf("%s: @@LANGUAGE %v", name, l)
		}
		if n := num(res.Scalar(2)); n != 0 {
			t.Errorf("%s sees another session's uncommitted insert (%v rows)", name, n)
		}
		if n := num(res.Scalar(3)); n != 0 {
			t.Errorf("%s: @@TRANCOUNT %v", name, n)
		}
		for _, i := range []int{1, 2, 3, 4} {
			if err := res.StepErr(i); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}

	// Each holder still has its state.
	if n := scalar(temp, "SELECT COUNT(*) FROM #pin"); num(n) != 1 {
		t.Errorf("the #temp holder lost its table (%v rows)", n)
	}
	if s := scalar(temp, "SELECT @@SPID"); num(s) != num(tempSPID) {
		t.Errorf("the #temp holder moved from SPID %v to %v: not pinned", tempSPID, s)
	}
	if l := scalar(lang, "SELECT @@LANGUAGE"); l != "Deutsch" {
		t.Errorf("the SET LANGUAGE session has %v after other sessions used the backends (not replayed)", l)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM test_table WHERE name = @p1", tag).Scan(&n); err != nil || n != 1 {
		t.Errorf("the transaction lost its insert: %d rows, %v", n, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Errorf("rollback: %v", err)
	}
	if s := scalar(execAs, "SELECT @@SPID"); num(s) != num(execAsSPID) {
		t.Errorf("the EXECUTE AS session moved from SPID %v to %v: not pinned", execAsSPID, s)
	}
	r = muxRPC(t, prep, tds.RPCCall{ProcID: tds.ProcExecute, Params: []tds.RPCParam{rpcInt(handle), rpcInt(21)}})
	if len(r.Errors) > 0 || len(r.Rows) != 1 || num(r.Rows[0][0]) != 42 || num(r.Rows[0][1]) != num(prepSPID) {
		t.Errorf("sp_execute of the prepared handle: %v %v (prepared on SPID %v)", r.Rows, r.Errors, prepSPID)
	}
	if st := buckets[0].Stats(); st.Peak > 5 {
		t.Errorf("the stand-in had %d sessions at once, max 5", st.Peak)
	}
	m := scrapeMetrics(t, a)
	for _, reason := range []string{"temp_table", "prepared", "execute_as"} {
		if v := m[fmt.Sprintf(`proxy_sessions_pinned_total{bucket="bucket-001",reason=%q}`, reason)]; v < 1 {
			t.Errorf("pinned by %s: %v", reason, v)
		}
	}
}

// TestMuxQueueTimeoutPerRequest: max_connections 1, queue_timeout 300ms.
// One go-mssqldb session holds the only backend in a transaction; another
// session's query gets 50004 after the queue timeout — that request only:
// the same connection's next query, once the transaction ended, succeeds.
func TestMuxQueueTimeoutPerRequest(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := muxConfig(t, buckets, 1)
	cfg.Buckets[0].QueueTimeout = 300 * time.Millisecond
	a := testenv.Proxy(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := goDB(t, a.Addr(), "mux-50004", 2)
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	waiter, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO test_table (name, value) VALUES ('mux-50004', 1)"); err != nil {
		t.Fatal(err)
	}
	var v int
	err = waiter.QueryRowContext(ctx, "SELECT 1").Scan(&v)
	if n := errNumber(err); n != 50004 {
		t.Fatalf("a request while the only backend is in another session's transaction: %v (number %d), want 50004", err, n)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := waiter.QueryRowContext(ctx, "SELECT 7").Scan(&v); err != nil || v != 7 {
		t.Fatalf("the session after its 50004: %v %v", v, err)
	}
	if st := buckets[0].Stats(); st.Peak > 1 {
		t.Errorf("stand-in peak %d, max 1", st.Peak)
	}
}

// TestMuxAttention: an ATTENTION with no request in flight is answered
// DONE_ATTN by tdsgate (the backend never sees it); one sent while a
// request runs goes to that request's backend, which cancels it; the
// session then goes on, and go-mssqldb's own cancel (a context deadline)
// works the same way.
func TestMuxAttention(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, muxConfig(t, buckets, 2))
	c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "mux-attn", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	mustExec(t, c, "SELECT 1")

	// No request in flight.
	attns := buckets[0].Stats().Attns
	if err := c.Attention(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Read()
	if err != nil || !r.Attention {
		t.Fatalf("ATTENTION with nothing in flight: %+v %v", r, err)
	}
	if n := buckets[0].Stats().Attns; n != attns {
		t.Errorf("the backend saw %d ATTENTIONs, want none (tdsgate answers)", n-attns)
	}
	if v := mustExec(t, c, "SELECT 2").Scalar(); num(v) != 2 {
		t.Fatalf("after the ATTENTION: %v", v)
	}

	// A request in flight: WAITFOR 10 s, cancelled.
	start := time.Now()
	if err := c.Send("WAITFOR DELAY '00:00:10'; SELECT 3", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := c.Attention(); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if r.Attention {
			break
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the cancelled WAITFOR took %v", d)
	}
	if n := buckets[0].Stats().Attns; n != attns+1 {
		t.Errorf("the backend saw %d ATTENTIONs, want 1", n-attns)
	}
	if v := mustExec(t, c, "SELECT 4").Scalar(); num(v) != 4 {
		t.Fatalf("after the cancel: %v", v)
	}

	// go-mssqldb cancels with ATTENTION when its context ends (and then
	// drops its connection, as it does against the stand-in directly: the
	// next query logs in again).
	attns = buckets[0].Stats().Attns
	db := goDB(t, a.Addr(), "mux-attn-go", 1)
	gc, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = gc.ExecContext(qctx, "WAITFOR DELAY '00:00:10'")
	qcancel()
	gc.Close()
	if err == nil {
		t.Fatal("the cancelled WAITFOR succeeded")
	}
	var v int
	if err := db.QueryRowContext(context.Background(), "SELECT 5").Scan(&v); err != nil || v != 5 {
		t.Fatalf("go-mssqldb after its cancel: %v %v", v, err)
	}
	if n := buckets[0].Stats().Attns; n != attns+1 {
		t.Errorf("go-mssqldb's cancel: the backend saw %d ATTENTIONs, want 1", n-attns)
	}
	if v := mustExec(t, c, "SELECT 6").Scalar(); num(v) != 6 {
		t.Fatalf("the raw session after go-mssqldb's cancel: %v", v)
	}
	if st := buckets[0].Stats(); st.Peak > 2 {
		t.Errorf("stand-in peak %d, max 2", st.Peak)
	}
}
