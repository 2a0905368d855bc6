package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
)

// Fleet commands (the admin API's ?fleet=1) go out on coord.ChanAdmin;
// each instance runs the command and pushes its answer onto
// coord.KeyAdminAck(request), which lives fleetAckTTL.
const (
	// fleetAckWait bounds how long a fleet command waits for the answers
	// of the instances its PUBLISH reached.
	fleetAckWait = 3 * time.Second
	// fleetAckTTL is how long the answers stay in Redis.
	fleetAckTTL = time.Minute
	// fleetAckPoll is how often the answers are read while waiting.
	fleetAckPoll = 20 * time.Millisecond
)

// console is the App as the admin API sees it (admin.Console).
type console struct{ a *App }

var _ admin.Console = console{}

// fleetCommand is a fleet-wide command as published.
type fleetCommand struct {
	Request string `json:"request"`
	Action  string `json:"action"`
	Bucket  string `json:"bucket"`
	By      string `json:"by"`   // the caller's address at the instance that published
	From    string `json:"from"` // that instance's id
}

// SetReloader sets what POST /admin/reload and SIGHUP reload from (Run
// sets it: the config file; nil: nothing to reload).
func (a *App) SetReloader(f func() (*config.Config, error)) {
	a.mu.Lock()
	a.reloader = f
	a.mu.Unlock()
}

// ReloadFile reloads the config through the reloader and applies it, as
// SIGHUP does; by says who asked ("SIGHUP", or the admin caller's
// address). Errors are reported by YAML path.
func (a *App) ReloadFile(by string) admin.Reload {
	a.mu.Lock()
	f := a.reloader
	a.mu.Unlock()
	if f == nil {
		a.log.Warn("reload: no config file to reload", "by", by)
		return admin.Reload{Errors: []admin.FieldError{{Message: "no config file to reload (the embedded demo config)"}}}
	}
	nc, err := f()
	if err == nil {
		err = a.Reload(nc)
	}
	if err != nil {
		a.log.Error("reload failed, keeping the running config", "by", by, "err", err)
		return admin.Reload{Errors: fieldErrors(err)}
	}
	a.log.Info("reload: done", "by", by)
	return admin.Reload{OK: true, Buckets: len(nc.Buckets), Routes: len(nc.Routes)}
}

// fieldErrors flattens a (joined) config error into its YAML paths.
func fieldErrors(err error) []admin.FieldError {
	var out []admin.FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *config.FieldError
		if errors.As(err, &fe) {
			out = append(out, admin.FieldError{Path: fe.Path, Message: fe.Msg})
			return
		}
		out = append(out, admin.FieldError{Message: err.Error()})
	}
	walk(err)
	return out
}

func (c console) Reload(by string) admin.Reload { return c.a.ReloadFile(by) }

// Buckets answers GET /admin/buckets.
func (c console) Buckets() []admin.Bucket {
	a := c.a
	cfg := a.Config()
	modes := map[string]string{}
	for _, b := range cfg.Buckets {
		modes[b.ID] = string(b.PoolMode)
		if modes[b.ID] == "" {
			modes[b.ID] = string(config.DefaultPoolMode)
		}
	}
	fallback := "standalone"
	status := map[string]limiter.RedisBucketStatus{}
	if rl := a.RedisLimiter(); rl != nil {
		st, bs := rl.Status()
		fallback = st.String()
		for _, b := range bs {
			status[b.Bucket] = b
		}
	}
	rtb := a.handler.Runtime().Buckets
	p, _ := a.lim.(limiter.Pauser)
	var out []admin.Bucket
	for _, s := range a.lim.Snapshot() {
		b := admin.Bucket{Bucket: s.Bucket, Max: int64(s.Max), MaxSource: "config", GlobalCount: int64(s.InUse), Held: int64(s.InUse),
			Queued: s.Queued, PoolMode: modes[s.Bucket], Breaker: "closed", Fallback: fallback}
		if rs, ok := status[s.Bucket]; ok {
			b.GlobalCount = rs.Count
			if rs.Count >= 0 {
				b.MaxSource = "redis"
			}
		}
		if fb := rtb[s.Bucket]; fb != nil && fb.Breaker != nil {
			b.Breaker = fb.Breaker.State().String()
		}
		if pl := a.pool(s.Bucket); pl != nil {
			b.IdlePooled = pl.Stats().Idle
		}
		if p != nil {
			b.Paused = p.Paused(s.Bucket)
		}
		out = append(out, b)
	}
	return out
}

