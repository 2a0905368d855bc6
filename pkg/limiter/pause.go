package limiter

// Pausing a bucket (the admin API's POST /admin/buckets/{id}/pause, for a
// backend failover): while a bucket's queue is paused, no slot is taken
// for it and no released slot is handed to a waiter, so every new login
// queues, exactly as if the bucket were full. Its queue limits still
// apply: max_queue_size (a full queue refuses with 50005) and
// queue_timeout (50004 after it). Sessions that hold a slot are not
// touched. Resume lets the queue take slots again, head first.
//
//	state    Acquire            a Release          Resume / Pause
//	running  takes a free slot  hands to the head  Pause → paused
//	paused   queues             goes to the source Resume → running (Wake)
//
// The flag lives on the Queue and survives reloads (Update keeps a bucket's
// queue). It is per instance: a fleet-wide pause is one Pause per
// instance (the admin API's ?fleet=1).

// Pauser is a Limiter whose buckets can be paused. Local and Redis are.
type Pauser interface {
	// SetPaused pauses (true) or resumes (false) bucket's admissions and
	// reports whether the bucket exists.
	SetPaused(bucket string, paused bool) bool
	// Paused reports whether bucket is paused.
	Paused(bucket string) bool
}

var (
	_ Pauser = (*Local)(nil)
	_ Pauser = (*Redis)(nil)
)

// Pause stops the queue from taking slots: newcomers queue.
func (q *Queue) Pause() { q.paused.Store(true) }

// Resume lets the queue take slots again and tries for its head waiter.
func (q *Queue) Resume() {
	if q.paused.Swap(false) {
		q.Wake()
	}
}

// IsPaused reports whether the queue is paused.
func (q *Queue) IsPaused() bool { return q.paused.Load() }

// setPausedIn pauses or resumes the queue of m[bucket] (q gets it).
func setPausedIn[B any](m map[string]*B, q func(*B) *Queue, bucket string, paused bool) bool {
	b := m[bucket]
	if b == nil {
		return false
	}
	if paused {
		q(b).Pause()
	} else {
		q(b).Resume()
	}
	return true
}

func pausedIn[B any](m map[string]*B, q func(*B) *Queue, bucket string) bool {
	b := m[bucket]
	return b != nil && q(b).IsPaused()
}

func localQueue(b *localBucket) *Queue { return b.q }
func redisQueue(b *redisBucket) *Queue { return b.q }

// SetPaused pauses or resumes bucket; see Pauser.
func (l *Local) SetPaused(bucket string, paused bool) bool {
	return setPausedIn(*l.buckets.Load(), localQueue, bucket, paused)
}

// Paused reports whether bucket is paused.
func (l *Local) Paused(bucket string) bool { return pausedIn(*l.buckets.Load(), localQueue, bucket) }

// SetPaused pauses or resumes bucket on this instance; see Pauser.
func (l *Redis) SetPaused(bucket string, paused bool) bool {
	return setPausedIn(*l.buckets.Load(), redisQueue, bucket, paused)
}

// Paused reports whether bucket is paused on this instance.
func (l *Redis) Paused(bucket string) bool { return pausedIn(*l.buckets.Load(), redisQueue, bucket) }
