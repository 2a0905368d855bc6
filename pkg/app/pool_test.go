package app_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// pooledConfig is testenv's config for the stand-ins with pool_mode
// session on every bucket, and every login routed to bucket-001 without a
// credential rule (so that a wrong password reaches the pool).
func pooledConfig(t testing.TB, buckets []*server.Server) *config.Config {
	cfg := testenv.Config(t, buckets)
	for i := range cfg.Buckets {
		b := &cfg.Buckets[i]
		b.PoolMode = config.PoolModeSession
		b.IdleTimeout, b.MaxLifetime, b.ResetTimeout = time.Minute, 10*time.Minute, 2*time.Second
	}
	cfg.Routes = nil
	cfg.DefaultBucket = "bucket-001"
	return cfg
}

// poolOf is the pool of bucket-001 of a.
func poolOf(t testing.TB, a *app.App) *pool.Pool {
	p := a.Handler().Runtime().Buckets["bucket-001"].Pool
	if p == nil {
		t.Fatal("bucket-001 has no pool")
	}
	return p
}

func waitIdle(t testing.TB, p *pool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := p.Stats()
		if s.Idle == n && s.Resetting == 0 && s.Active == 0 && s.Login == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool: %+v, want %d idle and nothing else", s, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dialTDS(t testing.TB, a *app.App, pw string) (*tdsclient.Conn, error) {
	return tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: pw, Database: "tenant_db", App: "pool-test", Encrypt: tdsclient.EncryptLogin, Timeout: 5 * time.Second})
}

func mustExec(t testing.TB, c *tdsclient.Conn, sql string) *tdsclient.Result {
	t.Helper()
	r, err := c.Exec(sql, 0)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r
}

// TestPoolResetOnReuse: client A leaves a #temp table, a language, an open
// transaction with an insert; client B gets the same backend (same SPID)
// and none of it, and never sees the ENVCHANGE 18 that acknowledged the
// reset of its first request.
func TestPoolResetOnReuse(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)
	tag := fmt.Sprintf("pool-%d", time.Now().UnixNano())

	ca, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	spidA := mustExec(t, ca, "SELECT @@SPID").Scalar()
	r := mustExec(t, ca, fmt.Sprintf("CREATE TABLE #t (a int); INSERT INTO #t VALUES (1); SET LANGUAGE Deutsch; BEGIN TRANSACTION; INSERT INTO test_table (name, value) VALUES ('%s', 1)", tag))
	if len(r.Errors) > 0 {
		t.Fatalf("A: %v", r.Errors[0])
	}
	if l := mustExec(t, ca, "SELECT @@LANGUAGE, @@TRANCOUNT").Rows[0]; l[0] != "Deutsch" || fmt.Sprint(l[1]) != "1" {
		t.Fatalf("A: language, trancount = %v", l)
	}
	ca.Close()
	waitIdle(t, p, 1)
	st0 := buckets[0].Stats()

	cb, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	first := mustExec(t, cb, "SELECT @@SPID")
	for _, tok := range first.Tokens {
		if tok.EnvChange != nil && tok.EnvChange.Type == tds.EnvResetConnAck {
			t.Fatal("B saw the ENVCHANGE 18 of the reset tdsgate asked for")
		}
	}
	if spidB := first.Scalar(); fmt.Sprint(spidB) != fmt.Sprint(spidA) {
		t.Fatalf("B got SPID %v, A had %v: not the pooled backend", spidB, spidA)
	}
	r = mustExec(t, cb, "SELECT * FROM #t")
	if len(r.Errors) == 0 || r.Errors[0].Number != 208 {
		t.Fatalf("B sees A's #temp table: %v %v", r.Rows, r.Errors)
	}
	if l := mustExec(t, cb, "SELECT @@LANGUAGE").Scalar(); l != "us_english" {
		t.Fatalf("B's language %v", l)
	}
	if n := mustExec(t, cb, fmt.Sprintf("SELECT COUNT(*) FROM test_table WHERE name = '%s'", tag)).Scalar(); fmt.Sprint(n) != "0" {
		t.Fatalf("B sees A's uncommitted insert: %v rows", n)
	}
	if n := mustExec(t, cb, "SELECT @@TRANCOUNT").Scalar(); fmt.Sprint(n) != "0" {
		t.Fatalf("B's @@TRANCOUNT %v", n)
	}
	st := buckets[0].Stats()
	if st.Total != st0.Total || st.Accepted != st0.Accepted {
		t.Errorf("B's login reached the backend: %+v then %+v", st0, st)
	}
	if st.Resets <= st0.Resets {
		t.Errorf("no RESETCONNECTION served for B: %+v then %+v", st0, st)
	}
	if n := a.Handler().Relayed(relay.ModeFramed); n < 1 {
		t.Errorf("framed sessions %d", n)
	}
}

