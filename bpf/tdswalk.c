//go:build ignore

/* tdsgate kernel header walker: a socket filter (SO_ATTACH_BPF) on a
 * pooled backend connection. For every segment the socket receives it
 * follows the TDS packet headers in the new in-order bytes and keeps the
 * walk in tdswalk_state, so that the framed relay can splice a run of the
 * server's answer without first peeking it to find its headers. It never
 * drops or trims a segment. Any doubt (a gap, a header that fails, two
 * runs at once) stops the walk for good: user space then peeks, as without
 * it. See bpf/README.md. */

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "tdswalk_types.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* Default capacity; user space sizes it before loading. */
#define TDSWALK_MAX_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TDSWALK_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, struct tdswalk);
} tdswalk_state SEC(".maps");

/* A socket filter returns how many bytes of the segment to keep. */
#define KEEP 0xffffffff

#define HDR_LEN 8
#define PACKET_REPLY 4
#define STATUS_EOM 1
#define MAX_PACKET 32767
/* Steps one run takes at most: a header and a body per packet, so a
 * segment of up to 256 packets (a 64 KiB segment of 256-byte packets). */
#define MAX_STEPS 512

struct walk {
	__u64 bytes, packets, eoms, hval;
	__u32 flags, next_seq, left, anchor_seq;
	__u8 hn, mid, last_id;
};

/* header takes the complete header in w->hval; 0, or TDSWALK_BAD. */
static __always_inline int header(struct walk *w)
{
	__u8 type = w->hval >> 56;
	__u32 len = (w->hval >> 32) & 0xffff;
	__u8 id = (w->hval >> 8) & 0xff;

	if (type != PACKET_REPLY || len < HDR_LEN || len > MAX_PACKET)
		return TDSWALK_BAD;
	/* Within a message PacketID counts up by one (mod 256): a walk that
	 * lost its place would not see that. */
	if (w->mid && id != (__u8)(w->last_id + 1))
		return TDSWALK_BAD;
	w->last_id = id;
	w->left = len - HDR_LEN;
	return 0;
}

static __always_inline void packet_end(struct walk *w)
{
	__u8 status = (w->hval >> 48) & 0xff;

	w->hn = 0;
	w->packets++;
	w->mid = !(status & STATUS_EOM);
	if (status & STATUS_EOM)
		w->eoms++;
}

/* Iterations a run waits, at most, to take the walk in sequence order
 * (take): some tens of microseconds. */
#define MAX_SPIN 4096

struct spin {
	struct tdswalk *st;
	__u32 seq;
	int owned; /* 1: taken; -1: the walk has stopped; 0: not yet */
};

/* take tries once to take the walk for a segment starting at seq: when no
 * run has it, and the walk has reached seq (or has not begun). A
 * bpf_loop callback: 1 stops the loop. */
static long take(__u32 i, struct spin *s)
{
	struct tdswalk *st = s->st;
	__u32 flags;

	if (*(volatile __u64 *)&st->busy)
		return 0;
	flags = *(volatile __u32 *)&st->flags;
	if (*(volatile __u64 *)&st->lost || (flags & (TDSWALK_LOST | TDSWALK_BAD))) {
		s->owned = -1;
		return 1;
	}
	if ((flags & TDSWALK_ANCHORED) && (__s32)(s->seq - *(volatile __u32 *)&st->next_seq) > 0)
		return 0; /* early: the bytes before it are being walked elsewhere */
	if (__sync_val_compare_and_swap(&st->busy, 0, 1) != 0)
		return 0;
	s->owned = 1;
	return 1;
}

/* One run over a segment's new bytes [off, end). */
struct run {
	struct __sk_buff *skb;
	struct walk w;
	__u32 off, end;
	__u32 stop; /* TDSWALK_LOST or TDSWALK_BAD: the walk stops */
};

/* step moves the walk over one header, or one header byte, or a body's
 * bytes in this segment (a bpf_loop callback: 1 stops the loop). */
static long step(__u32 i, struct run *r)
{
	struct walk *w = &r->w;

	if (r->off >= r->end)
		return 1;
	if (w->hn < HDR_LEN) {
		if (w->hn == 0 && r->end - r->off >= HDR_LEN) {
			__u64 h;

			if (bpf_skb_load_bytes(r->skb, r->off, &h, HDR_LEN) < 0) {
				r->stop = TDSWALK_LOST;
				return 1;
			}
			w->hval = bpf_be64_to_cpu(h);
			w->hn = HDR_LEN;
			r->off += HDR_LEN;
		} else {
			__u8 b;

			if (bpf_skb_load_bytes(r->skb, r->off, &b, 1) < 0) {
				r->stop = TDSWALK_LOST;
				return 1;
			}
			w->hval = (w->hval << 8) | b;
			w->hn++;
			r->off++;
			if (w->hn < HDR_LEN)
				return 0;
		}
		if (header(w)) {
			r->stop = TDSWALK_BAD;
			return 1;
		}
		if (w->left == 0)
			packet_end(w);
		return 0;
	}
	{
		__u32 k = r->end - r->off;

		if (k > w->left)
			k = w->left;
		w->left -= k;
		r->off += k;
		if (w->left == 0)
			packet_end(w);
	}
	return 0;
}

