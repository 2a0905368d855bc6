package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

func TestTLSServerNeedsTheCA(t *testing.T) {
	s := StartWith(t, Options{TLS: true, TLSAuthClients: true})
	c := s.Client(t)
	Do(t, c, "SET", "k", "v")
	if got, _ := Do(t, c, "GET", "k").ToString(); got != "v" {
		t.Fatalf("GET k over TLS = %q", got)
	}
	// Plaintext to the TLS port fails.
	if _, err := dialOnce(s.Addr(), nil, "", ""); err == nil {
		t.Fatal("plaintext client talked to a TLS-only server")
	}
	// A client that trusts another CA fails verification.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(s.TLS().OtherCAFile)
	pool.AppendCertsFromPEM(pem)
	tc := s.TLS().ClientConfig()
	tc.RootCAs = pool
	if _, err := dialOnce(s.Addr(), tc, "", ""); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
	// Without a client certificate (tls-auth-clients yes) it fails too.
	tc = s.TLS().ClientConfig()
	tc.Certificates = nil
	if _, err := dialOnce(s.Addr(), tc, "", ""); err == nil {
		t.Fatal("a client without a certificate connected")
	}
}

func TestACLUser(t *testing.T) {
	s := StartWith(t, Options{Users: map[string]string{"tdsgate": "s3cret"}, DisableDefaultUser: true})
	c := s.Client(t)
	if who, _ := Do(t, c, "ACL", "WHOAMI").ToString(); who != "tdsgate" {
		t.Fatalf("ACL WHOAMI = %q", who)
	}
	if _, err := dialOnce(s.Addr(), nil, "", ""); err == nil {
		t.Fatal("the default user logged in although it is off")
	}
	if _, err := dialOnce(s.Addr(), nil, "tdsgate", "wrong"); err == nil {
		t.Fatal("a wrong password logged in")
	}
}

func TestSentinelFailover(t *testing.T) {
	sn := StartSentinel(t, SentinelOptions{})
	first := sn.Master()
	if first != sn.Data[0].Addr() {
		t.Fatalf("master %s, want the first data server %s", first, sn.Data[0].Addr())
	}
	c := sn.Data[0].Client(t)
	Do(t, c, "SET", "before", "1")
	Do(t, c, "WAIT", "1", "2000")
	second := sn.Failover()
	if second == first {
		t.Fatalf("failover kept %s", first)
	}
	nc := sn.Primary().Client(t)
	if got := Int(t, nc, "GET", "before"); got != 1 {
		t.Fatalf("new primary lost the replicated key: %d", got)
	}
	// Killing the new primary promotes the old one back.
	third, killed := sn.KillPrimary()
	if third == second || killed.Addr() != second {
		t.Fatalf("after killing %s the master is %s", second, third)
	}
	if len(sn.Addrs()) != 3 || !strings.HasPrefix(sn.Addrs()[0], "127.0.0.1:") {
		t.Fatalf("Addrs = %v", sn.Addrs())
	}
}

// dialOnce connects a fresh client and runs PING.
func dialOnce(addr string, tc *tls.Config, user, pw string) (string, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true, DisableRetry: true,
		Dialer: net.Dialer{Timeout: time.Second}, ConnWriteTimeout: time.Second,
		TLSConfig: tc, Username: user, Password: pw,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Ping().Build()).ToString()
}
