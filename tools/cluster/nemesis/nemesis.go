// Package nemesis is tdsgate's fault-injection harness: a real Redis
// primary with a replica and three redis-sentinels, 3 to 5 tdsgate
// instances (separate processes, tools/cluster), two stand-in SQL Servers
// (one per bucket), a few hundred churning clients, and a nemesis that
// injects, one after the other on a schedule drawn from a seed:
//
//	pause          SIGSTOP an instance for longer than its heartbeat TTL (but
//	               shorter than TTL + reclaim_after), then SIGCONT
//	kill           SIGKILL an instance, restart it
//	redis-empty    kill every Redis data server, restart them empty
//	failover       kill the primary (the sentinels promote the replica) or
//	               SENTINEL FAILOVER; the old primary comes back as a replica
//	partition      cut instance 1 from Redis (netfault between them): stall or drop
//	duplicate      start a second process with a live instance's id; then stop
//	               one of the two (a same-host restart)
//	outage-start   kill every Redis data server, restart an instance during the
//	               outage, bring Redis back empty
//	long-partition cut instance 1 from Redis for longer than heartbeat_ttl +
//	               reclaim_after + forget_after (the reapers fence, park and
//	               forget it while its sessions run), then heal
//	double-fault   cut instance 1 from Redis, then kill every Redis data server
//	               and bring it back empty while instance 1 is still cut off
//	               (it cannot re-assert its holdings), then heal
//
// The oracle is the backend: each stand-in's count of sessions it really
// holds, sampled every 5 ms, and its exact peak, against the bucket's max
// (cluster.Oracle). After the last fault and TTL + reaper interval, the
// clients stop and the harness counts lost slots: slots Redis still counts
// with no session behind them.
//
// Instance 1 reaches Redis through netfault, whose upstream is the
// primary the sentinels name at each new connection, and whose links are
// reset at a failover (as HAProxy with a role:master check and
// on-marked-down shutdown-sessions would); the others use Sentinel
// directly (redis.sentinel).
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/cluster"
	"github.com/tdsgate/tdsgate/tools/cluster/netfault"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// Faults are the faults the nemesis injects, in the order of the package doc.
var Faults = []string{"pause", "kill", "redis-empty", "failover", "partition", "duplicate", "outage-start", "long-partition", "double-fault"}

// Options configure Run. Zero values take the defaults in brackets.
type Options struct {
	Seed      uint64
	Duration  time.Duration // of the fault schedule [60s]
	Instances int           // tdsgate processes, 3..5 [4]
	Clients   int           // churning clients [300]
	LeaseLoss string        // redis.lease_loss [close]
	// Faults, if set, limits the schedule to these faults (to isolate one).
	Faults []string
	// HeartbeatTTL [3s], HeartbeatInterval [500ms], ReaperInterval [1s],
	// OpTimeout [300ms], ReclaimAfter [HeartbeatTTL], ForgetAfter
	// [HeartbeatTTL] of every instance (forget_after short, so that a
	// long-partition outlasts it in seconds, not minutes).
	HeartbeatTTL, HeartbeatInterval, ReaperInterval, OpTimeout, ReclaimAfter, ForgetAfter time.Duration
	// Logf reports progress (t.Logf).
	Logf func(format string, args ...any)
}

