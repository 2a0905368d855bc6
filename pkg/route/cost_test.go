package route

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// TestMaxHashIterations: a hash dearer than the bound is refused, naming
// its YAML path and never quoting it; the bound can be raised. The config
// validation says the same.
func TestMaxHashIterations(t *testing.T) {
	h, err := passhash.NewWithIterations("pw", 200000)
	if err != nil {
		t.Fatal(err)
	}
	rules := []config.Route{{Bucket: "b", User: "u", PasswordHash: mustHashCheap(t, "x")}, {Bucket: "b", User: "u", PasswordHash: h}}
	_, err = New(rules, "")
	if err == nil || !strings.Contains(err.Error(), "routes[1].password_hash") || !strings.Contains(err.Error(), "200000") ||
		!strings.Contains(err.Error(), fmt.Sprint(DefaultMaxHashIterations)) || strings.Contains(err.Error(), h) {
		t.Fatalf("New with a 200000-iteration hash: %v", err)
	}
	if _, err := NewWithOptions(rules, "", Options{MaxHashIterations: 200000}); err != nil {
		t.Fatalf("with the bound raised: %v", err)
	}

	cfg := config.Demo()
	cfg.Routes[0].PasswordHash = h
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "routes[0].password_hash") || !strings.Contains(err.Error(), "credential_routes.max_hash_iterations") {
		t.Fatalf("Validate: %v", err)
	}
	cfg.CredentialRoutes.MaxHashIterations = 200000
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with the bound raised: %v", err)
	}
}

// TestNegativeCacheExpires: a wrong password's verdict is cached (no
// second PBKDF2), briefly: after NegativeCacheTTL it is verified again.
func TestNegativeCacheExpires(t *testing.T) {
	tb, err := NewWithOptions([]config.Route{{Bucket: "b", User: "u", PasswordHash: mustHashCheap(t, "right")}}, "", Options{NegativeCacheTTL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	route := func(pw string) bool { _, _, ok := tb.Route(Login{User: "u", Password: pw}); return ok }
	for i, want := range []bool{false, false, true, true} {
		if got := route([]string{"wrong", "wrong", "right", "right"}[i]); got != want {
			t.Fatalf("call %d: %v", i, got)
		}
	}
	if st := tb.CacheStats(); st.Misses != 2 || st.Hits != 2 {
		t.Fatalf("stats %+v, want 2 misses (wrong, right) and 2 hits", st)
	}
	time.Sleep(150 * time.Millisecond)
	if route("wrong") || !route("right") {
		t.Fatal("verdicts")
	}
	if st := tb.CacheStats(); st.Misses != 3 || st.Hits != 3 {
		t.Fatalf("after the TTL: %+v, want the wrong password verified again and the right one cached", st)
	}
}

// TestFailureLimiterPerSource: an address that failed credential rules
// max_failures times in the window is refused (RuleThrottled) for logins
// that would need a PBKDF2 — new wrong passwords and uncached right ones —
// without paying it; cached verdicts still route (a returning client whose
// password is known keeps working), other addresses are untouched, and the
// next window starts afresh.
func TestFailureLimiterPerSource(t *testing.T) {
	fl := NewFailureLimiter(3, time.Minute)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	fl.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tb, err := NewWithOptions([]config.Route{
		{Bucket: "a", User: "u", PasswordHash: mustHashCheap(t, "pw-a")},
		{Bucket: "b", User: "u", PasswordHash: mustHashCheap(t, "pw-b")},
	}, "fallback", Options{Failures: fl})
	if err != nil {
		t.Fatal(err)
	}
	from := func(src, pw string) (string, int) {
		b, r, _ := tb.Route(Login{User: "u", Password: pw, Source: src})
		return b, r
	}
	const attacker, other = "203.0.113.9:4444", "198.51.100.7:5555"
	if b, r := from(attacker, "pw-b"); b != "b" || r != 1 {
		t.Fatalf("right password: %s %d", b, r) // a login that matches a later rule is no failure
	}
	for i := range 3 {
		if b, r := from(fmt.Sprintf("203.0.113.9:%d", 5000+i), fmt.Sprint("guess", i)); b != "fallback" || r != -1 {
			t.Fatalf("guess %d: %s %d", i, b, r)
		}
	}
	misses := tb.CacheStats().Misses
	if b, r := from(attacker, "guess-new"); b != "" || r != RuleThrottled {
		t.Fatalf("4th failure from the address: %s %d, want RuleThrottled", b, r)
	}
	if b, r := from(attacker, "pw-a"); r != RuleThrottled {
		t.Fatalf("an uncached right password from the throttled address: %s %d", b, r)
	}
	if tb.CacheStats().Misses != misses {
		t.Fatal("a throttled login paid a PBKDF2")
	}
	if b, r := from(attacker, "pw-b"); b != "b" || r != 1 {
		t.Fatalf("a cached right password from the throttled address: %s %d", b, r)
	}
	if b, r := from(attacker, "guess0"); b != "fallback" || r != -1 {
		t.Fatalf("a cached wrong password from the throttled address: %s %d", b, r)
	}
	if b, r := from(other, "pw-a"); b != "a" || r != 0 {
		t.Fatalf("another address: %s %d", b, r)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if b, r := from(attacker, "guess-new"); b != "fallback" || r != -1 {
		t.Fatalf("next window: %s %d", b, r)
	}
	// Off: no limit.
	fl.SetLimits(0, time.Minute)
	for i := range 5 {
		if _, r := from(attacker, fmt.Sprint("more", i)); r == RuleThrottled {
			t.Fatal("throttled with the limit off")
		}
	}
}

// TestFailureLimiterBounded: a flood of source addresses stays within the
// bound.
func TestFailureLimiterBounded(t *testing.T) {
	fl := NewFailureLimiter(1, time.Minute)
	fl.cap = 100
	for i := range 1000 {
		fl.Fail(fmt.Sprintf("10.0.%d.%d:1", i/256, i%256))
	}
	if n := fl.Sources(); n > 100 {
		t.Fatalf("%d sources tracked, bound 100", n)
	}
	if b, _ := fl.Blocked("10.0.3.231:9"); !b {
		t.Fatal("the last source is not blocked")
	}
}
