package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Redirector joins two sockets in the kernel so that each one's incoming
// bytes go straight out of the other (pkg/ebpf's Sockmap).
type Redirector interface {
	// Join puts a and b in the map; on error neither is left in it.
	Join(a, b *net.TCPConn) error
	// Leave takes both out again; a closed socket is already out.
	Leave(a, b *net.TCPConn) error
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
//	Run          the caller wrote the login reply; watch both sockets for
//	             EOF/error with the runtime poller until both directions end
//	             (a clean EOF half-closes the peer once the bytes before it
//	             are handed over; an error closes both legs), then Leave
//	Cancel       instead of Run, when the login reply could not be written
//
// Every path out of Run and Cancel leaves the map.
type Kernel struct {
	r              Redirector
	client, server *net.TCPConn
	// base are the counters when the sockets joined.
	cRecv0, sRecv0 uint64 // bytes received
	cSent0, sSent0 uint64 // bytes written into the socket (acked + queued)
	left           sync.Once
}

// JoinKernel joins client and server in r. It must run while neither peer
// can be sending: after the backend's login answer was read and before it
// is written to the client. Then neither receive queue holds data, which it
// checks before and after the join, so no byte can overtake another. On
// error (ErrQueued, or r's: the map is full) nothing is left joined and
// the caller relays with splice.
func JoinKernel(r Redirector, client, server *net.TCPConn) (*Kernel, error) {
	k := &Kernel{r: r, client: client, server: server}
	var err error
	var cq, sq int
	if k.cRecv0, k.cSent0, cq, err = sockCounters(client); err != nil {
		return nil, err
	}
	if k.sRecv0, k.sSent0, sq, err = sockCounters(server); err != nil {
		return nil, err
	}
	if cq != 0 || sq != 0 {
		return nil, fmt.Errorf("%w (client %d, server %d bytes)", ErrQueued, cq, sq)
	}
	if err := r.Join(client, server); err != nil {
		return nil, err
	}
	// Bytes that arrived between the counters and the join would sit in
	// the queue, unmoved until more came (TestKernelJoinWithQueuedBytesStalls):
	// then relay in user space after all. Once joined, SIOCINQ reports only
	// what the program left for user space, so the receive counters are
	// what tells.
	cr, _, cq, cerr := sockCounters(client)
	sr, _, sq, serr := sockCounters(server)
	if err := errors.Join(cerr, serr); err != nil || cq != 0 || sq != 0 || cr != k.cRecv0 || sr != k.sRecv0 {
		r.Leave(client, server)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (arrived during the join)", ErrQueued)
	}
	return k, nil
}

// Cancel takes the sockets out of the map without relaying.
func (k *Kernel) Cancel() { k.leave() }

func (k *Kernel) leave() { k.left.Do(func() { k.r.Leave(k.client, k.server) }) }

// Run relays until both directions end and returns what a Relay would.
// written is the number of bytes the caller wrote to the client since
// JoinKernel (the login reply). Run does not close the conns on a clean
// end; the caller does.
func (k *Kernel) Run(written int) Result {
	defer k.leave()
	k.cSent0 += uint64(written)
	res := Result{Mode: ModeSockmap}
	var (
		mu     sync.Mutex
		failed bool
		cRecv  = k.cRecv0
		sRecv  = k.sRecv0
		// cFin, sFin: the side's FIN arrived (it took one sequence
		// number, counted by tcpi_bytes_received).
		cFin, sFin bool
	)
	// snapshot records the bytes each socket has received so far; once a
	// leg is closed its counters cannot be read, so the last one stands.
	snapshot := func() {
		if r, _, _, err := sockCounters(k.client); err == nil {
			cRecv = r
		}
		if r, _, _, err := sockCounters(k.server); err == nil {
			sRecv = r
		}
	}
	type dirResult struct {
		err  error
		from Side
	}
	done := make(chan dirResult, 2)
	dir := func(src, dst *net.TCPConn, from Side, srcRecv0, dstSent0 uint64) {
		err := waitEnd(src)
		mu.Lock()
		if res.Ended == SideNone {
			res.Ended = from
		}
		closedByOther := failed
		mu.Unlock()
		if closedByOther {
			// The other direction's error closed this leg.
			done <- dirResult{nil, from}
			return
		}
		if err == nil {
			mu.Lock()
			if from == SideClient {
				cFin = true
			} else {
				sFin = true
			}
			mu.Unlock()
			// Clean EOF: hand over what src sent before its FIN, then
			// pass the FIN on.
			if derr := drain(src, dst, srcRecv0, dstSent0, DefaultDrainTimeout); derr != nil {
				err = derr
			} else {
				dst.CloseWrite()
			}
		}
		if err != nil && !isClosed(err) {
			mu.Lock()
			if !failed {
				failed = true
				snapshot()
				k.leave()
				k.client.Close()
				k.server.Close()
			}
			mu.Unlock()
		}
		done <- dirResult{err, from}
	}
	go dir(k.client, k.server, SideClient, k.cRecv0, k.sSent0)
	dir(k.server, k.client, SideServer, k.sRecv0, k.cSent0)
	for i := 0; i < 2; i++ {
		r := <-done
		if r.err != nil && res.Err == nil && !isClosed(r.err) {
			res.Err = r.err
		}
	}
	mu.Lock()
	if !failed {
		snapshot()
	}
	mu.Unlock()
	res.ClientToServer = payload(cRecv-k.cRecv0, cFin)
	res.ServerToClient = payload(sRecv-k.sRecv0, sFin)
	return res
}

// payload is the bytes a socket received since the join, less its FIN.
func payload(n uint64, fin bool) int64 {
	if fin && n > 0 {
		n--
	}
	return int64(n)
}

// waitEnd waits, in the runtime poller, until src has ended: nil at a
// clean EOF, the socket's error (a reset), or net.ErrClosed when the conn
// was closed under it. The verdict program takes every segment, so the
// receive queue stays empty; bytes found there mean the program let them
// through (a socket without a peer entry), which is an error.
func waitEnd(src *net.TCPConn) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	var (
		serr error
		peek [1]byte
	)
	ready := func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case errors.Is(err, unix.EPIPE):
			// The kernel hands the peer's FIN to the verdict program as
			// an empty segment; sending it out of this socket fails, and
			// the psock reports EPIPE on this socket (read here, which
			// clears it). Not an end of this socket: wait on.
			return false
		case err != nil:
			serr = err
		case n > 0:
			serr = errors.New("sockmap relay: bytes left in a socket's queue (not redirected)")
		}
		return true
	}
	if err := rc.Read(ready); err != nil {
		return err
	}
	return serr
}

// drain waits until every byte src received since the join has been
// written into dst (acknowledged or queued), so that a half-close of dst
// cannot overtake bytes the kernel is still handing over. It gives up when
// dst can no longer send, or when no progress is made for timeout.
func drain(src, dst *net.TCPConn, srcRecv0, dstSent0 uint64, timeout time.Duration) error {
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
func sockCounters(c *net.TCPConn) (recv, sent uint64, inq int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, err
	}
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
func tcpState(c *net.TCPConn) (uint8, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
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
