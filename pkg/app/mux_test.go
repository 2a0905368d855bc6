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
	"github.com/tdsgate/tdsgate/tools/standin/server"
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
