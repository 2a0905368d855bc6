package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// The runbook's sections 6 to 8 with the real sqlcmd (go-sqlcmd, built by
// tools/deps.sh into bin/sqlcmd): the commands below are the runbook's,
// flag for flag. sqlcmd is go-mssqldb underneath, but it differs from the
// other clients in what an operator sees: it prints "(N rows affected)"
// only when the server's DONE says so (CurCmd and DONE_COUNT), login errors
// as "mssql: login error: <message>", encrypts the login by default (-N
// absent), and sends RESETCONNECTION.

// sqlcmdRun runs sqlcmd with args (and extra environment) and returns its
// combined output and exit error.
func (r *runner) sqlcmdRun(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.sqlcmd, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r.debug("$ sqlcmd %s\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

var affectedRe = regexp.MustCompile(`\((\d+) rows? affected\)`)

// affected lists the "(N rows affected)" counts sqlcmd printed, in order.
func affected(out string) []string {
	var n []string
	for _, m := range affectedRe.FindAllStringSubmatch(out, -1) {
		n = append(n, m[1])
	}
	return n
}

// hostOf turns "localhost:1433" into sqlcmd's "localhost,1433".
func sqlcmdServer(addr string) string { return strings.Replace(addr, ":", ",", 1) }

func runbookSQLCmd(ctx context.Context, r *runner) {
	if _, err := os.Stat(r.sqlcmd); err != nil {
		r.fail("%s: %v (bash tools/deps.sh builds go-sqlcmd into bin/sqlcmd)", r.sqlcmd, err)
		return
	}
	s := sqlcmdServer(r.st.tds)
	p := func(n int) string { return Passwords[n-1] }
	type step struct {
		name string
		env  []string
		args []string
		want []string // the "(N rows affected)" counts, in order
		any  bool     // the count depends on the table's contents: any one count
		has  []string // text the output must hold
	}
	steps := []step{
		{name: "6.1 smoke", args: []string{"-S", s, "-U", "sa", "-P", p(1), "-d", "tenant_db", "-Q", "SELECT 1 AS resultado", "-C"},
			want: []string{"1"}, has: []string{"resultado"}},
	}
	for n := 1; n <= 3; n++ {
		steps = append(steps, step{name: fmt.Sprintf("6.2 bucket-%d", n),
			args: []string{"-S", s, "-U", "sa", "-P", p(n), "-d", "tenant_db", "-Q", fmt.Sprintf("SELECT 'bucket-%d' AS bucket, @@SERVERNAME AS server", n), "-C"},
			want: []string{"1"}, has: []string{fmt.Sprintf("sqlserver-bucket-%d", n)}})
	}
	for n := 1; n <= 3; n++ {
		steps = append(steps, step{name: fmt.Sprintf("6.3 direct bucket-%d", n),
			args: []string{"-S", fmt.Sprintf("localhost,%d", 14330+n), "-U", "sa", "-P", p(n), "-d", "tenant_db", "-Q", "SELECT 1", "-C"},
			want: []string{"1"}})
	}
	q := func(sql string) []string {
		return []string{"-S", s, "-U", "sa", "-P", p(1), "-d", "tenant_db", "-Q", sql, "-C"}
	}
	// Leftovers of an interrupted earlier run would change the counts.
	r.sqlcmdRun(ctx, nil, q("DELETE FROM test_table WHERE name IN ('test-exec', 'tx-test');")...)
	steps = append(steps,
		step{name: "7 INSERT", args: q("\nINSERT INTO test_table (name, value) VALUES ('test-exec', 42);\nSELECT SCOPE_IDENTITY() AS inserted_id;\n"),
			want: []string{"1", "1"}, has: []string{"inserted_id"}},
		step{name: "7 SELECT", args: q("\nSELECT TOP 5 * FROM test_table ORDER BY id DESC;\n"), any: true, has: []string{"test-exec"}},
		step{name: "7 UPDATE", args: q("\nUPDATE test_table SET value = 99 WHERE name = 'test-exec';\nSELECT * FROM test_table WHERE name = 'test-exec';\n"),
			want: []string{"1", "1"}, has: []string{"99"}},
		step{name: "7 DELETE", args: q("\nDELETE FROM test_table WHERE name = 'test-exec';\n"), want: []string{"1"}},
		step{name: "8 transaction", args: q("\nBEGIN TRANSACTION;\nINSERT INTO test_table (name, value) VALUES ('tx-test', 100);\nINSERT INTO test_table (name, value) VALUES ('tx-test', 200);\nCOMMIT TRANSACTION;\nSELECT * FROM test_table WHERE name = 'tx-test';\n"),
			want: []string{"1", "1", "2"}, has: []string{"tx-test"}},
		step{name: "8 cleanup", args: q("\nDELETE FROM test_table WHERE name = 'tx-test';\n"), want: []string{"2"}},
		// Section 19.2's query, with an alias and a string result.
		step{name: "19.2 query", args: q("SELECT 'fallback mode works' AS result"), want: []string{"1"}, has: []string{"fallback mode works"}},
	)
	// Encryption: the default (no -N) is TLS for the login only; -N m is
	// TLS for the whole session, -N s is TDS 8.0 (TLS first). Without -C
	// sqlcmd verifies the certificate: trust the stack's own.
	ca := []string{"SSL_CERT_FILE=" + r.tlsCA}
	for _, mode := range []string{"m", "s"} {
		steps = append(steps,
			step{name: "-N " + mode + " through the proxy", env: ca,
				args: []string{"-S", s, "-U", "sa", "-P", p(2), "-d", "tenant_db", "-N", mode, "-Q", "SELECT @@SERVERNAME AS server"},
				want: []string{"1"}, has: []string{"sqlserver-bucket-2"}},
			step{name: "-N " + mode + " direct", env: ca,
				args: []string{"-S", "localhost,14333", "-U", "sa", "-P", p(3), "-d", "tenant_db", "-N", mode, "-Q", "SELECT @@SERVERNAME AS server"},
				want: []string{"1"}, has: []string{"sqlserver-bucket-3"}})
	}
	failed := 0
	for _, st := range steps {
		out, err := r.sqlcmdRun(ctx, st.env, st.args...)
		got := affected(out)
		bad := err != nil || strings.Join(got, ",") != strings.Join(st.want, ",")
		if st.any {
			bad = err != nil || len(got) != 1
		}
		for _, h := range st.has {
			if !strings.Contains(out, h) {
				bad = true
			}
		}
		if bad {
			failed++
			r.fail("%s: exit %v, rows affected %v (want %v), output:\n%s", st.name, err, got, st.want, indent(out))
			continue
		}
		r.debug("%s: rows affected %v", st.name, got)
	}

	// Errors as sqlcmd prints them.
	out, err := r.sqlcmdRun(ctx, nil, "-S", s, "-U", "sa", "-P", "wrong-password", "-d", "tenant_db", "-Q", "SELECT 1", "-C")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, "mssql: login error: ") {
		failed++
		r.fail("a wrong password: exit %v, output:\n%s", err, indent(out))
	} else {
		r.info("a wrong password: %s", firstLineOf(out))
	}
	// Verification is real: without the CA (and without -C) -N m fails.
	out, err = r.sqlcmdRun(ctx, []string{"SSL_CERT_FILE=/dev/null"}, "-S", s, "-U", "sa", "-P", p(1), "-d", "tenant_db", "-N", "m", "-Q", "SELECT 1")
	if err == nil || !strings.Contains(out, "certificate") {
		failed++
		r.fail("-N m with an untrusted certificate: exit %v, output:\n%s", err, indent(out))
	}
	if failed == 0 {
		r.ok("%d runbook sqlcmd commands: every DML step printed its \"(N rows affected)\", the three logins reached their buckets, login-only, -N m and -N s (stack CA) work; a wrong password prints \"mssql: login error:\"", len(steps))
	}
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
