/* tcp_wire.c - TCP wire format: parse segments, build headers and control segments
 *
 * Theory of operation
 * -------------------
 * Parsing (rn_tcp_parse()) checks a segment from the namespace before any
 * state looks at it (RFC 793, RFC 5961): the header length against the frame,
 * the data offset, options that overrun the header, illegal flag combinations
 * (SYN with FIN or RST; none of SYN, ACK, RST), zero ports, and the checksum
 * (only when the namespace's kernel computed it: NEEDS_CSUM frames carry a
 * partial sum we do not verify; then the checksum field must be where TCP's
 * is). Each reason has its own drop counter. Options read: MSS, window scale,
 * SACK-permitted, the left edges of SACK blocks and timestamps (TSval, TSecr;
 * RFC 7323). An option whose length overruns the header drops the segment
 * (drop_tcp_options); a known kind with the wrong length (a timestamps option
 * not 10 bytes long, say) is ignored, as Linux does; the payload stays in ring
 * memory and is only ever copied out.
 *
 * Building: rn_tcp_headers() writes the TCP header of a frame to the
 * namespace and has rn_ip_build() (ip.c) write its IP and virtio-net headers;
 * the TCP checksum is left to the namespace's kernel (NEEDS_CSUM, the
 * pseudo-header sum in the field), and frames with more than one MSS of
 * payload become TSO super-frames. Control
 * segments (SYN-ACK with our options, ACK with the SACK blocks we hold, FIN,
 * RST) go out through rn_tcp_send_ctl(); on a flow with timestamps every
 * segment but a RST carries them first (rn_tcp_ts_opts(): NOP, NOP, TS = 12
 * bytes), which leaves room for 3 SACK blocks of the 4 we may hold within
 * the 40 bytes of option space. An ACK can go out now, or once at the
 * end of the batch (rn_tcp_ack_later(), rn_tcp_update_later()). RSTs for
 * segments without a flow and the ICMP error for an unreachable destination
 * need no flow state beyond the key.
 */
#include <errno.h>
#include <string.h>

#include "checksum.h"
#include "tcp_int.h"

/**
 * rn_tcp_headers() - write IP and TCP headers and the virtio-net header
 * @pkt:	start of the IP packet in ring memory (vnet header before it,
 *		zeroed by rn_worker_tx_reserve())
 * @k:		flow key as the namespace sees it: we send from daddr:dport to
 *		saddr:sport
 * @ip_id:	IPv4 identification
 * @seq:	sequence number
 * @ack:	acknowledgement number (0 unless @flags has ACK)
 * @flags:	TCP flags
 * @wnd:	window field
 * @opts:	options, a multiple of 4 bytes, or NULL
 * @optlen:	their length
 * @datalen:	payload bytes already at pkt + l3 + 20 + @optlen
 * @mss:	segment size for GSO: frames with more payload become TSO frames
 *
 * The IP and virtio-net headers come from rn_ip_build(). The TCP checksum is
 * left to the namespace's kernel (NEEDS_CSUM): the field holds the
 * pseudo-header sum over the full length, not inverted.
 */
void rn_tcp_headers(uint8_t *pkt, const struct rn_flow_key *k, uint16_t ip_id,
		    uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd,
		    const uint8_t *opts, uint32_t optlen, uint32_t datalen, uint16_t mss)
{
	uint32_t thl = RN_TCP_HDR + optlen;
	struct rn_ip_out o = {
		.family = k->family, .proto = RN_IPPROTO_TCP,
		.flags = RN_IP_OUT_DF | RN_IP_OUT_CSUM, .id = ip_id,
		.src = k->daddr, .dst = k->saddr, .l4len = thl + datalen, .csum_offset = 16,
	};
	uint8_t *t;

	if (mss && datalen > mss) {
		o.gso_type = k->family == 4 ? RN_VNET_GSO_TCPV4 : RN_VNET_GSO_TCPV6;
		o.gso_size = mss;
		o.l4hdr = (uint16_t)thl;
	}
	t = pkt + rn_ip_build(pkt, &o);
	rn_put_be16(t, k->dport);
	rn_put_be16(t + 2, k->sport);
	rn_put_be32(t + 4, seq);
	rn_put_be32(t + 8, ack);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	rn_put_be16(t + 14, wnd);
	rn_put_be16(t + 18, 0);
	if (optlen)
		memcpy(t + RN_TCP_HDR, opts, optlen);
}

