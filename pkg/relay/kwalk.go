package relay

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Following the server's packet headers in the kernel.
//
// The framed relay must see every header of the server's answer, and a
// spliced run never passes through user space: walkQueued peeks the run
// first, which copies each of its bytes once (at 4 KiB packets that copy
// is most of what the framed relay costs beyond a plain splice). A
// KernelWalker (pkg/ebpf's TDSWalk) does the same walk in the kernel, in
// a socket filter that reads the 8 header bytes of each packet of every
// segment as it arrives and keeps the walker's state where the relay
// can read it. A run the kernel has walked is spliced without a peek;
// the relay takes the kernel's state at the run's end as its own.
//
// A socket filter runs in the order segments arrive, which is not always
// their sequence order: on loopback a flow's segments reach the socket
// from both CPUs (the sender's own send, and its socket sending more from
// the softirq in which it takes the receiver's ACKs). So a segment that
// comes early waits, some tens of microseconds at most, for the run that
// walks the bytes before it; a walk cannot go past bytes it never saw
// (TCP moves them out of its out-of-order queue without running the
// filter again).
//
// The kernel's walk is an accelerator, never the authority: it stops for
// good at any doubt (a gap that does not fill in time, bytes from before
// its first segment, a header that fails, or one PacketID out of step
// within a message, which a walk that had lost its place could not keep),
// and from there the relay peeks as it would without it. A segment is
// walked before TCP queues it, so the relay, which reads the walk after
// it saw bytes queued, sees a stop before it could read the bytes that
// caused it. Measured on a 2-vCPU host, pooled bulk of 4 KiB packets, CPU
// s/GB: 0.18–0.21 walking in the kernel against 0.30–0.32 peeking and
// HAProxy's 0.28–0.30 (three alternated runs of each); make bench, two
// runs: 0.22–0.25 against HAProxy's 0.30–0.34.

// KernelWalker starts kernel walks of the packets a socket receives.
type KernelWalker interface {
	// Arm starts a walk at the next byte c receives. Call it while
	// nothing is queued in c or in flight toward it, at a packet
	// boundary.
	Arm(c *net.TCPConn) (KernelWalk, error)
}

// KernelWalk is one socket's walk.
type KernelWalk interface {
	// State reads where the walk is: a consistent snapshot.
	State() (WalkState, error)
	// Close ends the walk.
	Close()
}

// WalkState is a kernel walk's state after the first Bytes bytes the
// socket received since it was armed. Usable says whether it may be
// trusted; the rest is the walker's state (walker) at that point.
type WalkState struct {
	Usable  bool
	Bytes   uint64 // stream bytes walked
	Packets uint64 // packets ended
	EOMs    uint64 // packets ended with EOM
	HVal    uint64 // header bytes gathered of the current packet, the first highest
	HN      int    // how many (0: at a boundary; HeaderLen: in a body)
	Left    int    // body bytes of the current packet still to come
	Mid     bool   // the last packet that ended had no EOM
}

// load puts the walker w where s says the stream is, with the header
// parsed by v (in a body). It reports false if s cannot be a walker's
// state, or v rejects its header.
func (s WalkState) load(w *walker, v *visitor) bool {
	if s.HN < 0 || s.HN > tds.HeaderLen || (s.HN == tds.HeaderLen) != (s.Left > 0) {
		return false
	}
	for i := range s.HN {
		w.hdr[i] = byte(s.HVal >> (8 * (s.HN - 1 - i)))
	}
	w.hn, w.left = s.HN, s.Left
	if s.HN == tds.HeaderLen {
		h, err := v.header(w.hdr[:])
		if err != nil || int(h.Length)-tds.HeaderLen < s.Left {
			return false
		}
		w.h = h
	}
	return true
}

// ErrWalkBusy is what KernelWalk.State returns when the kernel kept
// writing the walk while it was read: the relay peeks that run and asks
// again at the next.
var ErrWalkBusy = errors.New("kernel walk: no stable copy")

// errKernelWalk fails a session whose kernel walk, once its run was
// spliced, could not be taken as the relay's own: the relay no longer
// knows where the server's packets end.
var errKernelWalk = errors.New("the kernel's walk of the server's packets cannot be followed")

// eomHeader stands for a packet with EOM the kernel's walk found.
var eomHeader = tds.Header{Type: tds.PacketReply, Status: tds.StatusEOM, Length: tds.HeaderLen}

// armKernelWalk starts the kernel's walk of the server's stream, when
// the relay has a walker and splices: at the relay's start, with the
// server idle (no request sent yet) and nothing queued, so that the walk
// and the relay count from the same byte.
func (f *framer) armKernelWalk(src *source) {
	if !f.splice || f.o.Walker == nil || src.w == nil {
		return
	}
	kw, err := f.o.Walker.Arm(f.serverRaw)
	if err != nil {
		return
	}
	inq, ierr := -1, error(nil)
	if err := f.serverRC.Control(func(fd uintptr) { inq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil || inq != 0 {
		kw.Close() // bytes were queued before the walk: it would count from another byte
		return
	}
	f.kw = kw
}

// dropKernelWalk ends the kernel's walk: from here every run is peeked.
func (f *framer) dropKernelWalk() {
	if f.kw != nil {
		f.kw.Close()
		f.kw = nil
	}
}

// kernelRun reads the kernel's walk before a run of avail queued bytes is
// spliced. ok: the next m bytes (all that the kernel has walked, at least
// avail) may be spliced unpeeked, and st is the walker's state at their
// end. The walk is dropped when it cannot be trusted any more: it stopped
// (a gap, a header it refused), or it is behind what is queued.
//
// attn is read after the walk: every byte the walk counts passed the
// kernel before an ATTENTION still unsent could be answered, so no
// acknowledgement the relay must look for is among them (as for a peeked
// run, whose bytes were queued before attn was read).
func (f *framer) kernelRun(avail int) (st WalkState, m int, ok bool) {
	st, err := f.kw.State()
	if errors.Is(err, ErrWalkBusy) {
		return st, 0, false
	}
	if err != nil || !st.Usable || st.Bytes < f.kwPos+uint64(avail) || st.EOMs < f.kwEOMs {
		f.dropKernelWalk()
		return st, 0, false
	}
	f.mu.Lock()
	attn := f.attn
	f.mu.Unlock()
	if attn {
		return st, 0, false
	}
	return st, int(st.Bytes - f.kwPos), true
}

// adoptKernelWalk takes st, the kernel's walk at the end of a run just
// spliced, as the relay's own: the walker's place, the answers ended.
func (f *framer) adoptKernelWalk(st WalkState, w *walker, v *visitor) error {
	if !st.load(w, v) {
		f.dropKernelWalk()
		return errKernelWalk
	}
	for f.kwEOMs < st.EOMs {
		v.end(eomHeader) // counts kwEOMs
	}
	f.serverMid = st.Mid
	return nil
}
