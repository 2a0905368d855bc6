//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capabilities. Loading the sock_ops program and its maps needs CAP_BPF
// (maps, programs) and CAP_NET_ADMIN (a sock_ops program); attaching it
// needs nothing more, not even write access to the cgroup directory.
// CAP_PERFMON is not needed, nor CAP_SYS_RESOURCE on kernels that charge
// BPF memory to the memory cgroup (5.11+). deployments/ebpf_caps_test.go
// finds this by running the proxy as uid 65532 with each subset.
//
// A process gets them either in its effective set (root, ambient
// capabilities as setpriv --ambient-caps or a runtime that sets them), or
// only in its permitted set: a binary with permitted file capabilities
// (setcap cap_bpf,cap_net_admin=p, as deployments/Dockerfile sets) run
// by a non-root user gets them permitted, not effective, because Docker
// gives a non-root container's cap_add to no other set. raiseCaps makes
// them effective. Without the "e" flag on the file, a container started
// without cap_add still starts (the kernel refuses to exec a binary whose
// effective file capabilities it cannot grant), and runs without eBPF.

// needCaps are the capabilities Open needs.
var needCaps = []int{unix.CAP_BPF, unix.CAP_NET_ADMIN}

// withCaps runs f with needCaps effective, when they are permitted but
// not effective. In a static binary (no cgo) it raises them on every
// thread of the process (syscall.AllThreadsSyscall), where they stay, so
// the tracker's later map operations have them too. With cgo that call is
// unsupported: f then runs on a thread of its own with them raised, and
// that thread ends with it.
func withCaps(f func() error) error {
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{}
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return f()
	}
	var raise [2]uint32
	for _, c := range needCaps {
		bit := uint32(1) << (c % 32)
		if data[c/32].Effective&bit == 0 && data[c/32].Permitted&bit != 0 {
			raise[c/32] |= bit
		}
	}
	if raise == [2]uint32{} {
		return f()
	}
	data[0].Effective |= raise[0]
	data[1].Effective |= raise[1]
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(data)
	if errno == 0 {
		return f()
	}
	if !errors.Is(errno, syscall.ENOTSUP) {
		return f() // f fails and says which capability is missing
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, with its raised set, exits with
		// this goroutine instead of running others.
		runtime.LockOSThread()
		unix.Capset(hdr, &data[0]) // on failure f says what is missing
		done <- f()
	}()
	return <-done
}
