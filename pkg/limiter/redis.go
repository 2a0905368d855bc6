package limiter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/coord"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

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
	// DefaultRedisProbeInterval is how often a limiter in fallback tries Redis.
	DefaultRedisProbeInterval = 250 * time.Millisecond
	// DefaultRedisSettleTime is how long a limiter stays reconciling (on its
	// local share) after Redis answers again, so every live instance can
	// reconcile before any takes slots from Redis.
	DefaultRedisSettleTime = 2 * time.Second
	// DefaultRedisHeartbeatTTL is the heartbeat TTL the reconcile script
	// writes when it registers the instance (config redis.heartbeat_ttl).
	DefaultRedisHeartbeatTTL = 30 * time.Second
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
	// LeaseMargin is subtracted from the lease's end, on this instance's
	// monotonic clock, for clock drift and the time to act.
	// Default: DefaultLeaseMargin(HeartbeatTTL, OpTimeout).
	LeaseMargin time.Duration
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
	if o.LeaseMargin <= 0 {
		o.LeaseMargin = DefaultLeaseMargin(o.HeartbeatTTL, o.OpTimeout)
	}
}

// Redis is the Limiter whose caps are shared by every instance through
// Redis (DESIGN.md section 3): each bucket's Queue (FIFO within this
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

	// The lease (doc.go, "Leases and fencing"). keyID is the id in the
	// keys: the configured one, or coord.SiblingID when another live process
	// held it. leaseSent is when the last successful renewal was sent, on
	// the monotonic clock (ns since epoch; 0: never). leaseOK is false from
	// the moment the lease is known lost until the register script ran.
	keyID     atomic.Pointer[string]
	epoch     time.Time
	leaseSent atomic.Int64
	leaseOK   atomic.Bool
	runID     string // run_id of the Redis last polled; supervisor goroutine only
	// rank is this id's index among the sorted ids of proxy:instances ∪
	// proxy:fenced as last seen (-1: not seen); live is their number.
	rank atomic.Int64

	bmu     sync.Mutex // serializes Update and Close
	buckets atomic.Pointer[map[string]*redisBucket]
	retired map[string]*redisBucket // removed by Update while slots were held; guarded by bmu

	live       atomic.Int64 // ids in proxy:instances ∪ proxy:fenced, last seen
	fallbacks  atomic.Uint64
	reconciles atomic.Uint64
	resync     atomic.Bool // a release found Redis short of a slot: reconcile
	kick       chan struct{}

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
			l.log.Warn("fallback: redis unreachable at start; refusing logins (TDS error 50010) until it is reached once, "+
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
	l.wg.Add(3)
	go l.supervise()
	go l.subscribe()
	go l.watchLease()
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
// as last seen in Redis; InUse is the slots this instance holds (the
// bucket's total is RedisStatus's Count).
func (l *Redis) Snapshot() []BucketStats {
	m := *l.buckets.Load()
	out := make([]BucketStats, 0, len(m))
	for _, b := range m {
		qs := b.q.Stats()
		out = append(out, BucketStats{Bucket: b.id, Max: int(b.max.Load()), InUse: int(b.held.Load()),
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
	Held   int64 // this instance's slots
	Share  int64 // local cap while not connected
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
		out = append(out, RedisBucketStatus{Bucket: b.id, Max: b.max.Load(), Count: c, Held: b.held.Load(), Share: b.share.Load(),
			Uncounted: b.uncounted.Load()})
	}
	slices.SortFunc(out, func(a, b RedisBucketStatus) int { return strings.Compare(a.Bucket, b.Bucket) })
	return l.State(), out
}

// Update applies a reloaded bucket list, as Local.Update does. A changed
// max_connections only changes the seed: once max exists in Redis it is
// the shared truth, changed with SET proxy:bucket:<id>:max.
func (l *Redis) Update(buckets []BucketConfig) {
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

// ---- SlotSource ----

// TryTake runs the acquire script while connected; otherwise it takes a
// slot of the local share.
func (b *redisBucket) TryTake() bool {
	l := b.l
	for {
		l.mu.RLock()
		if l.State() != StateConnected {
			ok := b.takeLocal()
			l.mu.RUnlock()
			return ok
		}
		queued := int(b.q.n.Load()) // the clients in our list, the one we try for included
		ctx, cancel := l.opCtx()
		r, err := coord.AcquireSlotFair(ctx, l.client, l.InstanceID(), b.id, int(b.seed.Load()), queued, l.staleWaiting())
		cancel()
		l.op("acquire", err)
		if err == nil && r.Status != coord.AcquireUnregistered {
			b.max.Store(r.Max)
			b.count.Store(r.Count)
			b.countSeen.Store(true)
			switch r.Status {
			case coord.AcquireGranted:
				b.held.Add(1)
				b.listed.Store(queued > 1)
			case coord.AcquireDeferred:
				// Another instance's longer queue goes first; if it does not
				// take the slot, ours will shortly.
				b.listed.Store(true)
				time.AfterFunc(deferRetry, b.wakeSoon)
			default:
				b.listed.Store(queued > 0)
			}
			l.mu.RUnlock()
			return r.Status == coord.AcquireGranted
		}
		l.mu.RUnlock()
		if err == nil {
			err = errUnregistered
		}
		// The outcome is unknown (the script may have run): the reconcile
		// on the way back sets Redis to what we really hold.
		l.toFallback("acquire", b.id, err)
	}
}

// takeLocal takes a slot of the local share. Called with l.mu held shared
// and the state not connected.
func (b *redisBucket) takeLocal() bool {
	limit := b.share.Load()
	if b.l.State() == StateReconciling {
		if t := b.told.Load(); t >= 0 {
			limit = min(limit, t)
		}
	}
	for {
		h := b.held.Load()
		if h >= limit {
			return false
		}
		if b.held.CompareAndSwap(h, h+1) {
			return true
		}
	}
}

// Give runs the release script while connected; otherwise it releases
// locally (the reconcile accounts for it later).
func (b *redisBucket) Give() {
	l := b.l
	for {
		l.mu.RLock()
		if l.State() != StateConnected {
			b.held.Add(-1)
			l.mu.RUnlock()
			return
		}
		if u := b.uncounted.Load(); u > 0 && b.uncounted.CompareAndSwap(u, u-1) {
			// A slot Redis does not count (it did not fit at the last
			// register): nothing to give back there.
			b.held.Add(-1)
			l.mu.RUnlock()
			return
		}
		ctx, cancel := l.opCtx()
		released, count, err := coord.ReleaseSlot(ctx, l.client, l.InstanceID(), b.id)
		cancel()
		l.op("release", err)
		if err == nil {
			b.held.Add(-1)
			b.count.Store(count)
			b.countSeen.Store(true)
			l.mu.RUnlock()
			if !released {
				// Redis had no slot of ours to take back: it lost track of
				// us somehow. Make it exact again.
				l.resync.Store(true)
				l.kickSupervisor()
			}
			return
		}
		l.mu.RUnlock()
		l.toFallback("release", b.id, err)
	}
}

// CanHandOff: while connected, never (every release goes back to Redis, so
// a freed slot is offered to every instance's waiters); on the local share,
// while this instance is within it.
func (b *redisBucket) CanHandOff() bool {
	if b.l.State() == StateConnected {
		return false
	}
	return b.held.Load() <= b.share.Load()
}

// Max is the cap as last seen in Redis.
func (b *redisBucket) Max() int { return int(b.max.Load()) }

// wakeSoon asks the bucket's waker to retry its queue (never blocks).
func (b *redisBucket) wakeSoon() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// syncSoon asks the bucket's waker to refresh this instance's entry in the
// bucket's waiting zset (never blocks).
func (b *redisBucket) syncSoon() {
	select {
	case b.sync <- struct{}{}:
	default:
	}
}

// syncWaiting writes this instance's queue length to the bucket's waiting
// zset, or removes the entry when nobody waits. Only while connected.
func (b *redisBucket) syncWaiting() {
	l := b.l
	n := int(b.q.n.Load())
	if n == 0 && !b.listed.Load() {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.State() != StateConnected {
		return
	}
	ctx, cancel := l.opCtx()
	defer cancel()
	if err := coord.SetWaiting(ctx, l.client, l.InstanceID(), b.id, n); err == nil {
		b.listed.Store(n > 0)
	}
}

// staleWaiting is the age past which another instance's waiting entry is
// ignored: it refreshes it at least every poll.
func (l *Redis) staleWaiting() time.Duration { return 3 * l.o.PollInterval }

// waitObserver passes the limiter's events on, and refreshes the waiting
// entry when clients leave a queue without a try (canceled, timed out,
// refused), so other instances do not defer to clients that are gone.
type waitObserver struct {
	Observer
	l *Redis
}

func (o waitObserver) Canceled(bucket string, waited time.Duration) {
	o.Observer.Canceled(bucket, waited)
	o.l.bucketChanged(bucket)
}

func (o waitObserver) Rejected(bucket string, code Code) {
	o.Observer.Rejected(bucket, code)
	if code != CodeQueueFull {
		o.l.bucketChanged(bucket)
	}
}

func (l *Redis) bucketChanged(bucket string) {
	if b := (*l.buckets.Load())[bucket]; b != nil && b.listed.Load() {
		b.syncSoon()
	}
}

func (l *Redis) startWaker(b *redisBucket) {
	ctx, cancel := context.WithCancel(l.ctx)
	b.stop = cancel
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
				if b.q.n.Load() > 0 {
					b.q.Wake()
				}
			case <-b.sync:
				b.syncWaiting()
			}
		}
	}()
}

func (l *Redis) wakeAll() {
	for _, b := range *l.buckets.Load() {
		b.wakeSoon()
	}
}

// ---- state machine ----

// toFallback moves a connected limiter to fallback after a failed call.
func (l *Redis) toFallback(op, bucket string, cause error) {
	l.mu.Lock()
	if l.State() != StateConnected {
		l.mu.Unlock()
		return
	}
	shares := l.fixSharesLocked()
	l.state.Store(int32(StateFallback))
	l.fallbackSince = time.Now()
	l.fallbacks.Add(1)
	l.mu.Unlock()
	l.log.Warn("fallback: redis unreachable, admitting on the local share", "op", op, "bucket", bucket, "err", cause,
		"divisor", l.divisor(), "shares", formatShares(shares))
	l.changed(StateConnected, StateFallback)
	l.kickSupervisor()
}

// fixSharesLocked sets every bucket's local share from what was last seen.
// Called with mu held exclusively.
func (l *Redis) fixSharesLocked() map[string]int64 {
	d := l.divisor()
	rank := int(l.rank.Load())
	if !l.everConnected.Load() {
		rank = -1
	}
	out := map[string]int64{}
	for _, b := range *l.buckets.Load() {
		s := fallbackShare(b.max.Load(), b.count.Load(), b.held.Load(), d, rank, b.countSeen.Load() && l.everConnected.Load())
		b.share.Store(s)
		b.told.Store(-1)
		out[b.id] = s
	}
	return out
}

func (l *Redis) op(name string, err error) {
	if l.o.OnOp != nil {
		l.o.OnOp(name, err)
	}
}

// Ping checks that Redis answers within op_timeout (and ctx).
func (l *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.o.OpTimeout)
	defer cancel()
	return l.client.Do(ctx, l.client.B().Ping().Build()).Error()
}

func (l *Redis) changed(from, to RedisState) {
	if l.o.OnStateChange != nil {
		l.o.OnStateChange(from, to)
	}
}

func (l *Redis) kickSupervisor() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// holdingsLocked lists what this instance holds, every configured bucket
// and every retired one still held.
func (l *Redis) holdingsLocked() []coord.Holding {
	m := *l.buckets.Load()
	hs := make([]coord.Holding, 0, len(m))
	for _, b := range m {
		hs = append(hs, coord.Holding{Bucket: b.id, Held: b.held.Load(), SeedMax: int(b.seed.Load())})
	}
	l.bmu.Lock()
	for id, b := range l.retired {
		if m[id] == nil {
			hs = append(hs, coord.Holding{Bucket: b.id, Held: b.held.Load(), SeedMax: int(b.seed.Load())})
		}
	}
	l.bmu.Unlock()
	return hs
}

// reconcileLocked runs the register script with what we hold: it claims
// our id (or a sibling id, when another live process holds ours), renews
// the lease, lowers what Redis records where we hold less, and
// re-acquires (never past max) where we hold more. Slots that do not fit
// become uncounted; with lease_loss close their sessions are closed at
// once. Called with mu held exclusively (so held does not move under it).
func (l *Redis) reconcileLocked() error {
	hs := l.holdingsLocked()
	ctx, cancel := l.opCtx()
	defer cancel()
	id := l.InstanceID()
	sent := l.opts.clock.Now()
	res, err := coord.RegisterInstance(ctx, l.client, id, l.o.Incarnation, l.o.HeartbeatTTL, hs)
	if errors.Is(err, coord.ErrIDTaken) {
		sib := coord.SiblingID(l.o.InstanceID, l.o.Incarnation)
		if id == sib {
			// Our own sibling id is taken: by us, in another process? Never
			// by chance (16 hex digits); say so and stay in fallback.
			l.op("reconcile", err)
			return fmt.Errorf("instance id %s: %w", id, err)
		}
		l.log.Warn("instance id in use by another live tdsgate process (same instance_id, another incarnation): "+
			"this process registers as a sibling id and never touches the other's slots; give each process its own instance_id",
			"instance_id", l.o.InstanceID, "sibling_id", sib, "incarnation", l.o.Incarnation)
		id = sib
		l.keyID.Store(&sib)
		res, err = coord.RegisterInstance(ctx, l.client, id, l.o.Incarnation, l.o.HeartbeatTTL, hs)
	}
	l.op("reconcile", err)
	if err != nil {
		return err
	}
	l.LeaseRenewed(sent)
	l.leaseOK.Store(true)
	m := *l.buckets.Load()
	held := map[string]int64{}
	for _, h := range hs {
		held[h.Bucket] = h.Held
	}
	for _, r := range res {
		b := m[r.Bucket]
		if b == nil {
			l.bmu.Lock()
			b = l.retired[r.Bucket]
			l.bmu.Unlock()
		}
		if b == nil {
			continue
		}
		b.count.Store(r.Count)
		b.countSeen.Store(true)
		b.max.Store(r.Max)
		over := max(held[r.Bucket]-r.Granted, 0)
		b.uncounted.Store(over)
		if r.Delta != 0 {
			l.log.Info("reconcile: corrected count", "bucket", r.Bucket, "delta", r.Delta, "count", r.Count, "held", held[r.Bucket])
		}
		if over > 0 {
			if l.o.LeaseLossKeep {
				l.log.Warn("reconcile: sessions do not fit under max (lease_loss keep: kept; the backend may exceed max by this many until they end)",
					"bucket", r.Bucket, "held", held[r.Bucket], "counted", r.Granted, "over", over, "max", r.Max)
			} else {
				l.log.Warn("reconcile: sessions do not fit under max; closing them (lease_loss close)",
					"bucket", r.Bucket, "held", held[r.Bucket], "counted", r.Granted, "closing", over, "max", r.Max)
				l.shed(b.id, int(r.Granted))
			}
		}
	}
	return nil
}

// shed asks the app to close sessions of bucket until keep of our slots
// of it are in use.
func (l *Redis) shed(bucket string, keep int) int {
	if l.o.Shed == nil {
		return 0
	}
	n := l.o.Shed(bucket, max(keep, 0))
	if n > 0 {
		l.log.Warn("lease: closed sessions over this instance's share", "bucket", bucket, "closed", n, "keep", keep)
	}
	return n
}

// checkLease, run by the supervisor: past the lease's end (LeaseDeadline)
// a connected limiter goes to fallback, since a reaper may fence it at any
// moment. It returns how long until the deadline (0: none or passed).
func (l *Redis) checkLease() time.Duration {
	dl := l.LeaseDeadline()
	if dl.IsZero() {
		return 0
	}
	now := l.opts.clock.Now()
	if now.Before(dl) {
		return dl.Sub(now)
	}
	if l.State() == StateConnected {
		l.leaseOK.Store(false)
		l.toFallback("lease", "", fmt.Errorf("lease expired: no renewal for %s (heartbeat_ttl %s, margin %s)",
			now.Sub(dl)+l.o.HeartbeatTTL-l.o.LeaseMargin, l.o.HeartbeatTTL, l.o.LeaseMargin))
	}
	return 0
}

// watchLease is the fence, in its own goroutine so that no Redis call
// can delay it: past the lease's end plus ReclaimAfter (when reapers may
// start giving this instance's slots above its share away), with
// lease_loss close, it closes the sessions over the fallback share, and
// keeps doing so every 100 ms until the lease is renewed.
func (l *Redis) watchLease() {
	defer l.wg.Done()
	clk := l.opts.clock
	t := clk.NewTimer(l.o.PollInterval)
	for {
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		t = clk.NewTimer(l.fenceOnce(clk.Now()))
	}
}

// fenceOnce is one round of watchLease; it returns when to look again.
func (l *Redis) fenceOnce(now time.Time) time.Duration {
	const every = 100 * time.Millisecond
	dl := l.LeaseDeadline()
	if dl.IsZero() || l.o.LeaseLossKeep {
		return l.o.PollInterval
	}
	shedAt := dl.Add(l.o.ReclaimAfter)
	if now.Before(shedAt) {
		return min(shedAt.Sub(now), l.o.PollInterval)
	}
	connected := l.State() == StateConnected
	d := l.divisor()
	rank := int(l.rank.Load())
	for _, b := range *l.buckets.Load() {
		share := b.share.Load()
		if connected {
			// The supervisor has not moved to fallback yet (a Redis call
			// holds it up): the share it is about to fix.
			share = fallbackShare(b.max.Load(), b.count.Load(), b.held.Load(), d, rank, b.countSeen.Load())
		}
		if b.held.Load() > share {
			l.shed(b.id, int(share))
		}
	}
	return every
}

// supervise runs the state machine's timed side: poll while connected,
// probe while in fallback, settle and finish while reconciling.
func (l *Redis) supervise() {
	defer l.wg.Done()
	t := time.NewTimer(l.o.PollInterval)
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
			kicked = true
		case <-t.C:
		}
		next := l.o.PollInterval
		switch l.State() {
		case StateConnected:
			if l.resync.Swap(false) {
				l.mu.Lock()
				if l.State() == StateConnected {
					if err := l.reconcileLocked(); err != nil {
						l.mu.Unlock()
						l.toFallback("reconcile", "", err)
						break
					}
				}
				l.mu.Unlock()
			}
			l.poll()
			if kicked {
				// Keep the regular rhythm; a kick only adds a poll.
				continue
			}
		case StateFallback:
			next = l.o.ProbeInterval
			if l.probe() {
				l.beginReconcile()
				next = min(l.o.ProbeInterval, l.o.SettleTime)
			}
		case StateReconciling:
			next = l.o.ProbeInterval
			if now := time.Now(); !now.Before(l.settleUntil) {
				l.finishReconcile()
			} else {
				next = min(next, l.settleUntil.Sub(now))
			}
		}
		if d := l.checkLease(); d > 0 {
			next = min(next, d)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// probe reports whether Redis answers a PING within op_timeout.
func (l *Redis) probe() bool {
	ctx, cancel := l.opCtx()
	defer cancel()
	return l.client.Do(ctx, l.client.B().Ping().Build()).Error() == nil
}

// beginReconcile: fallback → reconciling.
func (l *Redis) beginReconcile() {
	l.mu.Lock()
	if l.State() != StateFallback {
		l.mu.Unlock()
		return
	}
	if err := l.reconcileLocked(); err != nil {
		l.mu.Unlock()
		l.log.Debug("fallback: redis answers PING but the reconcile failed", "err", err)
		return
	}
	for _, b := range *l.buckets.Load() {
		b.told.Store(b.held.Load())
	}
	l.state.Store(int32(StateReconciling))
	l.settleUntil = time.Now().Add(l.o.SettleTime)
	since := l.fallbackSince
	l.mu.Unlock()
	l.log.Info("fallback: redis answers again, reconciling", "in_fallback", time.Since(since).Round(time.Millisecond),
		"settle", l.o.SettleTime)
	l.changed(StateFallback, StateReconciling)
}

// finishReconcile: reconciling → connected (or back to fallback).
func (l *Redis) finishReconcile() {
	l.mu.Lock()
	if l.State() != StateReconciling {
		l.mu.Unlock()
		return
	}
	if err := l.reconcileLocked(); err != nil {
		shares := l.fixSharesLocked()
		l.state.Store(int32(StateFallback))
		l.fallbacks.Add(1)
		l.mu.Unlock()
		l.log.Warn("fallback: redis failed again while reconciling", "err", err, "shares", formatShares(shares))
		l.changed(StateReconciling, StateFallback)
		return
	}
	for _, b := range *l.buckets.Load() {
		b.told.Store(-1)
	}
	l.state.Store(int32(StateConnected))
	l.everConnected.Store(true)
	since := l.fallbackSince
	l.reconciles.Add(1)
	var held []any
	for _, b := range *l.buckets.Load() {
		held = append(held, b.id, b.held.Load())
	}
	l.mu.Unlock()
	l.log.Info("reconciled: redis counts match what this instance holds; left fallback",
		"in_fallback", time.Since(since).Round(time.Millisecond), slog.GroupAttrs("held", toAttrs(held)...))
	l.changed(StateReconciling, StateConnected)
	l.poll()
	l.wakeAll()
}

func toAttrs(kv []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
}

// poll is the connected limiter's safety net and idle health check: it
// checks this instance is still registered, reads the live instances and
// every count, re-reads max through the client-side cache (no round trip
// unless invalidated), seeds an absent max, and retries the queues that
// have waiters and room.
func (l *Redis) poll() {
	m := *l.buckets.Load()
	bs := make([]*redisBucket, 0, len(m))
	for _, b := range m {
		bs = append(bs, b)
	}
	c := l.client
	cmds := make(rueidis.Commands, 0, 2+len(bs))
	cmds = append(cmds, c.B().Sismember().Key(coord.KeyInstances).Member(l.InstanceID()).Build(), c.B().Sunion().Key(coord.KeyInstances, coord.KeyFenced).Build())
	for _, b := range bs {
		cmds = append(cmds, c.B().Get().Key(coord.KeyCount(b.id)).Build())
	}
	cmds = append(cmds, c.B().Info().Section("server").Build())
	cached := make([]rueidis.CacheableTTL, 0, len(bs))
	for _, b := range bs {
		cached = append(cached, rueidis.CT(c.B().Get().Key(coord.KeyMax(b.id)).Cache(), cacheTTL))
	}
	ctx, cancel := l.opCtx()
	defer cancel()
	res := c.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			l.toFallback("poll", "", err)
			return
		}
	}
	if member, _ := res[0].AsBool(); !member {
		l.leaseOK.Store(false)
		l.toFallback("poll", "", errUnregistered)
		return
	}
	if info, err := res[len(res)-1].ToString(); err == nil {
		l.checkRunID(info)
	}
	if ids, err := res[1].AsStrSlice(); err == nil {
		slices.Sort(ids)
		l.live.Store(int64(len(ids)))
		l.rank.Store(int64(slices.Index(ids, l.InstanceID())))
	}
	var maxRes []rueidis.RedisResult
	if len(cached) > 0 {
		maxRes = c.DoMultiCache(ctx, cached...)
	}
	for i, b := range bs {
		if n, err := res[2+i].AsInt64(); err == nil {
			b.count.Store(n)
			b.countSeen.Store(true)
		}
		mr := maxRes[i]
		switch err := mr.Error(); {
		case rueidis.IsRedisNil(err):
			// Absent: seed it (SET NX), as the acquire script would.
			c.Do(ctx, c.B().Set().Key(coord.KeyMax(b.id)).Value(itoa(b.seed.Load())).Nx().Build())
		case err != nil:
			l.toFallback("poll", b.id, err)
			return
		default:
			n, err := mr.AsInt64()
			if err != nil {
				n = 0
			}
			if prev := b.max.Swap(n); prev != n {
				l.log.Info("redis: max changed", "bucket", b.id, "from", prev, "to", n)
			}
		}
		if b.pushMax.Swap(false) {
			// The documented rule: a reload that changes max_connections
			// writes it to Redis (config wins on reload).
			seed := b.seed.Load()
			if err := c.Do(ctx, c.B().Set().Key(coord.KeyMax(b.id)).Value(itoa(seed)).Build()).Error(); err != nil {
				b.pushMax.Store(true)
			} else {
				l.log.Info("config: max_connections changed by a reload; written to redis", "bucket", b.id, "redis_key", coord.KeyMax(b.id), "max", seed)
				b.max.Store(seed)
			}
		}
		l.absorbUncounted(ctx, b)
		if b.q.n.Load() > 0 && b.count.Load() < b.max.Load() {
			b.wakeSoon()
		}
		if b.q.n.Load() > 0 || b.listed.Load() {
			b.syncSoon() // keep our waiting entry fresh (or remove it)
		}
	}
}

