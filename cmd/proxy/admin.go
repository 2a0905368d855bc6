package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/config"
)

// EnvConfig names the config file `proxy admin` reads its defaults from
// when -config is not given.
const EnvConfig = "TDSGATE_CONFIG"

// adminTimeout bounds one admin request (a fleet command waits up to 3 s
// for the instances' answers).
const adminTimeout = 15 * time.Second

const adminUsage = `usage: proxy admin [flags] COMMAND [ARGS]

Commands (the admin API on admin_listen):
  buckets                 per bucket: max and its source, global count, held here, queued,
                          idle pooled, pool mode, breaker, fallback, paused
  sessions                live sessions (--bucket, --user, --state filter)
  pools                   pooled connections by state, per bucket and sub-pool
  instances               every live instance in Redis: heartbeat age, incarnation, holdings
  kill ID                 end session ID (the client reads error 50012)
  pause BUCKET [--fleet]  new logins to BUCKET queue (queue_timeout still applies)
  resume BUCKET [--fleet] admit again
  drain BUCKET [--fleet]  close BUCKET's idle pooled connections
  reload                  reload the config file (as SIGHUP)

Flags (anywhere on the line):
`

// adminCLI is one `proxy admin` invocation.
type adminCLI struct {
	addr, tokenFile, configPath, output string
	bucket, user, state                 string
	fleet                               bool
	stdout                              io.Writer
}

// runAdmin runs `proxy admin args…` and returns its exit code.
func runAdmin(args []string, stdout, stderr io.Writer) int {
	c := &adminCLI{stdout: stdout}
	fs := flag.NewFlagSet("proxy admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "", "admin API address (default: admin_listen from the config file, else "+config.DefaultAdminListen+")")
	fs.StringVar(&c.tokenFile, "token-file", "", "bearer token file (default: admin_auth.token_file from the config file)")
	fs.StringVar(&c.configPath, "config", os.Getenv(EnvConfig), "config file to take --addr and --token-file from (env "+EnvConfig+")")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.StringVar(&c.bucket, "bucket", "", "sessions: only this bucket")
	fs.StringVar(&c.user, "user", "", "sessions: only this user")
	fs.StringVar(&c.state, "state", "", "sessions: only this state (handshake, queued, connecting, active, idle-in-transaction, pinned, closing)")
	fs.BoolVar(&c.fleet, "fleet", false, "pause, resume, drain: every instance, through Redis")
	fs.Usage = func() {
		fmt.Fprint(stderr, adminUsage)
		fs.PrintDefaults()
	}
	// Flags may follow the command and its arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) == 0 {
		fs.Usage()
		return 2
	}
	if c.output != "table" && c.output != "json" {
		fmt.Fprintf(stderr, "proxy admin: -o %q: want table or json\n", c.output)
		return 2
	}
	if err := c.run(pos[0], pos[1:]); err != nil {
		fmt.Fprintln(stderr, "proxy admin:", err)
		return 1
	}
	return 0
}

// defaults fills --addr and --token-file from the config file.
func (c *adminCLI) defaults() error {
	if c.configPath != "" && (c.addr == "" || c.tokenFile == "") {
		cfg, err := config.Load(c.configPath)
		if err != nil {
			return fmt.Errorf("reading %s for the admin address: %w", c.configPath, err)
		}
		if c.addr == "" {
			if cfg.AdminListen == "" {
				return fmt.Errorf("%s: admin_listen is empty (the admin API is off)", c.configPath)
			}
			c.addr = dialable(cfg.AdminListen)
		}
		if c.tokenFile == "" {
			c.tokenFile = cfg.AdminAuth.TokenFile
		}
	}
	if c.addr == "" {
		c.addr = config.DefaultAdminListen
	}
	return nil
}

// dialable turns a listen address into one to connect to: a wildcard host
// becomes loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

