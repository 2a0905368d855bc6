package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/clock"
)

// Defaults of HealthOptions.
const (
	// DefaultCacheTTL is how long a round of probes answers /health.
	DefaultCacheTTL = 2 * time.Second
	// DefaultProbeTimeout bounds each component's probe.
	DefaultProbeTimeout = 2 * time.Second
)

// Status is the health of a component or of the instance.
type Status string

// Statuses.
const (
	StatusHealthy   Status = "healthy"
	StatusDegraded  Status = "degraded"
	StatusUnhealthy Status = "unhealthy"
	// StatusDisabled: the component is not in use (Redis on a standalone
	// instance). It does not affect the overall status.
	StatusDisabled Status = "disabled"
)

// Component is one entry of /health's components.
type Component struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Latency is how long the probe took, e.g. "1.2ms".
	Latency string `json:"latency,omitempty"`
	// Error says why the component is not healthy.
	Error string `json:"error,omitempty"`
	// Detail is whatever the probe returned (the eBPF drift per bucket, …).
	Detail any `json:"detail,omitempty"`
}

// Report is the body of GET /health.
type Report struct {
	Status     Status      `json:"status"`
	Timestamp  string      `json:"timestamp"`
	InstanceID string      `json:"instance_id"`
	Draining   bool        `json:"draining,omitempty"`
	Components []Component `json:"components"`
}

// Check is one component of /health.
type Check struct {
	// Name is the component's name: "redis", "sqlserver-<bucket>", "ebpf".
	Name string
	// Backend marks a bucket's SQL Server: if every backend is unhealthy,
	// so is the instance.
	Backend bool
	// Probe checks the component within ctx's deadline. A nil error is
	// healthy; an error wrapped by Degraded is degraded; any other error
	// is unhealthy; ErrDisabled shows it as disabled. detail, if not nil, is shown as the component's
	// "detail". A nil Probe shows the component as disabled.
	Probe func(ctx context.Context) (detail any, err error)
}

type degradedError struct{ err error }

func (e *degradedError) Error() string { return e.err.Error() }
func (e *degradedError) Unwrap() error { return e.err }

// ErrDisabled, returned by a probe, shows its component as disabled (not
// in use on this instance) rather than unhealthy.
var ErrDisabled = errors.New("disabled")

// Degraded marks a probe's error as a degradation rather than a failure.
func Degraded(err error) error {
	if err == nil {
		return nil
	}
	return &degradedError{err}
}

// BucketCheck probes a bucket's SQL Server with a real PRELOGIN exchange
// (backend.Probe; TLS first for a strict backend), not a bare TCP connect.
func BucketCheck(bucket string, t *backend.Target) Check {
	return Check{Name: "sqlserver-" + bucket, Backend: true, Probe: func(ctx context.Context) (any, error) {
		_, err := backend.Probe(ctx, t)
		return nil, err
	}}
}

// RedisCheck probes Redis with probe (a PING, say). A nil probe — a
// standalone instance — shows Redis as disabled.
func RedisCheck(probe func(ctx context.Context) error) Check {
	c := Check{Name: "redis"}
	if probe != nil {
		c.Probe = func(ctx context.Context) (any, error) { return nil, probe(ctx) }
	}
	return c
}

// HealthOptions configure a Health.
type HealthOptions struct {
	// InstanceID is shown as instance_id.
	InstanceID string
	// Checks returns the components to probe, in the order to show them.
	// It is called for every round of probes, so it may follow reloads.
	Checks func() []Check
	// Draining reports whether the instance is draining (nil: never).
	Draining func() bool
	// CacheTTL is how long a round of probes is reused. Default
	// DefaultCacheTTL; negative disables the cache.
	CacheTTL time.Duration
	// ProbeTimeout bounds each probe. Default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Clock times the cache (tests advance a clock.Fake). Default
	// clock.Real.
	Clock clock.Clock
}

// Health answers /health and /health/live. Probes run at most once per
// CacheTTL, in parallel, each under ProbeTimeout, and concurrent requests
// share one round (single flight): health checks never hammer a backend.
// The draining flag is read live, never cached.
type Health struct {
	o HealthOptions

	mu       sync.Mutex
	cached   *round
	inflight chan struct{}
}

type round struct {
	at      time.Time
	comps   []Component
	backend []bool // comps[i] is a bucket's SQL Server
}

