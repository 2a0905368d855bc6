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

	macKey  []byte
	macPool sync.Pool // of *macState: HMAC-SHA256 under macKey
	match   verdictCache
	nomatch verdictCache
	hits    atomic.Uint64
	misses  atomic.Uint64
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
	t := &Table{
		rules:         make([]rule, len(rules)),
		defaultBucket: defaultBucket,
		macKey:        make([]byte, 32),
		match:         newVerdictCache(DefaultCacheSize),
		nomatch:       newVerdictCache(DefaultCacheSize),
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
// rule -1. ok is false when neither applies (bucket "", rule -1).
func (t *Table) Route(l Login) (bucket string, rule int, ok bool) {
	var host, inst string
	split := false
	var pwKey *[32]byte // HMAC of the password, computed at the first credential rule reached
	var pwKeyBuf [32]byte
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
			if !t.verify(i, r.hash, *pwKey, l.Password) {
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

// verify checks pw against rule i's hash, through the verdict caches;
// pwKey is [Table.passwordKey] of pw.
func (t *Table) verify(i int, h *passhash.Hash, pwKey [32]byte, pw string) bool {
	k := cacheKey{rule: uint32(i), pw: pwKey}
	if t.match.has(k) {
		t.hits.Add(1)
		return true
	}
	if t.nomatch.has(k) {
		t.hits.Add(1)
		return false
	}
	t.misses.Add(1)
	ok := h.Verify(pw)
	if ok {
		t.match.add(k)
	} else {
		t.nomatch.add(k)
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

// verdictCache is a bounded set of cache keys with random eviction.
type verdictCache struct {
	mu  sync.RWMutex
	m   map[cacheKey]struct{}
	max int // 0 disables the cache
}

func newVerdictCache(max int) verdictCache {
	return verdictCache{m: make(map[cacheKey]struct{}), max: max}
}

func (c *verdictCache) has(k cacheKey) bool {
	c.mu.RLock()
	_, ok := c.m[k]
	c.mu.RUnlock()
	return ok
}

func (c *verdictCache) add(k cacheKey) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		for old := range c.m { // map iteration starts at a random entry
			delete(c.m, old)
			break
		}
	}
	c.m[k] = struct{}{}
	c.mu.Unlock()
}

func (c *verdictCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
