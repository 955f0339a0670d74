/* frag.c - IPv4 and IPv6 fragment reassembly, within a fixed memory budget
 *
 * Theory of operation
 * -------------------
 * A datagram larger than the namespace's MTU leaves its kernel as fragments
 * (a 65507-byte UDP datagram is 65535 bytes of IPv4, more than the largest
 * MTU of 65520). Fragments of one datagram carry the same address pair, so
 * flow.h sends them all to one worker, which puts them back together here
 * and hands the datagram to the protocol cores as if it had come whole
 * (rn_worker_reinput()). Which worker that is depends on the addresses only:
 * a reassembled datagram is handled where it was reassembled even when its
 * ports would hash elsewhere, so its flow may exist twice, once per worker.
 *
 * Budget: RN_FRAG_SLOTS datagrams in reassembly per worker, each a buffer
 * for one largest packet, allocated on first use (about 270 KiB). A new
 * datagram takes a free slot, else the oldest one, whose fragments are lost
 * (frag_expired); a slot older than RN_FRAG_TIMEOUT_MS is free. No timer is
 * needed: slots are looked at when fragments arrive.
 *
 * What is refused (drop_fragment): a fragment that is empty; a non-final
 * fragment whose length is not a multiple of 8; data beyond the largest
 * packet or beyond the end a final fragment announced; overlapping or
 * repeated data (the whole datagram is dropped, as RFC 5722 asks for IPv6);
 * an IPv6 fragment header followed by an extension header, or too short; a
 * fragment with offloads in its virtio-net header. Accepted fragments that
 * do not complete a datagram count frag_held; the one that completes it
 * counts what became of the datagram.
 *
 * Fragment data is copied from ring to_worker into the slot (the namespace
 * may change it meanwhile and fool only itself); headers come from the
 * worker's validated private copy.
 */
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "frag.h"
#include "ip.h"

#define RN_FRAG_SLOTS		4u
#define RN_FRAG_TIMEOUT_MS	5000
#define RN_FRAG_HDR_MAX		60u	/* IPv4 header with options */
#define RN_FRAG_DATA_MAX	65535u	/* IPv6 payload; IPv4 has 65535 - IHL */
#define RN_FRAG_BLOCKS		((RN_FRAG_DATA_MAX + 7) / 8)
#define RN_FRAG6_HDR_LEN	8u

/**
 * struct rn_frag_slot - one datagram being reassembled
 * @used:	slot in use
 * @family:	4 or 6
 * @proto:	transport protocol (IPv6: from the fragment header)
 * @have_last:	the final fragment arrived, @total is known
 * @saddr:	source address
 * @daddr:	destination address
 * @id:		identification (IPv4: 16 bits, IPv6: 32 bits)
 * @started:	arrival of the first fragment, ms
 * @total:	payload length, once @have_last
 * @blocks:	8-byte blocks received
 * @end:	end of the furthest data received
 * @hdrlen:	length of the IP header in @hdr, 0 until the first fragment came
 * @hdr:	the IP header of the fragment at offset 0
 * @map:	received 8-byte blocks
 * @buf:	virtio-net header and IP header room, then the payload at
 *		RN_VNET_HDR_LEN + RN_FRAG_HDR_MAX
 */
struct rn_frag_slot {
	uint8_t used;
	uint8_t family;
	uint8_t proto;
	uint8_t have_last;
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint32_t id;
	int64_t started;
	uint32_t total;
	uint32_t blocks;
	uint32_t end;
	uint32_t hdrlen;
	uint8_t hdr[RN_FRAG_HDR_MAX];
	uint8_t map[(RN_FRAG_BLOCKS + 7) / 8];
	uint8_t buf[RN_VNET_HDR_LEN + RN_FRAG_HDR_MAX + RN_FRAG_DATA_MAX];
};

/**
 * struct rn_frag - one worker's reassembly slots
 * @slot:	the slots
 */
struct rn_frag {
	struct rn_frag_slot slot[RN_FRAG_SLOTS];
};

/**
 * struct rn_frag_info - what a fragment says about itself
 * @id:		identification
 * @proto:	transport protocol of the datagram
 * @off:	offset of the data in the datagram's payload
 * @len:	data length
 * @more:	more fragments follow
 * @data:	offset of the data in the frame (from the virtio-net header)
 * @max:	largest payload the datagram may have
 */
