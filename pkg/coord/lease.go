package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Leases and fencing (see doc.go, "Leases and fencing").
//
// An instance's lease is its heartbeat key, whose value starts with the
// instance's incarnation: a random token drawn at process start. The
// incarnation key names the incarnation whose holdings the conns hash
// records. The scripts below are the only writers of the lease keys:
//
//	register   (re)claims an id for an incarnation and makes Redis agree with
//	           what it holds, re-acquiring (never above max) what Redis does
//	           not count; refuses if another incarnation's lease is alive
//	heartbeat  renews the lease only if it is still this incarnation's
//	reclaim    the reaper's step on an instance whose lease expired, and the
//	           clean leave
//
// (and, in absent.go, reserve-absent: a register's record of a peer that
// a Redis which lost its data no longer knows)

// luaFreeAll is a Lua function (pasted into the scripts that need it):
// give back every slot recorded in conns hash ck for instance id, drop its
// waiting entries, delete the hash; it returns the pairs given back.
const luaFreeAll = `
local function free_all(ck, id)
  local fields = redis.call('HGETALL', ck)
  local out = {}
  for i = 1, #fields, 2 do
    local b = fields[i]
    local n = tonumber(fields[i + 1]) or 0
    redis.call('HDEL', 'proxy:bucket:' .. b .. ':waiting', id)
    if n > 0 then
      local k = 'proxy:bucket:' .. b .. ':count'
      local c = (tonumber(redis.call('GET', k)) or 0) - n
      if c < 0 then c = 0 end
      redis.call('SET', k, c)
      redis.call('PUBLISH', 'proxy:bucket:' .. b .. ':released', b)
      out[#out + 1] = b
      out[#out + 1] = n
    end
  end
  redis.call('DEL', ck)
  return out
end
`

// registerScript (re)registers an instance id for an incarnation and makes
// its conns hash agree with what it really holds.
//
//	KEYS: conns, proxy:instances, heartbeat, incarnation, proxy:fenced, fence,
//	      epoch
//	ARGV: id, incarnation, heartbeat TTL ms, heartbeat value, then triples:
//	      bucket, held, seed max
//	→ {-1} the id's lease belongs to another live incarnation (nothing
//	  changed); else the new register epoch, fresh (1: Redis did not list
//	  this incarnation as a live member: it lost its data, or a reaper
//	  took the id out), then a flat list of quadruples: bucket, granted
//	  (what the hash records now), count after, max.
//
// The register epoch (fencing token of the releases, see releaseScript)
// is max(previous + 1, Redis time in µs): it grows with every register,
// and keeps growing across a restart that lost the key, so a release
// sent before any earlier register never carries the current one.
//
// Per bucket: holding no more than the hash records, the hash and the
// count drop to it (safe: fewer slots). Holding more (slots granted in
// fallback, or records lost with a Redis restart or a reclaim), the extra
// is re-acquired like the acquire script would, never past max: granted <
// held tells the caller which sessions do not fit. What absent records
// (ReserveAbsent) count is left out of that fit: they are upper bounds of
// what cut-off instances may hold, which block new grants (the acquire
// script counts them) but must not close sessions known to be open; the
// sessions of all instances re-asserted fit under max (each was granted
// under it, or admitted in fallback within its exact share), so the count
// may then stand above max until the records are parked or replaced.
// Records of an older
// incarnation of the same id (a process that died; its lease is gone) are
// given back first.
var registerScript = rueidis.NewLuaScript(luaFreeAll + `
local hb = redis.call('GET', KEYS[3])
if hb and string.match(hb, '^(%S+)') ~= ARGV[2] then
  return {-1}
end
local owner = redis.call('GET', KEYS[4])
local fresh = 0
if owner ~= ARGV[2] or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  fresh = 1
end
if owner ~= ARGV[2] then
  free_all(KEYS[1], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[6])
redis.call('SET', KEYS[4], ARGV[2])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
local tm = redis.call('TIME')
local ep = math.max((tonumber(redis.call('GET', KEYS[7])) or 0) + 1, tonumber(tm[1]) * 1000000 + tonumber(tm[2]))
redis.call('SET', KEYS[7], string.format('%.0f', ep))
local want, seed, order = {}, {}, {}
for i = 5, #ARGV, 3 do
  want[ARGV[i]] = tonumber(ARGV[i + 1]) or 0
  seed[ARGV[i]] = ARGV[i + 2]
  order[#order + 1] = ARGV[i]
end
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if want[fields[i]] == nil then
    want[fields[i]] = 0
    order[#order + 1] = fields[i]
  end
end
-- What the absent records (coord.ReserveAbsent: fenced ids with no
-- incarnation) count of a bucket: estimates of instances cut off while
-- Redis restarted empty, not sessions known to be open.
local absent
local function estimated(b)
  if absent == nil then
    absent = {}
    for _, f in ipairs(redis.call('SMEMBERS', KEYS[5])) do
      if f ~= ARGV[1] and redis.call('HGET', 'proxy:instance:' .. f .. ':fence', 'inc') == '' then
        absent[#absent + 1] = f
      end
    end
  end
  local n = 0
  for _, f in ipairs(absent) do
    n = n + (tonumber(redis.call('HGET', 'proxy:instance:' .. f .. ':conns', b)) or 0)
  end
  return n
end
local out = {ep, fresh}
for _, b in ipairs(order) do
  local mk = 'proxy:bucket:' .. b .. ':max'
  if seed[b] then
    redis.call('SET', mk, seed[b], 'NX')
  end
  local m = tonumber(redis.call('GET', mk)) or 0
  local ck = 'proxy:bucket:' .. b .. ':count'
  local have = tonumber(redis.call('HGET', KEYS[1], b)) or 0
  local c = tonumber(redis.call('GET', ck)) or 0
  local w = want[b]
  local now = have
  if w < have then
    c = c - (have - w)
    if c < 0 then c = 0 end
    now = w
    redis.call('PUBLISH', 'proxy:bucket:' .. b .. ':released', b)
  elseif w > have then
    local add = w - have
    local room = m - (c - estimated(b))
    if room < add then add = room end
    if add < 0 then add = 0 end
    c = c + add
    now = have + add
  end
  redis.call('SET', ck, c)
  if now > 0 then
    redis.call('HSET', KEYS[1], b, now)
  else
    redis.call('HDEL', KEYS[1], b)
  end
  out[#out + 1] = b
  out[#out + 1] = now
  out[#out + 1] = c
  out[#out + 1] = m
end
return out
`)

