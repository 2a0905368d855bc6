package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceIdleFree copies src to dst, small messages through a pooled
// buffer and runs of bytes with splice(2), holding neither a buffer nor a
// pipe while the session is idle.
//
// (*net.TCPConn).ReadFrom splices through a pipe pair it takes when it
// starts and gives back only when it returns, and it waits for data while
// holding it: an idle session would keep two extra fds per direction. So
// each round waits for src itself (waiter): a non-blocking read into a
// buffer taken from a pool for the attempt, given back if nothing is
// there. A small message is then written on from that buffer: one read
// and one write, the fewest calls a round trip can take. A read that
// fills the buffer means a run of bytes: the rounds that follow ask the
// kernel how many bytes are queued (SIOCINQ) and splice exactly that many
// through an io.LimitedReader — which ReadFrom still splices, the pipe
// going back to Go's pool as soon as the bytes have moved — until the
// run ends.
func spliceIdleFree(dst, src *net.TCPConn) (int64, error) {
	w, err := newWaiter(src, &runBufs)
	if err != nil {
		return 0, err
	}
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		n, avail, err := w.next(0)
		if err != nil {
			return total, err
		}
		if n > 0 {
			m, err := dst.Write(w.bytes())
			w.done()
			total += int64(m)
			if err != nil {
				return total, err
			}
			continue
		}
		if avail == 0 {
			return total, nil // EOF
		}
		lr.N = int64(avail)
		m, err := dst.ReadFrom(lr)
		total += m
		if err != nil {
			return total, err
		}
	}
}

// runBufs are the buffers a waiter reads a run's tail into (less than
// bulkMin queued).
var runBufs = sync.Pool{New: func() any { b := make([]byte, bulkMin); return &b }}

// bulkMin is how many queued bytes a waiter in a run leaves to splice
// rather than read.
const bulkMin = 16 << 10

// waiter waits for a raw TCP socket to be readable without holding a
// thread or a pipe (the runtime poller parks the goroutine), then reads
// what is there: first into a small buffer of its own, so that waiting
// and small messages (a round trip's request and answer) take nothing
// from a pool and allocate nothing; after a read that filled its buffer
// (a run of bytes), it asks the kernel how many bytes are queued and
// either leaves them for the caller to splice or reads them into a
// buffer from its pool, given back by done. It honours the conn's read
// deadline.
//
// Nothing it does on the way to parking calls deep: the session
// goroutine that runs a direction idles with the login's frames below it
// (pkg/frontend), and a stack that grows once stays grown.
type waiter struct {
	rc    syscall.RawConn
	pool  *sync.Pool
	bulk  bool    // in a run: ask how much is queued before reading
	limit int     // read at most this much (0: the buffer)
	buf   *[]byte // from pool, holding the n bytes read, until done
	n     int
	avail int
	err   error
	small [smallRead]byte
	ready func(fd uintptr) bool
}

// smallRead is the waiter's own buffer: a round trip's request or
// answer fits.
const smallRead = 128

func newWaiter(c *net.TCPConn, pool *sync.Pool) (*waiter, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &waiter{rc: rc, pool: pool}
	// ready is called by the runtime poller: returning false waits for
	// readability.
	w.ready = func(fd uintptr) bool {
		var b []byte
		if w.bulk {
			n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if err != nil {
				w.err = err
				return true
			}
			if n >= bulkMin {
				w.avail = n
				return true
			}
			if n > 0 {
				w.buf = w.pool.Get().(*[]byte)
				b = *w.buf
			}
		}
		if b == nil {
			w.bulk = false
			b = w.small[:]
		}
		if w.limit > 0 && w.limit < len(b) {
			b = b[:w.limit]
		}
		for {
			n, err := unix.Read(int(fd), b)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				w.done()
				return false
			case err != nil:
				w.done()
				w.err = err
			case n == 0:
				w.done() // EOF: avail and n stay 0
			default:
				w.n = n
				w.bulk = n == len(b)
			}
			return true
		}
	}
	return w, nil
}

// next waits for bytes. It returns n > 0 when it read n bytes (bytes
// gives them until done), avail > 0 when that many are queued for the
// caller to take, and both 0 at EOF. limit > 0 caps what it reads.
func (w *waiter) next(limit int) (n, avail int, err error) {
	w.n, w.avail, w.err, w.limit = 0, 0, nil, limit
	if err := w.rc.Read(w.ready); err != nil {
		return 0, 0, err
	}
	return w.n, w.avail, w.err
}

// buffer is where next read its n bytes: the waiter's own or the pool's
// (room past n may be read into).
func (w *waiter) buffer() []byte {
	if w.buf != nil {
		return *w.buf
	}
	return w.small[:]
}

// bytes are the bytes next read.
func (w *waiter) bytes() []byte { return w.buffer()[:w.n] }

// done gives the read buffer back.
func (w *waiter) done() {
	if w.buf != nil {
		w.pool.Put(w.buf)
		w.buf = nil
	}
	w.n = 0
}