// TestPoolWrongPasswordsReachServer: with an idle pooled connection for
// the login, 300 wrong passwords are not judged by tdsgate: each one goes
// to the backend, whose failed-login counter shows all 300, and each
// client gets the server's own 18456 (its server name, not tdsgate's), so
// nothing tells a stranger that pooled connections exist. The pooled
// connection stays idle and the right password still reuses it; no slot
// is left behind.
func TestPoolWrongPasswordsReachServer(t *testing.T) {
	const wrong = 300
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)
	c, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "SELECT 1")
	c.Close()
	waitIdle(t, p, 1)
	st0 := buckets[0].Stats()

	// A few clients at a time, as a guesser would.
	var wg sync.WaitGroup
	errs := make(chan error, wrong)
	sem := make(chan struct{}, 8)
	for i := 0; i < wrong; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := dialTDS(t, a, fmt.Sprintf("not-%s-%d", testenv.Passwords[0], i))
			le, ok := err.(*tdsclient.LoginError)
			switch {
			case !ok:
				errs <- fmt.Errorf("wrong password %d: %v", i, err)
			case le.Number != 18456 || le.Class != 14 || le.Message != "Login failed for user 'sa'." || le.ServerName != buckets[0].Name():
				errs <- fmt.Errorf("wrong password %d: %+v, want the stand-in's own 18456", i, *le.ErrorToken)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := buckets[0].Stats(); st.Failed-st0.Failed != wrong {
		t.Fatalf("the stand-in counted %d failed logins for %d wrong passwords", st.Failed-st0.Failed, wrong)
	}
	// Each refused login's connection closes once its client has the
	// refusal; the pooled one stays idle throughout.
	testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Active+s.Login+s.Resetting == 0 })
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("pool after the wrong passwords: %+v", s)
	}
	// The right password still gets the pooled connection.
	reusesTheOne(t, a, buckets[0], testenv.Passwords[0])
}

// reusesTheOne: a login with pw reuses the one idle pooled connection of
// bucket-001 (the stand-in sees no new login), which is idle again after,
// holding the bucket's only slot in use.
func reusesTheOne(t *testing.T, a *app.App, stand *server.Server, pw string) {
	t.Helper()
	st := stand.Stats()
	c, err := dialTDS(t, a, pw)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "SELECT 1")
	c.Close()
	if s := stand.Stats(); s.Total != st.Total {
		t.Fatalf("the password did not reuse the pooled connection: %+v then %+v", st, s)
	}
	waitIdle(t, poolOf(t, a), 1)
	if s := a.Limiter().Snapshot()[0]; s.InUse != 1 {
		t.Fatalf("slots in use %d, want 1 (the idle connection)", s.InUse)
	}
}

