package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// The operator's console: the admin API on admin_listen (doc.go, "Admin
// API"). The types below are its JSON bodies; their field names are part of
// the API (README, "Admin API"): add fields, rename none. `proxy admin`
// decodes the same types.

// Bucket is one row of GET /admin/buckets.
type Bucket struct {
	Bucket string `json:"bucket"`
	// Max is the bucket's cap; MaxSource says where it comes from:
	// "config" (standalone, or Redis not seen yet) or "redis"
	// (proxy:bucket:<id>:max).
	Max       int64  `json:"max"`
	MaxSource string `json:"max_source"`
	// GlobalCount is the slots held across every instance (Redis's count;
	// standalone: this instance's; -1: never seen).
	GlobalCount int64 `json:"global_count"`
	// Held is the slots this instance holds.
	Held int64 `json:"held"`
	// Queued is the clients waiting here for a slot.
	Queued int `json:"queued"`
	// IdlePooled is the idle pooled backend connections here (each holds a
	// slot).
	IdlePooled int `json:"idle_pooled"`
	// PoolMode is none or session (transaction when that mode exists).
	PoolMode string `json:"pool_mode"`
	// Breaker is the backend's circuit breaker: closed or open.
	Breaker string `json:"breaker"`
	// Fallback is the Redis limiter's state: connected, fallback,
	// reconciling; standalone without Redis.
	Fallback string `json:"fallback"`
	// Paused says new logins queue (POST …/pause).
	Paused bool `json:"paused"`
}

// Session is one row of GET /admin/sessions.
type Session struct {
	ID uint64 `json:"id"`
	// Client is the client's address (from the PROXY v2 header when the
	// listener takes one).
	Client   string `json:"client"`
	User     string `json:"user"`
	Database string `json:"database"`
	App      string `json:"app"`
	Bucket   string `json:"bucket"`
	// State is handshake, queued, connecting, active,
	// idle-in-transaction, pinned or closing.
	State string `json:"state"`
	// PinReason says why a pinned session is bound to its backend.
	PinReason string `json:"pin_reason,omitempty"`
	// Start is when the connection was accepted (RFC 3339, UTC).
	Start time.Time `json:"start"`
	// BytesFromClient and BytesToClient count the client's TCP connection
	// (TLS and login included).
	BytesFromClient int64 `json:"bytes_from_client"`
	BytesToClient   int64 `json:"bytes_to_client"`
	// RelayMode is splice, tls, framed or sockmap ("" before the relay).
	RelayMode  string `json:"relay_mode"`
	Encryption string `json:"encryption"`
}

// SessionQuery is the filter of GET /admin/sessions (?bucket= ?user=
// ?state=); empty fields match all.
type SessionQuery struct {
	Bucket, User, State string
}

// SubPool is one sub-pool (one login's connections) of a bucket's pool.
type SubPool struct {
	User      string `json:"user"`
	Database  string `json:"database"`
	App       string `json:"app"`
	Login     int    `json:"login"`
	Active    int    `json:"active"`
	Resetting int    `json:"resetting"`
	Idle      int    `json:"idle"`
	// OldestIdleMS is how long its longest-idle connection has waited.
	OldestIdleMS int64 `json:"oldest_idle_ms"`
}

// Pool is one row of GET /admin/pools: a pooling bucket's connections by
// state, and its sub-pools.
type Pool struct {
	Bucket    string    `json:"bucket"`
	PoolMode  string    `json:"pool_mode"`
	Login     int       `json:"login"`
	Active    int       `json:"active"`
	Resetting int       `json:"resetting"`
	Idle      int       `json:"idle"`
	SubPools  []SubPool `json:"subpools"`
}

// Instance is one instance of GET /admin/instances, as Redis records it.
type Instance struct {
	ID          string `json:"id"`
	Incarnation string `json:"incarnation"`
	// HeartbeatAgeMS is the time since its last heartbeat (from the key's
	// remaining TTL); -1 without a live heartbeat key (fenced).
	HeartbeatAgeMS int64 `json:"heartbeat_age_ms"`
	// Fenced: its lease expired while its slots may still be in use.
	Fenced bool `json:"fenced"`
	// Self is the instance that answered.
	Self bool `json:"self"`
	// Holdings is its slots per bucket (proxy:instance:<id>:conns).
	Holdings map[string]int64 `json:"holdings"`
}

// Instances is the body of GET /admin/instances.
type Instances struct {
	// Redis is false on a standalone instance: the list is this instance.
	Redis     bool       `json:"redis"`
	Instances []Instance `json:"instances"`
	// Counts is every bucket's proxy:bucket:<id>:count: the sum of the
	// instances' holdings.
	Counts map[string]int64 `json:"counts"`
}

// Killed is the body of POST /admin/sessions/{id}/kill.
type Killed struct {
	ID     uint64 `json:"id"`
	Bucket string `json:"bucket"`
	// State is the session's state when it was killed.
	State string `json:"state"`
	// ErrorSent says the client was sent ERROR 50012.
	ErrorSent bool `json:"error_sent"`
}