func (c *adminCLI) run(cmd string, args []string) error {
	want := func(n int, what string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %s", cmd, what)
		}
		return nil
	}
	if err := c.defaults(); err != nil {
		return err
	}
	switch cmd {
	case "buckets", "pools", "instances", "reload":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
	case "sessions":
		if err := want(0, "no arguments (filters: --bucket, --user, --state)"); err != nil {
			return err
		}
	case "kill":
		if err := want(1, "a session id"); err != nil {
			return err
		}
	case "pause", "resume", "drain":
		if err := want(1, "a bucket id"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown command %q (buckets, sessions, pools, instances, kill, pause, resume, drain, reload)", cmd)
	}
	switch cmd {
	case "buckets":
		var v []admin.Bucket
		return c.show("GET", "/admin/buckets", &v, func(w io.Writer) { renderBuckets(w, v) })
	case "sessions":
		q := url.Values{}
		for k, v := range map[string]string{"bucket": c.bucket, "user": c.user, "state": c.state} {
			if v != "" {
				q.Set(k, v)
			}
		}
		path := "/admin/sessions"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var v []admin.Session
		return c.show("GET", path, &v, func(w io.Writer) { renderSessions(w, v) })
	case "pools":
		var v []admin.Pool
		return c.show("GET", "/admin/pools", &v, func(w io.Writer) { renderPools(w, v) })
	case "instances":
		var v admin.Instances
		return c.show("GET", "/admin/instances", &v, func(w io.Writer) { renderInstances(w, v) })
	case "kill":
		var v admin.Killed
		return c.show("POST", "/admin/sessions/"+url.PathEscape(args[0])+"/kill", &v, func(w io.Writer) { renderKilled(w, v) })
	case "reload":
		var v admin.Reload
		return c.show("POST", "/admin/reload", &v, func(w io.Writer) { renderReload(w, v) })
	default:
		path := "/admin/buckets/" + url.PathEscape(args[0]) + "/" + cmd
		if c.fleet {
			path += "?fleet=1"
		}
		var v admin.Action
		return c.show("POST", path, &v, func(w io.Writer) { renderAction(w, v) })
	}
}

// show makes the request, decodes the answer into v and prints it: as
// JSON (-o json, the API's body as is) or with render.
func (c *adminCLI) show(method, path string, v any, render func(io.Writer)) error {
	body, status, err := c.request(method, path)
	if err != nil {
		return err
	}
	decodeErr := json.Unmarshal(body, v)
	// A failed reload answers 422 with its errors: show them.
	if status != http.StatusOK && !(status == http.StatusUnprocessableEntity && decodeErr == nil) {
		var e admin.ErrorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %d: %s", method, path, status, e.Error)
		}
		return fmt.Errorf("%s %s: %d: %s", method, path, status, strings.TrimSpace(string(body)))
	}
	if decodeErr != nil {
		return fmt.Errorf("%s %s: %w", method, path, decodeErr)
	}
	if c.output == "json" {
		c.stdout.Write(body)
	} else {
		render(c.stdout)
	}
	if status != http.StatusOK {
		return errors.New("reload failed, the running config is unchanged")
	}
	return nil
}