func (o *Options) defaults() {
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Instances == 0 {
		o.Instances = 4
	}
	o.Instances = min(max(o.Instances, 3), 5)
	if o.Clients == 0 {
		o.Clients = 300
	}
	if o.LeaseLoss == "" {
		o.LeaseLoss = "close"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HeartbeatTTL, 3*time.Second)
	def(&o.HeartbeatInterval, 500*time.Millisecond)
	def(&o.ReaperInterval, time.Second)
	def(&o.OpTimeout, 300*time.Millisecond)
	def(&o.ReclaimAfter, o.HeartbeatTTL)
	def(&o.ForgetAfter, o.HeartbeatTTL)
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Buckets of the run: bucket id → max. bucket-002's max is not a multiple
// of 3, 4 or 5, so the fallback shares are uneven.
var bucketMax = map[string]int{"bucket-001": 10, "bucket-002": 7}

var bucketIDs = []string{"bucket-001", "bucket-002"}

// Result is what a run measured.
type Result struct {
	Seed     uint64
	Options  Options
	Schedule []string // the faults as run: "at  fault  details"
	// Spans are the faults as run, from injection to healed, on the
	// oracle's time base (that of BucketReport.Windows).
	Spans []Span
	// Count of each fault injected.
	Injected map[string]int
	// Buckets is the oracle's report (samples above max, exact peaks).
	Buckets []cluster.BucketReport
	// Lost is, per bucket, count − sessions open at the backend, read
	// LostAfter after the last fault ended, once the clients stopped.
	Lost      map[string]int64
	LostAfter time.Duration
	// Counts, SumHashes, Open: per bucket, at that moment.
	Counts, SumHashes, Open map[string]int64
	// Sessions is the number of sessions the clients completed; Errors
	// counts failed logins and queries by kind.
	Sessions int64
	Errors   map[string]int64
	Elapsed  time.Duration
	// Events is the oracle's timeline (faults as they happened).
	Events string
	// Closed is, per bucket, the sessions the instances closed to fence
	// themselves (lease_loss close); KeptOver the largest overshoot an
	// instance announced it kept (lease_loss keep: its stated bound), in
	// KeptLines announcements. From the instances' logs.
	Closed, KeptOver map[string]int64
	KeptLines        int
	// Snapshots: at moments the backend was above max, what each instance
	// reported active and what Redis counted (one line each).
	Snapshots []string
}

// Span is one fault as run: injected at From, healed at To (since the
// oracle started).
type Span struct {
	Fault    string
	From, To time.Duration
}

// During lists the faults whose span, extended by grace after it healed,
// overlaps w.
func (r Result) During(w cluster.Window, grace time.Duration) []string {
	var out []string
	for _, sp := range r.Spans {
		if sp.From <= w.To && w.From <= sp.To+grace && !slices.Contains(out, sp.Fault) {
			out = append(out, sp.Fault)
		}
	}
	return out
}

// OK reports whether the run met the exact bound: no sample and no peak
// above max, and no lost slot.
func (r Result) OK() bool {
	for _, b := range r.Buckets {
		if b.Over > 0 || b.Peak > b.Max {
			return false
		}
	}
	for _, n := range r.Lost {
		if n != 0 {
			return false
		}
	}
	return true
}

// Summary is the result as a few lines of text.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, lease_loss %s, %d instances, %d clients, schedule %s (run %s)\n", r.Seed, r.Options.LeaseLoss,
		r.Options.Instances, r.Options.Clients, r.Options.Duration, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "faults injected: ")
	for i, f := range Faults {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", f, r.Injected[f])
	}
	fmt.Fprintf(&b, "\nsessions completed %d; client errors %v\n", r.Sessions, r.Errors)
	for _, br := range r.Buckets {
		fmt.Fprintf(&b, "backend %s\n", br)
	}
	fmt.Fprintf(&b, "sessions closed by the fence (lease_loss close) %v; largest overshoot announced by lease_loss keep %v (%d announcements)\n",
		r.Closed, r.KeptOver, r.KeptLines)
	for _, id := range bucketIDs {
		fmt.Fprintf(&b, "%s %s after the last fault: count %d, sum of hashes %d, sessions open %d, lost %d\n",
			id, r.LostAfter.Round(time.Millisecond), r.Counts[id], r.SumHashes[id], r.Open[id], r.Lost[id])
	}
	return b.String()
}

// slot is one instance id and the processes that run it.
type slot struct {
	cfg cluster.Config
	cur *cluster.Proxy // nil while killed
	dup *cluster.Proxy // a second process with the same id
}

type run struct {
	t   testing.TB
	o   Options
	rng *rand.Rand
	sn  *redistest.Sentinel
	nf  *netfault.Proxy
	rc  rueidis.Client
	bs  map[string]*server.Server
	or  *cluster.Oracle

	mu    sync.Mutex
	slots []*slot
	all   []*cluster.Proxy // every process started

	res      Result
	snaps    []snapshot // written by track only
	sessions atomic.Int64
	errMu    sync.Mutex
	errs     map[string]int64
}

