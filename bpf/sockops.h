/* sock_ops event handling: count active opens to watched backends and their
 * closes. */
#ifndef TDSGATE_BPF_SOCKOPS_H
#define TDSGATE_BPF_SOCKOPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"
#include "addr.h"

/* on_active_established runs when a connect() from a process in the cgroup
 * completes the handshake. If the remote end is watched: add one to its
 * established counter, mark the socket, and ask for state-change callbacks
 * on this socket only (the flag is per socket). */
static __always_inline void on_active_established(struct bpf_sock_ops *skops)
{
	struct backend_key key;
	struct conn_counts zero = {};
	struct conn_counts *c;
	struct sk_mark *m;
	struct bpf_sock *sk;

	if (remote_key(skops, &key) < 0)
		return;
	if (!bpf_map_lookup_elem(&watched, &key))
		return;

	sk = skops->sk;
	if (!sk)
		return;
	m = bpf_sk_storage_get(&sk_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!m || m->counted)
		return;

	c = bpf_map_lookup_elem(&conns, &key);
	if (!c) {
		/* Fails with -EEXIST if another CPU created it first: fine. */
		bpf_map_update_elem(&conns, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&conns, &key);
		if (!c)
			return; /* conns is full: not counted, not marked */
	}
	__sync_fetch_and_add(&c->established, 1);
	m->key = key;
	m->counted = 1;

	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* on_state_change runs for every TCP state transition of a socket that has
 * BPF_SOCK_OPS_STATE_CB_FLAG (args[0] old state, args[1] new state). A
 * counted connection's close is counted when it reaches TCP_CLOSE, from
 * whichever state (FIN_WAIT2/TIME_WAIT after our close, LAST_ACK after the
 * backend's, or straight from ESTABLISHED on a reset). The mark is cleared
 * in the same step, so a second TCP_CLOSE, or a socket some other program
 * enabled state callbacks on, counts nothing. */
static __always_inline void on_state_change(struct bpf_sock_ops *skops)
{
	struct conn_counts *c;
	struct sk_mark *m;
	struct bpf_sock *sk;

	if (skops->args[1] != BPF_TCP_CLOSE)
		return;
	sk = skops->sk;
	if (!sk)
		return;
	m = bpf_sk_storage_get(&sk_marks, sk, 0, 0);
	if (!m || !m->counted)
		return;
	/* State changes of one socket run under its lock, so this
	 * check-and-clear is not raced. */
	m->counted = 0;
	c = bpf_map_lookup_elem(&conns, &m->key);
	if (c)
		__sync_fetch_and_add(&c->closed, 1);
	bpf_sk_storage_delete(&sk_marks, sk);
}

#endif
