package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRedisFaultToleranceKeys(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, minimal)
	r := c.Redis
	if r.LeaseLoss != LeaseLossClose || r.ExpectedInstances != DefaultExpectedInstances ||
		r.TLS.On() || r.Sentinel.MasterSet != "" || r.Username != "" || r.Enabled() {
		t.Fatalf("redis defaults: %+v", r)
	}
	if n := r.WaitReplicasN(); n != 0 {
		t.Fatalf("wait_replicas without sentinel: %d, want 0", n)
	}

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("x"), 0o600)
	c = mustLoad(t, minimal+`
redis:
  lease_loss: keep
  expected_instances: 3
  username: tdsgate
  tls: {ca_file: `+ca+`, cert_file: `+ca+`, key_file: `+ca+`, server_name: redis.test, insecure_skip_verify: false}
  sentinel: {master_set: main, addrs: ["127.0.0.1:26379", "127.0.0.1:26380"]}
`)
	r = c.Redis
	if r.LeaseLoss != LeaseLossKeep || r.ExpectedInstances != 3 || r.Username != "tdsgate" || !r.TLS.On() ||
		r.TLS.ServerName != "redis.test" || r.Sentinel.MasterSet != "main" || len(r.Sentinel.Addrs) != 2 || !r.Enabled() {
		t.Fatalf("redis: %+v", r)
	}
	if n := r.WaitReplicasN(); n != DefaultWaitReplicasSentinel {
		t.Fatalf("wait_replicas with sentinel: %d, want %d", n, DefaultWaitReplicasSentinel)
	}
	if n := mustLoad(t, minimal+"redis: {sentinel: {master_set: m, addrs: [127.0.0.1:26379]}, wait_replicas: 0}\n").Redis.WaitReplicasN(); n != 0 {
		t.Fatalf("wait_replicas 0 with sentinel: %d", n)
	}
	if n := mustLoad(t, minimal+"redis: {addr: 127.0.0.1:6379, wait_replicas: 2}\n").Redis.WaitReplicasN(); n != 2 {
		t.Fatalf("wait_replicas 2: %d", n)
	}
	if c.Redacted().Redis.Sentinel.Addrs[0] != "127.0.0.1:26379" {
		t.Fatal("Redacted lost the sentinel addrs")
	}

	t.Setenv(EnvRedisUsername, "fromenv")
	if c := mustLoad(t, minimal); c.Redis.Username != "fromenv" {
		t.Fatalf("REDIS_USERNAME: %q", c.Redis.Username)
	}
	t.Setenv(EnvRedisUsername, "")

	cases := []struct{ yaml, path string }{
		{"redis: {lease_loss: drop}", "redis.lease_loss"},
		{"redis: {expected_instances: -1}", "redis.expected_instances"},
		{"redis: {wait_replicas: -1}", "redis.wait_replicas"},
		{"redis: {tls: {ca_file: " + ca + ", cert_file: " + ca + "}}", "redis.tls.cert_file"},
		{"redis: {tls: {server_name: x}}", "redis.tls"},
		{"redis: {tls: {ca_file: /nonexistent/ca.pem}}", "redis.tls.ca_file"},
		{"redis: {addr: 127.0.0.1:6379, sentinel: {master_set: m, addrs: [127.0.0.1:26379]}}", "redis.addr"},
		{"redis: {sentinel: {master_set: m}}", "redis.sentinel.addrs"},
		{"redis: {sentinel: {addrs: [127.0.0.1:26379]}}", "redis.sentinel.master_set"},
		{"redis: {sentinel: {master_set: m, addrs: [nope]}}", "redis.sentinel.addrs[0]"},
	}
	for _, tc := range cases {
		if lines := loadErrs(t, minimal+tc.yaml+"\n"); !hasLine(lines, tc.path+":") {
			t.Errorf("%s: want an error on %s, got %q", tc.yaml, tc.path, lines)
		}
	}
}

func TestRedisLeaseMarginLeavesRoomToRenew(t *testing.T) {
	clearEnv(t)
	if m := LeaseMargin(30*time.Second, 500*time.Millisecond); m != 3*time.Second {
		t.Fatalf("default margin %s, want 3s", m)
	}
	if m := LeaseMargin(3*time.Second, 300*time.Millisecond); m != 600*time.Millisecond {
		t.Fatalf("margin %s, want 600ms", m)
	}
	// The defaults pass; an interval that cannot renew in time does not.
	mustLoad(t, minimal+"redis: {heartbeat_ttl: 3s, heartbeat_interval: 500ms, op_timeout: 300ms}\n")
	lines := loadErrs(t, minimal+"redis: {heartbeat_ttl: 3s, heartbeat_interval: 2s, op_timeout: 500ms}\n")
	if !hasLine(lines, "redis.heartbeat_interval:") {
		t.Fatalf("%q", lines)
	}
}

// TestPeerAddr: redis.peer_address wins; otherwise health_listen when it
// names a host and a port; a wildcard or port 0 advertises nothing.
func TestPeerAddr(t *testing.T) {
	for _, tc := range []struct{ peer, health, want string }{
		{"", "10.0.0.5:8081", "10.0.0.5:8081"},
		{"", "0.0.0.0:8081", ""},
		{"", ":8081", ""},
		{"", "[::]:8081", ""},
		{"", "127.0.0.1:0", ""},
		{"", "", ""},
		{"proxy-1.internal:8081", "0.0.0.0:8081", "proxy-1.internal:8081"},
	} {
		c := Config{HealthListen: tc.health}
		c.Redis.PeerAddress = tc.peer
		if got := c.PeerAddr(); got != tc.want {
			t.Errorf("peer_address %q health_listen %q: %q, want %q", tc.peer, tc.health, got, tc.want)
		}
	}
}
