package limiter

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/redisconn"
)

// Defaults of RedisOptions.
const (
	// DefaultRedisOpTimeout bounds each Redis call (config redis.op_timeout).
	DefaultRedisOpTimeout = 500 * time.Millisecond
	// DefaultRedisPollInterval is how often a connected limiter re-reads max
	// (through the client-side cache), the counts and the live instances,
	// and retries its waiters: the safety net under pub/sub wake-ups and
	// cache invalidations, and the health check when idle.
	DefaultRedisPollInterval = time.Second
	// DefaultReplicaHold is RedisOptions.ReplicaHold: longer than a
	// Sentinel failover takes from the promotion to the clients following
	// the new primary (the old primary, its replica promoted, reports 0
	// replicas meanwhile; its grants must still be refused).
	DefaultReplicaHold = 10 * time.Second
	// DefaultRedisProbeInterval is how often a limiter in fallback tries Redis.
	DefaultRedisProbeInterval = 250 * time.Millisecond
	// DefaultRedisSettleTime is how long a limiter stays reconciling (on its
	// local share) after Redis answers again, so every live instance can
	// reconcile before any takes slots from Redis.
	DefaultRedisSettleTime = 2 * time.Second
	// DefaultRedisHeartbeatTTL is the heartbeat TTL the reconcile script
	// writes when it registers the instance (config redis.heartbeat_ttl).
	DefaultRedisHeartbeatTTL = 30 * time.Second
	// DefaultPeerProbeInterval is how often an instance in fallback (lease
	// lost, lease_loss close) asks every peer whether its lease is lost
	// too (a full outage), and so how soon it sheds back once one is not.
	DefaultPeerProbeInterval = time.Second
	// DefaultPeerProbeTimeout bounds one round of peer probes: a peer that
	// has not answered by then counts as "not confirmed".
	DefaultPeerProbeTimeout = 500 * time.Millisecond
	// peerShedAllowance is the time allowed, in the settle-time argument
	// (doc.go, "Partitions and full outages"), between a probe round's end
	// and the grown sessions being closed.
	peerShedAllowance = 250 * time.Millisecond
	// deferRetry is how soon an instance whose try was deferred to a longer
	// queue elsewhere tries again, in case that instance does not take the
	// slot after all.
	deferRetry = 5 * time.Millisecond
	// cacheTTL bounds how long a client-side cached max or route lives
	// without an invalidation (Redis invalidates it on change anyway).
	cacheTTL = time.Minute
)

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// Addr, Password and DB locate Redis (config redis.addr, password, db).
	Addr     string
	Password string
	DB       int
	// InstanceID names this instance in the keys (config instance_id).
	InstanceID string
	// OpTimeout bounds every Redis call. Default DefaultRedisOpTimeout.
	OpTimeout time.Duration
	// HeartbeatTTL is the TTL of the heartbeat the reconcile script writes.
	// Default DefaultRedisHeartbeatTTL.
	HeartbeatTTL time.Duration
	// FallbackDivisor divides each max into the local share while Redis is
	// down. 0: the live instances last seen (at least 1).
	FallbackDivisor int
	// PollInterval, ProbeInterval, SettleTime: see the Default* constants.
	PollInterval  time.Duration
	ProbeInterval time.Duration
	SettleTime    time.Duration
	// Log receives the state changes ("fallback", "reconciled"); default slog.Default().
	Log *slog.Logger
	// OnStateChange, if set, is called after each state transition (for
	// metrics), never with a lock held.
	OnStateChange func(from, to RedisState)
	// OnOp, if set, is called after each script call with its name
	// ("acquire", "release", "reconcile") and error (for metrics). It must
	// be quick and safe for concurrent use.
	OnOp func(op string, err error)

	// Username is the ACL user (config redis.username).
	Username string
	// TLSConfig, if set, encrypts the connections to Redis and to the
	// sentinels (config redis.tls).
	TLSConfig *tls.Config
	// SentinelMasterSet and SentinelAddrs find the primary through Redis
	// Sentinel (config redis.sentinel); Addr is then unused.
	SentinelMasterSet string
	SentinelAddrs     []string

	// WaitReplicas, if > 0, confirms every granted acquire with WAIT on
	// the acquire's connection (config redis.wait_replicas): a grant fewer
	// than min(WaitReplicas, the replicas seen) replicas acknowledged
	// within the op timeout is given back and not admitted on (see
	// redis_confirm.go). 0: no WAIT (no extra round trip). The config
	// default is 1 with Sentinel, 0 otherwise; a RedisOptions built in
	// code gets what it sets.
	WaitReplicas int
	// ReplicaHold is how long a drop in the replicas seen (a replica down)
	// is ignored before fewer acknowledgements are required.
	// Default DefaultReplicaHold.
	ReplicaHold time.Duration

	// Client, if set, is the Redis client to use (the app's one owner of
	// it; see package redisconn): Addr, Username, Password, DB, TLSConfig
	// and the sentinel options are then unused, and Disconnect leaves it
	// open. nil: the limiter builds and owns one.
	Client *redisconn.Conn

	// Incarnation is this process's random token (coord.NewIncarnation when
	// empty): it tells this process's lease from any other's.
	Incarnation string
	// LeaseLossKeep keeps the sessions over the fallback share when the
	// lease is lost (config redis.lease_loss: keep); false closes them
	// through Shed (close, the default). See doc.go.
	LeaseLossKeep bool
	// Shed, with lease_loss close, is asked to close sessions of bucket
	// until no more than keep of this instance's slots of it are in use.
	// It returns how many it closed. nil: nothing can be closed.
	Shed func(bucket string, keep int) int
	// ExpectedInstances is N for the fallback share of an instance that
	// has never reached Redis (config redis.expected_instances); 0 with
	// FallbackDivisor 0 refuses such logins (CodeNoShare).
	ExpectedInstances int
	// ReclaimAfter is how long a reaper keeps every slot of an instance
	// whose lease expired (it may be frozen or cut off) before it gives
	// back those above its fallback share. Default: HeartbeatTTL.
	ReclaimAfter time.Duration
	// ForgetAfter is how long a reaper keeps a parked instance's fallback
	// share counted before it forgets the instance (config
	// redis.forget_after). With lease_loss close, an instance whose lease
	// is still lost at its end + ReclaimAfter + ForgetAfter closes every
	// session (unless every peer confirmed a full outage), since nothing
	// then counts them any more. Default: config.DefaultForgetAfter.
	ForgetAfter time.Duration
	// LeaseMargin is subtracted from the lease's end, on this instance's
	// monotonic clock, for clock drift and the time to act.
	// Default: DefaultLeaseMargin(HeartbeatTTL, OpTimeout).
	LeaseMargin time.Duration
	// HeartbeatInterval is the registry's renewal interval (config
	// redis.heartbeat_interval): the peers' leases end within about one
	// interval of each other, so a fallen-back instance waits that much
	// more before it may grow (see PeerAddr). Default: HeartbeatTTL / 6.
	HeartbeatInterval time.Duration

	// PeerAddr is the host:port at which the other instances reach this
	// one's GET /peer/lease (config redis.peer_address; the health
	// listener): it is advertised in Redis (proxy:peers) at each register.
	// "" advertises nothing: no peer can then confirm a full outage, and
	// none grows past what Redis counts for it (lease_loss close).
	PeerAddr string
	// ProbePeer asks peer id at addr whether its lease is lost too
	// (GET /peer/lease): lost true only on an answer from that instance
	// saying "lost"; view is the digest of its view of the instances
	// (PeerLease.View), which must equal ours. nil: peers cannot be asked (an instance with peers
	// then never grows in fallback). See doc.go, "Partitions and full
	// outages".
	ProbePeer func(ctx context.Context, id, addr string) (lost bool, view string, err error)
	// PeerProbeInterval and PeerProbeTimeout: see the Default* constants.
	// With ProbePeer set, SettleTime is raised to at least PeerProbeInterval
	// + PeerProbeTimeout + 250 ms (the settle-time argument of doc.go).
	PeerProbeInterval time.Duration
	PeerProbeTimeout  time.Duration
	// SlotLinger keeps a slot released while nobody waits warm on this
	// instance for this long (config redis.slot_linger, whose default is
	// DefaultSlotLinger): still counted in Redis, it goes to the next
	// local acquire of its bucket with no Redis round trip. See
	// redis_linger.go. 0: off, every release runs the release script.
	SlotLinger time.Duration
}

