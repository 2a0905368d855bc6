package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Defaults of Options.
const (
	// DefaultOpTimeout bounds dials and writes (config redis.op_timeout).
	DefaultOpTimeout = 500 * time.Millisecond
	// DefaultRetryEvery spaces the attempts to build a Sentinel client
	// while no sentinel answers.
	DefaultRetryEvery = 250 * time.Millisecond
	// DefaultTopologyRefresh is how often a Sentinel client asks the
	// sentinels for the primary, in case a +switch-master event was missed.
	DefaultTopologyRefresh = time.Second
)

// ErrNotConnected is the error of every command of a Sentinel client that
// has not yet reached a sentinel.
var ErrNotConnected = errors.New("redis: no sentinel reached yet")

// Options locate Redis.
type Options struct {
	// Addr is host:port of a standalone Redis (unused with a master set).
	Addr string
	// SentinelMasterSet and SentinelAddrs find the primary through Redis
	// Sentinel.
	SentinelMasterSet string
	SentinelAddrs     []string
	// Username (ACL), Password and DB log in; TLS, if set, encrypts the
	// connections to Redis and to the sentinels.
	Username string
	Password string
	DB       int
	TLS      *tls.Config
	// ClientName is CLIENT SETNAME (redis-cli CLIENT LIST shows it).
	ClientName string
	// OpTimeout bounds dials and writes. Default DefaultOpTimeout.
	OpTimeout time.Duration
	// RetryEvery: see DefaultRetryEvery.
	RetryEvery time.Duration
}

// Conn is the owned client: a rueidis.Client.
type Conn struct {
	rueidis.Client
	onInval atomic.Pointer[func([]rueidis.RedisMessage)]
}

// SetOnInvalidations routes client-side cache invalidations to f (nil:
// dropped). f runs on rueidis' reader goroutine and must not block.
func (c *Conn) SetOnInvalidations(f func([]rueidis.RedisMessage)) { c.onInval.Store(&f) }

func (c *Conn) invalidated(ms []rueidis.RedisMessage) {
	if f := c.onInval.Load(); f != nil && *f != nil {
		(*f)(ms)
	}
}

// ClientOption is the rueidis option of o; onInval receives invalidations.
func ClientOption(o Options, onInval func([]rueidis.RedisMessage)) rueidis.ClientOption {
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	co := rueidis.ClientOption{
		InitAddress:       []string{o.Addr},
		Username:          o.Username,
		Password:          o.Password,
		SelectDB:          o.DB,
		ClientName:        o.ClientName,
		TLSConfig:         o.TLS,
		ForceSingleClient: true, // a client even when Redis is down at start
		DisableRetry:      true, // a failed call means fallback, not a retry past op_timeout
		Dialer:            net.Dialer{Timeout: o.OpTimeout, KeepAlive: time.Second},
		ConnWriteTimeout:  max(2*o.OpTimeout, time.Second),
		OnInvalidations:   onInval,
	}
	if o.SentinelMasterSet != "" {
		co.InitAddress = append([]string(nil), o.SentinelAddrs...)
		co.ForceSingleClient = false
		co.Sentinel = rueidis.SentinelOption{
			MasterSet: o.SentinelMasterSet,
			Dialer:    co.Dialer,
			TLSConfig: o.TLS,
			Username:  o.Username,
			Password:  o.Password,
			// Follow a failover even if a +switch-master event was missed.
			TopologyRefreshInterval: DefaultTopologyRefresh,
		}
	}
	return co
}

// New builds the client. It fails only on bad options, never because
// Redis or the sentinels are down.
func New(o Options) (*Conn, error) {
	if o.Addr == "" && o.SentinelMasterSet == "" {
		return nil, errors.New("redisconn: redis.addr or redis.sentinel.master_set required")
	}
	if o.RetryEvery <= 0 {
		o.RetryEvery = DefaultRetryEvery
	}
	c := &Conn{}
	co := ClientOption(o, c.invalidated)
	if o.SentinelMasterSet == "" {
		cl, err := rueidis.NewClient(co)
		if cl == nil {
			return nil, err
		}
		c.Client = cl
		return c, nil
	}
	cl, err := rueidis.NewClient(co)
	if err == nil {
		c.Client = cl
		return c, nil
	}
	// No sentinel answers: build it later. Commands need a builder now:
	// a single client (never used for commands) provides one.
	bo := co
	bo.Sentinel = rueidis.SentinelOption{}
	bo.ForceSingleClient = true
	bo.InitAddress = co.InitAddress[:1]
	bo.OnInvalidations = nil
	b, berr := rueidis.NewClient(bo)
	if b == nil {
		return nil, errors.Join(err, berr)
	}
	c.Client = &lazy{opt: co, every: o.RetryEvery, builder: b, first: err}
	return c, nil
}

