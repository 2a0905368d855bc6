package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/pkg/route"
)

// App is a running tdsgate instance.
type App struct {
	log     *slog.Logger
	mu      sync.Mutex
	cfg     *config.Config
	certs   certs       // the certificate shown to clients, reloadable (certs.go)
	lim     appLimiter  // limiter.Local, or limiter.Redis with redis.addr (redis.go)
	redis   *redisCoord // nil when standalone
	handler *frontend.Handler
	buckets map[string]*frontend.Bucket
	obs     *observability
	pools   pools // pool_mode session buckets' pools, and pressure (pool.go)
	// clientConns counts the client connections the listeners hold, under
	// maxConns (0: no cap) (door.go).
	clientConns atomic.Int64
	maxConns    atomic.Int64
	// credFailures counts failed credential-route logins per source
	// address (credential_routes.max_failures); it outlives reloads.
	credFailures *route.FailureLimiter
	ebpf         *ebpfWatch // the kernel's count of backend connections (ebpf.go); set by Start

	// sockmap is the kernel relay (relay: sockmap; sockmap.go); nil: splice.
	sockmap sockmapRelay
	// walker is the kernel header walker of pooled sessions (header_walk:
	// kernel; kwalk.go); nil: their relays peek.
	walker kernelWalker

	// reloader reads the config file again (SetReloader; console.go);
	// fleetStop and fleetWG run the fleet-command subscription.
	reloader  func() (*config.Config, error)
	fleetStop context.CancelFunc
	fleetWG   sync.WaitGroup

	lns     []net.Listener
	serveWG sync.WaitGroup
	cancel  context.CancelFunc
	// sessCtx is the sessions' serve context (Handler.Serve); sessCancel
	// ends it when the drain gives up, or after it.
	sessCtx    context.Context
	sessCancel context.CancelFunc
	serveErr   chan error
}

// New builds an instance from cfg. Nothing listens until Start.
func New(cfg *config.Config, log *slog.Logger) (*App, error) {
	if log == nil {
		log = slog.Default()
	}
	a := &App{log: log, cfg: cfg, buckets: map[string]*frontend.Bucket{}}
	if err := a.loadCertificate(cfg); err != nil {
		return nil, err
	}
	a.obs = newObservability(a, cfg)
	if err := a.obs.setAdminAuth(cfg); err != nil {
		return nil, err
	}
	// Without metrics_listen nobody reads the metrics, so the frontend and
	// the limiter do not feed them (nil: the frontend's no-op observer).
	var sessionObs frontend.Observer
	limObs := limiterObservers{a.limiterObserver(), a.pressureObserver()}
	if cfg.MetricsListen != "" {
		sessionObs = a.obs.metrics
		limObs = append(limObs, a.obs.metrics)
	}
	var err error
	if a.lim, err = a.newLimiter(cfg, limiter.WithObserver(limObs)); err != nil {
		return nil, err
	}
	rt, err := a.runtime(cfg)
	if err != nil {
		a.stopRedis(context.Background())
		return nil, err
	}
	h := frontend.NewHandler(rt, a.lim, log, sessionObs)
	h.Door = a.obs.metrics // cheap counters, kept even without metrics_listen
	a.mu.Lock()
	a.handler = h
	a.mu.Unlock()
	return a, nil
}

func (a *App) limiterObserver() limiter.Observer {
	return limiter.ObserverFuncs{
		OnEnqueued: func(bucket string, n int) {
			a.log.Info("queue: client waiting for a slot", "bucket", bucket, "queue_length", n)
		},
		OnRejected: func(bucket string, code limiter.Code) {
			a.log.Debug("queue: rejected", "bucket", bucket, "code", code.String())
		},
		OnCanceled: func(bucket string, waited time.Duration) {
			a.log.Info("queue: client left the queue", "bucket", bucket, "waited", waited.Round(time.Millisecond))
		},
	}
}

func bucketLimits(cfg *config.Config) []limiter.BucketConfig {
	out := make([]limiter.BucketConfig, 0, len(cfg.Buckets))
	for _, b := range cfg.Buckets {
		out = append(out, limiter.BucketConfig{ID: b.ID, MaxConnections: b.MaxConnections, MaxQueueSize: b.MaxQueueSize, QueueTimeout: b.QueueTimeout})
	}
	return out
}

