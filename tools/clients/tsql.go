package clients

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// FreeTDS tsql has no JSON mode, so this file is its "program": it writes a
// private freetds.conf, feeds tsql one batch at a time on stdin, and parses
// its text output.
//
// Output handling:
//   - stdout is line-buffered through coreutils stdbuf, and stdout and stderr
//     share one pipe, so error messages (stderr) stay in order with rows
//     (stdout).
//   - after each batch we send the local command "version", which makes tsql
//     print "using TDS version 7.4" without contacting the server: the end
//     marker of a step. One "version" before the first step marks a
//     completed login.
//   - prompts ("1> 2> ") prefix the next stdout line; they are stripped.
//   - columns are separated by \x1f (-t), so values may contain tabs.
//
// Limits (tsql is a diagnostic CLI): no parameters and no cancel (reported
// as unsupported); values are text, typed back heuristically (an integer or
// float whose text round-trips becomes a number, "NULL" becomes nil, so a
// varchar 'NULL' reads as nil); PRINT output (message number 0) is not
// reported; a SQL line whose first word is exit/quit/bye/version/reset is a
// tsql command; rowcounts only count rows of result sets (tsql prints no
// DONE counts for INSERT/UPDATE/DELETE).

const tsqlColSep = "\x1f"

var (
	tsqlPrompt   = regexp.MustCompile(`^(\d+> )+`)
	tsqlMsg      = regexp.MustCompile(`^Msg (\d+) \(severity (\d+), state (\d+)\) from `)
	tsqlLibErr   = regexp.MustCompile(`^Error (\d+) \(severity (\d+)\):$`)
	tsqlRows     = regexp.MustCompile(`^\((\d+) rows? affected\)$`)
	tsqlRetState = regexp.MustCompile(`^\(return status = -?\d+\)$`)
)

const tsqlMarker = "using TDS version "

// tsqlEncryption maps a mode to FreeTDS's "encryption" setting. The PRELOGIN
// byte each sends is pinned by TestPreloginEncryptionByte.
func tsqlEncryption(mode string) string {
	switch mode {
	case EncryptLogin:
		return "request"
	case EncryptFull:
		return "require"
	}
	return "off"
}

func runTSQL(ctx context.Context, spec Spec) (Result, error) {
	res := Result{Client: TSQL, Steps: []StepResult{}}
	dir, err := os.MkdirTemp("", "tdsgate-tsql-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "freetds.conf")
	confText := fmt.Sprintf("[global]\n\ttds version = 7.4\n\tencryption = %s\n\tclient charset = UTF-8\n\tconnect timeout = %d\n\ttimeout = 0\n\ttext size = 2147483647\n",
		tsqlEncryption(spec.Encrypt), spec.TimeoutS)
	if spec.CAFile != "" {
		confText += fmt.Sprintf("\tca file = %s\n\tcheck certificate hostname = yes\n", spec.CAFile)
	}
	// Without "ca file" FreeTDS does not verify the server certificate.
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		return res, err
	}

	args := []string{"-oL", tsqlPath(), "-H", spec.Host, "-p", strconv.Itoa(spec.Port), "-U", spec.User, "-P", spec.Password, "-t", tsqlColSep}
	if spec.Database != "" {
		args = append(args, "-D", spec.Database)
	}
	if spec.App != "" {
		args = append(args, "-a", spec.App)
	}
	env := []string{
		"FREETDSCONF=" + conf,
		"FREETDS=" + dir, // older lookups of the config directory
		"TDSVER=",        // the conf file decides
		"TDSDUMP=",
		"LC_ALL=C.UTF-8",
	}
	cmd := newCmd(ctx, append([]string{"stdbuf"}, args...), env)
	cmd.Env = withoutEnv(cmd.Env, "TDSVER", "TDSDUMP", "TDSPORT", "TDSHOST")
	cmd.Env = append(cmd.Env, env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return res, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw // one pipe: keeps stderr messages in order with rows
	stdin, err := cmd.StdinPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return res, fmt.Errorf("clients: start tsql: %w (install Debian package freetds-bin)", err)
	}
	pw.Close()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	lines := make(chan string, 1024)
	var transcript strings.Builder
	go func() {
		defer close(lines)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// next returns the next cleaned output line, or ok=false at EOF/ctx done.
	next := func() (string, bool) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", false
			}
			if transcript.Len() < maxStderr {
				transcript.WriteString(l)
				transcript.WriteByte('\n')
			}
			return cleanTSQLLine(l), true
		case <-ctx.Done():
			return "", false
		}
	}
	finish := func() (Result, error) {
		stdin.Close()
		var werr error
		select {
		case werr = <-waitDone:
		case <-ctx.Done():
			werr = ctx.Err()
			<-waitDone
		}
		for range lines { // drain
		}
		res.Stderr = transcript.String()
		if ctx.Err() != nil {
			return res, fmt.Errorf("clients: tsql: %w; output:\n%s", ctx.Err(), res.Stderr)
		}
		_ = werr // tsql exits 1 after a failed login: that is data, not a harness error
		return res, nil
	}

	// Login: the first "version" answer means tsql is connected.
	// A write error means tsql already exited (a refused connection can
	// end it before this): its output, read below, says why.
	io.WriteString(stdin, "version\n")
	var pre []string
	for {
		l, ok := next()
		if !ok {
			res.ConnectMS = msSince(start)
			res.LoginError = tsqlFirstError(pre)
			if res.LoginError == nil {
				res.LoginError = &SQLError{Message: "tsql exited before login completed: " + strings.Join(pre, " | ")}
			}
			return finish()
		}
		if strings.HasPrefix(l, tsqlMarker) {
			break
		}
		pre = append(pre, l)
	}
	res.ConnectMS = msSince(start)
	res.Connected = true

	for _, st := range spec.Steps {
		r := StepResult{Op: st.Op, Results: []ResultSet{}, RowCounts: []int64{}}
		t0 := time.Now()
		var sqlText string
		switch st.Op {
		case OpQuery, OpHold:
			sqlText = st.SQL
		case OpBegin:
			sqlText = "BEGIN TRANSACTION"
		case OpCommit:
			sqlText = "COMMIT TRANSACTION"
		case OpRollback:
			sqlText = "ROLLBACK TRANSACTION"
		case OpSleep:
			time.Sleep(time.Duration(st.MS) * time.Millisecond)
			r.OK = true
		default: // param, cancel
			r.Unsupported = true
			r.Error = &SQLError{Message: "tsql does not support op " + st.Op}
		}
		if sqlText != "" {
			if _, err := io.WriteString(stdin, strings.TrimRight(sqlText, "\n")+"\ngo\nversion\n"); err != nil {
				r.Error = &SQLError{Message: "tsql: write: " + err.Error()}
			} else {
				var out []string
				complete := false
				for {
					l, ok := next()
					if !ok {
						break
					}
					if strings.HasPrefix(l, tsqlMarker) {
						complete = true
						break
					}
					out = append(out, l)
				}
				parseTSQLBatch(out, &r)
				if !complete && r.Error == nil {
					r.Error = &SQLError{Message: "tsql exited during the batch: " + strings.Join(out, " | ")}
				}
			}
			r.OK = r.Error == nil
		}
		r.MS = msSince(t0)
		res.Steps = append(res.Steps, r)
	}
	return finish()
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()/10) / 100
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
outer:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// cleanTSQLLine drops what a terminal would overwrite (the connect counter
// "\r 1\r 2\r") and the prompts that prefix the next stdout line.
func cleanTSQLLine(l string) string {
	if i := strings.LastIndexByte(l, '\r'); i >= 0 {
		l = l[i+1:]
	}
	return tsqlPrompt.ReplaceAllString(l, "")
}

