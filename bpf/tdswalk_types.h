/* Types shared between the kernel header walker (bpf/tdswalk.c) and
 * pkg/ebpf (bpf2go generates Go declarations for struct tdswalk). */
#ifndef TDSGATE_BPF_TDSWALK_TYPES_H
#define TDSGATE_BPF_TDSWALK_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>

/* flags */
#define TDSWALK_ANCHORED 1 /* the first segment after arming fixed next_seq */
#define TDSWALK_LOST 2     /* the walk stopped: a gap in the sequence (loss, reordering), two runs at once, or a segment with more packets than one run follows */
#define TDSWALK_BAD 4      /* a header failed the checks: not REPLY, a length out of 8..32767, or a PacketID out of step */

/* One socket's walk, the value of tdswalk_state under the socket's cookie.
 * User space inserts it zeroed (arming) while nothing is queued or in
 * flight toward the socket, reads it, and deletes it. The
 * program walks every new in-order byte the socket receives, as user
 * space's walker would: it is at a packet boundary (hn 0), inside a header
 * (0 < hn < 8: hval holds the bytes gathered, the first one highest), or
 * inside a body (hn 8, left > 0). */
struct tdswalk {
	/* Socket filters cannot take a bpf_spin_lock. One run owns the walk
	 * at a time (busy, taken by compare-and-swap, in sequence order; a run
	 * that cannot take it in time sets lost), and publishes its result between gen_a
	 * (incremented first) and gen_b (last): a copy in which they differ
	 * was taken during a write. User space accepts a state only from two
	 * successive copies that are equal, with gen_a == gen_b. */
	__u64 gen_a;
	__u64 busy;
	__u64 lost;
	__u32 flags;
	__u32 pad0;
	__u64 bytes;    /* stream bytes walked since the anchor */
	__u64 packets;  /* packets ended */
	__u64 eoms;     /* packets ended with EOM in their status */
	__u64 hval;     /* the current packet's header bytes gathered */
	__u32 next_seq; /* TCP sequence number of the next byte to walk */
	__u32 left;     /* body bytes of the current packet still to come */
	__u32 anchor_seq; /* TCP sequence number of the first byte walked */
	__u32 pad1;
	__u8 hn;        /* header bytes gathered */
	__u8 mid;       /* the last packet that ended had no EOM */
	__u8 last_id;   /* PacketID of the last packet whose header was taken */
	__u8 pad[5];
	__u64 gen_b;
};

#endif
