package app_test

import (
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestLeaseLossClosesSessionsOverShare: two instances share a bucket of
// max 4 (A's fallback share: 2). A holds 3 sessions and loses Redis (it
// is paused: nothing answers, as in a partition). With lease_loss close,
// before heartbeat_ttl + reclaim_after have passed A closes its newest
// session: the backend holds 2, its share; the 2 oldest still work. With
// keep nothing is closed.
func TestLeaseLossClosesSessionsOverShare(t *testing.T) {
	for _, policy := range []config.LeaseLoss{config.LeaseLossClose, config.LeaseLossKeep} {
		t.Run(string(policy), func(t *testing.T) {
			rs := redistest.Start(t)
			buckets := testenv.Buckets(t, 1, nil)
			const ttl, reclaim = 1500 * time.Millisecond, 500 * time.Millisecond
			mk := func(id string) *config.Config {
				cfg := testenv.Config(t, buckets)
				cfg.InstanceID = id
				cfg.Redis.Addr = rs.Addr()
				cfg.Redis.HeartbeatTTL, cfg.Redis.HeartbeatInterval, cfg.Redis.ReaperInterval = ttl, 200*time.Millisecond, 200*time.Millisecond
				cfg.Redis.OpTimeout, cfg.Redis.ReclaimAfter, cfg.Redis.LeaseLoss = 200*time.Millisecond, reclaim, policy
				cfg.Buckets[0].MaxConnections = 4
				cfg.Routes = nil
				cfg.DefaultBucket = "bucket-001"
				return cfg
			}
			a := testenv.Proxy(t, mk("inst-a"))
			testenv.Proxy(t, mk("inst-b"))
			testenv.WaitUntil(t, func() bool { return a.RedisLimiter().LiveInstances() == 2 })
			var conns []*tdsclient.Conn
			for range 3 {
				c, err := dialTDS(t, a, testenv.Passwords[0])
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				mustExec(t, c, "SELECT 1")
				conns = append(conns, c)
				time.Sleep(5 * time.Millisecond) // distinct start times: the newest is closed first
			}
			testenv.WaitUntil(t, func() bool { _, s := a.RedisLimiter().Status(); return s[0].Count == 3 })
			rs.Pause()
			defer rs.Resume()
			paused := time.Now()
			deadline := paused.Add(ttl + reclaim)
			if policy == config.LeaseLossKeep {
				time.Sleep(ttl + reclaim + 500*time.Millisecond)
				if cur := buckets[0].Stats().Current; cur != 3 {
					t.Fatalf("keep: backend holds %d, want 3", cur)
				}
				return
			}
			for buckets[0].Stats().Current > 2 {
				if time.Now().After(deadline) {
					t.Fatalf("backend still holds %d sessions at heartbeat_ttl + reclaim_after after the partition", buckets[0].Stats().Current)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("close: backend down to %d sessions %s after the partition (heartbeat_ttl %s + reclaim_after %s = %s)",
				buckets[0].Stats().Current, time.Since(paused).Round(time.Millisecond), ttl, reclaim, ttl+reclaim)
			if _, err := conns[2].Exec("SELECT 1", 0); err == nil {
				t.Fatal("the newest session still works")
			}
			for _, c := range conns[:2] {
				mustExec(t, c, "SELECT 1")
			}
			_, s := a.RedisLimiter().Status()
			if s[0].Held != 2 || a.RedisLimiter().State() == limiter.StateConnected {
				t.Fatalf("A holds %d (state %s), want 2 in fallback", s[0].Held, a.RedisLimiter().State())
			}
		})
	}
}
