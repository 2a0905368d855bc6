package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/cluster"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

const (
	poolBucket = "bucket-pool"
	pooledApp  = "pooled-app"
	adminToken = "admin-t0ken-for-tests"
)

// adminEnv is three instances with the admin API on, in front of one
// stand-in: bucket-001 (pool_mode none, default route) and bucket-pool
// (pool_mode session, application "pooled-app"). proxy-1's admin API
// binds 0.0.0.0 with a token; the others bind loopback without one.
type adminEnv struct {
	*env
	token string
}

func setupAdmin(t *testing.T) *adminEnv {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tok, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := cluster.Bucket{MaxConnections: 10, MaxQueueSize: 50, QueueTimeout: 20 * time.Second}
	e := setup(t, 3, b, func(c *cluster.Config) {
		c.Buckets = append(c.Buckets, cluster.Bucket{ID: poolBucket, Address: c.Buckets[0].Address, MaxConnections: 10,
			MaxQueueSize: 10, QueueTimeout: 20 * time.Second, PoolMode: "session"})
		c.AppRoutes = map[string]string{pooledApp: poolBucket}
		c.Admin = true
		if c.InstanceID == "proxy-1" {
			c.AdminHost, c.AdminTokenFile = "0.0.0.0", tok
		}
	})
	return &adminEnv{env: e, token: tok}
}

// cli runs `proxy admin` (the binary under test) against p's admin API,
// with the token file, and returns its stdout; it fails the test on a
// non-zero exit.
func (e *adminEnv) cli(t *testing.T, p *cluster.Proxy, args ...string) []byte {
	t.Helper()
	out, err := e.cliErr(t, p, true, args...)
	if err != nil {
		t.Fatalf("proxy admin %s on %s: %v", strings.Join(args, " "), p.ID, err)
	}
	return out
}