// Run sets everything up, runs the schedule and the final checks, and
// returns what it measured; it fails t only on a harness error (the
// caller judges the Result).
func Run(t testing.TB, o Options) Result {
	t.Helper()
	o.defaults()
	r := &run{t: t, o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), errs: map[string]int64{},
		bs: map[string]*server.Server{}}
	r.res = Result{Seed: o.Seed, Options: o, Injected: map[string]int{}}
	start := time.Now()
	o.Logf("nemesis: seed %d (replay: -nemesis.seed=%d), %s, %d instances, %d clients, lease_loss %s",
		o.Seed, o.Seed, o.Duration, o.Instances, o.Clients, o.LeaseLoss)
	r.setup()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range o.Clients {
		wg.Go(func() { r.client(i, stop) })
	}
	stopTrack, tracked := make(chan struct{}), make(chan struct{})
	go r.track(stopTrack, tracked)
	time.Sleep(3 * time.Second) // churn up to speed
	lastFault := r.schedule()
	// Let leases lapse and reapers run once more after the last fault,
	// then stop the clients and count what Redis still holds.
	settle := o.HeartbeatTTL + o.ReaperInterval
	time.Sleep(time.Until(lastFault.Add(settle)))
	close(stop)
	wg.Wait()
	close(stopTrack)
	<-tracked
	for _, sn := range r.snaps {
		r.res.Snapshots = append(r.res.Snapshots, sn.String())
	}
	time.Sleep(time.Until(lastFault.Add(settle + time.Second)))
	r.measure()
	// A slot goes back only once the backend has let go of its session,
	// so right after the last clients left, a release may still be on its
	// way to Redis (the backend already counts the session gone): not a
	// lost slot. A lost one is still there a second later.
	for t0 := time.Now(); !r.lostZero() && time.Since(t0) < time.Second; {
		time.Sleep(100 * time.Millisecond)
		r.measure()
	}
	r.res.LostAfter = time.Since(lastFault)
	r.res.Buckets = r.or.Stop()
	r.res.Events = r.or.Events()
	r.res.Sessions = r.sessions.Load()
	r.res.Errors = r.errs
	r.res.Elapsed = time.Since(start)
	r.fencingFromLogs()
	if !r.lostZero() {
		// Diagnostics: how long until the lost slots come back.
		t0 := time.Now()
		for time.Since(t0) < 30*time.Second && !r.countsZero() {
			time.Sleep(100 * time.Millisecond)
		}
		o.Logf("nemesis: counts back to 0 after %s more (zero: %v)", time.Since(t0).Round(time.Millisecond), r.countsZero())
	}
	return r.res
}

func (r *run) setup() {
	t := r.t
	r.sn = redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1, Sentinels: 3, DownAfter: time.Second, FailoverTimeout: 3 * time.Second})
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: r.sn.Addrs(), Sentinel: rueidis.SentinelOption{MasterSet: r.sn.MasterSet},
		DisableCache: true, Dialer: net.Dialer{Timeout: time.Second}, ConnWriteTimeout: time.Second})
	if err != nil {
		t.Fatalf("nemesis: redis client: %v", err)
	}
	t.Cleanup(rc.Close)
	r.rc = rc
	r.nf, err = netfault.New(r.master)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nf.Close)
	var backends []cluster.Backend
	var buckets []cluster.Bucket
	routes := map[string]string{}
	for i, id := range bucketIDs {
		sc := server.RunbookConfig(i+1, "127.0.0.1:0")
		si, err := server.Start(sc, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { si.Close() })
		r.bs[id] = si
		backends = append(backends, cluster.Backend{Bucket: id, Server: si, Max: bucketMax[id]})
		buckets = append(buckets, cluster.Bucket{ID: id, Address: si.Addr(), MaxConnections: bucketMax[id],
			MaxQueueSize: 200, QueueTimeout: 2 * time.Second})
		routes[appOf(id)] = id
	}
	for i := 1; i <= r.o.Instances; i++ {
		c := cluster.Config{InstanceID: fmt.Sprintf("proxy-%d", i), HeartbeatTTL: r.o.HeartbeatTTL, HeartbeatInterval: r.o.HeartbeatInterval,
			ReaperInterval: r.o.ReaperInterval, OpTimeout: r.o.OpTimeout, ReclaimAfter: r.o.ReclaimAfter, ForgetAfter: r.o.ForgetAfter,
			LeaseLoss: r.o.LeaseLoss, ExpectedInstances: r.o.Instances,
			DrainTimeout: time.Second, Buckets: buckets, AppRoutes: routes, DefaultBucket: bucketIDs[0], Metrics: true}
		if i == 1 {
			// Not through Sentinel, but replicated all the same: its grants
			// are confirmed by the replica too (redis.wait_replicas).
			c.RedisAddr = r.nf.Addr()
			one := 1
			c.WaitReplicas = &one
		} else {
			c.RedisAddr = r.sn.Master() // used only by an older binary (cluster.EnvOldConfig)
			c.Sentinel = &cluster.Sentinel{MasterSet: r.sn.MasterSet, Addrs: r.sn.Addrs()}
		}
		r.slots = append(r.slots, &slot{cfg: c, cur: r.start(c)})
	}
	r.waitRegistered(15 * time.Second)
	r.or = cluster.Watch(5*time.Millisecond, backends...)
}

// start starts an instance and remembers it (for its log).
func (r *run) start(c cluster.Config) *cluster.Proxy {
	p := cluster.Start(r.t, c)
	r.mu.Lock()
	r.all = append(r.all, p)
	r.mu.Unlock()
	return p
}

