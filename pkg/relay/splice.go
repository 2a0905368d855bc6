package relay

import (
	"errors"
	"io"
	"net"

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
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		total int64
		avail int
		serr  error
		peek  [1]byte
		lr    = &io.LimitedReader{R: src}
	)
	// ready is called by the runtime poller: returning false waits for
	// readability without a thread or a pipe.
	ready := func(fd uintptr) bool {
		n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil {
			serr = err
			return true
		}
		if n > 0 {
			avail = n
			return true
		}
		// Nothing queued: no data yet, or the peer closed. A non-blocking
		// peek tells them apart.
		m, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil:
			serr = err
		default:
			avail = m // 0 at EOF
		}
		return true
	}
	for {
		avail, serr = 0, nil
		if err := rc.Read(ready); err != nil {
			return total, err
		}
		if serr != nil {
			return total, serr
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