// lazy is a Sentinel client built on first use once a sentinel answers.
type lazy struct {
	opt     rueidis.ClientOption
	every   time.Duration
	builder rueidis.Client
	first   error

	inner   atomic.Pointer[rueidis.Client]
	mu      sync.Mutex // held while building
	lastTry time.Time  // guarded by mu
	closed  bool       // guarded by mu
}

func (l *lazy) get() (rueidis.Client, error) {
	if p := l.inner.Load(); p != nil {
		return *p, nil
	}
	if !l.mu.TryLock() {
		return nil, ErrNotConnected
	}
	defer l.mu.Unlock()
	if p := l.inner.Load(); p != nil {
		return *p, nil
	}
	if l.closed {
		return nil, rueidis.ErrClosing
	}
	if time.Since(l.lastTry) < l.every {
		return nil, ErrNotConnected
	}
	l.lastTry = time.Now()
	cl, err := rueidis.NewClient(l.opt)
	if err != nil {
		return nil, errors.Join(ErrNotConnected, err)
	}
	l.inner.Store(&cl)
	return cl, nil
}

func (l *lazy) B() rueidis.Builder { return l.builder.B() }

func (l *lazy) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c, err := l.get()
	if err != nil {
		return rueidis.NewErrorResult(err)
	}
	return c.Do(ctx, cmd)
}

func (l *lazy) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	c, err := l.get()
	if err != nil {
		return errResults(len(multi), err)
	}
	return c.DoMulti(ctx, multi...)
}

func (l *lazy) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	c, err := l.get()
	if err != nil {
		return rueidis.NewErrorResult(err)
	}
	return c.DoCache(ctx, cmd, ttl)
}

func (l *lazy) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	c, err := l.get()
	if err != nil {
		return errResults(len(multi), err)
	}
	return c.DoMultiCache(ctx, multi...)
}

func (l *lazy) DoStream(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResultStream {
	c, err := l.get()
	if err != nil {
		return rueidis.NewErrorResultStream(err)
	}
	return c.DoStream(ctx, cmd)
}

func (l *lazy) DoMultiStream(ctx context.Context, multi ...rueidis.Completed) rueidis.MultiRedisResultStream {
	c, err := l.get()
	if err != nil {
		return rueidis.NewErrorResultStream(err)
	}
	return c.DoMultiStream(ctx, multi...)
}

func (l *lazy) Receive(ctx context.Context, subscribe rueidis.Completed, fn func(msg rueidis.PubSubMessage)) error {
	c, err := l.get()
	if err != nil {
		return err
	}
	return c.Receive(ctx, subscribe, fn)
}

func (l *lazy) Dedicated(fn func(rueidis.DedicatedClient) error) error {
	c, err := l.get()
	if err != nil {
		return err
	}
	return c.Dedicated(fn)
}

func (l *lazy) Dedicate() (rueidis.DedicatedClient, func()) {
	c, err := l.get()
	if err != nil {
		panic("redisconn: Dedicate before a sentinel answered: " + err.Error())
	}
	return c.Dedicate()
}

func (l *lazy) Nodes() map[string]rueidis.Client {
	if c, err := l.get(); err == nil {
		return c.Nodes()
	}
	return map[string]rueidis.Client{}
}

func (l *lazy) Mode() rueidis.ClientMode { return rueidis.ClientModeSentinel }

func (l *lazy) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if p := l.inner.Load(); p != nil {
		(*p).Close()
	}
	l.builder.Close()
}

func errResults(n int, err error) []rueidis.RedisResult {
	out := make([]rueidis.RedisResult, n)
	for i := range out {
		out[i] = rueidis.NewErrorResult(err)
	}
	return out
}