/**
 * rn_tcp_ts_opts() - timestamps option for a segment on a flow (RFC 7323)
 * @w:		worker (its clock gives TSval)
 * @c:		flow
 * @opts:	where the option goes (RN_TCP_TS_LEN bytes)
 *
 * NOP, NOP, kind 8, length 10, TSval = w->now + ts_off (a 1 ms clock),
 * TSecr = ts_recent (0 in our SYN: nothing to echo yet).
 *
 * Return: RN_TCP_TS_LEN, or 0 on a flow without timestamps (nothing written)
 */
uint32_t rn_tcp_ts_opts(const struct rn_worker *w, const struct rn_tcp_flow *c, uint8_t *opts)
{
	if (!(c->flags & RN_TCP_F_TS))
		return 0;
	opts[0] = opts[1] = 1;
	opts[2] = 8;
	opts[3] = 10;
	rn_put_be32(opts + 4, (uint32_t)w->now + c->ts_off);
	rn_put_be32(opts + 8, c->ts_recent);
	return RN_TCP_TS_LEN;
}

/**
 * rn_tcp_sack_opts() - SACK option for the blocks we hold (RFC 2018)
 * @c:		flow
 * @opts:	where the option goes
 * @room:	option bytes left for it (at most 40)
 *
 * The block that received the latest segment comes first, the others
 * follow in sequence order, as many as @room holds (NOP, NOP, kind, length,
 * then 8 bytes a block: 4 blocks in 36 bytes, 3 beside timestamps).
 *
 * Return: option length, a multiple of 4, at most @room (0 without SACK or
 *	   blocks, or without room for one)
 */
static uint32_t rn_tcp_sack_opts(const struct rn_tcp_flow *c, uint8_t *opts, uint32_t room)
{
	uint32_t len = 4, i, first = c->nooo;

	if (!(c->flags & RN_TCP_F_SACK) || !c->nooo || room < 4 + 8)
		return 0;
	for (i = 0; i < c->nooo; i++) {
		if (c->ooo[i].seq == c->sack_first)
			first = i;
	}
	opts[0] = opts[1] = 1;
	opts[2] = 5;
	if (first < c->nooo) {
		rn_put_be32(opts + len, c->ooo[first].seq);
		rn_put_be32(opts + len + 4, c->ooo[first].seq + c->ooo[first].len);
		len += 8;
	}
	for (i = 0; i < c->nooo && len + 8 <= room; i++) {
		if (i == first)
			continue;
		rn_put_be32(opts + len, c->ooo[i].seq);
		rn_put_be32(opts + len + 4, c->ooo[i].seq + c->ooo[i].len);
		len += 8;
	}
	opts[3] = (uint8_t)(len - 2);
	return len;
}

/**
 * rn_tcp_send_ctl() - send a segment without payload on a flow
 * @w:		worker
 * @c:		flow
 * @flags:	TCP flags (ACK is added, except in SYN_SENT: our SYN)
 * @seq:	sequence number
 *
 * Return: 0, -EAGAIN if to_ns is full, or a fatal negative errno
 */
