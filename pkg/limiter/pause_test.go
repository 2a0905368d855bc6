package limiter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A paused bucket with free slots queues newcomers, a release while paused
// goes back to the counter instead of to the waiter, the queue timeout
// still applies, and Resume admits the head at once.
func TestPauseQueuesThenResumeAdmits(t *testing.T) {
	l := NewLocal([]BucketConfig{{ID: "b", MaxConnections: 2, MaxQueueSize: 5, QueueTimeout: time.Minute},
		{ID: "t", MaxConnections: 2, MaxQueueSize: 5, QueueTimeout: 50 * time.Millisecond}})
	defer l.Close()
	held, err := l.Acquire(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if !l.SetPaused("b", true) || !l.Paused("b") || l.Paused("t") || l.SetPaused("nope", true) {
		t.Fatal("SetPaused/Paused")
	}
	got := make(chan error, 1)
	go func() {
		tk, err := l.Acquire(context.Background(), "b")
		if err == nil {
			defer tk.Release()
		}
		got <- err
	}()
	waitQueued(t, l, "b", 1)
	held.Release() // paused: not handed over
	select {
	case err := <-got:
		t.Fatalf("admitted while paused: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if s := stats(t, l, "b"); s.InUse != 0 || s.Queued != 1 {
		t.Fatalf("while paused: %+v", s)
	}
	l.SetPaused("b", false)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("resume did not admit the waiter")
	}

	// queue_timeout still applies to a paused bucket.
	l.SetPaused("t", true)
	_, err = l.Acquire(t.Context(), "t")
	var le *Error
	if !errors.As(err, &le) || le.Code != CodeQueueTimeout {
		t.Fatalf("paused bucket past queue_timeout: %v, want queue timeout", err)
	}
}
