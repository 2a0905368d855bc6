// Package ebpf is tdsgate's optional kernel-side view of backend
// connections: how many TCP connections this host currently holds open to
// each bucket's SQL Server, counted by the kernel rather than by the proxy's
// own bookkeeping. Metrics compare the two; a difference means connections
// the pool lost track of (or that someone else on the same cgroup opened).
//
// The package owns:
//
//   - the Tracker interface the app uses (Watch, Unwatch, Counts, Close,
//     Enabled), with two implementations: SockOps, the eBPF one, and NoOp,
//     the fallback when eBPF is unavailable or switched off;
//   - Open, the loader and feature probe: it loads the sock_ops program and
//     its maps, attaches the program to a cgroup v2 (by default the
//     process's own, see DefaultCgroupPath) and returns an error wrapping
//     ErrUnavailable when any step fails (no CAP_BPF, no cgroup v2, a kernel
//     without sock_ops socket storage, ...). New wraps Open and logs exactly
//     one line either way, so the proxy carries on without eBPF. It needs
//     CAP_BPF and CAP_NET_ADMIN, and raises them when they are permitted
//     but not effective (file capabilities, caps.go);
//   - the bpf2go output (tracker_bpfel.go and tracker_bpfel.o, committed)
//     built from the C sources in bpf/ by the directive in gen.go;
//     regenerate with `go generate ./pkg/ebpf` (needs clang, llvm-strip and
//     libbpf-dev).
//
// The package also owns the sockmap relay (Sockmap, OpenSockmap,
// NewSockmap): the sk_skb stream-verdict program of bpf/sockmap.c attached
// to a BPF sockhash keyed by each socket's own cookie (SO_COOKIE), whose
// value is the socket's peer. Join puts a session's client and backend
// sockets in it, so the kernel sends every segment one receives straight out
// of the other (bpf_sk_redirect_hash) with no wake-up in user space; Leave
// takes them out. pkg/relay's Kernel drives it (ends, half-close, counts).
// Its bpf2go output is sockmap_bpfel.go and sockmap_bpfel.o (gen_sockmap.go).
//
// And the kernel header walker of pooled sessions (TDSWalk, OpenTDSWalk,
// NewTDSWalk): the socket filter of bpf/tdswalk.c, which Arm attaches to a
// backend socket (SO_ATTACH_BPF), follows the TDS packet headers of every
// segment the socket receives and keeps the walk in a hash map under the
// socket's cookie; Walk.State reads it (two equal copies with matching
// generation counters: a socket filter cannot take a bpf_spin_lock). The
// framed relay (pkg/relay's KernelWalker, through pkg/app) then splices a
// run of the server's answer without peeking it. Its bpf2go output is
// tdswalk_bpfel.go and tdswalk_bpfel.o (gen_tdswalk.go).
//
// What is counted. The program runs for TCP sockets created by processes in
// the attached cgroup (and its descendants). When a connect() completes
// (BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) to a remote address and port that
// userspace watches, it adds one to that address's established counter,
// marks the socket (socket local storage) and enables state-change callbacks
// on that socket alone. When a marked socket reaches TCP_CLOSE, from
// whichever state, it adds one to the closed counter and clears the mark, so
// each connection counts once each way. Counts reports established - closed
// per bucket: a connection stays counted from the end of the handshake until
// the kernel's socket is closed, which includes CLOSE_WAIT (the backend hung
// up but the proxy has not closed yet) and FIN_WAIT (the proxy closed, the
// backend has not acknowledged yet).
//
// Not counted: connections opened before the program was attached; passive
// (accepted) connections; connections to addresses not watched at the time
// of the handshake (watching an address later does not pick up its open
// connections, and unwatching it does not forget the closes of those still
// open). Counters are per address: two buckets watching the same address
// each report the address's total.
package ebpf
