package coord

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// startReplicated runs a primary and one replica and waits until the
// replica's link is up.
func startReplicated(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t)
	replica = redistest.StartWith(t, redistest.Options{ReplicaOf: primary.Addr()})
	rc := replica.Client(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, _ := redistest.Do(t, rc, "INFO", "replication").ToString()
		if strings.Contains(info, "master_link_status:up") {
			return primary, replica
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica link not up: %s", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAcquireConfirmedByReplica: with the replica attached, a grant (one
// slot, then an acquire n of three) is acknowledged by it (WAIT 1 on the
// script's connection) and the grant is on the replica. With the replica
// stopped (SIGSTOP) the grant is acknowledged by none; ReleaseSlotsAt
// gives it back and the count is where it was.
func TestAcquireConfirmedByReplica(t *testing.T) {
	primary, replica := startReplicated(t)
	c := primary.Client(t)
	rc := replica.Client(t)
	register(t, c, "i1")
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	r, err := AcquireSlotsConfirmed(ctx(), c, "i1", "b", 10, 0, 1, time.Second, 0, 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != AcquireGranted || r.Granted != 1 || r.Replicas < 1 {
		t.Fatalf("attached replica: %+v, want granted 1 confirmed by >= 1 replica", r)
	}
	r, err = AcquireSlotsConfirmed(ctx(), c, "i1", "b", 10, 3, 3, time.Second, 0, 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != AcquireGranted || r.Granted != 3 || r.Replicas < 1 || r.Count != 4 {
		t.Fatalf("acquire n: %+v, want 3 granted, count 4, confirmed", r)
	}
	// Acknowledged means on the replica already: no sleep needed.
	if n := redistest.Int(t, rc, "GET", KeyCount("b")); n != 4 {
		t.Fatalf("replica count %d right after a confirmed grant, want 4", n)
	}

	replica.Pause()
	defer replica.Resume()
	r, err = AcquireSlotsConfirmed(ctx(), c, "i1", "b", 10, 2, 2, time.Second, 0, 1, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != AcquireGranted || r.Granted != 2 || r.Replicas != 0 {
		t.Fatalf("stopped replica: %+v, want granted 2 acknowledged by 0", r)
	}
	if !strings.Contains(r.ServerInfo, "run_id:") || !strings.Contains(r.ReplicationInfo, "connected_slaves:1") {
		t.Fatalf("short WAIT: granting server's INFO missing: %q / %q", r.ServerInfo, r.ReplicationInfo)
	}
	released, count, err := ReleaseSlotsAt(ctx(), c, "i1", "b", 0, int(r.Granted))
	if err != nil || released != 2 || count != 4 {
		t.Fatalf("give back: released %d count %d err %v, want 2, 4", released, count, err)
	}
	if n := redistest.Int(t, c, "GET", KeyCount("b")); n != 4 {
		t.Fatalf("count %d after the unconfirmed grant was given back, want 4", n)
	}
	if n := redistest.Int(t, c, "HGET", KeyConns("i1"), "b"); n != 4 {
		t.Fatalf("hash %d, want 4", n)
	}

	// replicas 0: plain AcquireSlots, no WAIT (Replicas 0 even with a replica).
	replica.Resume()
	r, err = AcquireSlotsConfirmed(ctx(), c, "i1", "b", 10, 0, 1, time.Second, 0, 0, time.Second)
	if err != nil || r.Status != AcquireGranted || r.Replicas != 0 {
		t.Fatalf("replicas 0: %+v %v", r, err)
	}
}

// TestAcquireConfirmedNoScript: the hand-built EVALSHA falls back to EVAL
// on a server that never saw the script (SCRIPT FLUSH: a restart, a
// failover), still with WAIT on the same connection.
func TestAcquireConfirmedNoScript(t *testing.T) {
	primary, _ := startReplicated(t)
	c := primary.Client(t)
	register(t, c, "i1")
	redistest.Do(t, c, "SCRIPT", "FLUSH")
	r, err := AcquireSlotsConfirmed(context.Background(), c, "i1", "b", 10, 0, 1, time.Second, 0, 1, 2*time.Second)
	if err != nil || r.Status != AcquireGranted || r.Replicas < 1 {
		t.Fatalf("after SCRIPT FLUSH: %+v %v", r, err)
	}
}

// TestReplicasIn: a replica in a full sync is attached, not online (the
// limiter counts it among the replicas a grant waits for: Sentinel would
// promote it).
func TestReplicasIn(t *testing.T) {
	info := "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n" +
		"slave0:ip=127.0.0.1,port=1,state=online,offset=10,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n" +
		"slave2:ip=127.0.0.1,port=3,state=send_bulk,offset=0,lag=0\r\n" +
		"master_failover_state:no-failover\r\nmaster_repl_offset:10\r\n"
	if n, online, ok := ReplicasIn(info); !ok || n != 3 || online != 1 {
		t.Fatalf("ReplicasIn = %d, %d, %v; want 3, 1, true", n, online, ok)
	}
	if n, _, ok := ReplicasIn("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n"); !ok || n != 0 {
		t.Fatalf("no replica: ReplicasIn = %d, %v; want 0, true", n, ok)
	}
	if _, _, ok := ReplicasIn("# Server\r\nrun_id:x\r\n"); ok {
		t.Fatal("not a replication section: ok")
	}
}

// TestAcquireConfirmedRetry: the replica is online but stopped (SIGSTOP,
// its link up): a 1 ms WAIT comes back short, INFO shows a replica
// online, so the grant waits again (retryWait) on the same connection,
// and the replica, resumed meanwhile, acknowledges it. With retryWait 0
// (AcquireSlotsConfirmed) it does not: Replicas 0.
func TestAcquireConfirmedRetry(t *testing.T) {
	primary, replica := startReplicated(t)
	c := primary.Client(t)
	register(t, c, "i1")
	replica.Pause()
	resumed := make(chan struct{})
	defer func() {
		select {
		case <-resumed:
		default:
			replica.Resume()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := AcquireSlotsConfirmed(ctx, c, "i1", "b", 10, 0, 1, time.Second, 0, 1, time.Millisecond)
	if err != nil || r.Status != AcquireGranted || r.Replicas != 0 {
		t.Fatalf("no retry: %+v %v, want granted, acknowledged by 0", r, err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		replica.Resume()
		close(resumed)
	}()
	r, err = AcquireSlotsConfirmedRetry(ctx, c, "i1", "b", 10, 0, 1, time.Second, 0, 1, time.Millisecond, 3*time.Second)
	if err != nil || r.Status != AcquireGranted || r.Replicas != 1 {
		t.Fatalf("retry: %+v %v, want granted, acknowledged by 1 on the second WAIT", r, err)
	}
	// waitFor 0: INFO instead of the first WAIT, then the WAIT (a replica online).
	r, err = AcquireSlotsConfirmedRetry(ctx, c, "i1", "b", 10, 0, 1, time.Second, 0, 1, 0, 3*time.Second)
	if err != nil || r.Status != AcquireGranted || r.Replicas != 1 || !strings.Contains(r.ServerInfo, "run_id:") {
		t.Fatalf("INFO first: %+v %v, want granted, acknowledged by 1, the server's INFO", r, err)
	}
}

// TestAcquireInfoFirstNoReplica: waitFor 0 on a primary with no replica:
// one round trip (script, INFO), no WAIT, Replicas 0, INFO set.
func TestAcquireInfoFirstNoReplica(t *testing.T) {
	c := redistest.Start(t).Client(t)
	register(t, c, "i1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := AcquireSlotsConfirmedRetry(ctx, c, "i1", "b", 10, 0, 1, time.Second, 0, 1, 0, time.Second)
	if err != nil || r.Status != AcquireGranted || r.Replicas != 0 || !strings.Contains(r.ReplicationInfo, "connected_slaves:0") {
		t.Fatalf("%+v %v, want granted, 0 replicas, INFO replication", r, err)
	}
}
