package deployments_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tdsgate/tdsgate/pkg/config"
)

// The local stack's addresses: clients reach HAProxy on 127.0.0.1, HAProxy
// reaches the proxies from haproxySource (local/haproxy.cfg `source`).
const (
	clientIP      = "127.0.0.2" // a second loopback address, for the test's client
	haproxySource = "127.0.0.3"
)

// sessionAccepted matches the proxies' "session accepted" log line.
var sessionAccepted = regexp.MustCompile(`msg="session accepted".* client=(\S+)`)

// logOffsets returns the size of each proxy's log (they are appended across
// runs), so that only what this run writes is read.
func logOffsets(runDir string) map[string]int64 {
	out := map[string]int64{}
	for n := 1; n <= 3; n++ {
		f := filepath.Join(runDir, fmt.Sprintf("proxy-%d.log", n))
		if st, err := os.Stat(f); err == nil {
			out[f] = st.Size()
		}
	}
	return out
}

// logSince returns what each proxy's log gained since offsets.
func logSince(t *testing.T, runDir string, offsets map[string]int64) map[string]string {
	t.Helper()
	out := map[string]string{}
	for n := 1; n <= 3; n++ {
		f := filepath.Join(runDir, fmt.Sprintf("proxy-%d.log", n))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if off := offsets[f]; off <= int64(len(b)) {
			b = b[off:]
		}
		out[fmt.Sprintf("proxy-%d", n)] = string(b)
	}
	return out
}

// recordingDialer dials from a chosen local address and remembers the
// local address of each connection it made.
type recordingDialer struct {
	d     net.Dialer
	mu    sync.Mutex
	local []string
}

func (r *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := r.d.DialContext(ctx, network, addr)
	if err == nil {
		r.mu.Lock()
		r.local = append(r.local, c.LocalAddr().String())
		r.mu.Unlock()
	}
	return c, err
}

// loginFrom logs in through addr from source (sa, the first runbook
// password, tenant_db), runs SELECT 1 and closes. It returns the client's
// local address.
func loginFrom(ctx context.Context, source, addr string) (string, error) {
	u := &url.URL{Scheme: "sqlserver", User: url.UserPassword("sa", runbookPasswords[0]), Host: addr}
	q := url.Values{}
	q.Set("database", "tenant_db")
	q.Set("encrypt", "false")
	q.Set("TrustServerCertificate", "true")
	q.Set("app name", "tdsgate-realaddr-test")
	q.Set("dial timeout", "5")
	u.RawQuery = q.Encode()
	c, err := mssql.NewConnector(u.String())
	if err != nil {
		return "", err
	}
	rd := &recordingDialer{d: net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}}
	c.Dialer = rd
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxIdleConns(0)
	var one int
	err = db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if len(rd.local) == 0 {
		return "", fmt.Errorf("no connection made: %v", err)
	}
	if err == nil && one != 1 {
		err = fmt.Errorf("SELECT 1 returned %d", one)
	}
	return rd.local[len(rd.local)-1], err
}

// checkRealClientAddress runs against the local stack, up: a client bound
// to 127.0.0.2 logs in through HAProxy (1433, all proxies; 11433, proxy-1
// alone) and the proxy's "session accepted" line names 127.0.0.2 and the
// client's own port; no session this run was logged with HAProxy's
// address. And max_pending_per_source counts the real client: 127.0.0.2
// holding its quota of connections on proxy-1 is refused one more, while
// a client from 127.0.0.1 still logs in there.
func checkRealClientAddress(t *testing.T, runDir string, offsets map[string]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, via := range []struct{ addr, proxy string }{{"127.0.0.1:1433", ""}, {"127.0.0.1:11433", "proxy-1"}} {
		local, err := loginFrom(ctx, clientIP, via.addr)
		if err != nil {
			t.Errorf("login from %s through %s: %v", clientIP, via.addr, err)
			continue
		}
		found := ""
		deadline := time.Now().Add(5 * time.Second)
		for found == "" && time.Now().Before(deadline) {
			for proxy, log := range logSince(t, runDir, offsets) {
				for _, m := range sessionAccepted.FindAllStringSubmatch(log, -1) {
					if m[1] == local {
						found = proxy
					}
				}
			}
			if found == "" {
				time.Sleep(50 * time.Millisecond)
			}
		}
		switch {
		case found == "":
			t.Errorf("no proxy logged `session accepted ... client=%s` for the login from %s through %s", local, clientIP, via.addr)
		case via.proxy != "" && found != via.proxy:
			t.Errorf("the login through %s was logged by %s, want %s", via.addr, found, via.proxy)
		default:
			t.Logf("login from %s through %s: %s logged session accepted client=%s", clientIP, via.addr, found, local)
		}
	}

	// Every session of this run (the scenarios' and ours) was logged with
	// a client address, none with HAProxy's.
	byIP := map[string]int{}
	for proxy, log := range logSince(t, runDir, offsets) {
		for _, m := range sessionAccepted.FindAllStringSubmatch(log, -1) {
			host, _, err := net.SplitHostPort(m[1])
			if err != nil {
				t.Errorf("%s: session accepted with client %q", proxy, m[1])
				continue
			}
			byIP[host]++
		}
	}
	t.Logf("session accepted lines this run, by client address: %v", byIP)
	if byIP[haproxySource] > 0 {
		t.Errorf("%d sessions logged with HAProxy's address %s as the client", byIP[haproxySource], haproxySource)
	}
	if byIP[clientIP] < 2 || byIP["127.0.0.1"] == 0 {
		t.Errorf("session accepted by address %v: want the scenarios' (127.0.0.1) and ours (%s)", byIP, clientIP)
	}

	checkPerSourceLimit(t, ctx, runDir)
}

