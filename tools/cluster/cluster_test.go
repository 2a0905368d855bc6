package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/cluster"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// ChurnDuration is how long TestClusterExactUnderChurn runs its 300
// clients (the issue asks for 60 s); ShortChurnDuration with -short.
const (
	ChurnDuration      = 60 * time.Second
	ShortChurnDuration = 10 * time.Second
)

const (
	bucketID = "bucket-001"
	password = "YourStr0ngP@ssword1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Cleanup()
	os.Exit(code)
}

func quietLog() *slog.Logger {
	if os.Getenv("TDSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type env struct {
	rs      *redistest.Server
	rc      rueidis.Client
	standin *server.Server
	proxies []*cluster.Proxy
}

// setup starts Redis, one stand-in SQL Server that refuses logins past 25
// sessions, and n instances in front of it sharing bucket-001's cap.
func setup(t *testing.T, n int, b cluster.Bucket, mod func(*cluster.Config)) *env {
	t.Helper()
	e := &env{rs: redistest.Start(t)}
	e.rc = e.rs.Client(t)
	sc := server.RunbookConfig(1, "127.0.0.1:0")
	sc.MaxConnections = 25
	si, err := server.Start(sc, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { si.Close() })
	e.standin = si
	b.ID, b.Address = bucketID, si.Addr()
	for i := 1; i <= n; i++ {
		c := cluster.Config{InstanceID: fmt.Sprintf("proxy-%d", i), RedisAddr: e.rs.Addr(), Buckets: []cluster.Bucket{b}}
		if mod != nil {
			mod(&c)
		}
		e.proxies = append(e.proxies, cluster.Start(t, c))
	}
	waitFor(t, 5*time.Second, "all instances registered", func() bool {
		return redistest.Int(t, e.rc, "SCARD", limiter.KeyInstances) == int64(n)
	})
	return e
}

func (e *env) count(t *testing.T) int64 {
	return redistest.Int(t, e.rc, "GET", limiter.KeyCount(bucketID))
}

func (e *env) held(t *testing.T, id string) int64 {
	return redistest.Int(t, e.rc, "HGET", limiter.KeyConns(id), bucketID)
}

func (e *env) members(t *testing.T) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := e.rc.Do(ctx, e.rc.B().Smembers().Key(limiter.KeyInstances).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func login(addr string, timeout time.Duration) (*tdsclient.Conn, error) {
	return tdsclient.Dial(context.Background(), tdsclient.Options{Addr: addr, User: "sa", Password: password,
		Database: "tenant_db", App: "cluster-test", Timeout: timeout})
}

func mustLogin(t *testing.T, addr string) *tdsclient.Conn {
	t.Helper()
	c, err := login(addr, 10*time.Second)
	if err != nil {
		t.Fatalf("login via %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func query(c *tdsclient.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r, err := c.Exec("SELECT 1", 0)
	if err != nil {
		return err
	}
	if len(r.Errors) > 0 {
		return r.Errors[0]
	}
	return nil
}

func errNumber(err error) int32 {
	var le *tdsclient.LoginError
	if errors.As(err, &le) {
		return le.Number
	}
	return 0
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// sampler GETs the count in a loop and keeps the highest value seen.
type sampler struct {
	peak, n atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func sample(rc rueidis.Client) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			v, err := rc.Do(ctx, rc.B().Get().Key(limiter.KeyCount(bucketID)).Build()).AsInt64()
			cancel()
			if err == nil {
				s.n.Add(1)
				if v > s.peak.Load() {
					s.peak.Store(v)
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return s
}

func (s *sampler) Stop() (peak, samples int64) {
	close(s.stop)
	<-s.done
	return s.peak.Load(), s.n.Load()
}

const reconciledMsg = "reconciled: redis counts match"

// logTime is the time= field of a slog text line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	f := strings.Fields(line)
	if len(f) == 0 || !strings.HasPrefix(f[0], "time=") {
		t.Fatalf("no time in %q", line)
	}
	at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(100 * time.Microsecond)
}

// TestClusterExactUnderChurn: three instances (separate processes) share
// bucket-001's cap of 20 in front of a stand-in that would take 25. 300
// clients log in, query and disconnect in a loop for ChurnDuration,
// spread over the instances (as HAProxy would). The count in Redis,
// sampled continuously, never exceeds 20; the stand-in's peak never
// exceeds 20; at the end the count is 0 and every instance's hash empty.
func TestClusterExactUnderChurn(t *testing.T) {
	const maxConns, clients = 20, 300
	e := setup(t, 3, cluster.Bucket{MaxConnections: maxConns, MaxQueueSize: clients, QueueTimeout: 5 * time.Minute}, nil)
	s := sample(e.rc)
	var mu sync.Mutex
	waits := map[string][]time.Duration{}
	var failures atomic.Int64
	var firstErr atomic.Value
	churn := ChurnDuration
	if testing.Short() {
		churn = ShortChurnDuration
	}
	end := time.Now().Add(churn)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for k := 0; time.Now().Before(end); k++ {
				p := e.proxies[(i+k)%len(e.proxies)]
				start := time.Now()
				c, err := login(p.Addr, 2*time.Minute)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("login via %s: %v", p.ID, err))
					time.Sleep(10 * time.Millisecond)
					continue
				}
				w := time.Since(start)
				if err := query(c); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("query via %s: %v", p.ID, err))
				}
				c.Close()
				mu.Lock()
				waits[p.ID] = append(waits[p.ID], w)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Every session is closed; the proxies release as they notice.
	waitFor(t, 10*time.Second, "count back to 0", func() bool { return e.count(t) == 0 })
	peak, samples := s.Stop()
	st := e.standin.Stats()
	total := 0
	for _, p := range e.proxies {
		total += len(waits[p.ID])
	}
	t.Logf("churn %s, %d clients, 3 instances: %d sessions (%.0f/s), %d failures; count sampled %d times, peak %d (max %d); stand-in peak %d, refused %d",
		churn, clients, total, float64(total)/churn.Seconds(), failures.Load(), samples, peak, maxConns, st.Peak, st.Refused)
	for _, p := range e.proxies {
		w := waits[p.ID]
		slices.Sort(w)
		t.Logf("  %s: %d sessions (%.1f%%), login incl. queue p50 %s p90 %s p99 %s max %s", p.ID, len(w),
			100*float64(len(w))/float64(max(total, 1)), pct(w, 50), pct(w, 90), pct(w, 99), pct(w, 100))
	}
	if v := firstErr.Load(); v != nil {
		t.Errorf("%d failures; first: %s", failures.Load(), v)
	}
	if peak > maxConns {
		t.Errorf("count reached %d > max %d", peak, maxConns)
	}
	if st.Peak > maxConns || st.Refused > 0 {
		t.Errorf("stand-in saw a peak of %d sessions (max %d), refused %d", st.Peak, maxConns, st.Refused)
	}
	if samples < 1000 {
		t.Errorf("only %d count samples", samples)
	}
	for _, p := range e.proxies {
		if n := redistest.Int(t, e.rc, "HLEN", limiter.KeyConns(p.ID)); n != 0 {
			t.Errorf("%s's hash has %d fields at the end", p.ID, n)
		}
	}
	if total < clients {
		t.Errorf("only %d sessions in %s", total, churn)
	}
}

// TestClusterRuntimeMax: the runbook's sections 13 and 14 across three
// instances: SET proxy:bucket:bucket-001:max 3 is obeyed at once by every
// instance (a fourth login queues; with the queue full, 50005 at once; a
// queued login gets 50004 after queue_timeout), and restoring the max
// admits a waiter within 1 s.
func TestClusterRuntimeMax(t *testing.T) {
	e := setup(t, 3, cluster.Bucket{MaxConnections: 20, MaxQueueSize: 2, QueueTimeout: 3 * time.Second}, nil)
	redistest.Do(t, e.rc, "SET", limiter.KeyMax(bucketID), "3")
	set := time.Now()
	for _, p := range e.proxies {
		mustLogin(t, p.Addr)
	}
	if n := e.count(t); n != 3 {
		t.Fatalf("count %d with 3 holders", n)
	}
	e.standin.ResetPeak()
	// Two logins queue on proxy-1; the sixth is refused at once (50005).
	p1 := e.proxies[0]
	type res struct {
		err error
		d   time.Duration
	}
	queued := make(chan res, 2)
	for range 2 {
		go func() {
			start := time.Now()
			c, err := login(p1.Addr, 10*time.Second)
			if c != nil {
				c.Close()
			}
			queued <- res{err, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	_, err := login(p1.Addr, 10*time.Second)
	if errNumber(err) != limiter.NumQueueFull {
		t.Fatalf("sixth login: %v, want 50005", err)
	}
	t.Logf("max lowered to 3 %s before; sixth login refused with 50005 in %s", time.Since(set).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for range 2 {
		r := <-queued
		if errNumber(r.err) != limiter.NumQueueTimeout || r.d < 3*time.Second || r.d > 5*time.Second {
			t.Fatalf("queued login: %v after %s, want 50004 after about 3s", r.err, r.d)
		}
	}
	// The other instances obey the same max.
	for _, p := range e.proxies[1:] {
		start := time.Now()
		_, err := login(p.Addr, 10*time.Second)
		if errNumber(err) != limiter.NumQueueTimeout {
			t.Fatalf("%s: fourth login with max 3: %v, want 50004", p.ID, err)
		}
		t.Logf("%s: fourth login 50004 after %s", p.ID, time.Since(start).Round(time.Millisecond))
	}
	// Restore: a waiter is admitted within 1 s.
	got := make(chan time.Time, 1)
	go func() {
		c, err := login(e.proxies[2].Addr, 10*time.Second)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- time.Now()
		c.Close()
	}()
	time.Sleep(500 * time.Millisecond)
	restored := time.Now()
	redistest.Do(t, e.rc, "SET", limiter.KeyMax(bucketID), "20")
	select {
	case at := <-got:
		t.Logf("max restored to 20: queued login admitted after %s", at.Sub(restored).Round(time.Millisecond))
		if at.Sub(restored) > time.Second {
			t.Fatalf("waiter admitted %s after the max was restored, want < 1s", at.Sub(restored))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter not admitted after the max was restored")
	}
	if st := e.standin.Stats(); st.Peak > 4 {
		t.Fatalf("stand-in peak %d while max was 3 (+1 after restore)", st.Peak)
	}
}

// TestClusterInstanceDeath: SIGKILL an instance while it holds slots
// (runbook 19.1). Its lease expires after heartbeat_ttl: the reaper fences
// it (out of proxy:instances; it might only be frozen, so its slots stay
// counted), parks it after reclaim_after (slots above its fallback share
// given back: none here, it holds 4 of a share of 7) and forgets it after
// forget_after: every slot back within TTL + reclaim_after + forget_after
// + reaper intervals. A second dead instance restarted with the same
// instance_id gives its old slots back at once.
func TestClusterInstanceDeath(t *testing.T) {
	const ttl, reaper, reclaim, forget = 3 * time.Second, time.Second, time.Second, 2 * time.Second
	e := setup(t, 3, cluster.Bucket{MaxConnections: 20, MaxQueueSize: 10, QueueTimeout: 5 * time.Second}, func(c *cluster.Config) {
		c.HeartbeatTTL, c.HeartbeatInterval, c.ReaperInterval = ttl, 500*time.Millisecond, reaper
		c.ReclaimAfter, c.ForgetAfter = reclaim, forget
	})
	p1, p2, p3 := e.proxies[0], e.proxies[1], e.proxies[2]
	for range 2 {
		mustLogin(t, p1.Addr)
	}
	for range 4 {
		mustLogin(t, p2.Addr)
	}
	if n, h := e.count(t), e.held(t, p2.ID); n != 6 || h != 4 {
		t.Fatalf("count %d, %s holds %d; want 6 and 4", n, p2.ID, h)
	}
	p2.Kill()
	killed := time.Now()
	fenced := waitFor(t, ttl+2*reaper+time.Second, p2.ID+" out of proxy:instances", func() bool { return !slices.Contains(e.members(t), p2.ID) })
	if n := e.count(t); n != 6 {
		t.Errorf("count %d right after the fence, want 6 (a fenced instance's slots stay counted)", n)
	}
	waitFor(t, ttl+reclaim+forget+3*reaper+2*time.Second, "the dead instance's slots back", func() bool { return e.count(t) == 2 })
	d := time.Since(killed)
	t.Logf("SIGKILL of %s holding 4 slots: fenced after %s, slots back after %s (heartbeat_ttl %s + reclaim_after %s + forget_after %s, reaper_interval %s)",
		p2.ID, fenced.Round(time.Millisecond), d.Round(time.Millisecond), ttl, reclaim, forget, reaper)
	if d < ttl+reclaim+forget-reaper {
		t.Errorf("slots back after %s: before TTL + reclaim_after + forget_after", d)
	}
	if m := e.members(t); slices.Contains(m, p2.ID) || len(m) != 2 {
		t.Fatalf("proxy:instances = %v after the reclaim", m)
	}
	if n := redistest.Int(t, e.rc, "EXISTS", limiter.KeyConns(p2.ID), limiter.KeyHeartbeat(p2.ID)); n != 0 {
		t.Fatalf("%d keys of the dead instance remain", n)
	}
	var lines []string
	for _, p := range []*cluster.Proxy{p1, p3} {
		lines = append(lines, p.LogLines("reaper: reclaimed instance")...)
	}
	if len(lines) != 1 {
		t.Fatalf("%d reaper lines, want exactly one reclaim: %q", len(lines), lines)
	}
	t.Logf("reaper log: %s (%s after the kill)", strings.TrimSpace(lines[0]), time.Since(killed).Round(time.Millisecond))
	// The freed slots are usable: 18 more logins fit.
	var more []*tdsclient.Conn
	for range 18 {
		more = append(more, mustLogin(t, p3.Addr))
	}
	if n := e.count(t); n != 20 {
		t.Fatalf("count %d, want 20", n)
	}
	for _, c := range more[:3] {
		c.Close()
	}
	waitFor(t, 2*time.Second, "count 17", func() bool { return e.count(t) == 17 })
	// p3 dies holding 15; restarted with the same id it gives them back
	// at once, well before forget_after.
	p3.Kill()
	time.Sleep(ttl + reaper) // fenced, maybe parked
	before := e.count(t)
	restarted := time.Now()
	p3.Restart()
	waitFor(t, 3*time.Second, "p3's old slots back on restart", func() bool { return e.count(t) == 2 })
	t.Logf("%s killed holding 15; %s later count %d; restarted: old slots back %s after the restart began", p3.ID, ttl+reaper, before,
		time.Since(restarted).Round(time.Millisecond))
	if before == 2 {
		t.Errorf("count already 2 before the restart: the restart was not what gave the slots back")
	}
}

// TestClusterRedisDeath: kill Redis while three instances hold slots:
// each falls back within about a second, keeps serving its sessions and
// admits new ones only within its local share (beyond it: 50004, no
// hang); Redis restarts empty; each reconciles, and count == sum of the
// hashes == sessions actually open (runbook 19.2).
func TestClusterRedisDeath(t *testing.T) {
	const maxConns = 12
	e := setup(t, 3, cluster.Bucket{MaxConnections: maxConns, MaxQueueSize: 5, QueueTimeout: time.Second}, nil)
	var conns []*tdsclient.Conn
	open := map[string]int{}
	for i, n := range []int{3, 2, 1} {
		for range n {
			conns = append(conns, mustLogin(t, e.proxies[i].Addr))
			open[e.proxies[i].ID]++
		}
	}
	time.Sleep(1500 * time.Millisecond) // a poll: every instance has seen count 6 and 3 live instances
	e.standin.ResetPeak()
	killed := time.Now()
	e.rs.Kill()
	for _, p := range e.proxies {
		waitFor(t, 3*time.Second, p.ID+" logs fallback", func() bool { return len(p.LogLines("fallback:")) > 0 })
		line := p.LogLines("fallback:")[0]
		d := logTime(t, line).Sub(killed)
		t.Logf("%s in fallback %s after redis was killed: %s", p.ID, d.Round(time.Millisecond), strings.TrimSpace(line))
		if d > 1500*time.Millisecond {
			t.Errorf("%s noticed after %s, want about 1s", p.ID, d)
		}
	}
	// Existing sessions keep working.
	for _, c := range conns {
		if err := query(c); err != nil {
			t.Fatalf("query in fallback: %v", err)
		}
	}
	// New logins: up to each share (12/3 = 4, and at most held + 6/3), then 50004 after queue_timeout.
	for _, p := range e.proxies {
		added := 0
		for {
			start := time.Now()
			c, err := login(p.Addr, 5*time.Second)
			if err != nil {
				if errNumber(err) != limiter.NumQueueTimeout || time.Since(start) > 3*time.Second {
					t.Fatalf("%s beyond its share: %v after %s, want 50004 after 1s", p.ID, err, time.Since(start))
				}
				break
			}
			t.Cleanup(func() { c.Close() })
			if err := query(c); err != nil {
				t.Fatalf("query via %s in fallback: %v", p.ID, err)
			}
			conns = append(conns, c)
			open[p.ID]++
			added++
		}
		t.Logf("%s in fallback: admitted %d more, holds %d", p.ID, added, open[p.ID])
		if open[p.ID] > maxConns/3 {
			t.Errorf("%s holds %d > its share %d", p.ID, open[p.ID], maxConns/3)
		}
	}
	total := len(conns)
	if st := e.standin.Stats(); st.Peak > maxConns || st.Current != int64(total) {
		t.Fatalf("stand-in peak %d current %d (open %d, max %d)", st.Peak, st.Current, total, maxConns)
	}
	// Close one session per instance while Redis is down (releases in fallback).
	for _, idx := range []int{0, 3, 5} {
		conns[idx].Close()
	}
	closed := map[int]bool{0: true, 3: true, 5: true}
	open["proxy-1"]--
	open["proxy-2"]--
	open["proxy-3"]--
	total -= 3

	e.rs.Restart() // empty: no persistence
	back := time.Now()
	for _, p := range e.proxies {
		waitFor(t, 10*time.Second, p.ID+" reconciled", func() bool { return len(p.LogLines(reconciledMsg)) > 0 })
		first := logTime(t, p.LogLines("redis answers again, reconciling")[0]).Sub(back)
		done := logTime(t, p.LogLines(reconciledMsg)[0]).Sub(back)
		t.Logf("%s: redis back (empty) → first reconcile after %s, connected (reconciled, settle 2s) after %s",
			p.ID, first.Round(time.Millisecond), done.Round(time.Millisecond))
	}
	waitFor(t, 5*time.Second, "count == sessions open", func() bool { return e.count(t) == int64(total) })
	var sum int64
	for _, p := range e.proxies {
		h := e.held(t, p.ID)
		if h != int64(open[p.ID]) {
			t.Errorf("%s: hash %d, sessions open %d", p.ID, h, open[p.ID])
		}
		sum += h
	}
	st := e.standin.Stats()
	t.Logf("after reconcile: count %d, sum of hashes %d, sessions open %d, stand-in current %d, max %d",
		e.count(t), sum, total, st.Current, redistest.Int(t, e.rc, "GET", limiter.KeyMax(bucketID)))
	if sum != int64(total) || st.Current != int64(total) {
		t.Fatalf("count %d, sum of hashes %d, stand-in %d, open %d: not equal", e.count(t), sum, st.Current, total)
	}
	if m := e.members(t); len(m) != 3 {
		t.Fatalf("proxy:instances after reconcile: %v", m)
	}
	if n := redistest.Int(t, e.rc, "GET", limiter.KeyMax(bucketID)); n != maxConns {
		t.Fatalf("max re-seeded as %d", n)
	}
	// Back on Redis: the shared cap applies: maxConns-total more fit in all.
	for range maxConns - total {
		conns = append(conns, mustLogin(t, e.proxies[1].Addr))
	}
	if _, err := login(e.proxies[0].Addr, 5*time.Second); errNumber(err) != limiter.NumQueueTimeout {
		t.Fatalf("login past the shared cap after reconcile: %v, want 50004", err)
	}
	// Everything closes: count 0, hashes empty (fallback tickets included).
	for i, c := range conns {
		if !closed[i] {
			c.Close()
		}
	}
	waitFor(t, 5*time.Second, "count 0", func() bool { return e.count(t) == 0 })
	for _, p := range e.proxies {
		if n := redistest.Int(t, e.rc, "HLEN", limiter.KeyConns(p.ID)); n != 0 {
			t.Errorf("%s's hash keeps %d fields", p.ID, n)
		}
	}
}

// TestClusterCleanStop: SIGTERM an instance holding sessions: it drains
// (drain_timeout), gives its slots back and leaves Redis clean at once.
func TestClusterCleanStop(t *testing.T) {
	e := setup(t, 3, cluster.Bucket{MaxConnections: 20, MaxQueueSize: 10, QueueTimeout: 5 * time.Second}, func(c *cluster.Config) {
		c.DrainTimeout = time.Second
	})
	p3 := e.proxies[2]
	mustLogin(t, e.proxies[0].Addr)
	for range 2 {
		mustLogin(t, p3.Addr)
	}
	if n := e.count(t); n != 3 {
		t.Fatalf("count %d", n)
	}
	start := time.Now()
	// The two sessions outlive drain_timeout: they are closed, and the
	// process reports it (exit 1, "drain timeout: closed 2 sessions").
	code := p3.Term(10 * time.Second)
	if code < 0 || len(p3.LogLines("shutdown: done")) != 1 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, p3.Log())
	}
	t.Logf("SIGTERM: %s exited (code %d) after %s (drain_timeout 1s)", p3.ID, code, time.Since(start).Round(time.Millisecond))
	if n := e.count(t); n != 1 {
		t.Fatalf("count %d after the clean stop, want 1", n)
	}
	if m := e.members(t); slices.Contains(m, p3.ID) {
		t.Fatalf("%s still in proxy:instances: %v", p3.ID, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := e.rc.Do(ctx, e.rc.B().Keys().Pattern("proxy:instance:"+p3.ID+":*").Build()).AsStrSlice()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys of %s left: %v %v", p3.ID, keys, err)
	}
	if len(p3.LogLines("left redis")) != 1 {
		t.Fatalf("no leave in the log:\n%s", p3.Log())
	}
}
