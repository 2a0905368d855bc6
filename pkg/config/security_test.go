package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

const secMinimal = `
buckets:
  - {id: b1, address: "127.0.0.1:14331", encryption: none, max_connections: 5}
default_bucket: b1
`

// TestSecurityDefaults: a file that says nothing gets the documented
// defaults of tls, credential_routes and admin_auth (off); example.yaml
// spells the same values.
func TestSecurityDefaults(t *testing.T) {
	clearEnv(t)
	for _, src := range []string{"minimal", "example.yaml"} {
		var c *Config
		var err error
		if src == "minimal" {
			c, err = LoadBytes([]byte(secMinimal))
		} else {
			c, err = Load(src)
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.TLS.WatchInterval != DefaultTLSWatchInterval || c.TLS.SelfSignedFile != "" {
			t.Errorf("%s: tls %+v", src, c.TLS)
		}
		want := CredentialRoutes{MaxHashIterations: DefaultMaxHashIterations, NegativeCacheTTL: DefaultNegativeCacheTTL,
			MaxFailures: DefaultMaxCredentialFailures, FailureWindow: DefaultCredentialFailureWindow}
		if c.CredentialRoutes != want {
			t.Errorf("%s: credential_routes %+v, want %+v", src, c.CredentialRoutes, want)
		}
		if c.AdminAuth.Enabled() || c.AdminAuth.HealthRequiresAuth {
			t.Errorf("%s: admin_auth %+v", src, c.AdminAuth)
		}
	}
}

// TestSecurityValidation: every error names its YAML path.
func TestSecurityValidation(t *testing.T) {
	clearEnv(t)
	h, err := passhash.NewWithIterations("pw", 200000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ yaml, path string }{
		{"tls: {cert_file: a, key_file: b, self_signed_file: c}", "tls.self_signed_file"},
		{"tls: {watch_interval: -1s}", "tls.watch_interval"},
		{"admin_auth: {password_file: /x}", "admin_auth.username"},
		{"admin_auth: {username: prom}", "admin_auth.password_file"},
		{"admin_auth: {health_requires_auth: true}", "admin_auth.health_requires_auth"},
		{"credential_routes: {max_hash_iterations: 2000000}", "credential_routes.max_hash_iterations"},
		{"credential_routes: {max_failures: -1}", "credential_routes.max_failures"},
		{"credential_routes: {failure_window: 0s}", "credential_routes.failure_window"},
		{"credential_routes: {negative_cache_ttl: -1s}", "credential_routes.negative_cache_ttl"},
		{"routes: [{bucket: b1, user: sa, password_hash: '" + h + "'}]", "routes[0].password_hash"},
	} {
		_, err := LoadBytes([]byte(secMinimal + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.path+":") {
			t.Errorf("%s: %v, want an error at %s", tc.yaml, err, tc.path)
		}
		if err != nil && strings.Contains(err.Error(), h) {
			t.Errorf("%s: the error quotes the hash", tc.yaml)
		}
	}
	if _, err := LoadBytes([]byte(secMinimal + "routes: [{bucket: b1, user: sa, password_hash: '" + h + "'}]\ncredential_routes: {max_hash_iterations: 200000}\n")); err != nil {
		t.Errorf("a raised bound: %v", err)
	}
}

// TestAdminAuthSecrets: the secrets come from files, trimmed; a missing
// or empty file is an error naming the option, never the contents.
func TestAdminAuthSecrets(t *testing.T) {
	dir := t.TempDir()
	tok, pw := filepath.Join(dir, "tok"), filepath.Join(dir, "pw")
	os.WriteFile(tok, []byte("  t0ken\n"), 0o600)
	os.WriteFile(pw, []byte("pa55\n"), 0o600)
	token, password, err := AdminAuth{TokenFile: tok, Username: "u", PasswordFile: pw}.ReadSecrets()
	if err != nil || token != "t0ken" || password != "pa55" {
		t.Fatalf("%q %q %v", token, password, err)
	}
	os.WriteFile(pw, []byte("\n"), 0o600)
	if _, _, err := (AdminAuth{Username: "u", PasswordFile: pw}).ReadSecrets(); err == nil || !strings.Contains(err.Error(), "admin_auth.password_file") {
		t.Fatalf("empty password file: %v", err)
	}
	if _, _, err := (AdminAuth{TokenFile: filepath.Join(dir, "none")}).ReadSecrets(); err == nil || !strings.Contains(err.Error(), "admin_auth.token_file") {
		t.Fatalf("missing token file: %v", err)
	}
}