// runtime builds the frontend's reloadable world from cfg, keeping the
// breakers of buckets whose backend did not change.
func (a *App) runtime(cfg *config.Config) (*frontend.Runtime, error) {
	cr := cfg.CredentialRoutes
	if a.credFailures == nil {
		a.credFailures = route.NewFailureLimiter(cr.MaxFailures, cr.FailureWindow)
	}
	router, err := route.NewWithOptions(cfg.Routes, cfg.DefaultBucket, route.Options{
		MaxHashIterations: cr.MaxHashIterations, NegativeCacheTTL: cr.NegativeCacheTTL, Failures: a.credFailures,
	})
	if err != nil {
		return nil, err
	}
	allowed := map[frontend.Mode]bool{}
	for _, e := range cfg.ClientEncryption {
		allowed[frontend.Mode(e)] = true
	}
	settings := &frontend.Settings{
		ServerName:          frontend.DefaultServerName,
		LoginTimeout:        cfg.LoginTimeout,
		Allowed:             allowed,
		TLS:                 &tls.Config{GetCertificate: a.certs.r.GetCertificate, MinVersion: tls.VersionTLS12},
		MaxPendingPerSource: cfg.MaxPendingPerSource,
		ClientIdleTimeout:   cfg.ClientIdleTimeout,
	}
	buckets := map[string]*frontend.Bucket{}
	for i := range cfg.Buckets {
		b := &cfg.Buckets[i]
		t, err := target(b)
		if err != nil {
			return nil, fmt.Errorf("buckets[%d] (%s): %w", i, b.ID, err)
		}
		if old := a.buckets[b.ID]; old != nil && old.Target.Same(t) {
			old.Breaker.SetLimits(b.Breaker.Failures, b.Breaker.ProbeInterval)
			buckets[b.ID] = old
			continue
		}
		fb := &frontend.Bucket{ID: b.ID, Target: t}
		fb.Breaker = &backend.Breaker{
			Bucket: b.ID, Failures: b.Breaker.Failures, ProbeInterval: b.Breaker.ProbeInterval,
			Probe: func(ctx context.Context) error { _, err := backend.Probe(ctx, t); return err },
			OnChange: func(bucket string, s backend.BreakerState, err error) {
				if s == backend.BreakerOpen {
					a.log.Error("circuit breaker open: backend unavailable, logins fail fast", "bucket", bucket, "address", t.Address, "err", err)
				} else {
					a.log.Warn("circuit breaker closed: backend answers again", "bucket", bucket, "address", t.Address)
				}
			},
		}
		buckets[b.ID] = fb
	}
	a.syncPools(cfg, buckets)
	for id, old := range a.buckets {
		if nb := buckets[id]; nb == nil || nb.Breaker != old.Breaker {
			old.Breaker.Close()
		}
	}
	a.buckets = buckets
	return &frontend.Runtime{Settings: settings, Router: router, Buckets: buckets}, nil
}

// target builds a bucket's backend target from its config.
func target(b *config.Bucket) (*backend.Target, error) {
	tc := &tls.Config{ServerName: b.ServerName, MinVersion: tls.VersionTLS12}
	var caPEM []byte
	switch {
	case b.CAFile != "":
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", b.CAFile)
		}
		tc.RootCAs = pool
		caPEM = pem
	case b.TrustServerCertificate:
		tc.InsecureSkipVerify = true
	}
	return &backend.Target{
		Bucket: b.ID, Address: b.Address, Encryption: backend.Encryption(b.Encryption),
		TLS: tc, CAPEM: caPEM, DialTimeout: b.DialTimeout, LoginTimeout: b.LoginTimeout,
	}, nil
}

