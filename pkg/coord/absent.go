package coord

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Absent is an instance this one saw recently that a register found
// unknown to Redis (Redis restarted empty, or a failover lost it), and
// what to record it as holding, bucket → slots (the limiter records all
// of each bucket: it may have been granted anything since last seen).
type Absent struct {
	ID   string
	Held map[string]int64
}

// reserveAbsentScript records, for each absent instance that Redis does
// not know at all (not in proxy:instances or proxy:fenced, no heartbeat,
// incarnation or conns key), what it is recorded as holding, counted, and
// fences it as if its lease had been renewed now and expired lease ms
// later: the reaper parks it after that + reclaim_after and forgets it
// after forget_after, like any lost lease, and its own register (when it
// reaches Redis) gives the record back and re-asserts what it holds.
// Counts may rise above max here: those sessions are open at the backend.
//
//	KEYS: proxy:instances, proxy:fenced
//	ARGV: lease ms, then per instance: id, k, then k pairs bucket, slots
//	→ the ids recorded
var reserveAbsentScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local i = 2
while i <= #ARGV do
  local id = ARGV[i]
  local k = tonumber(ARGV[i + 1]) or 0
  local p = 'proxy:instance:' .. id
  local known = redis.call('SISMEMBER', KEYS[1], id) == 1 or redis.call('SISMEMBER', KEYS[2], id) == 1
    or redis.call('EXISTS', p .. ':heartbeat', p .. ':incarnation', p .. ':conns') > 0
  if not known then
    redis.call('SADD', KEYS[2], id)
    redis.call('HSET', p .. ':fence', 'inc', '', 'at', now + tonumber(ARGV[1]), 'parked', 0)
    for j = 0, k - 1 do
      local b = ARGV[i + 2 + 2 * j]
      local n = tonumber(ARGV[i + 3 + 2 * j]) or 0
      if n > 0 then
        redis.call('HSET', p .. ':conns', b, n)
        redis.call('INCRBY', 'proxy:bucket:' .. b .. ':count', n)
      end
    end
    out[#out + 1] = id
  end
  i = i + 2 + 2 * k
end
return out
`)

// ReserveAbsent runs the reserve-absent script (see above) for absent,
// whose leases are taken to end lease from now (the heartbeat TTL). It
// returns the ids it recorded (the others were known to Redis).
func ReserveAbsent(ctx context.Context, c rueidis.Client, lease time.Duration, absent []Absent) ([]string, error) {
	if len(absent) == 0 {
		return nil, nil
	}
	args := []string{strconv.FormatInt(max(lease.Milliseconds(), 1), 10)}
	for _, a := range absent {
		bs := slices.Sorted(maps.Keys(a.Held))
		args = append(args, a.ID, strconv.Itoa(len(bs)))
		for _, b := range bs {
			args = append(args, b, strconv.FormatInt(max(a.Held[b], 0), 10))
		}
	}
	return reserveAbsentScript.Exec(ctx, c, []string{KeyInstances, KeyFenced}, args).AsStrSlice()
}