// checkRunID notes the run_id of the Redis that answers. A new one (a
// Sentinel failover to a replica, or a restart) may hold counts that are
// stale (replication is asynchronous): this instance re-asserts its
// holdings at once through the register script, so that count = the sum
// of the hashes = the sessions open once every instance has. Supervisor
// goroutine only.
func (l *Redis) checkRunID(info string) {
	_, rest, ok := strings.Cut(info, "run_id:")
	if !ok {
		return
	}
	id, _, _ := strings.Cut(rest, "\r\n")
	id = strings.TrimSpace(id)
	if l.runID != "" && id != l.runID {
		l.log.Warn("redis: a different server answers (failover or restart); re-asserting this instance's holdings",
			"old_run_id", l.runID, "run_id", id)
		l.resync.Store(true)
		l.kickSupervisor()
	}
	l.runID = id
}

// absorbUncounted tries to have Redis count the slots that did not fit at
// the last register (acquire script, never past max), one at a time, so
// that other instances stop being granted them.
func (l *Redis) absorbUncounted(ctx context.Context, b *redisBucket) {
	for b.uncounted.Load() > 0 {
		l.mu.RLock()
		if l.State() != StateConnected {
			l.mu.RUnlock()
			return
		}
		r, err := coord.AcquireSlot(ctx, l.client, l.InstanceID(), b.id, int(b.seed.Load()))
		ok := err == nil && r.Status == coord.AcquireGranted
		if ok {
			if u := b.uncounted.Load(); u > 0 && b.uncounted.CompareAndSwap(u, u-1) {
				l.mu.RUnlock()
				continue
			}
			// Released meanwhile: give the slot back.
			coord.ReleaseSlot(ctx, l.client, l.InstanceID(), b.id)
		}
		l.mu.RUnlock()
		return
	}
}

