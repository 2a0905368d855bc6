package relay

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Finding the packet headers among queued bytes without taking them.
//
// A spliced chunk never passes through user space, but the walker must
// see every header in it. Two ways to see them, both with recv(2)
// MSG_PEEK, which copies without consuming:
//
//   - peek the whole run (up to peekSize at a time) and walk it: one call,
//     but every byte is copied once, header or body;
//   - hop: peek only a header's 8 bytes, at its offset in the queue
//     (SO_PEEK_OFF, Linux 6.9 and later for TCP), skip the body by its
//     length, peek the next header: two calls per packet, no body copied.
//
// Which costs less depends on the packet size: a copy costs per byte,
// a hop per packet. walkQueued hops once the packets it follows are at
// least hopMin long (measured: BenchmarkWalk* and BenchmarkBulkPeek*
// against BenchmarkBulkHop*, framed_bench_test.go).
//
// Measured and not taken (2026-12-02, BenchmarkWalk*): peeking a run with
// recvmsg(2) into an iovec per header and one small scratch for every
// body (a destination that stays in L1) costs what peeking into the
// 256 KiB buffer costs (0.09 against 0.09 s/GB at 4 KiB: the time goes
// in reading the queued bytes from the core that wrote them); skipping a
// body with MSG_PEEK|MSG_TRUNC, which on 6.18 moves SO_PEEK_OFF on
// without copying, instead of setting the offset is still two syscalls
// per packet (0.38–0.55 against 0.36–0.51 s/GB at 4 KiB). At 4 KiB
// packets the copy is the floor: the bytes between headers are copied,
// or a syscall is paid for each packet.
//
// Where a KernelWalker is armed (kwalk.go), the server's runs are not
// peeked at all: the kernel has walked their headers as they arrived.
// This file's walk remains the fallback, and the walk of the client's
// requests.

// maxChunk bounds a spliced chunk: what the relay's pipe holds, so that
// a chunk is one splice in and one out.
const maxChunk = pipeSize

// peekSize bounds one peek of a run (the copying way).
const peekSize = 256 << 10

var peekBufs = sync.Pool{New: func() any { b := make([]byte, peekSize); return &b }}

// hopMin is the packet length from which walkQueued hops from header to
// header rather than peeking the bytes between them. A hop costs two
// syscalls per packet (about 2 µs on this 2-core VM, whatever the
// length), a peek one copy per byte (about 0.09 s/GB, whatever the
// length), so hopping pays from about 20 KiB. Measured with the walk
// alone (walk-cpu-s/GB, BenchmarkWalk*, three passes, load 10–11):
// peeking 0.08–0.10 at 4 KiB, 0.07–0.11 at 8 KiB, 0.09–0.10 at 16 KiB,
// 0.09–0.10 at 32 KiB; hopping 0.36–0.51, 0.25–0.26, 0.13–0.14 and
// 0.07. The whole relay agrees (cpu-s/GB, BenchmarkBulkPeek* against
// BenchmarkBulkHop*, five alternated passes, load 11–15): at 8 KiB
// peeking 0.46–0.57 against 0.62–0.74, at 16 KiB 0.41–0.57 against
// 0.41–0.51. So 8000-byte packets (SqlClient's default) are peeked, and
// 16 KiB packets and larger hopped.
var hopMin = 16 << 10

// noPeekOff is set once the kernel refuses SO_PEEK_OFF on TCP: a chunk
// then ends where a peek at offset 0 cannot reach.
var noPeekOff atomic.Bool

// walkQueued moves the walker over the next n queued bytes of the socket
// behind rc without consuming them, and returns how many of them it
// accepted (fewer than n when the walker rejected a header: werr; or
// when the kernel cannot peek at an offset) and a read error. A body is
// skipped by its length, unseen: the spliced path never needs a body
// (tails are looked for only on the read path).
func walkQueued(rc syscall.RawConn, w *walker, v *visitor, n int) (m int, werr, err error) {
	bp := peekBufs.Get().(*[]byte)
	defer peekBufs.Put(bp)
	rerr := rc.Read(func(fd uintptr) bool {
		var offSet bool
		m, offSet, werr, err = walkFD(int(fd), *bp, w, v, n)
		if offSet {
			// Peeks elsewhere start at 0 again.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	return m, werr, err
}

// walkFD is walkQueued on the socket fd, with buf to peek into. offSet
// says whether it turned SO_PEEK_OFF on.
func walkFD(fd int, buf []byte, w *walker, v *visitor, n int) (m int, offSet bool, werr, err error) {
	for m < n && werr == nil {
		if w.inBody() {
			k := min(w.left, n-m)
			w.skipBody(k, v)
			m += k
			continue
		}
		// At a header, or in one begun in an earlier chunk.
		want := len(buf)
		if int(w.h.Length) >= hopMin {
			want = tds.HeaderLen - w.hn
		}
		want = min(want, n-m)
		if m > 0 || offSet {
			if noPeekOff.Load() {
				return // the chunk ends here; the next one peeks at 0
			}
			if e := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, m); e != nil {
				if errors.Is(e, unix.ENOPROTOOPT) || errors.Is(e, unix.EOPNOTSUPP) || errors.Is(e, unix.EINVAL) {
					noPeekOff.Store(true)
					return
				}
				err = e
				return
			}
			offSet = true
		}
		k, e := peekOnce(fd, buf[:want])
		if e != nil {
			err = e
			return
		}
		var a int
		a, werr = w.walk(buf[:k], v)
		m += a
		if k < want {
			return // fewer bytes queued than said: stop there
		}
	}
	return
}

// peekOnce copies up to len(p) queued bytes into p without consuming
// them (at SO_PEEK_OFF, when set); it does not wait. A raw recvfrom(2):
// unix.Recvfrom allocates the peer's address, once per header when
// hopping.
func peekOnce(fd int, p []byte) (int, error) {
	for {
		k, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return 0, e
		case k == 0:
			return 0, io.ErrUnexpectedEOF
		}
		return int(k), nil
	}
}
