// Package clients runs REAL SQL Server client programs (FreeTDS tsql, pytds,
// jTDS, tedious, go-mssqldb, FreeTDS ODBC through pyodbc) against a server address, for tests of the proxy
// and the stand-in.
//
// Every client takes the same JSON Spec on stdin and prints one JSON Result on
// stdout (see README.md). tsql is a CLI, so its "program" is the Go code in
// tsql.go, which drives tsql through stdin and parses its text output.
//
// Values in result rows: integers as int64, other numbers as float64, strings
// as string, NULL as nil, booleans as bool, anything else (dates, decimals,
// binary) in the driver's string form.
package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Name names one real client.
type Name string

// The clients.
const (
	TSQL    Name = "tsql"    // FreeTDS tsql 1.3 (Debian freetds-bin), TDS 7.4
	Pytds   Name = "pytds"   // pytds (Debian python3-tds) under /usr/bin/python3, TDS 7.4
	JTDS    Name = "jtds"    // jTDS 1.3.1 (Debian libjtds-java), TDS 7.1
	Tedious Name = "tedious" // tedious (npm, pinned in node/package.json), TDS 7.4 or 8.0
	GoMSSQL Name = "gomssql" // github.com/microsoft/go-mssqldb (version from go.mod), TDS 7.4 or 8.0
	PyODBC  Name = "pyodbc"  // pyodbc (Debian python3-pyodbc) over unixODBC + FreeTDS ODBC (tdsodbc), TDS 7.4
)

// All lists every client.
var All = []Name{TSQL, Pytds, JTDS, Tedious, GoMSSQL, PyODBC}

// Encryption modes of Spec.Encrypt.
const (
	EncryptNone   = "none"   // no TLS at all
	EncryptLogin  = "login"  // TLS for LOGIN7 only (PRELOGIN ENCRYPTION=OFF)
	EncryptFull   = "full"   // TLS for the whole session (PRELOGIN ENCRYPTION=ON)
	EncryptStrict = "strict" // TDS 8.0: TLS first, then PRELOGIN inside it
)

// Step operations.
const (
	OpQuery    = "query"    // SQL batch
	OpParam    = "param"    // parameterized query, @p1..@pN
	OpCancel   = "cancel"   // start SQL, cancel after AfterMS (TDS ATTENTION)
	OpBegin    = "begin"    // begin a transaction (driver API where there is one)
	OpCommit   = "commit"   // commit it
	OpRollback = "rollback" // roll it back
	OpSleep    = "sleep"    // sleep MS milliseconds, holding the connection
	OpHold     = "hold"     // same as query, named for clarity (e.g. WAITFOR)
)

// DefaultTimeoutS is the connect/login timeout when Spec.TimeoutS is 0.
const DefaultTimeoutS = 30

// Spec is what a client is asked to do. It is sent as JSON on stdin.
type Spec struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database,omitempty"`
	// Encrypt is one of none, login, full, strict; "" means none.
	Encrypt string `json:"encrypt,omitempty"`
	App     string `json:"app,omitempty"`
	// TimeoutS bounds the connect and login, in seconds (default 30).
	TimeoutS int `json:"timeout_s,omitempty"`
	// CAFile, if set, is a PEM file of trusted CAs; the client then VERIFIES
	// the server certificate (and host name where the driver can). Without it
	// every client trusts any certificate.
	CAFile string `json:"cafile,omitempty"`
	Steps  []Step `json:"steps"`
}

// Step is one operation on the connection.
type Step struct {
	Op      string `json:"op"`
	SQL     string `json:"sql,omitempty"`
	Params  []any  `json:"params,omitempty"`
	AfterMS int    `json:"after_ms,omitempty"`
	MS      int    `json:"ms,omitempty"`
}

// Result is what a client reports. It is read as JSON from its stdout.
type Result struct {
	Client    Name    `json:"client"`
	Connected bool    `json:"connected"`
	ConnectMS float64 `json:"connect_ms"`
	// LoginError is set when the connection or login failed. Number 0 means
	// the failure did not come from a server ERROR token (refused, reset,
	// TLS, timeout...).
	LoginError *SQLError    `json:"login_error"`
	Steps      []StepResult `json:"steps"`
	// Stderr is the client process's stderr (capped), for failure messages.
	Stderr string `json:"-"`
}

// StepResult is the outcome of one Step.
type StepResult struct {
	Op string  `json:"op"`
	OK bool    `json:"ok"`
	MS float64 `json:"ms"`
	// Results are the result sets (statements that returned columns).
	Results []ResultSet `json:"results"`
	// RowCounts are the rows-affected counts the driver reports, in order.
	RowCounts []int64   `json:"rowcounts"`
	Error     *SQLError `json:"error"`
	// Canceled: the request was interrupted by the cancel (ATTENTION).
	Canceled bool `json:"canceled"`
	// Unsupported: this client cannot do this op (see SupportsOp).
	Unsupported bool `json:"unsupported,omitempty"`
}