struct rn_frag_info {
	uint32_t id;
	uint8_t proto;
	uint32_t off;
	uint32_t len;
	int more;
	uint32_t data;
	uint32_t max;
};

/**
 * rn_frag_parse() - read the fragment fields of a validated fragment
 * @w:		worker
 * @f:		frame with f->frag set
 * @fi:		filled
 *
 * Return: 0, or drop_fragment
 */
static int rn_frag_parse(struct rn_worker *w, struct rn_frame *f, struct rn_frag_info *fi)
{
	const uint8_t *fh;
	uint16_t v;

	if (f->family == 4) {
		v = rn_be16(f->l3.p + 6);
		fi->id = rn_be16(f->l3.p + 4);
		fi->proto = f->proto;
		fi->off = (uint32_t)(v & RN_IPV4_OFFSET) * 8;
		fi->more = !!(v & RN_IPV4_MF);
		fi->data = RN_VNET_HDR_LEN + f->l3len;
		fi->len = f->l4len;
		fi->max = 65535u - f->l3len;
		return 0;
	}
	if (f->l4len < RN_FRAG6_HDR_LEN || rn_worker_pull(w, f, RN_FRAG6_HDR_LEN) < RN_FRAG6_HDR_LEN)
		return RN_WCTR_drop_fragment;
	fh = rn_pkt_get(&f->l4, 0, RN_FRAG6_HDR_LEN);
	if (!fh)
		return RN_WCTR_drop_fragment;
	v = rn_be16(fh + 2);
	fi->proto = fh[0];
	fi->off = (uint32_t)(v >> 3) * 8;
	fi->more = v & 1;
	fi->id = rn_be32(fh + 4);
	fi->data = RN_VNET_HDR_LEN + f->l3len + RN_FRAG6_HDR_LEN;
	fi->len = f->l4len - RN_FRAG6_HDR_LEN;
	fi->max = RN_FRAG_DATA_MAX;
	/* Only a transport header may follow: we handle no extension headers */
	if (fi->proto == RN_IPPROTO_FRAGMENT || rn_ip6_ext(fi->proto))
		return RN_WCTR_drop_fragment;
	return 0;
}

/**
 * rn_frag_find() - the slot of a fragment's datagram, or a new one
 * @w:		worker
 * @u:		reassembly state
 * @f:		the fragment
 * @fi:		its fields
 *
 * Expired slots are freed on the way; with no free slot the oldest is
 * taken over.
 *
 * Return: the slot
 */
static struct rn_frag_slot *rn_frag_find(struct rn_worker *w, struct rn_frag *u,
					 const struct rn_frame *f, const struct rn_frag_info *fi)
{
	uint32_t alen = f->family == 6 ? 16 : 4, i;
	struct rn_frag_slot *s, *free_slot = NULL, *oldest = NULL;

	for (i = 0; i < RN_FRAG_SLOTS; i++) {
		s = &u->slot[i];
		if (s->used && w->now - s->started >= RN_FRAG_TIMEOUT_MS) {
			s->used = 0;
			rn_ctr_add(w->ctr, RN_WCTR_frag_expired, 1);
		}
		if (!s->used) {
			if (!free_slot)
				free_slot = s;
			continue;
		}
		if (s->family == f->family && s->proto == fi->proto && s->id == fi->id &&
		    !memcmp(s->saddr, f->saddr, alen) && !memcmp(s->daddr, f->daddr, alen))
			return s;
		if (!oldest || s->started < oldest->started)
			oldest = s;
	}
	s = free_slot;
	if (!s) {
		s = oldest;
		rn_ctr_add(w->ctr, RN_WCTR_frag_expired, 1);
	}
	s->used = 1;
	s->family = f->family;
	s->proto = fi->proto;
	s->id = fi->id;
	memset(s->saddr, 0, sizeof(s->saddr));
	memset(s->daddr, 0, sizeof(s->daddr));
	memcpy(s->saddr, f->saddr, alen);
	memcpy(s->daddr, f->daddr, alen);
	s->started = w->now;
	s->have_last = 0;
	s->total = 0;
	s->blocks = 0;
	s->end = 0;
	s->hdrlen = 0;
	memset(s->map, 0, sizeof(s->map));
	return s;
}

