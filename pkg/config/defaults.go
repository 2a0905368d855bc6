package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// applyDefaults sets the default of every option whose YAML path has
// reports absent. An option given explicitly keeps its value, zero or not.
func (c *Config) applyDefaults(has func(path string) bool) {
	str := func(p *string, path, def string) {
		if !has(path) {
			*p = def
		}
	}
	dur := func(p *time.Duration, path string, def time.Duration) {
		if !has(path) {
			*p = def
		}
	}
	num := func(p *int, path string, def int) {
		if !has(path) {
			*p = def
		}
	}
	str(&c.Listen, "listen", DefaultListen)
	if !has("client_encryption") {
		c.ClientEncryption = append([]Encryption(nil), AllEncryptions...)
	}
	dur(&c.LoginTimeout, "login_timeout", DefaultLoginTimeout)
	dur(&c.DrainTimeout, "drain_timeout", DefaultDrainTimeout)
	num(&c.MaxClientConnections, "max_client_connections", DefaultMaxClientConnections)
	num(&c.MaxPendingPerSource, "max_pending_per_source", DefaultMaxPendingPerSource)
	dur(&c.ClientIdleTimeout, "client_idle_timeout", DefaultClientIdleTimeout)
	str(&c.LogLevel, "log_level", DefaultLogLevel)
	str(&c.LogFormat, "log_format", DefaultLogFormat)
	str(&c.HealthListen, "health_listen", DefaultHealthListen)
	str(&c.MetricsListen, "metrics_listen", DefaultMetricsListen)
	str(&c.AdminListen, "admin_listen", DefaultAdminListen)
	if !has("ebpf.enabled") {
		c.EBPF.Enabled = DefaultEBPFEnabled
	}
	if !has("relay") {
		c.Relay = DefaultRelay
	}
	if !has("header_walk") {
		c.HeaderWalk = DefaultHeaderWalk
	}

	c.applySecurityDefaults(has)

	dur(&c.Redis.HeartbeatTTL, "redis.heartbeat_ttl", DefaultHeartbeatTTL)
	dur(&c.Redis.HeartbeatInterval, "redis.heartbeat_interval", DefaultHeartbeatInterval)
	dur(&c.Redis.ReaperInterval, "redis.reaper_interval", DefaultReaperInterval)
	dur(&c.Redis.OpTimeout, "redis.op_timeout", DefaultOpTimeout)
	if !has("redis.lease_loss") {
		c.Redis.LeaseLoss = DefaultLeaseLoss
	}
	num(&c.Redis.ExpectedInstances, "redis.expected_instances", DefaultExpectedInstances)
	dur(&c.Redis.ForgetAfter, "redis.forget_after", DefaultForgetAfter)
	dur(&c.Redis.SlotLinger, "redis.slot_linger", DefaultSlotLinger)
	if !has("redis.tls.enabled") {
		c.Redis.TLS.Enabled = DefaultRedisTLSEnabled
	}

	for i := range c.Buckets {
		b := &c.Buckets[i]
		p := fmt.Sprintf("buckets[%d].", i)
		if !has(p + "encryption") {
			b.Encryption = DefaultBackendEncryption
		}
		num(&b.MaxQueueSize, p+"max_queue_size", DefaultMaxQueueSize)
		dur(&b.QueueTimeout, p+"queue_timeout", DefaultQueueTimeout)
		dur(&b.DialTimeout, p+"dial_timeout", DefaultDialTimeout)
		dur(&b.LoginTimeout, p+"login_timeout", DefaultLoginTimeout)
		num(&b.Breaker.Failures, p+"breaker.failures", DefaultBreakerFailures)
		dur(&b.Breaker.ProbeInterval, p+"breaker.probe_interval", DefaultBreakerProbeInterval)
		if !has(p + "pool_mode") {
			b.PoolMode = DefaultPoolMode
		}
		num(&b.MinIdle, p+"min_idle", DefaultMinIdle)
		num(&b.MaxIdle, p+"max_idle", DefaultMaxIdle)
		dur(&b.IdleTimeout, p+"idle_timeout", DefaultIdleTimeout)
		dur(&b.MaxLifetime, p+"max_lifetime", DefaultMaxLifetime)
		dur(&b.ResetTimeout, p+"reset_timeout", DefaultResetTimeout)
	}
}

// applyDerived fills in the defaults computed from other fields, after the
// environment overrides: the instance ID from the host name, and each
// bucket's server name from its address.
func (c *Config) applyDerived() {
	if c.InstanceID == "" {
		c.InstanceID, _ = os.Hostname() // empty on failure: Validate says so
	}
	for i := range c.Buckets {
		b := &c.Buckets[i]
		if b.ServerName == "" {
			b.ServerName = b.Host()
		}
	}
}