// tsqlFirstError returns the first server error (Msg N with severity > 10) in
// lines, else the first FreeTDS library error (as Number 0).
func tsqlFirstError(lines []string) *SQLError {
	var lib *SQLError
	for i := 0; i < len(lines); i++ {
		if m := tsqlMsg.FindStringSubmatch(lines[i]); m != nil {
			num, _ := strconv.Atoi(m[1])
			sev, _ := strconv.Atoi(m[2])
			state, _ := strconv.Atoi(m[3])
			msg := ""
			if i+1 < len(lines) {
				msg = unquoteTSQLMsg(lines[i+1])
			}
			if sev > 10 {
				return &SQLError{Number: num, Class: sev, State: state, Message: msg}
			}
			continue
		}
		if m := tsqlLibErr.FindStringSubmatch(lines[i]); m != nil && lib == nil {
			var parts []string
			for j := i + 1; j < len(lines) && strings.HasPrefix(lines[j], "\t"); j++ {
				parts = append(parts, strings.TrimSpace(lines[j]))
			}
			lib = &SQLError{Message: fmt.Sprintf("FreeTDS error %s (severity %s): %s", m[1], m[2], strings.Join(parts, "; "))}
		}
	}
	return lib
}

func unquoteTSQLMsg(l string) string {
	l = strings.TrimPrefix(l, "\t")
	if len(l) >= 2 && strings.HasPrefix(l, `"`) && strings.HasSuffix(l, `"`) {
		l = l[1 : len(l)-1]
	}
	return l
}

// parseTSQLBatch turns one batch's output lines into results, row counts and
// the first error.
func parseTSQLBatch(lines []string, r *StepResult) {
	var cur *ResultSet
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := tsqlMsg.FindStringSubmatch(l); m != nil {
			num, _ := strconv.Atoi(m[1])
			sev, _ := strconv.Atoi(m[2])
			state, _ := strconv.Atoi(m[3])
			msg := ""
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
				msg = unquoteTSQLMsg(lines[i+1])
				i++
			}
			if sev > 10 && r.Error == nil {
				r.Error = &SQLError{Number: num, Class: sev, State: state, Message: msg}
			}
			continue
		}
		if m := tsqlLibErr.FindStringSubmatch(l); m != nil {
			var parts []string
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
				parts = append(parts, strings.TrimSpace(lines[i+1]))
				i++
			}
			if r.Error == nil {
				r.Error = &SQLError{Message: fmt.Sprintf("FreeTDS error %s (severity %s): %s", m[1], m[2], strings.Join(parts, "; "))}
			}
			continue
		}
		if m := tsqlRows.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			r.RowCounts = append(r.RowCounts, n)
			cur = nil
			continue
		}
		if tsqlRetState.MatchString(l) {
			continue
		}
		if cur == nil {
			r.Results = append(r.Results, ResultSet{Columns: strings.Split(l, tsqlColSep), Rows: [][]any{}})
			cur = &r.Results[len(r.Results)-1]
			continue
		}
		cells := strings.Split(l, tsqlColSep)
		row := make([]any, len(cells))
		for k, c := range cells {
			row[k] = tsqlValue(c)
		}
		cur.Rows = append(cur.Rows, row)
	}
}

// tsqlValue types a text cell back: NULL, integers and floats whose text
// round-trips; anything else stays a string.
func tsqlValue(s string) any {
	if s == "NULL" {
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil && strconv.FormatInt(i, 10) == s {
		return i
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && strconv.FormatFloat(f, 'f', -1, 64) == s {
		return f
	}
	return s
}
