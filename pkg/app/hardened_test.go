package app_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestHardenedProfile loads pkg/config/hardened.yaml, checks that it is
// the hardened profile (client_encryption [full, strict], backend full
// with a ca_file and no trust_server_certificate, admin_auth, credential
// bounds), swaps only addresses and file paths for the test's, and runs
// it against a stand-in that forces TLS: every real client logs in and
// queries with full TLS (tedious and go-mssqldb with strict too),
// verifying the proxy's certificate against its CA; a plaintext client is
// refused; /metrics needs the token.
func TestHardenedProfile(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join("..", "config", "hardened.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b := &cfg.Buckets[0]
	switch {
	case !slices.Equal(cfg.ClientEncryption, []config.Encryption{config.EncryptionFull, config.EncryptionStrict}):
		t.Fatalf("client_encryption %v", cfg.ClientEncryption)
	case b.Encryption != config.EncryptionFull || b.CAFile == "" || b.TrustServerCertificate || b.ServerName == "":
		t.Fatalf("backend leg %+v", b)
	case cfg.TLS.CertFile == "" || cfg.TLS.WatchInterval <= 0:
		t.Fatalf("tls %+v", cfg.TLS)
	case !cfg.AdminAuth.Enabled() || cfg.AdminAuth.HealthRequiresAuth:
		t.Fatalf("admin_auth %+v", cfg.AdminAuth)
	case cfg.CredentialRoutes.MaxFailures <= 0 || cfg.CredentialRoutes.MaxHashIterations <= 0:
		t.Fatalf("credential_routes %+v", cfg.CredentialRoutes)
	}

	// The environment: a stand-in with forced TLS, certificates, a token.
	stand := testenv.Buckets(t, 1, func(_ int, c *server.Config) { c.Encryption = server.EncryptionForce })[0]
	dir := t.TempDir()
	_, proxyCA := writeCert(t, dir, "localhost") // pytds matches the CN (or a lone DNS SAN) only
	backendCA, err := clients.WriteCAFile(dir, stand.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("hardened-token\n"), 0o600)
	cfg.Listen, cfg.HealthListen, cfg.MetricsListen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cfg.AdminAuth.TokenFile = tokenFile
	cfg.EBPF.Enabled = false
	b.Address, b.CAFile, b.ServerName = stand.Addr(), backendCA, "localhost"
	a := testenv.Proxy(t, cfg)

	host, port := hostPort(t, a.Addr())
	for _, name := range clients.All {
		for _, enc := range []string{clients.EncryptFull, clients.EncryptStrict} {
			if !clients.Supports(name, enc) {
				continue
			}
			t.Run(string(name)+"-"+enc, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				h := host
				if name == clients.Pytds {
					h = "localhost" // pytds checks the name it dialled against the CN
				}
				res, err := clients.Run(ctx, name, clients.Spec{Host: h, Port: port, User: "sa", Password: testenv.Passwords[0],
					Database: "tenant_db", App: "hardened", Encrypt: enc, CAFile: proxyCA,
					Steps: []clients.Step{{Op: clients.OpQuery, SQL: "SELECT 7 AS seven"}}})
				if err != nil {
					t.Fatal(err)
				}
				if err := res.Err(); err != nil {
					t.Fatalf("%v (stderr %s)", err, res.Stderr)
				}
				if v := num(res.Scalar(0)); v != 7 {
					t.Fatalf("SELECT 7 = %v", res.Scalar(0))
				}
			})
		}
	}
	// Plaintext is refused.
	if c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", Timeout: 5 * time.Second}); err == nil {
		c.Close()
		t.Fatal("a plaintext client logged in")
	}
	if code, _ := httpGet(t, "http://"+a.MetricsAddr()+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: %d", code)
	}
	if code, _ := httpGet(t, "http://"+a.MetricsAddr()+"/metrics", "hardened-token"); code != 200 {
		t.Fatalf("/metrics with the token: %d", code)
	}
	if st := stand.Stats(); st.Total == 0 || st.Failed != 0 {
		t.Fatalf("stand-in: %+v", st)
	}
}