// TestPoolPasswordRotation: the password is changed at the server while
// connections accepted with the old one are idle in the pool. The new
// password works at once through the proxy (it is a pool miss, the server
// accepts it), the idle old-credential connections are closed at that
// login (the stand-in's session count drops), the old password is then
// refused by the server itself, and the new one reuses.
func TestPoolPasswordRotation(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)
	old, next := testenv.Passwords[0], "R0tated-"+testenv.Passwords[0]
	var held []*tdsclient.Conn
	for i := 0; i < 3; i++ {
		c, err := dialTDS(t, a, old)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, c, "SELECT 1")
		held = append(held, c)
	}
	for _, c := range held {
		c.Close()
	}
	waitIdle(t, p, 3)
	if cur := buckets[0].Stats().Current; cur != 3 {
		t.Fatalf("stand-in sessions %d, want 3", cur)
	}

	buckets[0].SetPassword("sa", next)
	c, err := dialTDS(t, a, next)
	if err != nil {
		t.Fatalf("the new password through the proxy, right after the change: %v", err)
	}
	// At once: the old credential's idle connections are gone while the
	// new client is still logged in.
	testenv.WaitUntil(t, func() bool { return p.Stats().Idle == 0 && buckets[0].Stats().Current == 1 })
	mustExec(t, c, "SELECT 1")
	c.Close()
	waitIdle(t, p, 1)

	_, err = dialTDS(t, a, old)
	if le, ok := err.(*tdsclient.LoginError); !ok || le.Number != 18456 || le.ServerName != buckets[0].Name() {
		t.Fatalf("the old password after the change: %v, want the server's 18456", err)
	}
	reusesTheOne(t, a, buckets[0], next)
}

// TestPoolCancelOnLeave: a client that leaves in the middle of a WAITFOR
// leaves a backend that is made safe (ATTENTION, DONE_ATTN, rollback) or
// closed, never one with output pending: the next client gets exactly
// its own answer.
func TestPoolCancelOnLeave(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)

	for _, wait := range []bool{false, true} {
		ca, err := dialTDS(t, a, testenv.Passwords[0])
		if err != nil {
			t.Fatal(err)
		}
		spidA := mustExec(t, ca, "SELECT @@SPID").Scalar()
		idle := p.Stats().Idle
		if err := ca.Send("WAITFOR DELAY '00:00:05'; SELECT 'A-late' AS x", 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		ca.Close()
		if wait {
			// Wait for the clean-up: B must then reuse A's backend (the
			// most recently idle).
			waitIdle(t, p, idle+1)
		}
		start := time.Now()
		cb, err := dialTDS(t, a, testenv.Passwords[0])
		if err != nil {
			t.Fatal(err)
		}
		r := mustExec(t, cb, "SELECT 1 AS b")
		if len(r.Rows) != 1 || fmt.Sprint(r.Rows[0][0]) != "1" || len(r.Errors) > 0 || r.Attention {
			t.Fatalf("wait=%v: B got %v %v attention=%v", wait, r.Rows, r.Errors, r.Attention)
		}
		spidB := mustExec(t, cb, "SELECT @@SPID").Scalar()
		if wait && fmt.Sprint(spidB) != fmt.Sprint(spidA) {
			t.Fatalf("B got SPID %v, A had %v", spidB, spidA)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("wait=%v: B waited %v", wait, time.Since(start))
		}
		cb.Close()
		testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Active+s.Resetting+s.Login == 0 })
	}
	if st := buckets[0].Stats(); st.Attns < 2 {
		t.Fatalf("stand-in served %d ATTENTIONs, want 2", st.Attns)
	}
}

// TestPoolModeNoneUnchanged: without pool_mode the session splices and
// closes its backend as before.
func TestPoolModeNoneUnchanged(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, testenv.Config(t, buckets))
	if a.Handler().Runtime().Buckets["bucket-001"].Pool != nil {
		t.Fatal("pool without pool_mode session")
	}
	c, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "SELECT 1")
	c.Close()
	// The stand-in counts the session out before it closes its socket,
	// so the proxy's relay may end (and be counted) a moment later.
	testenv.WaitUntil(t, func() bool {
		return buckets[0].Stats().Current == 0 && a.Handler().Relayed(relay.ModeSplice)+a.Handler().Relayed(relay.ModeFramed) >= 1
	})
	if a.Handler().Relayed(relay.ModeSplice) != 1 {
		t.Fatal("not spliced")
	}
}

