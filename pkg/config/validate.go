package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// Validate checks the whole configuration and returns every problem found
// (errors.Join of *FieldError), or nil. It reads no files: the certificate
// and CA files are read by the application at start.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

func (c *Config) validate() []error {
	v := &validator{c: c}

	if c.InstanceID == "" {
		v.add("instance_id", "required (and the host name, its default, is unavailable)")
	} else if !validName(c.InstanceID) {
		v.add("instance_id", "%q: use letters, digits, '.', '_' and '-' only", c.InstanceID)
	}
	if c.Listen == "" {
		v.add("listen", "required")
	} else {
		v.listenAddr("listen", c.Listen)
	}
	if c.Listeners < 0 {
		v.add("listeners", "must be >= 0 (got %d); 0 means GOMAXPROCS", c.Listeners)
	}
	if c.TLS.CertFile != "" && c.TLS.KeyFile == "" {
		v.add("tls.key_file", "required when tls.cert_file is set")
	}
	if c.TLS.KeyFile != "" && c.TLS.CertFile == "" {
		v.add("tls.cert_file", "required when tls.key_file is set")
	}
	if len(c.ClientEncryption) == 0 {
		v.add("client_encryption", "must allow at least one mode (none, login, full, strict)")
	}
	seenEnc := map[Encryption]bool{}
	for i, e := range c.ClientEncryption {
		p := fmt.Sprintf("client_encryption[%d]", i)
		switch {
		case !e.Valid():
			v.add(p, "unknown mode %q (want none, login, full or strict)", e)
		case seenEnc[e]:
			v.add(p, "duplicate mode %q", e)
		}
		seenEnc[e] = true
	}
	v.positive("login_timeout", c.LoginTimeout)
	if c.MaxClientConnections < -1 {
		v.add("max_client_connections", "must be >= -1 (got %d); 0 derives it from RLIMIT_NOFILE, -1 is no cap", c.MaxClientConnections)
	}
	if c.MaxPendingPerSource < 0 {
		v.add("max_pending_per_source", "must be >= 0 (got %d); 0 is no cap", c.MaxPendingPerSource)
	}
	if c.ClientIdleTimeout < 0 {
		v.add("client_idle_timeout", "must be >= 0 (got %s); 0 is off", c.ClientIdleTimeout)
	}
	if _, err := c.ProxyProtocol.TrustedPrefixes(); err != nil {
		v.errs = append(v.errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if c.DrainTimeout < 0 {
		v.add("drain_timeout", "must be >= 0 (got %s)", c.DrainTimeout)
	}
	if c.DrainDelay < 0 {
		v.add("drain_delay", "must be >= 0 (got %s)", c.DrainDelay)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.add("log_level", "unknown level %q (want debug, info, warn or error)", c.LogLevel)
	}
	switch c.Relay {
	case "", RelaySplice, RelaySockmap:
	default:
		v.add("relay", "unknown relay %q (want splice or sockmap)", c.Relay)
	}
	switch c.HeaderWalk {
	case "", HeaderWalkKernel, HeaderWalkPeek:
	default:
		v.add("header_walk", "unknown header walk %q (want kernel or peek)", c.HeaderWalk)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		v.add("log_format", "unknown format %q (want text or json)", c.LogFormat)
	}
	if c.HealthListen != "" {
		v.listenAddr("health_listen", c.HealthListen)
	}
	if c.MetricsListen != "" {
		v.listenAddr("metrics_listen", c.MetricsListen)
	}
	v.sameListen("health_listen", c.HealthListen, "listen", c.Listen)
	v.sameListen("metrics_listen", c.MetricsListen, "listen", c.Listen)
	v.sameListen("metrics_listen", c.MetricsListen, "health_listen", c.HealthListen)
	if c.AdminListen != "" {
		v.listenAddr("admin_listen", c.AdminListen)
		if !LoopbackAddr(c.AdminListen) && c.AdminAuth.TokenFile == "" {
			v.add("admin_auth.token_file", "required when admin_listen (%q) is not a loopback address: the admin API kills sessions and stops admissions", c.AdminListen)
		}
	}
	v.sameListen("admin_listen", c.AdminListen, "listen", c.Listen)
	v.sameListen("admin_listen", c.AdminListen, "health_listen", c.HealthListen)
	v.sameListen("admin_listen", c.AdminListen, "metrics_listen", c.MetricsListen)

	v.redis(&c.Redis)
	v.security()

	if len(c.Buckets) == 0 {
		v.add("buckets", "at least one bucket is required")
	}
	ids := map[string]int{}
	envNames := map[string]int{}
	for i := range c.Buckets {
		v.bucket(i, &c.Buckets[i], ids, envNames)
	}

	if len(c.Routes) == 0 && c.DefaultBucket == "" {
		v.add("routes", "no routes and no default_bucket: every login would be refused")
	}
	for i := range c.Routes {
		v.route(i, &c.Routes[i])
	}
	if c.DefaultBucket != "" && c.Bucket(c.DefaultBucket) == nil {
		v.add("default_bucket", "unknown bucket %q", c.DefaultBucket)
	}
	return v.errs
}

type validator struct {
	c    *Config
	errs []error
}

func (v *validator) add(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if env, ok := v.c.envSource[path]; ok {
		msg += " (set by env " + env + ")"
	}
	v.errs = append(v.errs, &FieldError{Path: path, Msg: msg})
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be > 0 (got %s)", d)
	}
}

// listenAddr checks a host:port to listen on: the host may be empty, the
// port may be 0 (any free port).
func (v *validator) listenAddr(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "%q is not host:port (%v)", addr, unwrapAddrErr(err))
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		v.add(path, "%q: port %q is not a number in 0..65535", addr, port)
	}
}