// Ack is one instance's answer to a bucket command.
type Ack struct {
	Instance string `json:"instance"`
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
	// Closed is the idle connections a drain closed.
	Closed int `json:"closed,omitempty"`
	// Paused is the bucket's paused flag after the command.
	Paused bool `json:"paused"`
}

// Action is the body of POST /admin/buckets/{id}/{pause,resume,drain}.
type Action struct {
	Action string `json:"action"`
	Bucket string `json:"bucket"`
	Fleet  bool   `json:"fleet"`
	// Live is how many instances Redis lists as live (proxy:instances)
	// when a fleet command goes out; Receivers how many it reached (Redis
	// PUBLISH's count: fewer means an instance is not subscribed, e.g. cut
	// off from Redis); Acks holds the answers that came back in time.
	Live      int   `json:"live,omitempty"`
	Receivers int   `json:"receivers,omitempty"`
	Acks      []Ack `json:"acks"`
}

// FieldError is one problem of a reloaded config, by YAML path.
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Reload is the body of POST /admin/reload.
type Reload struct {
	OK     bool         `json:"ok"`
	Errors []FieldError `json:"errors,omitempty"`
	// Buckets and Routes count the config in force after the reload.
	Buckets int `json:"buckets"`
	Routes  int `json:"routes"`
}

// Errors of a Console, mapped to HTTP statuses.
var (
	ErrNotFound = errors.New("not found")       // 404
	ErrConflict = errors.New("conflict")        // 409
	ErrBadInput = errors.New("invalid request") // 400
)

// Console is what the admin API reads and steers; the application
// implements it.
type Console interface {
	Buckets() []Bucket
	Sessions(q SessionQuery) ([]Session, error)
	Pools() []Pool
	Instances(ctx context.Context) (Instances, error)
	// Kill ends a session; by is the caller's address, for the log.
	Kill(id uint64, by string) (Killed, error)
	// BucketCommand runs pause, resume or drain on bucket, on this
	// instance or (fleet) on every instance through Redis.
	BucketCommand(ctx context.Context, action, bucket string, fleet bool, by string) (Action, error)
	// Reload reloads the config file (SIGHUP's work).
	Reload(by string) Reload
}

// ConsoleHandler serves the admin API from c, behind a (nil or off: open;
// the application refuses a non-loopback admin_listen without a token).
// Every request is logged with the caller's address; actions at Warn.
func ConsoleHandler(c Console, a *Auth, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	read := func(path string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			v, err := f(r)
			log.Debug("admin: request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "from", r.RemoteAddr, "err", errText(err))
			reply(w, v, err)
		})
	}
	act := func(path string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			v, err := f(r)
			log.Warn("admin: action", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "from", r.RemoteAddr, "err", errText(err))
			reply(w, v, err)
		})
	}
	read("/admin/buckets", func(*http.Request) (any, error) { return c.Buckets(), nil })
	read("/admin/sessions", func(r *http.Request) (any, error) {
		q := r.URL.Query()
		return c.Sessions(SessionQuery{Bucket: q.Get("bucket"), User: q.Get("user"), State: q.Get("state")})
	})
	read("/admin/pools", func(*http.Request) (any, error) { return c.Pools(), nil })
	read("/admin/instances", func(r *http.Request) (any, error) { return c.Instances(r.Context()) })
	act("/admin/sessions/{id}/kill", func(r *http.Request) (any, error) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: the session id is a decimal number", ErrBadInput)
		}
		return c.Kill(id, r.RemoteAddr)
	})
	act("/admin/buckets/{id}/{action}", func(r *http.Request) (any, error) {
		action := r.PathValue("action")
		switch action {
		case "pause", "resume", "drain":
		default:
			return nil, fmt.Errorf("%w: bucket actions are pause, resume and drain", ErrNotFound)
		}
		fleet, _ := strconv.ParseBool(r.URL.Query().Get("fleet"))
		return c.BucketCommand(r.Context(), action, r.PathValue("id"), fleet, r.RemoteAddr)
	})
	act("/admin/reload", func(r *http.Request) (any, error) {
		res := c.Reload(r.RemoteAddr)
		if !res.OK {
			return res, errReloadFailed
		}
		return res, nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.check(r, false) == deny {
			log.Warn("admin: request refused: no valid credentials (admin_auth)", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr)
			a.challenge(w)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

var errReloadFailed = errors.New("reload failed")

// ErrorBody is the body of an admin API error.
type ErrorBody struct {
	Error string `json:"error"`
}

func reply(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, errReloadFailed):
		writeJSON(w, http.StatusUnprocessableEntity, v)
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, ErrorBody{err.Error()})
	case errors.Is(err, ErrConflict):
		writeJSON(w, http.StatusConflict, ErrorBody{err.Error()})
	case errors.Is(err, ErrBadInput):
		writeJSON(w, http.StatusBadRequest, ErrorBody{err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, ErrorBody{err.Error()})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
