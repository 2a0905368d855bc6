/* Map definitions of the sockmap relay. */
#ifndef TDSGATE_BPF_RELAY_MAPS_H
#define TDSGATE_BPF_RELAY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "relay_types.h"

/* Default capacity; userspace may size the map before loading. Two entries
 * per session. */
#define TDSGATE_RELAY_MAX_ENTRIES 65536

/* The session pairs. The key is a socket's own cookie (SO_COOKIE, unique
 * for the life of the boot), the value is its PEER socket: the client's
 * cookie maps to the backend socket and the backend's cookie to the client
 * socket. Both sockets are thereby members of the map, so the verdict
 * program attached to it runs for the segments each receives. The kernel
 * drops an entry by itself when its socket closes; userspace deletes both
 * at the end of every session. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TDSGATE_RELAY_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, __u32);
} relay_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct relay_stats);
} relay_counters SEC(".maps");

#endif
