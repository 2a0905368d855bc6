package app_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// presented is the fingerprint of the certificate a TDS 8.0 (strict)
// handshake with the proxy shows.
func presented(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"tds/8.0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.ConnectionState()
	return certutil.Fingerprint(tls.Certificate{Certificate: [][]byte{st.PeerCertificates[0].Raw}})
}

// writeCert writes a new self-signed pair to cert.pem and key.pem in dir
// and returns its fingerprint and a CA file trusting it.
func writeCert(t *testing.T, dir, cn string) (fp, ca string) {
	t.Helper()
	c, err := certutil.SelfSigned(cn)
	if err != nil {
		t.Fatal(err)
	}
	b, err := certutil.EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then the certificate: a watcher may see the pair half
	// written, and must keep the old certificate until both are there.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err = clients.WriteCAFile(t.TempDir(), c)
	if err != nil {
		t.Fatal(err)
	}
	return certutil.Fingerprint(c), ca
}

// TestClientCertReload: the client-facing certificate is reloaded when
// its files change (the mtime poll) and on SIGHUP (Reload) — new
// handshakes get the new one — and a real client that verifies the
// server's certificate against the new CA logs in through full TLS.
func TestClientCertReload(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	dir := t.TempDir()
	fp1, _ := writeCert(t, dir, "one")
	cfg := testenv.Config(t, buckets)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cfg.TLS.WatchInterval = 50 * time.Millisecond
	a := testenv.Proxy(t, cfg)
	if got := presented(t, a.Addr()); got != fp1 {
		t.Fatalf("at start: %s, want %s", got, fp1)
	}

	time.Sleep(20 * time.Millisecond) // a distinct modification time
	fp2, ca2 := writeCert(t, dir, "two")
	testenv.WaitUntil(t, func() bool { return presented(t, a.Addr()) == fp2 })

	host, port := hostPort(t, a.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := clients.Run(ctx, clients.GoMSSQL, clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", Encrypt: clients.EncryptFull, CAFile: ca2, Steps: []clients.Step{{Op: clients.OpQuery, SQL: "SELECT 1 AS one"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("go-mssqldb verifying the new certificate: %v (stderr %s)", err, res.Stderr)
	}

	// SIGHUP: with the watch off, the files are read on Reload.
	next := testenv.Config(t, buckets)
	next.TLS = cfg.TLS
	next.TLS.WatchInterval = 0
	a2 := testenv.Proxy(t, next)
	time.Sleep(20 * time.Millisecond)
	fp3, _ := writeCert(t, dir, "three")
	time.Sleep(200 * time.Millisecond)
	if got := presented(t, a2.Addr()); got != fp2 {
		t.Fatalf("without watch nor reload: %s, want the old %s", got, fp2)
	}
	if err := a2.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := presented(t, a2.Addr()); got != fp3 {
		t.Fatalf("after SIGHUP: %s, want %s", got, fp3)
	}
	// A broken pair fails the reload and keeps the certificate in force.
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("broken"), 0o600)
	if err := a2.Reload(next); err == nil {
		t.Fatal("reload with a broken certificate file succeeded")
	}
	if got := presented(t, a2.Addr()); got != fp3 {
		t.Fatalf("after a failed reload: %s, want %s", got, fp3)
	}
}

// TestSelfSignedPersisted: with tls.self_signed_file, the generated
// certificate survives a restart: the second instance shows the first's.
func TestSelfSignedPersisted(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	path := filepath.Join(t.TempDir(), "tdsgate-selfsigned.pem")
	cfg := testenv.Config(t, buckets)
	cfg.TLS.SelfSignedFile = path
	a := testenv.Proxy(t, cfg)
	fp := presented(t, a.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kept file: %v", err)
	}
	b := testenv.Proxy(t, cfg)
	if got := presented(t, b.Addr()); got != fp {
		t.Fatalf("after a restart: %s, want the kept %s", got, fp)
	}
	// Without the option every start has its own.
	cfg.TLS.SelfSignedFile = ""
	c := testenv.Proxy(t, cfg)
	if presented(t, c.Addr()) == fp {
		t.Fatal("a generated certificate equals the kept one")
	}
}
