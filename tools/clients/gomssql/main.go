// Command gomssql is the go-mssqldb test client of tools/clients: it reads a
// JSON spec on stdin, runs its steps on ONE session (database/sql *sql.Conn)
// and prints one JSON result line on stdout. See tools/clients/README.md.
package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-sql/sqlexp"
	mssql "github.com/microsoft/go-mssqldb"
)

type spec struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database"`
	Encrypt  string `json:"encrypt"`
	App      string `json:"app"`
	TimeoutS int    `json:"timeout_s"`
	CAFile   string `json:"cafile"`
	Steps    []step `json:"steps"`
}

type step struct {
	Op      string            `json:"op"`
	SQL     string            `json:"sql"`
	Params  []json.RawMessage `json:"params"`
	AfterMS int               `json:"after_ms"`
	MS      int               `json:"ms"`
}

type sqlError struct {
	Number  int    `json:"number"`
	Message string `json:"message"`
	Class   int    `json:"class,omitempty"`
	State   int    `json:"state,omitempty"`
}

type resultSet struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

type stepResult struct {
	Op          string      `json:"op"`
	OK          bool        `json:"ok"`
	MS          float64     `json:"ms"`
	Results     []resultSet `json:"results"`
	RowCounts   []int64     `json:"rowcounts"`
	Error       *sqlError   `json:"error"`
	Canceled    bool        `json:"canceled"`
	Unsupported bool        `json:"unsupported,omitempty"`
}

type result struct {
	Client     string       `json:"client"`
	Connected  bool         `json:"connected"`
	ConnectMS  float64      `json:"connect_ms"`
	LoginError *sqlError    `json:"login_error"`
	Steps      []stepResult `json:"steps"`
}

func main() {
	var sp spec
	if err := json.NewDecoder(os.Stdin).Decode(&sp); err != nil {
		fmt.Fprintln(os.Stderr, "gomssql: bad spec:", err)
		os.Exit(2)
	}
	res := run(sp)
	out, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomssql: encode result:", err)
		os.Exit(2)
	}
	os.Stdout.Write(append(out, '\n'))
}

func dsn(sp spec) string {
	q := url.Values{}
	if sp.Database != "" {
		q.Set("database", sp.Database)
	}
	switch sp.Encrypt {
	case "", "none":
		q.Set("encrypt", "disable") // PRELOGIN ENCRYPTION=NOT_SUP
	case "login":
		q.Set("encrypt", "false") // ENCRYPTION=OFF: TLS for LOGIN7 only
	case "full":
		q.Set("encrypt", "true") // ENCRYPTION=ON
	case "strict":
		q.Set("encrypt", "strict") // TDS 8.0: TLS (ALPN tds/8.0) before PRELOGIN
	}
	if sp.CAFile != "" {
		q.Set("certificate", sp.CAFile)
		q.Set("TrustServerCertificate", "false")
	} else {
		q.Set("TrustServerCertificate", "true")
	}
	if sp.App != "" {
		q.Set("app name", sp.App)
	}
	t := sp.TimeoutS
	if t <= 0 {
		t = 30
	}
	q.Set("connection timeout", strconv.Itoa(t))
	q.Set("dial timeout", strconv.Itoa(t))
	u := url.URL{
		Scheme:   "sqlserver",
		User:     url.UserPassword(sp.User, sp.Password),
		Host:     net.JoinHostPort(sp.Host, strconv.Itoa(sp.Port)),
		RawQuery: q.Encode(),
	}
	return u.String()
}

// queryer is what runs statements: the session, or the open transaction on it.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func run(sp spec) result {
	res := result{Client: "gomssql", Steps: []stepResult{}}
	db, err := sql.Open("sqlserver", dsn(sp))
	if err != nil {
		res.LoginError = toErr(err)
		return res
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()

	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, time.Duration(max(sp.TimeoutS, 1))*time.Second+5*time.Second)
	conn, err := db.Conn(cctx)
	if err == nil {
		// db.Conn may hand out a connection without a round trip: make sure
		// the login really happened.
		err = conn.PingContext(cctx)
	}
	cancel()
	res.ConnectMS = ms(time.Since(start))
	if err != nil {
		e := toErr(err)
		e.Message = strings.TrimPrefix(e.Message, "login error: ")
		res.LoginError = e
		return res
	}
	defer conn.Close()
	res.Connected = true

	var tx *sql.Tx
	for _, st := range sp.Steps {
		var q queryer = conn
		if tx != nil {
			q = tx
		}
		r := stepResult{Op: st.Op, Results: []resultSet{}, RowCounts: []int64{}}
		t0 := time.Now()
		switch st.Op {
		case "query", "hold":
			runQuery(ctx, q, st.SQL, nil, &r)
		case "param":
			args, err := params(st.Params)
			if err != nil {
				r.Error = &sqlError{Message: "bad params: " + err.Error()}
				break
			}
			runQuery(ctx, q, st.SQL, args, &r)
		case "cancel":
			runCancel(ctx, q, st, &r)
		case "begin":
			if tx != nil {
				r.Error = &sqlError{Message: "begin: a transaction is already open"}
				break
			}
			t, err := conn.BeginTx(ctx, nil)
			if err != nil {
				r.Error = toErr(err)
				break
			}
			tx = t
			r.OK = true
		case "commit", "rollback":
			if tx == nil {
				r.Error = &sqlError{Message: st.Op + ": no transaction open (begin first)"}
				break
			}
			var err error
			if st.Op == "commit" {
				err = tx.Commit()
			} else {
				err = tx.Rollback()
			}
			tx = nil
			if err != nil {
				r.Error = toErr(err)
				break
			}
			r.OK = true
		case "sleep":
			time.Sleep(time.Duration(st.MS) * time.Millisecond)
			r.OK = true
		default:
			r.Unsupported = true
			r.Error = &sqlError{Message: "unknown op " + st.Op}
		}
		r.MS = ms(time.Since(t0))
		res.Steps = append(res.Steps, r)
	}
	if tx != nil {
		_ = tx.Rollback()
	}
	return res
}