int rn_tcp_send_ctl(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t flags,
		    uint32_t seq)
{
	uint8_t opts[RN_TCP_OPT_MAX];
	uint32_t optlen = 0, l3 = rn_ip_hdr_len(c->f.key.family);
	uint16_t wnd;
	uint8_t *pkt;
	int err;

	if (flags & RN_TCP_SYN) {
		uint16_t mss = (uint16_t)(w->p.mtu - l3 - RN_TCP_HDR);

		opts[0] = 2;
		opts[1] = 4;
		rn_put_be16(opts + 2, mss);
		optlen = 4;
		if (c->flags & RN_TCP_F_SACK) {
			opts[optlen++] = 1;
			opts[optlen++] = 1;
			opts[optlen++] = 4;	/* SACK permitted */
			opts[optlen++] = 2;
		}
		if (c->flags & RN_TCP_F_WS) {
			opts[optlen++] = 1;
			opts[optlen++] = 3;
			opts[optlen++] = 3;
			opts[optlen++] = RN_TCP_WS;
		}
		/* MSS 4 + SACK-permitted 4 + window scale 4 + timestamps 12 */
		optlen += rn_tcp_ts_opts(w, c, opts + optlen);
	} else if (!(flags & RN_TCP_RST)) {
		optlen = rn_tcp_ts_opts(w, c, opts);
		optlen += rn_tcp_sack_opts(c, opts + optlen, RN_TCP_OPT_MAX - optlen);
	}
	pkt = rn_worker_tx_reserve(w, l3 + RN_TCP_HDR + optlen, &err);
	if (!pkt)
		return err ? err : -EAGAIN;
	/* The window of a SYN-ACK is never scaled (RFC 7323) */
	wnd = rn_tcp_wnd_field(c);
	if (flags & RN_TCP_SYN) {
		uint32_t raw = c->rcv_edge - c->rcv_nxt;

		wnd = raw > 65535u ? 65535u : (uint16_t)raw;
	}
	/* Our SYN of an active open acknowledges nothing yet */
	if (c->f.state != RN_TCP_SYN_SENT)
		flags |= RN_TCP_ACK;
	rn_tcp_headers(pkt, &c->f.key, c->ip_id++, seq, flags & RN_TCP_ACK ? c->rcv_nxt : 0,
		       flags, wnd, opts, optlen, 0, 0);
	c->last_ack = c->rcv_nxt;
	c->last_wnd = wnd;
	c->flags &= ~RN_TCP_F_ACK_MAYBE;
	rn_worker_tx_commit(w, l3 + RN_TCP_HDR + optlen);
	if (flags & RN_TCP_ACK)
		rn_tcp_ack_sent(w, c);
	return 0;
}

/**
 * rn_tcp_send_ack() - send an ACK now, or as soon as to_ns has room
 * @w:		worker
 * @c:		flow
 */
void rn_tcp_send_ack(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int rc = rn_tcp_send_ctl(w, c, RN_TCP_ACK, c->snd_nxt);

	if (rc == -EAGAIN) {
		c->flags |= RN_TCP_F_ACK_DUE;
		rn_worker_wait_room(w, &c->f);
		return;
	}
	c->flags &= ~RN_TCP_F_ACK_DUE;
}

/**
 * rn_tcp_ack_later() - send an ACK at the end of this batch (one per flow)
 * @w:		worker
 * @c:		flow
 */
void rn_tcp_ack_later(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->flags |= RN_TCP_F_ACK_DUE;
	rn_worker_defer(w, &c->f);
}

/**
 * rn_tcp_update_later() - at the end of this batch, ACK if anything changed
 * @w:		worker
 * @c:		flow
 *
 * For data taken or buffered: an ACK that repeats the last one would look
 * like a duplicate ACK to the namespace, so none is sent then.
 */
void rn_tcp_update_later(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->flags |= RN_TCP_F_ACK_MAYBE;
	rn_worker_defer(w, &c->f);
}

/**
 * rn_tcp_rst_key() - send a RST for a segment that has no flow
 * @w:		worker
 * @k:		key of the segment (as the namespace sees it)
 * @seq:	sequence number of the RST
 * @ack:	acknowledgement number, used if @with_ack
 * @with_ack:	set the ACK flag
 */
void rn_tcp_rst_key(struct rn_worker *w, const struct rn_flow_key *k, uint32_t seq,
		    uint32_t ack, int with_ack)
{
	uint32_t l3 = rn_ip_hdr_len(k->family);
	uint8_t *pkt;
	int err;

	pkt = rn_worker_tx_reserve(w, l3 + RN_TCP_HDR, &err);
	if (!pkt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_ring_full, 1);
		return;
	}
	rn_tcp_headers(pkt, k, 0, seq, with_ack ? ack : 0,
		       (uint8_t)(RN_TCP_RST | (with_ack ? RN_TCP_ACK : 0)), 0, NULL, 0, 0, 0);
	rn_worker_tx_commit(w, l3 + RN_TCP_HDR);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_sent, 1);
}