// fencingFromLogs reads, from every process's log, the sessions closed by
// lease_loss close (the fence, and re-registration that did not fit) and
// the largest overshoot lease_loss keep announced, per bucket.
func (r *run) fencingFromLogs() {
	r.res.Closed, r.res.KeptOver = map[string]int64{}, map[string]int64{}
	field := func(line, key string) (string, int64) {
		m := regexp.MustCompile(`bucket=(\S+) .*\b` + key + `=(\d+)`).FindStringSubmatch(line)
		if m == nil {
			return "", 0
		}
		n, _ := strconv.ParseInt(m[2], 10, 64)
		return m[1], n
	}
	r.mu.Lock()
	all := slices.Clone(r.all)
	r.mu.Unlock()
	for _, p := range all {
		for _, l := range p.LogLines("lease: closed sessions over this instance's share") {
			b, n := field(l, "closed")
			r.res.Closed[b] += n
		}
		for _, l := range p.LogLines("closing them (lease_loss close)") {
			b, n := field(l, "closing")
			r.res.Closed[b] += n
		}
		for _, l := range p.LogLines("lease_loss keep: kept") {
			b, n := field(l, "over")
			r.res.KeptOver[b] = max(r.res.KeptOver[b], n)
			r.res.KeptLines++
		}
	}
}

func appOf(bucket string) string { return "nemesis-" + bucket }

// master is the primary the sentinels name (netfault's upstream).
func (r *run) master() (string, error) {
	for _, s := range r.sn.Sentinels {
		if !s.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := oneShot(ctx, s.Addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", r.sn.MasterSet).AsStrSlice()
		cancel()
		if err == nil && len(m) == 2 {
			return net.JoinHostPort(m[0], m[1]), nil
		}
	}
	return "", fmt.Errorf("no sentinel names a master")
}

// oneShot runs one command on addr over a fresh connection.
func oneShot(ctx context.Context, addr string, args ...string) rueidis.RedisResult {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true,
		DisableRetry: true, Dialer: net.Dialer{Timeout: time.Second}, ConnWriteTimeout: time.Second})
	if err != nil {
		return rueidis.RedisResult{}
	}
	defer c.Close()
	return c.Do(ctx, c.B().Arbitrary(args...).Build())
}

func (r *run) do(args ...string) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.rc.Do(ctx, r.rc.B().Arbitrary(args...).Build())
}

func (r *run) waitRegistered(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n, err := r.do("SCARD", "proxy:instances").AsInt64(); err == nil && n == int64(r.o.Instances) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("nemesis: %d instances not registered within %s", r.o.Instances, d)
}

// addrs are the client-facing addresses of every running process.
func (r *run) addrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var a []string
	for _, s := range r.slots {
		if s.cur != nil {
			a = append(a, s.cur.Addr)
		}
		if s.dup != nil {
			a = append(a, s.dup.Addr)
		}
	}
	return a
}

func (r *run) countErr(kind string) {
	r.errMu.Lock()
	r.errs[kind]++
	r.errMu.Unlock()
}

func errKind(err error) string {
	var le *tdsclient.LoginError
	if errors.As(err, &le) {
		return fmt.Sprintf("login %d", le.Number)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "refused"):
		return "refused"
	case strings.Contains(s, "reset"), strings.Contains(s, "EOF"), strings.Contains(s, "broken pipe"):
		return "closed"
	}
	return "other"
}

// client logs in through a random instance to a random bucket, runs a
// query, holds the session 0–200 ms, closes, and again until stop.
func (r *run) client(i int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(r.o.Seed, uint64(i)))
	for {
		select {
		case <-stop:
			return
		default:
		}
		as := r.addrs()
		if len(as) == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		k := rng.IntN(len(bucketIDs))
		c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: as[rng.IntN(len(as))], User: "sa",
			Password: fmt.Sprintf("YourStr0ngP@ssword%d", k+1), Database: "tenant_db", App: appOf(bucketIDs[k]), Timeout: 6 * time.Second})
		if err != nil {
			r.countErr(errKind(err))
			time.Sleep(time.Duration(20+rng.IntN(100)) * time.Millisecond)
			continue
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		res, err := c.Exec("SELECT 1", 0)
		if err == nil && len(res.Errors) > 0 {
			err = res.Errors[0]
		}
		if err != nil {
			r.countErr("query " + errKind(err))
		} else {
			r.sessions.Add(1)
		}
		select {
		case <-stop:
		case <-time.After(time.Duration(rng.IntN(200)) * time.Millisecond):
		}
		c.Close()
	}
}

// between is a random duration in [lo, hi).
func (r *run) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

