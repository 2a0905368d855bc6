package route

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// DefaultHashIterations is the PBKDF2 iteration count of the hashes
// [HashPassword] makes. Every login that reaches a credential rule with an
// uncached password pays one verification (a few milliseconds at this
// count), so it must stay cheap; raising it buys resistance to offline
// guessing of a leaked config at the price of login CPU. Verdicts are
// cached per Table (DefaultCacheSize).
const DefaultHashIterations = passhash.DefaultIterations

// RuleThrottled is the rule index Route returns (with ok false) for a
// login refused because its source address failed credential rules too
// often (FailureLimiter): the frontend answers it with its own error.
const RuleThrottled = -2

// Defaults of Options.
const (
	// DefaultMaxHashIterations bounds the iterations of a rule's
	// password_hash (Options.MaxHashIterations 0), as
	// config.DefaultMaxHashIterations does for the config.
	DefaultMaxHashIterations = config.DefaultMaxHashIterations
	// DefaultNegativeCacheTTL is how long a password that did not verify
	// against a rule is remembered (Options.NegativeCacheTTL 0).
	DefaultNegativeCacheTTL = config.DefaultNegativeCacheTTL
)

// Options bound what a Table's credential rules may cost.
type Options struct {
	// MaxHashIterations is the most PBKDF2 iterations a rule's hash may
	// have; New refuses more, naming routes[i].password_hash. 0:
	// DefaultMaxHashIterations.
	MaxHashIterations int
	// NegativeCacheTTL is how long a negative verdict is cached. 0:
	// DefaultNegativeCacheTTL.
	NegativeCacheTTL time.Duration
	// Failures limits failed credential logins per source address (nil:
	// no limit). It outlives the Table: pass the same one on reload.
	Failures *FailureLimiter
}

// DefaultCacheSize bounds each of a Table's two verdict caches (matches
// and mismatches), in entries of 36 bytes. When full, a random entry is
// evicted. The caches are separate so that a flood of wrong passwords
// cannot evict the right ones.
const DefaultCacheSize = 4096

// HashPassword returns a salted hash of pw for a route's password_hash,
// made with DefaultHashIterations. pw must not be empty.
func HashPassword(pw string) (string, error) { return passhash.New(pw) }

// VerifyPassword reports whether pw matches hash (constant-time compare).
// The error is non-nil only when hash is malformed.
func VerifyPassword(hash, pw string) (bool, error) { return passhash.Verify(hash, pw) }

// Login is what routing looks at, built by the frontend from LOGIN7.
// It prints (fmt, slog) with the password redacted.
type Login struct {
	ServerName string // the server name the client dialled
	Database   string
	User       string
	App        string
	Password   string
	// Source is the client's address ("ip:port", the PROXY header's when
	// there is one): failed credential logins are counted per IP.
	Source string
}

// String formats l without its password.
func (l Login) String() string {
	return fmt.Sprintf("{ServerName:%q Database:%q User:%q App:%q Password:%s}", l.ServerName, l.Database, l.User, l.App, redactedIf(l.Password))
}

// GoString is [Login.String], for %#v.
func (l Login) GoString() string { return "route.Login" + l.String() }

// LogValue makes slog print l without its password.
func (l Login) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("server", l.ServerName),
		slog.String("database", l.Database),
		slog.String("user", l.User),
		slog.String("app", l.App),
	)
}

func redactedIf(s string) string {
	if s == "" {
		return `""`
	}
	return "<redacted>"
}

// Table routes logins to buckets. It is immutable apart from its caches
// and safe for concurrent use.
type Table struct {
	rules         []rule
	defaultBucket string

	macKey   []byte
	macPool  sync.Pool // of *macState: HMAC-SHA256 under macKey
	match    verdictCache
	nomatch  verdictCache // entries expire after negTTL
	negTTL   time.Duration
	failures *FailureLimiter
	hits     atomic.Uint64
	misses   atomic.Uint64
}

type rule struct {
	cfg      config.Route
	server   serverMatcher
	database matcher
	user     matcher
	app      matcher
	hash     *passhash.Hash // nil: not a credential rule
}

// New compiles rules (tried in order) and the default bucket ("" for
// none) into a Table. It checks what it relies on: every rule names a
// bucket, and a password_hash is well formed and comes with a user. That
// the buckets exist is config.Validate's business. Errors name the YAML
// path of the field (routes[i].password_hash) and never quote a hash.
func New(rules []config.Route, defaultBucket string) (*Table, error) {
	return NewWithOptions(rules, defaultBucket, Options{})
}

