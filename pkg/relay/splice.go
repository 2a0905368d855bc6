package relay

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceIdleFree copies src to dst with splice(2) without holding a pipe
// while the session is idle.
//
// (*net.TCPConn).ReadFrom splices through a pipe pair it takes when it
// starts and gives back only when it returns, and it waits for data while
// holding it: an idle session would keep two extra fds per direction. So
// each round waits for src to be readable without a pipe, asks the kernel
// how many bytes are queued (SIOCINQ), and splices exactly that many
// through an io.LimitedReader — which ReadFrom still splices, the pipe
// going back to Go's pool as soon as the bytes have moved.
func spliceIdleFree(dst, src *net.TCPConn) (int64, error) {
	w, err := newWaiter(src)
	if err != nil {
		return 0, err
	}
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		avail, err := w.wait()
		if err != nil {
			return total, err
		}
		if avail == 0 {
			return total, nil // EOF
		}
		lr.N = int64(avail)
		n, err := dst.ReadFrom(lr)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// waiter waits for a raw TCP socket to be readable without a buffer, a
// thread or a pipe (the runtime poller parks the goroutine), and says how
// many bytes are queued. It honours the conn's read deadline.
type waiter struct {
	rc    syscall.RawConn
	avail int
	err   error
	one   [1]byte
	ready func(fd uintptr) bool
}

func newWaiter(c *net.TCPConn) (*waiter, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &waiter{rc: rc}
	// ready is called by the runtime poller: returning false waits for
	// readability.
	w.ready = func(fd uintptr) bool {
		n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil {
			w.err = err
			return true
		}
		if n > 0 {
			w.avail = n
			return true
		}
		// Nothing queued: no data yet, or the peer closed. A non-blocking
		// peek tells them apart.
		m, _, err := unix.Recvfrom(int(fd), w.one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil:
			w.err = err
		default:
			w.avail = m // 0 at EOF
		}
		return true
	}
	return w, nil
}

// wait returns the bytes queued on the socket once there are any, 0 at
// EOF.
func (w *waiter) wait() (int, error) {
	w.avail, w.err = 0, nil
	if err := w.rc.Read(w.ready); err != nil {
		return 0, err
	}
	return w.avail, w.err
}

// peek copies up to len(p) queued bytes into p without consuming them.
// Called only when wait said bytes are queued, so it does not block.
func (w *waiter) peek(p []byte) (int, error) {
	var n int
	var perr error
	err := w.rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), p, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(perr, unix.EAGAIN)
	})
	if err == nil {
		err = perr
	}
	return n, err
}
