package cluster_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/cluster"
	"github.com/tdsgate/tdsgate/tools/cluster/netfault"
)

// A Sentinel failover while the replica is in a full sync: redis-sentinel
// promotes a replica in sync (its link has been down for less than 10 ×
// down-after), with the data it had before the sync. Three instances
// churn 30 clients against max 4; proxy-2 and proxy-3 use redis.sentinel,
// proxy-1 reaches the primary through a TCP proxy whose links to the old
// primary stay up 4 s after the failover (a load balancer's health check);
// every instance confirms its grants (wait_replicas 1). The oracle is the
// stand-in. The sync is made long (repl-diskless-sync-delay 30 s on the
// primary) so that the failover lands in it on a loaded machine.

// TestReproFailoverDuringResync: the replica falls behind (stalled, its
// link dropped, the backlog overrun), comes back and needs a full sync;
// the clients come only once ReplicaHold (10 s) has passed, so no
// instance re-registered meanwhile and the replica's data keeps every
// current register epoch: nothing fences the instances on it once it is
// promoted. Before the fix a replica in sync did not count among the
// replicas a grant waits for: after ReplicaHold the instances granted
// without WAIT, proxy-1 kept doing so on the old primary after the
// promotion, and the others filled the new primary, which knew nothing of
// proxy-1's sessions: 5 and 7 of max 4 in two runs. After: the replica in
// sync counts, every grant fails its WAIT and is given back (the instance
// falls back), on the old primary too (the hold): none is lost.
func TestReproFailoverDuringResync(t *testing.T) {
	e := startSyncEnv(t)
	replica := e.replica()
	waitFor(t, 10*time.Second, "the replica has the 3 registrations", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		v, err := oneShotInt(ctx, replica.Addr(), "SCARD", keyInstances)
		return err == nil && v == 3
	})
	// The primary keeps 16 KiB of backlog and delays a full sync 30 s.
	e.primaryDo("CONFIG", "SET", "repl-backlog-size", "16384")
	e.primaryDo("CONFIG", "SET", "repl-diskless-sync-delay", "30")
	// Stall the replica (shorter than down-after: the sentinels keep it
	// promotable), drop its link and write past the backlog: it resyncs
	// in full, its old data (count 0, current epochs) kept meanwhile.
	replica.Pause()
	e.primaryDo("CLIENT", "KILL", "TYPE", "replica")
	for i := range 4 {
		e.primaryDo("SET", fmt.Sprintf("tdsgate-test-filler-%d", i), strings.Repeat("x", 64<<10))
	}
	// Resume once the backlog no longer holds what the replica missed.
	histlen := ""
	if !waitUntil(5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, _ := oneShotStr(ctx, e.primary.Addr(), "INFO", "replication")
		_, rest, _ := strings.Cut(info, "repl_backlog_histlen:")
		histlen, _, _ = strings.Cut(rest, "\r\n")
		n, err := strconv.Atoi(histlen)
		return err == nil && n < 64<<10
	}) {
		t.Logf("the backlog still holds %s bytes", histlen)
	}
	replica.Resume()
	e.o.Event("replica %s stalled, back, in a full sync", replica.Addr())
	last := ""
	if !waitUntil(10*time.Second, func() (ok bool) { last, ok = e.syncing(); return ok }) {
		t.Fatalf("the replica is not in a full sync 10 s after its stall: %s\nprimary:\n%s\nreplica:\n%s", last, e.primary.Log(), replica.Log())
	}
	// No client until ReplicaHold (10 s) has passed without a replica
	// online (a quiet hour): no acquire, no fallback, no register, so the
	// replica's data keeps every instance's current register epoch. Then
	// the clients come.
	e.churnThenFailover(12*time.Second, 2*time.Second)
}

// TestReproFailoverAfterEmptyRestart: the primary restarts empty and is
// failed over to its replica while the replica is in its initial sync.
// The replica has the data of before the restart: every instance
// registered again on the restarted primary (new epochs), so the register
// epoch fences every instance that follows the promoted replica until it
// has re-asserted its holdings there. Not proxy-1, whose TCP proxy keeps
// its link to the old primary 4 s: the sessions it was granted there in
// the sync are counted nowhere the others look, and they take those slots
// again. A version that let grants in a first sync stand showed 5 of max 4
// (2 runs of 3); so they fail until the replica is online. Passed on main
// in the runs made (timing), where the same grants were made without WAIT.
func TestReproFailoverAfterEmptyRestart(t *testing.T) {
	e := startSyncEnv(t)
	p := e.primary
	p.Kill()
	p.Restart()
	waitFor(t, 5*time.Second, "the restarted primary answers CONFIG SET", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := oneShotStr(ctx, p.Addr(), "CONFIG", "SET", "repl-diskless-sync-delay", "30")
		return err == nil
	})
	e.o.Event("primary %s restarted empty", p.Addr())
	waitFor(t, 10*time.Second, "the replica attached, in its initial sync", func() bool { _, ok := e.syncing(); return ok })
	waitFor(t, 10*time.Second, "3 registered on the restarted primary", e.registered(3))
	// Reconcile, settle (2 s), then the churn's grants.
	e.churnThenFailover(0, 8*time.Second)
}

type syncEnv struct {
	t       *testing.T
	sn      *redistest.Sentinel
	primary *redistest.Server
	o       *cluster.Oracle
	// nf is proxy-1's way to Redis: a TCP proxy to the primary the
	// sentinels name at each new connection, whose links to the old
	// primary stay up until Reset (a load balancer's health check that
	// takes a few seconds to mark the old primary down).
	nf      *netfault.Proxy
	current func() int64
	addrs   []string
}

