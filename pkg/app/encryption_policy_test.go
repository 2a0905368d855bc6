package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// client_encryption limits the modes clients may use; a refused mode
// gets a readable answer, never a dropped socket.
func TestClientEncryptionPolicy(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.ClientEncryption = []config.Encryption{config.EncryptionFull}
	a := testenv.Proxy(t, cfg)
	dial := func(enc string) error {
		c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
			Database: "tenant_db", Encrypt: enc, Timeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(tdsclient.EncryptFull); err != nil {
		t.Fatalf("full: %v", err)
	}
	// ENCRYPT_OFF is upgraded to full TLS (the server answers REQ), as SQL
	// Server with forced encryption does.
	if err := dial(tdsclient.EncryptLogin); err != nil {
		t.Errorf("login-only client upgraded to full: %v", err)
	}
	// A client that cannot do TLS is told the server requires it.
	if err := dial(tdsclient.EncryptNone); err == nil || !strings.Contains(err.Error(), "requires encryption") {
		t.Errorf("none: %v", err)
	}
	// A client that skips PRELOGIN gets error 50007 it can read.
	err := dial(tdsclient.EncryptNoPrelogin)
	if le, ok := err.(*tdsclient.LoginError); !ok || le.Number != 50007 {
		t.Errorf("no PRELOGIN: %v, want 50007", err)
	}
}
