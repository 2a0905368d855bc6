package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/backend"
)

// Redirector joins two sockets in the kernel so that each one's incoming
// bytes go straight out of the other (pkg/ebpf's Sockmap).
type Redirector interface {
	// Join puts a and b in the map; on error neither is left in it.
	Join(a, b *net.TCPConn) error
	// Leave takes the sockets with these cookies (SO_COOKIE) out again; a
	// closed socket is already out.
	Leave(cookieA, cookieB uint64) error
}

// ErrQueued is returned by JoinKernel when a leg has bytes waiting in its
// receive queue, which the kernel relay would not move in order: the
// session is relayed with splice instead.
var ErrQueued = errors.New("sockmap relay: bytes already queued on a leg")

// DefaultDrainTimeout bounds how long, after one side's clean EOF, the
// sockmap relay waits for the bytes that side sent before its FIN to be
// handed to the other side's socket, before it half-closes that socket.
// The wait restarts whenever those bytes make progress.
const DefaultDrainTimeout = 5 * time.Second

// Kernel is one session relayed in the kernel by a Redirector
// (ModeSockmap). Its life:
//
//	JoinKernel   both receive queues empty → both sockets in the map,
//	             counters' baselines taken (before the login reply)
//	Start        the caller wrote the login reply: Kernel takes both
//	             sockets out of the Go runtime (duplicate descriptors, the
//	             conns closed) and hands their ends to the shared end
//	             watcher (endwatch.go). From here the session holds no
//	             goroutine while it is idle.
//	look         run on a short-lived goroutine when the watcher reports
//	             an end (FIN, reset, error; never data) or Stop is called:
//	             a clean EOF half-closes the peer once the bytes before it
//	             are handed over; an error closes both legs. Then back to
//	             idle, or, once both directions ended (or on an error or
//	             Stop), finish.
//	finish       exactly once: stop watching, Leave, close both
//	             descriptors, then done(Result) on that same goroutine.
//	Cancel       instead of Start, when the login reply could not be
//	             written: Leave.
//
// Run is Start waiting for done. Every path out of Start and Cancel
// leaves the map.
type Kernel struct {
	r              Redirector
	client, server *net.TCPConn // until Start
	// base are the counters when the sockets joined.
	cRecv0, sRecv0 uint64 // bytes received
	cSent0, sSent0 uint64 // bytes written into the socket (acked + queued)
	left           sync.Once
	cCookie        uint64
	sCookie        uint64
	w              *endWatch

	// From Start on. running says a goroutine is in look (or Start has not
	// handed the session to the watcher yet, or it finished): a wake-up
	// then only sets pending, which that goroutine reads before it goes
	// idle.
	running, pending, stopped atomic.Bool
	legs                      [2]kernelLeg
	cfd, sfd                  *rawFD
	res                       Result
	failed                    bool
	done                      func(Result)
}

// JoinKernel joins client and server in r. It must run while neither peer
// can be sending: after the backend's login answer was read and before it
// is written to the client. Then neither receive queue holds data, which it
// checks before and after the join, so no byte can overtake another. On
// error (ErrQueued, or r's: the map is full) nothing is left joined and
// the caller relays with splice.
func JoinKernel(r Redirector, client, server *net.TCPConn) (*Kernel, error) {
	w, err := sharedEndWatch()
	if err != nil {
		return nil, err
	}
	k := &Kernel{r: r, client: client, server: server, w: w}
	k.running.Store(true) // no look before Start
	var cq, sq int
	if k.cRecv0, k.cSent0, cq, err = sockCounters(connFD{client}); err != nil {
		return nil, err
	}
	if k.sRecv0, k.sSent0, sq, err = sockCounters(connFD{server}); err != nil {
		return nil, err
	}
	if cq != 0 || sq != 0 {
		return nil, fmt.Errorf("%w (client %d, server %d bytes)", ErrQueued, cq, sq)
	}
	if k.cCookie, err = cookie(connFD{client}); err != nil {
		return nil, err
	}
	if k.sCookie, err = cookie(connFD{server}); err != nil {
		return nil, err
	}
	if err := r.Join(client, server); err != nil {
		return nil, err
	}
	// Bytes that arrived between the counters and the join would sit in
	// the queue, unmoved until more came (TestKernelJoinWithQueuedBytesStalls):
	// then relay in user space after all. Once joined, SIOCINQ reports only
	// what the program left for user space, so the receive counters are
	// what tells.
	cr, _, cq, cerr := sockCounters(connFD{client})
	sr, _, sq, serr := sockCounters(connFD{server})
	if err := errors.Join(cerr, serr); err != nil || cq != 0 || sq != 0 || cr != k.cRecv0 || sr != k.sRecv0 {
		r.Leave(k.cCookie, k.sCookie)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (arrived during the join)", ErrQueued)
	}
	return k, nil
}