// checkPerSourceLimit: max_pending_per_source counts the real client.
// 127.0.0.2 fills its quota on proxy-1 (through 11433, proxy-1 alone) with
// connections that send nothing; one more from 127.0.0.2 is closed, and
// the refusal is logged with 127.0.0.2 as the peer; a login from
// 127.0.0.1 still goes through (were the limit counting HAProxy's
// address, it would be refused too). Once they close, 127.0.0.2 logs in.
func checkPerSourceLimit(t *testing.T, ctx context.Context, runDir string) {
	cfg, err := config.Load(filepath.Join("local", "proxy-1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	max := cfg.MaxPendingPerSource
	if max <= 0 || max > 256 {
		t.Fatalf("local/proxy-1.yaml max_pending_per_source %d: want a small cap", max)
	}
	const via = "127.0.0.1:11433"
	offsets := logOffsets(runDir)
	_, release := holdPending(t, clientIP, via, max)
	defer release()
	// HAProxy connects to proxy-1 and sends each header right after the
	// client's accept; give proxy-1 the time to count them.
	time.Sleep(500 * time.Millisecond)
	extra, releaseExtra := holdPending(t, clientIP, via, 1)
	defer releaseExtra()
	if !closedByPeer(extra[0], 5*time.Second) {
		t.Errorf("connection %d from %s to proxy-1 (max_pending_per_source %d) was not closed", max+1, clientIP, max)
	}
	if _, err := loginFrom(ctx, clientIP, via); err == nil {
		t.Errorf("a login from %s succeeded with its %d pending connections on proxy-1", clientIP, max)
	}
	if _, err := loginFrom(ctx, "127.0.0.1", via); err != nil {
		t.Errorf("a login from 127.0.0.1 while %s holds its quota on proxy-1: %v (the limit must count the real client, not HAProxy)", clientIP, err)
	}
	var refusals []string
	for l := range strings.Lines(logSince(t, runDir, offsets)["proxy-1"]) {
		if strings.Contains(l, "reason=max_pending_per_source") {
			refusals = append(refusals, strings.TrimSpace(l))
		}
	}
	if len(refusals) == 0 || !strings.Contains(refusals[0], "remote="+clientIP+":") {
		t.Errorf("proxy-1's refusal lines %q: want one naming %s", refusals, clientIP)
	} else {
		t.Logf("proxy-1: %s", refusals[0])
	}
	release()
	releaseExtra()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := loginFrom(ctx, clientIP, via)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s cannot log in 5s after closing its pending connections: %v", clientIP, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdPending opens n connections from source to addr that send nothing
// (not logged in: pending for max_pending_per_source). close ends them.
func holdPending(t *testing.T, source, addr string, n int) (conns []net.Conn, closeAll func()) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, source, err)
		}
		conns = append(conns, c)
	}
	return conns, func() {
		for _, c := range conns {
			c.Close()
		}
	}
}

// closedByPeer reports whether c is closed by the other side within d
// (a read returns EOF or a reset rather than timing out).
func closedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	if err == nil {
		return false
	}
	var ne net.Error
	if ok := asNetErr(err, &ne); ok && ne.Timeout() {
		return false
	}
	return true
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}
