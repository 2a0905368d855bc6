// Package certutil owns the TLS certificates tdsgate and its stand-in use
// when none is configured: a self-signed certificate generated at start,
// and its SHA-256 fingerprint for the log line that lets an operator pin it.
package certutil
