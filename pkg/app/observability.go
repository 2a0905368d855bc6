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
	ebpf       func() (kernel, held map[string]int64, ok bool) // App.SetEBPF; nil: no "ebpf" component
	extra      []admin.Check

	health *admin.Health
	auth   *admin.Auth // admin_auth: credentials of /metrics and /health's detail
	srv    *admin.Server
	// peer asks the other instances' /peer/lease (with admin_auth's
	// credentials); peerLease answers ours (nil: standalone).
	peer      *admin.PeerClient
	peerLease func() admin.PeerLease
}

func newObservability(a *App, cfg *config.Config) *observability {
	o := &observability{metrics: metrics.New(bucketIDs(cfg)), standalone: !cfg.Redis.Enabled(), auth: admin.NewAuth(),
		peer: admin.NewPeerClient()}
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
// order, then ebpf and the extras. It runs at the start of each round of
// probes, before any of them: the eBPF sample is taken here, so that the
// round's own backend probes (TCP connections the kernel counts, the
// limiter does not) cannot show as drift.
func (o *observability) checks(a *App) []admin.Check {
	o.mu.Lock()
	cs := []admin.Check{admin.RedisCheck(o.redisProbe)}
	sample := o.ebpf
	extra := slices.Clone(o.extra)
	o.mu.Unlock()
	if sample != nil {
		extra = append([]admin.Check{ebpfCheck(sample)}, extra...)
	}
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
	o.metrics.SetClientConnections(a.clientConns.Load(), a.maxConns.Load())
}

// startObservability starts the admin servers once the TDS listeners are
// bound; on failure it closes those listeners.
func (a *App) startObservability(lns []net.Listener) error {
	srv, err := admin.Start(admin.Options{
		HealthAddr:  a.cfg.HealthListen,
		MetricsAddr: a.cfg.MetricsListen,
		Pprof:       a.cfg.Pprof,
		AdminAddr:   a.cfg.AdminListen,
		Console:     console{a},
		Health:      a.obs.health,
		Metrics:     a.obs.metrics.Write,
		Auth:        a.obs.auth,
		PeerLease:   a.obs.peerLease,
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
	if m := srv.AdminAddr(); m != "" {
		a.log.Info("admin API listening", "addr", m, "paths", "/admin/buckets /admin/sessions /admin/pools /admin/instances", "auth", a.obs.auth.Enabled())
	}
	return nil
}

// setAdminAuth installs admin_auth's credentials, read from their files
// (at start and on every reload: a rotated secret takes effect then).
func (o *observability) setAdminAuth(cfg *config.Config) error {
	token, password, err := cfg.AdminAuth.ReadSecrets()
	if err != nil {
		return err
	}
	o.auth.Set(token, cfg.AdminAuth.Username, password, cfg.AdminAuth.HealthRequiresAuth)
	o.peer.SetCredentials(token, cfg.AdminAuth.Username, password)
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

// AdminAddr is the bound address of the admin API (after Start), or ""
// when admin_listen is empty.
func (a *App) AdminAddr() string { return a.obs.srv.AdminAddr() }

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

// SetEBPF wires the kernel's per-bucket count of open backend connections
// (counts: buckets it watches only) into /metrics and /health, against the
// slots this instance holds by the limiter's books (Snapshot's InUse):
//
//   - proxy_ebpf_backend_connections{bucket} = the kernel's count;
//   - proxy_ebpf_drift{bucket} = the kernel's count - the slots held;
//   - /health's "ebpf" component, whose detail is, per bucket,
//     {"kernel":…, "limiter":…, "drift":…}.
//
// Drift is sampled: the two figures are read one after the other, not
// atomically, so a login or logout in between shows for one sample. So do
// the proxy's own short-lived probes of a backend (/health's, and an open
// breaker's), which the kernel counts and the limiter does not; /health
// takes its sample before its round's probes start, so they do not show
// there. A drift that persists is a leak: positive, connections open
// without a slot; negative, slots held without a connection. While
// enabled() is false, the series are left out and the component shows as
// disabled.
func (a *App) SetEBPF(enabled func() bool, counts func() map[string]int64) {
	sample := func() (kernel, held map[string]int64, ok bool) {
		if !enabled() {
			return nil, nil, false
		}
		kernel = counts()
		held = map[string]int64{}
		for _, s := range a.Limiter().Snapshot() {
			held[s.Bucket] = int64(s.InUse)
		}
		return kernel, held, true
	}
	a.obs.metrics.SetEBPF(sample)
	a.obs.mu.Lock()
	a.obs.ebpf = sample
	a.obs.mu.Unlock()
}

// ebpfCheck is /health's "ebpf" component, from a sample taken now.
func ebpfCheck(sample func() (kernel, held map[string]int64, ok bool)) admin.Check {
	kernel, held, ok := sample()
	return admin.Check{Name: "ebpf", Probe: func(context.Context) (any, error) {
		if !ok {
			return nil, admin.ErrDisabled
		}
		detail := make(map[string]ebpfDetail, len(kernel))
		for id, k := range kernel {
			detail[id] = ebpfDetail{Kernel: k, Limiter: held[id], Drift: k - held[id]}
		}
		return detail, nil
	}}
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