// heartbeatScript renews a lease, only if it is still the caller's: the
// heartbeat exists, holds the caller's incarnation, and the id is in
// proxy:instances. It never re-creates a lapsed lease: that takes the
// register script, which re-acquires instead of re-adding.
//
//	KEYS: proxy:instances, heartbeat
//	ARGV: id, incarnation, value, TTL ms
//	→ 1 renewed, 0 lost
var heartbeatScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[2])
if not v or string.match(v, '^(%S+)') ~= ARGV[2] or redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
`)

// reclaimScript is the reaper's step on one instance, and the clean leave.
//
//	KEYS: heartbeat, conns, proxy:instances, proxy:fenced, fence, incarnation
//	ARGV: id, leave ("1": the instance gives everything back itself),
//	      incarnation (leave: the caller's; reaper: ""), reclaim_after ms,
//	      forget_after ms, base id, at once ("1": forget an expired lease
//	      in one step, no fencing: tools and tests)
//	→ {status, bucket1, n1, ...}: status -1 the lease is alive; 0 nothing
//	  to do (yet); 1 every slot given back and the id forgotten; 2 fenced:
//	  the lease expired, the id left proxy:instances for proxy:fenced,
//	  nothing given back yet; 3 parked: fenced for reclaim_after, the slots
//	  above the instance's fallback share were given back (the pairs).
//
// The expiry check (EXISTS heartbeat) and the incarnation check are in
// the same step as what they guard, so two reapers never reclaim twice
// and a re-registered instance is never reclaimed. A fenced instance
// whose id has a live sibling (another incarnation of the same base id:
// the process restarted) is given back at once.
var reclaimScript = rueidis.NewLuaScript(luaFreeAll + `
local id = ARGV[1]
local function forget()
  local out = free_all(KEYS[2], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('SREM', KEYS[4], id)
  redis.call('DEL', KEYS[5], KEYS[6], 'proxy:instance:' .. id .. ':epoch')
  redis.call('HDEL', 'proxy:peers', id)
  table.insert(out, 1, 1)
  return out
end
if ARGV[2] == '1' then
  local owner = redis.call('GET', KEYS[6])
  if owner and owner ~= ARGV[3] then
    return {0}
  end
  local hb = redis.call('GET', KEYS[1])
  if hb and string.match(hb, '^(%S+)') == ARGV[3] then
    redis.call('DEL', KEYS[1])
  end
  return forget()
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1}
end
local isMember = redis.call('SISMEMBER', KEYS[3], id) == 1
local isFenced = redis.call('SISMEMBER', KEYS[4], id) == 1
if not isMember and not isFenced then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return forget()
  end
  return {0}
