package config

import (
	"log/slog"
	"net"
	"time"
)

// Defaults of the top-level options.
const (
	// DefaultListen is the default of Config.Listen.
	DefaultListen = "0.0.0.0:1433"
	// DefaultLoginTimeout is the default of Config.LoginTimeout and of
	// Bucket.LoginTimeout.
	DefaultLoginTimeout = 15 * time.Second
	// DefaultDrainTimeout is the default of Config.DrainTimeout.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultLogLevel is the default of Config.LogLevel.
	DefaultLogLevel = "info"
	// DefaultLogFormat is the default of Config.LogFormat.
	DefaultLogFormat = "text"
	// DefaultHealthListen is the default of Config.HealthListen.
	DefaultHealthListen = "0.0.0.0:8081"
	// DefaultMetricsListen is the default of Config.MetricsListen.
	DefaultMetricsListen = "0.0.0.0:9091"
	// DefaultEBPFEnabled is the default of EBPF.Enabled: on, wherever the
	// tracker can load.
	DefaultEBPFEnabled = true
	// DefaultRelay is the default of Config.Relay: splice, until the
	// sockmap relay is measured to win (see the README's "Relay modes").
	DefaultRelay = RelaySplice
)

// Defaults of the Redis options.
const (
	// DefaultHeartbeatTTL is the default of Redis.HeartbeatTTL.
	DefaultHeartbeatTTL = 30 * time.Second
	// DefaultHeartbeatInterval is the default of Redis.HeartbeatInterval.
	DefaultHeartbeatInterval = 5 * time.Second
	// DefaultReaperInterval is the default of Redis.ReaperInterval.
	DefaultReaperInterval = 10 * time.Second
	// DefaultOpTimeout is the default of Redis.OpTimeout.
	DefaultOpTimeout = 500 * time.Millisecond
)

// Defaults of the bucket options.
const (
	// DefaultBackendEncryption is the default of Bucket.Encryption.
	DefaultBackendEncryption = EncryptionLogin
	// DefaultMaxQueueSize is the default of Bucket.MaxQueueSize.
	DefaultMaxQueueSize = 10
	// DefaultQueueTimeout is the default of Bucket.QueueTimeout.
	DefaultQueueTimeout = 30 * time.Second
	// DefaultDialTimeout is the default of Bucket.DialTimeout.
	DefaultDialTimeout = 5 * time.Second
	// DefaultBreakerFailures is the default of Breaker.Failures.
	DefaultBreakerFailures = 5
	// DefaultBreakerProbeInterval is the default of Breaker.ProbeInterval.
	DefaultBreakerProbeInterval = 2 * time.Second
	// DefaultPoolMode is the default of Bucket.PoolMode: no pooling.
	DefaultPoolMode = PoolModeNone
	// DefaultMinIdle is the default of Bucket.MinIdle.
	DefaultMinIdle = 0
	// DefaultMaxIdle is the default of Bucket.MaxIdle: no cap but
	// max_connections.
	DefaultMaxIdle = 0
	// DefaultIdleTimeout is the default of Bucket.IdleTimeout.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxLifetime is the default of Bucket.MaxLifetime.
	DefaultMaxLifetime = 30 * time.Minute
	// DefaultResetTimeout is the default of Bucket.ResetTimeout.
	DefaultResetTimeout = 2 * time.Second
)

// PoolMode is a bucket's pooling of backend connections.
type PoolMode string

// The pool modes.
const (
	// PoolModeNone: every client gets its own backend login, closed when
	// it leaves.
	PoolModeNone PoolMode = "none"
	// PoolModeSession: a backend connection serves one client at a time;
	// when the client leaves it is made safe and kept for the next client
	// with the same login, database, TDS version, packet size and options,
	// which gets it after a password check and RESETCONNECTION.
	PoolModeSession PoolMode = "session"
)

// Encryption is a TDS encryption mode, for the client leg
// (Config.ClientEncryption) or the backend leg (Bucket.Encryption).
type Encryption string

