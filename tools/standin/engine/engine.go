package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config configures an Engine.
type Config struct {
	// Dir is where the database files live. "" means a temporary directory
	// that Close removes.
	Dir string
	// Databases maps a database name to its init SQL (T-SQL, run through the
	// engine once, when the database file is first created). "master" and
	// "tempdb" always exist.
	Databases map[string]string
}

// Engine owns the SQLite databases of one stand-in server.
type Engine struct {
	dir     string
	tempDir bool

	mu  sync.RWMutex
	dbs map[string]*database // key: lower-case name
}

// database is one SQL Server database: one SQLite file in WAL mode.
type database struct {
	name string // as configured
	path string
	db   *sql.DB
}

var validDBName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_@#$-]{0,127}$`)

// Open creates (or reopens) the databases in cfg.Dir and runs each new
// database's init SQL.
func Open(cfg Config) (*Engine, error) {
	registerDriver()
	e := &Engine{dir: cfg.Dir, dbs: map[string]*database{}}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "standin-*")
		if err != nil {
			return nil, err
		}
		e.dir, e.tempDir = d, true
	} else if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cfg.Databases)+2)
	inits := map[string]string{"master": "", "tempdb": ""}
	for n, s := range cfg.Databases {
		inits[n] = s
	}
	for n := range inits {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := e.createDatabase(n, inits[n]); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// createDatabase opens (creating if needed) a database and runs initSQL if
// it has not run before.
// LockWait is how long a writer waits for another session's write
// transaction (SQLite's busy_timeout) before it gets error 1205. SQL
// Server waits for a lock as long as it takes by default (LOCK_TIMEOUT -1)
// and locks rows, not databases; SQLite has one writer per database, so a
// short wait would turn a busy load of independent inserts into 1205s a
// SQL Server would not send.
const LockWait = 60 * time.Second

func (e *Engine) createDatabase(name, initSQL string) error {
	if !validDBName.MatchString(name) {
		return fmt.Errorf("engine: invalid database name %q", name)
	}
	key := strings.ToLower(name)
	e.mu.Lock()
	if _, ok := e.dbs[key]; ok {
		e.mu.Unlock()
		return nil
	}
	path := filepath.Join(e.dir, key+".db")
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", LockWait.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	db, err := sql.Open(driverName, path+"?"+q.Encode())
	if err != nil {
		e.mu.Unlock()
		return err
	}
	db.SetMaxIdleConns(64)
	d := &database{name: name, path: path, db: db}
	e.dbs[key] = d
	e.mu.Unlock()

	ctx := context.Background()
	if _, err := db.ExecContext(ctx, identityTableSQL("main")); err != nil {
		return fmt.Errorf("engine: init %s: %w", name, err)
	}
	for _, q := range []string{
		"CREATE VIRTUAL TABLE IF NOT EXISTS main.generate_series USING generate_series",
		"CREATE VIRTUAL TABLE IF NOT EXISTS main.standin_numbers USING standin_numbers",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("engine: init %s: %w", name, err)
		}
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS __standin_meta (k TEXT PRIMARY KEY, v TEXT)"); err != nil {
		return fmt.Errorf("engine: init %s: %w", name, err)
	}
	var done int
	_ = db.QueryRowContext(ctx, "SELECT count(*) FROM __standin_meta WHERE k = 'initialized'").Scan(&done)
	if done > 0 {
		return nil
	}
	if strings.TrimSpace(initSQL) != "" {
		s, err := e.NewSession(SessionInfo{ServerName: "standin", Login: "sa"}, name)
		if err != nil {
			return err
		}
		rec := &errSink{}
		err = s.ExecBatch(ctx, initSQL, nil, rec)
		s.Close()
		if err != nil {
			return fmt.Errorf("engine: init %s: %w", name, err)
		}
		if rec.err != nil {
			return fmt.Errorf("engine: init %s: %w", name, rec.err)
		}
	}
	_, err = db.ExecContext(ctx, "INSERT OR REPLACE INTO __standin_meta (k, v) VALUES ('initialized', datetime('now'))")
	return err
}

// errSink discards results and keeps the first error.
type errSink struct{ err *SQLError }

func (s *errSink) Columns([]Column) error { return nil }
func (s *errSink) Row([]any) error        { return nil }
func (s *errSink) Done(Done) error        { return nil }
func (s *errSink) Error(e *SQLError) error {
	if s.err == nil {
		s.err = e
	}
	return nil
}
func (s *errSink) Info(int32, string) error { return nil }
func (s *errSink) Tx(TxEvent, int) error    { return nil }
func (s *errSink) Database(string) error    { return nil }

// Close closes every database and removes the directory if Open created it.
func (e *Engine) Close() error {
	e.mu.Lock()
	var errs []error
	for _, d := range e.dbs {
		errs = append(errs, d.db.Close())
	}
	e.dbs = map[string]*database{}
	e.mu.Unlock()
	if e.tempDir {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// HasDatabase reports whether a database exists (case-insensitive).
func (e *Engine) HasDatabase(name string) bool { return e.lookup(name) != nil }

// Databases lists the database names.
func (e *Engine) Databases() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []string
	for _, d := range e.dbs {
		out = append(out, d.name)
	}
	sort.Strings(out)
	return out
}

func (e *Engine) lookup(name string) *database {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dbs[strings.ToLower(name)]
}