/**
 * rn_tcp_rst_reply() - answer a segment without a flow with a RST (RFC 793)
 * @w:		worker
 * @k:		its key
 * @s:		the segment (never a RST itself)
 */
void rn_tcp_rst_reply(struct rn_worker *w, const struct rn_flow_key *k,
		      const struct rn_tcp_seg *s)
{
	uint32_t seglen = s->len + !!(s->flags & RN_TCP_SYN) + !!(s->flags & RN_TCP_FIN);

	if (s->flags & RN_TCP_ACK)
		rn_tcp_rst_key(w, k, s->ack, 0, 0);
	else
		rn_tcp_rst_key(w, k, 0, s->seq + seglen, 1);
}

/**
 * rn_tcp_icmp_unreach() - tell the namespace its SYN's destination is unreachable
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 * @err:	errno of the failed connect (ENETUNREACH or EHOSTUNREACH)
 *
 * An ICMP (ICMPv6) destination unreachable from the destination address,
 * quoting an IP header and the first 8 bytes of the SYN (ports and
 * sequence number, which the namespace's TCP matches against its socket).
 */
void rn_tcp_icmp_unreach(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	const struct rn_flow_key *k = &c->f.key;
	uint32_t l3 = rn_ip_hdr_len(k->family), len = l3 + 8 + l3 + 8;
	struct rn_ip_out o = {
		.family = k->family, .proto = k->family == 4 ? RN_IPPROTO_ICMP : RN_IPPROTO_ICMPV6,
		.src = k->daddr, .dst = k->saddr, .l4len = len - l3,
	};
	struct rn_ip_out quoted = {
		.family = k->family, .proto = RN_IPPROTO_TCP, .flags = RN_IP_OUT_DF | RN_IP_OUT_BARE,
		.src = k->saddr, .dst = k->daddr, .l4len = RN_TCP_HDR,
	};
	uint8_t *pkt, *icmp, *q;
	int e;

	pkt = rn_worker_tx_reserve(w, len, &e);
	if (!pkt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_ring_full, 1);
		return;
	}
	memset(pkt, 0, len);
	icmp = pkt + rn_ip_build(pkt, &o);
	/* Destination unreachable: network, else host (ICMPv6: address) */
	icmp[0] = k->family == 4 ? 3 : 1;
	icmp[1] = err == ENETUNREACH ? 0 : k->family == 4 ? 1 : 3;
	q = icmp + 8;
	q += rn_ip_build(q, &quoted);
	rn_put_be16(q, k->sport);
	rn_put_be16(q + 2, k->dport);
	rn_put_be32(q + 4, c->irs);
	rn_put_be16(icmp + 2, rn_csum(icmp, len - l3, k->family == 6 ?
				      rn_csum_pseudo6(k->daddr, k->saddr, RN_IPPROTO_ICMPV6,
						      len - l3) : 0));
	rn_worker_tx_commit(w, len);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_icmp_sent, 1);
}

/**
 * rn_tcp_parse_sack() - note the left edges of a SACK option's blocks
 * @s:		segment being parsed
 * @blk:	the blocks (8 bytes each, inside the validated header)
 * @n:		their number
 */
static void rn_tcp_parse_sack(struct rn_tcp_seg *s, const uint8_t *blk, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n && s->nsack < 4; i++)
		s->sack_left[s->nsack++] = rn_be32(blk + 8 * i);
}

/**
 * rn_tcp_sack_above() - the lowest SACK left edge above an ACK number
 * @s:		segment
 * @ack:	its acknowledgement number
 * @max:	highest sequence number we sent, plus one
 *
 * Blocks at or below @ack (D-SACK, RFC 2883: duplicates received) say
 * nothing about a gap and are ignored.
 *
 * Return: the left edge where the first gap after @ack ends, or @ack if none
 */
