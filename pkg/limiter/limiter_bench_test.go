package limiter

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// One goroutine, a free slot every time: the cost admission adds to a login
// that does not wait.
func BenchmarkAcquireReleaseUncontended(b *testing.B) {
	l := NewLocal([]BucketConfig{cfg("b", 16, 64, 30*time.Second)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		tk, err := l.Acquire(ctx, "b")
		if err != nil {
			b.Fatal(err)
		}
		tk.Release()
	}
}

// 64 goroutines on one bucket of 16 slots: most Acquires queue and are
// handed a slot by a Release.
func BenchmarkAcquireRelease64On16(b *testing.B) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{{"no_timeout", 0}, {"timeout_30s", 30 * time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			l := NewLocal([]BucketConfig{cfg("b", 16, 64, tc.timeout)})
			ctx := context.Background()
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism((64 + procs - 1) / procs)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tk, err := l.Acquire(ctx, "b")
					if err != nil {
						b.Error(err)
						return
					}
					tk.Release()
				}
			})
			if s := l.Snapshot()[0]; s.InUse != 0 || s.Queued != 0 {
				b.Fatalf("leaked: %+v", s)
			}
		})
	}
}
