package limiter

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// BenchmarkRedisAcquireRelease: one Acquire + Release round trip through
// the Redis limiter, one caller, free slots. Reports p50/p99 in µs.
// linger-0: the acquire and the release script every time (no PUBLISH:
// nobody waits); linger-100ms (the default): the released slot stays warm (SlotLinger)
// and the next acquire takes it with no Redis round trip.
func BenchmarkRedisAcquireRelease(b *testing.B) {
	for _, d := range []time.Duration{0, DefaultSlotLinger} {
		b.Run("linger-"+d.String(), func(b *testing.B) { benchAcquireRelease(b, d) })
	}
}

func benchAcquireRelease(b *testing.B, linger time.Duration) {
	rs := redistest.Start(b)
	l := newRedisLimiter(b, rs.Addr(), "bench", []BucketConfig{{ID: "b", MaxConnections: 100, MaxQueueSize: 10}},
		func(o *RedisOptions) { o.SlotLinger = linger })
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		tk, err := l.Acquire(ctx, "b")
		if err != nil {
			b.Fatal(err)
		}
		tk.Release()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkRedisAcquire64: 64 concurrent callers on one instance and one
// bucket with free slots, each taking and releasing. The Queue runs one
// acquire script at a time per bucket (its dispatcher), for all the
// callers then waiting (acquire n), so this measures the per-bucket
// admission rate of one instance. Reports acquires/s and script calls per
// acquire+release (INFO commandstats). linger-0: every release runs the
// release script; linger-100ms: SlotLinger (the default).
func BenchmarkRedisAcquire64(b *testing.B) {
	for _, d := range []time.Duration{0, DefaultSlotLinger} {
		b.Run("linger-"+d.String(), func(b *testing.B) {
			rs := redistest.Start(b)
			c := rs.Client(b)
			l := newRedisLimiter(b, rs.Addr(), "bench", []BucketConfig{{ID: "b", MaxConnections: 10000, MaxQueueSize: 1000, QueueTimeout: time.Minute}},
				func(o *RedisOptions) { o.SlotLinger = d })
			before := scriptCalls(b, c)
			benchParallel(b, 64, func() {
				tk, err := l.Acquire(context.Background(), "b")
				if err != nil {
					b.Error(err)
					return
				}
				tk.Release()
			})
			b.ReportMetric(float64(scriptCalls(b, c)-before)/float64(b.N), "scripts/op")
		})
	}
}

// BenchmarkRedisAcquireScript64: the acquire script alone, 64 concurrent
// callers (rueidis pipelines them on one connection): the ceiling Redis
// itself puts on admissions, for comparison with BenchmarkRedisAcquire64.
func BenchmarkRedisAcquireScript64(b *testing.B) {
	rs := redistest.Start(b)
	c := rs.Client(b)
	if _, err := coord.ReconcileInstance(context.Background(), c, "bench", time.Minute, nil); err != nil {
		b.Fatal(err)
	}
	benchParallel(b, 64, func() {
		if _, err := coord.AcquireSlot(context.Background(), c, "bench", "b", 1<<30); err != nil {
			b.Error(err)
		}
	})
}

// benchParallel runs b.N calls of f over n goroutines and reports calls/s.
func benchParallel(b *testing.B, n int, f func()) {
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	b.ResetTimer()
	start := time.Now()
	for range n {
		wg.Go(func() {
			for range work {
				f()
			}
		})
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "acquires/s")
}
