package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// Options configure the admin servers.
type Options struct {
	// HealthAddr serves /health/live and /health; "" disables it.
	HealthAddr string
	// MetricsAddr serves /metrics (and pprof if Pprof); "" disables it.
	MetricsAddr string
	// Health answers the health endpoints (required with HealthAddr).
	Health *Health
	// Metrics writes the Prometheus text exposition (required with
	// MetricsAddr).
	Metrics func(w io.Writer)
	// Pprof serves net/http/pprof under /debug/pprof/ on the metrics
	// address. Off by default: the config has no field for it yet.
	Pprof bool
	// Auth, if set and enabled, guards /metrics (and pprof), and /health's
	// detail (see Health.HandlerWithAuth). /health/live stays open.
	Auth *Auth
	// PeerLease, if set, serves GET /peer/lease (PeerHandler) on the
	// health address, behind Auth.Require: the other instances' full-outage
	// check (package limiter).
	PeerLease func() PeerLease
	// Log receives the servers' errors (default slog.Default()).
	Log *slog.Logger
}

// Server is the running admin HTTP servers.
type Server struct {
	log     *slog.Logger
	servers []*http.Server
	lns     []net.Listener
	health  net.Listener
	metrics net.Listener
	wg      sync.WaitGroup
}

// Start binds the configured addresses and serves in the background. It
// binds both before serving either, so an error leaves nothing running.
func Start(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{log: o.Log}
	var handlers []http.Handler
	if o.HealthAddr != "" {
		if o.Health == nil {
			return nil, errors.New("admin: health address set without a Health")
		}
		ln, err := net.Listen("tcp", o.HealthAddr)
		if err != nil {
			return nil, err
		}
		s.health = ln
		s.lns = append(s.lns, ln)
		h := o.Health.HandlerWithAuth(o.Auth)
		if o.PeerLease != nil {
			mux := http.NewServeMux()
			mux.Handle(PeerLeasePath, o.Auth.Require(PeerHandler(o.PeerLease)))
			mux.Handle("/", h)
			h = mux
		}
		handlers = append(handlers, h)
	}
	if o.MetricsAddr != "" {
		if o.Metrics == nil {
			s.closeListeners()
			return nil, errors.New("admin: metrics address set without a Metrics writer")
		}
		ln, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		s.metrics = ln
		s.lns = append(s.lns, ln)
		handlers = append(handlers, o.Auth.Require(MetricsHandler(o.Metrics, o.Pprof)))
	}
	for i, ln := range s.lns {
		srv := &http.Server{
			Handler:           handlers[i],
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelWarn),
		}
		s.servers = append(s.servers, srv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin: server stopped", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	return s, nil
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

// HealthAddr is the bound health address, or "" when disabled.
func (s *Server) HealthAddr() string {
	if s == nil || s.health == nil {
		return ""
	}
	return s.health.Addr().String()
}

// MetricsAddr is the bound metrics address, or "" when disabled.
func (s *Server) MetricsAddr() string {
	if s == nil || s.metrics == nil {
		return ""
	}
	return s.metrics.Addr().String()
}

// Shutdown stops the servers, letting requests in flight finish until
// ctx is done, then closing what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// MetricsHandler serves GET /metrics from write, and pprof under
// /debug/pprof/ if asked.
func MetricsHandler(write func(io.Writer), withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		write(&buf)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