// schedule runs faults until Duration has passed: first each fault once
// in a random order, then faults drawn at random, with random gaps. It
// returns when the last fault ended.
func (r *run) schedule() time.Time {
	begin := time.Now()
	kinds := Faults
	if len(r.o.Faults) > 0 {
		kinds = r.o.Faults
	}
	order := slices.Clone(kinds)
	r.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var last time.Time
	for n := 0; ; n++ {
		if n >= len(order) && time.Since(begin) >= r.o.Duration {
			break
		}
		f := ""
		if n < len(order) {
			f = order[n]
		} else {
			f = kinds[r.rng.IntN(len(kinds))]
		}
		at := r.or.Since()
		detail := r.inject(f)
		last = time.Now()
		r.res.Injected[f]++
		line := fmt.Sprintf("%8.3fs  %-12s %s (ended %.3fs)", at.Seconds(), f, detail, r.or.Since().Seconds())
		r.res.Schedule = append(r.res.Schedule, line)
		r.res.Spans = append(r.res.Spans, Span{Fault: f, From: at, To: r.or.Since()})
		r.o.Logf("nemesis: %s", line)
		time.Sleep(r.between(500*time.Millisecond, 3*time.Second))
	}
	return last
}

func (r *run) pick() (int, *slot) {
	i := r.rng.IntN(len(r.slots))
	return i, r.slots[i]
}

// inject runs one fault to its end (everything healed) and describes it.
func (r *run) inject(f string) string {
	ttl := r.o.HeartbeatTTL
	switch f {
	case "pause":
		// Longer than the TTL, but short enough that the reaper has not
		// parked the instance (given its slots above its share away)
		// before it runs again: the regime where lease_loss close is
		// exact. A longer freeze is TestFreezeBeyondReclaimAfter's.
		_, s := r.pick()
		d := ttl + r.between(500*time.Millisecond, max(r.o.ReclaimAfter-r.o.HeartbeatInterval-500*time.Millisecond, time.Second))
		p := s.cur
		p.Pause()
		r.or.Event("SIGSTOP %s (pid %d) for %s", p.ID, p.Pid(), d)
		time.Sleep(d)
		p.Resume()
		r.or.Event("SIGCONT %s", p.ID)
		return fmt.Sprintf("%s for %s", p.ID, d.Round(time.Millisecond))
	case "kill":
		_, s := r.pick()
		d := r.between(200*time.Millisecond, 2*time.Second)
		r.mu.Lock()
		p := s.cur
		s.cur = nil
		r.mu.Unlock()
		p.Kill()
		r.or.Event("SIGKILL %s", p.ID)
		time.Sleep(d)
		np := r.start(s.cfg)
		r.mu.Lock()
		s.cur = np
		r.mu.Unlock()
		r.or.Event("restarted %s (pid %d)", np.ID, np.Pid())
		return fmt.Sprintf("%s, restarted after %s", p.ID, d.Round(time.Millisecond))
	case "redis-empty":
		return fmt.Sprintf("down %s", r.emptyRedis("").Round(time.Millisecond))
	case "failover":
		r.healthy(30 * time.Second)
		old := r.sn.Master()
		if r.rng.IntN(2) == 0 {
			r.or.Event("SENTINEL FAILOVER (master %s)", old)
			m := r.sn.Failover()
			r.nf.Reset()
			r.or.Event("new master %s", m)
			return fmt.Sprintf("SENTINEL FAILOVER %s → %s", old, m)
		}
		r.or.Event("kill primary %s", old)
		m, killed := r.sn.KillPrimary()
		r.nf.Reset()
		r.or.Event("new master %s", m)
		d := r.between(time.Second, 3*time.Second)
		time.Sleep(d)
		killed.Restart()
		r.healthy(30 * time.Second)
		r.or.Event("old primary %s back as a replica", old)
		return fmt.Sprintf("kill %s → %s, old back after %s", old, m, d.Round(time.Millisecond))
	case "partition":
		// From shorter than the TTL to past TTL + reclaim_after: the
		// instance runs, so it fences itself in time whatever the length.
		return r.cut("partition", r.between(ttl-time.Second, ttl+r.o.ReclaimAfter+2*time.Second))
	case "long-partition":
		// Past the lease's end + reclaim_after + forget_after, and one
		// more reaper round: the reapers have forgotten instance 1 while
		// it still runs (TestFaultLongPartition).
		return r.cut("long partition", ttl+r.o.ReclaimAfter+r.o.ForgetAfter+r.o.ReaperInterval+r.between(time.Second, 3*time.Second))
	case "double-fault":
		// Redis restarted empty while instance 1 is cut off from it
		// (TestFaultDoubleFault).
		mode := r.cutMode()
		r.nf.Set(mode)
		r.or.Event("double fault: partition of proxy-1 from redis: %s", mode)
		before := r.between(200*time.Millisecond, 1500*time.Millisecond)
		time.Sleep(before)
		down := r.emptyRedis("double fault, proxy-1 still cut off: ")
		after := r.between(ttl, ttl+r.o.ReclaimAfter+2*time.Second)
		time.Sleep(after)
		r.nf.Set(netfault.Pass)
		r.or.Event("double fault: partition healed")
		return fmt.Sprintf("proxy-1 %s; redis killed after %s, down %s, back empty; healed %s later", mode,
			before.Round(time.Millisecond), down.Round(time.Millisecond), after.Round(time.Millisecond))
	case "duplicate":
		_, s := r.pick()
		c := s.cfg
		c.Listen = ""
		dup, err := cluster.StartErr(r.t, c)
		r.mu.Lock()
		r.all = append(r.all, dup)
		r.mu.Unlock()
		if err != nil {
			r.or.Event("duplicate %s refused to start", c.InstanceID)
			return fmt.Sprintf("%s: the second process refused to start: %s", c.InstanceID, lastLine(err.Error()))
		}
		r.mu.Lock()
		s.dup = dup
		r.mu.Unlock()
		r.or.Event("duplicate %s started (pid %d)", c.InstanceID, dup.Pid())
		d := r.between(2*time.Second, 6*time.Second)
		time.Sleep(d)
		// A same-host restart: the old process stops, the new one stays;
		// or the newcomer is stopped.
		replace := r.rng.IntN(2) == 0
		r.mu.Lock()
		old := s.cur
		if replace {
			s.cur, s.dup = dup, nil
		} else {
			s.dup = nil
		}
		r.mu.Unlock()
		if replace {
			old.Term(5 * time.Second)
			r.or.Event("old %s stopped (SIGTERM), the duplicate stays", c.InstanceID)
			return fmt.Sprintf("%s for %s, then the old process stopped", c.InstanceID, d.Round(time.Millisecond))
		}
		dup.Term(5 * time.Second)
		r.or.Event("duplicate %s stopped (SIGTERM)", c.InstanceID)
		return fmt.Sprintf("%s for %s, then the duplicate stopped", c.InstanceID, d.Round(time.Millisecond))
	case "outage-start":
		_, s := r.pick()
		r.killData()
		r.or.Event("redis data servers killed")
		r.mu.Lock()
		p := s.cur
		s.cur = nil
		r.mu.Unlock()
		p.Kill()
		np := r.start(s.cfg)
		r.mu.Lock()
		s.cur = np
		r.mu.Unlock()
		r.or.Event("%s restarted during the outage (pid %d)", np.ID, np.Pid())
		d := r.between(time.Second, 4*time.Second)
		time.Sleep(d)
		r.restartData()
		r.or.Event("redis data servers back, empty (master %s)", r.sn.Master())
		return fmt.Sprintf("%s restarted during a %s outage", np.ID, d.Round(time.Millisecond))
	}
	panic("nemesis: unknown fault " + f)
}