/**
 * rn_frag_mark() - record the blocks a fragment covers
 * @s:		slot
 * @first:	first block
 * @n:		number of blocks
 *
 * Return: 0, or -1 if any of them was there already (nothing is marked then)
 */
static int rn_frag_mark(struct rn_frag_slot *s, uint32_t first, uint32_t n)
{
	uint32_t i;

	for (i = first; i < first + n; i++) {
		if (s->map[i / 8] & (1u << (i % 8)))
			return -1;
	}
	for (i = first; i < first + n; i++)
		s->map[i / 8] |= (uint8_t)(1u << (i % 8));
	s->blocks += n;
	return 0;
}

/**
 * rn_frag_complete() - build the whole datagram in its slot and process it
 * @w:		worker
 * @s:		slot with every block and the first header
 *
 * Return: the outcome counter of the datagram, or negative errno
 */
static int rn_frag_complete(struct rn_worker *w, struct rn_frag_slot *s)
{
	uint8_t *payload = s->buf + RN_VNET_HDR_LEN + RN_FRAG_HDR_MAX;
	uint8_t *ip = payload - s->hdrlen, *frame = ip - RN_VNET_HDR_LEN;
	static const struct rn_vnet_hdr none;
	int outcome;

	memcpy(ip, s->hdr, s->hdrlen);
	if (s->family == 4) {
		rn_put_be16(ip + 2, (uint16_t)(s->hdrlen + s->total));
		rn_put_be16(ip + 6, rn_be16(ip + 6) & RN_IPV4_DF);
		rn_put_be16(ip + 10, 0);
		rn_put_be16(ip + 10, rn_csum(ip, s->hdrlen, 0));
	} else {
		rn_put_be16(ip + 4, (uint16_t)s->total);
		ip[6] = s->proto;
	}
	rn_vnet_put(frame, &none);
	rn_ctr_add(w->ctr, RN_WCTR_frag_reassembled, 1);
	outcome = rn_worker_reinput(w, frame, RN_VNET_HDR_LEN + s->hdrlen + s->total);
	s->used = 0;
	return outcome;
}

/**
 * rn_frag_input() - take one validated fragment from the namespace
 * @w:		worker
 * @f:		frame with f->frag set, source and destination checked
 *
 * Return: frag_held, drop_fragment, the outcome of the datagram it
 *	   completed, or negative errno when the worker must stop
 */
int rn_frag_input(struct rn_worker *w, struct rn_frame *f)
{
	struct rn_frag *u = w->frag;
	struct rn_frag_info fi;
	struct rn_frag_slot *s;
	uint32_t need;
	int drop;

	if (f->vnet.flags || f->vnet.gso_type)
		return RN_WCTR_drop_fragment;
	drop = rn_frag_parse(w, f, &fi);
	if (drop)
		return drop;
	if (!fi.len || (fi.more && fi.len % 8) || fi.off + fi.len > fi.max)
		return RN_WCTR_drop_fragment;
	if (!u) {
		u = calloc(1, sizeof(*u));
		if (!u)
			return RN_WCTR_drop_fragment;
		w->frag = u;
	}

	s = rn_frag_find(w, u, f, &fi);
	need = fi.off + fi.len;
	if ((s->have_last && (need > s->total || !fi.more)) || (!fi.more && need < s->end) ||
	    rn_frag_mark(s, fi.off / 8, (fi.len + 7) / 8)) {
		s->used = 0;
		return RN_WCTR_drop_fragment;
	}
	if (need > s->end)
		s->end = need;
	if (!fi.more) {
		s->have_last = 1;
		s->total = need;
	}
	if (!fi.off) {
		s->hdrlen = f->l3len;
		memcpy(s->hdr, f->l3.p, f->l3len);
	}
	memcpy(s->buf + RN_VNET_HDR_LEN + RN_FRAG_HDR_MAX + fi.off, f->shm + fi.data, fi.len);

	if (s->have_last && s->hdrlen && s->blocks == (s->total + 7) / 8)
		return rn_frag_complete(w, s);
	return RN_WCTR_frag_held;
}

/**
 * rn_frag_free() - free the worker's reassembly slots
 * @w:		worker
 */
void rn_frag_free(struct rn_worker *w)
{
	free(w->frag);
	w->frag = NULL;
}
