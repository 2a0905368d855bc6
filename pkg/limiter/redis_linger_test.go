package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// scriptCalls is how many scripts Redis has run (EVALSHA and EVAL, INFO
// commandstats): the limiter's round trips for acquires and releases.
func scriptCalls(t testing.TB, c rueidis.Client) int64 {
	t.Helper()
	s, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(s, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
				v, _ := strconv.ParseInt(calls, 10, 64)
				n += v
			}
		}
	}
	return n
}

// countAndHashes reads a bucket's count and the sum of every instance's
// hash field in one atomic step.
func countAndHashes(t testing.TB, c rueidis.Client, bucket string, ids ...string) (count, sum int64) {
	t.Helper()
	keys := []string{coord.KeyCount(bucket)}
	for _, id := range ids {
		keys = append(keys, coord.KeyConns(id))
	}
	vs, err := c.Do(context.Background(), c.B().Eval().Script(`
local s = 0
for i = 2, #KEYS do s = s + (tonumber(redis.call('HGET', KEYS[i], ARGV[1])) or 0) end
return {tonumber(redis.call('GET', KEYS[1])) or 0, s}`).Numkeys(int64(len(keys))).Key(keys...).Arg(bucket).Build()).AsIntSlice()
	if err != nil || len(vs) != 2 {
		t.Fatalf("count and hashes: %v %v", vs, err)
	}
	return vs[0], vs[1]
}

func lingerOpts(d time.Duration) func(*RedisOptions) {
	return func(o *RedisOptions) { o.SlotLinger, o.PollInterval = d, time.Hour }
}

// TestRedisLingerReusesWithoutRedis: released slots stay warm and counted
// in Redis (count = hash = tickets + warm), the next acquires take them
// with no script call, and unused they go back after the linger.
func TestRedisLingerReusesWithoutRedis(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 5, QueueTimeout: 5 * time.Second}}
	const linger = 400 * time.Millisecond
	a := newRedisLimiter(t, rs.Addr(), "a", bs, lingerOpts(linger))
	held := acquireN(t, a, "b", 3)
	releaseAll(held)
	if w := a.Warm("b"); w != 3 {
		t.Fatalf("warm %d after 3 releases, want 3", w)
	}
	if n, s := countAndHashes(t, c, "b", "a"); n != 3 || s != 3 {
		t.Fatalf("count %d, hash %d while 3 are warm; want 3 and 3", n, s)
	}
	before := scriptCalls(t, c)
	held = acquireN(t, a, "b", 2)
	if d := scriptCalls(t, c) - before; d != 0 {
		t.Fatalf("2 acquires with 3 warm slots ran %d scripts, want 0", d)
	}
	if st := a.Snapshot()[0]; st.InUse != 2 {
		t.Fatalf("InUse %d, want 2 (warm slots not in use)", st.InUse)
	}
	if _, s := a.Status(); s[0].Held != 3 || s[0].Warm != 1 {
		t.Fatalf("held %d warm %d, want 3 and 1", s[0].Held, s[0].Warm)
	}
	releaseAll(held)
	// Unused, they go back by themselves.
	waitCond(t, linger+3*time.Second, "warm slots expired and given back", func() bool {
		n, s := countAndHashes(t, c, "b", "a")
		return a.Warm("b") == 0 && n == 0 && s == 0
	})
}

// TestRedisLingerOffRunsScripts: slot_linger 0 gives every slot back at
// once, and the release publishes only while someone waits.
func TestRedisLingerOffRunsScripts(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 5, QueueTimeout: 5 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, lingerOpts(0))
	held := acquireN(t, a, "b", 2)
	releaseAll(held)
	if w := a.Warm("b"); w != 0 {
		t.Fatalf("warm %d with slot_linger 0", w)
	}
	if n, s := countAndHashes(t, c, "b", "a"); n != 0 || s != 0 {
		t.Fatalf("count %d, hash %d; want 0", n, s)
	}
	// A PUBLISH from a script counts in commandstats as a publish call.
	pub := func() int64 {
		info, _ := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
		_, r, ok := strings.Cut(info, "cmdstat_publish:calls=")
		if !ok {
			return 0
		}
		v, _ := strconv.ParseInt(r[:strings.IndexByte(r, ',')], 10, 64)
		return v
	}
	p0 := pub()
	releaseAll(acquireN(t, a, "b", 3))
	if d := pub() - p0; d != 0 {
		t.Fatalf("3 releases with nobody waiting published %d times", d)
	}
	held = acquireN(t, a, "b", 1)
	if err := coord.SetWaiting(context.Background(), c, "z", "b", 1); err != nil { // z has a client waiting
		t.Fatal(err)
	}
	releaseAll(held)
	if d := pub() - p0; d != 1 {
		t.Fatalf("a release with a waiter published %d times, want 1", d)
	}
}

