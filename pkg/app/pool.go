package app

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/pool"
)

// pressureInterval is how often buckets with clients queued here signal
// pressure again (locally and to the other instances), for as long as
// they wait: idle connections that appear meanwhile do not keep slots
// from them.
const pressureInterval = 250 * time.Millisecond

// pools is the instance's session pools, one per bucket with pool_mode
// session, and the pressure that sheds their idle connections when
// clients wait for a slot, here or on another instance.
type pools struct {
	byBucket atomic.Pointer[map[string]*pool.Pool] // read from limiter and Redis callbacks
	targets  map[string]*backend.Target            // the target each pool's connections go to; under App.mu
	pressure pool.Pressure
	stop     chan struct{}
	wg       sync.WaitGroup
}

func (a *App) pool(bucket string) *pool.Pool {
	if m := a.pools.byBucket.Load(); m != nil {
		return (*m)[bucket]
	}
	return nil
}

// syncPools gives every pool_mode session or transaction bucket its pool: the one it had
// while its backend stays the same (with the reloaded settings), a new one
// otherwise. Pools no longer wanted are shut down: their idle connections
// close now, busy ones when their clients leave. A bucket whose pool
// changes gets a new frontend.Bucket (sessions under way keep theirs).
func (a *App) syncPools(cfg *config.Config, buckets map[string]*frontend.Bucket) {
	var old map[string]*pool.Pool
	if m := a.pools.byBucket.Load(); m != nil {
		old = *m
	}
	if a.pools.targets == nil {
		a.pools.targets = map[string]*backend.Target{}
	}
	next := map[string]*pool.Pool{}
	var obs pool.Observer
	if cfg.MetricsListen != "" {
		obs = a.obs.metrics
	}
	for i := range cfg.Buckets {
		b := &cfg.Buckets[i]
		fb := buckets[b.ID]
		var p *pool.Pool
		mode := pool.ModeNone
		if b.PoolMode == config.PoolModeSession || b.PoolMode == config.PoolModeTransaction {
			mode = pool.Mode(b.PoolMode)
			st := pool.Settings{MinIdle: b.MinIdle, MaxIdle: b.MaxIdle, IdleTimeout: b.IdleTimeout, MaxLifetime: b.MaxLifetime, ResetTimeout: b.ResetTimeout,
				CloseWait: pool.DefaultCloseWait}
			if p = old[b.ID]; p != nil && a.pools.targets[b.ID] == fb.Target {
				p.SetSettings(st)
			} else {
				p = pool.New(b.ID, st, a.log, obs)
				a.pools.targets[b.ID] = fb.Target
			}
			next[b.ID] = p
		}
		if fb.Pool != p || fb.Mode != mode {
			nb := *fb
			nb.Pool, nb.Mode = p, mode
			buckets[b.ID] = &nb
		}
	}
	for id, p := range old {
		if next[id] != p {
			p.Shutdown()
			if next[id] == nil {
				delete(a.pools.targets, id)
			}
		}
	}
	a.pools.byBucket.Store(&next)
}

// pressureObserver is the limiter observer that turns a client joining a
// bucket's queue into pressure on that bucket's idle connections.
func (a *App) pressureObserver() limiter.Observer {
	return limiter.ObserverFuncs{OnEnqueued: func(bucket string, _ int) { a.clientsWait(bucket) }}
}

// clientsWait: clients of this instance wait for a slot of bucket. Its
// idle connections here close down to min_idle, and the other instances
// are told to do the same.
func (a *App) clientsWait(bucket string) {
	if p := a.pool(bucket); p != nil {
		p.Pressure()
	}
	if pr := a.pools.pressure; pr != nil {
		pr.Publish(bucket)
	}
}

// startPressure starts the pressure of this instance: Redis pub/sub with
// a Redis limiter (signals go both ways), nothing to tell otherwise; and
// the ticker that repeats the signal while clients stay queued.
func (a *App) startPressure() {
	if rl := a.RedisLimiter(); rl != nil {
		// The publisher's name carries the incarnation: two processes with
		// one instance_id (a same-host restart) must not ignore each other.
		a.pools.pressure = pool.NewRedisPressure(rl.Client(), a.cfg.InstanceID+"@"+rl.Incarnation(), a.cfg.Redis.OpTimeout, a.log, func(bucket string) {
			if p := a.pool(bucket); p != nil {
				p.Pressure()
			}
		})
	} else {
		a.pools.pressure = pool.NopPressure{}
	}
	a.pools.stop = make(chan struct{})
	a.pools.wg.Add(1)
	go func() {
		defer a.pools.wg.Done()
		t := time.NewTicker(pressureInterval)
		defer t.Stop()
		for {
			select {
			case <-a.pools.stop:
				return
			case <-t.C:
			}
			for _, s := range a.lim.Snapshot() {
				if s.Queued > 0 {
					a.clientsWait(s.Bucket)
				}
			}
		}
	}()
}

// stopPools, after the drain: stop the pressure, then close every pool's
// idle connections, releasing their slots.
func (a *App) stopPools() {
	if a.pools.stop != nil {
		close(a.pools.stop)
		a.pools.wg.Wait()
		a.pools.stop = nil
	}
	if a.pools.pressure != nil {
		a.pools.pressure.Close()
	}
	if m := a.pools.byBucket.Load(); m != nil {
		for _, p := range *m {
			p.Shutdown()
		}
	}
}
