// Package relay owns the copying of a session's bytes between the client
// and the backend once the login is done, in both directions, with
// half-close, and reports which path the bytes took and how many went
// each way.
//
// # The splice rule
//
// Go's (*net.TCPConn).ReadFrom moves bytes with splice(2) — kernel to
// kernel, no user-space copy — only when its source is itself a raw
// *net.TCPConn (or an io.LimitedReader around one). Any wrapper silently
// falls back to a 32 KiB user-space copy: a *tls.Conn, a bufio.Reader, or
// a conn that counts bytes as they pass. So the fast path keeps wrappers
// off both legs: Relay is handed the raw *net.TCPConn of each leg when both
// are plaintext after login, and counts bytes from io.Copy's return values
// instead of wrapping. When either leg is TLS, the copy runs in user space
// through crypto/tls (ModeTLS), with pooled buffers.
package relay
