//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"log/slog"
	"net"
)

// DefaultTDSWalkSessions is the walks the map holds when OpenTDSWalk is
// given 0.
const DefaultTDSWalkSessions = 32768

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

// ErrWalkBusy is what Walk.State returns when the kernel kept writing the
// walk while it was read.
var ErrWalkBusy = errors.New("header walker: no stable copy of the walk")

// WalkState is a walk's state (see the Linux build).
type WalkState struct {
	Usable  bool
	Bytes   uint64
	Packets uint64
	EOMs    uint64
	HVal    uint64
	HN      int
	Left    int
	Mid     bool
}

// Walk is one socket's walk.
type Walk struct{}

func (*Walk) State() (WalkState, error) { return WalkState{}, ErrClosed }
func (*Walk) Close()                    {}
