package app

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/metrics"
)

// adminShutdownTimeout bounds the wait for /health and /metrics requests
// in flight at the end of Shutdown.
const adminShutdownTimeout = 2 * time.Second

// observability is the instance's metrics and its admin HTTP servers
// (health_listen, metrics_listen). The metrics are the frontend's and the
// limiter's observer; the health report probes Redis (through a probe the
// Redis wiring sets), every bucket's backend and the optional extra
// components (eBPF).
type observability struct {
	metrics    *metrics.Metrics
	standalone bool // no Redis: the global count is this instance's
	draining   atomic.Bool

	mu         sync.Mutex
	redisProbe func(ctx context.Context) error
	extra      []admin.Check

	health *admin.Health
	srv    *admin.Server
}

func newObservability(a *App, cfg *config.Config) *observability {
	o := &observability{metrics: metrics.New(bucketIDs(cfg)), standalone: cfg.Redis.Addr == ""}
	o.health = admin.NewHealth(admin.HealthOptions{
		InstanceID: cfg.InstanceID,
		Checks:     func() []admin.Check { return o.checks(a) },
		Draining:   o.draining.Load,
	})
	o.metrics.OnScrape(func() { o.scrape(a) })
	return o
}

func bucketIDs(cfg *config.Config) []string {
	ids := make([]string, 0, len(cfg.Buckets))
	for _, b := range cfg.Buckets {
		ids = append(ids, b.ID)
	}
	return ids
}

// checks lists /health's components: redis, each bucket's SQL Server in id
// order, then the extras.
func (o *observability) checks(a *App) []admin.Check {
	o.mu.Lock()
	cs := []admin.Check{admin.RedisCheck(o.redisProbe)}
	extra := slices.Clone(o.extra)
	o.mu.Unlock()
	bs := a.handler.Runtime().Buckets
	ids := make([]string, 0, len(bs))
	for id := range bs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		cs = append(cs, admin.BucketCheck(id, bs[id].Target))
	}
	return append(cs, extra...)
}

// scrape sets, just before each /metrics scrape, the values that are read
// rather than tracked: queue lengths from the limiter's snapshot, breaker
// states, and — standalone — the "global" count and cap, which are this
// instance's own.
func (o *observability) scrape(a *App) {
	for _, s := range a.Limiter().Snapshot() {
		o.metrics.SetQueueLength(s.Bucket, s.Queued)
		if o.standalone {
			o.metrics.SetGlobal(s.Bucket, s.InUse, s.Max)
		}
	}
	for id, b := range a.handler.Runtime().Buckets {
		o.metrics.SetBreakerOpen(id, b.Breaker.State() == backend.BreakerOpen)
	}
}

// startObservability starts the admin servers once the TDS listeners are
// bound; on failure it closes those listeners.
func (a *App) startObservability(lns []net.Listener) error {
	srv, err := admin.Start(admin.Options{
		HealthAddr:  a.cfg.HealthListen,
		MetricsAddr: a.cfg.MetricsListen,
		Health:      a.obs.health,
		Metrics:     a.obs.metrics.Write,
		Log:         a.log,
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return fmt.Errorf("admin: %w", err)
	}
	a.obs.srv = srv
	if h := srv.HealthAddr(); h != "" {
		a.log.Info("health endpoints listening", "addr", h, "paths", "/health/live /health")
	}
	if m := srv.MetricsAddr(); m != "" {
		a.log.Info("metrics endpoint listening", "addr", m, "path", "/metrics")
	}
	return nil
}

// stopObservability stops the admin servers (after the drain: /health says
// 503 for as long as it lasts, so balancers stop sending new clients).
func (a *App) stopObservability() {
	ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
	defer cancel()
	if err := a.obs.srv.Shutdown(ctx); err != nil {
		a.log.Warn("admin: shutdown", "err", err)
	}
}

// HealthAddr is the bound address of /health (after Start), or "" when
// health_listen is empty.
func (a *App) HealthAddr() string { return a.obs.srv.HealthAddr() }

// MetricsAddr is the bound address of /metrics (after Start), or "" when
// metrics_listen is empty.
func (a *App) MetricsAddr() string { return a.obs.srv.MetricsAddr() }

// Metrics is the instance's metrics. The Redis limiter and registry
// report through it: RedisOp, Heartbeat, SetFallback, SetGlobal.
func (a *App) Metrics() *metrics.Metrics { return a.obs.metrics }

// SetRedisHealth sets the probe behind /health's "redis" component (a
// PING under ctx's deadline; it should also fail while the limiter is in
// fallback). Without one, "redis" shows as disabled.
func (a *App) SetRedisHealth(probe func(ctx context.Context) error) {
	a.obs.mu.Lock()
	a.obs.redisProbe = probe
	a.obs.mu.Unlock()
}

// SetEBPF wires the kernel's per-bucket backend connection counts into
// /metrics (proxy_ebpf_backend_connections, proxy_ebpf_drift) and into
// /health as an "ebpf" component whose detail is, per bucket,
// {"kernel":…, "limiter":…, "drift":…}. While enabled() is false, the
// series are left out and the component shows as disabled.
func (a *App) SetEBPF(enabled func() bool, counts func() map[string]int64) {
	m := a.obs.metrics
	m.SetEBPF(func() (map[string]int64, bool) {
		if !enabled() {
			return nil, false
		}
		return counts(), true
	})
	check := admin.Check{Name: "ebpf", Probe: func(context.Context) (any, error) {
		if !enabled() {
			return nil, admin.ErrDisabled
		}
		k := counts()
		detail := map[string]ebpfDetail{}
		for _, id := range m.Buckets() {
			l := m.Active(id)
			detail[id] = ebpfDetail{Kernel: k[id], Limiter: l, Drift: k[id] - l}
		}
		return detail, nil
	}}
	a.obs.mu.Lock()
	a.obs.extra = slices.DeleteFunc(a.obs.extra, func(c admin.Check) bool { return c.Name == "ebpf" })
	a.obs.extra = append(a.obs.extra, check)
	a.obs.mu.Unlock()
}

type ebpfDetail struct {
	Kernel  int64 `json:"kernel"`
	Limiter int64 `json:"limiter"`
	Drift   int64 `json:"drift"`
}

// limiterObservers fans the limiter's events out to several observers
// (the log and the metrics).
type limiterObservers []limiter.Observer

func (obs limiterObservers) Acquired(b string, w time.Duration, q bool) {
	for _, o := range obs {
		o.Acquired(b, w, q)
	}
}

func (obs limiterObservers) Released(b string) {
	for _, o := range obs {
		o.Released(b)
	}
}

func (obs limiterObservers) Enqueued(b string, n int) {
	for _, o := range obs {
		o.Enqueued(b, n)
	}
}

func (obs limiterObservers) Rejected(b string, c limiter.Code) {
	for _, o := range obs {
		o.Rejected(b, c)
	}
}

func (obs limiterObservers) Canceled(b string, w time.Duration) {
	for _, o := range obs {
		o.Canceled(b, w)
	}
}
