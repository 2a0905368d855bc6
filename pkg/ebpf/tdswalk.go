//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Flags of struct tdswalk (bpf/tdswalk_types.h).
const (
	tdswalkAnchored = 1
	tdswalkLost     = 2
	tdswalkBad      = 4
)

// TDSWalk is the kernel header walker of the framed relay (relay.KernelWalker,
// through pkg/app):
// the socket filter of bpf/tdswalk.c and its map. Arm attaches the filter
// to a backend socket and starts a walk of what the socket receives.
// Safe for concurrent use.
type TDSWalk struct {
	mu     sync.RWMutex
	objs   tdswalkObjects
	closed bool
}

// OpenTDSWalk loads the program and its map, sized for maxSessions walks
// (0: DefaultTDSWalkSessions). Every error wraps ErrUnavailable.
func OpenTDSWalk(maxSessions int) (*TDSWalk, error) {
	if maxSessions <= 0 {
		maxSessions = DefaultTDSWalkSessions
	}
	spec, err := loadTdswalk()
	if err != nil {
		return nil, unavailable("header walker: %w", err)
	}
	spec.Maps[tdswalkMapTdswalkState].MaxEntries = uint32(maxSessions)
	memlockErr := rlimit.RemoveMemlock()
	t := &TDSWalk{}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		return nil, loadFailed("header walker", err, memlockErr)
	}
	return t, nil
}

// NewTDSWalk opens the kernel header walker, or returns nil when it cannot
// load; either way it logs exactly one line.
func NewTDSWalk(maxSessions int, log *slog.Logger) *TDSWalk {
	if log == nil {
		log = slog.Default()
	}
	t, err := OpenTDSWalk(maxSessions)
	if err != nil {
		log.Warn("kernel header walker unavailable, pooled sessions peek the runs they splice", logKeyError, err)
		return nil
	}
	log.Info("kernel header walker loaded: pooled sessions splice the server's answers without peeking them", "max_sessions", t.objs.TdswalkState.MaxEntries())
	return t
}

// Arm attaches the filter to c (SO_ATTACH_BPF: again on a socket that has
// it, which replaces it with itself) and starts a walk at the next byte c
// receives. Call it while nothing is queued in c or in flight toward it.
func (t *TDSWalk) Arm(c *net.TCPConn) (*Walk, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil, ErrClosed
	}
	cookie, err := Cookie(c)
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_BPF, t.objs.TdsgateTdswalk.FD())
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("header walker: attach: %w", serr)
	}
	var zero tdswalkTdswalk
	if err := t.objs.TdswalkState.Update(&cookie, &zero, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("header walker: arm: %w", err)
	}
	return &Walk{t: t, cookie: cookie}, nil
}

// Len counts the walks armed.
func (t *TDSWalk) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0
	}
	return countKeys(t.objs.TdswalkState)
}

// Close frees the program and the map; sockets that still have the filter
// keep it (it finds no walk and keeps every segment). Idempotent.
func (t *TDSWalk) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return t.objs.Close()
}

// stateTries bounds the copies State takes of a walk the kernel keeps
// writing (a stream arriving faster than two lookups).
const stateTries = 8

// Walk is one socket's walk.
type Walk struct {
	t      *TDSWalk
	cookie uint64
}

// State reads the walk: a consistent snapshot, or ErrWalkBusy.
func (w *Walk) State() (WalkState, error) {
	w.t.mu.RLock()
	defer w.t.mu.RUnlock()
	if w.t.closed {
		return WalkState{}, ErrClosed
	}
	// The program cannot lock the entry: take two successive copies,
	// and keep them only when they are equal and neither was taken
	// during a write (gen_a == gen_b; bpf/tdswalk_types.h).
	var v, again tdswalkTdswalk
	if err := w.t.objs.TdswalkState.Lookup(&w.cookie, &v); err != nil {
		return WalkState{}, err
	}
	for tries := 0; ; tries++ {
		if err := w.t.objs.TdswalkState.Lookup(&w.cookie, &again); err != nil {
			return WalkState{}, err
		}
		if again == v && v.GenA == v.GenB {
			break
		}
		if tries == stateTries {
			return WalkState{}, ErrWalkBusy
		}
		v = again
	}
	return WalkState{
		// A snapshot taken while a segment is walked is the state before
		// it: those bytes are not queued yet.
		Usable:  v.Flags&(tdswalkAnchored|tdswalkLost|tdswalkBad) == tdswalkAnchored && v.Lost == 0,
		Bytes:   v.Bytes,
		Packets: v.Packets,
		EOMs:    v.Eoms,
		HVal:    v.Hval,
		HN:      int(v.Hn),
		Left:    int(v.Left),
		Mid:     v.Mid != 0,
	}, nil
}

// Close ends the walk (the filter stays on the socket, finding no walk).
func (w *Walk) Close() {
	w.t.mu.RLock()
	defer w.t.mu.RUnlock()
	if w.t.closed {
		return
	}
	// An entry that cannot be deleted goes with the map; nothing reads it.
	w.t.objs.TdswalkState.Delete(&w.cookie)
}
