package app_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// openConn logs in through the proxy with go-mssqldb (a real client) and
// returns the one connection of a private pool.
func openConn(ctx context.Context, addr, password string) (*sql.DB, *sql.Conn, error) {
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", password), Host: addr,
		RawQuery: url.Values{"database": {"tenant_db"}, "encrypt": {"disable"}, "dial timeout": {"30"}}.Encode()}
	db, err := sql.Open("sqlserver", u.String())
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, c, nil
}

func errNumber(err error) int32 {
	var me mssql.Error
	if errors.As(err, &me) {
		return me.Number
	}
	var mp *mssql.Error
	if errors.As(err, &mp) {
		return mp.Number
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdmission: max_connections 3 and max_queue_size 2. Three holders,
// two queued clients that get through when holders leave, a sixth that
// gets 50005 at once, a queued client that gets 50004 after queue_timeout,
// and the backend never sees more than three sessions.
func TestAdmission(t *testing.T) {
	buckets := testenv.Buckets(t, 1, func(_ int, c *server.Config) { c.MaxConnections = 10 })
	cfg := testenv.Config(t, buckets)
	cfg.Buckets[0].MaxConnections = 3
	cfg.Buckets[0].MaxQueueSize = 2
	cfg.Buckets[0].QueueTimeout = 1500 * time.Millisecond
	a := testenv.Proxy(t, cfg)
	addr := a.Addr()
	snap := func() limiter.BucketStats { return a.Limiter().Snapshot()[0] }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Three holders, each in a WAITFOR.
	var holders sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < 3; i++ {
		db, c, err := openConn(ctx, addr, testenv.Passwords[0])
		if err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
		holders.Add(1)
		go func() {
			defer holders.Done()
			defer db.Close()
			defer c.Close()
			<-release
			c.ExecContext(ctx, "WAITFOR DELAY '00:00:00.300'")
		}()
	}
	waitFor(t, "3 slots in use", func() bool { return snap().InUse == 3 })

	// Two clients queue, and succeed once the holders leave.
	queued := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			db, c, err := openConn(ctx, addr, testenv.Passwords[0])
			if err == nil {
				var n int
				err = c.QueryRowContext(ctx, "SELECT 1").Scan(&n)
				c.Close()
				db.Close()
			}
			queued <- err
		}()
	}
	waitFor(t, "2 clients queued", func() bool { return snap().Queued == 2 })

	// A sixth finds the queue full: 50005, in well under a second.
	start := time.Now()
	_, _, err := openConn(ctx, addr, testenv.Passwords[0])
	elapsed := time.Since(start)
	if n := errNumber(err); n != 50005 {
		t.Fatalf("sixth client: error %v (number %d), want 50005", err, n)
	}
	if elapsed > time.Second {
		t.Errorf("50005 took %v", elapsed)
	}
	t.Logf("50005 after %v: %v", elapsed, err)

	close(release)
	holders.Wait()
	for i := 0; i < 2; i++ {
		if err := <-queued; err != nil {
			t.Errorf("queued client: %v", err)
		}
	}
	waitFor(t, "slots released", func() bool { s := snap(); return s.InUse == 0 && s.Queued == 0 })

	// A queued client that outlives queue_timeout gets 50004.
	var dbs []*sql.DB
	var conns []*sql.Conn
	for i := 0; i < 3; i++ {
		db, c, err := openConn(ctx, addr, testenv.Passwords[0])
		if err != nil {
			t.Fatal(err)
		}
		dbs, conns = append(dbs, db), append(conns, c)
	}
	start = time.Now()
	_, _, err = openConn(ctx, addr, testenv.Passwords[0])
	elapsed = time.Since(start)
	if n := errNumber(err); n != 50004 {
		t.Fatalf("queued client: error %v (number %d), want 50004", err, n)
	}
	if elapsed < 1400*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("50004 after %v, queue_timeout 1.5s", elapsed)
	}
	t.Logf("50004 after %v: %v", elapsed, err)
	for i, db := range dbs {
		conns[i].Close()
		db.Close()
	}
	waitFor(t, "slots released", func() bool { s := snap(); return s.InUse == 0 && s.Queued == 0 })
	if p := buckets[0].Stats().Peak; p > 3 {
		t.Errorf("the backend saw %d sessions at once; the cap is 3", p)
	} else {
		t.Logf("backend peak sessions: %d", p)
	}
}

// A client that hangs up while queued leaves the queue.
func TestQueuedClientLeaves(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.Buckets[0].MaxConnections = 1
	cfg.Buckets[0].MaxQueueSize = 5
	a := testenv.Proxy(t, cfg)
	snap := func() limiter.BucketStats { return a.Limiter().Snapshot()[0] }
	ctx := context.Background()
	db, c, err := openConn(ctx, a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, _, err := openConn(cctx, a.Addr(), testenv.Passwords[0]); done <- err }()
	waitFor(t, "a queued client", func() bool { return snap().Queued == 1 })
	ccancel() // go-mssqldb closes the socket
	<-done
	left := time.Now()
	waitFor(t, "the queue to empty", func() bool { return snap().Queued == 0 })
	t.Logf("the proxy saw the hang-up after %v", time.Since(left))
	if s := snap(); s.InUse != 1 {
		t.Errorf("in use %d", s.InUse)
	}
}