end
if ARGV[7] == '1' then
  return forget()
end
local inc = redis.call('GET', KEYS[6]) or ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if m ~= id and string.match(m, '^([^~]+)') == ARGV[6] then
    local v = redis.call('GET', 'proxy:instance:' .. m .. ':heartbeat')
    if v and string.match(v, '^(%S+)') ~= inc then
      return forget()
    end
  end
end
local f = redis.call('HMGET', KEYS[5], 'inc', 'at', 'parked')
if not isFenced or f[1] ~= inc or not f[2] then
  redis.call('SREM', KEYS[3], id)
  redis.call('SADD', KEYS[4], id)
  redis.call('HSET', KEYS[5], 'inc', inc, 'at', now, 'parked', 0)
  for _, b in ipairs(redis.call('HKEYS', KEYS[2])) do
    redis.call('HDEL', 'proxy:bucket:' .. b .. ':waiting', id)
  end
  return {2}
end
local age = now - tonumber(f[2])
if f[3] == '1' then
  if age >= tonumber(ARGV[5]) then
    return forget()
  end
  return {0}
end
if age < tonumber(ARGV[4]) then
  return {0}
end
local all = redis.call('SUNION', KEYS[3], KEYS[4])
table.sort(all)
local rank, n = 0, #all
for i, m in ipairs(all) do
  if m == id then rank = i - 1 end