// dialAddr checks a host:port to connect to: both parts required, port
// 1..65535.
func (v *validator) dialAddr(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "%q is not host:port (%v)", addr, unwrapAddrErr(err))
		return
	}
	if host == "" {
		v.add(path, "%q: host is empty", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.add(path, "%q: port %q is not a number in 1..65535", addr, port)
	}
}

func unwrapAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// sameListen reports path when addr would bind the same port as the
// address at otherPath.
func (v *validator) sameListen(path, addr, otherPath, other string) {
	if addr == "" || other == "" {
		return
	}
	h1, p1, err1 := net.SplitHostPort(addr)
	h2, p2, err2 := net.SplitHostPort(other)
	if err1 != nil || err2 != nil || p1 != p2 || p1 == "0" {
		return
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	if h1 == h2 || wild(h1) || wild(h2) {
		v.add(path, "%q would bind the same port as %s (%q)", addr, otherPath, other)
	}
}

func (v *validator) redis(r *Redis) {
	if r.Addr != "" {
		v.dialAddr("redis.addr", r.Addr)
	}
	if r.DB < 0 {
		v.add("redis.db", "must be >= 0 (got %d)", r.DB)
	}
	v.positive("redis.heartbeat_ttl", r.HeartbeatTTL)
	v.positive("redis.heartbeat_interval", r.HeartbeatInterval)
	if r.HeartbeatInterval > 0 && r.HeartbeatTTL > 0 && r.HeartbeatInterval >= r.HeartbeatTTL {
		v.add("redis.heartbeat_interval", "must be shorter than redis.heartbeat_ttl (%s), or the heartbeat lapses between refreshes (got %s)", r.HeartbeatTTL, r.HeartbeatInterval)
	}
	v.positive("redis.reaper_interval", r.ReaperInterval)
	if r.FallbackDivisor < 0 {
		v.add("redis.fallback_divisor", "must be >= 0 (got %d); 0 means the live instances last seen", r.FallbackDivisor)
	}
	v.positive("redis.op_timeout", r.OpTimeout)
	if r.HeartbeatTTL > 0 && r.HeartbeatInterval > 0 && r.OpTimeout > 0 && r.HeartbeatInterval < r.HeartbeatTTL {
		if m := LeaseMargin(r.HeartbeatTTL, r.OpTimeout); r.HeartbeatInterval+r.OpTimeout >= r.HeartbeatTTL-m {
			v.add("redis.heartbeat_interval", "plus redis.op_timeout (%s) must be shorter than redis.heartbeat_ttl (%s) minus the lease margin (%s), or the instance loses its lease between renewals (got %s)",
				r.OpTimeout, r.HeartbeatTTL, m, r.HeartbeatInterval)
		}
	}
	switch r.LeaseLoss {
	case LeaseLossClose, LeaseLossKeep, "": // "" (a Config built in code): the default
	default:
		v.add("redis.lease_loss", "must be %q or %q (got %q)", LeaseLossClose, LeaseLossKeep, r.LeaseLoss)
	}
	if r.ExpectedInstances < 0 {
		v.add("redis.expected_instances", "must be >= 0 (got %d); 0 refuses logins until Redis was reached once", r.ExpectedInstances)
	}
	if r.ReclaimAfter < 0 {
		v.add("redis.reclaim_after", "must be >= 0 (got %s); 0 means heartbeat_ttl", r.ReclaimAfter)
	}
	if r.PeerAddress != "" {
		v.dialAddr("redis.peer_address", r.PeerAddress)
	}
	if r.ForgetAfter < 0 {
		v.add("redis.forget_after", "must be >= 0 (got %s)", r.ForgetAfter)
	}
	if r.WaitReplicas != nil && *r.WaitReplicas < 0 {
		v.add("redis.wait_replicas", "must be >= 0 (got %d); 0 confirms no grant with WAIT", *r.WaitReplicas)
	}
	if r.SlotLinger < 0 || r.SlotLinger > time.Second {
		v.add("redis.slot_linger", "must be between 0 (off) and 1s (got %s)", r.SlotLinger)
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		v.add("redis.tls.cert_file", "set redis.tls.cert_file and redis.tls.key_file together (got cert_file %q, key_file %q)", r.TLS.CertFile, r.TLS.KeyFile)
	}
	if !r.TLS.On() && (r.TLS.CertFile != "" || r.TLS.ServerName != "" || r.TLS.InsecureSkipVerify) {
		v.add("redis.tls", "has settings but TLS is off: set redis.tls.ca_file or redis.tls.enabled: true")
	}
	for _, f := range []struct{ path, file string }{{"redis.tls.ca_file", r.TLS.CAFile}, {"redis.tls.cert_file", r.TLS.CertFile}, {"redis.tls.key_file", r.TLS.KeyFile}} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			v.add(f.path, "cannot read %q: %v", f.file, err)
		}
	}
	if r.Sentinel.MasterSet != "" {
		if r.Addr != "" {
			v.add("redis.addr", "must be empty with redis.sentinel.master_set (the sentinels name the primary; got %q)", r.Addr)
		}
		if len(r.Sentinel.Addrs) == 0 {
			v.add("redis.sentinel.addrs", "needs at least one sentinel host:port with redis.sentinel.master_set %q", r.Sentinel.MasterSet)
		}
	} else if len(r.Sentinel.Addrs) > 0 {
		v.add("redis.sentinel.master_set", "is required with redis.sentinel.addrs")
	}
	for i, a := range r.Sentinel.Addrs {
		v.dialAddr(fmt.Sprintf("redis.sentinel.addrs[%d]", i), a)
	}
}

