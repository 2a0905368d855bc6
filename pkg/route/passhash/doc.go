// Package passhash owns the salted password hashes that tdsgate's
// credential routes carry: their text format, making one, parsing one and
// verifying a password against it.
//
// The format is
//
//	pbkdf2-sha256$<iterations>$<salt>$<key>
//
// where salt and key are unpadded standard base64 (base64.RawStdEncoding,
// strict: no padding, no stray bits), the key is PBKDF2-HMAC-SHA256
// (crypto/pbkdf2) of the password, 32 bytes long, and the salt is 16 random
// bytes when made here (8 to 64 bytes are accepted).
//
// It is a package of its own, under pkg/route, so that both pkg/config
// (which rejects a malformed hash at load, naming its YAML path) and
// pkg/route (which verifies logins) can use it without an import cycle:
// route imports config, so config cannot import route. It imports nothing
// else from tdsgate.
//
// Nothing here logs, and a parsed [Hash] prints in redacted form: the
// proxy never logs a password nor a hash of one.
package passhash
