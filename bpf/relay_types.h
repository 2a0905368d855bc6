/* Types shared between the sockmap relay program and pkg/ebpf (bpf2go
 * generates Go declarations for relay_stats from this). */
#ifndef TDSGATE_BPF_RELAY_TYPES_H
#define TDSGATE_BPF_RELAY_TYPES_H

#include <linux/types.h>

/* Counters of the verdict program, one slot (index 0) of an array map.
 * redirected: segments sent on to the peer socket; missed: segments of a
 * socket whose own cookie had no entry (its peer was already removed),
 * left in the socket for user space, which treats them as an error. */
struct relay_stats {
	__u64 redirected;
	__u64 missed;
};

#endif