// cutMode draws how instance 1 is cut from Redis: stall or drop.
func (r *run) cutMode() netfault.Mode {
	if r.rng.IntN(2) == 0 {
		return netfault.Drop
	}
	return netfault.Stall
}

// cut cuts instance 1 from Redis (stall or drop, drawn) for d, then heals.
func (r *run) cut(what string, d time.Duration) string {
	mode := r.cutMode()
	r.nf.Set(mode)
	r.or.Event("%s of proxy-1 from redis: %s", what, mode)
	time.Sleep(d)
	r.nf.Set(netfault.Pass)
	r.or.Event("%s healed", what)
	return fmt.Sprintf("proxy-1 %s for %s", mode, d.Round(time.Millisecond))
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// emptyRedis kills every data server, waits 100–800 ms, and restarts
// them empty (restartData); it returns how long they were down. label
// prefixes the events.
func (r *run) emptyRedis(label string) time.Duration {
	d := r.between(100*time.Millisecond, 800*time.Millisecond)
	r.killData()
	r.or.Event("%sredis data servers killed", label)
	time.Sleep(d)
	r.restartData()
	r.or.Event("%sredis data servers back, empty (master %s)", label, r.sn.Master())
	return d
}

func (r *run) killData() {
	for _, d := range r.sn.Data {
		d.Kill()
	}
}

// restartData restarts every data server (empty) and waits for a healthy
// topology (healthy).
func (r *run) restartData() {
	for _, d := range r.sn.Data {
		if !d.Running() {
			d.Restart()
		}
	}
	r.healthy(30 * time.Second)
}

// healthy waits until the primary the sentinels name answers as a
// primary, every other data server replicates it with its link up, and
// every sentinel sees a replica in good standing, so that a failover can
// run. It nudges the data servers (REPLICAOF) instead of waiting for the
// sentinels' slower reconfiguration. It reports false (and logs) if that
// takes longer than d.
func (r *run) healthy(d time.Duration) bool {
	deadline := time.Now().Add(d)
	why := ""
	for time.Now().Before(deadline) {
		ok, w := r.checkTopology()
		if ok {
			return true
		}
		why = w
		time.Sleep(100 * time.Millisecond)
	}
	r.o.Logf("nemesis: redis topology not healthy %s after the fault: %s", d, why)
	r.or.Event("topology not healthy after %s: %s", d, why)
	return false
}

func (r *run) checkTopology() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := r.master()
	if err != nil {
		return false, err.Error()
	}
	host, port, _ := net.SplitHostPort(m)
	if role := roleOf(ctx, m); role != "master" {
		if role == "slave" {
			oneShot(ctx, m, "REPLICAOF", "NO", "ONE")
		}
		return false, fmt.Sprintf("master %s says role %q", m, role)
	}
	for _, ds := range r.sn.Data {
		if ds.Addr() == m || !ds.Running() {
			continue
		}
		info, err := oneShot(ctx, ds.Addr(), "INFO", "replication").ToString()
		if err != nil {
			return false, fmt.Sprintf("replica %s: %v", ds.Addr(), err)
		}
		if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_port:"+port) {
			oneShot(ctx, ds.Addr(), "REPLICAOF", host, port)
			return false, fmt.Sprintf("%s does not replicate %s yet", ds.Addr(), m)
		}
		if !strings.Contains(info, "master_link_status:up") {
			return false, fmt.Sprintf("replica %s: link to %s down", ds.Addr(), m)
		}
	}
	for _, sen := range r.sn.Sentinels {
		reps, err := oneShot(ctx, sen.Addr(), "SENTINEL", "REPLICAS", r.sn.MasterSet).ToArray()
		if err != nil {
			return false, fmt.Sprintf("sentinel %s: %v", sen.Addr(), err)
		}
		good := 0
		for _, rep := range reps {
			f, err := rep.AsStrMap()
			if err != nil {
				continue
			}
			if f["flags"] == "slave" && f["master-link-status"] == "ok" {
				good++
			}
		}
		if good == 0 {
			return false, fmt.Sprintf("sentinel %s sees no good replica", sen.Addr())
		}
	}
	return true, ""
}