// The encryption modes.
const (
	// EncryptionNone: no TLS at all. On the client leg: PRELOGIN
	// ENCRYPT_NOT_SUP, or LOGIN7 with no PRELOGIN.
	EncryptionNone Encryption = "none"
	// EncryptionLogin: TLS protects LOGIN7 only, then plaintext
	// (PRELOGIN ENCRYPT_OFF). Plaintext after login allows the splice
	// fast path.
	EncryptionLogin Encryption = "login"
	// EncryptionFull: TLS for the whole session (ENCRYPT_ON / ENCRYPT_REQ).
	EncryptionFull Encryption = "full"
	// EncryptionStrict: TDS 8.0, TLS before PRELOGIN (ALPN "tds/8.0").
	EncryptionStrict Encryption = "strict"
)

// AllEncryptions lists every mode; it is the default of
// Config.ClientEncryption.
var AllEncryptions = []Encryption{EncryptionNone, EncryptionLogin, EncryptionFull, EncryptionStrict}

// Valid reports whether e is one of the four modes.
func (e Encryption) Valid() bool {
	switch e {
	case EncryptionNone, EncryptionLogin, EncryptionFull, EncryptionStrict:
		return true
	}
	return false
}

// RelayMode is the relay of plaintext sessions (Config.Relay).
type RelayMode string

// Relay modes.
const (
	// RelaySplice: splice(2) between the two sockets, by the proxy.
	RelaySplice RelayMode = "splice"
	// RelaySockmap: each socket's segments go out of the other in the
	// kernel (eBPF sockmap); the proxy only watches for the ends.
	RelaySockmap RelayMode = "sockmap"
)

// Config is the whole configuration of one proxy instance.
type Config struct {
	// InstanceID names this instance in Redis keys, logs and /health.
	// Letters, digits, '.', '_' and '-'. Default: the host name.
	// Env: INSTANCE_ID.
	InstanceID string `yaml:"instance_id"`

	// Listen is the TDS address clients connect to (host:port; an empty
	// host listens on all addresses). Default: DefaultListen.
	// Env: LISTEN_ADDR.
	Listen string `yaml:"listen"`

	// Listeners is the number of SO_REUSEPORT listeners bound to Listen,
	// each with its own accept loop. 0 means GOMAXPROCS. Default 0.
	// Env: LISTENERS.
	Listeners int `yaml:"listeners"`

	// ProxyProtocol makes every client connection start with a PROXY
	// protocol v2 header (as HAProxy's send-proxy-v2 sends), whose source
	// address is then the client's address in logs. A connection without
	// one is refused. Default false. Env: PROXY_PROTOCOL (true/false).
	ProxyProtocol bool `yaml:"proxy_protocol"`

	// TLS is the certificate shown to clients.
	TLS TLS `yaml:"tls"`

	// ClientEncryption lists the encryption modes clients may use; a
	// client asking for another is refused at PRELOGIN. Default: all four
	// (AllEncryptions).
	ClientEncryption []Encryption `yaml:"client_encryption"`

	// LoginTimeout is the deadline on every client read until the login
	// completes (PRELOGIN, TLS handshake, LOGIN7). It is not a deadline on
	// the wait in a bucket's queue (Bucket.QueueTimeout) nor on the
	// backend login (Bucket.LoginTimeout). Default: DefaultLoginTimeout.
	LoginTimeout time.Duration `yaml:"login_timeout"`

	// DrainTimeout is how long sessions may go on after SIGTERM before
	// they are closed; 0 closes them at once. Default: DefaultDrainTimeout.
	DrainTimeout time.Duration `yaml:"drain_timeout"`

	// DrainDelay is how long, after SIGTERM, the instance goes on
	// accepting and serving new logins while /health already answers 503
	// (draining), before it stops accepting and starts the drain. A load
	// balancer that checks /health takes the instance out during the
	// delay, so no client is sent to a closed listener or refused with
	// 50006: set it longer than the balancer's check interval times its
	// fall count. 0 stops accepting at once. Default 0.
	DrainDelay time.Duration `yaml:"drain_delay"`

	// LogLevel is debug, info, warn or error. Default: DefaultLogLevel.
	// Env: LOG_LEVEL.
	LogLevel string `yaml:"log_level"`

	// LogFormat is text or json. Default: DefaultLogFormat.
	LogFormat string `yaml:"log_format"`

	// HealthListen is the address of the HTTP health endpoints
	// (/health/live, /health). An explicit empty string disables them.
	// Default: DefaultHealthListen. Env: HEALTH_ADDR.
	HealthListen string `yaml:"health_listen"`

	// MetricsListen is the address of the Prometheus /metrics endpoint.
	// An explicit empty string disables it. Default: DefaultMetricsListen.
	// Env: METRICS_ADDR.
	MetricsListen string `yaml:"metrics_listen"`

	// Redis coordinates the limits of all instances. Without an address
	// the instance runs standalone, with local limits only.
	Redis Redis `yaml:"redis"`

	// EBPF is the kernel-side count of backend connections behind
	// proxy_ebpf_backend_connections, proxy_ebpf_drift and /health's
	// "ebpf" component.
	EBPF EBPF `yaml:"ebpf"`

	// Relay is how the bytes of a session whose two legs are plaintext
	// after the login (and whose backend is not pooled) are relayed:
	// RelaySplice (splice(2) in the proxy's goroutines) or RelaySockmap
	// (in the kernel, by a BPF sockhash and stream-verdict program). Where
	// the sockmap program cannot load, the proxy logs one warning and uses
	// splice; a session that cannot join the map uses splice too. TLS and
	// pooled sessions keep their relays. "" means RelaySplice.
	// Default: DefaultRelay. Env: RELAY.
	Relay RelayMode `yaml:"relay"`

	// Buckets are the SQL Servers behind the proxy, each with its own
	// connection cap and queue. At least one is required.
	Buckets []Bucket `yaml:"buckets"`

	// Routes map a login to a bucket; the first rule that matches wins.
	Routes []Route `yaml:"routes"`

	// DefaultBucket, if set, takes every login no route matches. Without
	// it such a login is refused. It must name a bucket.
	DefaultBucket string `yaml:"default_bucket"`

	// envSource maps the YAML path of each field an environment variable
	// set to that variable's name, for error messages.
	envSource map[string]string
}