func (v *validator) bucket(i int, b *Bucket, ids, envNames map[string]int) {
	p := fmt.Sprintf("buckets[%d].", i)
	switch {
	case b.ID == "":
		v.add(p+"id", "required")
	case !validName(b.ID):
		v.add(p+"id", "%q: use letters, digits, '.', '_' and '-' only", b.ID)
	default:
		if j, dup := ids[b.ID]; dup {
			v.add(p+"id", "duplicate id %q (also buckets[%d])", b.ID, j)
		} else if j, dup := envNames[envKey(b.ID)]; dup {
			v.add(p+"id", "%q and buckets[%d].id %q share the env override %s; rename one", b.ID, j, v.c.Buckets[j].ID, BucketEnvVar(b.ID))
		}
		ids[b.ID] = i
		envNames[envKey(b.ID)] = i
	}
	if b.Address == "" {
		v.add(p+"address", "required")
	} else {
		v.dialAddr(p+"address", b.Address)
	}
	if !b.Encryption.Valid() {
		v.add(p+"encryption", "unknown mode %q (want none, login, full or strict)", b.Encryption)
	} else if b.Encryption == EncryptionNone {
		if b.CAFile != "" {
			v.add(p+"ca_file", "has no effect with encryption \"none\"")
		}
		if b.TrustServerCertificate {
			v.add(p+"trust_server_certificate", "has no effect with encryption \"none\"")
		}
	} else {
		switch {
		case b.CAFile == "" && !b.TrustServerCertificate:
			v.add(p+"encryption", "%q uses TLS, so the server's certificate must be checked against something: "+
				"set ca_file to the PEM of the CA that signed it, or trust_server_certificate: true to accept any certificate "+
				"(encrypted but not authenticated: for tests and demos)", b.Encryption)
		case b.CAFile != "" && b.TrustServerCertificate:
			v.add(p+"trust_server_certificate", "true skips verification, so ca_file would be unused: set one or the other")
		}
	}
	if b.MaxConnections <= 0 {
		v.add(p+"max_connections", "must be > 0 (got %d)", b.MaxConnections)
	}
	if b.MaxQueueSize < 0 {
		v.add(p+"max_queue_size", "must be >= 0 (got %d); 0 means no queue", b.MaxQueueSize)
	}
	v.positive(p+"queue_timeout", b.QueueTimeout)
	v.positive(p+"dial_timeout", b.DialTimeout)
	v.positive(p+"login_timeout", b.LoginTimeout)
	if b.Breaker.Failures <= 0 {
		v.add(p+"breaker.failures", "must be > 0 (got %d)", b.Breaker.Failures)
	}
	v.positive(p+"breaker.probe_interval", b.Breaker.ProbeInterval)
	switch b.PoolMode {
	case "", PoolModeNone:
		return // the pool settings are unused ("" is none, for configs built in code)
	case PoolModeSession, PoolModeTransaction:
	default:
		v.add(p+"pool_mode", "unknown mode %q (want none, session or transaction)", b.PoolMode)
		return
	}
	if b.MinIdle < 0 {
		v.add(p+"min_idle", "must be >= 0 (got %d)", b.MinIdle)
	} else if b.MaxConnections > 0 && b.MinIdle > b.MaxConnections {
		v.add(p+"min_idle", "%d exceeds max_connections (%d)", b.MinIdle, b.MaxConnections)
	}
	if b.MaxIdle < 0 {
		v.add(p+"max_idle", "must be >= 0 (got %d); 0 means max_connections", b.MaxIdle)
	} else if b.MaxIdle > 0 && b.MaxIdle < b.MinIdle {
		v.add(p+"max_idle", "%d is below min_idle (%d)", b.MaxIdle, b.MinIdle)
	}
	v.positive(p+"idle_timeout", b.IdleTimeout)
	v.positive(p+"max_lifetime", b.MaxLifetime)
	v.positive(p+"reset_timeout", b.ResetTimeout)
}

