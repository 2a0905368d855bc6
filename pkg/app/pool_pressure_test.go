package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestPoolPressureAcrossInstances: two instances share a bucket of 4
// slots through Redis. All four are idle connections pooled on A; a
// client of B queues, B publishes pressure, A closes its idle connections
// and the client on B gets a slot within a second.
func TestPoolPressureAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	rc := rs.Client(t)
	buckets := testenv.Buckets(t, 1, nil)
	mk := func(id string) *config.Config {
		cfg := pooledConfig(t, buckets)
		cfg.InstanceID = id
		cfg.Redis.Addr = rs.Addr()
		cfg.Buckets[0].MaxConnections = 4
		cfg.Buckets[0].QueueTimeout = 10 * time.Second
		return cfg
	}
	a := testenv.Proxy(t, mk("inst-a"))
	b := testenv.Proxy(t, mk("inst-b"))
	pa := poolOf(t, a)

	// Four sessions on A at once, then all leave: four idle connections.
	var conns []*tdsclient.Conn
	for range 4 {
		c, err := dialTDS(t, a, testenv.Passwords[0])
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, c, "SELECT 1")
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	waitIdle(t, pa, 4)
	if n := redistest.Int(t, rc, "GET", limiter.KeyCount("bucket-001")); n != 4 {
		t.Fatalf("global count %d with four idle connections, want 4 (idle connections hold their slots)", n)
	}

	// A client of B: the bucket is full, it queues; it must get a slot
	// from A's idle connections within a second.
	start := time.Now()
	c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: b.Addr(), User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", App: "pressure", Encrypt: tdsclient.EncryptLogin, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waited := time.Since(start)
	t.Logf("client on B got a connection after %v", waited)
	if waited > time.Second {
		t.Fatalf("client on B waited %v while A held idle slots", waited)
	}
	if r := mustExec(t, c, "SELECT 1"); len(r.Rows) != 1 {
		t.Fatalf("%v", r.Rows)
	}
	if s := pa.Stats(); s.Idle > 3 {
		t.Fatalf("A still has %d idle connections", s.Idle)
	}
}

// TestPoolPressureLocal: on one instance, a client queued for a bucket
// whose slots are all idle connections of another login gets one at once.
func TestPoolPressureLocal(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := pooledConfig(t, buckets)
	cfg.Buckets[0].MaxConnections = 2
	a := testenv.Proxy(t, cfg)
	p := poolOf(t, a)
	c1, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	c2, err := dialTDS(t, a, testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	c1.Close()
	c2.Close()
	waitIdle(t, p, 2)
	start := time.Now()
	// Another application name: another sub-pool, so it cannot reuse.
	c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", App: "other-app", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("waited %v with idle connections holding the slots", d)
	}
}
