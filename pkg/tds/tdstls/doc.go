// Package tdstls owns the TLS handshake of TDS connections, on both sides
// of the proxy: Server for a client connecting to tdsgate, Client for
// tdsgate logging in to a backend SQL Server. It owns nothing else: the
// PRELOGIN exchange that decides whether TLS happens is pkg/tds (codec) and
// the session (frontend, backend) that calls this package.
//
// # TLS inside PRELOGIN packets (TDS 7.x)
//
// In TDS 7.x the PRELOGIN exchange comes first, in plaintext. If it
// negotiates TLS, the TLS handshake records travel inside TDS packets of
// type PRELOGIN (0x12): each side sends its handshake flight as the payload
// of one or more PRELOGIN packets, split at the packet size, EOM on the
// last, and strips the 8-byte headers of what it receives. Once the
// handshake completes, TLS records flow raw on the TCP stream, and TDS
// packets travel inside TLS. A net.Conn adapter under the tls.Conn does the
// wrapping during the handshake and passes bytes through afterwards, like
// go-mssqldb's tlsHandshakeConn and passthroughConn.
//
// The ENCRYPTION option of PRELOGIN ([MS-TDS] 2.2.6.5) decides the mode.
// Each side sends one byte; the server's answer settles it:
//
//	0x00 ENCRYPT_OFF      TLS for the LOGIN7 only ("login-only"), if both sides can
//	0x01 ENCRYPT_ON       TLS for the whole session ("full")
//	0x02 ENCRYPT_NOT_SUP  no TLS at all (nothing in this package runs)
//	0x03 ENCRYPT_REQ      TLS required, for the whole session ("full")
//
// Login-only (OFF): the handshake runs, the client sends its LOGIN7 through
// TLS, and then both sides go back to plaintext on the raw connection: the
// server's login response is already plaintext (go-mssqldb sets its
// transport back to the raw conn right after sending the login). Call
// Detach on each side at that point; it hands back raw and disables the
// tls.Conn. Until then the adapter never reads ahead on raw: it reads one
// packet header and then at most that packet's payload during the
// handshake, and one TLS record at a time afterwards, so no plaintext byte
// that follows can disappear into a buffer. FreeTDS tsql and go-mssqldb
// without an encrypt parameter use this mode.
//
// Full (ON, REQ): the same handshake, then TLS for good. Call
// AllowReadAhead to let crypto/tls read in large chunks.
//
// In both wrapped modes the TLS version is capped at 1.2 and session
// tickets are off, so no TLS 1.3 post-handshake message can arrive after a
// peer stopped reading TLS; see Server.
//
// # TDS 8.0 strict
//
// Strict mode has no PRELOGIN before TLS: the client opens with a plain TLS
// ClientHello with ALPN "tds/8.0", and PRELOGIN, LOGIN7 and the rest of the
// session travel inside TLS; no TDS packet ever wraps a TLS record. A
// server tells the two kinds of client apart by their first bytes
// (LooksLikeTLSClientHello: 0x16 0x03 for TLS, 0x12 for PRELOGIN), hands
// the bytes it read back with WithPrefix, and calls ServerStrict, which
// requires the ALPN. ClientStrict offers it. TLS 1.3 is allowed there.
//
// # Deadlines and ownership
//
// Every handshake takes a context: its deadline becomes the raw deadline
// and is left on raw when the handshake returns, so that a login's reads
// after TLS (PRELOGIN inside strict TLS, LOGIN7) stay under the login
// deadline; the caller clears it once the login is done. (An earlier
// version cleared it, and a client that completed TLS and then said
// nothing was never timed out.) Cancellation wakes a blocked handshake. The raw connection stays the caller's: on error the
// caller closes it. The tls.Conn returned closes raw when closed, except
// after Detach. DynamicRecordSizingDisabled is always set: SQL Server-side
// stacks expect one TLS record per TDS packet during the login.
package tdstls
