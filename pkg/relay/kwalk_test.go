//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package relay

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// kernelWalker is ebpf.TDSWalk as a KernelWalker (pkg/app has the same
// adapter; pkg/ebpf cannot import this package's tests' package).
type kernelWalker struct{ t *ebpf.TDSWalk }

func (k kernelWalker) Arm(c *net.TCPConn) (KernelWalk, error) {
	w, err := k.t.Arm(c)
	if err != nil {
		return nil, err
	}
	return kernelWalk{w}, nil
}

type kernelWalk struct{ w *ebpf.Walk }

func (k kernelWalk) State() (WalkState, error) {
	s, err := k.w.State()
	if errors.Is(err, ebpf.ErrWalkBusy) {
		err = ErrWalkBusy
	}
	return WalkState(s), err
}

func (k kernelWalk) Close() { k.w.Close() }

func openKernelWalker(t *testing.T) (KernelWalker, *ebpf.TDSWalk) {
	t.Helper()
	w, err := ebpf.OpenTDSWalk(64)
	if err != nil {
		t.Fatalf("ebpf.OpenTDSWalk: %v (the test runs as root: it needs CAP_BPF)", err)
	}
	t.Cleanup(func() { w.Close() })
	return kernelWalker{w}, w
}

// exchange sends n requests, each answered by the server app with a
// random answer in packets of ps bytes, checks every answer arrives
// whole, closes the client and returns the relay's result.
func exchange(t *testing.T, o FramedOptions, seed uint64, n, ps int) FramedResult {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	h := startFramed(t, o)
	for i := range n {
		req := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT 1"))
		if _, err := h.client.Write(req); err != nil {
			t.Fatal(err)
		}
		readMsg(t, h.server)
		size := r.IntN(64 << 10)
		if i%3 == 0 {
			size = 1<<20 + r.IntN(1<<20) // a run the relay splices
		}
		down := make([]byte, size)
		for j := range down {
			down[j] = byte(r.Uint32())
		}
		go h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, ps, down))
		if m := readMsg(t, h.client); !bytes.Equal(m.Data, down) {
			t.Fatalf("answer %d corrupted", i)
		}
	}
	h.client.Close()
	return h.result(t)
}

// With the kernel walking the server's headers, the framed relay moves
// large answers without peeking them (KernelWalked), and ends with the
// counts and state the peeking relay ends with.
func TestFramedKernelWalk(t *testing.T) {
	kw, tw := openKernelWalker(t)
	for _, ps := range []int{512, 4096, 8000, tds.MaxPacketSize} {
		peeked := exchange(t, FramedOptions{}, uint64(ps), 12, ps)
		walked := exchange(t, FramedOptions{Walker: kw}, uint64(ps), 12, ps)
		if walked.KernelWalked == 0 {
			t.Errorf("ps %d: nothing moved on the kernel's walk: %+v", ps, walked)
		}
		if peeked.KernelWalked != 0 {
			t.Errorf("ps %d: the peeking relay reports %d bytes on a kernel walk", ps, peeked.KernelWalked)
		}
		walked.KernelWalked = 0
		if walked != peeked {
			t.Errorf("ps %d: with the kernel's walk %+v, peeking %+v", ps, walked, peeked)
		}
		if walked.InFlight() || walked.Broken != BrokenNone || walked.ServerMessages != 12 {
			t.Errorf("ps %d: %+v", ps, walked)
		}
	}
	if n := tw.Len(); n != 0 {
		t.Errorf("%d walks left armed after the relays ended", n)
	}
}

// stopping is a KernelWalker whose walks stop (as after a gap) once
// State has been read after times times.
type stopping struct {
	KernelWalker
	after int
}

func (s stopping) Arm(c *net.TCPConn) (KernelWalk, error) {
	w, err := s.KernelWalker.Arm(c)
	if err != nil {
		return nil, err
	}
	return &stoppingWalk{KernelWalk: w, left: s.after}, nil
}

type stoppingWalk struct {
	KernelWalk
	left int
}

func (s *stoppingWalk) State() (WalkState, error) {
	st, err := s.KernelWalk.State()
	if s.left--; s.left < 0 {
		st.Usable = false
	}
	return st, err
}

// A walk that stops in the middle of a session (a gap, a refused header)
// leaves the relay where the kernel's walk was last taken: it peeks from
// there, and ends as the peeking relay does.
func TestFramedKernelWalkStops(t *testing.T) {
	kw, _ := openKernelWalker(t)
	for _, after := range []int{0, 1, 3, 7} {
		peeked := exchange(t, FramedOptions{}, uint64(after), 12, 4096)
		walked := exchange(t, FramedOptions{Walker: stopping{kw, after}}, uint64(after), 12, 4096)
		if (walked.KernelWalked > 0) != (after > 0) {
			t.Errorf("stop after %d reads: %d bytes on the kernel's walk", after, walked.KernelWalked)
		}
		walked.KernelWalked = 0
		if walked != peeked {
			t.Errorf("stop after %d reads: %+v, peeking %+v", after, walked, peeked)
		}
	}
}
