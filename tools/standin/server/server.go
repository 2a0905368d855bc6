package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
)

// Stats are the stand-in's counters of logged-in sessions: what the
// backend saw, for tests that check a proxy never exceeded a cap.
type Stats struct {
	Current  int64 `json:"current"`
	Peak     int64 `json:"peak"`
	Total    int64 `json:"total"`
	Refused  int64 `json:"refused"`  // logins refused by max_connections (17809)
	Failed   int64 `json:"failed"`   // logins refused for bad credentials or database
	Accepted int64 `json:"accepted"` // TCP connections accepted
	Resets   int64 `json:"resets"`   // RESETCONNECTION requests served
	Attns    int64 `json:"attns"`    // ATTENTION requests served
}

// Server is a running stand-in.
type Server struct {
	cfg    Config
	eng    *engine.Engine
	tlsCfg *tls.Config
	ln     net.Listener
	http   *http.Server
	httpLn net.Listener
	log    *slog.Logger

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup

	loginsMu sync.RWMutex // guards cfg.Logins (SetPassword)

	current, peak, total, refused, failed, accepted, resets, attns atomic.Int64
	spid                                                           atomic.Uint32
	txid                                                           atomic.Uint64
}

// Start opens the databases, listens and serves in the background.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log.With("standin", cfg.Name), conns: map[net.Conn]struct{}{}}
	s.spid.Store(50)
	if cfg.TLS != nil {
		s.tlsCfg = cfg.TLS
	} else {
		cert, _, err := certutil.Load(cfg.CertFile, cfg.KeyFile, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("standin: certificate: %w", err)
		}
		s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	eng, err := engine.Open(engine.Config{Dir: cfg.DataDir, Databases: cfg.Databases})
	if err != nil {
		return nil, fmt.Errorf("standin: databases: %w", err)
	}
	s.eng = eng
	if !eng.HasDatabase(cfg.DefaultDatabase) {
		eng.Close()
		return nil, fmt.Errorf("standin: default_database %q is not configured", cfg.DefaultDatabase)
	}
	s.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		eng.Close()
		return nil, fmt.Errorf("standin: listen %s: %w", cfg.Listen, err)
	}
	if cfg.StatsListen != "" {
		hl, err := net.Listen("tcp", cfg.StatsListen)
		if err != nil {
			s.ln.Close()
			eng.Close()
			return nil, fmt.Errorf("standin: stats listen %s: %w", cfg.StatsListen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(s.Stats())
		})
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		s.httpLn = hl
		go s.http.Serve(hl)
	}
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("standin listening", "addr", s.ln.Addr().String(), "encryption", cfg.Encryption, "max_connections", cfg.MaxConnections)
	return s, nil
}

// Addr is the TDS listen address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the TDS listen port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// StatsAddr is the address of GET /stats ("" when stats_listen is unset).
func (s *Server) StatsAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Name is the server name (@@SERVERNAME).
func (s *Server) Name() string { return s.cfg.Name }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Current: s.current.Load(), Peak: s.peak.Load(), Total: s.total.Load(), Refused: s.refused.Load(),
		Failed: s.failed.Load(), Accepted: s.accepted.Load(), Resets: s.resets.Load(), Attns: s.attns.Load()}
}

// SetPassword changes (or adds) a login's password, as ALTER LOGIN …
// WITH PASSWORD does: later logins need the new one; sessions under way
// keep going.
func (s *Server) SetPassword(user, password string) {
	s.loginsMu.Lock()
	defer s.loginsMu.Unlock()
	logins := make(map[string]string, len(s.cfg.Logins)+1)
	for u, p := range s.cfg.Logins {
		logins[u] = p
	}
	logins[user] = password
	s.cfg.Logins = logins
}

// password is a login's password, and whether the login exists.
func (s *Server) password(user string) (string, bool) {
	s.loginsMu.RLock()
	defer s.loginsMu.RUnlock()
	pw, ok := s.cfg.Logins[user]
	return pw, ok
}

// ResetPeak sets the peak to the current count.
func (s *Server) ResetPeak() { s.peak.Store(s.current.Load()) }

// Certificate is the server's TLS certificate.
func (s *Server) Certificate() tls.Certificate { return s.tlsCfg.Certificates[0] }

// Close stops listening, closes every connection and the databases.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	if s.http != nil {
		s.http.Shutdown(context.Background())
	}
	s.wg.Wait()
	s.eng.Close()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("standin accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.accepted.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			(&conn{srv: s, raw: c}).serve()
		}()
	}
}

// admit counts a new session, refusing it past max_connections.
func (s *Server) admit() bool {
	for {
		cur := s.current.Load()
		if s.cfg.MaxConnections > 0 && cur >= int64(s.cfg.MaxConnections) {
			s.refused.Add(1)
			return false
		}
		if s.current.CompareAndSwap(cur, cur+1) {
			s.total.Add(1)
			for {
				p := s.peak.Load()
				if cur+1 <= p || s.peak.CompareAndSwap(p, cur+1) {
					break
				}
			}
			return true
		}
	}
}

func (s *Server) leave() { s.current.Add(-1) }
