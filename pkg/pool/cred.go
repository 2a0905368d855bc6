package pool

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// CredentialIterations is the PBKDF2 iteration count of the in-memory
// hashes of accepted passwords: the minimum passhash allows. The hashes
// never leave the process; the iterations only slow a guess at one read
// from a memory dump, and the verdict cache spares returning clients the
// cost.
const CredentialIterations = passhash.MinIterations

// macKey keys the verdict cache; drawn at start, never stored.
var macKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("pool: random: " + err.Error())
	}
	return k
}()

// credential is the password a sub-pool's backend sessions were accepted
// with, as a salted hash, and the cached verdict: the HMAC of the last
// password that verified.
type credential struct {
	hash *passhash.Hash

	mu sync.Mutex
	ok []byte // HMAC-SHA256(macKey, password) of a verified password
}

func mac(pw string) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte(pw))
	return m.Sum(nil)
}

// newCredential hashes pw. It returns nil for an empty password (nothing
// to verify against: such logins are not pooled).
func newCredential(pw string) *credential {
	if pw == "" {
		return nil
	}
	enc, err := passhash.NewWithIterations(pw, CredentialIterations)
	if err != nil {
		return nil
	}
	h, err := passhash.Parse(enc)
	if err != nil {
		return nil
	}
	return &credential{hash: h, ok: mac(pw)}
}

// verify reports whether pw is the accepted password: one HMAC when it is
// the one last verified, a PBKDF2 otherwise.
func (c *credential) verify(pw string) bool {
	m := mac(pw)
	c.mu.Lock()
	hit := hmac.Equal(m, c.ok)
	c.mu.Unlock()
	if hit {
		return true
	}
	if !c.hash.Verify(pw) {
		return false
	}
	c.mu.Lock()
	c.ok = m
	c.mu.Unlock()
	return true
}
