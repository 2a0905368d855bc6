package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/redisconn"
	"github.com/tdsgate/tdsgate/pkg/registry"
)

// appLimiter is what the app needs of a limiter: admission, plus applying
// a reloaded bucket list. limiter.Local (standalone) and limiter.Redis
// (shared caps) both are.
type appLimiter interface {
	limiter.Limiter
	Update([]limiter.BucketConfig)
}

// redisCoord is the Redis side of an instance: the shared limiter and the
// registry (heartbeat, reaper, leave).
type redisCoord struct {
	lim  *limiter.Redis
	reg  *registry.Registry
	conn *redisconn.Conn // the one client: closed last
}

// newLimiter chooses the limiter: limiter.Local when redis.addr is empty
// (standalone), else limiter.Redis with its registry started. Redis being
// down is no error: the limiter starts in fallback and reconciles later.
func (a *App) newLimiter(cfg *config.Config, opts ...limiter.Option) (appLimiter, error) {
	if !cfg.Redis.Enabled() {
		return limiter.NewLocal(bucketLimits(cfg), opts...), nil
	}
	rc := cfg.Redis
	log := a.log
	m := a.obs.metrics
	tlsConf, err := redisTLS(&rc)
	if err != nil {
		return nil, err
	}
	// The one Redis client: the limiter, the registry and pool pressure
	// share it; stopRedis closes it last.
	conn, err := redisconn.New(redisconn.Options{Addr: rc.Addr, SentinelMasterSet: rc.Sentinel.MasterSet, SentinelAddrs: rc.Sentinel.Addrs,
		Username: rc.Username, Password: rc.Password, DB: rc.DB, TLS: tlsConf, ClientName: "tdsgate-" + cfg.InstanceID, OpTimeout: rc.OpTimeout})
	if err != nil {
		return nil, err
	}
	lim, err := limiter.NewRedis(limiter.RedisOptions{
		Client: conn, InstanceID: cfg.InstanceID,
		OpTimeout: rc.OpTimeout, HeartbeatTTL: rc.HeartbeatTTL, FallbackDivisor: rc.FallbackDivisor,
		ExpectedInstances: rc.ExpectedInstances, LeaseLossKeep: rc.LeaseLoss == config.LeaseLossKeep,
		Shed: a.shedSessions, ReclaimAfter: rc.ReclaimAfter, ForgetAfter: rc.ForgetAfter, SlotLinger: rc.SlotLinger,
		HeartbeatInterval: rc.HeartbeatInterval, WaitReplicas: rc.WaitReplicasN(),
		PeerAddr: cfg.PeerAddr(), ProbePeer: a.obs.peer.Probe,
		Log: log,
		OnStateChange: func(from, to limiter.RedisState) {
			log.Debug("redis: limiter state", "from", from.String(), "to", to.String())
			m.SetFallback(to != limiter.StateConnected)
		},
		OnOp: m.RedisOp,
	}, bucketLimits(cfg), opts...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	// GET /peer/lease on the health listener: our answer to the peers'
	// full-outage check.
	a.obs.peerLease = func() admin.PeerLease {
		pl := lim.PeerLease()
		lease := admin.LeaseLive
		if !pl.Live {
			lease = admin.LeaseLost
		}
		return admin.PeerLease{Instance: pl.Instance, Incarnation: pl.Incarnation, Lease: lease, View: pl.View}
	}
	if cfg.PeerAddr() == "" && leaseLoss(rc.LeaseLoss) == config.LeaseLossClose {
		log.Warn("redis: no redis.peer_address (and health_listen has no host of its own): the other instances cannot confirm "+
			"a full redis outage with this one, so in fallback none of them admits past what redis counts for it (exact, less available)",
			"health_listen", cfg.HealthListen)
	}
	reg, err := registry.New(registry.Config{
		Client: conn, InstanceID: cfg.InstanceID,
		HeartbeatTTL: rc.HeartbeatTTL, HeartbeatInterval: rc.HeartbeatInterval, ReaperInterval: rc.ReaperInterval,
		OpTimeout: rc.OpTimeout, Log: log,
		Ready:        func() bool { return !lim.InFallback() },
		Missing:      lim.ReportUnregistered,
		ReclaimAfter: rc.ReclaimAfter, ForgetAfter: rc.ForgetAfter,
		Lease:       lim.Lease,
		Renewed:     lim.LeaseRenewed,
		OnOp:        m.RedisOp,
		OnHeartbeat: m.Heartbeat,
	})
	if err != nil {
		lim.Disconnect()
		conn.Close()
		return nil, err
	}
	reg.Start()
	a.redis = &redisCoord{lim: lim, reg: reg, conn: conn}
	m.SetFallback(lim.InFallback())
	m.OnScrape(func() {
		_, bs := lim.Status()
		for _, b := range bs {
			if b.Count >= 0 {
				m.SetGlobal(b.Bucket, int(b.Count), int(b.Max))
			}
		}
	})
	// /health's "redis" component: down while Redis does not answer, and
	// while admission runs on the local share.
	a.SetRedisHealth(func(ctx context.Context) error {
		if st := lim.State(); st != limiter.StateConnected {
			return fmt.Errorf("%s: admitting on the local share", st)
		}
		return lim.Ping(ctx)
	})
	log.Info("limiter: redis, caps shared by every instance", "addr", rc.Addr, "sentinel_master_set", rc.Sentinel.MasterSet,
		"sentinels", rc.Sentinel.Addrs, "tls", rc.TLS.On(), "username", rc.Username, "db", rc.DB,
		"instance_id", lim.InstanceID(), "incarnation", lim.Incarnation(), "lease_loss", leaseLoss(rc.LeaseLoss),
		"heartbeat_ttl", rc.HeartbeatTTL, "fallback_divisor", rc.FallbackDivisor, "expected_instances", rc.ExpectedInstances,
		"op_timeout", rc.OpTimeout, "peer_address", cfg.PeerAddr(), "slot_linger", rc.SlotLinger)
	return lim, nil
}

// stopRedis, at the end of Shutdown (sessions drained, limiter closed):
// stop the heartbeat and the reaper, give back what is still held and
// leave proxy:instances at once, then close the client.
func (a *App) stopRedis(ctx context.Context) {
	if a.redis == nil {
		return
	}
	a.redis.reg.Stop()
	if _, err := a.redis.reg.Leave(ctx); err != nil {
		a.log.Warn("shutdown: redis leave failed", "err", err)
	}
	a.redis.lim.Disconnect()
	a.redis.conn.Close()
	a.redis = nil
}

// RedisLimiter is the Redis limiter, or nil when the instance runs
// standalone (no redis.addr). Health and metrics read its state
// (InFallback, Fallbacks, Status); the router may use its RouteDirectory.
func (a *App) RedisLimiter() *limiter.Redis {
	if a.redis == nil {
		return nil
	}
	return a.redis.lim
}

func leaseLoss(l config.LeaseLoss) config.LeaseLoss {
	if l == "" {
		return config.DefaultLeaseLoss
	}
	return l
}

// redisTLS builds the TLS config of redis.tls, or nil when it is off.
func redisTLS(rc *config.Redis) (*tls.Config, error) {
	t := rc.TLS
	if !t.On() {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// shedSessions is the limiter's Shed hook (redis.lease_loss close): close
// idle pooled connections of bucket down to min_idle, then sessions, so
// that at most keep of this instance's slots of bucket stay in use.
func (a *App) shedSessions(bucket string, keep int) int {
	idle := 0
	if m := a.pools.byBucket.Load(); m != nil {
		if p := (*m)[bucket]; p != nil {
			p.Pressure()
			idle = p.Stats().Idle
		}
	}
	a.mu.Lock()
	h := a.handler
	a.mu.Unlock()
	if h == nil {
		return 0
	}
	return h.ShedSessions(bucket, keep-idle)
}