SEC("socket")
int tdsgate_tdswalk(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct tdswalk *st = bpf_map_lookup_elem(&tdswalk_state, &cookie);
	struct tcphdr th;
	struct run run = {};
	struct spin sp = {};
	struct walk w = {};
	__u32 doff, plen, seq, off, end, start;
	__s32 d;

	if (!st)
		return KEEP;
	if (bpf_skb_load_bytes(skb, 0, &th, sizeof(th)) < 0)
		return KEEP;
	doff = th.doff * 4;
	if (skb->len <= doff)
		return KEEP; /* no payload: an ACK, a FIN */
	seq = bpf_ntohl(th.seq);
	plen = skb->len - doff;

	/* Take the walk in sequence order. A flow's segments reach the
	 * socket from more than one CPU (on loopback the sender also sends
	 * from the softirq in which it takes the receiver's ACKs): one that
	 * comes early waits, briefly, for the run walking the bytes before
	 * it, and a run that finds the walk taken waits for its end. */
	sp.st = st;
	sp.seq = seq;
	sp.owned = 0;
	bpf_loop(MAX_SPIN, take, &sp, 0);
	if (sp.owned < 0)
		return KEEP; /* the walk has stopped */
	if (sp.owned == 0) {
		/* The bytes before this segment did not come in time (a loss,
		 * or a CPU that does not run its softirq): this one cannot be
		 * walked, nor anything after it. */
		__sync_fetch_and_or(&st->lost, 1);
		return KEEP;
	}
	if (st->lost || (st->flags & (TDSWALK_LOST | TDSWALK_BAD)))
		goto unlock;
	w.flags = st->flags;
	w.bytes = st->bytes;
	w.packets = st->packets;
	w.eoms = st->eoms;
	w.hval = st->hval;
	w.next_seq = st->next_seq;
	w.left = st->left;
	w.hn = st->hn;
	w.mid = st->mid;
	w.last_id = st->last_id;
	w.anchor_seq = st->anchor_seq;

	if (!(w.flags & TDSWALK_ANCHORED)) {
		w.next_seq = seq;
		w.anchor_seq = seq;
		w.flags |= TDSWALK_ANCHORED;
	}
	start = doff;
	if ((__s32)(seq - w.anchor_seq) < 0) {
		/* Bytes from before the first segment walked: it came out of
		 * order, and the walk did not start at the first byte. Such a
		 * segment is walked (here) before it is queued, so the relay
		 * sees the stop before it can read those bytes. */
		w.flags |= TDSWALK_LOST;
		goto out;
	}
	d = (__s32)(seq - w.next_seq);
	if (d > 0) {
		w.flags |= TDSWALK_LOST; /* a gap: those bytes were never walked */
		goto out;
	}
	if ((__u32)(-d) >= plen)
		goto out; /* a retransmission of bytes already walked */
	start = doff + (__u32)(-d);
	end = doff + plen;

	run.skb = skb;
	run.w = w;
	run.off = start;
	run.end = end;
	run.stop = 0;
	bpf_loop(MAX_STEPS, step, &run, 0);
	w = run.w;
	off = run.off;
	if (run.stop) {
		w.flags |= run.stop;
		goto out;
	}
	if (off < end) {
		w.flags |= TDSWALK_LOST; /* more packets than one run follows */
		goto out;
	}
	w.bytes += end - start;
	w.next_seq += end - start;
out:
	__sync_fetch_and_add(&st->gen_a, 1);
	st->flags = w.flags;
	st->bytes = w.bytes;
	st->packets = w.packets;
	st->eoms = w.eoms;
	st->hval = w.hval;
	st->next_seq = w.next_seq;
	st->left = w.left;
	st->hn = w.hn;
	st->mid = w.mid;
	st->last_id = w.last_id;
	st->anchor_seq = w.anchor_seq;
	__sync_fetch_and_add(&st->gen_b, 1);
unlock:
	__sync_lock_test_and_set(&st->busy, 0);
	return KEEP;
}
