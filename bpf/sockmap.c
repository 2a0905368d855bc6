//go:build ignore

/* tdsgate sockmap relay: an sk_skb stream-verdict program attached to the
 * relay_peers sockhash. Every segment a member socket receives is sent out
 * of its peer socket (the entry under the receiver's own cookie) without
 * waking user space. See bpf/README.md. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "relay_maps.h"

char __license[] SEC("license") = "Dual MIT/GPL";

SEC("sk_skb/stream_verdict")
int tdsgate_relay_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 zero = 0;
	struct relay_stats *st = bpf_map_lookup_elem(&relay_counters, &zero);

	/* A FIN without data reaches the verdict as an empty segment. Sent
	 * out of the peer it would carry nothing (the FIN is not forwarded)
	 * and the failed send would set EPIPE on the peer; kept here it is
	 * what tells user space that this side has ended. */
	if (skb->len == 0)
		return SK_PASS;
	/* flags 0: out of the peer's send side (egress). */
	if (bpf_sk_redirect_hash(skb, &relay_peers, &cookie, 0) == SK_PASS) {
		if (st)
			__sync_fetch_and_add(&st->redirected, 1);
		return SK_PASS;
	}
	/* No peer: keep the bytes in this socket, where user space sees them
	 * (and fails the session) rather than losing them silently. */
	if (st)
		__sync_fetch_and_add(&st->missed, 1);
	return SK_PASS;
}
