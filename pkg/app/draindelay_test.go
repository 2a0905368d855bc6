package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestDrainDelay: with drain_delay, Shutdown first answers /health 503
// while it still accepts and serves new logins (a balancer checking
// /health takes the instance out meanwhile); only after the delay do the
// listeners close.
func TestDrainDelay(t *testing.T) {
	cfg := observedConfig(t, 1)
	cfg.DrainTimeout = 5 * time.Second
	cfg.DrainDelay = 1500 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown(ctx) }()
	testenv.WaitUntil(t, func() bool { code, _ := getHealth(t, a); return code == http.StatusServiceUnavailable })
	if code, r := getHealth(t, a); code != 503 || r.Status != admin.StatusUnhealthy || !r.Draining {
		t.Fatalf("during drain_delay: /health %d %+v", code, r)
	}
	// Still accepting and admitting during the delay.
	c, err := dialBucket1(ctx, a)
	if err != nil {
		t.Fatalf("a login during drain_delay (%s after SIGTERM) failed: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if r, err := c.Exec("SELECT 7", 0); err != nil || r.Scalar() != int64(7) {
		t.Fatalf("query during drain_delay: %v %v", r, err)
	}
	c.Close()
	// After the delay the listener is closed.
	time.Sleep(time.Until(start.Add(cfg.DrainDelay + 300*time.Millisecond)))
	if _, err := dialBucket1(ctx, a); err == nil {
		t.Error("a login succeeded after drain_delay")
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d < cfg.DrainDelay {
		t.Errorf("Shutdown returned after %v, before drain_delay %v", d, cfg.DrainDelay)
	}
}
