//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"log/slog"
	"net/netip"
)

// SockOps is the eBPF Tracker. It only exists on little-endian Linux; here
// Open always fails with ErrUnavailable.
type SockOps struct{}

var _ Tracker = (*SockOps)(nil)

var errPlatform = errors.New("the tracker is built for little-endian Linux only")

// Open returns an error wrapping ErrUnavailable on this platform.
func Open(string, *slog.Logger) (*SockOps, error) { return nil, unavailable("%w", errPlatform) }

// DefaultCgroupPath returns an error on this platform.
func DefaultCgroupPath() (string, error) { return "", errPlatform }

// Cgroup2Mount returns an error on this platform.
func Cgroup2Mount() (string, error) { return "", errPlatform }

func (*SockOps) Cgroup() string                       { return "" }
func (*SockOps) Enabled() bool                        { return false }
func (*SockOps) Watch(string, netip.AddrPort) error   { return ErrClosed }
func (*SockOps) Unwatch(string, netip.AddrPort) error { return ErrClosed }
func (*SockOps) Counts() map[string]int64             { return map[string]int64{} }
func (*SockOps) Close() error                         { return nil }
