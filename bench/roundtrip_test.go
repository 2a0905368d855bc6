package bench

import (
	"context"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// roundTrips runs SELECT 1 b.N times on one logged-in session.
func roundTrips(b *testing.B, o tdsclient.Options) {
	c, err := tdsclient.Dial(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := c.Exec("SELECT 1", 0)
		if err != nil || len(r.Rows) != 1 {
			b.Fatalf("%v %v", r, err)
		}
	}
}

// BenchmarkRoundTrip compares a small round trip direct to the stand-in
// with the same round trip through tdsgate, on each relay path.
func BenchmarkRoundTrip(b *testing.B) {
	buckets := testenv.Buckets(b, 1, nil)
	login := tdsclient.Options{User: "sa", Password: testenv.Passwords[0], Database: "tenant_db"}
	b.Run("direct", func(b *testing.B) {
		o := login
		o.Addr = buckets[0].Addr()
		roundTrips(b, o)
	})
	for _, tc := range []struct {
		name    string
		client  string
		backend config.Encryption
		mode    relay.Mode
	}{
		{"proxy-splice", tdsclient.EncryptLogin, config.EncryptionLogin, relay.ModeSplice},
		{"proxy-tls", tdsclient.EncryptFull, config.EncryptionFull, relay.ModeTLS},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testenv.Config(b, buckets)
			cfg.Buckets[0].Encryption = tc.backend
			a := testenv.Proxy(b, cfg)
			o := login
			o.Addr, o.Encrypt = a.Addr(), tc.client
			roundTrips(b, o)
			b.StopTimer()
			if n := a.Handler().Relayed(tc.mode); n != 1 {
				// The session ends after roundTrips returns; count once it has.
				testenv.WaitUntil(b, func() bool { return a.Handler().Relayed(tc.mode) >= 1 })
			}
		})
	}
}