// DefaultLeaseMargin is the default LeaseMargin: config.LeaseMargin.
func DefaultLeaseMargin(ttl, opTimeout time.Duration) time.Duration {
	return config.LeaseMargin(ttl, opTimeout)
}

func (o *RedisOptions) setDefaults() {
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultRedisOpTimeout
	}
	if o.HeartbeatTTL <= 0 {
		o.HeartbeatTTL = DefaultRedisHeartbeatTTL
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultRedisPollInterval
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultRedisProbeInterval
	}
	if o.SettleTime < 0 {
		o.SettleTime = 0
	} else if o.SettleTime == 0 {
		o.SettleTime = DefaultRedisSettleTime
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Incarnation == "" {
		o.Incarnation = coord.NewIncarnation()
	}
	if o.ReclaimAfter <= 0 {
		o.ReclaimAfter = o.HeartbeatTTL
	}
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = config.DefaultForgetAfter
	}
	if o.LeaseMargin <= 0 {
		o.LeaseMargin = DefaultLeaseMargin(o.HeartbeatTTL, o.OpTimeout)
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = o.HeartbeatTTL / 6
	}
	if o.ReplicaHold <= 0 {
		o.ReplicaHold = DefaultReplicaHold
	}
	if o.PeerProbeInterval <= 0 {
		o.PeerProbeInterval = DefaultPeerProbeInterval
	}
	if o.PeerProbeTimeout <= 0 {
		o.PeerProbeTimeout = DefaultPeerProbeTimeout
	}
	if o.ProbePeer != nil {
		// A grown instance must be back within what Redis counts for it
		// before a peer that returned to Redis admits past its register
		// grant (doc.go, "Partitions and full outages").
		o.SettleTime = max(o.SettleTime, MinSettleTime(o.PeerProbeInterval, o.PeerProbeTimeout))
	}
}