// TestRedisLingerGoesBackWhenOthersWait: instance a keeps 2 of 2 warm;
// a client of b waits; a's warm slots go back at once — through the
// poll's read of the waiting hash, or a proxy:pressure signal — never
// after the (long) linger, and the count never passes max.
func TestRedisLingerGoesBackWhenOthersWait(t *testing.T) {
	for _, how := range []string{"poll", "pressure"} {
		t.Run(how, func(t *testing.T) {
			rs := redistest.Start(t)
			c := rs.Client(t)
			bs := []BucketConfig{{ID: "b", MaxConnections: 2, MaxQueueSize: 5, QueueTimeout: 10 * time.Second}}
			tweak := func(o *RedisOptions) {
				o.SlotLinger, o.PollInterval = 30*time.Second, time.Hour
				if how == "poll" {
					o.PollInterval = 150 * time.Millisecond
				}
			}
			a := newRedisLimiter(t, rs.Addr(), "a", bs, tweak)
			b := newRedisLimiter(t, rs.Addr(), "b", bs, tweak)
			// Both have reached Redis (on a loaded host the first register
			// can take longer than the op timeout): a never-reached
			// instance admits nobody (no expected_instances here).
			for _, l := range []*Redis{a, b} {
				waitCond(t, 10*time.Second, l.InstanceID()+" connected", func() bool { return l.State() == StateConnected })
			}
			releaseAll(acquireN(t, a, "b", 2))
			if a.Warm("b") != 2 {
				t.Fatalf("a has %d warm, want 2", a.Warm("b"))
			}
			got := make(chan time.Duration, 1)
			start := time.Now()
			go func() {
				tk, err := b.Acquire(context.Background(), "b")
				if err != nil {
					t.Error(err)
					close(got)
					return
				}
				got <- time.Since(start)
				tk.Release()
			}()
			if how == "pressure" {
				// What package pool does when b's client queues.
				waitCond(t, 2*time.Second, "b's client queued", func() bool { return b.Snapshot()[0].Queued == 1 })
				redistest.Do(t, c, "PUBLISH", coord.ChanPressurePrefix+"b", "b@other")
			}
			select {
			case d := <-got:
				t.Logf("b's waiter served %s after it asked (%s)", d.Round(time.Millisecond), how)
			case <-time.After(5 * time.Second):
				t.Fatalf("b's waiter not served while a kept its slots warm (%s)", how)
			}
			if n, s := countAndHashes(t, c, "b", "a", "b"); n > 2 || n != s {
				t.Fatalf("count %d, hashes %d", n, s)
			}
			// While b's clients wait (pressure hold, or the waiting hash),
			// a does not linger.
			if how == "pressure" {
				releaseAll(acquireN(t, a, "b", 1))
				if w := a.Warm("b"); w != 0 {
					t.Fatalf("a lingered %d right after pressure", w)
				}
			}
		})
	}
}

