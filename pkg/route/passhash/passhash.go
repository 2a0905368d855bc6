package passhash

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// Scheme is the first field of every hash.
	Scheme = "pbkdf2-sha256"

	// DefaultIterations is the PBKDF2 iteration count of the hashes [New]
	// makes. A credential route verifies the login's password on every
	// login that reaches it, so the count is a trade-off: each step up
	// makes an offline guess at a leaked hash dearer, and makes every
	// uncached login (and every guess sent at the proxy) cost as much
	// CPU. 10000 keeps a verification to a few milliseconds of one core
	// (about 4 ms on the CI machine, BenchmarkVerify); pkg/route caches
	// results, so a client that logs in again pays nothing.
	// Config files keep the count a hash was made with, so raising this
	// default changes only new hashes.
	DefaultIterations = 10000

	// MinIterations and MaxIterations bound the count [Parse] accepts:
	// below the minimum the hash protects little, above the maximum one
	// uncached login would burn a core for about half a second.
	MinIterations = 1000
	MaxIterations = 1000000

	// SaltLen is the length in bytes of the random salt [New] draws.
	SaltLen = 16
	// MinSaltLen and MaxSaltLen bound the salt length [Parse] accepts.
	MinSaltLen = 8
	MaxSaltLen = 64

	// KeyLen is the length in bytes of the derived key (one SHA-256 block).
	KeyLen = 32
)

// ErrEmptyPassword is returned by [New] for an empty password.
var ErrEmptyPassword = errors.New("passhash: empty password")

var b64 = base64.RawStdEncoding.Strict()

// Hash is a parsed password hash.
type Hash struct {
	Iterations int
	Salt       []byte
	Key        []byte
}

// New hashes pw with [DefaultIterations] and a fresh random salt and
// returns the encoded hash.
func New(pw string) (string, error) {
	return NewWithIterations(pw, DefaultIterations)
}

// NewWithIterations is [New] with an explicit iteration count, which must
// lie within [MinIterations, MaxIterations].
func NewWithIterations(pw string, iterations int) (string, error) {
	if pw == "" {
		return "", ErrEmptyPassword
	}
	if iterations < MinIterations || iterations > MaxIterations {
		return "", fmt.Errorf("passhash: iterations must be within [%d, %d] (got %d)", MinIterations, MaxIterations, iterations)
	}
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("passhash: salt: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, pw, salt, iterations, KeyLen)
	if err != nil {
		return "", fmt.Errorf("passhash: %w", err)
	}
	h := Hash{Iterations: iterations, Salt: salt, Key: key}
	return h.Encode(), nil
}

// Parse decodes an encoded hash. Its errors describe what is wrong without
// quoting the hash.
func Parse(s string) (*Hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 4 {
		return nil, fmt.Errorf("malformed hash: want %s$<iterations>$<salt>$<key> (got %d $-separated fields)", Scheme, len(parts))
	}
	if parts[0] != Scheme {
		return nil, fmt.Errorf("malformed hash: unknown scheme (want %q)", Scheme)
	}
	it, err := strconv.Atoi(parts[1])
	if err != nil || strconv.Itoa(it) != parts[1] {
		return nil, errors.New("malformed hash: iterations is not a decimal integer")
	}
	if it < MinIterations || it > MaxIterations {
		return nil, fmt.Errorf("malformed hash: iterations must be within [%d, %d] (got %d)", MinIterations, MaxIterations, it)
	}
	salt, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("malformed hash: salt is not unpadded standard base64")
	}
	if len(salt) < MinSaltLen || len(salt) > MaxSaltLen {
		return nil, fmt.Errorf("malformed hash: salt must be %d to %d bytes (got %d)", MinSaltLen, MaxSaltLen, len(salt))
	}
	key, err := b64.DecodeString(parts[3])
	if err != nil {
		return nil, errors.New("malformed hash: key is not unpadded standard base64")
	}
	if len(key) != KeyLen {
		return nil, fmt.Errorf("malformed hash: key must be %d bytes (got %d)", KeyLen, len(key))
	}
	return &Hash{Iterations: it, Salt: salt, Key: key}, nil
}

// Verify reports whether pw matches the hash. The final comparison is
// constant-time.
func (h *Hash) Verify(pw string) bool {
	key, err := pbkdf2.Key(sha256.New, pw, h.Salt, h.Iterations, len(h.Key))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(key, h.Key) == 1
}

// Encode returns the hash in its text format. Treat the result as a
// secret: keep it out of logs.
func (h *Hash) Encode() string {
	return Scheme + "$" + strconv.Itoa(h.Iterations) + "$" + b64.EncodeToString(h.Salt) + "$" + b64.EncodeToString(h.Key)
}

// String returns a redacted form that names the scheme and iteration count
// only, so that printing a Hash by mistake leaks nothing.
func (h Hash) String() string {
	return Scheme + "$" + strconv.Itoa(h.Iterations) + "$<redacted>"
}

// GoString is [Hash.String], for %#v.
func (h Hash) GoString() string { return h.String() }

// Verify parses encoded and verifies pw against it. The error is non-nil
// only when encoded is malformed.
func Verify(encoded, pw string) (bool, error) {
	h, err := Parse(encoded)
	if err != nil {
		return false, err
	}
	return h.Verify(pw), nil
}
