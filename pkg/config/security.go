package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// Defaults of the options that keep strangers out (tls, admin_auth,
// credential_routes).
const (
	// DefaultTLSWatchInterval is the default of TLS.WatchInterval: how
	// often the certificate and key files are checked for a change.
	DefaultTLSWatchInterval = 10 * time.Second
	// DefaultMaxHashIterations is the default of
	// CredentialRoutes.MaxHashIterations: ten times the iterations
	// `proxy hash-password` uses (passhash.DefaultIterations), about 40 ms
	// of one core per uncached verification on the CI machine.
	DefaultMaxHashIterations = 100000
	// DefaultNegativeCacheTTL is the default of
	// CredentialRoutes.NegativeCacheTTL.
	DefaultNegativeCacheTTL = time.Minute
	// DefaultMaxCredentialFailures is the default of
	// CredentialRoutes.MaxFailures.
	DefaultMaxCredentialFailures = 20
	// DefaultCredentialFailureWindow is the default of
	// CredentialRoutes.FailureWindow.
	DefaultCredentialFailureWindow = time.Minute
)

// AdminAuth protects the admin endpoints (health_listen, metrics_listen).
// It is off by default: every endpoint answers everyone, /health with its
// detail. With a token or a password set:
//   - /metrics answers 401 without valid credentials;
//   - /health shows callers without valid credentials only its public
//     view (each component's name, status and latency; no error, address
//     or detail), or answers them 401 with HealthRequiresAuth;
//   - /health/live stays open.
//
// The secrets are read from files (at start and on SIGHUP: rotate the
// file, then reload), never written in the config.
type AdminAuth struct {
	// TokenFile holds a bearer token (surrounding white space trimmed): a
	// request with "Authorization: Bearer <token>" is authenticated.
	// Prometheus: authorization.credentials_file. Default "" (none).
	TokenFile string `yaml:"token_file"`
	// Username is the HTTP basic auth user; it goes with PasswordFile.
	Username string `yaml:"username"`
	// PasswordFile holds the basic auth password (trimmed). Default ""
	// (no basic auth).
	PasswordFile string `yaml:"password_file"`
	// HealthRequiresAuth makes /health answer 401 without credentials,
	// instead of its public view. Leave it false where a load balancer
	// checks /health without credentials. Default false.
	HealthRequiresAuth bool `yaml:"health_requires_auth"`
}

// Enabled reports whether credentials are configured.
func (a AdminAuth) Enabled() bool { return a.TokenFile != "" || a.PasswordFile != "" }

// ReadSecrets reads the token and password files ("" for a file not
// configured). A configured file that cannot be read or is empty is an
// error naming its YAML path (never its contents).
func (a AdminAuth) ReadSecrets() (token, password string, err error) {
	read := func(path, file string) (string, error) {
		if file == "" {
			return "", nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &FieldError{Path: path, Msg: err.Error()}
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", &FieldError{Path: path, Msg: fmt.Sprintf("%s is empty", file)}
		}
		return s, nil
	}
	if token, err = read("admin_auth.token_file", a.TokenFile); err != nil {
		return "", "", err
	}
	if password, err = read("admin_auth.password_file", a.PasswordFile); err != nil {
		return "", "", err
	}
	return token, password, nil
}

// CredentialRoutes bounds what credential routes (routes with a
// password_hash) may cost: every login that reaches one with a password
// not in the verdict cache pays a PBKDF2 verification.
type CredentialRoutes struct {
	// MaxHashIterations is the most PBKDF2 iterations a route's
	// password_hash may use; a hash with more is a config error.
	// Default: DefaultMaxHashIterations (0 in a Config built in code
	// means the default too).
	MaxHashIterations int `yaml:"max_hash_iterations"`
	// NegativeCacheTTL is how long a password that did not verify against
	// a rule is remembered as such (as an HMAC under a key drawn at start,
	// never the password), so that repeating it costs no PBKDF2.
	// Default: DefaultNegativeCacheTTL (0 in code: the default).
	NegativeCacheTTL time.Duration `yaml:"negative_cache_ttl"`
	// MaxFailures is how many logins from one source address (the client
	// IP, or the PROXY header's) may fail every credential rule they reach
	// by PBKDF2 within FailureWindow. Past it, until the window ends, that
	// address's logins that would need a PBKDF2 verification are refused
	// with error 50010 (a password already known to verify, or already
	// known not to, is still judged from the cache). 0 turns the limit
	// off. Default: DefaultMaxCredentialFailures.
	MaxFailures int `yaml:"max_failures"`
	// FailureWindow is the window of MaxFailures.
	// Default: DefaultCredentialFailureWindow.
	FailureWindow time.Duration `yaml:"failure_window"`
}