// TestRedisLingerNotWithLocalWaiters: a release while clients wait in
// the instance's own queue goes back to Redis at once (and the waiter
// gets it).
func TestRedisLingerNotWithLocalWaiters(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 2, MaxQueueSize: 5, QueueTimeout: 10 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, lingerOpts(30*time.Second))
	held := acquireN(t, a, "b", 2)
	got := make(chan Ticket, 1)
	go func() {
		tk, err := a.Acquire(context.Background(), "b")
		if err != nil {
			t.Error(err)
		}
		got <- tk
	}()
	waitCond(t, 2*time.Second, "queued", func() bool { return a.Snapshot()[0].Queued == 1 })
	held[0].Release()
	tk := <-got
	if tk == nil {
		t.FailNow()
	}
	if w := a.Warm("b"); w != 0 {
		t.Fatalf("warm %d with a local waiter", w)
	}
	if n, s := countAndHashes(t, c, "b", "a"); n != 2 || s != 2 {
		t.Fatalf("count %d, hash %d, want 2", n, s)
	}
	tk.Release()
	held[1].Release()
}

// TestRedisLingerShutdown: Close during the linger gives the warm slots
// back at once; a ticket still held keeps its slot until its release,
// which then goes straight to Redis.
func TestRedisLingerShutdown(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 5, QueueTimeout: 5 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, lingerOpts(time.Minute))
	held := acquireN(t, a, "b", 3)
	releaseAll(held[1:])
	if a.Warm("b") != 2 {
		t.Fatalf("warm %d, want 2", a.Warm("b"))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if w := a.Warm("b"); w != 0 {
		t.Fatalf("warm %d after Close", w)
	}
	if n, s := countAndHashes(t, c, "b", "a"); n != 1 || s != 1 {
		t.Fatalf("after Close: count %d, hash %d; want 1 (the ticket still held)", n, s)
	}
	held[0].Release()
	if w := a.Warm("b"); w != 0 {
		t.Fatalf("a release after Close lingered (%d warm)", w)
	}
	if n, s := countAndHashes(t, c, "b", "a"); n != 0 || s != 0 {
		t.Fatalf("count %d, hash %d after the last release; want 0", n, s)
	}
}

// TestRedisLingerLeaseLoss: the lease ends (a FakeClock passes its end)
// while slots are warm: they are dropped at once with the move to
// fallback, and the register on the way back makes Redis count only the
// ticket still held: count = hash = sessions open.
func TestRedisLingerLeaseLoss(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 0}}
	clk := NewFakeClock(time.Unix(1_000_000, 0))
	ttl := 2 * time.Minute
	l, err := NewRedis(RedisOptions{Addr: rs.Addr(), InstanceID: "a", OpTimeout: 300 * time.Millisecond, HeartbeatTTL: ttl,
		PollInterval: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond, SettleTime: 100 * time.Millisecond, Log: testLog(),
		SlotLinger: time.Minute}, bs, WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Disconnect()
	held := acquireN(t, l, "b", 3)
	releaseAll(held[1:])
	if l.Warm("b") != 2 {
		t.Fatalf("warm %d, want 2", l.Warm("b"))
	}
	clk.Advance(ttl) // past the lease's end
	// The warm slots go with the move to fallback (the linger is a
	// minute): held is then the ticket alone.
	waitCond(t, 3*time.Second, "fallback on lease loss, warm slots dropped", func() bool {
		_, s := l.Status()
		return l.Fallbacks() >= 1 && s[0].Warm == 0 && s[0].Held == 1
	})
	waitCond(t, 5*time.Second, "reconciled", func() bool { return l.Reconciles() >= 1 && !l.InFallback() })
	if n, s := countAndHashes(t, c, "b", "a"); n != 1 || s != 1 {
		t.Fatalf("after re-registering: count %d, hash %d; want 1 (the ticket still held)", n, s)
	}
	held[0].Release()
	waitCond(t, 2*time.Second, "the last slot back", func() bool {
		n, _ := countAndHashes(t, c, "b", "a")
		return n == int64(l.Warm("b"))
	})
}

// TestRedisLingerRedisLost: Redis stops answering while slots are warm:
// the instance falls back and drops them locally; when Redis is back, the
// register makes it count what the tickets hold.
func TestRedisLingerRedisLost(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 0}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, func(o *RedisOptions) { o.SlotLinger = time.Minute })
	held := acquireN(t, a, "b", 3)
	releaseAll(held[1:])
	rs.Pause()
	waitCond(t, 3*time.Second, "fallback, warm slots dropped", func() bool {
		_, s := a.Status()
		return a.InFallback() && s[0].Warm == 0 && s[0].Held == 1
	})
	rs.Resume()
	waitCond(t, 5*time.Second, "reconciled", func() bool { return !a.InFallback() })
	if n, s := countAndHashes(t, c, "b", "a"); n != 1 || s != 1 {
		t.Fatalf("count %d, hash %d; want 1", n, s)
	}
	held[0].Release()
}

