package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestSameHostRestartWithRedis: the restart pkg/listener documents — the
// new process starts on the same port (SO_REUSEPORT) with the same
// instance_id while the old one still serves, then the old one gets
// SIGTERM and drains — in Redis mode. The new process runs as a sibling id
// and never touches the old one's holdings; the count never drops below
// the sessions open nor rises above max; after the old one left, only the
// new one is registered and the count equals its sessions.
func TestSameHostRestartWithRedis(t *testing.T) {
	rs := redistest.Start(t)
	rc := rs.Client(t)
	buckets := testenv.Buckets(t, 1, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	h, err := passhash.NewWithIterations(testenv.Passwords[0], passhash.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "proxy.yaml")
	y := fmt.Sprintf(`instance_id: host-1
listen: %s
listeners: 2
health_listen: ""
metrics_listen: ""
admin_listen: ""
drain_timeout: 5s
redis:
  addr: %s
  heartbeat_ttl: 3s
  heartbeat_interval: 500ms
  reaper_interval: 500ms
  op_timeout: 300ms
buckets:
  - id: bucket-001
    address: %s
    encryption: none
    max_connections: 4
    max_queue_size: 0
routes:
  - bucket: bucket-001
    user: sa
    password_hash: "%s"
`, listen, rs.Addr(), buckets[0].Addr(), h)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	count := func() int64 { return redistest.Int(t, rc, "GET", limiter.KeyCount("bucket-001")) }
	dial := func() (*tdsclient.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return tdsclient.Dial(ctx, tdsclient.Options{Addr: listen, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db"})
	}

	old := start(t, cfg)
	old.waitLog(t, "tdsgate listening")
	var held []*tdsclient.Conn
	for range 3 {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if n := count(); n != 3 {
		t.Fatalf("count %d with 3 sessions on the old process", n)
	}

	// The new process, same id, same port.
	neu := start(t, cfg)
	neu.waitLog(t, "tdsgate listening")
	neu.waitLog(t, "registers as a sibling id")
	members, _ := redistest.Do(t, rc, "SMEMBERS", limiter.KeyInstances).AsStrSlice()
	slices.Sort(members)
	if len(members) != 2 || members[0] != "host-1" || !strings.HasPrefix(members[1], "host-1~") {
		t.Fatalf("proxy:instances = %v, want host-1 and a sibling", members)
	}
	if n := redistest.Int(t, rc, "HGET", limiter.KeyConns("host-1"), "bucket-001"); n != 3 || count() != 3 {
		t.Fatalf("the new process changed the old one's holdings: hash %d, count %d", n, count())
	}
	// One slot is left: the two processes together admit exactly one more.
	var extra []*tdsclient.Conn
	for range 4 {
		if c, err := dial(); err == nil {
			extra = append(extra, c)
		}
	}
	if len(extra) != 1 || count() != 4 || buckets[0].Stats().Current != 4 {
		t.Fatalf("admitted %d more with 3 of 4 held (count %d, backend %d)", len(extra), count(), buckets[0].Stats().Current)
	}

	// SIGTERM the old one; the sessions end (the extra one may be on
	// either process); it drains and leaves.
	old.cmd.Process.Signal(syscall.SIGTERM)
	for _, c := range append(held, extra...) {
		c.Close()
	}
	extra = nil
	errc := make(chan error, 1)
	go func() { errc <- old.cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("old process: %v\n%s", err, old.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the old process did not exit")
	}
	members, _ = redistest.Do(t, rc, "SMEMBERS", limiter.KeyInstances).AsStrSlice()
	if len(members) != 1 || !strings.HasPrefix(members[0], "host-1~") {
		t.Fatalf("after the old process left: proxy:instances = %v", members)
	}
	testenv.WaitUntil(t, func() bool { return count() == 0 && buckets[0].Stats().Current == 0 })
	// The new process serves the port alone, up to max.
	for range 4 {
		if c, err := dial(); err == nil {
			extra = append(extra, c)
		}
	}
	if cur := buckets[0].Stats().Current; cur != 4 || count() != 4 {
		t.Fatalf("backend %d, count %d: want 4", cur, count())
	}
	if p := buckets[0].Stats().Peak; p > 4 {
		t.Fatalf("backend peak %d above max 4", p)
	}
	for _, c := range extra {
		c.Close()
	}
}
