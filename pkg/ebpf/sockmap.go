//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Sockmap is the in-kernel relay: the sk_skb stream-verdict program of
// bpf/sockmap.c attached to its sockhash. Join puts the two sockets of a
// session in the map so that each one's incoming segments go straight out
// of the other; Leave takes them out again. Safe for concurrent use.
type Sockmap struct {
	mu     sync.RWMutex
	objs   sockmapObjects
	closed bool
}

// OpenSockmap loads the program and its maps, sized for maxSessions
// sessions (0: DefaultSockmapSessions), and attaches the program to the
// map: the feature probe. Every error wraps ErrUnavailable.
func OpenSockmap(maxSessions int) (*Sockmap, error) {
	if maxSessions <= 0 {
		maxSessions = DefaultSockmapSessions
	}
	spec, err := loadSockmap()
	if err != nil {
		return nil, unavailable("sockmap: %w", err)
	}
	spec.Maps[sockmapMapRelayPeers].MaxEntries = uint32(2 * maxSessions)
	memlockErr := rlimit.RemoveMemlock()
	m := &Sockmap{}
	if err := spec.LoadAndAssign(&m.objs, nil); err != nil {
		return nil, loadFailed("sockmap", err, memlockErr)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  m.objs.RelayPeers.FD(),
		Program: m.objs.TdsgateRelayVerdict,
		Attach:  ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		m.objs.Close()
		return nil, unavailable("sockmap: attach the verdict program: %w", err)
	}
	return m, nil
}

// NewSockmap opens the sockmap relay, or returns nil when it cannot load;
// either way it logs exactly one line.
func NewSockmap(maxSessions int, log *slog.Logger) *Sockmap {
	if log == nil {
		log = slog.Default()
	}
	m, err := OpenSockmap(maxSessions)
	if err != nil {
		log.Warn("sockmap relay unavailable, plaintext sessions are relayed with splice", logKeyError, err)
		return nil
	}
	log.Info("sockmap relay loaded: plaintext sessions are relayed in the kernel", "max_sessions", m.objs.RelayPeers.MaxEntries()/2)
	return m
}

// Join makes every byte a receives go out of b, and every byte b receives
// go out of a. Bytes already queued in either socket are not moved: call
// it while both receive queues are empty. It fails with ErrSockmapFull when
// the map has no room (the caller then relays another way); on any error
// neither socket is left in the map.
func (m *Sockmap) Join(a, b *net.TCPConn) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	ca, err := Cookie(a)
	if err != nil {
		return err
	}
	cb, err := Cookie(b)
	if err != nil {
		return err
	}
	if err := m.put(ca, b); err != nil {
		return err
	}
	if err := m.put(cb, a); err != nil {
		m.objs.RelayPeers.Delete(&ca)
		return err
	}
	return nil
}

// put stores peer's socket under key.
func (m *Sockmap) put(key uint64, peer *net.TCPConn) error {
	rc, err := peer.SyscallConn()
	if err != nil {
		return err
	}
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		uerr = m.objs.RelayPeers.Update(&key, uint32(fd), ebpf.UpdateNoExist)
	}); err != nil {
		return err
	}
	if errors.Is(uerr, unix.E2BIG) || errors.Is(uerr, unix.ENOMEM) {
		return fmt.Errorf("%w: %w", ErrSockmapFull, uerr)
	}
	if uerr != nil {
		return fmt.Errorf("sockmap: insert: %w", uerr)
	}
	return nil
}

// Leave takes the sockets with cookies a and b (Cookie) out of the map
// (each entry is deleted whether or not the other is there; a closed
// socket's entry is already gone).
func (m *Sockmap) Leave(a, b uint64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil
	}
	var errs []error
	for _, k := range []uint64{a, b} {
		if err := m.objs.RelayPeers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Len counts the entries in the map (two per joined session).
func (m *Sockmap) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0
	}
	return countKeys(m.objs.RelayPeers)
}

// loadFailed is the error of a program of what that did not load: the
// capabilities missing, or the memlock limit that could not be raised.
func loadFailed(what string, err, memlockErr error) error {
	if hint := missingCaps(); hint != "" {
		return unavailable("%s: load: %s: %w", what, hint, err)
	}
	if memlockErr != nil {
		return unavailable("%s: load: %w (raising RLIMIT_MEMLOCK also failed: %v)", what, err, memlockErr)
	}
	return unavailable("%s: load: %w", what, err)
}

// countKeys counts the entries of a map with uint64 keys.
func countKeys(m *ebpf.Map) int {
	var k, next uint64
	n := 0
	kp := any(nil)
	for {
		if err := m.NextKey(kp, &next); err != nil {
			return n
		}
		n++
		k = next
		kp = &k
	}
}

// Stats returns the verdict program's counters: segments redirected to a
// peer, and segments that found no peer and stayed in their socket.
func (m *Sockmap) Stats() (redirected, missed uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, 0
	}
	var st sockmapRelayStats
	if err := m.objs.RelayCounters.Lookup(uint32(0), &st); err != nil {
		return 0, 0
	}
	return st.Redirected, st.Missed
}

// Close detaches the program and frees the maps. Idempotent.
func (m *Sockmap) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	derr := link.RawDetachProgram(link.RawDetachProgramOptions{
		Target:  m.objs.RelayPeers.FD(),
		Program: m.objs.TdsgateRelayVerdict,
		Attach:  ebpf.AttachSkSKBStreamVerdict,
	})
	return errors.Join(derr, m.objs.Close())
}

// Cookie returns the kernel's cookie of c's socket (SO_COOKIE).
func Cookie(c *net.TCPConn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		return 0, err
	}
	return v, gerr
}
