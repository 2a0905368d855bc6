package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultKeepAlive is the TCP keepalive idle time and probe interval set on
// accepted connections when no other value is configured (see WithKeepAlive).
// With the kernel's default of 9 probes a dead client is noticed after about
// 30 s + 9 × 30 s = 5 min of silence.
const DefaultKeepAlive = 30 * time.Second

// Listen opens n TCP listeners on addr, each with SO_REUSEADDR and
// SO_REUSEPORT set, so that the kernel spreads incoming connections across
// them (by a hash of the 4-tuple) and each can be served by its own accept
// goroutine. n <= 0 means runtime.GOMAXPROCS(0).
//
// If addr has port 0, the first listener picks a free port and the others bind
// that same port; the port chosen is in every listener's Addr().
//
// Because every socket sets SO_REUSEPORT, a second call to Listen, in this
// process or in another process of the same user, can bind the same address
// while the first set is still open. That is how a restart without downtime
// works: the new process binds, then the old one stops accepting and drains.
// See the package documentation for the one caveat (connections still in a
// closed listener's accept queue).
//
// If a socket on the address was bound without SO_REUSEPORT (or by another
// user), the error says so. On any error the listeners already opened are
// closed. ctx bounds only the setup, not the listeners' lifetime.
func Listen(ctx context.Context, addr string, n int) ([]net.Listener, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listener: address %q: %w", addr, err)
	}
	lc := net.ListenConfig{
		Control: reusePortControl,
		// Serve sets each accepted connection's keepalive (WithKeepAlive):
		// a second set here would cost four setsockopt(2) per connection.
		KeepAlive: -1,
	}
	lns := make([]net.Listener, 0, n)
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	bindAddr := addr
	for i := 0; i < n; i++ {
		ln, err := lc.Listen(ctx, "tcp", bindAddr)
		if err != nil {
			closeAll()
			return nil, listenError(bindAddr, err)
		}
		lns = append(lns, ln)
		if i == 0 {
			// Port 0 (or a service name): the rest bind the port the
			// first one got.
			bindAddr = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		}
	}
	return lns, nil
}

// reusePortControl sets SO_REUSEADDR and SO_REUSEPORT on a socket before bind.
func reusePortControl(network, address string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		if sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); sockErr != nil {
			sockErr = fmt.Errorf("setsockopt SO_REUSEADDR: %w", sockErr)
			return
		}
		if sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); sockErr != nil {
			sockErr = fmt.Errorf("setsockopt SO_REUSEPORT: %w", sockErr)
		}
	})
	if err != nil {
		return err
	}
	return sockErr
}

// listenError names the address and explains EADDRINUSE, which with
// SO_REUSEPORT set on our side means the other socket lacks it (or belongs
// to another user: Linux only shares a port among sockets of one uid).
func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listener: address %s already in use (by a process without SO_REUSEPORT?): %w", addr, err)
	}
	return fmt.Errorf("listener: listen on %s: %w", addr, err)
}