// Sessions answers GET /admin/sessions.
func (c console) Sessions(q admin.SessionQuery) ([]admin.Session, error) {
	st := frontend.SessionState(q.State)
	if st != "" && !slices.Contains(frontend.SessionStates, st) {
		return nil, fmt.Errorf("%w: state %q: want one of %v", admin.ErrBadInput, q.State, frontend.SessionStates)
	}
	ss := c.a.handler.Sessions(frontend.SessionFilter{Bucket: q.Bucket, User: q.User, State: st})
	out := make([]admin.Session, 0, len(ss))
	for _, s := range ss {
		out = append(out, admin.Session{ID: s.ID, Client: s.Client, User: s.User, Database: s.Database, App: s.App,
			Bucket: s.Bucket, State: string(s.State), PinReason: s.PinReason, Start: s.Start.UTC(),
			BytesFromClient: s.BytesFromClient, BytesToClient: s.BytesToClient, RelayMode: s.RelayMode, Encryption: s.Encryption})
	}
	return out, nil
}

// Pools answers GET /admin/pools: every bucket; a bucket without a pool
// shows its sessions' own connections as active.
func (c console) Pools() []admin.Pool {
	a := c.a
	held := map[string]int{}
	for _, s := range a.lim.Snapshot() {
		held[s.Bucket] = s.InUse
	}
	var out []admin.Pool
	for _, b := range a.Config().Buckets {
		mode := string(b.PoolMode)
		if mode == "" {
			mode = string(config.DefaultPoolMode)
		}
		row := admin.Pool{Bucket: b.ID, PoolMode: mode, SubPools: []admin.SubPool{}}
		pl := a.pool(b.ID)
		if pl == nil {
			row.Active = held[b.ID]
			out = append(out, row)
			continue
		}
		st := pl.Stats()
		row.Login, row.Active, row.Resetting, row.Idle = st.Login, st.Active, st.Resetting, st.Idle
		for _, sp := range pl.SubPools() {
			row.SubPools = append(row.SubPools, admin.SubPool{User: sp.User, Database: sp.Database, App: sp.App,
				Login: sp.Login, Active: sp.Active, Resetting: sp.Resetting, Idle: sp.Idle, OldestIdleMS: sp.OldestIdle.Milliseconds()})
		}
		out = append(out, row)
	}
	return out
}

// Kill answers POST /admin/sessions/{id}/kill.
func (c console) Kill(id uint64, by string) (admin.Killed, error) {
	r, err := c.a.handler.Kill(id, by)
	switch {
	case errors.Is(err, frontend.ErrNoSession):
		return admin.Killed{}, fmt.Errorf("%w: no live session %d on this instance", admin.ErrNotFound, id)
	case errors.Is(err, frontend.ErrAlreadyKilled):
		return admin.Killed{}, fmt.Errorf("%w: session %d is already being killed", admin.ErrConflict, id)
	case err != nil:
		return admin.Killed{}, err
	}
	return admin.Killed{ID: r.ID, Bucket: r.Bucket, State: string(r.State), ErrorSent: r.ErrorSent}, nil
}

