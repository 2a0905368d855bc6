package coord

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// The scripts that change the shared counts (and lease.go's). Each runs atomically in
// Redis (EVALSHA, falling back to EVAL on NOSCRIPT), so no interleaving of
// instances can let a count exceed its max or drop below 0, and each keeps
// the invariant of keys.go: count == sum of the instances' fields.
//
// The reclaim and reconcile scripts derive bucket keys from the bucket ids
// they read (an instance's hash names the buckets it holds slots in); that
// is fine on one Redis and is why the layout does not support Cluster.

// acquireScript takes one slot of a bucket for an instance.
//
//	KEYS: count, max, conns(instance), proxy:instances, waiting,
//	      [epoch(instance)]
//	ARGV: bucket, seed max (the config's max_connections), instance,
//	      clients waiting in the instance's queue for the bucket (0: no
//	      fairness), ms after which another instance's waiting entry is stale,
//	      slots wanted (absent: 1; "acquire n": one call for several
//	      concurrent acquires of one instance), [register epoch ("" or
//	      absent: not checked)]
//	→ {status, count, max, granted, others}: status 1 granted (granted
//	  slots, 1 <= granted <= wanted), 0 full, 2 deferred (a slot is
//	  free but it is another instance's turn), -1 the instance is not in
//	  proxy:instances (reaped, or Redis lost its data), or the epoch is
//	  not its current register epoch (an acquire sent before a register
//	  and delivered after it: its caller gave up on it, in doubt, and the
//	  register wrote what the instance holds — granting it now would
//	  count a slot nobody holds until the next register): the caller must
//	  reconcile before it may take slots again. others is the number of
//	  other instances with an entry in the waiting hash afterwards (the
//	  slot linger of package limiter keeps no slot warm while it is > 0).
//
// A missing max is seeded from ARGV[2] (as SET NX would); a max that is not
// an integer counts as 0, so a typo stops admission rather than lifting
// the cap.
//
// Fairness across instances: each instance's queue is FIFO, but a freed
// slot is raced for by every instance's head waiter; left alone, each
// instance wins about as often whatever its queue length, and one
// instance's clients can wait many times longer than another's. So an
// instance that finds the bucket full records, in the bucket's waiting
// hash, "<queued> <since> <seen>": its queue length, the Redis time (ms)
// since which it has waited without a grant, and when it last said so.
// A free slot goes to the instance with the highest queued × (now -
// since): the one whose clients have waited longest, weighted by how many
// wait, so grants follow demand and no queue starves. An instance defers
// only when the free slots do not cover the clients of the instances
// ahead of it, so free slots are never refused. Entries not
// refreshed for ARGV[5] ms (an instance that died or stopped waiting) are
// dropped.
var acquireScript = rueidis.NewLuaScript(acquireLua)

// acquireLua is acquireScript's body (AcquireSlotsConfirmed sends it by
// hand: EVALSHA and WAIT on one connection).
const acquireLua = `
local mv = redis.call('GET', KEYS[2])
local m
if not mv then
  redis.call('SET', KEYS[2], ARGV[2])
  m = tonumber(ARGV[2])
else
  m = tonumber(mv) or 0
end
local c = tonumber(redis.call('GET', KEYS[1])) or 0
if redis.call('SISMEMBER', KEYS[4], ARGV[3]) == 0 then
  return {-1, c, m, 0, 0}
end
if KEYS[6] and ARGV[7] and ARGV[7] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[7] then
  return {-1, c, m, 0, 0}
end
local q = tonumber(ARGV[4]) or 0
local n = math.max(tonumber(ARGV[6]) or 1, 1)
local me = ARGV[3]
local now, since = 0, 0
local function parse(v)
  local a, b, d = string.match(v or '', '^(%d+) (%d+) (%d+)$')
  return tonumber(a), tonumber(b), tonumber(d)
end
local function others()
  local w = redis.call('HLEN', KEYS[5])
  if w > 0 and redis.call('HEXISTS', KEYS[5], me) == 1 then
    w = w - 1
  end
  return w
end
if q > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local _, s = parse(redis.call('HGET', KEYS[5], me))
  since = s or now
end
if c >= m then
  if q > 0 then
    redis.call('HSET', KEYS[5], me, q .. ' ' .. since .. ' ' .. now)
  end
  return {0, c, m, 0, others()}
end
local room = m - c
if q > 0 then
  -- Defer only when the free slots would not cover the clients of the
  -- instances ahead of this one: with slots to spare, everyone is served.
  local mine = q * (now - since + 1)
  local ahead = 0
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    if all[i] ~= me then
      local oq, os, oseen = parse(all[i + 1])
      if not oq or oseen < now - tonumber(ARGV[5]) then
        redis.call('HDEL', KEYS[5], all[i])
      elseif oq * (now - os + 1) > mine then
        ahead = ahead + oq
      end
    end
  end
  if ahead >= room then
    redis.call('HSET', KEYS[5], me, q .. ' ' .. since .. ' ' .. now)
    return {2, c, m, 0, others()}
  end
  room = room - ahead
end
n = math.min(n, room)
c = c + n
redis.call('SET', KEYS[1], c)
redis.call('HINCRBY', KEYS[3], ARGV[1], n)
if q > n and c >= m then
  -- Clients still wait here and the bucket is now full: stay listed.
  redis.call('HSET', KEYS[5], me, (q - n) .. ' ' .. now .. ' ' .. now)
elseif q > 0 then
  -- Everyone served, or the rest will be on the next try (room is left):
  -- nobody here waits for a release.
  redis.call('HDEL', KEYS[5], me)
end
return {1, c, m, n, others()}
`