func (v *validator) route(i int, r *Route) {
	p := fmt.Sprintf("routes[%d].", i)
	if r.Bucket == "" {
		v.add(p+"bucket", "required")
	} else if v.c.Bucket(r.Bucket) == nil {
		v.add(p+"bucket", "unknown bucket %q", r.Bucket)
	}
	if r.Server == "" && r.Database == "" && r.User == "" && r.App == "" && r.PasswordHash == "" {
		v.add(strings.TrimSuffix(p, "."), "no matcher set (server, database, user, app or password_hash); use default_bucket for a catch-all")
	}
	if r.Server != "" {
		if host, _ := SplitServerName(r.Server); host == "" {
			v.add(p+"server", "%q names no host", r.Server)
		}
	}
	if r.PasswordHash != "" {
		if h, err := passhash.Parse(r.PasswordHash); err != nil {
			v.add(p+"password_hash", "%v; make one with `proxy hash-password`", err)
		} else {
			v.hashIterations(p+"password_hash", h)
		}
		if r.User == "" {
			v.add(p+"user", "required by password_hash: a credential rule verifies one user's password")
		}
	}
}

// validName reports whether s is a non-empty run of ASCII letters, digits,
// '.', '_' and '-' (safe in Redis keys, metric labels and env names).
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

// LoopbackAddr reports whether a listen address binds loopback only
// (127.0.0.0/8, ::1 or "localhost"); an empty host binds every address.
func LoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