// Instances answers GET /admin/instances from Redis: every id in
// proxy:instances or proxy:fenced, its heartbeat, incarnation and
// holdings, and every bucket's count.
func (c console) Instances(ctx context.Context) (admin.Instances, error) {
	a := c.a
	if a.redis == nil {
		self := admin.Instance{ID: a.Config().InstanceID, Self: true, Holdings: map[string]int64{}}
		counts := map[string]int64{}
		for _, s := range a.lim.Snapshot() {
			self.Holdings[s.Bucket] = int64(s.InUse)
			counts[s.Bucket] = int64(s.InUse)
		}
		return admin.Instances{Instances: []admin.Instance{self}, Counts: counts}, nil
	}
	rc, me := a.redis.conn, a.redis.lim.InstanceID()
	ttl := a.Config().Redis.HeartbeatTTL
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	do := func(cmd rueidis.Completed) rueidis.RedisResult { return rc.Do(ctx, cmd) }
	live, err := do(rc.B().Smembers().Key(coord.KeyInstances).Build()).AsStrSlice()
	if err != nil {
		return admin.Instances{}, fmt.Errorf("redis: %w", err)
	}
	fenced, err := do(rc.B().Smembers().Key(coord.KeyFenced).Build()).AsStrSlice()
	if err != nil {
		return admin.Instances{}, fmt.Errorf("redis: %w", err)
	}
	ids := append(slices.Clone(live), fenced...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := admin.Instances{Redis: true, Instances: []admin.Instance{}, Counts: map[string]int64{}}
	for _, id := range ids {
		in := admin.Instance{ID: id, Self: id == me, Fenced: slices.Contains(fenced, id), HeartbeatAgeMS: -1}
		if hb, err := do(rc.B().Get().Key(coord.KeyHeartbeat(id)).Build()).ToString(); err == nil {
			in.Incarnation = coord.IncarnationOf(hb)
			if pttl, err := do(rc.B().Pttl().Key(coord.KeyHeartbeat(id)).Build()).AsInt64(); err == nil && pttl >= 0 {
				in.HeartbeatAgeMS = max(ttl.Milliseconds()-pttl, 0)
			}
		} else if inc, err := do(rc.B().Get().Key(coord.KeyIncarnation(id)).Build()).ToString(); err == nil {
			in.Incarnation = inc
		}
		if in.Holdings, err = do(rc.B().Hgetall().Key(coord.KeyConns(id)).Build()).AsIntMap(); err != nil {
			return admin.Instances{}, fmt.Errorf("redis: holdings of %s: %w", id, err)
		}
		out.Instances = append(out.Instances, in)
	}
	for _, b := range a.Config().Buckets {
		n, err := do(rc.B().Get().Key(coord.KeyCount(b.ID)).Build()).AsInt64()
		if err != nil && !rueidis.IsRedisNil(err) {
			return admin.Instances{}, fmt.Errorf("redis: count of %s: %w", b.ID, err)
		}
		out.Counts[b.ID] = n
	}
	return out, nil
}

// BucketCommand answers POST /admin/buckets/{id}/{pause,resume,drain}.
func (c console) BucketCommand(ctx context.Context, action, bucket string, fleet bool, by string) (admin.Action, error) {
	a := c.a
	res := admin.Action{Action: action, Bucket: bucket, Fleet: fleet}
	if !fleet {
		ack := a.bucketCommand(action, bucket, by)
		if !ack.OK {
			return res, fmt.Errorf("%w: %s", admin.ErrNotFound, ack.Error)
		}
		res.Acks = []admin.Ack{ack}
		return res, nil
	}
	if a.redis == nil {
		return res, fmt.Errorf("%w: ?fleet=1 needs redis (this instance runs standalone)", admin.ErrConflict)
	}
	rc := a.redis.conn
	req := coord.NewIncarnation()
	msg, _ := json.Marshal(fleetCommand{Request: req, Action: action, Bucket: bucket, By: by, From: a.redis.lim.InstanceID()})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	n, err := rc.Do(pctx, rc.B().Publish().Channel(coord.ChanAdmin).Message(string(msg)).Build()).AsInt64()
	cancel()
	if err != nil {
		return res, fmt.Errorf("redis: publish: %w", err)
	}
	res.Receivers = int(n)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if live, err := rc.Do(sctx, rc.B().Scard().Key(coord.KeyInstances).Build()).AsInt64(); err == nil {
		res.Live = int(live)
	}
	cancel()
	a.log.Warn("admin: fleet command published", "action", action, "bucket", bucket, "by", by, "request", req, "receivers", n, "live", res.Live)
	deadline := time.Now().Add(fleetAckWait)
	for {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		raw, err := rc.Do(lctx, rc.B().Lrange().Key(coord.KeyAdminAck(req)).Start(0).Stop(-1).Build()).AsStrSlice()
		cancel()
		if err == nil && len(raw) >= int(n) || time.Now().After(deadline) || ctx.Err() != nil {
			res.Acks = make([]admin.Ack, 0, len(raw))
			for _, r := range raw {
				var ack admin.Ack
				if json.Unmarshal([]byte(r), &ack) == nil {
					res.Acks = append(res.Acks, ack)
				}
			}
			slices.SortFunc(res.Acks, func(x, y admin.Ack) int { return strings.Compare(x.Instance, y.Instance) })
			return res, nil
		}
		time.Sleep(fleetAckPoll)
	}
}

// bucketCommand runs pause, resume or drain on this instance.
func (a *App) bucketCommand(action, bucket, by string) admin.Ack {
	id := a.Config().InstanceID
	if a.redis != nil {
		id = a.redis.lim.InstanceID()
	}
	ack := admin.Ack{Instance: id}
	if a.handler.Runtime().Buckets[bucket] == nil {
		ack.Error = fmt.Sprintf("no bucket %q on %s", bucket, id)
		return ack
	}
	p, ok := a.lim.(limiter.Pauser)
	if !ok {
		ack.Error = "this limiter cannot pause"
		return ack
	}
	switch action {
	case "pause":
		p.SetPaused(bucket, true)
	case "resume":
		p.SetPaused(bucket, false)
	case "drain":
		if pl := a.pool(bucket); pl != nil {
			ack.Closed = pl.Drain()
		}
	default:
		ack.Error = fmt.Sprintf("unknown action %q", action)
		return ack
	}
	ack.OK, ack.Paused = true, p.Paused(bucket)
	a.log.Warn("admin: bucket "+action, "bucket", bucket, "by", by, "paused", ack.Paused, "closed_idle", ack.Closed)
	return ack
}

// startFleet subscribes to coord.ChanAdmin (with Redis only) and runs the
// fleet commands that arrive, answering each on its ack list.
func (a *App) startFleet() {
	if a.redis == nil {
		return
	}
	rc := a.redis.conn
	ctx, cancel := context.WithCancel(context.Background())
	a.fleetStop = cancel
	a.fleetWG.Add(1)
	go func() {
		defer a.fleetWG.Done()
		for {
			err := rc.Receive(ctx, rc.B().Subscribe().Channel(coord.ChanAdmin).Build(), func(m rueidis.PubSubMessage) {
				var fc fleetCommand
				if err := json.Unmarshal([]byte(m.Message), &fc); err != nil || fc.Request == "" {
					a.log.Warn("admin: fleet command unreadable", "err", err)
					return
				}
				a.fleetWG.Add(1)
				go func() {
					defer a.fleetWG.Done()
					ack := a.bucketCommand(fc.Action, fc.Bucket, fc.By+" via "+fc.From+" (fleet)")
					b, _ := json.Marshal(ack)
					actx, cancel := context.WithTimeout(ctx, 2*time.Second)
					defer cancel()
					k := coord.KeyAdminAck(fc.Request)
					for _, r := range rc.DoMulti(actx, rc.B().Rpush().Key(k).Element(string(b)).Build(),
						rc.B().Pexpire().Key(k).Milliseconds(fleetAckTTL.Milliseconds()).Build()) {
						if err := r.Error(); err != nil {
							a.log.Warn("admin: fleet command: could not acknowledge", "request", fc.Request, "err", err)
						}
					}
				}()
			})
			if ctx.Err() != nil {
				return
			}
			a.log.Debug("admin: fleet subscription ended, resubscribing", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// stopFleet ends the subscription and waits for commands in flight.
func (a *App) stopFleet() {
	if a.fleetStop != nil {
		a.fleetStop()
		a.fleetWG.Wait()
	}
}