// Environment variables that override the file.
const (
	EnvInstanceID    = "INSTANCE_ID"
	EnvListen        = "LISTEN_ADDR"
	EnvListeners     = "LISTENERS"
	EnvProxyProtocol = "PROXY_PROTOCOL"
	EnvTLSCertFile   = "TLS_CERT_FILE"
	EnvTLSKeyFile    = "TLS_KEY_FILE"
	EnvLogLevel      = "LOG_LEVEL"
	EnvHealthListen  = "HEALTH_ADDR"
	EnvMetricsListen = "METRICS_ADDR"
	EnvAdminListen   = "ADMIN_ADDR"
	EnvRedisAddr     = "REDIS_ADDR"
	EnvRedisPassword = "REDIS_PASSWORD"
	EnvRedisUsername = "REDIS_USERNAME"
	EnvEBPFEnabled   = "EBPF_ENABLED"
	EnvRelay         = "RELAY"
	EnvHeaderWalk    = "HEADER_WALK"

	// EnvBucketPrefix and EnvBucketSuffix frame a bucket's address
	// override; see [BucketEnvVar].
	EnvBucketPrefix = "TDSGATE_BUCKET_"
	EnvBucketSuffix = "_ADDRESS"
)

// BucketEnvVar returns the name of the environment variable that
// overrides the address of the bucket with the given ID: the ID
// upper-cased, every character other than an ASCII letter or digit
// replaced by '_', between EnvBucketPrefix and EnvBucketSuffix
// ("bucket-001" → "TDSGATE_BUCKET_BUCKET_001_ADDRESS").
func BucketEnvVar(id string) string {
	return EnvBucketPrefix + envKey(id) + EnvBucketSuffix
}

func envKey(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, id)
}

// applyEnv applies the environment overrides. A variable set to the empty
// string counts as unset. The paths it sets are remembered so that a
// validation error can name the variable that caused it.
func (c *Config) applyEnv() []error {
	var errs []error
	bad := func(name, msg string) {
		errs = append(errs, &FieldError{Path: "env " + name, Msg: msg})
	}
	str := func(name string, p *string, path string) {
		if v := os.Getenv(name); v != "" {
			*p = v
			c.setByEnv(path, name)
		}
	}
	str(EnvInstanceID, &c.InstanceID, "instance_id")
	str(EnvListen, &c.Listen, "listen")
	if v := os.Getenv(EnvListeners); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			bad(EnvListeners, fmt.Sprintf("not an integer: %q", v))
		} else {
			c.Listeners = n
			c.setByEnv("listeners", EnvListeners)
		}
	}
	if v := os.Getenv(EnvProxyProtocol); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(EnvProxyProtocol, fmt.Sprintf("not a boolean (true or false): %q", v))
		} else {
			c.ProxyProtocol.Enabled = b
			c.setByEnv("proxy_protocol.enabled", EnvProxyProtocol)
		}
	}
	str(EnvTLSCertFile, &c.TLS.CertFile, "tls.cert_file")
	str(EnvTLSKeyFile, &c.TLS.KeyFile, "tls.key_file")
	if v := os.Getenv(EnvLogLevel); v != "" {
		c.LogLevel = strings.ToLower(v)
		c.setByEnv("log_level", EnvLogLevel)
	}
	str(EnvHealthListen, &c.HealthListen, "health_listen")
	str(EnvMetricsListen, &c.MetricsListen, "metrics_listen")
	str(EnvAdminListen, &c.AdminListen, "admin_listen")
	if v := os.Getenv(EnvEBPFEnabled); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(EnvEBPFEnabled, fmt.Sprintf("not a boolean (true or false): %q", v))
		} else {
			c.EBPF.Enabled = b
			c.setByEnv("ebpf.enabled", EnvEBPFEnabled)
		}
	}
	if v := os.Getenv(EnvRelay); v != "" {
		c.Relay = RelayMode(strings.ToLower(v))
		c.setByEnv("relay", EnvRelay)
	}
	if v := os.Getenv(EnvHeaderWalk); v != "" {
		c.HeaderWalk = HeaderWalkMode(strings.ToLower(v))
		c.setByEnv("header_walk", EnvHeaderWalk)
	}
	str(EnvRedisAddr, &c.Redis.Addr, "redis.addr")
	str(EnvRedisPassword, &c.Redis.Password, "redis.password")
	str(EnvRedisUsername, &c.Redis.Username, "redis.username")

	for _, kv := range os.Environ() {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvBucketPrefix) || !strings.HasSuffix(name, EnvBucketSuffix) ||
			len(name) <= len(EnvBucketPrefix)+len(EnvBucketSuffix) || val == "" {
			continue
		}
		found := false
		for i := range c.Buckets {
			if BucketEnvVar(c.Buckets[i].ID) == name {
				c.Buckets[i].Address = val
				c.setByEnv(fmt.Sprintf("buckets[%d].address", i), name)
				found = true
			}
		}
		if !found {
			ids := make([]string, len(c.Buckets))
			for i := range c.Buckets {
				ids[i] = c.Buckets[i].ID
			}
			bad(name, fmt.Sprintf("no bucket has an id that maps to it (bucket ids: %s)", strings.Join(ids, ", ")))
		}
	}
	return errs
}

func (c *Config) setByEnv(path, name string) {
	if c.envSource == nil {
		c.envSource = map[string]string{}
	}
	c.envSource[path] = name
}
