package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
)

// Passwords are the runbook's sa passwords; each routes to its bucket.
var Passwords = [3]string{"YourStr0ngP@ssword1", "YourStr0ngP@ssword2", "YourStr0ngP@ssword3"}

// session is one client connection: one TDS login, held until Close.
type session struct {
	db   *sql.DB
	conn *sql.Conn
}

// login opens one connection to addr as sa with password, database
// tenant_db, as the runbook's sqlcmd -C does (TLS for the login, the
// certificate not verified). It returns once the login is acknowledged or
// refused; ctx bounds the wait (a queued login waits in the proxy).
func login(ctx context.Context, addr, password string) (*session, error) {
	u := &url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", password), Host: addr}
	q := url.Values{}
	q.Set("database", "tenant_db")
	q.Set("encrypt", "false") // ENCRYPT_OFF: TLS for LOGIN7 only
	q.Set("TrustServerCertificate", "true")
	q.Set("app name", "tdsgate-scenario")
	q.Set("dial timeout", "5")
	u.RawQuery = q.Encode()
	c, err := mssql.NewConnector(u.String())
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(0) // Close ends the TCP connection
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &session{db: db, conn: conn}, nil
}

func (s *session) Close() {
	if s == nil {
		return
	}
	s.conn.Close()
	s.db.Close()
}

// scalar runs query and returns its first column of its first row.
func (s *session) scalar(ctx context.Context, query string, args ...any) (any, error) {
	var v any
	err := s.conn.QueryRowContext(ctx, query, args...).Scan(&v)
	return v, err
}

// oneShot logs in, runs query, and closes: one full client round.
func oneShot(ctx context.Context, addr, password, query string) (any, error) {
	s, err := login(ctx, addr, password)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.scalar(ctx, query)
}

var reNumber = regexp.MustCompile(`\((\d{4,6})\)`)

// errNumber is the TDS error number of err (50004, 50005, 18456, …), or 0.
func errNumber(err error) int32 {
	if err == nil {
		return 0
	}
	var e mssql.Error
	if errors.As(err, &e) {
		return e.Number
	}
	var pe *mssql.Error
	if errors.As(err, &pe) && pe != nil {
		return pe.Number
	}
	if m := reNumber.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return int32(n)
	}
	return 0
}

// outcome names a login result for counting: "ok", "50004", "50005", or
// the error text.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if n := errNumber(err); n != 0 {
		return strconv.Itoa(int(n))
	}
	return err.Error()
}

// holderStagger spaces the holders' logins (see holdN).
const holderStagger = 20 * time.Millisecond

// holderSet is sessions held open to keep their slots.
type holderSet struct {
	mu       sync.Mutex
	sessions []*session
}

// holdN logs n sessions in to addr (in parallel) and keeps them open.
// It fails if any login fails.
//
// The logins start 20 ms apart. All at once, a burst of n logins against a
// cap of n spread over three proxies can be refused with 50005 although
// slots are free: the Redis limiter's cross-instance fairness defers a
// queued login to another instance's waiters even when several slots are
// free, and max_queue_size 2 then overflows.
func holdN(ctx context.Context, addr, password string, n int) (*holderSet, error) {
	h := &holderSet{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * holderStagger)
			lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			s, err := login(lctx, addr, password)
			if err != nil {
				errs <- err
				return
			}
			if _, err := s.scalar(lctx, "SELECT 1"); err != nil {
				s.Close()
				errs <- err
				return
			}
			h.mu.Lock()
			h.sessions = append(h.sessions, s)
			h.mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		h.Close()
		return nil, fmt.Errorf("holder login: %w", err)
	}
	return h, nil
}

func (h *holderSet) Len() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

func (h *holderSet) Close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	ss := h.sessions
	h.sessions = nil
	h.mu.Unlock()
	// In parallel: the slots free together, as when the holders end.
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Add(1)
		go func() { defer wg.Done(); s.Close() }()
	}
	wg.Wait()
}

// attempt is one timed login.
type attempt struct {
	start   time.Time
	elapsed time.Duration
	err     error
}

// timedLogin logs in, runs SELECT 1 and closes, timing the whole round.
func timedLogin(ctx context.Context, addr, password string) attempt {
	a := attempt{start: time.Now()}
	_, a.err = oneShot(ctx, addr, password, "SELECT 1")
	a.elapsed = time.Since(a.start)
	return a
}

// loop runs workers that log in, SELECT and close, over and over, until
// stop; it records every attempt.
type loop struct {
	mu       sync.Mutex
	attempts []attempt
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoop(ctx context.Context, addr string, workers int, pause time.Duration) *loop {
	l := &loop{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				actx, cancel := context.WithTimeout(ctx, 20*time.Second)
				a := timedLogin(actx, addr, Passwords[(w+i)%3])
				cancel()
				l.mu.Lock()
				l.attempts = append(l.attempts, a)
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-time.After(pause):
				}
			}
		}(w)
	}
	return l
}

// Stop ends the loop and returns every attempt.
func (l *loop) Stop() []attempt {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts
}

// count returns the number of successes and the failures.
func count(as []attempt) (ok int, failed []attempt) {
	for _, a := range as {
		if a.err == nil {
			ok++
		} else {
			failed = append(failed, a)
		}
	}
	return ok, failed
}
