package certutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLoadOrCreatePersists: the first call generates and writes the
// certificate (0600), later calls load the same one.
func TestLoadOrCreatePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "selfsigned.pem")
	c1, created, err := LoadOrCreate(path, "tdsgate x")
	if err != nil || !created {
		t.Fatalf("first: created %v, %v", created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", fi.Mode(), err)
	}
	c2, created, err := LoadOrCreate(path, "tdsgate x")
	if err != nil || created || Fingerprint(c1) != Fingerprint(c2) {
		t.Fatalf("second: created %v, %v, same %v", created, err, Fingerprint(c1) == Fingerprint(c2))
	}
	// A file that is there but unreadable as a pair is an error, never
	// silently replaced.
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, _, err := LoadOrCreate(path, "tdsgate x"); err == nil {
		t.Fatal("garbage loaded")
	}
}

func writePair(t *testing.T, dir string, cn string) (certFile, keyFile, fp string) {
	t.Helper()
	c, err := SelfSigned(cn)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, Fingerprint(c)
}

// TestReloaderCheck: Check loads a changed pair, keeps the certificate in
// force when the new files do not load, and reports that once.
func TestReloaderCheck(t *testing.T) {
	dir := t.TempDir()
	cf, kf, fp1 := writePair(t, dir, "one")
	c, _, err := Load(cf, kf, "")
	if err != nil {
		t.Fatal(err)
	}
	r := NewReloader(c, cf, kf)
	if changed, err := r.Check(); changed || err != nil {
		t.Fatalf("unchanged files: %v %v", changed, err)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	_, _, fp2 := writePair(t, dir, "two")
	if changed, err := r.Check(); !changed || err != nil || Fingerprint(r.Certificate()) != fp2 || fp2 == fp1 {
		t.Fatalf("changed files: %v %v", changed, err)
	}
	got, _ := r.GetCertificate(nil)
	if Fingerprint(*got) != fp2 {
		t.Fatal("GetCertificate serves the old certificate")
	}
	os.WriteFile(cf, []byte("half written"), 0o600)
	if _, err := r.Check(); err == nil || Fingerprint(r.Certificate()) != fp2 {
		t.Fatalf("broken files: %v, in force %s", err, Fingerprint(r.Certificate()))
	}
	if changed, err := r.Check(); changed || err != nil {
		t.Fatalf("the same broken version reported again: %v %v", changed, err)
	}
}