// waitingScript sets (n > 0) or clears (n == 0) an instance's entry in a
// bucket's waiting hash (see acquireScript), keeping its "since": called
// when the instance's queue changed without a try (clients gave up) and by
// the poll, so the entry stays fresh while clients wait.
//
//	KEYS: waiting
//	ARGV: instance, n
var waitingScript = rueidis.NewLuaScript(`
local n = tonumber(ARGV[2]) or 0
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = tonumber(string.match(redis.call('HGET', KEYS[1], ARGV[1]) or '', '^%d+ (%d+) %d+$')) or now
redis.call('HSET', KEYS[1], ARGV[1], n .. ' ' .. since .. ' ' .. now)
return 1
`)

// releaseScript gives one slot of a bucket back for an instance and, when
// some instance has clients waiting for the bucket (an entry in its
// waiting hash, which the acquire script writes in the same step as it
// finds the bucket full), publishes the bucket id on its channel so those
// waiters retry. Nobody waiting: no PUBLISH, so a release costs no
// pub/sub message to every instance.
//
//	KEYS: count, conns(instance), epoch(instance), waiting(bucket)
//	ARGV: bucket, channel, register epoch ("": not checked)
//	→ {status, count[, published]}: status 1 released, 0 the instance held
//	  no slot of the bucket in Redis (granted in fallback and not yet
//	  reconciled, or reclaimed): nothing changes, so count never drops for
//	  a slot it does not contain. count never goes below 0 either way. -1:
//	  stale, the epoch is not the instance's current register epoch (a
//	  release sent before its last register, delivered late by a stalled
//	  link): nothing changes, since that register already set the hash to
//	  what it held. published (status 1 only) is 1 when the waiting hash
//	  had entries.
var releaseScript = rueidis.NewLuaScript(luaReleaseEpoch + `
local h = tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0
local c = tonumber(redis.call('GET', KEYS[1])) or 0
if h <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {0, c}
end
if h == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], h - 1)
end
if c > 0 then
  c = c - 1
end
redis.call('SET', KEYS[1], c)
local w = redis.call('EXISTS', KEYS[4])
if w == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[1])
end
return {1, c, w}
`)

// luaReleaseEpoch is the release script's fencing check (issue 12: a
// stale release after a re-register), kept apart from the release
// itself: a release whose register epoch (ARGV[3]) is not the instance's
// current one (KEYS[3]) changes nothing.
const luaReleaseEpoch = `
if ARGV[3] and ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return {-1, tonumber(redis.call('GET', KEYS[1])) or 0}
end
`

// AcquireStatus is the acquire script's verdict.
type AcquireStatus int8

const (
	// AcquireFull: count had reached max; nothing changed.
	AcquireFull AcquireStatus = 0
	// AcquireGranted: count and the instance's field grew by one.
	AcquireGranted AcquireStatus = 1
	// AcquireUnregistered: the instance is not in proxy:instances (it was
	// reaped, or Redis lost its data); it must reconcile first.
	AcquireUnregistered AcquireStatus = -1
	// AcquireDeferred: a slot is free, but it is another instance's turn
	// (its clients have waited longer); nothing changed.
	AcquireDeferred AcquireStatus = 2
)

// AcquireResult is what the acquire script saw.
type AcquireResult struct {
	Status     AcquireStatus
	Count, Max int64 // after the script
	// Granted is how many slots were taken (AcquireGranted: 1..wanted).
	Granted int64
	// OthersWaiting is how many other instances have an entry in the
	// bucket's waiting hash (clients queued there) after the script.
	OthersWaiting int64
	// Replicas is how many replicas acknowledged the script's writes
	// (WAIT's reply; AcquireSlotsConfirmed only, else 0).
	Replicas int64
	// ServerInfo and ReplicationInfo are INFO server and INFO replication
	// of the server that granted, when fewer replicas than asked for
	// acknowledged (AcquireSlotsConfirmed; "" if they could not be read).
	ServerInfo, ReplicationInfo string
}