uint32_t rn_tcp_sack_above(const struct rn_tcp_seg *s, uint32_t ack, uint32_t max)
{
	uint32_t i, lo = ack;

	for (i = 0; i < s->nsack; i++) {
		uint32_t l = s->sack_left[i];

		if (rn_seq_lt(ack, l) && rn_seq_le(l, max) && (lo == ack || rn_seq_lt(l, lo)))
			lo = l;
	}
	return lo;
}

/**
 * rn_tcp_parse() - check a segment's header and parse it
 * @w:		worker
 * @f:		validated frame carrying TCP
 * @s:		filled on success
 *
 * Return: 0, or -EBADMSG with the drop counter in @s->ctr
 */
int rn_tcp_parse(struct rn_worker *w, struct rn_frame *f, struct rn_tcp_seg *s)
{
	const uint8_t *h, *o;
	uint32_t off, sum;

	memset(s, 0, sizeof(*s));
	s->ws = 0xff;
	if (f->l4len < RN_TCP_HDR || !(h = rn_pkt_get(&f->l4, 0, RN_TCP_HDR)))
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_header);
	s->hlen = (h[12] >> 4) * 4u;
	if (s->hlen < RN_TCP_HDR || s->hlen > f->l4len)
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_header);
	if (rn_worker_pull(w, f, s->hlen) < s->hlen || !(h = rn_pkt_get(&f->l4, 0, s->hlen)))
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_header);

	s->seq = rn_be32(h + 4);
	s->ack = rn_be32(h + 8);
	s->flags = h[13] & 0x3f;
	s->wnd = rn_be16(h + 14);
	s->len = f->l4len - s->hlen;
	s->data = f->shm + RN_VNET_HDR_LEN + f->l3len + s->hlen;

	if (!rn_be16(h) || !rn_be16(h + 2))
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_port);
	if ((s->flags & RN_TCP_SYN && s->flags & (RN_TCP_FIN | RN_TCP_RST)) ||
	    !(s->flags & (RN_TCP_SYN | RN_TCP_ACK | RN_TCP_RST)))
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_flags);

	for (off = RN_TCP_HDR; off < s->hlen;) {
		o = h + off;
		if (o[0] == 0)
			break;
		if (o[0] == 1) {
			off++;
			continue;
		}
		if (off + 2 > s->hlen || o[1] < 2 || o[1] > s->hlen - off)
			return rn_tcp_drop(s, RN_WCTR_drop_tcp_options);
		if (o[0] == 2 && o[1] == 4)
			s->mss = rn_be16(o + 2);
		else if (o[0] == 3 && o[1] == 3)
			s->ws = o[2] > 14 ? 14 : o[2];
		else if (o[0] == 4 && o[1] == 2)
			s->sack_ok = 1;
		else if (o[0] == 5 && o[1] >= 10 && (o[1] - 2) % 8 == 0)
			rn_tcp_parse_sack(s, o + 2, (o[1] - 2u) / 8u);
		else if (o[0] == 8 && o[1] == 10) {
			s->ts_ok = 1;
			s->tsval = rn_be32(o + 2);
			s->tsecr = rn_be32(o + 6);
		}
		off += o[1];
	}

	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM) {
		/* The namespace's kernel left the sum to us: do not verify it */
		if (f->vnet.csum_start != f->l3len || f->vnet.csum_offset != 16)
			return rn_tcp_drop(s, RN_WCTR_drop_tcp_csum);
	} else if (!(f->vnet.flags & RN_VNET_F_DATA_VALID)) {
		if (rn_worker_pull(w, f, f->l4len) != f->l4len)
			return rn_tcp_drop(s, RN_WCTR_drop_tcp_header);
		sum = rn_ip_pseudo(f->family, f->saddr, f->daddr, RN_IPPROTO_TCP, f->l4len);
		if (rn_csum(f->l4.p, f->l4len, sum))
			return rn_tcp_drop(s, RN_WCTR_drop_tcp_csum);
	}
	return 0;
}
