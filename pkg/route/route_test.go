package route

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

func mustNew(t testing.TB, rules []config.Route, def string) *Table {
	t.Helper()
	tb, err := New(rules, def)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func mustHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// mustHashCheap hashes with the fewest iterations passhash accepts, for
// tests that verify many times (the race detector slows PBKDF2 tenfold).
func mustHashCheap(t testing.TB, pw string) string {
	t.Helper()
	h, err := passhash.NewWithIterations(pw, passhash.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDemoCredentialRoutes(t *testing.T) {
	c := config.Demo()
	tb := mustNew(t, c.Routes, c.DefaultBucket)
	for round := 0; round < 2; round++ { // the second round is served from the cache
		for i, pw := range config.DemoPasswords {
			want := fmt.Sprintf("bucket-%03d", i+1)
			b, r, ok := tb.Route(Login{ServerName: "localhost,1433", Database: "tenant_db", User: "sa", App: "SQLCMD", Password: pw})
			if !ok || b != want || r != i {
				t.Fatalf("round %d password %d: got %q rule %d ok %v, want %s", round, i+1, b, r, ok, want)
			}
		}
		for _, l := range []Login{
			{Database: "tenant_db", User: "sa", Password: "YourStr0ngP@ssword4"},
			{Database: "tenant_db", User: "sa", Password: ""},
			{Database: "tenant_db", User: "sa", Password: "yourstr0ngp@ssword1"}, // passwords are case-sensitive
			{Database: "master", User: "sa", Password: config.DemoPasswords[0]},
			{Database: "", User: "sa", Password: config.DemoPasswords[0]},
			{Database: "tenant_db", User: "bob", Password: config.DemoPasswords[0]},
		} {
			if b, r, ok := tb.Route(l); ok || b != "" || r != -1 {
				t.Fatalf("round %d: %v routed to %q rule %d", round, l, b, r)
			}
		}
	}
	// User and database match case-insensitively.
	if b, _, ok := tb.Route(Login{Database: "TENANT_DB", User: "SA", Password: config.DemoPasswords[2]}); !ok || b != "bucket-003" {
		t.Fatalf("case-insensitive user/database: %q %v", b, ok)
	}
	st := tb.CacheStats()
	// Round 0: rule 1 verifies pw1 (1), rules 1,2 for pw2 (2), rules 1..3
	// for pw3 (3), rules 1..3 for each of the 3 wrong passwords reaching
	// them (9): 15 misses. Round 1 and the last lookup: all hits.
	if st.Misses != 15 || st.Hits != 15+3 || st.Entries != 15 {
		t.Fatalf("cache stats %+v", st)
	}
}

func TestCacheHitSkipsPBKDF2AndIsBounded(t *testing.T) {
	h := mustHashCheap(t, "right")
	tb := mustNew(t, []config.Route{{Bucket: "b", User: "u", PasswordHash: h}}, "")
	tb.match = newVerdictCache(2)
	tb.nomatch = newVerdictCache(2)
	route := func(pw string) bool { _, _, ok := tb.Route(Login{User: "u", Password: pw}); return ok }
	if !route("right") || route("wrong") {
		t.Fatal("verdicts")
	}
	if st := tb.CacheStats(); st.Misses != 2 || st.Hits != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Replace the parsed hash: a cache hit must not consult it.
	tb.rules[0].hash.Key[0] ^= 0xff
	if !route("right") || route("wrong") {
		t.Fatal("cached verdicts changed")
	}
	if st := tb.CacheStats(); st.Misses != 2 || st.Hits != 2 {
		t.Fatalf("stats after hits %+v", st)
	}
	tb.rules[0].hash.Key[0] ^= 0xff
	// A flood of wrong passwords stays within the bound and never evicts
	// the right one.
	for i := range 20 {
		if route(fmt.Sprint("wrong", i)) {
			t.Fatal("wrong accepted")
		}
	}
	if n := tb.nomatch.len(); n != 2 {
		t.Fatalf("negative cache holds %d entries, bound 2", n)
	}
	before := tb.CacheStats().Misses
	if !route("right") || tb.CacheStats().Misses != before {
		t.Fatal("right password evicted by wrong ones")
	}
}

func TestCacheKeys(t *testing.T) {
	rules := []config.Route{{Bucket: "b", User: "u", PasswordHash: mustHashCheap(t, "pw")}}
	t1, t2 := mustNew(t, rules, ""), mustNew(t, rules, "")
	if t1.passwordKey("pw") == t2.passwordKey("pw") {
		t.Fatal("two tables share an HMAC key: key not random")
	}
	if t1.passwordKey("pw") != t1.passwordKey("pw") {
		t.Fatal("password key not deterministic")
	}
	if t1.passwordKey("pw") == t1.passwordKey("pw2") || t1.passwordKey("") == t1.passwordKey("pw") {
		t.Fatal("password key ignores the password")
	}
	k := t1.passwordKey("pw")
	if bytes.Contains(k[:], []byte("pw")) {
		t.Fatal("password key contains the password")
	}
	// The pooled scratch buffer is wiped after use.
	s := t1.macPool.Get().(*macState)
	if bytes.Contains(s.buf[:cap(s.buf)], []byte("pw")) {
		t.Fatal("scratch buffer keeps the password")
	}
	t1.macPool.Put(s)
	// Verdicts are per rule: the same password on two rules is two entries.
	two := mustNew(t, []config.Route{
		{Bucket: "a", User: "u", PasswordHash: mustHashCheap(t, "other")},
		{Bucket: "b", User: "u", PasswordHash: mustHashCheap(t, "pw")},
	}, "")
	if b, r, ok := two.Route(Login{User: "u", Password: "pw"}); !ok || b != "b" || r != 1 {
		t.Fatalf("got %q %d %v", b, r, ok)
	}
	if two.match.len() != 1 || two.nomatch.len() != 1 {
		t.Fatalf("entries: match %d nomatch %d", two.match.len(), two.nomatch.len())
	}
}

func TestRuleOrderAndDefault(t *testing.T) {
	tb := mustNew(t, []config.Route{
		{Bucket: "reports", User: "reporting"},
		{Bucket: "sales", Database: "sales_*"},
		{Bucket: "catchall-sales", Database: "*sales*"},
		{Bucket: "etl", App: "SSIS*", User: "etl"},
	}, "fallback")
	cases := []struct {
		l      Login
		bucket string
		rule   int
	}{
		{Login{User: "Reporting", Database: "sales_eu"}, "reports", 0},
		{Login{User: "x", Database: "SALES_EU"}, "sales", 1},
		{Login{User: "x", Database: "old_sales"}, "catchall-sales", 2},
		{Login{User: "etl", App: "SSIS-Package-1"}, "etl", 3},
		{Login{User: "etl", App: "sqlcmd"}, "fallback", -1},
		{Login{}, "fallback", -1},
	}
	for _, c := range cases {
		b, r, ok := tb.Route(c.l)
		if !ok || b != c.bucket || r != c.rule {
			t.Errorf("%v: got %q %d %v, want %q %d", c.l, b, r, ok, c.bucket, c.rule)
		}
	}
	if got := tb.Describe(3); got != `routes[3] → etl (user="etl" app="SSIS*")` {
		t.Errorf("Describe(3) = %q", got)
	}
	if got := tb.Describe(-1); got != "default_bucket → fallback" {
		t.Errorf("Describe(-1) = %q", got)
	}
}

func TestServerNameMatching(t *testing.T) {
	tb := mustNew(t, []config.Route{
		{Bucket: "sales", Server: `db.example.com\Sales`},
		{Bucket: "noinst", Server: `db.example.com\`},
		{Bucket: "db", Server: "DB.example.com,1433"},
		{Bucket: "wild", Server: "*.tenants.example"},
		{Bucket: "ipv6", Server: "[::1]"},
		{Bucket: "any", Server: "*"},
	}, "")
	cases := map[string]string{
		`db.example.com\sales`:        "sales",
		`tcp:DB.EXAMPLE.COM\SALES,14`: "sales",
		`db.example.com`:              "noinst",
		`db.example.com,1433`:         "noinst",
		`db.example.com.`:             "noinst",
		`db.example.com\hr`:           "db",
		`acme.tenants.example,1433`:   "wild",
		`tenants.example`:             "any",
		`::1`:                         "ipv6",
		`[::1],1433`:                  "ipv6",
		``:                            "any",
	}
	for server, want := range cases {
		b, _, ok := tb.Route(Login{ServerName: server})
		if !ok || b != want {
			t.Errorf("server %q: got %q %v, want %q", server, b, ok, want)
		}
	}
	only := mustNew(t, []config.Route{{Bucket: "db", Server: "db.example.com"}}, "")
	for _, server := range []string{"", "other.example.com", "db.example.com.evil", "xdb.example.com"} {
		if b, _, ok := only.Route(Login{ServerName: server}); ok {
			t.Errorf("server %q routed to %q", server, b)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything", true},
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*c", "abc", true},
		{"*c", "abcd", false},
		{"a*c", "ac", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbcd", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"**", "x", true},
		{"*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"tenant_*_db", "tenant_42_db", true},
		{"tenant_*_db", "tenant__db", true},
		{"tenant_*_db", "tenant_db", false},
		{"día*", "día-1", true},
	} {
		if got := Glob(c.p, c.s); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	good := mustHash(t, "pw")
	_, err := New([]config.Route{
		{User: "u"},
		{Bucket: "b", User: "u", PasswordHash: "pbkdf2-sha256$10000$not$valid"},
		{Bucket: "b", PasswordHash: good},
		{Bucket: "b", User: "u", PasswordHash: "hunter2"},
	}, "")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"routes[0].bucket: required",
		"routes[1].password_hash: malformed hash",
		"routes[2].user: required by password_hash",
		"routes[3].password_hash: malformed hash",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, good) {
		t.Errorf("error quotes a hash or password:\n%s", msg)
	}
}

func TestHashPasswordRoundTrip(t *testing.T) {
	h := mustHash(t, "YourStr0ngP@ssword1")
	if !strings.HasPrefix(h, fmt.Sprintf("pbkdf2-sha256$%d$", DefaultHashIterations)) || strings.Count(h, "$") != 3 {
		t.Fatalf("format %q", h)
	}
	if ok, err := VerifyPassword(h, "YourStr0ngP@ssword1"); !ok || err != nil {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if ok, err := VerifyPassword(h, "YourStr0ngP@ssword2"); ok || err != nil {
		t.Fatalf("wrong password: %v %v", ok, err)
	}
	// Tampering with the key fails. The second-to-last base64 character
	// carries 6 whole bits of the key (the last one may hold unused bits),
	// so changing it always changes the key.
	tamper := h[len(h)-2]
	repl := byte('A')
	if tamper == 'A' {
		repl = 'Q'
	}
	tampered := h[:len(h)-2] + string(repl) + h[len(h)-1:]
	if ok, err := VerifyPassword(tampered, "YourStr0ngP@ssword1"); ok || err != nil {
		t.Fatalf("tampered: %v %v", ok, err)
	}
	if _, err := VerifyPassword("pbkdf2-sha256$10000$abc", "x"); err == nil {
		t.Fatal("malformed hash accepted")
	}
	if _, err := HashPassword(""); err == nil {
		t.Fatal("empty password hashed")
	}
}

func TestLoginRedacted(t *testing.T) {
	l := Login{ServerName: "srv", Database: "db", User: "sa", App: "app", Password: "YourStr0ngP@ssword1"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("login", "login", l)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("login", "login", l)
	for _, s := range []string{fmt.Sprint(l), fmt.Sprintf("%v %+v %#v %s", l, l, l, l), fmt.Sprintf("%+v", &l), fmt.Sprint([]Login{l}), buf.String()} {
		if strings.Contains(s, "YourStr0ng") {
			t.Fatalf("password printed: %s", s)
		}
		if !strings.Contains(s, "sa") {
			t.Fatalf("user missing: %s", s)
		}
	}
}

func TestConcurrentRoute(t *testing.T) {
	c := config.Demo()
	tb := mustNew(t, c.Routes, "")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				k := (g + i) % 4
				pw := "wrong"
				if k < 3 {
					pw = config.DemoPasswords[k]
				}
				b, _, ok := tb.Route(Login{User: "sa", Database: "tenant_db", Password: pw})
				if k < 3 && (!ok || b != fmt.Sprintf("bucket-%03d", k+1)) || k == 3 && ok {
					t.Errorf("password %d: %q %v", k, b, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
}
