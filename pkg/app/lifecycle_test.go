package app_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func dialProxy(addr, password string) (*tdsclient.Conn, error) {
	return tdsclient.Dial(context.Background(), tdsclient.Options{Addr: addr, User: "sa", Password: password, Database: "tenant_db", Timeout: 10 * time.Second})
}

func loginNumber(err error) int32 {
	var le *tdsclient.LoginError
	if errors.As(err, &le) {
		return le.Number
	}
	return 0
}

// An unreachable backend gets the client a clear error (50002) and
// releases the slot; after consecutive failures the bucket's breaker
// opens and logins fail fast; a probe closes it once the backend answers,
// and other buckets are never affected.
func TestBackendDownAndBreaker(t *testing.T) {
	buckets := testenv.Buckets(t, 2, nil)
	// Bucket 1 points at a port where nothing listens yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	cfg := testenv.Config(t, buckets)
	cfg.Buckets[0].Address = deadAddr
	cfg.Buckets[0].Breaker.Failures = 3
	cfg.Buckets[0].Breaker.ProbeInterval = 100 * time.Millisecond
	a := testenv.Proxy(t, cfg)

	for i := 0; i < 3; i++ {
		_, err := dialProxy(a.Addr(), testenv.Passwords[0])
		if n := loginNumber(err); n != 50002 {
			t.Fatalf("attempt %d: %v, want 50002", i, err)
		}
		checkUnavailableBody(t, err, deadAddr)
	}
	// The breaker is open: a login fails fast, with the same message.
	start := time.Now()
	_, err = dialProxy(a.Addr(), testenv.Passwords[0])
	if n := loginNumber(err); n != 50002 {
		t.Fatalf("with the breaker open: %v", err)
	}
	checkUnavailableBody(t, err, deadAddr)
	if d := time.Since(start); d > time.Second {
		t.Errorf("fail-fast took %v", d)
	}
	if st := a.Handler().Runtime().Buckets["bucket-001"].Breaker.State(); st != backend.BreakerOpen {
		t.Errorf("breaker %v", st)
	}
	// Other buckets are fine.
	c, err := dialProxy(a.Addr(), testenv.Passwords[1])
	if err != nil {
		t.Fatalf("bucket-002 while bucket-001 is down: %v", err)
	}
	c.Close()
	// No slot leaked.
	testenv.WaitUntil(t, func() bool { return a.Limiter().Snapshot()[0].InUse == 0 })
	// The backend comes back on that address: the probe closes the breaker.
	cfgB := server.RunbookConfig(1, deadAddr)
	s, err := server.Start(cfgB, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testenv.WaitUntil(t, func() bool {
		return a.Handler().Runtime().Buckets["bucket-001"].Breaker.State() == backend.BreakerClosed
	})
	c, err = dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatalf("after the backend returned: %v", err)
	}
	r, err := c.Exec("SELECT @@SERVERNAME", 0)
	if err != nil || r.Scalar() != "sqlserver-bucket-1" {
		t.Errorf("%v %v", r, err)
	}
	c.Close()
}

// SIGHUP-style reload changes limits and routes for new logins without
// dropping sessions under way.
func TestReloadKeepsSessions(t *testing.T) {
	// Both stand-ins accept the bucket-1 password, so a route change shows
	// in @@SERVERNAME.
	buckets := testenv.Buckets(t, 2, func(_ int, c *server.Config) { c.Logins["sa"] = testenv.Passwords[0] })
	cfg := testenv.Config(t, buckets)
	a := testenv.Proxy(t, cfg)
	held, err := dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	next := testenv.Config(t, buckets)
	next.Listen = cfg.Listen
	next.Buckets[0].MaxConnections = 1
	next.Buckets[0].MaxQueueSize = 0
	// The application "limit-test" goes to bucket-001; every other login
	// with the bucket-1 password now goes to bucket-002.
	next.Routes = []config.Route{
		{Bucket: "bucket-001", App: "limit-test"},
		{Bucket: "bucket-002", User: "sa", PasswordHash: cfg.Routes[0].PasswordHash},
	}
	if err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	// The session opened before the reload still works.
	if r, err := held.Exec("SELECT 5", 0); err != nil || r.Scalar() != int64(5) {
		t.Fatalf("held session after reload: %v %v", r, err)
	}
	// The new route.
	c, err := dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Exec("SELECT @@SERVERNAME", 0); r.Scalar() != "sqlserver-bucket-2" {
		t.Errorf("the new route sent the login to %v", r.Scalar())
	}
	c.Close()
	// The new limit: bucket-001 has max 1, held by the old session, and no queue.
	_, err = tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "limit-test"})
	if n := loginNumber(err); n != 50005 {
		t.Fatalf("after reload: %v, want 50005 from the new limit", err)
	}
}

// Shutdown stops accepting, lets a session finish within the drain
// timeout, and closes sessions still open after it.
func TestDrain(t *testing.T) { runDrain(t, nil) }

// runDrain is TestDrain with mod applied to the config; it returns the
// proxy, shut down.
func runDrain(t *testing.T, mod func(*config.Config)) *app.App {
	t.Helper()
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.DrainTimeout = 700 * time.Millisecond
	if mod != nil {
		mod(cfg)
	}
	a := testenv.Proxy(t, cfg)
	finishing, err := dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	lingering, err := dialProxy(a.Addr(), testenv.Passwords[0])
	if err != nil {
		t.Fatal(err)
	}
	// One session is mid-query when the drain starts and finishes in time.
	if err := finishing.Send("WAITFOR DELAY '00:00:00.300'; SELECT 9", 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Shutdown(context.Background()) }()
	r, err := finishing.Read()
	if err != nil || len(r.Rows) != 1 {
		t.Fatalf("the draining session's answer: %v %v", r, err)
	}
	finishing.Close()
	// New connections are refused once the listeners are closed.
	time.Sleep(50 * time.Millisecond)
	if _, err := dialProxy(a.Addr(), testenv.Passwords[0]); err == nil {
		t.Error("a new login succeeded during the drain")
	}
	// The idle session is closed at the drain timeout.
	err = <-done
	if d := time.Since(start); d < 600*time.Millisecond || d > 5*time.Second {
		t.Errorf("drain took %v", d)
	}
	if err == nil || !strings.Contains(err.Error(), "drain timeout") {
		t.Errorf("shutdown: %v", err)
	}
	lingering.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := lingering.Exec("SELECT 1", 0); err == nil {
		t.Error("the lingering session survived the drain")
	}
	testenv.WaitUntil(t, func() bool { return buckets[0].Stats().Current == 0 })
	return a
}

// checkUnavailableBody: a 50002 tells a client that has not logged in
// only that its bucket is unavailable: not the backend's address, port,
// nor the cause (refused, circuit open), which go to the log.
func checkUnavailableBody(t *testing.T, err error, addr string) {
	t.Helper()
	var le *tdsclient.LoginError
	if !errors.As(err, &le) {
		t.Fatalf("not a login error: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	if le.Message != "bucket bucket-001 is unavailable; try again later" {
		t.Errorf("50002 message %q", le.Message)
	}
	for _, leak := range []string{addr, "127.0.0.1", port, "refused", "dial", "circuit"} {
		if strings.Contains(le.Message, leak) {
			t.Errorf("50002 message %q reveals %q", le.Message, leak)
		}
	}
}