// ResultSet is one result set.
type ResultSet struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// SQLError is a server error (ERROR token) or, with Number 0, a client-side
// failure.
type SQLError struct {
	Number  int    `json:"number"`
	Message string `json:"message"`
	Class   int    `json:"class,omitempty"`
	State   int    `json:"state,omitempty"`
}

func (e *SQLError) Error() string {
	if e == nil {
		return "<nil>"
	}
	if e.Number == 0 {
		return e.Message
	}
	return fmt.Sprintf("Msg %d, Level %d, State %d: %s", e.Number, e.Class, e.State, e.Message)
}

// encryptModes lists the modes each client can be configured for. See README.md
// for the PRELOGIN byte each one sends (pinned by TestPreloginEncryptionByte).
var encryptModes = map[Name][]string{
	TSQL:  {EncryptNone, EncryptLogin, EncryptFull},
	Pytds: {EncryptNone, EncryptLogin, EncryptFull},
	// jTDS ssl=request (login-only) is not offered: it sends ENCRYPTION=OFF, but
	// after LOGIN7 its disableEncryption() closes the SSLSocket, and on Java
	// 17 it then often never reads the plaintext login response (hangs until
	// loginTimeout). See README.md.
	JTDS:    {EncryptNone, EncryptFull},
	Tedious: {EncryptNone, EncryptFull, EncryptStrict},
	GoMSSQL: {EncryptNone, EncryptLogin, EncryptFull, EncryptStrict},
	// FreeTDS ODBC: Encryption=off|request|require. FreeTDS 1.3 has no TDS 8.0.
	PyODBC: {EncryptNone, EncryptLogin, EncryptFull},
}

// unsupportedOps lists the ops a client reports as {"ok":false,"unsupported":true}.
var unsupportedOps = map[Name][]string{
	TSQL: {OpParam, OpCancel},
}

// Supports reports whether client name can run with encryption mode encrypt.
func Supports(name Name, encrypt string) bool {
	if encrypt == "" {
		encrypt = EncryptNone
	}
	for _, m := range encryptModes[name] {
		if m == encrypt {
			return true
		}
	}
	return false
}

// SupportsOp reports whether client name implements step op.
func SupportsOp(name Name, op string) bool {
	if _, ok := encryptModes[name]; !ok {
		return false
	}
	for _, o := range unsupportedOps[name] {
		if o == op {
			return false
		}
	}
	switch op {
	case OpQuery, OpParam, OpCancel, OpBegin, OpCommit, OpRollback, OpSleep, OpHold:
		return true
	}
	return false
}