// onInvalidations is rueidis's client-side cache hook (on its reader
// goroutine: must not block). A changed max triggers a poll at once, which
// re-reads it and wakes waiters if it rose; nil means the connection was
// lost or the cache flushed.
func (l *Redis) onInvalidations(ms []rueidis.RedisMessage) {
	if ms == nil {
		l.kickSupervisor()
		return
	}
	for _, m := range ms {
		if k, err := m.ToString(); err == nil {
			if _, ok := coord.BucketOfMaxKey(k); ok {
				l.kickSupervisor()
				return
			}
		}
	}
}

// subscribe listens to every bucket's release channel and wakes that
// bucket's waiters. After each (re)subscription it wakes every bucket, for
// releases published while it was not listening.
func (l *Redis) subscribe() {
	defer l.wg.Done()
	hook := rueidis.WithOnSubscriptionHook(l.ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "psubscribe" {
			l.wakeAll()
		}
	})
	for {
		err := l.client.Receive(hook, l.client.B().Psubscribe().Pattern(coord.KeyReleasedPattern).Build(), func(msg rueidis.PubSubMessage) {
			if b := (*l.buckets.Load())[msg.Message]; b != nil {
				b.wakeSoon()
			}
		})
		if l.ctx.Err() != nil {
			return
		}
		l.log.Debug("redis: pub/sub subscription ended, resubscribing", "err", err)
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(l.o.ProbeInterval):
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
