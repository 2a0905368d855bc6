//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"log/slog"
	"net"
)

// TDSWalk is the kernel header walker. It only exists on little-endian
// Linux; here OpenTDSWalk always fails with ErrUnavailable.
type TDSWalk struct{}

// OpenTDSWalk returns an error wrapping ErrUnavailable on this platform.
func OpenTDSWalk(int) (*TDSWalk, error) { return nil, unavailable("header walker: %w", errPlatform) }

// NewTDSWalk logs that the walker is unavailable and returns nil.
func NewTDSWalk(_ int, log *slog.Logger) *TDSWalk {
	if log == nil {
		log = slog.Default()
	}
	log.Warn("kernel header walker unavailable, pooled sessions peek the runs they splice", logKeyError, errPlatform)
	return nil
}

func (*TDSWalk) Arm(*net.TCPConn) (*Walk, error) { return nil, ErrClosed }
func (*TDSWalk) Len() int                        { return 0 }
func (*TDSWalk) Close() error                    { return nil }

// Walk is one socket's walk.
type Walk struct{}

func (*Walk) State() (WalkState, error) { return WalkState{}, ErrClosed }
func (*Walk) Close()                    {}