// TestPoolIsolationRealClients: with every real client, client A creates
// a #temp table, changes the language and leaves a transaction open with
// an insert, then disconnects; client B, same login, gets the same
// backend session (same @@SPID) and none of it: #temp gone (208),
// us_english, no row, @@TRANCOUNT 0.
func TestPoolIsolationRealClients(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)
	host, port := hostPort(t, a.Addr())
	for _, name := range clients.All {
		t.Run(string(name), func(t *testing.T) {
			tag := fmt.Sprintf("iso-%s-%d", name, time.Now().UnixNano())
			// App names the sub-pool: each client's A and B share one.
			spec := clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "iso-" + string(name)}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			sa := spec
			sa.Steps = []clients.Step{
				{Op: clients.OpQuery, SQL: "SELECT @@SPID AS spid"},
				{Op: clients.OpQuery, SQL: "CREATE TABLE #iso (a int); INSERT INTO #iso VALUES (1)"},
				{Op: clients.OpQuery, SQL: "SET LANGUAGE Deutsch"},
				{Op: clients.OpBegin},
				{Op: clients.OpQuery, SQL: fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s', 1)", tag)},
				{Op: clients.OpQuery, SQL: "SELECT @@LANGUAGE AS lang, @@TRANCOUNT AS tc, (SELECT COUNT(*) FROM #iso) AS t"},
			}
			ra, err := clients.Run(ctx, name, sa)
			if err != nil {
				t.Fatal(err)
			}
			if err := ra.Err(); err != nil {
				t.Fatalf("A: %v (stderr %s)", err, ra.Stderr)
			}
			if rows := ra.Rows(5); len(rows) != 1 || rows[0][0] != "Deutsch" || num(rows[0][1]) != 1 || num(rows[0][2]) != 1 {
				t.Fatalf("A's state before leaving: %v", rows)
			}
			spidA := num(ra.Scalar(0))
			// A's backend is back in the pool once made safe.
			testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Active+s.Resetting+s.Login == 0 })

			sb := spec
			sb.Steps = []clients.Step{
				{Op: clients.OpQuery, SQL: "SELECT @@SPID AS spid"},
				{Op: clients.OpQuery, SQL: "SELECT a FROM #iso"},
				{Op: clients.OpQuery, SQL: "SELECT @@LANGUAGE AS lang"},
				{Op: clients.OpQuery, SQL: fmt.Sprintf("SELECT COUNT(*) AS n FROM test_table WHERE name = '%s'", tag)},
				{Op: clients.OpQuery, SQL: "SELECT @@TRANCOUNT AS tc"},
			}
			rb, err := clients.Run(ctx, name, sb)
			if err != nil {
				t.Fatal(err)
			}
			if !rb.Connected {
				t.Fatalf("B: %v (stderr %s)", rb.Err(), rb.Stderr)
			}
			if spidB := num(rb.Scalar(0)); spidB != spidA {
				t.Errorf("B got SPID %v, A had %v: not A's pooled backend", spidB, spidA)
			}
			if e := rb.Steps[1].Error; e == nil || e.Number != 208 {
				t.Errorf("B sees A's #temp table: %+v rows %v", e, rb.Rows(1))
			}
			if l := rb.Scalar(2); l != "us_english" {
				t.Errorf("B's @@LANGUAGE = %v", l)
			}
			if n := num(rb.Scalar(3)); n != 0 {
				t.Errorf("B sees A's uncommitted insert (%v rows)", n)
			}
			if n := num(rb.Scalar(4)); n != 0 {
				t.Errorf("B's @@TRANCOUNT = %v", n)
			}
			for _, i := range []int{0, 2, 3, 4} {
				if err := rb.StepErr(i); err != nil {
					t.Errorf("B: %v", err)
				}
			}
		})
	}
	if st := buckets[0].Stats(); st.Total != int64(len(clients.All)) {
		t.Errorf("the stand-in served %d logins for %d clients' A and B: B did not reuse", st.Total, len(clients.All))
	}
}

