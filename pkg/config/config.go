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
	// DefaultMaxClientConnections is the default of
	// Config.MaxClientConnections: derived from RLIMIT_NOFILE.
	DefaultMaxClientConnections = 0
	// DefaultMaxPendingPerSource is the default of
	// Config.MaxPendingPerSource.
	DefaultMaxPendingPerSource = 128
	// DefaultClientIdleTimeout is the default of Config.ClientIdleTimeout:
	// off.
	DefaultClientIdleTimeout = time.Duration(0)
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
	// DefaultAdminListen is the default of Config.AdminListen: loopback
	// only, so a fresh install needs no token for the admin API.
	DefaultAdminListen = "127.0.0.1:9092"
	// DefaultEBPFEnabled is the default of EBPF.Enabled: on, wherever the
	// tracker can load.
	DefaultEBPFEnabled = true
	// DefaultRelay is the default of Config.Relay: splice, until the
	// sockmap relay is measured to win (see the README's "Relay modes").
	DefaultRelay = RelaySplice
	// DefaultHeaderWalk is the default of Config.HeaderWalk: the kernel
	// walks the headers wherever its socket filter loads.
	DefaultHeaderWalk = HeaderWalkKernel
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
	// DefaultLeaseLoss is the default of Redis.LeaseLoss: close the
	// sessions over the fallback share when the lease is lost, so the cap
	// holds exactly (keep would let it overshoot until they end).
	DefaultLeaseLoss = LeaseLossClose
	// DefaultExpectedInstances is the default of Redis.ExpectedInstances:
	// 0, refuse logins until Redis was first reached (a new instance
	// cannot know how many others share the cap).
	DefaultExpectedInstances = 0
	// DefaultWaitReplicasSentinel is redis.wait_replicas when it is absent
	// and Redis is reached through Sentinel: each grant is confirmed by one
	// replica (without Sentinel the default is 0: no WAIT).
	DefaultWaitReplicasSentinel = 1
	// DefaultSlotLinger is the default of Redis.SlotLinger: 100 ms. 20 ms
	// was tried first: on a loaded host the scheduling stalls of the proxy
	// and its clients are longer than that, and a warm slot expires in the
	// stall only to be acquired again right after (on a 2-core machine at
	// load 25, 0.5 script calls per login remained at 20 ms, 0.1 at 100 ms).
	// A longer linger costs nothing to anyone waiting: a wait anywhere
	// sends the warm slots back at once.
	DefaultSlotLinger = 100 * time.Millisecond
	// DefaultForgetAfter is the default of Redis.ForgetAfter.
	DefaultForgetAfter = 5 * time.Minute
	// DefaultRedisTLSEnabled is the default of RedisTLS.Enabled.
	DefaultRedisTLSEnabled = false
)

// LeaseLoss is what an instance does with the sessions open when its
// Redis lease (heartbeat) runs out: see Redis.LeaseLoss.
type LeaseLoss string