const syncMax = 4

// startSyncEnv starts Sentinel (a primary, a replica, three sentinels;
// down-after 2 s), the stand-in and three instances on a bucket of max
// 4, and the oracle once they are registered. No session is open yet.
func startSyncEnv(t *testing.T) *syncEnv {
	sn := redistest.StartSentinel(t, redistest.SentinelOptions{DownAfter: 2 * time.Second, FailoverTimeout: 3 * time.Second})
	si := backend(t)
	e := &syncEnv{t: t, sn: sn, primary: sn.Primary(), current: func() int64 { return si.Stats().Current }}
	nf, err := netfault.New(func() (string, error) { return sentinelMaster(sn) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nf.Close)
	e.nf = nf
	one := 1
	for i := 1; i <= 3; i++ {
		c := cluster.Config{InstanceID: fmt.Sprintf("proxy-%d", i), RedisAddr: sn.Master(),
			Sentinel: &cluster.Sentinel{MasterSet: sn.MasterSet, Addrs: sn.Addrs()}, OpTimeout: 300 * time.Millisecond,
			Buckets: []cluster.Bucket{bucket(syncMax, 100, time.Second, si.Addr())}}
		if i == 1 {
			c.RedisAddr, c.Sentinel, c.WaitReplicas = nf.Addr(), nil, &one
		}
		p := cluster.Start(t, c)
		e.addrs = append(e.addrs, p.Addr)
	}
	waitFor(t, 10*time.Second, "3 registered", e.registered(3))
	e.o = watchOne(t, si, syncMax)
	return e
}

func (e *syncEnv) replica() *redistest.Server {
	for _, d := range e.sn.Data {
		if d != e.primary {
			return d
		}
	}
	e.t.Fatal("no replica")
	return nil
}

func (e *syncEnv) primaryDo(args ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{e.primary.Addr()}, ForceSingleClient: true, DisableCache: true,
		DisableRetry: true, ConnWriteTimeout: time.Second})
	if err == nil {
		err = c.Do(ctx, c.B().Arbitrary(args...).Build()).Error()
		c.Close()
	}
	if err != nil {
		e.t.Fatalf("%v: %v", args, err)
	}
}

func (e *syncEnv) registered(n int64) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		v, err := oneShotInt(ctx, e.primary.Addr(), "SCARD", keyInstances)
		return err == nil && v == n
	}
}

// syncing reports the primary's first replica line and whether that
// replica is attached but not online (in a full sync).
func (e *syncEnv) syncing() (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := oneShotStr(ctx, e.primary.Addr(), "INFO", "replication")
	if err != nil {
		return err.Error(), false
	}
	for _, l := range strings.Split(info, "\r\n") {
		if strings.HasPrefix(l, "slave0:") {
			return l, !strings.Contains(l, "state=online")
		}
	}
	return "no replica attached", false
}

// churnThenFailover waits idle, churns 30 clients for busy, checks the
// replica is still in its sync, fails over to it (SENTINEL FAILOVER),
// churns 4 s more and checks the oracle: the backend never above max.
func (e *syncEnv) churnThenFailover(idle, busy time.Duration) {
	t := e.t
	time.Sleep(idle)
	stop := make(chan struct{})
	wait := churn(e.addrs, 30, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()
	time.Sleep(busy)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	count, _ := oneShotInt(ctx, e.primary.Addr(), "GET", keyCount(bucketID))
	cancel()
	state, ok := e.syncing()
	t.Logf("before the failover: count %d on the primary, backend %d; replica %s", count, e.current(), state)
	if !ok {
		t.Fatalf("setup: the replica is not in a sync (%s): the failover would not land in it", state)
	}
	e.o.Event("SENTINEL FAILOVER while the replica syncs (count %d)", count)
	m := e.sn.Failover()
	e.o.Event("new master %s", m)
	time.Sleep(4 * time.Second)
	e.nf.Reset()
	e.o.Event("proxy-1's links to the old primary reset")
	time.Sleep(3 * time.Second)
	close(stop)
	stopped = true
	t.Logf("churn: %d sessions", wait())
	checkOracle(t, e.o)
	if t.Failed() {
		t.Logf("timeline:\n%s", e.o.Events())
	}
}

// sentinelMaster is the primary the first sentinel that answers names.
func sentinelMaster(sn *redistest.Sentinel) (string, error) {
	var err error
	for _, a := range sn.Addrs() {
		var c rueidis.Client
		c, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{a}, ForceSingleClient: true, DisableCache: true,
			DisableRetry: true, ConnWriteTimeout: time.Second})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var r []string
		r, err = c.Do(ctx, c.B().Arbitrary("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sn.MasterSet).Build()).AsStrSlice()
		cancel()
		c.Close()
		if err == nil && len(r) == 2 {
			return net.JoinHostPort(r[0], r[1]), nil
		}
	}
	return "", fmt.Errorf("no sentinel names the master: %v", err)
}

// oneShotStr runs one command on addr over a fresh connection; its reply
// as a string.
func oneShotStr(ctx context.Context, addr string, args ...string) (string, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true,
		DisableRetry: true, ConnWriteTimeout: time.Second})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).ToString()
}

// oneShotInt runs one command on a fresh connection to addr (no retry, no
// cache: the answer of that server, now) and reads an integer.
func oneShotInt(ctx context.Context, addr string, args ...string) (int64, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true,
		DisableRetry: true, ConnWriteTimeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).AsInt64()
}
