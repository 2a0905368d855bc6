/* Map definitions. */
#ifndef TDSGATE_BPF_MAPS_H
#define TDSGATE_BPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

#define TDSGATE_MAX_BACKENDS 4096

/* Backend addresses to track, filled by userspace (Watch/Unwatch). The
 * value is unused (1); only presence matters. Connections to any other
 * address are ignored. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TDSGATE_MAX_BACKENDS);
	__type(key, struct backend_key);
	__type(value, __u8);
} watched SEC(".maps");

/* Counters per backend address, created by the program on the first
 * counted connection and never deleted by it. Userspace reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TDSGATE_MAX_BACKENDS);
	__type(key, struct backend_key);
	__type(value, struct conn_counts);
} conns SEC(".maps");

/* Per-socket mark, freed by the kernel with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_mark);
} sk_marks SEC(".maps");

#endif