// NewWithOptions is New with bounds on the cost of credential rules: a
// hash with more than o.MaxHashIterations is refused (naming
// routes[i].password_hash), negative verdicts are cached for
// o.NegativeCacheTTL, and failed credential logins are limited per source
// by o.Failures.
func NewWithOptions(rules []config.Route, defaultBucket string, o Options) (*Table, error) {
	if o.MaxHashIterations <= 0 {
		o.MaxHashIterations = DefaultMaxHashIterations
	}
	if o.NegativeCacheTTL <= 0 {
		o.NegativeCacheTTL = DefaultNegativeCacheTTL
	}
	t := &Table{
		rules:         make([]rule, len(rules)),
		defaultBucket: defaultBucket,
		macKey:        make([]byte, 32),
		match:         newVerdictCache(DefaultCacheSize),
		nomatch:       newVerdictCache(DefaultCacheSize),
		negTTL:        o.NegativeCacheTTL,
		failures:      o.Failures,
	}
	if _, err := rand.Read(t.macKey); err != nil {
		return nil, fmt.Errorf("route: cache key: %w", err)
	}
	t.macPool.New = func() any { return &macState{h: hmac.New(sha256.New, t.macKey)} }
	var errs []error
	for i, r := range rules {
		p := fmt.Sprintf("routes[%d].", i)
		if r.Bucket == "" {
			errs = append(errs, fmt.Errorf("%sbucket: required", p))
		}
		cr := rule{
			cfg:      r,
			server:   newServerMatcher(r.Server),
			database: newMatcher(r.Database),
			user:     newMatcher(r.User),
			app:      newMatcher(r.App),
		}
		if r.PasswordHash != "" {
			h, err := passhash.Parse(r.PasswordHash)
			if err != nil {
				errs = append(errs, fmt.Errorf("%spassword_hash: %w", p, err))
			} else if h.Iterations > o.MaxHashIterations {
				errs = append(errs, fmt.Errorf("%spassword_hash: %d PBKDF2 iterations exceed credential_routes.max_hash_iterations (%d)", p, h.Iterations, o.MaxHashIterations))
			}
			if r.User == "" {
				errs = append(errs, fmt.Errorf("%suser: required by password_hash", p))
			}
			cr.hash = h
		}
		t.rules[i] = cr
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// Route returns the bucket for l and the index of the rule that matched:
// the first rule whose every matcher matches, or the default bucket with
// rule -1. ok is false when neither applies (bucket "", rule -1), or when
// l.Source has used up its failed credential logins (rule RuleThrottled)
// and l reaches a credential rule whose verdict is not cached.
//
// A login that reaches credential rules and matches none of them, having
// paid at least one PBKDF2 verification, counts as a failure of its
// source, wherever it is routed then (a later rule, the default bucket).
func (t *Table) Route(l Login) (bucket string, rule int, ok bool) {
	var host, inst string
	split := false
	var pwKey *[32]byte // HMAC of the password, computed at the first credential rule reached
	var pwKeyBuf [32]byte
	failed := false // a PBKDF2 verification said no
	defer func() {
		if failed && (rule < 0 || t.rules[rule].hash == nil) && rule != RuleThrottled {
			t.failures.Fail(l.Source)
		}
	}()
	for i := range t.rules {
		r := &t.rules[i]
		if r.server.set {
			if !split {
				host, inst = config.SplitServerName(l.ServerName)
				split = true
			}
			if !r.server.match(host, inst) {
				continue
			}
		}
		if !r.database.match(l.Database) || !r.user.match(l.User) || !r.app.match(l.App) {
			continue
		}
		if r.hash != nil {
			if pwKey == nil {
				pwKeyBuf = t.passwordKey(l.Password)
				pwKey = &pwKeyBuf
			}
			match, cached := t.cached(i, *pwKey)
			if !cached {
				if blocked, _ := t.failures.Blocked(l.Source); blocked {
					return "", RuleThrottled, false
				}
				match = t.verify(i, r.hash, *pwKey, l.Password)
				failed = failed || !match
			}
			if !match {
				continue
			}
		}
		return r.cfg.Bucket, i, true
	}
	if t.defaultBucket != "" {
		return t.defaultBucket, -1, true
	}
	return "", -1, false
}

// Describe names rule i for logs: its index, bucket and matchers, with a
// credential rule's hash left out. Describe(-1) names the default bucket.
func (t *Table) Describe(i int) string {
	if i < 0 || i >= len(t.rules) {
		if i == -1 && t.defaultBucket != "" {
			return "default_bucket → " + t.defaultBucket
		}
		return "no route"
	}
	r := t.rules[i].cfg
	var b strings.Builder
	fmt.Fprintf(&b, "routes[%d] → %s (", i, r.Bucket)
	sep := ""
	for _, kv := range [][2]string{{"server", r.Server}, {"database", r.Database}, {"user", r.User}, {"app", r.App}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%s%s=%q", sep, kv[0], kv[1])
			sep = " "
		}
	}
	if r.PasswordHash != "" {
		b.WriteString(sep + "password")
	}
	b.WriteString(")")
	return b.String()
}

// CacheStats counts credential verifications answered from the cache
// (Hits) and by PBKDF2 (Misses), and the entries held.
type CacheStats struct {
	Hits, Misses uint64
	Entries      int
}

// CacheStats returns the Table's verdict cache counters.
func (t *Table) CacheStats() CacheStats {
	return CacheStats{Hits: t.hits.Load(), Misses: t.misses.Load(), Entries: t.match.len() + t.nomatch.len()}
}

// cached returns rule i's cached verdict for the password whose
// [Table.passwordKey] is pwKey, if there is one (counted as a hit).
func (t *Table) cached(i int, pwKey [32]byte) (match, ok bool) {
	k := cacheKey{rule: uint32(i), pw: pwKey}
	if t.match.has(k) {
		t.hits.Add(1)
		return true, true
	}
	if t.nomatch.has(k) {
		t.hits.Add(1)
		return false, true
	}
	return false, false
}

// verify checks pw against rule i's hash by PBKDF2 (a miss) and caches
// the verdict: a match until evicted, a mismatch for negTTL.
func (t *Table) verify(i int, h *passhash.Hash, pwKey [32]byte, pw string) bool {
	k := cacheKey{rule: uint32(i), pw: pwKey}
	t.misses.Add(1)
	ok := h.Verify(pw)
	if ok {
		t.match.add(k, time.Time{})
	} else {
		t.nomatch.add(k, time.Now().Add(t.negTTL))
	}
	return ok
}

// cacheKey identifies a verdict: the rule's index and the HMAC of the
// password. (Keying by the pair rather than by HMAC(index || password)
// lets one HMAC serve every credential rule a login reaches.)
type cacheKey struct {
	rule uint32
	pw   [32]byte
}

// macState is a pooled HMAC with scratch space, so that keying a
// password allocates nothing.
type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// passwordKey is HMAC-SHA256(macKey, pw).
func (t *Table) passwordKey(pw string) [32]byte {
	s := t.macPool.Get().(*macState)
	s.h.Reset()
	s.buf = append(s.buf[:0], pw...)
	s.h.Write(s.buf)
	clear(s.buf)
	s.h.Sum(s.sum[:0])
	k := s.sum
	t.macPool.Put(s)
	return k
}

// verdictCache is a bounded set of cache keys, each with an optional
// expiry, with random eviction.
type verdictCache struct {
	mu  sync.RWMutex
	m   map[cacheKey]int64 // expiry in Unix nanoseconds; 0: none
	max int                // 0 disables the cache
}

func newVerdictCache(max int) verdictCache {
	return verdictCache{m: make(map[cacheKey]int64), max: max}
}

func (c *verdictCache) has(k cacheKey) bool {
	c.mu.RLock()
	exp, ok := c.m[k]
	c.mu.RUnlock()
	if ok && exp != 0 && time.Now().UnixNano() >= exp {
		c.mu.Lock()
		if e, ok := c.m[k]; ok && e == exp {
			delete(c.m, k)
		}
		c.mu.Unlock()
		return false
	}
	return ok
}

// add caches k until expiry (zero: until evicted).
func (c *verdictCache) add(k cacheKey, expiry time.Time) {
	if c.max <= 0 {
		return
	}
	var exp int64
	if !expiry.IsZero() {
		exp = expiry.UnixNano()
	}
	c.mu.Lock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m { // map iteration starts at a random entry
			delete(c.m, old)
			break
		}
	}
	c.m[k] = exp
	c.mu.Unlock()
}

func (c *verdictCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
