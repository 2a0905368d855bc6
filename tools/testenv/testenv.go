// Package testenv starts what end-to-end tests need, in-process and on
// free 127.0.0.1 ports: stand-in buckets and tdsgate instances. Everything
// it starts is stopped by t.Cleanup.
package testenv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
	"github.com/tdsgate/tdsgate/tools/standin/server"
)

// Passwords are the runbook's sa passwords, bucket n uses Passwords[n-1].
var Passwords = [3]string{"YourStr0ngP@ssword1", "YourStr0ngP@ssword2", "YourStr0ngP@ssword3"}

// Logger returns a logger for tests: quiet unless TDSGATE_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("TDSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Buckets starts n stand-ins like the runbook's SQL Servers (bucket i has
// sa / Passwords[i-1] and tenant_db). mod, if set, adjusts each config.
func Buckets(t testing.TB, n int, mod func(i int, c *server.Config)) []*server.Server {
	t.Helper()
	var out []*server.Server
	for i := 1; i <= n; i++ {
		c := server.RunbookConfig(i, "127.0.0.1:0")
		if mod != nil {
			mod(i, &c)
		}
		s, err := server.Start(c, Logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

var (
	hashesMu sync.Mutex
	hashes   = map[string]string{}
)

// hash returns a (cached) password hash with few iterations: tests need
// speed, not strength.
func hash(t testing.TB, pw string) string {
	hashesMu.Lock()
	defer hashesMu.Unlock()
	if h, ok := hashes[pw]; ok {
		return h
	}
	h, err := passhash.NewWithIterations(pw, passhash.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	hashes[pw] = h
	return h
}

// Config returns a proxy config in front of the stand-ins: listen on a
// free port, bucket-00i for each, credential routes for the runbook's
// passwords, health, metrics and the admin API off.
func Config(t testing.TB, buckets []*server.Server) *config.Config {
	t.Helper()
	cfg := config.Demo()
	cfg.InstanceID = "test-proxy"
	cfg.Listen = "127.0.0.1:0"
	cfg.Listeners = 2
	cfg.HealthListen, cfg.MetricsListen, cfg.AdminListen = "", "", ""
	cfg.LoginTimeout = 5 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.Buckets, cfg.Routes = nil, nil
	for i, s := range buckets {
		id := fmt.Sprintf("bucket-%03d", i+1)
		cfg.Buckets = append(cfg.Buckets, config.Bucket{
			ID: id, Address: s.Addr(), Encryption: config.EncryptionLogin, TrustServerCertificate: true,
			ServerName: "localhost", MaxConnections: 20, MaxQueueSize: 10, QueueTimeout: 30 * time.Second,
			DialTimeout: 2 * time.Second, LoginTimeout: 5 * time.Second,
			Breaker: config.Breaker{Failures: 3, ProbeInterval: 200 * time.Millisecond},
		})
		cfg.Routes = append(cfg.Routes, config.Route{Bucket: id, User: "sa", PasswordHash: hash(t, Passwords[i%3])})
	}
	return cfg
}

// Proxy validates cfg, starts a tdsgate instance in-process, and stops
// it at cleanup.
func Proxy(t testing.TB, cfg *config.Config) *app.App {
	t.Helper()
	return ProxyLog(t, cfg, Logger())
}

// ProxyLog is Proxy with the instance logging to log.
func ProxyLog(t testing.TB, cfg *config.Config, log *slog.Logger) *app.App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

// WaitUntil polls cond for up to 10 s.
func WaitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