// Cancel takes the sockets out of the map without relaying.
func (k *Kernel) Cancel() { k.leave() }

func (k *Kernel) leave() { k.left.Do(func() { k.r.Leave(k.cCookie, k.sCookie) }) }

// Stop ends the session at once (a drain deadline, a shed): after Start,
// its done runs soon after on another goroutine; before, Start finishes
// at once. Safe from any goroutine, any number of times.
func (k *Kernel) Stop() {
	k.stopped.Store(true)
	k.wake()
}

// kernelLeg is one direction of a Kernel: the bytes src receives go out of
// dst.
type kernelLeg struct {
	src, dst         sock
	from             Side
	recv0, dstSent0  uint64
	recv             uint64 // last tcpi_bytes_received read
	tok              uint64
	ended, fin, open bool
}

// Run relays until both directions end and returns what a Relay would:
// Start, waiting for its done.
func (k *Kernel) Run(written int) Result {
	ch := make(chan Result, 1)
	k.Start(written, func(r Result) { ch <- r })
	return <-ch
}

// Start relays the session without holding a goroutine: it returns once
// the session is handed to the end watcher (or over), and done receives
// what a Relay would return, exactly once, when both directions have
// ended, on whichever goroutine saw the end (the caller's own, when the
// session ended before Start returned). written is the number of bytes
// the caller wrote to the client since JoinKernel (the login reply).
//
// Start first takes both sockets out of the Go runtime's poller: it keeps
// a duplicate descriptor of each and closes the conns. Left registered
// there, every segment the kernel moves would still wake the runtime's
// netpoller (the socket signals readable and writable as bytes pass),
// costing the proxy a thread wake-up per segment for nothing. The sockets
// stay open through the duplicates, which finish closes: the caller's own
// Close of the conns is a no-op.
func (k *Kernel) Start(written int, done func(Result)) {
	k.cSent0 += uint64(written)
	k.done = done
	k.res = Result{Mode: ModeSockmap}
	cfd, cerr := dupFD(k.client)
	sfd, serr := dupFD(k.server)
	k.client.Close()
	k.server.Close()
	k.client, k.server = nil, nil // the session keeps nothing of the conns alive
	k.cfd, k.sfd = cfd, sfd
	k.legs = [2]kernelLeg{
		{src: cfd, dst: sfd, from: SideClient, recv0: k.cRecv0, dstSent0: k.sSent0, recv: k.cRecv0},
		{src: sfd, dst: cfd, from: SideServer, recv0: k.sRecv0, dstSent0: k.cSent0, recv: k.sRecv0},
	}
	if err := errors.Join(cerr, serr); err != nil {
		k.fail(err, SideNone)
		k.finish()
		return
	}
	for i := range k.legs {
		tok, err := k.w.add(k.legs[i].src, k.wake)
		if err != nil {
			k.fail(err, k.legs[i].from)
			k.finish()
			return
		}
		k.legs[i].tok, k.legs[i].open = tok, true
	}
	// The first look, here: an end that came before the watcher was
	// told. running is still true from JoinKernel.
	k.look()
}

// wake is the end watcher's (and Stop's) call: look at the session on a
// goroutine of its own, unless one is looking already (it will look
// again).
func (k *Kernel) wake() {
	k.pending.Store(true)
	if k.running.CompareAndSwap(false, true) {
		go k.look()
	}
}

