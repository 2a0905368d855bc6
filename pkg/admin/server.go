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
	// AdminAddr serves the admin API (/admin/…, console.go) from Console;
	// "" disables it.
	AdminAddr string
	// Console answers the admin API (required with AdminAddr).
	Console Console
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
	admin   net.Listener
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
	// bind listens on addr for h; need is the missing part's error.
	bind := func(addr string, missing bool, need string, h func() http.Handler) (net.Listener, error) {
		if missing {
			s.closeListeners()
			return nil, errors.New("admin: " + need)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		s.lns = append(s.lns, ln)
		handlers = append(handlers, h())
		return ln, nil
	}
	var err error
	if o.HealthAddr != "" {
		if s.health, err = bind(o.HealthAddr, o.Health == nil, "health address set without a Health",
			func() http.Handler {
				h := o.Health.HandlerWithAuth(o.Auth)
				if o.PeerLease != nil {
					mux := http.NewServeMux()
					mux.Handle(PeerLeasePath, o.Auth.Require(PeerHandler(o.PeerLease)))
					mux.Handle("/", h)
					h = mux
				}
				return h
			}); err != nil {
			return nil, err
		}
	}
	if o.MetricsAddr != "" {
		if s.metrics, err = bind(o.MetricsAddr, o.Metrics == nil, "metrics address set without a Metrics writer",
			func() http.Handler { return o.Auth.Require(MetricsHandler(o.Metrics, o.Pprof)) }); err != nil {
			return nil, err
		}
	}
	if o.AdminAddr != "" {
		if s.admin, err = bind(o.AdminAddr, o.Console == nil, "admin address set without a Console",
			func() http.Handler { return ConsoleHandler(o.Console, o.Auth, o.Log) }); err != nil {
			return nil, err
		}
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

// AdminAddr is the bound admin API address, or "" when disabled.
func (s *Server) AdminAddr() string {
	if s == nil || s.admin == nil {
		return ""
	}
	return s.admin.Addr().String()
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