// runQuery runs one batch through go-mssqldb's message queue (as go-sqlcmd
// does), which reports every result set, rows-affected count and error of
// the batch in order.
func runQuery(ctx context.Context, q queryer, text string, args []any, r *stepResult) {
	retmsg := &sqlexp.ReturnMessage{}
	rows, err := q.QueryContext(ctx, text, append([]any{retmsg}, args...)...)
	if err != nil {
		r.Error = toErr(err)
		return
	}
	defer rows.Close()
	for active := true; active; {
		switch m := retmsg.Message(ctx).(type) {
		case sqlexp.MsgNext:
			rs, err := readSet(rows)
			if err != nil && r.Error == nil {
				r.Error = toErr(err)
			}
			r.Results = append(r.Results, rs)
		case sqlexp.MsgRowsAffected:
			r.RowCounts = append(r.RowCounts, m.Count)
		case sqlexp.MsgError:
			if r.Error == nil {
				r.Error = toErr(m.Error)
			}
		case sqlexp.MsgNextResultSet:
			active = rows.NextResultSet()
		case sqlexp.MsgNotice:
		}
	}
	if err := rows.Err(); err != nil && r.Error == nil {
		r.Error = toErr(err)
	}
	r.OK = r.Error == nil
}

// runCancel starts the query and cancels its context after AfterMS:
// go-mssqldb then sends ATTENTION and waits for the server's DONE_ATTN.
func runCancel(ctx context.Context, q queryer, st step, r *stepResult) {
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(time.Duration(st.AfterMS)*time.Millisecond, cancel)
	defer timer.Stop()
	rows, err := q.QueryContext(qctx, st.SQL)
	if err == nil {
		for {
			rs, rerr := readSet(rows)
			if len(rs.Columns) > 0 {
				r.Results = append(r.Results, rs)
			}
			if rerr != nil {
				err = rerr
				break
			}
			if !rows.NextResultSet() {
				err = rows.Err()
				break
			}
		}
		rows.Close()
	}
	if err != nil {
		if qctx.Err() != nil && (errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "cancel")) {
			r.Canceled = true
			r.OK = true
			return
		}
		r.Error = toErr(err)
		return
	}
	// Finished before the cancel fired (or the cancel was ignored).
	r.Canceled = qctx.Err() != nil
	r.OK = true
}

func readSet(rows *sql.Rows) (resultSet, error) {
	rs := resultSet{Columns: []string{}, Rows: [][]any{}}
	cols, err := rows.Columns()
	if err != nil {
		return rs, err
	}
	rs.Columns = cols
	types, _ := rows.ColumnTypes()
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return rs, err
		}
		row := make([]any, len(cols))
		for i, v := range vals {
			dbType := ""
			if i < len(types) {
				dbType = types[i].DatabaseTypeName()
			}
			row[i] = jsonValue(v, dbType)
		}
		rs.Rows = append(rs.Rows, row)
	}
	return rs, rows.Err()
}

// jsonValue maps a scanned value to the contract's JSON forms.
func jsonValue(v any, dbType string) any {
	switch x := v.(type) {
	case nil:
		return nil
	case int64, int32, int16, int8, int, uint8, bool, string:
		return x
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Sprint(x)
		}
		return x
	case float32:
		return float64(x)
	case []byte:
		switch dbType {
		case "BINARY", "VARBINARY", "IMAGE", "TIMESTAMP", "ROWVERSION":
			return "0x" + strings.ToUpper(hex.EncodeToString(x))
		case "UNIQUEIDENTIFIER":
			var u mssql.UniqueIdentifier
			if err := u.Scan(x); err == nil {
				return u.String()
			}
		}
		if utf8.Valid(x) {
			return string(x) // DECIMAL, MONEY...: their text form
		}
		return "0x" + strings.ToUpper(hex.EncodeToString(x))
	case time.Time:
		return x.Format("2006-01-02 15:04:05.9999999")
	default:
		return fmt.Sprint(x)
	}
}

// params turns JSON values into driver arguments named p1..pN.
func params(raw []json.RawMessage) ([]any, error) {
	args := make([]any, 0, len(raw))
	for i, r := range raw {
		var v any
		dec := json.NewDecoder(strings.NewReader(string(r)))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if n, ok := v.(json.Number); ok {
			if iv, err := n.Int64(); err == nil {
				v = iv
			} else if fv, err := n.Float64(); err == nil {
				v = fv
			}
		}
		switch v.(type) {
		case nil, int64, float64, string, bool:
		default:
			b, _ := json.Marshal(v)
			v = string(b)
		}
		args = append(args, sql.Named("p"+strconv.Itoa(i+1), v))
	}
	return args, nil
}

func toErr(err error) *sqlError {
	var me mssql.Error
	if errors.As(err, &me) {
		return &sqlError{Number: int(me.Number), Message: me.Message, Class: int(me.Class), State: int(me.State)}
	}
	var pe *mssql.Error
	if errors.As(err, &pe) && pe != nil {
		return &sqlError{Number: int(pe.Number), Message: pe.Message, Class: int(pe.Class), State: int(pe.State)}
	}
	return &sqlError{Message: err.Error()}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }
