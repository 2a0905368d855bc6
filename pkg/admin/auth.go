package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
)

// AuthRealm is the realm of the WWW-Authenticate challenge of a 401.
const AuthRealm = "tdsgate"

// Auth checks the credentials of admin requests: a bearer token
// ("Authorization: Bearer <token>"), HTTP basic auth, or either. With
// neither set it is off (the default): every request passes, and /health
// shows its detail only to loopback callers; anyone else gets its public
// view (names, statuses, latency), so a stranger never learns backend
// addresses or raw probe errors.
//
// Credentials change in place (Set, on reload), so a rotated token takes
// effect without a restart. Comparisons are in constant time, of SHA-256
// sums so that not even the length leaks. It is safe for concurrent use.
type Auth struct {
	mu     sync.RWMutex
	token  *[32]byte // nil: no bearer token
	user   *[32]byte // nil: no basic auth
	pass   [32]byte
	health bool // /health itself requires credentials (else: public view)
}

// NewAuth returns an Auth that is off.
func NewAuth() *Auth { return &Auth{} }

// Set installs the credentials: token ("" for none), and user and
// password for basic auth (password "" for none). healthRequiresAuth
// makes an unauthenticated /health a 401 instead of its public view.
func (a *Auth) Set(token, user, password string, healthRequiresAuth bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.token, a.user = nil, nil
	if token != "" {
		s := sha256.Sum256([]byte(token))
		a.token = &s
	}
	if password != "" {
		u := sha256.Sum256([]byte(user))
		a.user, a.pass = &u, sha256.Sum256([]byte(password))
	}
	a.health = healthRequiresAuth
}

// Enabled reports whether credentials are set.
func (a *Auth) Enabled() bool {
	if a == nil {
		return false
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.token != nil || a.user != nil
}

// verdict is what a request may see.
type verdict uint8

const (
	deny     verdict = iota // 401
	public                  // /health's public view
	detailed                // everything
)

// check judges r. Without credentials set, a request from a loopback peer
// is detailed and any other one sees /health's public view (a stranger
// never learns backend addresses or probe errors, even with auth off);
// with credentials set, a request with valid ones is detailed, others get
// deny (or, on /health unless it requires auth, the public view: health
// says which endpoint).
func (a *Auth) check(r *http.Request, health bool) verdict {
	if a == nil || !a.Enabled() {
		if health && !fromLoopback(r) {
			return public
		}
		return detailed
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.valid(r) {
		return detailed
	}
	if health && !a.health {
		return public
	}
	return deny
}

// valid reports whether r carries a valid token or user and password;
// called with a.mu held.
func (a *Auth) valid(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if a.token != nil {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			s := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare(s[:], a.token[:]) == 1 {
				return true
			}
		}
	}
	if a.user != nil {
		if u, p, ok := r.BasicAuth(); ok {
			us, ps := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
			uok := subtle.ConstantTimeCompare(us[:], a.user[:])
			pok := subtle.ConstantTimeCompare(ps[:], a.pass[:])
			if uok&pok == 1 {
				return true
			}
		}
	}
	return false
}

// challenge answers 401 with the schemes the Auth accepts.
func (a *Auth) challenge(w http.ResponseWriter) {
	a.mu.RLock()
	bearer, basic := a.token != nil, a.user != nil
	a.mu.RUnlock()
	if bearer {
		w.Header().Add("WWW-Authenticate", `Bearer realm="`+AuthRealm+`"`)
	}
	if basic {
		w.Header().Add("WWW-Authenticate", `Basic realm="`+AuthRealm+`", charset="UTF-8"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "401 unauthorized: this endpoint requires credentials (admin_auth)", http.StatusUnauthorized)
}

// Require wraps next: a request without valid credentials gets 401.
func (a *Auth) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.check(r, false) == deny {
			a.challenge(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fromLoopback reports whether r came from a loopback address (127.0.0.0/8
// or ::1): the machine's own operator, or a sidecar on it.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