// The lease-loss policies.
const (
	// LeaseLossClose closes the sessions over the instance's fallback
	// share before its lease ends, so no other instance can be granted
	// their slots while they run: the cap holds exactly.
	LeaseLossClose LeaseLoss = "close"
	// LeaseLossKeep keeps every session. While the lease is lost other
	// instances may be granted the slots these sessions hold: the backend
	// may see up to max + (this instance's holdings - its share) sessions
	// until they end or Redis is reached again.
	LeaseLossKeep LeaseLoss = "keep"
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
	// PoolModeTransaction: client sessions hold no backend connection
	// between requests. Each request (SQLBatch, RPC, TM, bulk load)
	// borrows an idle connection of its sub-pool (same key as session),
	// or opens one if the bucket has a free slot, or waits in the bucket's
	// queue up to queue_timeout (then that request alone gets 50004). The
	// connection goes back at the end of the answer, unless a transaction
	// is open (ENVCHANGE 8 until 9/10/17) or the session is pinned: it
	// changed session state (SET options other than the replayable ones,
	// USE, #temp tables, prepared statements and cursors, EXECUTE AS,
	// application roles, session context, application locks, MARS, a
	// distributed transaction). Replayable SET options (ANSI_*,
	// ARITHABORT, CONCAT_NULL_YIELDS_NULL, DATEFORMAT, DATEFIRST,
	// LANGUAGE, LOCK_TIMEOUT, NOCOUNT, QUOTED_IDENTIFIER, TEXTSIZE,
	// TRANSACTION ISOLATION LEVEL, XACT_ABORT) are replayed after
	// RESETCONNECTION on a connection another session used last. A client
	// gets its login answer from the sub-pool once its password verifies;
	// any other password logs in at the server, which decides.
	PoolModeTransaction PoolMode = "transaction"
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

// HeaderWalkMode is how a pooled session's relay finds the server's
// packet headers in a run it splices (Config.HeaderWalk).
type HeaderWalkMode string

// Header walk modes.
const (
	// HeaderWalkKernel: a BPF socket filter on the backend socket walks
	// the headers as segments arrive; the relay splices the run unpeeked.
	HeaderWalkKernel HeaderWalkMode = "kernel"
	// HeaderWalkPeek: the relay peeks each run (recv MSG_PEEK) to walk it.
	HeaderWalkPeek HeaderWalkMode = "peek"
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

	// ProxyProtocol is the PROXY protocol v2 setting: off, or on with the
	// list of peers trusted to send the header. See [ProxyProtocol].
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`

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

	// MaxClientConnections caps the client connections this process
	// holds at once, logged in or not; one more is closed at accept
	// (before PRELOGIN no client can read an error). 0 derives the cap
	// from RLIMIT_NOFILE: (soft limit - 256) / 2, since each session
	// needs a client and a backend descriptor. -1: no cap. Read at start.
	// Default: DefaultMaxClientConnections.
	MaxClientConnections int `yaml:"max_client_connections"`

	// MaxPendingPerSource caps, per client source address, the
	// connections that have not yet presented their login (accepted, but
	// PRELOGIN, TLS or LOGIN7 not yet read); one more is closed at once.
	// Behind a load balancer without the PROXY protocol every client has
	// the balancer's address: raise it or set 0 (no cap). Reloadable.
	// Default: DefaultMaxPendingPerSource.
	MaxPendingPerSource int `yaml:"max_pending_per_source"`

	// ClientIdleTimeout closes a logged-in client session after this long
	// with no bytes in either direction on the client's socket, the last
	// ones the server's (a client waiting for a long query is not idle),
	// releasing its slot (or returning its pooled backend connection to
	// the pool). 0 turns it off. Reloadable.
	// Default: DefaultClientIdleTimeout (off).
	ClientIdleTimeout time.Duration `yaml:"client_idle_timeout"`

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

	// Pprof serves Go's net/http/pprof under /debug/pprof/ on
	// metrics_listen (behind admin_auth like /metrics): profiles, and a
	// forced GC with /debug/pprof/heap?gc=1 (the benchmark harness reads
	// idle memory after one). Read at start, like metrics_listen.
	// Default: false.
	Pprof bool `yaml:"pprof"`
	// AdminListen is the address of the admin API (/admin/…: buckets,
	// sessions, pools, instances, kill, pause, resume, drain, reload; the
	// `proxy admin` command talks to it). An explicit empty string
	// disables it. A non-loopback address requires admin_auth.token_file:
	// the API can kill sessions and stop admissions. Default:
	// DefaultAdminListen. Env: ADMIN_ADDR.
	AdminListen string `yaml:"admin_listen"`

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

	// HeaderWalk is how the relay of a pooled session (pool_mode session,
	// plaintext legs) finds the headers of the server's
	// packets in a run of bytes it splices, which it must see to know
	// where answers end: HeaderWalkKernel (a BPF socket filter on the
	// backend socket follows them as segments arrive, so the run is
	// spliced without being copied; needs CAP_BPF, and where it cannot
	// load the proxy logs one warning and peeks) or HeaderWalkPeek (the
	// relay peeks the run: one copy of every byte). The kernel's walk stops
	// for the rest of a session at any doubt (a gap in the sequence, a
	// header it refuses), and the relay then peeks.
	// Default: DefaultHeaderWalk. Env: HEADER_WALK.
	HeaderWalk HeaderWalkMode `yaml:"header_walk"`

	// Buckets are the SQL Servers behind the proxy, each with its own
	// connection cap and queue. At least one is required.
	Buckets []Bucket `yaml:"buckets"`

	// Routes map a login to a bucket; the first rule that matches wins.
	Routes []Route `yaml:"routes"`

	// DefaultBucket, if set, takes every login no route matches. Without
	// it such a login is refused. It must name a bucket.
	DefaultBucket string `yaml:"default_bucket"`

	// CredentialRoutes bounds the cost of credential routes (PBKDF2
	// iterations, failed attempts per source address).
	CredentialRoutes CredentialRoutes `yaml:"credential_routes"`

	// AdminAuth protects /metrics and /health's detail. Off by default.
	AdminAuth AdminAuth `yaml:"admin_auth"`

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
	// SelfSignedFile, without CertFile/KeyFile, keeps the generated
	// self-signed certificate (and its key, one PEM file, mode 0600) at
	// this path: loaded at start if present, generated and written there
	// otherwise, so that it survives restarts and clients can pin it.
	// Default "": a new certificate at every start.
	SelfSignedFile string `yaml:"self_signed_file"`
	// WatchInterval is how often CertFile and KeyFile are checked for a
	// change (modification time and size); a changed pair is loaded and
	// new TLS handshakes use it (SIGHUP reloads it too). A pair that does
	// not load is logged and the running certificate kept. 0: no watch.
	// Default: DefaultTLSWatchInterval.
	WatchInterval time.Duration `yaml:"watch_interval"`
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
	// FallbackDivisor, if > 0, is the N of the fallback share (instance i
	// of N ranked by id holds at most floor(max/N) + (1 if i < max mod N)
	// while Redis is unreachable), instead of the number of live instances
	// last seen in Redis. Set it to at least the number of instances, or
	// the shares sum above max. Default 0 (the instances last seen).
	FallbackDivisor int `yaml:"fallback_divisor"`
	// OpTimeout bounds each Redis operation; past it the instance falls
	// back to its local share. Default: DefaultOpTimeout.
	OpTimeout time.Duration `yaml:"op_timeout"`

	// Username is the ACL user (Redis 6+); empty: the default user, with
	// Password alone. Env: REDIS_USERNAME.
	Username string `yaml:"username"`
	// TLS encrypts the connection to Redis (and to the sentinels).
	TLS RedisTLS `yaml:"tls"`
	// Sentinel, with a master set, finds the primary through Redis
	// Sentinel and follows its failovers. Addr must then be empty.
	Sentinel RedisSentinel `yaml:"sentinel"`
	// WaitReplicas confirms each granted acquire with WAIT on the
	// acquire's connection: a grant fewer than min(wait_replicas, the
	// replicas the primary was seen with) replicas acknowledged within
	// op_timeout is given back and not admitted on (the instance falls
	// back), so a Sentinel failover cannot lose a grant and grant the slot
	// twice. A replica that goes down is believed only after it has been
	// missing for 10 s (limiter.DefaultReplicaHold): until then acquires
	// fail their WAIT and the instance admits on its fallback share; after
	// that it waits for the replicas left. A replica in a full sync counts
	// (Sentinel would promote it with its old data): acquires fail until
	// it is online (repl-diskless-sync-delay, 5 s by default, plus the
	// transfer), after a restart or a failover too. Costs a round trip per
	// grant.
	// nil (absent): DefaultWaitReplicasSentinel with Sentinel, 0 (no WAIT)
	// otherwise; see WaitReplicasN.
	WaitReplicas *int `yaml:"wait_replicas"`

	// LeaseLoss is the policy for the sessions open when this instance's
	// lease ends (its heartbeat could not be renewed in time, or another
	// instance reclaimed it): close (default) or keep. See LeaseLossClose
	// and LeaseLossKeep. Default: DefaultLeaseLoss (also when empty, in a
	// Config built in code).
	LeaseLoss LeaseLoss `yaml:"lease_loss"`
	// ExpectedInstances is the number of instances assumed when this one
	// has never reached Redis and so never saw the others: its fallback
	// share is then floor(max / ExpectedInstances) — with lease_loss
	// close from its start + heartbeat_ttl + reclaim_after +
	// heartbeat_interval on, once the instances that lost Redis before
	// it have shed to their own shares. 0 refuses logins (TDS error
	// 50011) until Redis was reached once.
	// Default: DefaultExpectedInstances.
	ExpectedInstances int `yaml:"expected_instances"`
	// ReclaimAfter is how long the reaper keeps every slot of an instance
	// whose lease expired counted (it may only be frozen, or cut off from
	// Redis, with its sessions open) before it gives back the slots above
	// that instance's fallback share. A freeze or partition shorter than
	// heartbeat_ttl + reclaim_after never lets the cap be exceeded.
	// 0 (default): heartbeat_ttl.
	ReclaimAfter time.Duration `yaml:"reclaim_after"`
	// ForgetAfter is how long the reaper then keeps that fallback share
	// counted, before it forgets the instance entirely. An instance that
	// restarts with the same instance_id gives it back at once.
	// Default: DefaultForgetAfter.
	ForgetAfter time.Duration `yaml:"forget_after"`
	// PeerAddress is the host:port at which the other instances reach this
	// one's GET /peer/lease (served on health_listen). It is advertised in
	// Redis (proxy:peers) at each register. With lease_loss close, an
	// instance that lost Redis admits only what Redis counts for it, and
	// grows to its full fallback share only when every instance it last
	// saw answers there that its own lease is lost too (a full outage, not
	// a partition of this one). Default: health_listen when its host is
	// not a wildcard (0.0.0.0, ::, empty); otherwise none, and then no
	// peer can confirm an outage for this instance: its peers never grow
	// (exact, less available). See PeerAddr.
	PeerAddress string `yaml:"peer_address"`
	// SlotLinger is how long a slot released with nobody waiting stays
	// warm on this instance: still counted in Redis (the cap is
	// unchanged), it goes to the next local login of its bucket with no
	// Redis round trip. It goes back to Redis at once when clients wait
	// for the bucket anywhere (here, or on another instance: the waiting
	// hash, proxy:pressure), when the linger ends unused, on shutdown and
	// when Redis or the lease is lost. 0 turns it off: every release runs
	// the release script. Default: DefaultSlotLinger.
	SlotLinger time.Duration `yaml:"slot_linger"`
}

// PeerAddr is the /peer/lease address this instance advertises:
// redis.peer_address, or health_listen when it names a host (not a
// wildcard) and a port other than 0; "" when there is none.
func (c *Config) PeerAddr() string {
	if c.Redis.PeerAddress != "" {
		return c.Redis.PeerAddress
	}
	host, port, err := net.SplitHostPort(c.HealthListen)
	if err != nil || port == "0" || port == "" {
		return ""
	}
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		return ""
	}
	return c.HealthListen
}

// LeaseMargin is subtracted from the end of an instance's Redis lease, on
// its own monotonic clock, for clock drift and the time to act (notice the
// deadline, close sessions): a tenth of the heartbeat TTL, at least 100 ms
// and twice the op timeout, at most half the TTL. The heartbeat must be
// renewed (interval + op_timeout) within TTL minus this margin.
func LeaseMargin(ttl, opTimeout time.Duration) time.Duration {
	return min(max(ttl/10, 100*time.Millisecond, 2*opTimeout), ttl/2)
}

// WaitReplicasN is redis.wait_replicas, defaulted: the value set, else
// DefaultWaitReplicasSentinel with Sentinel, else 0.
func (r *Redis) WaitReplicasN() int {
	if r.WaitReplicas != nil {
		return *r.WaitReplicas
	}
	if r.Sentinel.MasterSet != "" {
		return DefaultWaitReplicasSentinel
	}
	return 0
}

// Enabled reports whether Redis coordinates this instance: an address or
// a Sentinel master set is configured.
func (r *Redis) Enabled() bool { return r.Addr != "" || r.Sentinel.MasterSet != "" }

// RedisTLS configures TLS to Redis. It is on when Enabled is true or
// CAFile is set.
type RedisTLS struct {
	// Enabled turns TLS on with the system's CA pool (when CAFile is
	// empty). Default: DefaultRedisTLSEnabled.
	Enabled bool `yaml:"enabled"`
	// CAFile is the PEM of the CA that signed Redis' certificate. Setting
	// it turns TLS on.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key, for a
	// Redis with tls-auth-clients. Set both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name verified in Redis' certificate. Default: the
	// host of the address dialled.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate: tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS to Redis is on.
func (t *RedisTLS) On() bool { return t.Enabled || t.CAFile != "" }

// RedisSentinel names the Sentinel deployment that monitors the primary.
type RedisSentinel struct {
	// MasterSet is the name the sentinels monitor the primary under.
	MasterSet string `yaml:"master_set"`
	// Addrs are host:port of the sentinels; at least one with MasterSet.
	Addrs []string `yaml:"addrs"`
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

	// PoolMode is none (each client its own backend login), session
	// (backend connections are reused, one client at a time) or
	// transaction (many client sessions share few backend connections, one
	// request or transaction at a time; see PoolModeTransaction). The
	// other pool settings apply to session and transaction. Default:
	// DefaultPoolMode; "" (a config built in code) means none.
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
	r.Redis.Sentinel.Addrs = append([]string(nil), c.Redis.Sentinel.Addrs...)
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