end
local out = {3}
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local b = fields[i]
  local held = tonumber(fields[i + 1]) or 0
  local m = tonumber(redis.call('GET', 'proxy:bucket:' .. b .. ':max')) or 0
  local share = math.floor(m / n)
  if rank < m % n then share = share + 1 end
  if held > share then
    local k = 'proxy:bucket:' .. b .. ':count'
    local c = (tonumber(redis.call('GET', k)) or 0) - (held - share)
    if c < 0 then c = 0 end
    redis.call('SET', k, c)
    if share > 0 then
      redis.call('HSET', KEYS[2], b, share)
    else
      redis.call('HDEL', KEYS[2], b)
    end
    redis.call('PUBLISH', 'proxy:bucket:' .. b .. ':released', b)
    out[#out + 1] = b
    out[#out + 1] = held - share
  end
end
redis.call('HSET', KEYS[5], 'parked', 1, 'at', now)
return out
`)

// NewIncarnation draws a random incarnation token (16 hex digits).
func NewIncarnation() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("limiter: no randomness for the incarnation: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// HeartbeatValue is what a heartbeat key holds: the incarnation, then the
// time it was written (for an operator reading it with GET).
func HeartbeatValue(incarnation string) string {
	return incarnation + " " + time.Now().UTC().Format(time.RFC3339)
}

// IncarnationOf is the incarnation in a heartbeat value.
func IncarnationOf(heartbeat string) string {
	inc, _, _ := strings.Cut(heartbeat, " ")
	return inc
}

// BaseID is the configured instance id an id in the keys derives from: a
// process that found its configured id held by another live incarnation
// runs as "<id>~<first 6 digits of its incarnation>" (SiblingID).
func BaseID(id string) string {
	base, _, _ := strings.Cut(id, "~")
	return base
}

// SiblingID is the id a process of incarnation inc uses when base is held
// by another live incarnation.
func SiblingID(base, inc string) string { return base + "~" + inc[:min(6, len(inc))] }

// ErrIDTaken is RegisterInstance's answer when another live incarnation
// holds the id's lease.
var ErrIDTaken = errors.New("instance id held by another live process (another incarnation's heartbeat is alive)")

// Holding is one bucket's entry for RegisterInstance.
type Holding struct {
	Bucket  string
	Held    int64 // slots the instance really holds
	SeedMax int   // seeds max if it is absent
}

// Reconciled is one bucket's outcome of RegisterInstance.
type Reconciled struct {
	Bucket  string
	Granted int64 // what Redis now records for the instance (< Held: did not fit)
	Delta   int64 // Granted minus what Redis recorded before
	Count   int64 // after
	Max     int64
}

// Registration is the outcome of Register.
type Registration struct {
	// Epoch is the register epoch: the fencing token the instance's
	// releases carry (ReleaseSlotAt) until its next register.
	Epoch   int64
	Buckets []Reconciled
	// Fresh: Redis did not list this incarnation as a live member before
	// (it restarted empty, failed over to a replica that lacked it, or a
	// reaper fenced or forgot the id). The other instances may be
	// re-registering too: see the limiter's settle time.
	Fresh bool
}

// RegisterInstance is Register's per-bucket outcome alone.
func RegisterInstance(ctx context.Context, c rueidis.Client, id, inc string, ttl time.Duration, holdings []Holding) ([]Reconciled, error) {
	r, err := Register(ctx, c, id, inc, ttl, holdings)
	return r.Buckets, err
}

// Register runs the register script for id and incarnation inc:
// it claims the id (ErrIDTaken if another incarnation's lease is alive),
// renews the lease with ttl, gives back an older incarnation's records,
// and makes the conns hash agree with holdings: lowered where Redis
// recorded more, re-acquired (never past max) where it recorded less.
// Buckets in the hash but not in holdings count as held 0.
func Register(ctx context.Context, c rueidis.Client, id, inc string, ttl time.Duration, holdings []Holding) (Registration, error) {
	args := make([]string, 0, 4+3*len(holdings))
	args = append(args, id, inc, strconv.FormatInt(max(ttl.Milliseconds(), 1), 10), HeartbeatValue(inc))
	for _, h := range holdings {
		args = append(args, h.Bucket, strconv.FormatInt(max(h.Held, 0), 10), strconv.Itoa(h.SeedMax))
	}
	before := map[string]int64{}
	hv, err := c.Do(ctx, c.B().Hgetall().Key(KeyConns(id)).Build()).AsStrMap()
	if err == nil {
		for k, v := range hv {
			before[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	vs, err := registerScript.Exec(ctx, c,
		[]string{KeyConns(id), KeyInstances, KeyHeartbeat(id), KeyIncarnation(id), KeyFenced, KeyFence(id), KeyEpoch(id)}, args).ToArray()
	if err != nil {
		return Registration{}, err
	}
	if len(vs) == 0 {
		return Registration{}, errors.New("register script: empty reply")
	}
	ep, err := vs[0].AsInt64()
	if err != nil {
		return Registration{}, err
	}
	if ep == -1 {
		return Registration{}, ErrIDTaken
	}
	if len(vs) < 2 {
		return Registration{}, errors.New("register script: short reply")
	}
	fresh, err := vs[1].AsInt64()
	if err != nil {
		return Registration{}, err
	}
	out := make([]Reconciled, 0, len(vs)/4)
	for i := 2; i+3 < len(vs); i += 4 {
		var r Reconciled
		var err error
		if r.Bucket, err = vs[i].ToString(); err != nil {
			return Registration{}, err
		}
		if r.Granted, err = vs[i+1].AsInt64(); err != nil {
			return Registration{}, err
		}
		if r.Count, err = vs[i+2].AsInt64(); err != nil {
			return Registration{}, err
		}
		if r.Max, err = vs[i+3].AsInt64(); err != nil {
			return Registration{}, err
		}
		r.Delta = r.Granted - before[r.Bucket]
		out = append(out, r)
	}
	return Registration{Epoch: ep, Fresh: fresh == 1, Buckets: out}, nil
}

// ReconcileInstance is RegisterInstance for an instance whose incarnation
// is its id (tests and tools that play one instance by hand).
func ReconcileInstance(ctx context.Context, c rueidis.Client, instance string, ttl time.Duration, holdings []Holding) ([]Reconciled, error) {
	return RegisterInstance(ctx, c, instance, instance, ttl, holdings)
}

// RenewLease runs the heartbeat script: renew id's lease for ttl if it is
// still incarnation inc's. false: lost (expired, fenced, or claimed by
// another incarnation).
func RenewLease(ctx context.Context, c rueidis.Client, id, inc string, ttl time.Duration) (bool, error) {
	n, err := heartbeatScript.Exec(ctx, c, []string{KeyInstances, KeyHeartbeat(id)},
		[]string{id, inc, HeartbeatValue(inc), strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)}).AsInt64()
	return n == 1, err
}

// ErrInstanceAlive is ReclaimInstance's answer when the instance's lease
// (heartbeat) is alive.
var ErrInstanceAlive = errors.New("instance heartbeat is alive")

// ReclaimStatus is what a reclaim step did.
type ReclaimStatus int8

const (
	// ReclaimNothing: nothing to do yet (or another reaper was first).
	ReclaimNothing ReclaimStatus = 0
	// ReclaimForgotten: every slot given back, the id forgotten.
	ReclaimForgotten ReclaimStatus = 1
	// ReclaimFenced: the lease expired; the id moved from proxy:instances
	// to proxy:fenced; its slots stay counted (it may be alive: frozen or
	// cut off from Redis).
	ReclaimFenced ReclaimStatus = 2
	// ReclaimParked: fenced for reclaim_after; the slots above its fallback
	// share were given back, the share stays counted until it returns,
	// restarts, or forget_after passes.
	ReclaimParked ReclaimStatus = 3
)

// String names the status.
func (s ReclaimStatus) String() string {
	switch s {
	case ReclaimNothing:
		return "nothing"
	case ReclaimForgotten:
		return "forgotten"
	case ReclaimFenced:
		return "fenced"
	case ReclaimParked:
		return "parked"
	}
	return fmt.Sprintf("ReclaimStatus(%d)", int8(s))
}

// ReclaimTimes are the reaper's delays (config redis.reclaim_after and
// redis.forget_after).
type ReclaimTimes struct {
	// ReclaimAfter: how long a fenced instance keeps all its slots counted.
	ReclaimAfter time.Duration
	// ForgetAfter: how long a parked instance keeps its share counted.
	ForgetAfter time.Duration
}

// ReapInstance runs one reaper step on id (see reclaimScript): fence an
// expired lease, park a fenced one after ReclaimAfter, forget a parked one
// after ForgetAfter, or forget at once when a sibling incarnation of the
// same base id is live. slots are what was given back.
func ReapInstance(ctx context.Context, c rueidis.Client, id string, rt ReclaimTimes) (ReclaimStatus, map[string]int64, error) {
	return reclaim(ctx, c, id, false, "", rt)
}

// LeaveInstance gives back every slot id's incarnation inc holds and
// forgets the id at once (a clean shutdown). It does nothing if the id's
// records belong to another incarnation.
func LeaveInstance(ctx context.Context, c rueidis.Client, id, inc string) (map[string]int64, bool, error) {
	st, slots, err := reclaim(ctx, c, id, true, inc, ReclaimTimes{})
	return slots, st == ReclaimForgotten, err
}

// ReclaimInstance is the one-step reclaim of tools and tests: force gives
// everything back whatever the lease (a leave, for the incarnation that
// owns the records); otherwise an expired lease is forgotten at once,
// without the reaper's fencing (ErrInstanceAlive if it is alive; won
// false if there was nothing to reclaim).
func ReclaimInstance(ctx context.Context, c rueidis.Client, instance string, force bool) (map[string]int64, bool, error) {
	if force {
		inc, err := c.Do(ctx, c.B().Get().Key(KeyIncarnation(instance)).Build()).ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return nil, false, err
		}
		st, slots, err := reclaim(ctx, c, instance, true, inc, ReclaimTimes{})
		return slots, st == ReclaimForgotten, err
	}
	st, slots, err := reclaimAt(ctx, c, instance, false, "", ReclaimTimes{}, true)
	return slots, st == ReclaimForgotten, err
}

func reclaim(ctx context.Context, c rueidis.Client, id string, leave bool, inc string, rt ReclaimTimes) (ReclaimStatus, map[string]int64, error) {
	return reclaimAt(ctx, c, id, leave, inc, rt, false)
}

func reclaimAt(ctx context.Context, c rueidis.Client, id string, leave bool, inc string, rt ReclaimTimes, atOnce bool) (ReclaimStatus, map[string]int64, error) {
	l, once := "0", "0"
	if leave {
		l = "1"
	}
	if atOnce {
		once = "1"
	}
	vs, err := reclaimScript.Exec(ctx, c,
		[]string{KeyHeartbeat(id), KeyConns(id), KeyInstances, KeyFenced, KeyFence(id), KeyIncarnation(id)},
		[]string{id, l, inc, strconv.FormatInt(rt.ReclaimAfter.Milliseconds(), 10),
			strconv.FormatInt(rt.ForgetAfter.Milliseconds(), 10), BaseID(id), once}).ToArray()
	if err != nil {
		return 0, nil, err
	}
	if len(vs) == 0 {
		return 0, nil, errors.New("reclaim script: empty reply")
	}
	st, err := vs[0].AsInt64()
	if err != nil {
		return 0, nil, err
	}
	if st == -1 {
		return 0, nil, ErrInstanceAlive
	}
	slots := map[string]int64{}
	for i := 1; i+1 < len(vs); i += 2 {
		b, err := vs[i].ToString()
		if err != nil {
			return 0, nil, err
		}
		n, err := vs[i+1].AsInt64()
		if err != nil {
			return 0, nil, err
		}
		slots[b] = n
	}
	return ReclaimStatus(st), slots, nil
}