// MinSettleTime is the shortest SettleTime that keeps a grown instance's
// shedding ahead of a returning peer's admissions: one probe interval (the
// next round starts), one probe timeout (the round ends), and an allowance
// for closing the sessions.
func MinSettleTime(probeInterval, probeTimeout time.Duration) time.Duration {
	return probeInterval + probeTimeout + peerShedAllowance
}

// Redis is the Limiter whose caps are shared by every instance through
// Redis (the layout in pkg/coord/keys.go): each bucket's Queue (FIFO within this
// instance) draws from a SlotSource whose TryTake runs the acquire script
// and whose Give runs the release script. Waiters wake on a release
// anywhere (pub/sub from the release script), on a change of max (client-
// side cache invalidation), and on a slow poll as a safety net. When Redis
// does not answer, it keeps admitting on a local share and reconciles when
// Redis is back; see RedisState for the state machine.
type Redis struct {
	o         RedisOptions
	opts      options
	log       *slog.Logger
	client    rueidis.Client
	ownClient bool // built by NewRedis: Disconnect closes it

	// mu is held shared by each acquire and release for the length of its
	// Redis call (or local update), and exclusively by every state
	// transition and reconcile, which therefore see no operation half done.
	mu            sync.RWMutex
	state         atomic.Int32 // RedisState; written with mu held exclusively
	everConnected atomic.Bool  // written with mu held exclusively
	fallbackSince time.Time    // guarded by mu
	settleUntil   time.Time    // supervisor goroutine only
	// regFresh: the last register found this incarnation unlisted (Redis
	// lost it: restarted empty, or reaped). Guarded by mu.
	regFresh bool

	// The lease (doc.go, "Leases and fencing"). keyID is the id in the
	// keys: the configured one, or coord.SiblingID when another live process
	// held it. leaseSent is when the last successful renewal was sent, on
	// the monotonic clock (ns since epoch; 0: never). leaseOK is false from
	// the moment the lease is known lost until the register script ran.
	keyID     atomic.Pointer[string]
	epoch     time.Time
	start     time.Time // NewRedis, on the limiter's clock (unreachedGrowAt)
	leaseSent atomic.Int64
	leaseOK   atomic.Bool
	runID     string // run_id of the Redis last polled; supervisor goroutine only
	// adoptRunID: the next run_id polled is the server this instance just
	// registered on (it left fallback): record it, re-assert nothing.
	// Supervisor goroutine only.
	adoptRunID bool
	// rank is this id's index among the sorted ids of proxy:instances ∪
	// proxy:fenced as last seen (-1: not seen); live is their number.
	rank atomic.Int64

	bmu     sync.Mutex // serializes Update and Close
	buckets atomic.Pointer[map[string]*redisBucket]
	retired map[string]*redisBucket // removed by Update while slots were held; guarded by bmu

	live atomic.Int64 // ids in proxy:instances ∪ proxy:fenced, last seen
	// peers are those ids but ours, as last seen, with the address each
	// advertised for /peer/lease ("" none); grown: in fallback, every peer
	// confirmed its lease is lost too, so the shares are the exact ones
	// (lease_loss close; see redis_peers.go).
	peers atomic.Pointer[map[string]string]
	view  atomic.Pointer[string] // digest of the view (redis_peers.go)
	grown atomic.Bool
	// seen: each id of the view and when it was last read in Redis; addrs
	// its last advertised /peer/lease address. Guarded by viewMu.
	// peerHeld: what each peer of the view was seen holding (redis_absent.go).
	viewMu   sync.Mutex
	seen     map[string]time.Time
	addrs    map[string]string
	peerHeld map[string]map[string]heldSeen
	// lastIDs: proxy:instances ∪ proxy:fenced as last read, and when.
	lastIDs   []string
	lastIDsAt time.Time
	// regEpoch is the register epoch of the last successful register: releases
	// carry it, so one delivered late, after a re-register, is ignored.
	regEpoch   atomic.Int64
	fallbacks  atomic.Uint64
	reconciles atomic.Uint64
	resync     atomic.Bool // a release found Redis short of a slot, or a new server: reconcile
	newServer  atomic.Bool // the resync is for a new run_id: settle after it
	kick       chan struct{}

	// redisSuspect: a connection to Redis dropped and no poll has since
	// seen this instance registered on the same server: no slot linger.
	redisSuspect atomic.Bool
	// replicas: see redis_confirm.go.
	replicas replicaView

	closed atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ Limiter = (*Redis)(nil)

// redisBucket is one bucket's view of Redis: the SlotSource of its Queue.
type redisBucket struct {
	l    *Redis
	id   string
	seed atomic.Int64 // max_connections from the config: seeds an absent max
	max  atomic.Int64 // max as last seen in Redis (the seed until then)
	held atomic.Int64 // slots this instance holds (tickets out)
	// count is the bucket's count as last seen in Redis; countSeen says it
	// was seen at all.
	count     atomic.Int64
	countSeen atomic.Bool
	share     atomic.Int64 // local cap while not connected, fixed at fallback entry
	// exact is the instance's exact share of max, fixed at fallback entry;
	// counted is what Redis counts for it as last confirmed (held minus
	// uncounted when it left Redis, lowered by each release in doubt).
	// With lease_loss close, share is min(exact, counted) unless a full
	// outage is confirmed (grown: share = exact).
	exact   atomic.Int64
	counted atomic.Int64
	// uncounted are held slots Redis does not count: they did not fit
	// when the instance re-registered (lease_loss keep, or close while the
	// sessions are being closed). Releases consume them first, without
	// Redis; the poll tries to acquire them.
	uncounted atomic.Int64
	pushMax   atomic.Bool  // a reload changed max_connections: write it to Redis
	told      atomic.Int64 // reconciling: slots the last reconcile wrote for us
	q         *Queue
	wake      chan struct{} // buffered 1: ask the bucket's waker to retry the queue
	sync      chan struct{} // buffered 1: ask the waker to refresh our waiting entry
	listed    atomic.Bool   // we may have an entry in the bucket's waiting zset
	stop      context.CancelFunc

	// The slot linger (redis_linger.go): warm slots are held (in held)
	// with no ticket. othersWait: another instance's clients wait for the
	// bucket, as a script or the poll last saw it; pressureAt: the last
	// proxy:pressure signal from another instance (unix ns).
	warm       warmPool
	warmN      atomic.Int64 // len(warm.at), read without its lock
	othersWait atomic.Bool
	pressureAt atomic.Int64
}

// NewRedis connects to Redis, registers the instance (reconcile script:
// holding nothing), seeds each bucket's max if absent, and starts the
// background loops: supervisor (poll, fallback probe, reconcile), pub/sub
// subscriber, and one waker per bucket. If Redis does not answer it starts
// in fallback rather than failing: the proxy serves on its local share and
// reconciles when Redis appears. It fails only on bad options.
func NewRedis(o RedisOptions, buckets []BucketConfig, opts ...Option) (*Redis, error) {
	o.setDefaults()
	if o.Client == nil && o.Addr == "" && o.SentinelMasterSet == "" {
		return nil, errors.New("limiter: redis address or sentinel master set required")
	}
	if o.InstanceID == "" {
		return nil, errors.New("limiter: instance id required")
	}
	l := &Redis{o: o, opts: buildOptions(opts), log: o.Log, retired: map[string]*redisBucket{}, kick: make(chan struct{}, 1)}
	l.epoch = l.opts.clock.Now().Add(-time.Second) // leaseSent 0 means "never renewed"
	l.start = l.opts.clock.Now()
	id := o.InstanceID
	l.keyID.Store(&id)
	l.rank.Store(-1)
	l.opts.obs = waitObserver{Observer: l.opts.obs, l: l}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	m := map[string]*redisBucket{}
	l.buckets.Store(&m)
	l.state.Store(int32(StateFallback))
	conn := o.Client
	if conn == nil {
		c, err := redisconn.New(redisconn.Options{Addr: o.Addr, SentinelMasterSet: o.SentinelMasterSet, SentinelAddrs: o.SentinelAddrs,
			Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLSConfig, ClientName: "tdsgate-" + o.InstanceID, OpTimeout: o.OpTimeout})
		if err != nil {
			return nil, err
		}
		conn, l.ownClient = c, true
	}
	conn.SetOnInvalidations(l.onInvalidations)
	l.client = conn
	var err error
	l.Update(buckets)

	// First contact: register holding nothing. With nothing held there is
	// nothing to settle, so success means connected at once.
	l.mu.Lock()
	if err == nil {
		err = l.reconcileLocked()
	}
	if err == nil {
		l.everConnected.Store(true)
		l.state.Store(int32(StateConnected))
		l.mu.Unlock()
		l.log.Info("redis: connected, instance registered and reconciled", "addr", o.Addr, "sentinel_master_set", o.SentinelMasterSet,
			"instance_id", l.InstanceID(), "incarnation", o.Incarnation)
	} else {
		l.fallbackSince = time.Now()
		shares := l.fixSharesLocked()
		l.fallbacks.Add(1)
		l.mu.Unlock()
		if l.unreachedDivisor() == 0 {
			l.log.Warn("fallback: redis unreachable at start; refusing logins (TDS error 50011) until it is reached once, "+
				"since the number of instances sharing each cap is unknown (set redis.expected_instances to admit on a share)",
				"addr", o.Addr, "sentinel_master_set", o.SentinelMasterSet, "err", err)
		} else {
			l.log.Warn("fallback: redis unreachable at start, admitting on the local share", "addr", o.Addr, "err", err,
				"divisor", l.divisor(), "shares", formatShares(shares))
		}
		if o.OnStateChange != nil {
			o.OnStateChange(0, StateFallback)
		}
	}
	l.wg.Add(4)
	go l.supervise()
	go l.subscribe()
	go l.watchLease()
	go l.watchPeers()
	return l, nil
}

// Client is the limiter's Redis client, for the registry and the route
// directory. It stays open until Disconnect.
func (l *Redis) Client() rueidis.Client { return l.client }

// InstanceID is the instance's id in the keys: the configured id, or
// coord.SiblingID(id, incarnation) when another live process held it.
func (l *Redis) InstanceID() string { return *l.keyID.Load() }

// Incarnation is this process's random token.
func (l *Redis) Incarnation() string { return l.o.Incarnation }

// Lease is the id and incarnation the registry renews.
func (l *Redis) Lease() (id, incarnation string) { return l.InstanceID(), l.o.Incarnation }

// LeaseRenewed records a successful renewal sent at sent (read from the
// limiter's Clock, WithClock): the lease now runs to sent + HeartbeatTTL -
// LeaseMargin on that clock.
func (l *Redis) LeaseRenewed(sent time.Time) {
	ns := int64(sent.Sub(l.epoch))
	for {
		cur := l.leaseSent.Load()
		if ns <= cur || l.leaseSent.CompareAndSwap(cur, ns) {
			return
		}
	}
}

// LeaseDeadline is when this instance's lease ends by its own clock (zero:
// never held).
func (l *Redis) LeaseDeadline() time.Time {
	ns := l.leaseSent.Load()
	if ns == 0 {
		return time.Time{}
	}
	return l.epoch.Add(time.Duration(ns) + l.o.HeartbeatTTL - l.o.LeaseMargin)
}

// State is the limiter's current state.
func (l *Redis) State() RedisState { return RedisState(l.state.Load()) }

// InFallback reports whether admission runs on the local share (Redis
// unreachable, or back but not yet settled).
func (l *Redis) InFallback() bool { return l.State() != StateConnected }

// Fallbacks counts the entries into fallback since start.
func (l *Redis) Fallbacks() uint64 { return l.fallbacks.Load() }

// Reconciles counts the returns from fallback to connected.
func (l *Redis) Reconciles() uint64 { return l.reconciles.Load() }

// LiveInstances is the size of proxy:instances as last seen (0: never seen).
func (l *Redis) LiveInstances() int { return int(l.live.Load()) }

// ReportUnregistered tells the limiter that Redis no longer lists this
// instance (the registry's heartbeat found it absent): Redis's counts
// lack what this instance holds, so it goes to fallback and reconciles,
// which registers it again with its slots.
func (l *Redis) ReportUnregistered() {
	l.leaseOK.Store(false)
	l.toFallback("heartbeat", "", errUnregistered)
}

// Acquire takes a slot in bucket; see Limiter.
func (l *Redis) Acquire(ctx context.Context, bucket string) (Ticket, error) {
	if l.closed.Load() {
		l.opts.obs.Rejected(bucket, CodeClosed)
		return nil, &Error{Code: CodeClosed, Bucket: bucket}
	}
	b := (*l.buckets.Load())[bucket]
	if b == nil {
		l.opts.obs.Rejected(bucket, CodeUnknownBucket)
		return nil, &Error{Code: CodeUnknownBucket, Bucket: bucket}
	}
	if !l.everConnected.Load() && l.unreachedDivisor() == 0 {
		l.opts.obs.Rejected(bucket, CodeNoShare)
		return nil, &Error{Code: CodeNoShare, Bucket: bucket, Max: int(b.max.Load())}
	}
	return b.q.Acquire(ctx)
}

// Snapshot reports every configured bucket, sorted by id. Max is the cap
// as last seen in Redis; InUse is the slots this instance's tickets hold
// (warm slots not included; the bucket's total is RedisStatus's Count).
func (l *Redis) Snapshot() []BucketStats {
	m := *l.buckets.Load()
	out := make([]BucketStats, 0, len(m))
	for _, b := range m {
		qs := b.q.Stats()
		out = append(out, BucketStats{Bucket: b.id, Max: int(b.max.Load()), InUse: int(b.held.Load() - b.warmN.Load()),
			Queued: qs.Queued, MaxQueue: qs.MaxQueue, QueueTimeout: qs.QueueTimeout})
	}
	slices.SortFunc(out, func(a, b BucketStats) int { return strings.Compare(a.Bucket, b.Bucket) })
	return out
}

// RedisBucketStatus is a bucket as the Redis limiter sees it.
type RedisBucketStatus struct {
	Bucket string
	Max    int64 // as last seen in Redis
	Count  int64 // all instances' slots, as last seen (-1: never seen)
	Held   int64 // this instance's slots (its hash in Redis), warm ones included
	Warm   int64 // of which warm: released, lingering (SlotLinger), no ticket
	Share  int64 // local cap while not connected
	// Exact is this instance's exact share of max (fixed at the last
	// fallback entry): with lease_loss close, Share grows to it only while
	// every peer confirms a full outage.
	Exact int64
	// Uncounted are held slots Redis does not count: they did not fit
	// under max when this instance re-registered (lease_loss keep, or
	// close while their sessions are being closed). The backend may exceed
	// max by at most this many; it shrinks as they end or as room frees.
	Uncounted int64
}

// Status reports the state and every bucket's figures, sorted by id.
func (l *Redis) Status() (RedisState, []RedisBucketStatus) {
	m := *l.buckets.Load()
	out := make([]RedisBucketStatus, 0, len(m))
	for _, b := range m {
		c := int64(-1)
		if b.countSeen.Load() {
			c = b.count.Load()
		}
		out = append(out, RedisBucketStatus{Bucket: b.id, Max: b.max.Load(), Count: c, Held: b.held.Load(), Warm: b.warmN.Load(), Share: b.share.Load(),
			Exact: b.exact.Load(), Uncounted: b.uncounted.Load()})
	}
	slices.SortFunc(out, func(a, b RedisBucketStatus) int { return strings.Compare(a.Bucket, b.Bucket) })
	return l.State(), out
}

// Update applies a reloaded bucket list, as Local.Update does. A changed
// max_connections only changes the seed: once max exists in Redis it is
// the shared truth, changed with SET proxy:bucket:<id>:max.
func (l *Redis) Update(buckets []BucketConfig) {
	// A removed bucket's warm slots go back once bmu is released (giving
	// back takes mu, which reconcile holds while it takes bmu).
	var gone []*redisBucket
	defer func() {
		for _, b := range gone {
			b.flushWarm(false)
		}
	}()
	l.bmu.Lock()
	defer l.bmu.Unlock()
	old := *l.buckets.Load()
	next := make(map[string]*redisBucket, len(buckets))
	for _, c := range buckets {
		seed := int64(max(c.MaxConnections, 0))
		b := old[c.ID]
		if b == nil {
			if b = l.retired[c.ID]; b != nil {
				delete(l.retired, c.ID)
				if !l.closed.Load() {
					b.q.reopen()
					l.startWaker(b)
				}
			}
		}
		if b == nil {
			b = &redisBucket{l: l, id: c.ID, wake: make(chan struct{}, 1), sync: make(chan struct{}, 1)}
			b.seed.Store(seed)
			b.max.Store(seed)
			b.told.Store(-1)
			b.share.Store(fallbackShare(seed, 0, 0, l.divisor(), -1, false))
			b.q = newQueue(c.ID, b, c.MaxQueueSize, c.QueueTimeout, l.opts)
			if l.closed.Load() {
				b.q.Close()
			} else {
				l.startWaker(b)
			}
		} else {
			if prev := b.seed.Swap(seed); prev != seed && l.client != nil {
				l.log.Info("config: max_connections changed by a reload; writing it to redis (config wins on reload)",
					"bucket", c.ID, "from", prev, "to", seed, "redis_key", coord.KeyMax(c.ID), "redis_max", b.max.Load())
				b.pushMax.Store(true)
			}
			b.q.SetLimits(c.MaxQueueSize, c.QueueTimeout)
		}
		next[c.ID] = b
	}
	for id, b := range old {
		if next[id] == nil {
			b.q.close(CodeUnknownBucket)
			if b.stop != nil {
				b.stop()
			}
			l.retired[id] = b
			gone = append(gone, b)
		}
	}
	for id, b := range l.retired {
		if b.held.Load() == 0 {
			delete(l.retired, id)
		}
	}
	l.buckets.Store(&next)
	l.kickSupervisor()
}

// Close refuses every waiter and later Acquire with CodeClosed and stops the
// background loops. Held tickets stay valid: their release still runs the
// release script (the client stays open until Disconnect). It returns nil.
func (l *Redis) Close() error {
	l.bmu.Lock()
	if l.closed.Swap(true) {
		l.bmu.Unlock()
		return nil
	}
	for _, b := range *l.buckets.Load() {
		b.q.Close()
	}
	l.bmu.Unlock()
	l.cancel()
	l.wg.Wait()
	// Warm slots go back now, and no later release lingers.
	l.closeLinger()
	// Nobody waits here any more: drop our entries in the waiting hashes
	// (best effort; stale entries are ignored after a few polls anyway).
	for _, b := range *l.buckets.Load() {
		b.syncWaiting()
	}
	return nil
}

// Disconnect closes the Redis client: last, after Close and after the
// registry has left.
func (l *Redis) Disconnect() {
	l.Close()
	if l.ownClient {
		l.client.Close()
	}
}

// RouteDirectory looks key up in the optional route directory
// (proxy:route:<key> → bucket id), through the client-side cache: no round
// trip until Redis invalidates the entry. ok is false if there is no entry
// or Redis does not answer.
func (l *Redis) RouteDirectory(ctx context.Context, key string) (bucket string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, l.o.OpTimeout)
	defer cancel()
	s, err := l.client.DoCache(ctx, l.client.B().Get().Key(coord.KeyRoute(key)).Cache(), cacheTTL).ToString()
	if err != nil || s == "" {
		return "", false
	}
	return s, true
}

func (l *Redis) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), l.o.OpTimeout)
}

// divisor is N of the fallback shares: the configured fallback_divisor,
// or the ids of proxy:instances ∪ proxy:fenced last seen, or, never
// having reached Redis, expected_instances; 0 when none is known (no
// share: refuse).
func (l *Redis) divisor() int {
	if l.o.FallbackDivisor > 0 {
		return l.o.FallbackDivisor
	}
	if n := int(l.live.Load()); n > 0 {
		return n
	}
	return l.unreachedDivisor()
}

// unreachedDivisor is N for an instance that never reached Redis:
// fallback_divisor, else expected_instances; 0 refuses.
func (l *Redis) unreachedDivisor() int {
	if l.o.FallbackDivisor > 0 {
		return l.o.FallbackDivisor
	}
	return l.o.ExpectedInstances
}