// AcquireSlot runs the acquire script: one slot of bucket for instance if
// count < max. seedMax seeds an absent max. No fairness: see AcquireSlotFair.
func AcquireSlot(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax int) (AcquireResult, error) {
	return AcquireSlotFair(ctx, c, instance, bucket, seedMax, 0, 0)
}

// AcquireSlotFair is AcquireSlot on behalf of an instance with queued
// clients waiting for bucket (counting the one the slot is for): a free
// slot is deferred (AcquireDeferred) when another instance's turn has come
// (see acquireScript); entries older than stale are ignored.
func AcquireSlotFair(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax, queued int, stale time.Duration) (AcquireResult, error) {
	return AcquireSlots(ctx, c, instance, bucket, seedMax, queued, 1, stale)
}

// AcquireSlots is AcquireSlotFair for up to want slots in one script call
// (acquire n): concurrent acquires of one bucket on one instance share it.
// It grants min(want, the free slots not owed to instances ahead of this
// one), at least 1, or none (AcquireFull, AcquireDeferred).
func AcquireSlots(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax, queued, want int, stale time.Duration) (AcquireResult, error) {
	return AcquireSlotsAt(ctx, c, instance, bucket, seedMax, queued, want, stale, 0)
}

// AcquireSlotsAt is AcquireSlots fenced by the register epoch (Register's
// Epoch; 0: not checked): if instance has registered again since epoch,
// nothing is granted (AcquireUnregistered). A command that timed out is
// not withdrawn: delivered after the register that followed (a stalled
// link, a starved server), it would otherwise count a slot nobody holds.
func AcquireSlotsAt(ctx context.Context, c rueidis.Client, instance, bucket string, seedMax, queued, want int, stale time.Duration,
	epoch int64) (AcquireResult, error) {
	keys, args := acquireKeysArgs(instance, bucket, seedMax, queued, want, stale, epoch)
	vs, err := acquireScript.Exec(ctx, c, keys, args).AsIntSlice()
	if err != nil {
		return AcquireResult{}, err
	}
	if len(vs) != 5 {
		return AcquireResult{}, fmt.Errorf("acquire script: %d values, want 5", len(vs))
	}
	return AcquireResult{Status: AcquireStatus(vs[0]), Count: vs[1], Max: vs[2], Granted: vs[3], OthersWaiting: vs[4]}, nil
}

// acquireKeysArgs are the acquire script's KEYS and ARGV.
func acquireKeysArgs(instance, bucket string, seedMax, queued, want int, stale time.Duration, epoch int64) (keys, args []string) {
	keys = []string{KeyCount(bucket), KeyMax(bucket), KeyConns(instance), KeyInstances, KeyWaiting(bucket), KeyEpoch(instance)}
	ep := ""
	if epoch > 0 {
		ep = strconv.FormatInt(epoch, 10)
	}
	args = []string{bucket, strconv.Itoa(seedMax), instance, strconv.Itoa(max(queued, 0)), strconv.FormatInt(stale.Milliseconds(), 10),
		strconv.Itoa(max(want, 1)), ep}
	return keys, args
}

// ReleaseSlot runs the release script: gives back one slot of bucket held
// by instance. released is false when Redis recorded no slot of bucket for
// instance (nothing changed). count is the count after. It is not fenced
// by the register epoch: see ReleaseSlotAt.
func ReleaseSlot(ctx context.Context, c rueidis.Client, instance, bucket string) (released bool, count int64, err error) {
	return ReleaseSlotAt(ctx, c, instance, bucket, 0)
}

// ReleaseSlotAt is ReleaseSlot fenced by the register epoch (Register's
// Epoch; 0: not checked): if instance has registered again since epoch,
// the release changes nothing (released false): it was sent before that
// register, which already set the hash to what the instance held.
func ReleaseSlotAt(ctx context.Context, c rueidis.Client, instance, bucket string, epoch int64) (released bool, count int64, err error) {
	ep := ""
	if epoch > 0 {
		ep = strconv.FormatInt(epoch, 10)
	}
	vs, err := releaseScript.Exec(ctx, c,
		[]string{KeyCount(bucket), KeyConns(instance), KeyEpoch(instance), KeyWaiting(bucket)},
		[]string{bucket, ChanReleased(bucket), ep}).AsIntSlice()
	if err != nil {
		return false, 0, err
	}
	if len(vs) < 2 {
		return false, 0, fmt.Errorf("release script: %d values, want 2 or 3", len(vs))
	}
	return vs[0] == 1, vs[1], nil
}

// SetWaiting records that instance has n clients waiting for bucket (n 0:
// none, the entry is removed).
func SetWaiting(ctx context.Context, c rueidis.Client, instance, bucket string, n int) error {
	return waitingScript.Exec(ctx, c, []string{KeyWaiting(bucket)},
		[]string{instance, strconv.Itoa(max(n, 0))}).Error()
}
