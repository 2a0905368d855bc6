// Package listener owns the proxy's listening sockets and the accept loops:
// everything between "a TCP address in the config" and "a net.Conn handed to
// a client session". It does not own sessions: handlers run in their own
// goroutines and the caller tracks and drains them.
//
// # SO_REUSEPORT
//
// Listen opens N listeners on one address, each with SO_REUSEPORT, so the
// kernel spreads new connections across N accept goroutines (by a hash of
// the 4-tuple) and a second process can bind the same address. A restart
// without downtime is: start the new process (it binds), then cancel the old
// one's Serve context (it stops accepting) and let its sessions drain.
//
// With Redis the two processes usually share an instance_id (it defaults
// to the host name): the new one finds the id's lease held by the old
// one's incarnation, registers as "<id>~<incarnation prefix>" and never
// touches the old one's slots; the old one gives its slots back when it
// has drained and leaves (see the README's Redis section).
//
// One caveat of plain SO_REUSEPORT on Linux: a connection that the kernel has
// already queued on a listener (handshake done, not yet accepted) is reset
// when that listener is closed. Set the sysctl net.ipv4.tcp_migrate_req=1
// (Linux 5.14+) and the kernel moves such connections to another listener of
// the same group instead; without it a restart under load can reset the few
// connections that arrive in the instant the old listeners close.
//
// Linux only lets sockets of the same user share a port, and only if every
// one of them set SO_REUSEPORT; otherwise Listen fails with
// "address ... already in use (by a process without SO_REUSEPORT?)".
//
// # Accepted connections stay raw
//
// Serve hands each accepted connection to the handler as the plain
// *net.TCPConn, never wrapped: the relay's splice fast path (see pkg/relay)
// only works on a raw *net.TCPConn. TCP_NODELAY is Go's default; Serve sets
// TCP keepalive. Temporary accept errors (out of file descriptors, ...) back
// off from 5 ms to 1 s instead of spinning.
//
// # PROXY protocol v2
//
// Behind HAProxy with send-proxy-v2, WithProxyProtocol makes Serve read the
// PROXY v2 header (ReadProxyHeader) before calling the handler, which then
// gets a *Conn: the same raw *net.TCPConn, embedded, reporting the client's
// real address as RemoteAddr. The header is read byte-exactly, with no
// buffering, so nothing after it is consumed and splice still applies
// (TCPConn unwraps it). v1 text headers are refused. ParseProxyHeader is the
// pure parser, fuzzed by FuzzProxyHeader. WithTrustedProxies lists the
// peers allowed to send it: a connection from any other peer is closed at
// accept, before a byte is read (a client could otherwise forge its own
// address); an empty list trusts nobody.
//
// # The door
//
// WithMaxConns caps the connections held at once; one more is closed at
// accept. Refusals before PRELOGIN cannot carry a TDS error, so they are
// a close, counted by the WithRefusals callback (one of RefusedReasons)
// and logged by a RefusalLog at most once per interval and reason, with
// the number refused since the last line: a flood of 10,000 sockets is a
// few log lines.
package listener