// TLS names the certificate the proxy shows to clients.
type TLS struct {
	// CertFile is a PEM certificate chain. Empty (with KeyFile empty): a
	// self-signed certificate is generated at start and its SHA-256
	// fingerprint logged. Env: TLS_CERT_FILE.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile. Set both or neither.
	// Env: TLS_KEY_FILE.
	KeyFile string `yaml:"key_file"`
}

// Redis configures the shared limiter and the instance registry.
type Redis struct {
	// Addr is host:port. Empty: standalone, local limits only.
	// Env: REDIS_ADDR.
	Addr string `yaml:"addr"`
	// Password is the AUTH password; empty for none. Env: REDIS_PASSWORD.
	Password string `yaml:"password"`
	// DB is the database number. Default 0.
	DB int `yaml:"db"`
	// HeartbeatTTL is the TTL of this instance's heartbeat key; once it
	// lapses another instance may reclaim this one's slots.
	// Default: DefaultHeartbeatTTL.
	HeartbeatTTL time.Duration `yaml:"heartbeat_ttl"`
	// HeartbeatInterval is how often the heartbeat is refreshed. It must
	// be shorter than HeartbeatTTL. Default: DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// ReaperInterval is how often this instance looks for dead instances
	// to reclaim. Default: DefaultReaperInterval.
	ReaperInterval time.Duration `yaml:"reaper_interval"`
	// FallbackDivisor divides each bucket's cap into the local share an
	// instance may use while Redis is unreachable. 0 means the number of
	// live instances last seen in Redis. Default 0.
	FallbackDivisor int `yaml:"fallback_divisor"`
	// OpTimeout bounds each Redis operation; past it the instance falls
	// back to its local share. Default: DefaultOpTimeout.
	OpTimeout time.Duration `yaml:"op_timeout"`
}

