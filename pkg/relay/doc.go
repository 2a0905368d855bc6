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
//
// # The framed path
//
// A pooled session's backend outlives its client, so its relay must know
// where TDS messages begin and end: Framed (ModeFramed) moves each
// direction a chunk at a time — what one read returns, or what is queued —
// and follows the packets through the chunks with a walker (walker.go)
// that parses a header where a packet ends and skips the body by its
// length, headers split across reads included. A small chunk is one read
// and one write, whatever packets it holds; when both legs are plaintext
// and a run of bytes is queued, the chunk's headers are peeked (MSG_PEEK)
// and the whole chunk, several packets, is spliced through a pipe of the
// relay's own (pipe.go), which counts exactly what it took, so a client
// that leaves during a splice leaves the backend at a packet boundary.
// It counts request
// messages and completed answers (an ATTENTION's DONE_ATTN brings them
// level), sets RESETCONNECTION on a reused session's first request and
// strips the ENVCHANGE 18 that opens its answer, and stops at a packet
// boundary when the client leaves, without closing or half-closing the
// backend; a MARS (SMP) packet or a broken stream marks the backend as not
// reusable.
//
// # The kernel path
//
// With relay: sockmap, a plaintext session of its own joins a BPF sockhash
// before its login reply is written (JoinKernel, with a Redirector from
// pkg/ebpf), and the kernel sends each segment on to the other socket.
// Kernel.Start takes both sockets out of the Go runtime's poller (it keeps
// duplicate descriptors and closes the conns), so moving bytes wakes no
// proxy thread, and hands their ends to one epoll shared by all such
// sessions (endwatch.go): an idle session holds no goroutine at all. A
// FIN, reset or error wakes a short-lived goroutine that half-closes the
// peer on a clean EOF once the bytes before it are handed over; when both
// directions have ended it counts the bytes from TCP_INFO, leaves the map,
// closes the descriptors and calls the session's done, exactly once, on
// every path (ModeSockmap).
//
// # Idle sessions hold no pipe, no buffer, one small goroutine per direction
//
// ReadFrom holds a pipe pair for as long as it runs, waiting for data
// included. The splice path therefore waits for the socket itself
// (splice.go): a non-blocking read into a buffer taken from a pool for the
// attempt and given back if nothing is there, so that a small message is
// one read and one write — the write made from within the wait, which then
// parks again without a read that would find nothing; a run of bytes is
// spliced, exactly what is queued. An idle session holds its two sockets and no pipe or buffer.
// Start (and StartFramed) run each direction on a goroutine of its own
// and return: no goroutine waits for the two, the last direction to end
// runs the caller's end. Each direction parks a few small frames below its
// entry (no closures, the end's work in frames of its own), so that both
// keep the runtime's smallest stack (2 KiB) for the session's life;
// Relay and Framed are Start and StartFramed waited for. A plaintext
// framed direction waits the same way, without a buffer.
package relay
