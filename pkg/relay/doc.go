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
// # The backend leg outlives the relay
//
// Relay never closes the server conn: on a clean end the server has
// closed its side already (its EOF ended a direction); on an error it
// half-closes it (HalfClose: a deadline in the past wakes whatever reads
// or writes it, and a FIN goes out). The caller closes it with
// backend.Hangup, which waits (bounded) for the server's own close, and
// only then gives the session's slot back: the server counts a session
// until it has handled the close, and a slot released earlier could let
// a new login in while it still counts the old one.
//
// # The framed path
//
// A pooled session's backend outlives its client, so its relay must know
// where TDS messages begin and end: Framed (ModeFramed) moves each
// direction a chunk at a time — what one read returns, or what is queued —
// and follows the packets through the chunks with a walker (walker.go)
// that parses a header where a packet ends and skips the body by its
// length, headers split across reads included. A small chunk is one
// read and one write, whatever packets it holds. When both legs are
// plaintext and a run of bytes is queued (bulkMin or more), the chunk —
// up to the relay's pipe, 1 MiB, several packets — is walked where it
// lies, without taking it off the socket (peek.go): a body is skipped by
// its length, and a header is found with recv(2) MSG_PEEK, either by
// peeking the whole run (256 KiB per call; every byte copied once, the
// cheaper way while packets are small) or, once packets are 16 KiB or
// longer, by hopping from header to header: SO_PEEK_OFF set to the next
// header's offset, its 8 bytes peeked, no body copied. Then the whole
// walked chunk is spliced through a pipe of the relay's own (pipe.go),
// which counts exactly what it took, so a client that leaves during a
// splice leaves the backend at a packet boundary. A peek never reaches
// past what SIOCINQ said was queued; on a kernel without SO_PEEK_OFF for
// TCP (before 6.9) a chunk ends where a peek at offset 0 stops. It
// counts request messages and completed answers (an ATTENTION's DONE_ATTN
// brings them level), sets RESETCONNECTION on a reused session's first request and
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
// every path (ModeSockmap). A session ended by a reset, an error or Stop
// before the server's FIN closes the client's descriptor and half-closes
// the server's, and waits (at most backend.DefaultCloseWait) for the
// server's own close before done: done releases the slot.
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
