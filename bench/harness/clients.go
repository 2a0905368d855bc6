package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// Client names.
const (
	ClientRaw     = "raw"     // tools/tdsclient: the lowest-overhead client
	ClientGoMSSQL = "gomssql" // github.com/microsoft/go-mssqldb through database/sql
)

// session is one logged-in connection of either client.
type session interface {
	selectOne() error
	// stream runs a query and reads its whole answer, returning the
	// bytes received on the wire.
	stream(query string) (int64, error)
	close()
}

// client opens sessions to a target.
type client interface {
	name() string
	open(ctx context.Context, t *Target, i int) (session, error)
	closeAll()
}

// --- raw (tdsclient) ---

type rawClient struct {
	timeout time.Duration // of the login; 0: the Target's (10 s)
}

func (rawClient) name() string { return ClientRaw }
func (rawClient) closeAll()    {}

func (r rawClient) open(ctx context.Context, t *Target, i int) (session, error) {
	o := t.rawOptions(i)
	if r.timeout > 0 {
		o.Timeout = r.timeout
	}
	c, err := tdsclient.Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	return &rawSession{c: c}, nil
}

type rawSession struct {
	c   *tdsclient.Conn
	buf []byte // stream's: big reads, so that the client is not what a bulk run measures
}

func (s *rawSession) selectOne() error {
	r, err := s.c.Exec("SELECT 1", 0)
	if err != nil {
		return err
	}
	if len(r.Errors) > 0 {
		return r.Errors[0]
	}
	if len(r.Rows) != 1 {
		return fmt.Errorf("SELECT 1: %d rows", len(r.Rows))
	}
	return nil
}

func (s *rawSession) stream(query string) (int64, error) {
	if err := s.c.Send(query, 0); err != nil {
		return 0, err
	}
	if s.buf == nil {
		s.buf = make([]byte, 256<<10)
	}
	return s.c.StreamWire(s.buf)
}

func (s *rawSession) close() { s.c.Close() }

// --- go-mssqldb ---

// goClient keeps one *sql.DB per address of a target. MaxIdleConns is 0,
// so every db.Conn dials and logs in afresh and every Close hangs up: the
// harness, not database/sql, decides when sessions open and close.
type goClient struct {
	mu  sync.Mutex
	dbs map[string]*sql.DB
}

func newGoClient() *goClient { return &goClient{dbs: map[string]*sql.DB{}} }

func (*goClient) name() string { return ClientGoMSSQL }

func (g *goClient) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, db := range g.dbs {
		db.Close()
		delete(g.dbs, k)
	}
}

// countingDialer counts the bytes each connection reads, so that bulk
// MB/s through the driver counts wire bytes like the raw client.
type countingDialer struct{ n *atomic.Int64 }

func (d countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: d.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var goBytes atomic.Int64 // bytes read by every go-mssqldb connection

func (g *goClient) db(t *Target, addr string) (*sql.DB, error) {
	key := t.Name() + "|" + addr
	g.mu.Lock()
	defer g.mu.Unlock()
	if db, ok := g.dbs[key]; ok {
		return db, nil
	}
	host, port, _ := net.SplitHostPort(addr)
	q := url.Values{}
	q.Set("database", t.Database)
	q.Set("app name", "tdsgate-bench")
	q.Set("dial timeout", "10")
	q.Set("connection timeout", "30")
	q.Set("keepAlive", "0")
	if t.Mode == ModeLoginTLS {
		q.Set("encrypt", "false") // ENCRYPT_OFF: TLS for LOGIN7 only
		q.Set("TrustServerCertificate", "true")
	} else if t.Mode == ModeFullTLS {
		q.Set("encrypt", "true") // ENCRYPT_ON: the whole session
		q.Set("TrustServerCertificate", "true")
	} else {
		q.Set("encrypt", "disable") // ENCRYPT_NOT_SUP
	}
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword(t.User, t.Password), Host: net.JoinHostPort(host, port), RawQuery: q.Encode()}
	conn, err := mssql.NewConnector(u.String())
	if err != nil {
		return nil, err
	}
	conn.Dialer = countingDialer{&goBytes}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(0)
	g.dbs[key] = db
	return db, nil
}

func (g *goClient) open(ctx context.Context, t *Target, i int) (session, error) {
	db, err := g.db(t, t.Addrs[i%len(t.Addrs)])
	if err != nil {
		return nil, err
	}
	c, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	// database/sql connects lazily in some paths; a ping makes sure the
	// login is done before the connect time is taken.
	if err := c.PingContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return &goSession{c: c}, nil
}

type goSession struct{ c *sql.Conn }

func (s *goSession) selectOne() error {
	var v int
	if err := s.c.QueryRowContext(context.Background(), "SELECT 1").Scan(&v); err != nil {
		return err
	}
	if v != 1 {
		return errors.New("SELECT 1 returned something else")
	}
	return nil
}

func (s *goSession) stream(query string) (int64, error) {
	before := goBytes.Load()
	rows, err := s.c.QueryContext(context.Background(), query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var id int64
	var pad sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&id, &pad); err != nil {
			return 0, err
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return goBytes.Load() - before, nil
}

func (s *goSession) close() { s.c.Close() }

// openMany opens n sessions to t with par at a time. It stops once more
// than maxErrs opens have failed (0: at the first failure) and returns
// what it opened, the number of failures and the first error.
func openMany(ctx context.Context, cl client, t *Target, n, par, maxErrs int) ([]session, int, error) {
	out := make([]session, n)
	var firstErr error
	var errs int
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				mu.Lock()
				failed := errs > maxErrs
				mu.Unlock()
				if failed {
					return
				}
				s, err := cl.open(ctx, t, i)
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = fmt.Errorf("session %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	var got []session
	for _, s := range out {
		if s != nil {
			got = append(got, s)
		}
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return got, errs, firstErr
}

func closeAll(ss []session) {
	var wg sync.WaitGroup
	ch := make(chan session)
	for range 16 {
		wg.Go(func() {
			for s := range ch {
				s.close()
			}
		})
	}
	for _, s := range ss {
		ch <- s
	}
	close(ch)
	wg.Wait()
}

// deadlineCtx bounds a step: the run's ctx, and at most d.
func deadlineCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