// TestPoolMetrics: /metrics shows the real idle count, hits, misses,
// resets, discards by reason and framed sessions.
func TestPoolMetrics(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := pooledConfig(t, buckets)
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.Buckets[0].MaxIdle = 1
	a := testenv.Proxy(t, cfg)
	p := poolOf(t, a)
	c1, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	c2, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c1, "SELECT 1")
	c1.Close()
	testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Idle == 1 && s.Resetting == 0 })
	c2.Close() // over max_idle: closed
	testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Active+s.Resetting == 0 })
	c3, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c3, "SELECT 1")
	m := scrapeMetrics(t, a)
	for series, want := range map[string]float64{
		`proxy_connections_idle{bucket="bucket-001"}`:                       0,
		`proxy_pool_hits_total{bucket="bucket-001"}`:                        1,
		`proxy_pool_misses_total{bucket="bucket-001"}`:                      2,
		`proxy_pool_resets_total{bucket="bucket-001"}`:                      1,
		`proxy_pool_discarded_total{bucket="bucket-001",reason="max_idle"}`: 1,
		`proxy_pool_discarded_total{bucket="bucket-001",reason="mars"}`:     0,
		`proxy_sessions_total{mode="framed"}`:                               2,
		`proxy_connections_active{bucket="bucket-001"}`:                     1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	c3.Close()
	waitIdle(t, p, 1)
	if got := scrapeMetrics(t, a)[`proxy_connections_idle{bucket="bucket-001"}`]; got != 1 {
		t.Errorf("proxy_connections_idle = %v with one idle connection", got)
	}
}

// TestPoolReload: a reload keeps a bucket's pool (and its idle
// connections) while the backend stays the same, and turning pool_mode
// to none closes them and releases their slots.
func TestPoolReload(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := pooledConfig(t, buckets)
	a := testenv.Proxy(t, cfg)
	p := poolOf(t, a)
	c, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitIdle(t, p, 1)

	next := pooledConfig(t, buckets)
	next.Buckets[0].MaxIdle = 5
	if err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	if poolOf(t, a) != p || p.Stats().Idle != 1 || p.Settings().MaxIdle != 5 {
		t.Fatalf("reload replaced the pool or lost its idle connection: %+v", p.Stats())
	}
	off := pooledConfig(t, buckets)
	off.Buckets[0].PoolMode = config.PoolModeNone
	if err := a.Reload(off); err != nil {
		t.Fatal(err)
	}
	if a.Handler().Runtime().Buckets["bucket-001"].Pool != nil || p.Stats().Idle != 0 {
		t.Fatal("pool_mode none kept the pool")
	}
	testenv.WaitUntil(t, func() bool { return buckets[0].Stats().Current == 0 })
	for _, s := range a.Limiter().Snapshot() {
		if s.InUse != 0 {
			t.Fatalf("slots still held: %+v", s)
		}
	}
}