func roleOf(ctx context.Context, addr string) string {
	role, err := oneShot(ctx, addr, "ROLE").ToArray()
	if err != nil || len(role) == 0 {
		return ""
	}
	s, _ := role[0].ToString()
	return s
}

// measure reads, per bucket, the count, the sum of the instance hashes
// and the sessions open at the backend.
func (r *run) measure() {
	r.res.Counts, r.res.SumHashes, r.res.Open, r.res.Lost = map[string]int64{}, map[string]int64{}, map[string]int64{}, map[string]int64{}
	ids, _ := r.do("SMEMBERS", "proxy:instances").AsStrSlice()
	keys, _ := r.do("KEYS", "proxy:instance:*:conns").AsStrSlice()
	for _, k := range keys {
		id := strings.TrimSuffix(strings.TrimPrefix(k, "proxy:instance:"), ":conns")
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, b := range bucketIDs {
		n, _ := r.do("GET", "proxy:bucket:"+b+":count").AsInt64()
		var sum int64
		for _, k := range keys {
			v, _ := r.do("HGET", k, b).AsInt64()
			sum += v
		}
		cur := r.bs[b].Stats().Current
		r.res.Counts[b], r.res.SumHashes[b], r.res.Open[b], r.res.Lost[b] = n, sum, cur, n-cur
	}
	r.o.Logf("nemesis: instances in redis %v", ids)
}

func (r *run) lostZero() bool {
	for _, n := range r.res.Lost {
		if n != 0 {
			return false
		}
	}
	return true
}

func (r *run) countsZero() bool {
	for _, b := range bucketIDs {
		if n, _ := r.do("GET", "proxy:bucket:"+b+":count").AsInt64(); n != 0 {
			return false
		}
	}
	return true
}

// Markdown is the result as a bench/results section.
func Markdown(r Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## nemesis: seed %d, lease_loss %s\n\n", r.Seed, r.Options.LeaseLoss)
	fmt.Fprintf(&b, "Replay: `go test -run TestNemesis -timeout 60m ./tools/cluster/nemesis/ -args -nemesis.seed=%d -nemesis.duration=%s -nemesis.instances=%d -nemesis.clients=%d -nemesis.lease-loss=%s`\n\n",
		r.Seed, r.Options.Duration, r.Options.Instances, r.Options.Clients, r.Options.LeaseLoss)
	fmt.Fprintf(&b, "heartbeat_ttl %s, heartbeat_interval %s, reaper_interval %s, op_timeout %s, reclaim_after %s, forget_after %s; buckets bucket-001 max %d, bucket-002 max %d; run took %s.\n\n",
		r.Options.HeartbeatTTL, r.Options.HeartbeatInterval, r.Options.ReaperInterval, r.Options.OpTimeout,
		r.Options.ReclaimAfter, r.Options.ForgetAfter, bucketMax["bucket-001"], bucketMax["bucket-002"], r.Elapsed.Round(time.Second))
	b.WriteString("| fault | injected |\n|---|---|\n")
	for _, f := range Faults {
		fmt.Fprintf(&b, "| %s | %d |\n", f, r.Injected[f])
	}
	b.WriteString("\n| bucket | max | samples (5 ms) | samples above max | highest sample | exact peak | count / sum of hashes / open, " +
		r.LostAfter.Round(time.Millisecond).String() + " after the last fault | lost slots |\n|---|---|---|---|---|---|---|---|\n")
	for _, br := range r.Buckets {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d / %d / %d | %d |\n", br.Bucket, br.Max, br.Samples, br.Over, br.MaxSample, br.Peak,
			r.Counts[br.Bucket], r.SumHashes[br.Bucket], r.Open[br.Bucket], r.Lost[br.Bucket])
	}
	b.WriteString("\nWindows above max (since the start of the watch; the schedule below has the same time base):\n\n```\n")
	for _, br := range r.Buckets {
		for i, w := range br.Windows {
			if i == 30 {
				fmt.Fprintf(&b, "… %d more windows\n", len(br.Windows)-30)
				break
			}
			fmt.Fprintf(&b, "%s above max: %s\n", br.Bucket, w)
		}
	}
	b.WriteString("```\n")
	fmt.Fprintf(&b, "\nSessions completed: %d. Client errors by kind: %v.\n", r.Sessions, r.Errors)
	fmt.Fprintf(&b, "Sessions the instances closed to fence themselves (lease_loss close): %v. Largest overshoot an instance announced it kept (lease_loss keep, its stated bound): %v in %d announcements.\n\n",
		r.Closed, r.KeptOver, r.KeptLines)
	b.WriteString("<details><summary>schedule</summary>\n\n```\n" + strings.Join(r.Schedule, "\n") + "\n```\n</details>\n")
	if !r.OK() {
		b.WriteString("\n<details><summary>timeline</summary>\n\n```\n" + r.Events + "\n```\n</details>\n")
	}
	return b.String()
}

