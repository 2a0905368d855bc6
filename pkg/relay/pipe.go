package relay

import (
	"errors"
	"io"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The framed relay splices through pipes of its own rather than through
// (*net.TCPConn).ReadFrom, because it must know, when the destination
// fails, exactly how many bytes it took from the source: ReadFrom reports
// only what it wrote, and a failed write leaves an unknown number of
// bytes taken from the source in its pipe. Knowing it, the relay can read
// and drop the rest of the chunk it walked and leave the backend at a
// packet boundary, reusable, when the client leaves during a splice.

// pipeSize is the pipe buffer asked for (F_SETPIPE_SZ); the kernel may
// give less (pipe-user-pages-soft), and a pipe's real size is read back.
const pipeSize = 1 << 20

type kpipe struct {
	r, w    int
	size    int // its buffer, in bytes
	data    int // bytes in it
	cleanup runtime.Cleanup
}

// kpipes keeps pipes between chunks; a pipe dropped by the pool is closed
// by its cleanup.
var kpipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	size, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETPIPE_SZ, 0)
	if err != nil || size <= 0 {
		size = 64 << 10
	}
	p := &kpipe{r: fds[0], w: fds[1], size: size}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) { unix.Close(fds[0]); unix.Close(fds[1]) }, fds)
	return p
}}

func getPipe() (*kpipe, error) {
	p, _ := kpipes.Get().(*kpipe)
	if p == nil {
		return nil, errors.New("relay: no pipe for splice")
	}
	return p, nil
}

func putPipe(p *kpipe) {
	if p.data != 0 {
		// Bytes left in it, which no one may read: close it.
		p.cleanup.Stop()
		unix.Close(p.r)
		unix.Close(p.w)
		return
	}
	kpipes.Put(p)
}

// spliceN moves n bytes from src to dst through a pipe, in the kernel.
// n bytes must be coming (the caller saw them queued). It returns the
// bytes taken from src and written to dst, and the first error of each
// side: a read error (src failed, or its deadline passed) or a write
// error (dst failed; the bytes taken but not written are dropped).
func spliceN(dst, src syscall.RawConn, n int) (taken, written int, rerr, werr error) {
	p, err := getPipe()
	if err != nil {
		return 0, 0, nil, err
	}
	defer putPipe(p)
	for taken < n {
		var k int
		var e error
		err := src.Read(func(fd uintptr) bool {
			for {
				var m int64
				m, e = unix.Splice(int(fd), nil, p.w, nil, min(n-taken, p.size-p.data), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				k = int(m)
				if e != unix.EINTR {
					return e != unix.EAGAIN
				}
			}
		})
		if err == nil {
			err = e
		}
		if err == nil && k == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			rerr = err
			break
		}
		taken += k
		p.data += k
		for p.data > 0 {
			var m int64
			err := dst.Write(func(fd uintptr) bool {
				for {
					m, e = unix.Splice(p.r, nil, int(fd), nil, p.data, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					if e != unix.EINTR {
						return e != unix.EAGAIN
					}
				}
			})
			if err == nil {
				err = e
			}
			if err == nil && m == 0 {
				err = io.ErrShortWrite
			}
			if err != nil {
				// The pipe keeps what it holds; putPipe drops it.
				return taken, written, nil, err
			}
			p.data -= int(m)
			written += int(m)
		}
	}
	return taken, written, rerr, nil
}