// NewHealth returns a Health.
func NewHealth(o HealthOptions) *Health {
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.Checks == nil {
		o.Checks = func() []Check { return nil }
	}
	if o.Draining == nil {
		o.Draining = func() bool { return false }
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return &Health{o: o}
}

// Report probes (or reuses a fresh round) and returns the instance's health
// and the HTTP status code for it.
func (h *Health) Report(ctx context.Context) (Report, int, error) {
	r, err := h.round(ctx)
	if err != nil {
		return Report{}, 0, err
	}
	draining := h.o.Draining()
	rep := Report{
		Status:     overall(r.comps, r.backend, draining),
		Timestamp:  r.at.UTC().Format(time.RFC3339),
		InstanceID: h.o.InstanceID,
		Draining:   draining,
		Components: r.comps,
	}
	code := http.StatusOK
	if draining {
		code = http.StatusServiceUnavailable
	}
	return rep, code, nil
}

// overall is the instance's status from its components:
//
//   - draining: unhealthy (and HTTP 503);
//   - every backend (bucket) unhealthy: unhealthy (HTTP 200, see doc.go);
//   - any component degraded or unhealthy: degraded;
//   - otherwise healthy. Disabled components do not count.
func overall(comps []Component, backend []bool, draining bool) Status {
	if draining {
		return StatusUnhealthy
	}
	st := StatusHealthy
	nb, up := 0, 0
	for i, c := range comps {
		if backend[i] {
			nb++
			if c.Status != StatusUnhealthy {
				up++
			}
		}
		if c.Status == StatusDegraded || c.Status == StatusUnhealthy {
			st = StatusDegraded
		}
	}
	if nb > 0 && up == 0 {
		return StatusUnhealthy
	}
	return st
}

func (h *Health) round(ctx context.Context) (*round, error) {
	h.mu.Lock()
	if c := h.cached; c != nil && h.o.CacheTTL > 0 && h.o.Clock.Now().Sub(c.at) < h.o.CacheTTL {
		h.mu.Unlock()
		return c, nil
	}
	ch := h.inflight
	if ch == nil {
		ch = make(chan struct{})
		h.inflight = ch
		// The round runs detached from the request: a client that hangs up
		// does not cut short the probes others wait for.
		go h.probe(ch)
	}
	h.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cached, nil
}

func (h *Health) probe(done chan struct{}) {
	checks := h.o.Checks()
	comps := make([]Component, len(checks))
	backend := make([]bool, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		comps[i] = Component{Name: c.Name, Status: StatusDisabled}
		backend[i] = c.Backend
		if c.Probe == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			comps[i] = h.probeOne(c)
		}()
	}
	wg.Wait()
	h.mu.Lock()
	h.cached = &round{at: h.o.Clock.Now(), comps: comps, backend: backend}
	h.inflight = nil
	h.mu.Unlock()
	close(done)
}

func (h *Health) probeOne(c Check) (comp Component) {
	comp = Component{Name: c.Name}
	ctx, cancel := context.WithTimeout(context.Background(), h.o.ProbeTimeout)
	defer cancel()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			comp.Status, comp.Error = StatusUnhealthy, fmt.Sprintf("probe panicked: %v", p)
		}
	}()
	detail, err := c.Probe(ctx)
	comp.Latency = Latency(time.Since(start))
	comp.Detail = detail
	var de *degradedError
	switch {
	case err == nil:
		comp.Status = StatusHealthy
	case errors.Is(err, ErrDisabled):
		comp = Component{Name: c.Name, Status: StatusDisabled, Detail: detail}
	case errors.As(err, &de):
		comp.Status, comp.Error = StatusDegraded, err.Error()
	default:
		comp.Status, comp.Error = StatusUnhealthy, err.Error()
	}
	return comp
}

// Latency formats a probe's duration in milliseconds, as the runbook shows
// it: "1.2ms", "0.35ms" below one millisecond.
func Latency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 1 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.1fms", ms)
}

// Live is the body of GET /health/live.
type Live struct {
	Status string `json:"status"`
	Time   string `json:"time"`
}

func (h *Health) serveLive(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Live{Status: "alive", Time: time.Now().UTC().Format(time.RFC3339)})
}

func (h *Health) serveHealth(a *Auth) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := a.check(r, true)
		if v == deny {
			a.challenge(w)
			return
		}
		rep, code, err := h.Report(r.Context())
		if err != nil {
			return // the client went away
		}
		if v == public {
			rep = rep.Public()
		}
		writeJSON(w, code, rep)
	}
}

// Public is the report as anyone may see it: each component's name,
// status and latency, without its error or detail (backend addresses, raw
// probe errors, the eBPF counts), which only authenticated callers see.
func (r Report) Public() Report {
	comps := make([]Component, len(r.Components))
	for i, c := range r.Components {
		comps[i] = Component{Name: c.Name, Status: c.Status, Latency: c.Latency}
	}
	r.Components = comps
	return r
}

// Handler serves GET /health/live and GET /health, without
// authentication (HandlerWithAuth(nil)).
func (h *Health) Handler() http.Handler { return h.HandlerWithAuth(nil) }

// HandlerWithAuth serves GET /health/live to anyone, and GET /health as a
// (Auth) allows: in full to authenticated callers (or, when a is nil or
// off, to loopback callers), its public view (Report.Public) to the
// others, or 401 when a requires credentials for /health too.
func (h *Health) HandlerWithAuth(a *Auth) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", h.serveLive)
	mux.HandleFunc("GET /health", h.serveHealth(a))
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
