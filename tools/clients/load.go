package clients

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
)

// LoadSpec is a multiplexing load for one client: Sessions connections held
// open from login to EndAt, each running, every MinMS..MaxMS at random
// between StartAt and EndAt, either SELECT 1 or (with probability
// InsertRatio) a driver-API transaction: begin, one INSERT of (Tag, session
// index) into test_table, commit. Plaintext (Encrypt none).
type LoadSpec struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database"`
	Sessions int    `json:"sessions"`
	// StartAtMS and EndAtMS are Unix milliseconds: logins happen before
	// StartAtMS, requests between the two, connections close at EndAtMS.
	StartAtMS   int64   `json:"start_at_ms"`
	EndAtMS     int64   `json:"end_at_ms"`
	MinMS       int     `json:"min_ms"`
	MaxMS       int     `json:"max_ms"`
	InsertRatio float64 `json:"insert_ratio"`
	// Tag is the name column of every inserted row, to count them after.
	Tag      string `json:"tag"`
	Seed     int64  `json:"seed"`
	TimeoutS int    `json:"timeout_s"`
}

// LoadResult is what a load program reports.
type LoadResult struct {
	Client      Name  `json:"client"`
	Sessions    int64 `json:"sessions"` // logged in
	LoginErrors int64 `json:"login_errors"`
	Queries     int64 `json:"queries"` // succeeded
	Inserts     int64 `json:"inserts"` // transactions committed
	Failed      int64 `json:"failed"`  // requests (and logins) that failed
	// Errors counts failures by SQL error number (or exception class).
	Errors     map[string]int64 `json:"errors"`
	FirstError string           `json:"first_error"`
	// LatMS is the latency of every successful request (a transaction is
	// one request: begin to commit), in milliseconds.
	LatMS  []float64 `json:"lat_ms"`
	Stderr string    `json:"-"`
}

// LoadClients are the clients Load supports.
var LoadClients = []Name{GoMSSQL, Pytds, Tedious, JTDS}

// Load runs a multiplexing load with client name: one process holding all
// the sessions (one JVM for jTDS, one node for tedious, one python for
// pytds), or goroutines in this process for go-mssqldb (database/sql, one
// *sql.Conn per session).
func Load(ctx context.Context, name Name, spec LoadSpec) (LoadResult, error) {
	if spec.TimeoutS <= 0 {
		spec.TimeoutS = 60
	}
	if spec.MinMS <= 0 || spec.MaxMS < spec.MinMS {
		return LoadResult{}, fmt.Errorf("clients: load interval %d..%d ms", spec.MinMS, spec.MaxMS)
	}
	end := time.UnixMilli(spec.EndAtMS)
	ctx, cancel := context.WithDeadline(ctx, end.Add(time.Duration(spec.TimeoutS)*time.Second+60*time.Second))
	defer cancel()
	if name == GoMSSQL {
		return loadGo(ctx, spec)
	}
	root, err := RepoRoot()
	if err != nil {
		return LoadResult{}, err
	}
	var argv []string
	switch name {
	case Pytds:
		argv = []string{debianPython, filepath.Join(root, "tools", "clients", "load", "load_pytds.py")}
	case Tedious:
		argv = []string{"node", filepath.Join(root, "tools", "clients", "node", "load.js")}
	case JTDS:
		cp, err := buildJava("jtds-load", "LoadJtds", "JtdsClient.java", filepath.Join("load", "LoadJtds.java"))
		if err != nil {
			return LoadResult{}, err
		}
		argv = []string{"java", "-Xss512k", "-XX:TieredStopAtLevel=1", "-cp", cp, "LoadJtds"}
	default:
		return LoadResult{}, fmt.Errorf("clients: no load program for %q", name)
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return LoadResult{}, err
	}
	stdout, stderr, runErr := runProgram(ctx, argv, nil, in)
	if ctx.Err() != nil || runErr != nil {
		return LoadResult{Client: name, Stderr: stderr}, fmt.Errorf("clients: load %s: %v %v; stderr:\n%s", name, runErr, ctx.Err(), stderr)
	}
	var res LoadResult
	b := bytes.TrimSpace(stdout.Bytes())
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return LoadResult{Client: name, Stderr: stderr}, fmt.Errorf("clients: load %s: bad result: %v; stdout:\n%s\nstderr:\n%s", name, err, stdout.String(), stderr)
	}
	res.Client, res.Stderr = name, stderr
	return res, nil
}

// loadGo is the go-mssqldb load: database/sql with one held *sql.Conn per
// session, as an application pool that keeps its connections open.
func loadGo(ctx context.Context, spec LoadSpec) (LoadResult, error) {
	q := url.Values{}
	q.Set("database", spec.Database)
	q.Set("encrypt", "disable")
	q.Set("app name", "load-gomssql")
	q.Set("connection timeout", strconv.Itoa(spec.TimeoutS))
	q.Set("dial timeout", strconv.Itoa(spec.TimeoutS))
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword(spec.User, spec.Password),
		Host: net.JoinHostPort(spec.Host, strconv.Itoa(spec.Port)), RawQuery: q.Encode()}
	db, err := sql.Open("sqlserver", u.String())
	if err != nil {
		return LoadResult{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(spec.Sessions)
	db.SetMaxIdleConns(spec.Sessions)

	res := LoadResult{Client: GoMSSQL, Errors: map[string]int64{}}
	var mu sync.Mutex
	fail := func(err error, login bool) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if login {
			res.LoginErrors++
		}
		code := fmt.Sprintf("%T", err)
		var me mssql.Error
		if errors.As(err, &me) {
			code = strconv.Itoa(int(me.Number))
		}
		res.Errors[code]++
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	start, end := time.UnixMilli(spec.StartAtMS), time.UnixMilli(spec.EndAtMS)
	var wg sync.WaitGroup
	for i := 0; i < spec.Sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := db.Conn(ctx)
			if err == nil {
				err = conn.PingContext(ctx) // db.Conn may not have logged in yet
			}
			if err != nil {
				fail(err, true)
				return
			}
			defer conn.Close()
			mu.Lock()
			res.Sessions++
			mu.Unlock()
			rnd := rand.New(rand.NewPCG(uint64(spec.Seed), uint64(i)))
			time.Sleep(time.Until(start))
			for {
				nap := time.Duration(spec.MinMS+rnd.IntN(spec.MaxMS-spec.MinMS+1)) * time.Millisecond
				if time.Now().Add(nap).After(end) || ctx.Err() != nil {
					break
				}
				time.Sleep(nap)
				t0 := time.Now()
				insert := rnd.Float64() < spec.InsertRatio
				var err error
				if insert {
					err = goInsert(ctx, conn, spec.Tag, i)
				} else {
					var one int
					if err = conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err == nil && one != 1 {
						err = fmt.Errorf("SELECT 1 returned %d", one)
					}
				}
				if err != nil {
					fail(err, false)
					continue
				}
				ms := float64(time.Since(t0).Microseconds()) / 1000
				mu.Lock()
				if insert {
					res.Inserts++
				} else {
					res.Queries++
				}
				res.LatMS = append(res.LatMS, ms)
				mu.Unlock()
			}
			time.Sleep(time.Until(end))
		}()
	}
	wg.Wait()
	return res, nil
}

func goInsert(ctx context.Context, conn *sql.Conn, tag string, i int) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO test_table (name, value) VALUES ('%s', %d)", tag, i)); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
