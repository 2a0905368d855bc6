package admin

// GET /peer/lease: the instances' full-outage check (issue 12). An instance
// cut off from Redis cannot tell "I am cut off" from "Redis is down for
// everyone"; with lease_loss close it admits past what Redis counts for
// it only when every peer it last saw answers here that its own lease is
// lost too (package limiter, doc.go "Partitions and full outages").

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// PeerLeasePath is the path of the peer endpoint, on the health listener.
const PeerLeasePath = "/peer/lease"

// Lease states of a PeerLease answer.
const (
	LeaseLive = "live"
	LeaseLost = "lost"
)

// PeerLease is the JSON body of GET /peer/lease.
type PeerLease struct {
	Instance    string `json:"instance"`
	Incarnation string `json:"incarnation"`
	// Lease is LeaseLive or LeaseLost: lost while the instance is in
	// fallback and past its lease deadline.
	Lease string `json:"lease"`
	// View is a digest of the instances the answering one splits each
	// max among (its last-seen membership): peers grow only when all
	// report the same.
	View string `json:"view"`
}

// PeerHandler serves GET /peer/lease from lease. It is always behind
// Auth.Require (see Options.PeerLease): with admin_auth set, only a caller
// with the credentials (the other instances, which share admin_auth) gets
// an answer.
func PeerHandler(lease func() PeerLease) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, _ := json.Marshal(lease())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	})
}

// PeerClient asks other instances' GET /peer/lease, with admin_auth's
// credentials when set (a bearer token, else basic auth). Credentials
// change in place (SetCredentials, on reload). Safe for concurrent use.
type PeerClient struct {
	hc *http.Client

	mu               sync.RWMutex
	token, user, pwd string
}

// NewPeerClient returns a PeerClient over plain HTTP (the health listener
// serves no TLS) that keeps connections to the peers alive between
// rounds.
func NewPeerClient() *PeerClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &PeerClient{hc: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// SetCredentials sets what the probes send: token as "Authorization:
// Bearer", else user and password as basic auth; all empty: nothing.
func (c *PeerClient) SetCredentials(token, user, password string) {
	c.mu.Lock()
	c.token, c.user, c.pwd = token, user, password
	c.mu.Unlock()
}

// ErrPeerMismatch: the address answered for another instance than the
// one asked about (a stale advertisement, a restarted port).
var ErrPeerMismatch = errors.New("peer: the address answers for another instance")

// Probe asks the instance id at addr (host:port) for its lease, within
// ctx. lost is true only when that instance answered 200 with lease
// "lost"; view is its View.
func (c *PeerClient) Probe(ctx context.Context, id, addr string) (lost bool, view string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+PeerLeasePath, nil)
	if err != nil {
		return false, "", err
	}
	c.mu.RLock()
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.pwd != "":
		req.SetBasicAuth(c.user, c.pwd)
	}
	c.mu.RUnlock()
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return false, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return false, "", fmt.Errorf("peer %s: %s", addr, resp.Status)
	}
	var pl PeerLease
	if err := json.Unmarshal(body, &pl); err != nil {
		return false, "", fmt.Errorf("peer %s: %w", addr, err)
	}
	if pl.Instance != id {
		return false, "", fmt.Errorf("%w (asked %s, answered %s)", ErrPeerMismatch, id, pl.Instance)
	}
	return pl.Lease == LeaseLost, pl.View, nil
}