// TestRedisLingerChurnExact: three instances with linger churn on a
// bucket of 6 from 24 clients (queues, waits, warm slots and flushes all
// mixed) while a sampler reads count and the hashes atomically: the count
// never passes max and always equals the sum of the hashes; at the end
// every slot is back.
func TestRedisLingerChurnExact(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	const maxConns, clients = 6, 24
	bs := []BucketConfig{{ID: "b", MaxConnections: maxConns, MaxQueueSize: clients, QueueTimeout: 30 * time.Second}}
	ids := []string{"a", "b", "c"}
	var ls []*Redis
	for _, id := range ids {
		ls = append(ls, newRedisLimiter(t, rs.Addr(), id, bs, func(o *RedisOptions) {
			o.SlotLinger, o.PollInterval = 20*time.Millisecond, 200*time.Millisecond
		}))
	}
	stop := make(chan struct{})
	var samples, bad atomic.Int64
	var badMsg atomic.Value
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, s := countAndHashes(t, c, "b", ids...)
			samples.Add(1)
			if n > maxConns || n != s {
				bad.Add(1)
				badMsg.CompareAndSwap(nil, fmt.Sprintf("count %d, hashes %d", n, s))
			}
		}
	}()
	var grants atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(2 * time.Second)
	for i := range clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for k := 0; time.Now().Before(end); k++ {
				l := ls[(i+k)%len(ls)]
				tk, err := l.Acquire(context.Background(), "b")
				if err != nil {
					t.Error(err)
					return
				}
				grants.Add(1)
				time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
				tk.Release()
				if r.IntN(4) == 0 {
					time.Sleep(30 * time.Millisecond) // let some linger expire
				}
			}
		})
	}
	wg.Wait()
	waitCond(t, 3*time.Second, "every slot back", func() bool {
		n, s := countAndHashes(t, c, "b", ids...)
		return n == 0 && s == 0
	})
	close(stop)
	<-sampled
	t.Logf("%d grants, %d samples of count and hashes", grants.Load(), samples.Load())
	if bad.Load() > 0 {
		t.Fatalf("%d bad samples; first: %v", bad.Load(), badMsg.Load())
	}
	if samples.Load() < 100 || grants.Load() < clients {
		t.Fatalf("too little happened: %d samples, %d grants", samples.Load(), grants.Load())
	}
}

// TestRedisLingerRedisRestartedEmpty: Redis restarts empty while slots
// are warm (the poll is an hour away, so nothing else would notice): the
// dropped connection sends the warm slots back and stops the linger, so
// the next login runs the acquire script, which finds the instance
// unregistered; after the register, Redis counts exactly the tickets.
func TestRedisLingerRedisRestartedEmpty(t *testing.T) {
	rs := redistest.Start(t)
	bs := []BucketConfig{{ID: "b", MaxConnections: 5, MaxQueueSize: 5, QueueTimeout: 5 * time.Second}}
	a := newRedisLimiter(t, rs.Addr(), "a", bs, lingerOpts(time.Minute))
	held := acquireN(t, a, "b", 3)
	releaseAll(held[1:])
	if a.Warm("b") != 2 {
		t.Fatalf("warm %d, want 2", a.Warm("b"))
	}
	rs.Kill()
	rs.Restart()
	c := rs.Client(t)
	waitCond(t, 3*time.Second, "warm slots gone after the connection dropped", func() bool { return a.Warm("b") == 0 })
	held = append(held[:1], acquireN(t, a, "b", 1)...)
	waitCond(t, 5*time.Second, "re-registered: count = hash = the 2 tickets", func() bool {
		n, s := countAndHashes(t, c, "b", "a")
		return !a.InFallback() && n == 2 && s == 2
	})
	releaseAll(held)
}