// Start binds the listeners and serves in the background.
func (a *App) Start(ctx context.Context) error {
	cfg := a.cfg
	lns, err := listener.Listen(ctx, cfg.Listen, cfg.Listeners)
	if err != nil {
		return err
	}
	a.lns = lns
	if err := a.startObservability(lns); err != nil {
		return err
	}
	a.startEBPF(cfg) // before serving: connections opened earlier would not be counted
	a.startSockmap(cfg)
	a.startHeaderWalker(cfg)
	a.startPressure()
	a.startCertWatch(cfg)
	a.startFleet()
	sctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	// Sessions get their own context: the listeners stop at the drain's
	// start, sessions only when the drain gives up (or is done).
	a.sessCtx, a.sessCancel = context.WithCancel(context.Background())
	opts := []listener.Option{listener.WithLogger(a.log)}
	opts = append(opts, a.doorOptions(cfg)...)
	a.serveErr = make(chan error, 1)
	a.serveWG.Add(1)
	go func() {
		defer a.serveWG.Done()
		a.serveErr <- listener.Serve(sctx, lns, func(c net.Conn) { a.handler.Serve(a.sessCtx, c) }, opts...)
	}()
	a.log.Info("tdsgate listening", "addr", lns[0].Addr().String(), "listeners", len(lns), "instance_id", cfg.InstanceID,
		"buckets", len(cfg.Buckets), "proxy_protocol", cfg.ProxyProtocol.Enabled)
	return nil
}

// Addr is the TDS listen address (after Start).
func (a *App) Addr() string { return a.lns[0].Addr().String() }

// Certificate is the certificate presented to clients.
func (a *App) Certificate() tls.Certificate { return a.certs.r.Certificate() }

// Limiter is the instance's limiter.
func (a *App) Limiter() limiter.Limiter { return a.lim }

// Handler is the frontend handler.
func (a *App) Handler() *frontend.Handler { return a.handler }

// Config is the config in force.
func (a *App) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Reload swaps in a new config: limits, routes and buckets change for new
// logins; sessions under way keep going. Listen addresses, TLS files and
// the instance id are read only at start.
func (a *App) Reload(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	token, password, err := cfg.AdminAuth.ReadSecrets()
	if err != nil {
		return err
	}
	if err := a.reloadCertificate(cfg); err != nil {
		return err
	}
	rt, err := a.runtime(cfg)
	if err != nil {
		return err
	}
	a.obs.auth.Set(token, cfg.AdminAuth.Username, password, cfg.AdminAuth.HealthRequiresAuth)
	a.credFailures.SetLimits(cfg.CredentialRoutes.MaxFailures, cfg.CredentialRoutes.FailureWindow)
	a.obs.metrics.SetBuckets(bucketIDs(cfg))
	a.lim.Update(bucketLimits(cfg))
	a.handler.SetRuntime(rt)
	a.ebpf.sync(cfg)
	a.cfg = cfg
	a.log.Info("config reloaded", "buckets", len(cfg.Buckets), "routes", len(cfg.Routes))
	return nil
}

// Shutdown stops accepting, refuses new logins, waits for sessions up to
// the drain timeout (or ctx), then closes what is left and the components.
func (a *App) Shutdown(ctx context.Context) error {
	if d := a.Config().DrainDelay; d > 0 {
		// /health answers 503 from now on, but logins are still accepted
		// and served, so a balancer checking /health takes this instance
		// out before its listener closes.
		a.obs.draining.Store(true)
		a.log.Info("shutdown: draining: /health answers 503; still accepting for drain_delay", "drain_delay", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	a.log.Info("shutdown: draining", "active_sessions", a.handler.Active(), "drain_timeout", a.cfg.DrainTimeout)
	a.handler.Drain()
	a.obs.draining.Store(true)
	if a.cancel != nil {
		a.cancel()
		a.serveWG.Wait()
	}
	done := make(chan struct{})
	go func() { a.handler.Wait(); close(done) }()
	timer := time.NewTimer(a.cfg.DrainTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-done:
	case <-timer.C:
		err = fmt.Errorf("drain timeout: closed %d sessions", a.handler.Active())
		a.sessCancel()
		a.handler.CloseAll()
		<-done
	case <-ctx.Done():
		err = ctx.Err()
		a.sessCancel()
		a.handler.CloseAll()
		<-done
	}
	if a.sessCancel != nil {
		a.sessCancel()
	}
	a.stopObservability()
	a.stopFleet()
	a.stopCertWatch()
	a.ebpf.close()
	// Every session has ended: the kernel relay's map is empty.
	a.stopSockmap()
	a.stopHeaderWalker()
	a.stopPools() // idle pooled connections give their slots back while the limiter still runs
	a.lim.Close()
	a.stopRedis(context.Background())
	for _, b := range a.buckets {
		b.Breaker.Close()
	}
	a.log.Info("shutdown: done", "err", errString(err))
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
