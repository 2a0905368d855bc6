package registry

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/clock"
	"github.com/tdsgate/tdsgate/pkg/coord"
)

// Defaults of Config, the same as the config package's.
const (
	DefaultHeartbeatTTL      = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultReaperInterval    = 10 * time.Second
	DefaultOpTimeout         = 500 * time.Millisecond
	// DefaultForgetAfter is how long a parked instance's fallback share
	// stays counted (config redis.forget_after).
	DefaultForgetAfter = 5 * time.Minute
)

// Config configures a Registry.
type Config struct {
	// Client is the Redis client (the limiter's).
	Client rueidis.Client
	// InstanceID is this instance's id.
	InstanceID string
	// HeartbeatTTL, HeartbeatInterval, ReaperInterval, OpTimeout: the
	// config's redis.* settings; zero takes the Default* constant.
	HeartbeatTTL      time.Duration
	HeartbeatInterval time.Duration
	ReaperInterval    time.Duration
	OpTimeout         time.Duration
	// Log receives "heartbeat" and "reaper" lines; default slog.Default().
	Log *slog.Logger
	// Ready reports whether Redis's counts can be trusted right now (the
	// limiter is connected, not in fallback or reconciling). The reaper
	// skips its round otherwise: an instance that has not yet reconciled
	// after an outage must not be mistaken for a dead one. nil: always.
	Ready func() bool
	// Missing is called when the heartbeat finds this instance's lease
	// lost (expired, fenced by a reaper, or claimed by another
	// incarnation); the limiter then re-registers through the register
	// script, which re-acquires rather than re-adds.
	Missing func()
	// Lease returns the id and incarnation to renew (the limiter's, which
	// may move to a sibling id). nil: InstanceID for both.
	Lease func() (id, incarnation string)
	// Renewed is called with the time a successful renewal was sent: the
	// holder's lease deadline runs from it.
	Renewed func(sent time.Time)
	// ReclaimAfter is how long a fenced instance keeps all its slots
	// counted (config redis.reclaim_after). Default: HeartbeatTTL.
	ReclaimAfter time.Duration
	// ForgetAfter is how long a parked instance keeps its fallback share
	// counted (config redis.forget_after). Default: DefaultForgetAfter.
	ForgetAfter time.Duration
	// Clock times the loops and the renewals' send times (which Renewed
	// reports): the limiter's, so tests can advance both. Default: the
	// real clock.
	Clock clock.Clock
	// OnReclaim is called after this instance reclaimed a dead one.
	OnReclaim func(instance string, slots map[string]int64)
	// OnOp, if set, is called after each script call ("heartbeat",
	// "reclaim") with its error, and OnHeartbeat after each successful
	// heartbeat (for metrics).
	OnOp        func(op string, err error)
	OnHeartbeat func(time.Time)
}

// Registry runs the heartbeat and the reaper of one instance.
type Registry struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu      sync.Mutex
	beating bool // the last heartbeat succeeded
}

