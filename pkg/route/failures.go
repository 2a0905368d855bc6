package route

import (
	"net"
	"sync"
	"time"
)

// DefaultMaxSources bounds the source addresses a FailureLimiter tracks
// at once (about 100 bytes each). When full, expired entries go first,
// then a random one.
const DefaultMaxSources = 100000

// FailureLimiter counts, per source address, the logins that failed every
// credential rule they reached by a PBKDF2 verification, in fixed windows.
// Once an address has MaxFailures in its window, Blocked reports true
// until the window ends: the Table then refuses that address's logins
// that would need another PBKDF2 (RuleThrottled), so one address cannot
// spend more than MaxFailures verifications per window of proxy CPU, nor
// guess more than that many passwords.
//
// It outlives Tables (a reload keeps the counts) and is safe for
// concurrent use. Nothing of the password is kept, only counts.
type FailureLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	m      map[string]*failures
	cap    int
}

type failures struct {
	start time.Time // the window's start
	n     int
}

// NewFailureLimiter allows max failures per source per window; max <= 0
// turns it off.
func NewFailureLimiter(max int, window time.Duration) *FailureLimiter {
	return &FailureLimiter{max: max, window: window, now: time.Now, m: map[string]*failures{}, cap: DefaultMaxSources}
}

// SetLimits changes the limits (reload); counts are kept.
func (f *FailureLimiter) SetLimits(max int, window time.Duration) {
	f.mu.Lock()
	f.max, f.window = max, window
	f.mu.Unlock()
}

// sourceKey is the address part of a "host:port" source (the port of a
// client changes with every connection).
func sourceKey(src string) string {
	if h, _, err := net.SplitHostPort(src); err == nil {
		return h
	}
	return src
}

// Blocked reports whether src has used up its failures in the current
// window, and when the window ends.
func (f *FailureLimiter) Blocked(src string) (bool, time.Time) {
	if f == nil || src == "" {
		return false, time.Time{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.max <= 0 {
		return false, time.Time{}
	}
	e := f.m[sourceKey(src)]
	now := f.now()
	if e == nil || now.Sub(e.start) >= f.window {
		return false, time.Time{}
	}
	return e.n >= f.max, e.start.Add(f.window)
}

// Fail counts a failed credential login from src.
func (f *FailureLimiter) Fail(src string) {
	if f == nil || src == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.max <= 0 {
		return
	}
	k := sourceKey(src)
	now := f.now()
	e := f.m[k]
	if e == nil || now.Sub(e.start) >= f.window {
		if e == nil && len(f.m) >= f.cap {
			f.evictLocked(now)
		}
		e = &failures{start: now}
		f.m[k] = e
	}
	e.n++
}

// evictLocked makes room: every expired entry, or else a random one.
func (f *FailureLimiter) evictLocked(now time.Time) {
	for k, e := range f.m {
		if now.Sub(e.start) >= f.window {
			delete(f.m, k)
		}
	}
	if len(f.m) < f.cap {
		return
	}
	for k := range f.m {
		delete(f.m, k)
		return
	}
}

// Sources is how many source addresses are tracked.
func (f *FailureLimiter) Sources() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}
