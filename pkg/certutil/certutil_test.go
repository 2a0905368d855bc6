package certutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSelfSignedServesTLS(t *testing.T) {
	c, err := SelfSigned("test", "proxy.local", "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Leaf.VerifyHostname("proxy.local"); err != nil {
		t.Error(err)
	}
	if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Error(err)
	}
	fp := Fingerprint(c)
	if len(fp) != 32*3-1 || strings.Count(fp, ":") != 31 {
		t.Errorf("fingerprint %q", fp)
	}
}

func TestLoadFromFiles(t *testing.T) {
	c, err := SelfSigned("files")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	got, gen, err := Load(cf, kf, "x")
	if err != nil || gen || Fingerprint(got) != Fingerprint(c) {
		t.Fatalf("load: %v gen=%v", err, gen)
	}
	if _, gen, err := Load("", "", "x"); err != nil || !gen {
		t.Fatalf("generate: %v", err)
	}
	if _, _, err := Load(cf, filepath.Join(dir, "missing"), "x"); err == nil {
		t.Fatal("missing key accepted")
	}
	_ = tls.Certificate{}
}
