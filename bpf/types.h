/* Types shared between the BPF program and pkg/ebpf (bpf2go generates Go
 * declarations for backend_key and conn_counts from these). */
#ifndef TDSGATE_BPF_TYPES_H
#define TDSGATE_BPF_TYPES_H

#include <linux/types.h>

/* From <sys/socket.h>, which cannot be included when targeting BPF. */
#define TDSGATE_AF_INET 2
#define TDSGATE_AF_INET6 10

/* A backend address: the remote end of a connection this host opened.
 * family is TDSGATE_AF_INET or TDSGATE_AF_INET6; an IPv4 address (also one
 * reached through an IPv4-mapped IPv6 socket) is in addr[0..3] with
 * addr[4..15] zero; port is in host byte order. Fixed 24 bytes, no padding
 * holes, so Go and C agree on the layout. */
struct backend_key {
	__u32 family;
	__u32 port;
	__u8 addr[16];
};

/* Monotonic counters per backend address. Currently open connections are
 * established - closed. */
struct conn_counts {
	__u64 established;
	__u64 closed;
};

/* Per-socket mark (socket local storage): set when the socket's active open
 * was counted, cleared when its close is counted, so each connection adds
 * one to established and at most one to closed. */
struct sk_mark {
	struct backend_key key;
	__u32 counted;
	__u32 _pad;
};

#endif