// EBPF configures the eBPF tracker (pkg/ebpf): a sock_ops program that
// counts, in the kernel, the TCP connections open to each bucket's
// backend address, so that a connection the proxy's books lost cannot
// hide. A Config built in code has it off (the zero value); a loaded file
// has it on unless it says otherwise.
type EBPF struct {
	// Enabled loads the tracker at start. Where it cannot load (no
	// CAP_BPF and CAP_NET_ADMIN, no cgroup v2, not Linux) the proxy logs
	// one warning and runs without it. Default: DefaultEBPFEnabled.
	// Env: EBPF_ENABLED (true/false).
	Enabled bool `yaml:"enabled"`
	// Cgroup is the cgroup v2 directory the program attaches to; it
	// counts connections made by processes in that cgroup and below.
	// Empty: the process's own cgroup (at the cgroup v2 root, every
	// process on the host counts). Default "".
	Cgroup string `yaml:"cgroup"`
}

// Bucket is one SQL Server behind the proxy and the limits that protect it.
type Bucket struct {
	// ID names the bucket in routes, Redis keys, metrics and logs.
	// Letters, digits, '.', '_' and '-'; unique. Required.
	ID string `yaml:"id"`

	// Address is the SQL Server's host:port. Required.
	// Env: TDSGATE_BUCKET_<ID>_ADDRESS, where <ID> is the ID upper-cased
	// with every character other than a letter or digit replaced by '_'
	// (bucket-001 → TDSGATE_BUCKET_BUCKET_001_ADDRESS).
	Address string `yaml:"address"`

	// Encryption is the mode of the backend leg: none, login (TLS for
	// LOGIN7 only), full or strict (TDS 8.0).
	// Default: DefaultBackendEncryption.
	Encryption Encryption `yaml:"encryption"`

	// CAFile is a PEM bundle of the CAs that may sign the server's
	// certificate. With any mode other than none, set CAFile or
	// TrustServerCertificate (not both).
	CAFile string `yaml:"ca_file"`

	// TrustServerCertificate skips verification of the server's
	// certificate: the link is encrypted but not authenticated. For tests
	// and demos. Default false.
	TrustServerCertificate bool `yaml:"trust_server_certificate"`

	// ServerName is the name sent in SNI and checked against the server's
	// certificate. Default: the host of Address (after env overrides).
	ServerName string `yaml:"server_name"`

	// MaxConnections caps the backend connections to this server across
	// all instances (with Redis) or in this instance. Required, > 0.
	MaxConnections int `yaml:"max_connections"`

	// MaxQueueSize is how many logins may wait for a slot; one more is
	// refused at once with error 50005. 0: no queue.
	// Default: DefaultMaxQueueSize.
	MaxQueueSize int `yaml:"max_queue_size"`

	// QueueTimeout is how long a login may wait in the queue before it is
	// refused with error 50004. Default: DefaultQueueTimeout.
	QueueTimeout time.Duration `yaml:"queue_timeout"`

	// DialTimeout bounds the TCP connect to the server.
	// Default: DefaultDialTimeout.
	DialTimeout time.Duration `yaml:"dial_timeout"`

	// LoginTimeout bounds the backend login: PRELOGIN, TLS and LOGIN7 up
	// to LOGINACK. Default: DefaultLoginTimeout.
	LoginTimeout time.Duration `yaml:"login_timeout"`

	// Breaker stops dialing a server that keeps failing.
	Breaker Breaker `yaml:"breaker"`

	// PoolMode is none (each client its own backend login) or session
	// (backend connections are reused, one client at a time). The other
	// pool settings apply to session only. Default: DefaultPoolMode; ""
	// (a config built in code) means none.
	PoolMode PoolMode `yaml:"pool_mode"`

	// MinIdle idle connections are kept through idle_timeout and through
	// pressure (clients of the bucket waiting for a slot, here or on
	// another instance). tdsgate keeps no passwords, so it never opens
	// connections itself: these are the ones clients left. At most
	// MaxConnections. Default: DefaultMinIdle.
	MinIdle int `yaml:"min_idle"`

	// MaxIdle caps this instance's idle connections of the bucket; a
	// connection returning past it is closed. 0: no cap but
	// MaxConnections. At least MinIdle. Default: DefaultMaxIdle.
	MaxIdle int `yaml:"max_idle"`

	// IdleTimeout closes a connection idle this long, above MinIdle.
	// Default: DefaultIdleTimeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// MaxLifetime closes a connection this old when it is next returned
	// or while it is idle, whatever MinIdle says. It also bounds how long
	// a pooled connection answers for a password changed at the server.
	// Default: DefaultMaxLifetime.
	MaxLifetime time.Duration `yaml:"max_lifetime"`

	// ResetTimeout bounds making a connection safe after its client left
	// (ATTENTION and its DONE_ATTN, rollback, reset); past it the
	// connection is closed and its slot released.
	// Default: DefaultResetTimeout.
	ResetTimeout time.Duration `yaml:"reset_timeout"`
}

