/* Building a backend_key from the remote end of a sock_ops socket. */
#ifndef TDSGATE_BPF_ADDR_H
#define TDSGATE_BPF_ADDR_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>

#include "types.h"

/* remote_key fills key with the socket's remote address and port. An IPv6
 * socket talking to an IPv4-mapped address (::ffff:a.b.c.d) is keyed as
 * IPv4, so a backend is found whichever socket family dialled it. Returns
 * 0, or -1 for a family other than IPv4/IPv6. */
static __always_inline int remote_key(struct bpf_sock_ops *skops, struct backend_key *key)
{
	__u32 family = skops->family;

	__builtin_memset(key, 0, sizeof(*key));
	/* remote_port is the network-order port in the upper 16 bits of the
	 * word on little-endian (see sock_ops_convert_ctx_access). */
	key->port = bpf_ntohl(skops->remote_port) & 0xffff;

	if (family == TDSGATE_AF_INET) {
		__u32 a = skops->remote_ip4; /* network order */
		key->family = TDSGATE_AF_INET;
		__builtin_memcpy(key->addr, &a, 4);
		return 0;
	}
	if (family != TDSGATE_AF_INET6)
		return -1;

	__u32 w0 = skops->remote_ip6[0];
	__u32 w1 = skops->remote_ip6[1];
	__u32 w2 = skops->remote_ip6[2];
	__u32 w3 = skops->remote_ip6[3];
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff)) {
		key->family = TDSGATE_AF_INET;
		__builtin_memcpy(key->addr, &w3, 4);
		return 0;
	}
	key->family = TDSGATE_AF_INET6;
	__builtin_memcpy(key->addr, &w0, 4);
	__builtin_memcpy(key->addr + 4, &w1, 4);
	__builtin_memcpy(key->addr + 8, &w2, 4);
	__builtin_memcpy(key->addr + 12, &w3, 4);
	return 0;
}

#endif