func (c *adminCLI) request(method, path string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, nil)
	if err != nil {
		return nil, 0, err
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, 0, fmt.Errorf("token file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, resp.StatusCode, fmt.Errorf("%s %s: 401 unauthorized: give the admin token with --token-file (admin_auth.token_file)", method, path)
	}
	return b, resp.StatusCode, err
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
func (t *table) flush()             { t.tw.Flush() }

func itoa[T ~int | ~int64 | ~uint64](n T) string { return fmt.Sprint(n) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func renderBuckets(w io.Writer, bs []admin.Bucket) {
	t := newTable(w, "BUCKET", "MAX", "SOURCE", "GLOBAL", "HELD", "QUEUED", "IDLE", "POOL", "BREAKER", "FALLBACK", "PAUSED")
	for _, b := range bs {
		global := itoa(b.GlobalCount)
		if b.GlobalCount < 0 {
			global = "?"
		}
		t.row(b.Bucket, itoa(b.Max), b.MaxSource, global, itoa(b.Held), itoa(b.Queued), itoa(b.IdlePooled), b.PoolMode, b.Breaker, b.Fallback, yesNo(b.Paused))
	}
	t.flush()
}

func renderSessions(w io.Writer, ss []admin.Session) {
	t := newTable(w, "ID", "CLIENT", "USER", "DATABASE", "APP", "BUCKET", "STATE", "START", "IN", "OUT", "RELAY", "TLS")
	for _, s := range ss {
		st := s.State
		if s.PinReason != "" {
			st += "(" + s.PinReason + ")"
		}
		t.row(itoa(s.ID), s.Client, dash(s.User), dash(s.Database), dash(s.App), dash(s.Bucket), st,
			s.Start.UTC().Format(time.RFC3339), itoa(s.BytesFromClient), itoa(s.BytesToClient), dash(s.RelayMode), dash(s.Encryption))
	}
	t.flush()
}

func renderPools(w io.Writer, ps []admin.Pool) {
	t := newTable(w, "BUCKET", "MODE", "LOGIN", "ACTIVE", "RESETTING", "IDLE", "SUB-POOL (user/database/app)", "OLDEST IDLE")
	for _, p := range ps {
		t.row(p.Bucket, p.PoolMode, itoa(p.Login), itoa(p.Active), itoa(p.Resetting), itoa(p.Idle), "-", "-")
		for _, sp := range p.SubPools {
			t.row("", "", itoa(sp.Login), itoa(sp.Active), itoa(sp.Resetting), itoa(sp.Idle),
				dash(sp.User)+"/"+dash(sp.Database)+"/"+dash(sp.App), (time.Duration(sp.OldestIdleMS) * time.Millisecond).String())
		}
	}
	t.flush()
}

func holdings(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+itoa(m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func renderInstances(w io.Writer, v admin.Instances) {
	t := newTable(w, "INSTANCE", "INCARNATION", "HEARTBEAT AGE", "FENCED", "HOLDINGS")
	sum := map[string]int64{}
	for _, in := range v.Instances {
		id := in.ID
		if in.Self {
			id += " *"
		}
		age := "-"
		if in.HeartbeatAgeMS >= 0 {
			age = (time.Duration(in.HeartbeatAgeMS) * time.Millisecond).String()
		}
		t.row(id, dash(in.Incarnation), age, yesNo(in.Fenced), holdings(in.Holdings))
		for b, n := range in.Holdings {
			sum[b] += n
		}
	}
	t.flush()
	if !v.Redis {
		fmt.Fprintln(w, "standalone (no redis): this instance only")
	}
	fmt.Fprintln(w)
	t = newTable(w, "BUCKET", "COUNT", "SUM OF HOLDINGS")
	keys := make([]string, 0, len(v.Counts))
	for k := range v.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.row(k, itoa(v.Counts[k]), itoa(sum[k]))
	}
	t.flush()
}

func renderKilled(w io.Writer, v admin.Killed) {
	sent := "the client was sent error 50012"
	if !v.ErrorSent {
		sent = "closed without an error message"
	}
	fmt.Fprintf(w, "killed session %d (bucket %s, state %s): %s\n", v.ID, dash(v.Bucket), v.State, sent)
}

func renderAction(w io.Writer, v admin.Action) {
	scope := "this instance"
	if v.Fleet {
		scope = fmt.Sprintf("fleet: %d live instances, %d reached, %d answered", v.Live, v.Receivers, len(v.Acks))
	}
	fmt.Fprintf(w, "%s %s (%s)\n", v.Action, v.Bucket, scope)
	if v.Fleet && (len(v.Acks) < v.Live || v.Receivers < v.Live) {
		fmt.Fprintf(w, "WARNING: %d of %d live instances did not answer: run the command on them directly\n", v.Live-len(v.Acks), v.Live)
	}
	t := newTable(w, "INSTANCE", "OK", "PAUSED", "CLOSED", "ERROR")
	for _, a := range v.Acks {
		t.row(a.Instance, yesNo(a.OK), yesNo(a.Paused), itoa(a.Closed), dash(a.Error))
	}
	t.flush()
}

func renderReload(w io.Writer, v admin.Reload) {
	if v.OK {
		fmt.Fprintf(w, "reloaded: %d buckets, %d routes\n", v.Buckets, v.Routes)
		return
	}
	fmt.Fprintln(w, "reload failed; the running config is unchanged")
	t := newTable(w, "PATH", "ERROR")
	for _, e := range v.Errors {
		t.row(dash(e.Path), e.Message)
	}
	t.flush()
}