// Breaker is a bucket's circuit breaker on backend failures.
type Breaker struct {
	// Failures is how many consecutive dial or login failures open the
	// breaker; while open, logins to the bucket fail at once, and one
	// probe per ProbeInterval tries the server. Default:
	// DefaultBreakerFailures.
	Failures int `yaml:"failures"`
	// ProbeInterval is the time between probes of an open breaker.
	// Default: DefaultBreakerProbeInterval.
	ProbeInterval time.Duration `yaml:"probe_interval"`
}

// Route is one routing rule. Every non-empty matcher must match the login;
// an empty matcher matches anything. Matching is case-insensitive and a
// '*' in a matcher matches any run of characters (there is no escape).
type Route struct {
	// Bucket is the ID of the bucket a matching login goes to. Required.
	Bucket string `yaml:"bucket"`

	// Server matches the server name the client dialled (LOGIN7
	// ServerName). Both sides are normalized first: surrounding space,
	// a tcp:/np:/lpc:/admin: prefix and a trailing ",port" are dropped,
	// IPv6 brackets and a trailing '.' removed, then the name splits at
	// the first '\' into host and instance. A pattern without an instance
	// ("db.example.com") ignores the login's instance; a pattern with one
	// ("db.example.com\sales", "db.example.com\*") must match both parts.
	// A login with no server name matches only a pattern of "*".
	Server string `yaml:"server"`

	// Database matches the LOGIN7 database. A login that names none (it
	// will use the login's default database) matches only "*".
	Database string `yaml:"database"`

	// User matches the SQL login name.
	User string `yaml:"user"`

	// App matches the LOGIN7 application name.
	App string `yaml:"app"`

	// PasswordHash makes the rule a credential rule: the login matches
	// only if its password verifies against this hash, so that one user
	// name can reach different buckets with different passwords. Format:
	// pbkdf2-sha256$<iterations>$<salt>$<key>, made by
	// `proxy hash-password`; requires User. The proxy does not
	// authenticate the client: the backend still checks the password.
	PasswordHash string `yaml:"password_hash"`
}

// Bucket returns the bucket with the given ID, or nil.
func (c *Config) Bucket(id string) *Bucket {
	for i := range c.Buckets {
		if c.Buckets[i].ID == id {
			return &c.Buckets[i]
		}
	}
	return nil
}

// SlogLevel returns LogLevel as a slog.Level (info if unknown).
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Host returns the host part of Address ("" if Address is malformed).
func (b *Bucket) Host() string {
	h, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return ""
	}
	return h
}

// Redacted returns a deep copy of c with its secrets (the Redis password
// and every route's password hash) replaced by "<redacted>", for logging
// the effective configuration.
func (c *Config) Redacted() *Config {
	r := *c
	r.ClientEncryption = append([]Encryption(nil), c.ClientEncryption...)
	r.Buckets = append([]Bucket(nil), c.Buckets...)
	r.Routes = append([]Route(nil), c.Routes...)
	if r.Redis.Password != "" {
		r.Redis.Password = redacted
	}
	for i := range r.Routes {
		if r.Routes[i].PasswordHash != "" {
			r.Routes[i].PasswordHash = redacted
		}
	}
	return &r
}

const redacted = "<redacted>"
