package app_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// deadAddr is a 127.0.0.1 address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestReloadUnderSessions reloads the config over and over (breaker
// limits, pool settings, queue sizes) while live sessions run queries on a
// pooled bucket and logins to a dead bucket feed its breaker. Under -race
// it catches any field a reload writes while sessions read it (the
// breaker's Failures and ProbeInterval were). The live sessions never see
// an error, the breaker ends with the last limits, and every slot comes
// back.
func TestReloadUnderSessions(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	dead := deadAddr(t)
	mk := func(i int) *config.Config {
		cfg := testenv.Config(t, append(buckets, buckets[0]))
		cfg.Buckets[0].PoolMode = config.PoolModeSession
		cfg.Buckets[0].IdleTimeout, cfg.Buckets[0].MaxLifetime, cfg.Buckets[0].ResetTimeout = time.Minute, 10*time.Minute, 2*time.Second
		cfg.Buckets[0].MaxIdle = 2 + i%3
		cfg.Buckets[0].MaxQueueSize = 10 + i%2
		cfg.Buckets[1].Address = dead
		cfg.Buckets[1].Breaker.Failures = 2 + i%3
		cfg.Buckets[1].Breaker.ProbeInterval = time.Duration(20+i%4) * time.Millisecond
		return cfg
	}
	a := testenv.Proxy(t, mk(0))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var queries, refusals atomic.Int64
	errs := make(chan error, 64)
	// loop runs n workers calling one until stop, or until it fails.
	loop := func(n int, one func() error) {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := one(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	loop(3, func() error { // live sessions on the pooled bucket
		c, err := dialTDS(t, a, testenv.Passwords[0])
		if err != nil {
			return fmt.Errorf("live login: %v", err)
		}
		defer c.Close()
		for q := 0; q < 5; q++ {
			r, err := c.Exec(fmt.Sprintf("SELECT %d AS n", q), 0)
			if err != nil || len(r.Errors) > 0 || fmt.Sprint(r.Scalar()) != fmt.Sprint(q) {
				return fmt.Errorf("live query: %v %v", err, r)
			}
			queries.Add(1)
		}
		return nil
	})
	loop(2, func() error { // logins to the dead bucket, feeding its breaker
		_, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[1],
			Database: "tenant_db", Timeout: 5 * time.Second})
		if loginNumber(err) != 50002 {
			return fmt.Errorf("dead bucket: %v, want 50002", err)
		}
		refusals.Add(1)
		return nil
	})
	const reloads = 60
	for i := 1; i <= reloads; i++ {
		if err := a.Reload(mk(i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if queries.Load() == 0 || refusals.Load() == 0 {
		t.Fatalf("queries %d, refusals %d: the sessions did not run during the reloads", queries.Load(), refusals.Load())
	}
	want := mk(reloads).Buckets[1].Breaker
	if f, iv := a.Handler().Runtime().Buckets["bucket-002"].Breaker.Limits(); f != want.Failures || iv != want.ProbeInterval {
		t.Errorf("breaker limits %d %v, want %d %v", f, iv, want.Failures, want.ProbeInterval)
	}
	p := poolOf(t, a)
	testenv.WaitUntil(t, func() bool { s := p.Stats(); return s.Active+s.Login+s.Resetting == 0 })
	for _, s := range a.Limiter().Snapshot() {
		if s.Bucket == "bucket-001" && s.InUse != p.Stats().Idle || s.Bucket == "bucket-002" && s.InUse != 0 {
			t.Errorf("slots: %+v with %d idle", s, p.Stats().Idle)
		}
	}
}

// TestReloadBackendCA: the backend's CA bundle is re-read on reload. The
// ca_file keeps its path but gets another CA's certificate: new logins are
// refused (the backend's certificate no longer verifies); the right CA
// back at the same path, and they work again.
func TestReloadBackendCA(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "backend-ca.pem")
	right, err := clients.WriteCAFile(dir, buckets[0].Certificate())
	if err != nil {
		t.Fatal(err)
	}
	other, err := certutil.SelfSigned("another CA")
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := clients.WriteCAFile(dir, other)
	if err != nil {
		t.Fatal(err)
	}
	use := func(src string) *config.Config {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := testenv.Config(t, buckets)
		cfg.Buckets[0].Encryption = config.EncryptionFull
		cfg.Buckets[0].TrustServerCertificate = false
		cfg.Buckets[0].CAFile = caFile
		cfg.Buckets[0].ServerName = "127.0.0.1"
		cfg.Buckets[0].Breaker.Failures = 1000
		return cfg
	}
	a := testenv.Proxy(t, use(right))
	login := func() error {
		c, err := dialProxy(a.Addr(), testenv.Passwords[0])
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := login(); err != nil {
		t.Fatalf("with the right CA: %v", err)
	}
	if err := a.Reload(use(wrong)); err != nil {
		t.Fatal(err)
	}
	if err := login(); loginNumber(err) != 50002 {
		t.Fatalf("after a reload with another CA in ca_file: %v, want 50002 (the new CA must be used)", err)
	}
	if err := a.Reload(use(right)); err != nil {
		t.Fatal(err)
	}
	if err := login(); err != nil {
		t.Fatalf("with the right CA back: %v", err)
	}
}