func (e *adminEnv) cliErr(t *testing.T, p *cluster.Proxy, withToken bool, args ...string) ([]byte, error) {
	argv := []string{"admin", "--addr", dialAddr(p.AdminAddr())}
	if withToken {
		argv = append(argv, "--token-file", e.token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cluster.Binary(t), append(argv, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return out, nil
}

func dialAddr(listen string) string {
	host, port, _ := net.SplitHostPort(listen)
	if host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func cliJSON[T any](t *testing.T, e *adminEnv, p *cluster.Proxy, args ...string) T {
	t.Helper()
	var v T
	out := e.cli(t, p, append(args, "-o", "json")...)
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("proxy admin %v: %v: %s", args, err, out)
	}
	return v
}

func bucketRow(t *testing.T, e *adminEnv, p *cluster.Proxy, id string) admin.Bucket {
	t.Helper()
	for _, b := range cliJSON[[]admin.Bucket](t, e, p, "buckets") {
		if b.Bucket == id {
			return b
		}
	}
	t.Fatalf("%s: no bucket %s in proxy admin buckets", p.ID, id)
	return admin.Bucket{}
}

func portOf(t *testing.T, addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClusterAdminConsole drives `proxy admin` against three instances,
// real Redis and a stand-in (issue 18's "must show"):
//   - instances lists the three, and their holdings sum to Redis's count;
//   - sessions lists a real client's (go-mssqldb) session with its user
//     and bucket; kill ends it, the client reads error 50012, and the slot
//     is released exactly once;
//   - pause --fleet makes new logins queue on every instance; resume
//     --fleet admits them before their queue_timeout;
//   - drain closes idle pooled connections: the stand-in's session count
//     drops;
//   - a request without the token to the non-loopback admin address gets
//     401.
func TestClusterAdminConsole(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	e := setupAdmin(t)
	p1, p2, p3 := e.proxies[0], e.proxies[1], e.proxies[2]

	// Held sessions: two on proxy-1, one on proxy-2.
	for _, p := range []*cluster.Proxy{p1, p1, p2} {
		if err := query(mustLogin(t, p.Addr)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("instances", func(t *testing.T) {
		waitFor(t, 5*time.Second, "redis count 3", func() bool { return e.count(t) == 3 })
		v := cliJSON[admin.Instances](t, e, p3, "instances")
		var ids []string
		sum := int64(0)
		for _, in := range v.Instances {
			ids = append(ids, in.ID)
			sum += in.Holdings[bucketID]
			if in.Incarnation == "" || in.HeartbeatAgeMS < 0 || in.Fenced {
				t.Errorf("instance %+v: want an incarnation, a live heartbeat, not fenced", in)
			}
			if in.Self != (in.ID == "proxy-3") {
				t.Errorf("instance %s: self %v", in.ID, in.Self)
			}
		}
		if !slices.Equal(ids, []string{"proxy-1", "proxy-2", "proxy-3"}) || !v.Redis {
			t.Fatalf("instances %v (redis %v), want proxy-1..3", ids, v.Redis)
		}
		if redisCount := e.count(t); sum != redisCount || v.Counts[bucketID] != redisCount || sum != 3 {
			t.Fatalf("holdings sum %d, reported count %d, redis count %d: want all 3", sum, v.Counts[bucketID], redisCount)
		}
		table := string(e.cli(t, p3, "instances"))
		for _, re := range []string{`proxy-1 .* bucket-001=2`, `proxy-2 .* bucket-001=1`, `proxy-3 \*`, `(?m)^bucket-001\s+3\s+3$`} {
			if !regexp.MustCompile(re).MatchString(table) {
				t.Fatalf("instances table does not match %q:\n%s", re, table)
			}
		}
	})

	for _, enc := range []string{clients.EncryptNone, clients.EncryptFull} {
		t.Run("sessions and kill "+enc, func(t *testing.T) { e.killRealClient(t, p2, enc) })
	}

	t.Run("pause fleet then resume", func(t *testing.T) {
		out := cliJSON[admin.Action](t, e, p1, "pause", bucketID, "--fleet")
		if out.Receivers != 3 || out.Live != 3 || len(out.Acks) != 3 {
			t.Fatalf("pause --fleet: %+v, want 3 acks", out)
		}
		for _, a := range out.Acks {
			if !a.OK || !a.Paused {
				t.Fatalf("ack %+v", a)
			}
		}
		for _, p := range e.proxies {
			if !bucketRow(t, e, p, bucketID).Paused {
				t.Fatalf("%s: bucket not paused", p.ID)
			}
		}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for _, p := range e.proxies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := login(p.Addr, 30*time.Second)
				if err != nil {
					errs <- fmt.Errorf("login via %s: %w", p.ID, err)
					return
				}
				defer c.Close()
				errs <- query(c)
			}()
		}
		// Every instance has its login queued (the bucket has 7 free slots).
		for _, p := range e.proxies {
			waitFor(t, 10*time.Second, p.ID+": a login queued", func() bool { return bucketRow(t, e, p, bucketID).Queued == 1 })
		}
		time.Sleep(time.Second)
		for _, p := range e.proxies {
			if q := bucketRow(t, e, p, bucketID).Queued; q != 1 {
				t.Fatalf("%s: %d queued after 1 s paused, want 1", p.ID, q)
			}
		}
		if c := e.count(t); c != 3 {
			t.Fatalf("redis count %d while paused, want 3", c)
		}
		// A queued login killed: its client reads 50012 as the login answer.
		victim := make(chan error, 1)
		go func() {
			c, err := dialApp(p2.Addr, "queued-victim")
			if err == nil {
				c.Close()
			}
			victim <- err
		}()
		var vs admin.Session
		waitFor(t, 10*time.Second, "the victim queued", func() bool {
			for _, x := range cliJSON[[]admin.Session](t, e, p2, "sessions", "--state", "queued") {
				if x.App == "queued-victim" {
					vs = x
					return true
				}
			}
			return false
		})
		e.cli(t, p2, "kill", strconv.FormatUint(vs.ID, 10))
		if err := <-victim; errNumber(err) != 50012 {
			t.Fatalf("killed while queued: %v, want login error 50012", err)
		}
		waitFor(t, 5*time.Second, "proxy-2's queue back to 1", func() bool { return bucketRow(t, e, p2, bucketID).Queued == 1 })
		// Logged into the "all instances" table too.
		if rows := string(e.cli(t, p1, "buckets")); !strings.Contains(rows, "yes") {
			t.Fatalf("buckets table shows no paused bucket:\n%s", rows)
		}
		out = cliJSON[admin.Action](t, e, p3, "resume", bucketID, "--fleet")
		if len(out.Acks) != 3 {
			t.Fatalf("resume --fleet: %+v", out)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if waited := time.Since(start); waited >= 20*time.Second {
			t.Fatalf("admitted after %s: not before the queue_timeout (20s)", waited)
		}
	})

	t.Run("drain", func(t *testing.T) {
		// The sessions of the earlier subtests have ended at the stand-in:
		// the three held on bucket-001 remain.
		const base = 3
		waitFor(t, 10*time.Second, "stand-in back to the 3 held sessions", func() bool { return e.standin.Stats().Current == base })
		// A pooled session killed mid-request: the client reads 50012, and
		// its backend connection is closed, not pooled.
		k, err := dialApp(p3.Addr, pooledApp)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if err := k.Send("WAITFOR DELAY '00:00:08'", 0); err != nil {
			t.Fatal(err)
		}
		var ks admin.Session
		waitFor(t, 10*time.Second, "the pooled session, active", func() bool {
			for _, x := range cliJSON[[]admin.Session](t, e, p3, "sessions", "--bucket", poolBucket, "--state", "active") {
				ks = x
				return x.RelayMode == "framed"
			}
			return false
		})
		time.Sleep(300 * time.Millisecond)
		e.cli(t, p3, "kill", strconv.FormatUint(ks.ID, 10))
		k.SetDeadline(time.Now().Add(10 * time.Second))
		kr, err := k.Read()
		if err != nil || len(kr.Errors) == 0 || kr.Errors[0].Number != 50012 {
			t.Fatalf("pooled client after the kill: %+v, %v; want error 50012", kr, err)
		}
		waitFor(t, 10*time.Second, "the killed pooled connection gone at the stand-in", func() bool { return e.standin.Stats().Current == base })
		if b := bucketRow(t, e, p3, poolBucket); b.IdlePooled != 0 || b.Held != 0 {
			t.Fatalf("after the pooled kill: %+v, want nothing pooled or held", b)
		}
		if !slices.ContainsFunc(p3.LogLines("slot release"), func(l string) bool { return strings.Contains(l, "killed=true") }) {
			t.Fatalf("no killed slot release:\n%s", p3.Tail(20))
		}

		// Three pooled clients on proxy-3 log in, query and leave: their
		// backend connections stay idle in the pool, each with its slot.
		var cs []interface{ Close() error }
		for i := 0; i < 3; i++ {
			c, err := dialApp(p3.Addr, pooledApp)
			if err != nil {
				t.Fatal(err)
			}
			if err := query(c); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		for _, c := range cs {
			c.Close()
		}
		waitFor(t, 10*time.Second, "three idle pooled connections", func() bool {
			return bucketRow(t, e, p3, poolBucket).IdlePooled == 3
		})
		if cur := e.standin.Stats().Current; cur != base+3 {
			t.Fatalf("stand-in sessions %d, want %d (+3 idle pooled)", cur, base+3)
		}
		pools := cliJSON[[]admin.Pool](t, e, p3, "pools")
		i := slices.IndexFunc(pools, func(p admin.Pool) bool { return p.Bucket == poolBucket })
		if i < 0 || pools[i].Idle != 3 || len(pools[i].SubPools) != 1 || pools[i].SubPools[0].User != "sa" || pools[i].SubPools[0].Idle != 3 {
			t.Fatalf("pools %+v", pools)
		}
		out := cliJSON[admin.Action](t, e, p3, "drain", poolBucket)
		if len(out.Acks) != 1 || out.Acks[0].Closed != 3 {
			t.Fatalf("drain: %+v, want 3 closed", out)
		}
		waitFor(t, 5*time.Second, "stand-in session count drops to the held sessions", func() bool { return e.standin.Stats().Current == base })
		waitFor(t, 5*time.Second, "pool bucket's redis count 0", func() bool {
			return redistest.Int(t, e.rc, "GET", limiter.KeyCount(poolBucket)) == 0
		})
		if b := bucketRow(t, e, p3, poolBucket); b.IdlePooled != 0 {
			t.Fatalf("after drain: %+v", b)
		}
	})

	t.Run("401 without the token", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(p1.AdminAddr())
		host := nonLoopbackIP()
		resp, err := http.Get("http://" + net.JoinHostPort(host, port) + "/admin/buckets")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /admin/buckets without a token on %s (bound %s): %d, want 401", host, p1.AdminAddr(), resp.StatusCode)
		}
		req, _ := http.NewRequest("GET", "http://"+net.JoinHostPort(host, port)+"/admin/buckets", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("with the token: %d", resp.StatusCode)
		}
		if _, err := e.cliErr(t, p1, false, "buckets"); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("proxy admin without --token-file: %v, want a 401", err)
		}
		// An unauthorized POST changes nothing.
		resp, err = http.Post("http://"+net.JoinHostPort(host, port)+"/admin/buckets/"+bucketID+"/pause", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || bucketRow(t, e, p1, bucketID).Paused {
			t.Fatalf("unauthorized pause: %d", resp.StatusCode)
		}
	})
}

func dialApp(addr, app string) (*tdsclient.Conn, error) {
	return tdsclient.Dial(context.Background(), tdsclient.Options{Addr: addr, User: "sa", Password: password,
		Database: "tenant_db", App: app, Timeout: 10 * time.Second})
}

// killRealClient runs a go-mssqldb client through p with a long WAITFOR,
// finds its session with `proxy admin sessions`, kills it, and checks
// that the client read error 50012 and that the slot went back once.
func (e *adminEnv) killRealClient(t *testing.T, p *cluster.Proxy, enc string) {
	before, count := e.standin.Stats().Current, e.count(t)
	app := "admin-kill-" + enc
	type res struct {
		r   clients.Result
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := clients.Run(context.Background(), clients.GoMSSQL, clients.Spec{
			Host: "127.0.0.1", Port: portOf(t, p.Addr), User: "sa", Password: password, Database: "tenant_db",
			Encrypt: enc, App: app, TimeoutS: 20,
			Steps: []clients.Step{{Op: clients.OpHold, SQL: "WAITFOR DELAY '00:00:08'"}},
		})
		done <- res{r, err}
	}()
	var s admin.Session
	waitFor(t, 20*time.Second, "the client's session, active, in proxy admin sessions", func() bool {
		for _, x := range cliJSON[[]admin.Session](t, e, p, "sessions", "--user", "sa", "--bucket", bucketID, "--state", "active") {
			if x.App == app {
				s = x
				return true
			}
		}
		return false
	})
	wantRelay := map[string]string{clients.EncryptNone: "splice", clients.EncryptFull: "tls"}[enc]
	if s.User != "sa" || s.Bucket != bucketID || s.Database != "tenant_db" || s.RelayMode != wantRelay ||
		s.Encryption != enc || !strings.HasPrefix(s.Client, "127.0.0.1:") || s.BytesFromClient == 0 || s.BytesToClient == 0 {
		t.Fatalf("session row %+v (want relay %s)", s, wantRelay)
	}
	if table := string(e.cli(t, p, "sessions")); !strings.Contains(table, app) || !strings.Contains(table, "active") {
		t.Fatalf("sessions table lacks the client:\n%s", table)
	}
	waitFor(t, 5*time.Second, "redis count +1", func() bool { return e.count(t) == count+1 })
	// Let the WAITFOR reach the backend: the request is in flight.
	time.Sleep(300 * time.Millisecond)
	id := strconv.FormatUint(s.ID, 10)
	out := string(e.cli(t, p, "kill", id))
	if !strings.Contains(out, "killed session "+id) || !strings.Contains(out, "error 50012") {
		t.Fatalf("kill printed %q", out)
	}
	var r res
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the killed client did not return")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.r.Connected || len(r.r.Steps) != 1 || r.r.Steps[0].Error == nil || r.r.Steps[0].Error.Number != 50012 ||
		!strings.Contains(r.r.Steps[0].Error.Message, "administrator") {
		t.Fatalf("client result %+v (stderr %s): want its request to fail with error 50012", r.r, r.r.Stderr)
	}
	if r.r.Steps[0].MS > 7000 {
		t.Fatalf("the client's request returned after %.0f ms: the kill did not end it", r.r.Steps[0].MS)
	}
	// The slot went back once.
	waitFor(t, 5*time.Second, "redis count back", func() bool { return e.count(t) == count })
	// The kill sent the backend an ATTENTION: the stand-in stops the
	// WAITFOR (8 s) and its session ends well before it would have.
	attns := e.standin.Stats().Attns
	took := waitFor(t, 15*time.Second, "stand-in session gone", func() bool { return e.standin.Stats().Current == before })
	if took > 4*time.Second {
		t.Fatalf("the stand-in's session lasted %s after the kill: the backend request was not stopped", took)
	}
	t.Logf("%s: stand-in session gone %s after the client returned; stand-in ATTENTIONs served so far %d", enc, took.Round(time.Millisecond), attns)
	time.Sleep(500 * time.Millisecond)
	if c := e.count(t); c != count {
		t.Fatalf("redis count %d after the kill settled, want %d (released once)", c, count)
	}
	if _, err := e.cliErr(t, p, true, "kill", id); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("killing it again: %v, want a 404", err)
	}
	if !slices.ContainsFunc(p.LogLines("session killed by an administrator"), func(l string) bool {
		return strings.Contains(l, "session="+id+" ") && strings.Contains(l, "by=127.0.0.1:")
	}) {
		t.Fatalf("no kill log line naming the caller:\n%s", p.Tail(30))
	}
}

// nonLoopbackIP is an address of this machine that is not loopback (the
// admin API bound 0.0.0.0 answers on it), or 127.0.0.1 if it has none.
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}