// TestPoolTLSLegs: a pooled session over TLS on both legs (client full,
// backend full) is reused, reset, and cleaned up after a cancel, through
// crypto/tls on the framed path.
func TestPoolTLSLegs(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := pooledConfig(t, buckets)
	cfg.Buckets[0].Encryption = config.EncryptionFull
	a := testenv.Proxy(t, cfg)
	p := poolOf(t, a)
	dial := func() *tdsclient.Conn {
		c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
			Database: "tenant_db", App: "pool-tls", Encrypt: tdsclient.EncryptFull, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca := dial()
	spid := mustExec(t, ca, "SELECT @@SPID").Scalar()
	mustExec(t, ca, "CREATE TABLE #t (a int)")
	if err := ca.Send("WAITFOR DELAY '00:00:05'", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	ca.Close()
	waitIdle(t, p, 1)
	cb := dial()
	defer cb.Close()
	if got := mustExec(t, cb, "SELECT @@SPID").Scalar(); fmt.Sprint(got) != fmt.Sprint(spid) {
		t.Fatalf("SPID %v, want %v", got, spid)
	}
	if r := mustExec(t, cb, "SELECT * FROM #t"); len(r.Errors) == 0 || r.Errors[0].Number != 208 {
		t.Fatalf("#t after reuse: %v", r.Errors)
	}
	if a.Handler().Relayed(relay.ModeFramed) < 1 {
		t.Fatal("not framed")
	}
}

// TestPoolPasswordsRealClients: the same with every real client. With
// idle pooled connections for the login, each client's wrong password
// gets the server's 18456 and reaches the stand-in's failed-login
// counter; after the password is changed at the server, each client's
// new password works at once and the old one is refused by the server.
func TestPoolPasswordsRealClients(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	a := testenv.Proxy(t, pooledConfig(t, buckets))
	p := poolOf(t, a)
	host, port := hostPort(t, a.Addr())
	run := func(name clients.Name, pw string) clients.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// One App for all: every client's login shares a sub-pool only if
		// its LOGIN7 options match, so each client gets its own; that is
		// fine, each has idle connections of its own below.
		res, err := clients.Run(ctx, name, clients.Spec{Host: host, Port: port, User: "sa", Password: pw, Database: "tenant_db",
			App: "pw-" + string(name), Steps: []clients.Step{{Op: clients.OpQuery, SQL: "SELECT 1 AS one"}}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	old, next := testenv.Passwords[0], "R0tated-"+testenv.Passwords[0]
	for _, name := range clients.All {
		if err := run(name, old).Err(); err != nil {
			t.Fatalf("%s, right password: %v", name, err)
		}
	}
	settled := func() pool.Stats {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := p.Stats()
			if s.Active+s.Resetting+s.Login == 0 && int64(s.Idle) == buckets[0].Stats().Current {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool %+v, stand-in %+v: not settled", s, buckets[0].Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	idle0 := settled().Idle
	if idle0 == 0 {
		t.Fatal("no idle pooled connection")
	}
	for _, name := range clients.All {
		before := buckets[0].Stats().Failed
		res := run(name, "not-"+old)
		if res.Connected || res.LoginError == nil || res.LoginError.Number != 18456 || res.LoginError.Message != "Login failed for user 'sa'." {
			t.Fatalf("%s, wrong password: connected %v, %+v (stderr %s)", name, res.Connected, res.LoginError, res.Stderr)
		}
		// Each wrong password reaches the server: its failed-login counter
		// moves by one per login the driver sent (FreeTDS ODBC tries a
		// failed login a second time on its own).
		want := int64(1)
		if name == clients.PyODBC {
			want = 2
		}
		if n := buckets[0].Stats().Failed - before; n != want {
			t.Fatalf("%s: the stand-in counted %d failed logins for one wrong password, want %d", name, n, want)
		}
	}

	buckets[0].SetPassword("sa", next)
	for _, name := range clients.All {
		if err := run(name, next).Err(); err != nil {
			t.Fatalf("%s, the new password right after the change: %v", name, err)
		}
		if res := run(name, old); res.Connected || res.LoginError == nil || res.LoginError.Number != 18456 {
			t.Fatalf("%s, the old password after the change: connected %v, %+v", name, res.Connected, res.LoginError)
		}
	}
	// The stand-in holds only the pool's idle connections, and each client
	// reuses one with the new password: no connection of the old one is
	// left (each sub-pool closed them at its first new-password login).
	if s := settled(); s.Idle != idle0 {
		t.Fatalf("%d idle connections after the change, %d before: the old password's were not all closed", s.Idle, idle0)
	}
	st1 := buckets[0].Stats()
	for _, name := range clients.All {
		if err := run(name, next).Err(); err != nil {
			t.Fatalf("%s, the new password again: %v", name, err)
		}
	}
	settled()
	if st := buckets[0].Stats(); st.Total != st1.Total {
		t.Fatalf("new-password logins reached the backend (%d logins) instead of reusing", st.Total-st1.Total)
	}
}