// look handles the session's ends until it is idle again (no goroutine
// left) or over (finish).
func (k *Kernel) look() {
	for {
		k.pending.Store(false)
		if k.step() {
			k.finish() // running stays true: no look after this
			return
		}
		k.running.Store(false)
		if !k.pending.Load() || !k.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// step looks at both legs once; true: the session is over.
func (k *Kernel) step() bool {
	if k.stopped.Load() {
		return true
	}
	for i := range k.legs {
		l := &k.legs[i]
		eof, err := peekEnd(l.src)
		switch {
		case err != nil:
			// A reset or error, also after this side's EOF: the
			// other direction can no longer be delivered.
			k.fail(err, l.from)
			return true
		case eof && !l.ended:
			// Clean EOF: hand over what src sent before its FIN,
			// then pass the FIN on.
			l.ended, l.fin = true, true
			if k.res.Ended == SideNone {
				k.res.Ended = l.from
			}
			if derr := drain(l.src, l.dst, l.recv0, l.dstSent0, DefaultDrainTimeout); derr != nil {
				k.fail(derr, l.from)
				return true
			}
			shutWrite(l.dst)
		}
	}
	return k.legs[0].ended && k.legs[1].ended
}

// snapshot reads the receive counters while the descriptors are open.
func (k *Kernel) snapshot() {
	for i := range k.legs {
		if r, _, _, err := sockCounters(k.legs[i].src); err == nil {
			k.legs[i].recv = r
		}
	}
}

// fail records the session's error, takes the counts, and ends both legs
// at once: the client's is closed (the peer of a reset sees its
// connection end), the server's half-closed; finish closes it once the
// server let go.
func (k *Kernel) fail(err error, from Side) {
	k.failed = true
	k.res.Err = err
	if k.res.Ended == SideNone {
		k.res.Ended = from
	}
	k.snapshot()
	k.leave()
	k.cfd.close()
	shutWrite(k.sfd)
}

// finish ends the session, once: stop watching, leave the map, close the
// descriptors, and report.
func (k *Kernel) finish() {
	if !k.failed {
		k.snapshot()
	}
	for i := range k.legs {
		if k.legs[i].open {
			k.w.remove(k.legs[i].src, k.legs[i].tok)
			k.legs[i].open = false
		}
	}
	k.leave()
	k.cfd.close()
	if !k.legs[1].fin {
		// Ended by an error or Stop, before the server's FIN: the server
		// still holds the session until it has handled ours. done (the
		// slot's release) waits for that, as backend.Hangup does.
		hangUp(k.sfd, backend.DefaultCloseWait)
	}
	k.sfd.close()
	k.res.ClientToServer = payload(k.legs[0].recv-k.legs[0].recv0, k.legs[0].fin)
	k.res.ServerToClient = payload(k.legs[1].recv-k.legs[1].recv0, k.legs[1].fin)
	done := k.done
	k.done = nil
	done(k.res)
}

// payload is the bytes a socket received since the join, less its FIN.
func payload(n uint64, fin bool) int64 {
	if fin && n > 0 {
		n--
	}
	return int64(n)
}

// peekEnd tells, without blocking, whether src has ended: eof at a clean
// EOF, an error for a reset or a socket error (net.ErrClosed when the conn
// was closed). The verdict program takes every segment with data, so the
// receive queue holds nothing but an empty FIN segment; bytes found there
// mean the program let them through (a socket without a peer entry), an
// error.
func peekEnd(rc sock) (eof bool, err error) {
	var serr error
	var peek [1]byte
	cerr := rc.Control(func(fd uintptr) {
		for range 2 {
			n, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
			case errors.Is(err, unix.EPIPE):
				// A send into this socket failed (the psock reports it
				// here, and this read cleared it): look again.
				continue
			case err != nil:
				serr = err
			case n > 0:
				serr = errors.New("sockmap relay: bytes left in a socket's queue (not redirected)")
			default:
				eof = true
			}
			return
		}
	})
	if cerr != nil {
		return false, cerr
	}
	return eof, serr
}

// drain waits until every byte src received since the join has been
// written into dst (acknowledged or queued), so that a half-close of dst
// cannot overtake bytes the kernel is still handing over. It gives up when
// dst can no longer send, or when no progress is made for timeout.
func drain(src, dst sock, srcRecv0, dstSent0 uint64, timeout time.Duration) error {
	recv, _, _, err := sockCounters(src)
	if err != nil {
		return err
	}
	// src is at EOF: its FIN took one sequence number, which
	// tcpi_bytes_received counts and which is not a byte to hand over.
	want := uint64(payload(recv-srcRecv0, true))
	var last uint64
	deadline := time.Now().Add(timeout)
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		_, sent, _, err := sockCounters(dst)
		if err != nil {
			return err
		}
		got := sent - dstSent0
		if got >= want {
			return nil
		}
		if got != last {
			last, deadline = got, time.Now().Add(timeout)
		}
		if st, err := tcpState(dst); err != nil || (st != unix.BPF_TCP_ESTABLISHED && st != unix.BPF_TCP_CLOSE_WAIT) {
			return fmt.Errorf("sockmap relay: %d of %d bytes handed over before the peer could no longer take them", got, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sockmap relay: %d of %d bytes handed over in %v", got, want, timeout)
		}
		time.Sleep(wait)
	}
}

// sockCounters reads a socket's counters: bytes received (tcpi_bytes_received),
// bytes written into it (tcpi_bytes_acked + the send queue, SIOCOUTQ: the
// acked count is read first, so a concurrent ack can only make the sum
// lower, never higher), and bytes waiting in its receive queue (SIOCINQ).
func sockCounters(rc sock) (recv, sent uint64, inq int, err error) {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var ti *unix.TCPInfo
		if ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); serr != nil {
			return
		}
		var outq int
		if outq, serr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); serr != nil {
			return
		}
		if inq, serr = unix.IoctlGetInt(int(fd), unix.SIOCINQ); serr != nil {
			return
		}
		recv, sent = ti.Bytes_received, ti.Bytes_acked+uint64(outq)
	}); err != nil {
		return 0, 0, 0, err
	}
	return recv, sent, inq, serr
}