// A snapshot is, at a moment the backend was above max, what each side
// believed: the sessions each instance reports active (its /metrics), what
// Redis counts (count and each conns hash), and the backend's own count.
type snapshot struct {
	at      time.Duration
	backend map[string]int64
	count   map[string]int64
	hashes  map[string]map[string]int64 // id → bucket → n
	active  []string                    // "proxy-1(pid) b1=3 b2=1 [paused]"
}

func (s snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%8.3fs backend %v, redis count %v, hashes %v; instances:", s.at.Seconds(), s.backend, s.count, s.hashes)
	for _, a := range s.active {
		b.WriteString(" " + a)
	}
	return b.String()
}

// track takes a snapshot every 50 ms while the backend of some bucket is
// above max (at most one per 250 ms, 200 in all), until stop.
func (r *run) track(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	hc := &http.Client{Timeout: 150 * time.Millisecond}
	var last time.Duration = -time.Second
	for {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		over := false
		backend := map[string]int64{}
		for _, id := range bucketIDs {
			backend[id] = r.bs[id].Stats().Current
			over = over || backend[id] > int64(bucketMax[id])
		}
		at := r.or.Since()
		if !over || at-last < 250*time.Millisecond || len(r.snaps) >= 200 {
			continue
		}
		last = at
		s := snapshot{at: at, backend: backend, count: map[string]int64{}, hashes: map[string]map[string]int64{}}
		for _, id := range bucketIDs {
			s.count[id], _ = r.do("GET", "proxy:bucket:"+id+":count").AsInt64()
		}
		keys, _ := r.do("KEYS", "proxy:instance:*:conns").AsStrSlice()
		for _, k := range keys {
			h, _ := r.do("HGETALL", k).AsIntMap()
			s.hashes[strings.TrimSuffix(strings.TrimPrefix(k, "proxy:instance:"), ":conns")] = h
		}
		r.mu.Lock()
		all := slices.Clone(r.all)
		r.mu.Unlock()
		for _, p := range all {
			if p.Exited() {
				continue
			}
			desc := fmt.Sprintf("%s(%d)", p.ID, p.Pid())
			if p.Paused() {
				desc += "[paused]"
			} else if m := p.MetricsAddr(); m != "" {
				desc += activeOf(hc, m)
			}
			s.active = append(s.active, desc)
		}
		r.snaps = append(r.snaps, s)
	}
}

var activeRE = regexp.MustCompile(`(?m)^proxy_connections_active\{bucket="([^"]+)"\} (\d+)`)

// activeOf reads the sessions an instance reports active per bucket.
func activeOf(hc *http.Client, addr string) string {
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return "[no metrics]"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var b strings.Builder
	for _, m := range activeRE.FindAllStringSubmatch(string(body), -1) {
		fmt.Fprintf(&b, " %s=%s", strings.TrimPrefix(m[1], "bucket-"), m[2])
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}
