package limiter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// startReplicated runs a primary and one replica and waits until the
// replica's link is up.
func startReplicated(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t)
	replica = redistest.StartWith(t, redistest.Options{ReplicaOf: primary.Addr()})
	rc := replica.Client(t)
	waitCond(t, 20*time.Second, "replica link up", func() bool {
		info, _ := redistest.Do(t, rc, "INFO", "replication").ToString()
		return strings.Contains(info, "master_link_status:up")
	})
	return primary, replica
}

// TestRedisWaitReplicas: with wait_replicas 1 and the replica attached,
// acquires (one, then concurrent ones sharing an acquire n) are granted
// and confirmed. With the replica stopped (SIGSTOP: its link stays open,
// it acknowledges nothing), an acquire is not granted: the grant WAIT did
// not confirm is given back (Redis' count is back where it was) and the
// instance falls back, admitting nothing past what Redis counts for it
// (lease_loss close). With the replica resumed, acquires are granted again.
func TestRedisWaitReplicas(t *testing.T) {
	primary, replica := startReplicated(t)
	rc := replica.Client(t)
	c := primary.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 10, MaxQueueSize: 10, QueueTimeout: 5 * time.Second}}
	l := newRedisLimiter(t, primary.Addr(), "w1", bs, func(o *RedisOptions) { o.WaitReplicas = 1 })

	held := acquireN(t, l, "b", 1)
	// Concurrent acquires: the queue batches them (acquire n), all confirmed.
	done := make(chan Ticket, 3)
	for range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tk, err := l.Acquire(ctx, "b")
			if err != nil {
				t.Error(err)
			}
			done <- tk
		}()
	}
	for range 3 {
		if tk := <-done; tk != nil {
			held = append(held, tk)
		}
	}
	if len(held) != 4 {
		t.Fatalf("held %d, want 4", len(held))
	}
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 4 {
		t.Fatalf("count %d, want 4", n)
	}
	if n := redistest.Int(t, rc, "GET", coord.KeyCount("b")); n != 4 {
		t.Fatalf("replica count %d right after confirmed grants, want 4", n)
	}
	if l.State() != StateConnected {
		t.Fatalf("state %s, want connected", l.State())
	}

	replica.Pause()
	resumed := false
	defer func() {
		if !resumed {
			replica.Resume()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	tk, err := l.Acquire(ctx, "b")
	cancel()
	if err == nil {
		tk.Release()
		t.Fatal("acquire granted while the replica acknowledged nothing")
	}
	// The limiter keeps trying (fallback, re-register, settle, acquire,
	// WAIT fails, give back), so a grant may be outstanding at any moment
	// on the primary, never admitted on: between two tries the count and
	// the hash are back at 4.
	waitCond(t, 5*time.Second, "count and hash back at 4 (unconfirmed grants given back)", func() bool {
		return redistest.Int(t, c, "GET", coord.KeyCount("b")) == 4 && redistest.Int(t, c, "HGET", coord.KeyConns("w1"), "b") == 4
	})

	replica.Resume()
	resumed = true
	held = append(held, acquireN(t, l, "b", 1)...)
	if n := redistest.Int(t, c, "GET", coord.KeyCount("b")); n != 5 {
		t.Fatalf("count %d after the replica came back, want 5", n)
	}
	releaseAll(held)
	waitCond(t, 5*time.Second, "count back to 0", func() bool {
		return redistest.Int(t, c, "GET", coord.KeyCount("b")) == 0
	})
}

// TestReplicaView: a drop in the replicas seen is believed only after the
// hold; a rise, or a different primary, at once. A different primary seen
// with no replica online is in its first sync (firstSync) until one is
// seen online; the first primary a process sees never is.
func TestReplicaView(t *testing.T) {
	var v replicaView
	t0 := time.Unix(1000, 0)
	steps := []struct {
		runID        string
		seen, online int
		at           time.Duration
		want, wantN  int
		first        bool
		what         string
	}{
		{"", -1, 0, 0, 1, 1, false, "unknown"},
		{"a", 1, 0, 0, 1, 1, false, "first primary, replica in sync: counted, not a first sync"},
		{"a", 1, 1, 0, 1, 1, false, "one replica online"},
		{"a", 0, 0, 5 * time.Second, 1, 1, false, "drop within the hold"},
		{"", 0, 0, 11 * time.Second, 1, 0, false, "drop past the hold"},
		{"a", 2, 2, 12 * time.Second, 3, 2, false, "rise"},
		{"b", 0, 0, 13 * time.Second, 1, 0, true, "new primary with no replica"},
		{"b", 1, 0, 14 * time.Second, 1, 1, true, "its replica attached, in its first sync"},
		{"b", 1, 1, 19 * time.Second, 1, 1, false, "online"},
		{"b", 1, 0, 20 * time.Second, 1, 1, false, "a resync of the same primary is not a first sync"},
		{"c", 1, 1, 21 * time.Second, 1, 1, false, "new primary with a replica online"},
		{"", -1, 0, 0, 0, 0, false, "wait_replicas 0"},
	}
	for _, s := range steps {
		if s.seen >= 0 {
			v.note(s.runID, s.seen, s.online, t0.Add(s.at), 10*time.Second)
		}
		if n := v.required(s.want); n != s.wantN {
			t.Fatalf("%s: required(%d) = %d, want %d", s.what, s.want, n, s.wantN)
		}
		if f := v.firstSync(); f != s.first {
			t.Fatalf("%s: firstSync = %v, want %v", s.what, f, s.first)
		}
	}
}

// TestRedisWaitReplicasFullSync: with wait_replicas 1, the primary is
// restarted empty and its replica is in a full sync from it (state
// wait_bgsave, kept there by repl-diskless-sync-delay 30). The replica in
// sync counts (Sentinel would promote it, and an instance still writing to
// this primary after that would hold slots nobody else counts): neither
// the limiter that saw the primary before (it knows the primary is new:
// INFO instead of WAIT) nor one started now gets a grant; each grant is
// given back, not admitted on. Before, a replica in sync did not count and
// both were granted.
func TestRedisWaitReplicasFullSync(t *testing.T) {
	primary, _ := startReplicated(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 10, MaxQueueSize: 10, QueueTimeout: 5 * time.Second}}
	wait1 := func(o *RedisOptions) { o.WaitReplicas = 1 }
	l := newRedisLimiter(t, primary.Addr(), "w1", bs, wait1)
	releaseAll(acquireN(t, l, "b", 1))

	primary.Kill()
	primary.Restart()
	c := primary.Client(t)
	redistest.Do(t, c, "CONFIG", "SET", "repl-diskless-sync-delay", "30")
	syncing := func() bool {
		info, _ := redistest.Do(t, c, "INFO", "replication").ToString()
		return strings.Contains(info, "state=wait_bgsave") || strings.Contains(info, "state=send_bulk")
	}
	waitCond(t, 10*time.Second, "the replica attached, in its full sync", syncing)
	waitCond(t, 10*time.Second, "w1 connected again", func() bool { return l.State() == StateConnected })
	l2 := newRedisLimiter(t, primary.Addr(), "w2", bs, wait1)
	for _, lim := range []*Redis{l, l2} {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		tk, err := lim.Acquire(ctx, "b")
		cancel()
		if err == nil {
			tk.Release()
			t.Fatalf("%s granted while the primary's replica syncs: the replica in sync did not count", lim.InstanceID())
		}
	}
	if !syncing() {
		t.Fatal("the replica is no longer in its full sync: the check proves nothing")
	}
	waitCond(t, 5*time.Second, "the unconfirmed grants given back", func() bool {
		return redistest.Int(t, c, "GET", coord.KeyCount("b")) == 0
	})
}
