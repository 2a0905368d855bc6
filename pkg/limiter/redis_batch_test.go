package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/coord"
	"github.com/tdsgate/tdsgate/pkg/registry/redistest"
)

// TestRedisAcquireBatches: 64 concurrent acquires of one bucket on one
// instance share acquire-script calls (acquire n): far fewer script runs
// than acquires, and count = hash = tickets. On a bucket of 10 the same
// burst gets exactly 10 slots, the rest queue, and every queued client is
// served as slots come back, with the count exact throughout.
func TestRedisAcquireBatches(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	const callers = 64
	for _, maxConns := range []int{1000, 10} {
		bucket := "free"
		if maxConns < callers {
			bucket = "full"
		}
		t.Run(bucket, func(t *testing.T) {
			bs := []BucketConfig{{ID: bucket, MaxConnections: maxConns, MaxQueueSize: callers, QueueTimeout: 30 * time.Second}}
			l := newRedisLimiter(t, rs.Addr(), "a-"+bucket, bs, lingerOpts(0))
			before := scriptCalls(t, c)
			start := make(chan struct{})
			tickets := make(chan Ticket, callers)
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range callers {
				wg.Go(func() {
					<-start
					tk, err := l.Acquire(context.Background(), bucket)
					if err != nil {
						failed.Add(1)
						t.Error(err)
						return
					}
					tickets <- tk
				})
			}
			close(start)
			want := min(callers, maxConns)
			var held []Ticket
			for range want {
				select {
				case tk := <-tickets:
					held = append(held, tk)
				case <-time.After(10 * time.Second):
					t.Fatalf("only %d of %d granted", len(held), want)
				}
			}
			calls := scriptCalls(t, c) - before
			t.Logf("%d concurrent acquires (max %d): %d granted with %d script calls", callers, maxConns, len(held), calls)
			if n, s := countAndHashes(t, c, bucket, "a-"+bucket); n != int64(want) || s != int64(want) {
				t.Fatalf("count %d, hash %d; want %d", n, s, want)
			}
			if maxConns >= callers && calls > callers/4 {
				t.Fatalf("%d acquires ran %d acquire scripts; batching should share them", callers, calls)
			}
			if maxConns < callers {
				waitCond(t, 5*time.Second, "the rest queued", func() bool { return l.Snapshot()[0].Queued == callers-maxConns })
				select {
				case <-tickets:
					t.Fatal("granted past max")
				default:
				}
				// Serve the queue: each release lets one more in.
				for served := want; served < callers; served++ {
					held[0].Release()
					held = held[1:]
					select {
					case tk := <-tickets:
						held = append(held, tk)
					case <-time.After(10 * time.Second):
						t.Fatalf("queued client %d not served", served+1)
					}
					if n, s := countAndHashes(t, c, bucket, "a-"+bucket); n > int64(maxConns) || n != s {
						t.Fatalf("count %d, hash %d (max %d)", n, s, maxConns)
					}
				}
			}
			wg.Wait()
			releaseAll(held)
			if n, s := countAndHashes(t, c, bucket, "a-"+bucket); n != 0 || s != 0 || failed.Load() > 0 {
				t.Fatalf("count %d, hash %d at the end, %d failed", n, s, failed.Load())
			}
		})
	}
}

// TestScriptAcquireN: the acquire script's n never grants past max, nor
// past the slots owed to instances ahead in the waiting hash.
func TestScriptAcquireN(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client(t)
	ctx := context.Background()
	for _, id := range []string{"p", "q"} {
		if _, err := coord.ReconcileInstance(ctx, c, id, time.Minute, nil); err != nil {
			t.Fatal(err)
		}
	}
	r, err := coord.AcquireSlots(ctx, c, "p", "b", 5, 3, 3, time.Minute)
	if err != nil || r.Status != coord.AcquireGranted || r.Granted != 3 || r.Count != 3 {
		t.Fatalf("3 of 5: %+v %v", r, err)
	}
	r, _ = coord.AcquireSlots(ctx, c, "p", "b", 5, 0, 4, time.Minute)
	if r.Status != coord.AcquireGranted || r.Granted != 2 || r.Count != 5 {
		t.Fatalf("4 more of 5 with 3 taken: %+v, want 2 granted", r)
	}
	if r.OthersWaiting != 0 {
		t.Fatalf("others waiting %d", r.OthersWaiting)
	}
	// q waits (full), then p frees 2: p's own n-acquire must leave q's
	// client its slot (q has waited longer).
	if r, _ := coord.AcquireSlots(ctx, c, "q", "b", 5, 1, 1, time.Minute); r.Status != coord.AcquireFull {
		t.Fatalf("q on a full bucket: %+v", r)
	}
	time.Sleep(5 * time.Millisecond)
	for range 2 {
		if _, _, err := coord.ReleaseSlot(ctx, c, "p", "b"); err != nil {
			t.Fatal(err)
		}
	}
	r, _ = coord.AcquireSlots(ctx, c, "p", "b", 5, 2, 2, time.Minute)
	if r.Status != coord.AcquireGranted || r.Granted != 1 || r.OthersWaiting != 1 {
		t.Fatalf("p wants 2 of 2 free with q's client waiting longer: %+v, want 1 granted, 1 other waiting", r)
	}
	if n, s := countAndHashes(t, c, "b", "p", "q"); n != 4 || s != 4 {
		t.Fatalf("count %d, hashes %d; want 4", n, s)
	}
}
