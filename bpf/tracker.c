//go:build ignore

/* tdsgate backend connection tracker: a sock_ops program attached to the
 * proxy's cgroup (v2) that counts TCP connections this host opens to each
 * watched backend address, and their closes. See bpf/README.md. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sockops.h"

char __license[] SEC("license") = "Dual MIT/GPL";

SEC("sockops")
int tdsgate_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_active_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		on_state_change(skops);
		break;
	}
	return 1;
}