// New returns a Registry; Start starts its loops.
func New(cfg Config) (*Registry, error) {
	if cfg.Client == nil || cfg.InstanceID == "" {
		return nil, errors.New("registry: client and instance id required")
	}
	if cfg.HeartbeatTTL <= 0 {
		cfg.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ReaperInterval <= 0 {
		cfg.ReaperInterval = DefaultReaperInterval
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ReclaimAfter <= 0 {
		cfg.ReclaimAfter = cfg.HeartbeatTTL
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = DefaultForgetAfter
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Lease == nil {
		id := cfg.InstanceID
		cfg.Lease = func() (string, string) { return id, id }
	}
	r := &Registry{cfg: cfg, log: cfg.Log}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Start starts the heartbeat and reaper loops.
func (r *Registry) Start() {
	r.log.Info("heartbeat: started", "key", coord.KeyHeartbeat(r.cfg.InstanceID), "ttl", r.cfg.HeartbeatTTL,
		"interval", r.cfg.HeartbeatInterval, "reaper_interval", r.cfg.ReaperInterval)
	r.wg.Add(2)
	go r.loop(r.cfg.HeartbeatInterval, func() { r.Heartbeat(r.ctx) })
	go r.loop(r.cfg.ReaperInterval, func() { r.Reap(r.ctx) })
}

// Stop stops the loops. It does not leave: see Leave.
func (r *Registry) Stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

func (r *Registry) loop(every time.Duration, f func()) {
	defer r.wg.Done()
	t := r.cfg.Clock.NewTimer(every)
	for {
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C():
			f()
			t = r.cfg.Clock.NewTimer(every)
		}
	}
}

func (r *Registry) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.OpTimeout)
}

// Heartbeat renews the lease once, only if it is still this
// incarnation's. It reports whether it was; a lost lease triggers Missing.
func (r *Registry) Heartbeat(ctx context.Context) (bool, error) {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	id, inc := r.cfg.Lease()
	sent := r.cfg.Clock.Now()
	ok, err := coord.RenewLease(ctx, r.cfg.Client, id, inc, r.cfg.HeartbeatTTL)
	r.op("heartbeat", err)
	n := 0
	if ok {
		n = 1
		if r.cfg.Renewed != nil {
			r.cfg.Renewed(sent)
		}
	}
	r.mu.Lock()
	was := r.beating
	r.beating = err == nil && ok
	r.mu.Unlock()
	switch {
	case err != nil:
		if was {
			r.log.Warn("heartbeat: refresh failed", "err", err)
		}
		return false, err
	case n == 0:
		r.log.Warn("heartbeat: lease lost (expired and fenced by a reaper, claimed by another process, or redis restarted empty); re-registering through the register script",
			"instance_id", id, "incarnation", inc)
		if r.cfg.Missing != nil {
			r.cfg.Missing()
		}
		return false, nil
	}
	if r.cfg.OnHeartbeat != nil {
		r.cfg.OnHeartbeat(time.Now())
	}
	if !was {
		r.log.Info("heartbeat: refreshed", "key", coord.KeyHeartbeat(id), "ttl", r.cfg.HeartbeatTTL)
	} else {
		r.log.Debug("heartbeat: refreshed", "ttl", r.cfg.HeartbeatTTL)
	}
	return true, nil
}

func (r *Registry) op(name string, err error) {
	if r.cfg.OnOp != nil {
		r.cfg.OnOp(name, err)
	}
}

// Reclaimed is one dead instance a reaper pass reclaimed.
type Reclaimed struct {
	Instance string
	Slots    map[string]int64 // bucket → slots given back
}

// Reap runs one reaper pass: one step of the reclaim script on every
// member of proxy:instances whose heartbeat is gone (fence it) and on
// every member of proxy:fenced (park it after reclaim_after, forget it
// after forget_after, or at once when a sibling process of the same id is
// live). It does nothing while Ready is false.
func (r *Registry) Reap(ctx context.Context) ([]Reclaimed, error) {
	if r.cfg.Ready != nil && !r.cfg.Ready() {
		return nil, nil
	}
	c := r.cfg.Client
	octx, cancel := r.opCtx(ctx)
	members, err := c.Do(octx, c.B().Sunion().Key(coord.KeyInstances, coord.KeyFenced).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return nil, err
	}
	self, _ := r.cfg.Lease()
	members = slices.DeleteFunc(members, func(m string) bool { return m == self })
	if len(members) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, 0, len(members))
	for _, m := range members {
		cmds = append(cmds, c.B().Exists().Key(coord.KeyHeartbeat(m)).Build())
	}
	octx, cancel = r.opCtx(ctx)
	res := c.DoMulti(octx, cmds...)
	cancel()
	var out []Reclaimed
	for i, m := range members {
		n, err := res[i].AsInt64()
		if err != nil {
			return out, err
		}
		if n == 1 {
			continue
		}
		octx, cancel := r.opCtx(ctx)
		st, slots, err := coord.ReapInstance(octx, c, m, coord.ReclaimTimes{ReclaimAfter: r.cfg.ReclaimAfter, ForgetAfter: r.cfg.ForgetAfter})
		cancel()
		if !errors.Is(err, coord.ErrInstanceAlive) {
			r.op("reclaim", err)
		}
		if errors.Is(err, coord.ErrInstanceAlive) || (err == nil && st == coord.ReclaimNothing) {
			continue // it came back, another reaper was first, or not yet
		}
		if err != nil {
			return out, err
		}
		var total int64
		for _, k := range slices.Sorted(maps.Keys(slots)) {
			total += slots[k]
		}
		switch st {
		case coord.ReclaimFenced:
			r.log.Warn("reaper: lease expired; instance fenced (out of proxy:instances, its slots stay counted: it may be frozen or cut off from redis)",
				"instance", m, "reclaim_after", r.cfg.ReclaimAfter)
			continue
		case coord.ReclaimParked:
			r.log.Warn("reaper: fenced instance parked: slots above its fallback share given back, its share stays counted until it returns or forget_after",
				"instance", m, "slots", total, "by_bucket", slots, "forget_after", r.cfg.ForgetAfter)
		default:
			r.log.Info("reaper: reclaimed instance", "dead_instance", m, "slots", total, "by_bucket", slots)
		}
		if r.cfg.OnReclaim != nil {
			r.cfg.OnReclaim(m, slots)
		}
		out = append(out, Reclaimed{Instance: m, Slots: slots})
	}
	return out, nil
}

// Leave gives back every slot this instance still holds in Redis, deletes
// its keys and removes it from proxy:instances at once. Call it on a clean
// shutdown after the sessions drained and the loops stopped.
func (r *Registry) Leave(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	id, inc := r.cfg.Lease()
	slots, _, err := coord.LeaveInstance(ctx, r.cfg.Client, id, inc)
	if err != nil {
		r.log.Warn("registry: could not leave redis; a reaper will reclaim this instance after its heartbeat lapses",
			"err", err, "heartbeat_ttl", r.cfg.HeartbeatTTL)
		return nil, err
	}
	r.log.Info("registry: left redis: slots given back, keys deleted, removed from proxy:instances", "slots", slots)
	return slots, nil
}

// Live returns the members of proxy:instances.
func Live(ctx context.Context, c rueidis.Client) ([]string, error) {
	return c.Do(ctx, c.B().Smembers().Key(coord.KeyInstances).Build()).AsStrSlice()
}
