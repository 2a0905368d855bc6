package app

import (
	"syscall"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/pkg/metrics"
)

var _ frontend.DoorObserver = (*metrics.Metrics)(nil)

// fdReserve is what MaxClientConnections derived from RLIMIT_NOFILE keeps
// back for listeners, Redis, admin, logs and the pool's own work.
const fdReserve = 256

// maxClientConns resolves max_client_connections: n > 0 as is; 0 from
// RLIMIT_NOFILE, since every session needs a client and a backend
// descriptor; -1 no cap (0 returned).
func maxClientConns(n int) int {
	switch {
	case n > 0:
		return n
	case n < 0:
		return 0
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<31 { // unlimited included
		return 0
	}
	return max(int(rl.Cur)-fdReserve, 2) / 2
}

// doorOptions are the listener's admission options from cfg: the
// connection cap, the PROXY protocol and its trusted peers, and the
// refusal log and counter.
func (a *App) doorOptions(cfg *config.Config) []listener.Option {
	opts := []listener.Option{
		listener.WithConnCount(&a.clientConns),
		listener.WithRefusals(listener.NewRefusalLog(a.log, 0), a.obs.metrics.ClientRefused),
	}
	maxConns := maxClientConns(cfg.MaxClientConnections)
	a.maxConns.Store(int64(maxConns))
	if maxConns > 0 {
		opts = append(opts, listener.WithMaxConns(maxConns))
	}
	if pp := cfg.ProxyProtocol; pp.Enabled {
		trusted, err := pp.TrustedPrefixes() // validated at load: err is nil here
		if err != nil {
			a.log.Error("proxy_protocol.trusted", "err", err)
		}
		if len(trusted) == 0 {
			a.log.Warn("proxy_protocol is enabled with an empty trusted list: every client connection will be refused; list the load balancers' addresses in proxy_protocol.trusted")
		}
		opts = append(opts, listener.WithProxyProtocol(cfg.LoginTimeout), listener.WithTrustedProxies(trusted))
	}
	a.log.Info("client admission", "max_client_connections", maxConns, "max_pending_per_source", cfg.MaxPendingPerSource,
		"client_idle_timeout", cfg.ClientIdleTimeout, "proxy_protocol", cfg.ProxyProtocol.Enabled, "proxy_protocol_trusted", cfg.ProxyProtocol.Trusted)
	return opts
}

// ClientConnections is the number of client connections the listeners
// hold (accepted and not yet closed, logged in or not).
func (a *App) ClientConnections() int64 { return a.clientConns.Load() }
