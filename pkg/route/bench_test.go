package route

import (
	"strconv"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
)

// demoLogin reaches the third credential rule of the demo config, so a
// route verifies three rules' hashes (two mismatches, one match).
var demoLogin = Login{ServerName: "localhost", Database: "tenant_db", User: "sa", App: "bench", Password: config.DemoPasswords[2]}

func BenchmarkRouteCredentialCached(b *testing.B) {
	c := config.Demo()
	tb := mustNew(b, c.Routes, "")
	tb.Route(demoLogin) // warm the cache
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := tb.Route(demoLogin); !ok {
			b.Fatal("no route")
		}
	}
}

func BenchmarkRouteCredentialUncached(b *testing.B) {
	c := config.Demo()
	tb := mustNew(b, c.Routes, "")
	tb.match = newVerdictCache(0) // caching disabled
	tb.nomatch = newVerdictCache(0)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := tb.Route(demoLogin); !ok {
			b.Fatal("no route")
		}
	}
}

func BenchmarkRouteCredentialCachedParallel(b *testing.B) {
	c := config.Demo()
	tb := mustNew(b, c.Routes, "")
	tb.Route(demoLogin)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Route(demoLogin)
		}
	})
}

func BenchmarkRouteMatchers(b *testing.B) {
	rules := []config.Route{
		{Bucket: "a", Server: "*.tenants.example", Database: "sales_*"},
		{Bucket: "b", User: "reporting", App: "Power BI*"},
		{Bucket: "c", Server: `db.example.com\sales`},
		{Bucket: "d", Database: "tenant_db", User: "app"},
	}
	tb := mustNew(b, rules, "")
	l := Login{ServerName: "tcp:db.example.com,1433", Database: "tenant_db", User: "app", App: "svc"}
	b.ReportAllocs()
	for b.Loop() {
		if bk, _, _ := tb.Route(l); bk != "d" {
			b.Fatal(bk)
		}
	}
}

// BenchmarkRouteCredentialThrottled is what an anonymous guess costs once
// its source address has used up credential_routes.max_failures: one HMAC
// and a map lookup, no PBKDF2.
func BenchmarkRouteCredentialThrottled(b *testing.B) {
	c := config.Demo()
	fl := NewFailureLimiter(1, time.Hour)
	tb, err := NewWithOptions(c.Routes, "", Options{Failures: fl})
	if err != nil {
		b.Fatal(err)
	}
	guess := Login{ServerName: "localhost", Database: "tenant_db", User: "sa", App: "bench", Password: "guess", Source: "203.0.113.9:4444"}
	tb.Route(guess) // the one failure allowed
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		guess.Password = "guess" + strconv.Itoa(i)
		if _, r, _ := tb.Route(guess); r != RuleThrottled {
			b.Fatal("not throttled")
		}
	}
}