// HashIterationsLimit is MaxHashIterations or its default.
func (c CredentialRoutes) HashIterationsLimit() int {
	if c.MaxHashIterations <= 0 {
		return DefaultMaxHashIterations
	}
	return c.MaxHashIterations
}

// applySecurityDefaults sets the defaults of tls.watch_interval and
// credential_routes for a loaded file.
func (c *Config) applySecurityDefaults(has func(path string) bool) {
	if !has("tls.watch_interval") {
		c.TLS.WatchInterval = DefaultTLSWatchInterval
	}
	cr := &c.CredentialRoutes
	if !has("credential_routes.max_hash_iterations") {
		cr.MaxHashIterations = DefaultMaxHashIterations
	}
	if !has("credential_routes.negative_cache_ttl") {
		cr.NegativeCacheTTL = DefaultNegativeCacheTTL
	}
	if !has("credential_routes.max_failures") {
		cr.MaxFailures = DefaultMaxCredentialFailures
	}
	if !has("credential_routes.failure_window") {
		cr.FailureWindow = DefaultCredentialFailureWindow
	}
}

// security validates tls.self_signed_file, tls.watch_interval, admin_auth
// and credential_routes.
func (v *validator) security() {
	c := v.c
	if c.TLS.SelfSignedFile != "" && (c.TLS.CertFile != "" || c.TLS.KeyFile != "") {
		v.add("tls.self_signed_file", "is for a generated certificate: set it or tls.cert_file/key_file, not both")
	}
	if c.TLS.WatchInterval < 0 {
		v.add("tls.watch_interval", "must be >= 0 (got %s); 0 turns the file watch off", c.TLS.WatchInterval)
	}
	a := c.AdminAuth
	if a.PasswordFile != "" && a.Username == "" {
		v.add("admin_auth.username", "required with admin_auth.password_file")
	}
	if a.Username != "" && a.PasswordFile == "" {
		v.add("admin_auth.password_file", "required with admin_auth.username")
	}
	if a.HealthRequiresAuth && !a.Enabled() {
		v.add("admin_auth.health_requires_auth", "needs admin_auth.token_file or admin_auth.password_file")
	}
	cr := c.CredentialRoutes
	if cr.MaxHashIterations < 0 {
		v.add("credential_routes.max_hash_iterations", "must be >= 0 (got %d)", cr.MaxHashIterations)
	} else if cr.MaxHashIterations > passhash.MaxIterations {
		v.add("credential_routes.max_hash_iterations", "must be at most %d (got %d)", passhash.MaxIterations, cr.MaxHashIterations)
	}
	if cr.NegativeCacheTTL < 0 {
		v.add("credential_routes.negative_cache_ttl", "must be >= 0 (got %s)", cr.NegativeCacheTTL)
	}
	if cr.MaxFailures < 0 {
		v.add("credential_routes.max_failures", "must be >= 0 (got %d); 0 turns the limit off", cr.MaxFailures)
	}
	if cr.MaxFailures > 0 && cr.FailureWindow <= 0 {
		v.add("credential_routes.failure_window", "must be > 0 with max_failures (got %s)", cr.FailureWindow)
	}
}

// hashIterations checks a route's password_hash against
// credential_routes.max_hash_iterations.
func (v *validator) hashIterations(path string, h *passhash.Hash) {
	if max := v.c.CredentialRoutes.HashIterationsLimit(); h.Iterations > max {
		v.add(path, "%d PBKDF2 iterations exceed credential_routes.max_hash_iterations (%d): every uncached login reaching this rule would cost that much CPU; "+
			"make the hash again with `proxy hash-password`, or raise the limit", h.Iterations, max)
	}
}
