package frontend

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// hangupPoll is how often a queued client's socket is checked for a hang-up.
const hangupPoll = 100 * time.Millisecond

// watchHangup calls cancel when the client closes its connection (or it
// breaks) while the session waits, without reading from it: poll(2) with
// POLLRDHUP sees the peer's FIN even when unread bytes (a TLS
// close_notify) come before it. stop ends the watch.
func watchHangup(c *net.TCPConn, cancel func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(hangupPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if peerGone(c) {
					cancel()
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

func peerGone(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		if err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			gone = true
		}
	})
	return gone
}