// tcpState returns the socket's TCP state (tcpi_state).
func tcpState(rc sock) (uint8, error) {
	var st uint8
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var ti *unix.TCPInfo
		if ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); serr == nil {
			st = ti.State
		}
	}); err != nil {
		return 0, err
	}
	return st, serr
}

// cookie returns the socket's cookie (SO_COOKIE), the map's key.
func cookie(rc sock) (uint64, error) {
	var v uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		return 0, err
	}
	return v, serr
}

// sock is a socket whose descriptor can be used: a conn's (connFD, which
// keeps the descriptor from being closed and reused meanwhile) or one Run
// owns (*rawFD).
type sock interface {
	Control(f func(fd uintptr)) error
}

// connFD is a conn's socket.
type connFD struct{ c *net.TCPConn }

func (c connFD) Control(f func(fd uintptr)) error {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(f)
}

// rawFD is a descriptor Run owns, outside the Go runtime's poller.
type rawFD struct{ fd int }

func (r *rawFD) Control(f func(fd uintptr)) error {
	if r.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(r.fd))
	return nil
}

func (r *rawFD) close() {
	if r != nil && r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// dupFD duplicates c's descriptor (close-on-exec, non-blocking like the
// original).
func dupFD(c *net.TCPConn) (*rawFD, error) {
	r := &rawFD{fd: -1}
	var derr error
	err := connFD{c}.Control(func(fd uintptr) {
		r.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err = errors.Join(err, derr); err != nil {
		r.fd = -1
		return r, err
	}
	return r, nil
}

// hangUp half-closes a socket Run owns and waits, at most wait, for the
// peer's own close (EOF or reset), discarding what it still sends: the
// kernel relay's backend.Hangup, on a descriptor outside the poller.
func hangUp(r *rawFD, wait time.Duration) {
	end := time.Now().Add(wait)
	r.Control(func(fd uintptr) {
		unix.Shutdown(int(fd), unix.SHUT_WR)
		var buf [4096]byte
		for {
			left := time.Until(end)
			if left <= 0 {
				return
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
			n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
			if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
				continue
			}
			if err != nil {
				return
			}
			m, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || m == 0 {
				return // the peer's close (EOF, reset)
			}
		}
	})
}

// shutWrite half-closes the socket (shutdown SHUT_WR): its FIN follows
// the bytes already queued.
func shutWrite(rc sock) {
	rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
}
