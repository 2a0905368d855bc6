//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"log/slog"
	"net"
)

// Sockmap is the in-kernel relay. It only exists on little-endian Linux;
// here OpenSockmap always fails with ErrUnavailable.
type Sockmap struct{}

// OpenSockmap returns an error wrapping ErrUnavailable on this platform.
func OpenSockmap(int) (*Sockmap, error) { return nil, unavailable("sockmap: %w", errPlatform) }

// NewSockmap logs that the sockmap relay is unavailable and returns nil.
func NewSockmap(_ int, log *slog.Logger) *Sockmap {
	if log == nil {
		log = slog.Default()
	}
	log.Warn("sockmap relay unavailable, plaintext sessions are relayed with splice", logKeyError, errPlatform)
	return nil
}

func (*Sockmap) Join(a, b *net.TCPConn) error { return ErrClosed }
func (*Sockmap) Leave(a, b uint64) error      { return nil }
func (*Sockmap) Len() int                     { return 0 }
func (*Sockmap) Stats() (uint64, uint64)      { return 0, 0 }
func (*Sockmap) Close() error                 { return nil }

// Cookie is not available on this platform.
func Cookie(*net.TCPConn) (uint64, error) { return 0, errPlatform }