// Run runs client name with spec and returns its Result. A failed connection,
// login or statement is data in the Result; the error is only for harness
// failures (client not installed, bad spec, a crash, unparsable output,
// ctx done or the hard timeout).
func Run(ctx context.Context, name Name, spec Spec) (Result, error) {
	if spec.Encrypt == "" {
		spec.Encrypt = EncryptNone
	}
	if spec.TimeoutS <= 0 {
		spec.TimeoutS = DefaultTimeoutS
	}
	if _, ok := encryptModes[name]; !ok {
		return Result{}, fmt.Errorf("clients: unknown client %q", name)
	}
	if !Supports(name, spec.Encrypt) {
		return Result{}, fmt.Errorf("clients: %s does not support encrypt=%q (check Supports first)", name, spec.Encrypt)
	}
	if spec.Encrypt == EncryptStrict && spec.CAFile == "" {
		return Result{}, errors.New("clients: encrypt=strict needs Spec.CAFile: TDS 8.0 drivers always verify the server certificate (see WriteCAFile)")
	}
	for i, s := range spec.Steps {
		if !validOp(s.Op) {
			return Result{}, fmt.Errorf("clients: step %d: unknown op %q", i, s.Op)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, hardTimeout(spec))
	defer cancel()

	if name == TSQL {
		return runTSQL(ctx, spec)
	}
	argv, env, err := command(name)
	if err != nil {
		return Result{}, err
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return Result{}, fmt.Errorf("clients: encode spec: %w", err)
	}
	stdout, errText, runErr := runProgram(ctx, argv, env, in)
	if ctx.Err() != nil {
		return Result{Client: name, Stderr: errText}, fmt.Errorf("clients: %s: %w (hard timeout %s); stderr:\n%s", name, ctx.Err(), hardTimeout(spec), errText)
	}
	if runErr != nil {
		return Result{Client: name, Stderr: errText}, fmt.Errorf("clients: %s exited: %v; stderr:\n%s\nstdout:\n%s", name, runErr, errText, stdout.String())
	}
	res, err := decodeResult(stdout.Bytes())
	if err != nil {
		return Result{Client: name, Stderr: errText}, fmt.Errorf("clients: %s: %w; stderr:\n%s\nstdout:\n%s", name, err, errText, stdout.String())
	}
	res.Client = name
	res.Stderr = errText
	if len(res.Steps) != len(spec.Steps) && res.Connected {
		return res, fmt.Errorf("clients: %s returned %d step results for %d steps; stderr:\n%s", name, len(res.Steps), len(spec.Steps), errText)
	}
	return res, nil
}

func validOp(op string) bool {
	switch op {
	case OpQuery, OpParam, OpCancel, OpBegin, OpCommit, OpRollback, OpSleep, OpHold:
		return true
	}
	return false
}

// hardTimeout bounds one Run: the login timeout, the sleeps and cancels, plus
// a generous allowance per step (a step may WAITFOR) and for JVM/Node start.
func hardTimeout(spec Spec) time.Duration {
	d := time.Duration(spec.TimeoutS)*time.Second + 30*time.Second
	for _, s := range spec.Steps {
		d += time.Duration(s.MS+s.AfterMS)*time.Millisecond + time.Duration(spec.TimeoutS)*time.Second
	}
	return d
}

// runProgram runs argv with in on stdin and returns its stdout, its stderr
// (capped at maxStderr) and the error of its run.
func runProgram(ctx context.Context, argv, env []string, in []byte) (*bytes.Buffer, string, error) {
	var stdout, stderr bytes.Buffer
	cmd := newCmd(ctx, argv, env)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = &stdout
	cmd.Stderr = &capWriter{buf: &stderr, max: maxStderr}
	err := cmd.Run()
	return &stdout, stderr.String(), err
}

// newCmd makes a command in its own process group; on ctx done the whole
// group is killed (a client may have children, e.g. a JVM's helpers).
func newCmd(ctx context.Context, argv, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

const maxStderr = 256 << 10

// capWriter keeps the first max bytes and drops the rest.
type capWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		if len(p) > room {
			w.buf.Write(p[:room])
		} else {
			w.buf.Write(p)
		}
	}
	return len(p), nil
}

// command returns argv and extra environment for a JSON-contract client,
// building the Go and Java programs on first use.
func command(name Name) (argv, env []string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	switch name {
	case Pytds:
		return []string{debianPython, filepath.Join(root, "tools", "clients", "pytds_client.py")}, nil, nil
	case PyODBC:
		return []string{debianPython, filepath.Join(root, "tools", "clients", "pyodbc_client.py")}, nil, nil
	case JTDS:
		cp, err := jtdsClasspath()
		if err != nil {
			return nil, nil, err
		}
		return []string{"java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", cp, "JtdsClient"}, nil, nil
	case Tedious:
		return []string{"node", filepath.Join(root, "tools", "clients", "node", "client.js")}, nil, nil
	case GoMSSQL:
		bin, err := gomssqlBinary()
		if err != nil {
			return nil, nil, err
		}
		return []string{bin}, nil, nil
	}
	return nil, nil, fmt.Errorf("clients: no command for %q", name)
}

// RepoRoot walks up from the working directory (and, failing that, from this
// package's source directory as recorded by the test binary's cwd) to the
// directory whose go.mod declares module github.com/tdsgate/tdsgate.
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for d := dir; ; d = filepath.Dir(d) {
			b, err := os.ReadFile(filepath.Join(d, "go.mod"))
			if err == nil && isOurModule(b) {
				rootDir = d
				return
			}
			if filepath.Dir(d) == d {
				break
			}
		}
		rootErr = fmt.Errorf("clients: no go.mod for module %s above %s", modulePath, dir)
	})
	return rootDir, rootErr
}

const modulePath = "github.com/tdsgate/tdsgate"

func isOurModule(gomod []byte) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
			return true
		}
	}
	return false
}

// decodeResult parses a client's JSON result, turning JSON numbers into
// int64 where integral and float64 otherwise.
func decodeResult(b []byte) (Result, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return Result{}, errors.New("empty stdout (no JSON result)")
	}
	// Tolerate driver chatter before the JSON: the result is the last line.
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var r Result
	if err := dec.Decode(&r); err != nil {
		return Result{}, fmt.Errorf("bad JSON result: %w", err)
	}
	for i := range r.Steps {
		for j := range r.Steps[i].Results {
			for _, row := range r.Steps[i].Results[j].Rows {
				for k, v := range row {
					row[k] = normalizeValue(v)
				}
			}
		}
	}
	return r, nil
}

func normalizeValue(v any) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return f
	}
	return n.String()
}
