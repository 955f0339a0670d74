/* tcp_recv.c - namespace -> host: ACK processing, window, hold and out-of-order buffers
 *
 * Theory of operation
 * -------------------
 * An in-order segment's payload goes to send(MSG_DONTWAIT) straight from ring
 * memory, and rcv_nxt (what we acknowledge) advances by exactly what the
 * socket took. The window we advertise follows the socket's free send buffer
 * (SO_MEMINFO: sndbuf - wmem_queued, the test tcp_sendmsg() applies, less 1/32
 * for buffer overhead); its right edge never moves left. The socket's
 * accounting still drifts from our estimate, so bytes it refuses from inside
 * the window go to the flow's overflow buffer and are acknowledged when the
 * socket takes them: data that arrived inside our window is never dropped
 * (pasta's ns->host stall). Segments after a gap (a loss) are answered at
 * once with a duplicate ACK each and kept, in up to RN_TCP_OOO_BLOCKS blocks,
 * until the gap is filled; with SACK permitted every ACK lists the blocks
 * held (RFC 2018), so the namespace resends only the gaps.
 *
 * Overflow and out-of-order bytes live in hold buffers, allocated while
 * needed, within RN_TCP_HOLD_FLOW per flow and RN_TCP_HOLD_WORKER for all
 * flows of a worker (w->tcp_held); only what those limits refuse is refused to the
 * namespace (RN_TCP_F_SHORT), and then the window update sent when the socket
 * drains (EPOLLOUT) is followed by duplicate ACKs so that the namespace
 * resends at once rather than after its RTO. A FIN behind buffered bytes
 * waits for them (RN_TCP_F_FIN_PEND) and is passed on as shutdown(SHUT_WR).
 *
 * The ACK field (rn_tcp_ack_in()) moves snd_una (the acknowledged bytes leave
 * the host socket once per batch, tcp_send.c), takes RTT samples (RFC 6298),
 * updates the namespace's window from the newest segment only (SND.WL1/WL2),
 * counts duplicate ACKs towards fast retransmit and NewReno-style recovery,
 * and answers an ACK for data never sent with an ACK.
 *
 * Timestamps (RFC 7323, on a flow with RN_TCP_F_TS; rn_tcp_ts_in(), before
 * the state's own checks): PAWS drops a segment, RST and SYN excepted, whose
 * TSval is older than ts_recent (a signed 32-bit comparison) and answers it
 * with an ACK (drop_tcp_paws); ts_recent expires after RN_TCP_PAWS_IDLE
 * without an update. It takes the TSval of a segment that covers the last
 * ACK we sent (SEG.SEQ <= Last.ACK.sent <= its end), the RFC's rule, so that
 * our TSecr echoes the segment that caused the ACK. A segment without
 * timestamps on such a flow is accepted as it is, as Linux does: the RFC
 * allows either, and dropping it would only stall a peer that errs.
 */
#include <errno.h>
#include <linux/sock_diag.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tcp_int.h"

/**
 * rn_tcp_wnd_update() - recompute the window from the host socket's free space
 * @c:		flow with a host socket
 *
 * The right edge never moves left. Asks for EPOLLOUT (RN_TCP_F_WANT_OUT)
 * when less than a quarter of the send buffer is free.
 */
void rn_tcp_wnd_update(struct rn_tcp_flow *c)
{
	uint32_t mem[SK_MEMINFO_VARS], max = 65535u << c->our_ws, edge;
	socklen_t sl = sizeof(mem);
	int64_t room = 0;

	if (c->f.fd >= 0 && !getsockopt(c->f.fd, SOL_SOCKET, SO_MEMINFO, mem, &sl) &&
	    sl >= sizeof(uint32_t) * (SK_MEMINFO_WMEM_QUEUED + 1)) {
		/* Buffer accounting includes overhead: keep 1/32 in reserve */
		room = (int64_t)mem[SK_MEMINFO_SNDBUF] - mem[SK_MEMINFO_WMEM_QUEUED] -
		       mem[SK_MEMINFO_SNDBUF] / 32;
		if (room < (int64_t)mem[SK_MEMINFO_SNDBUF] / 4)
			c->flags |= RN_TCP_F_WANT_OUT;
	}
	if (room < 0)
		room = 0;
	if (room > max)
		room = max;
	edge = c->rcv_nxt + (uint32_t)room;
	if (rn_seq_lt(c->rcv_edge, edge))
		c->rcv_edge = edge;
}

/**
 * rn_tcp_rtt_sample() - RFC 6298 estimator update
 * @c:		flow
 * @rtt:	measured round trip, ms
 */
void rn_tcp_rtt_sample(struct rn_tcp_flow *c, uint32_t rtt)
{
	int32_t delta;

	if (!c->srtt) {
		c->srtt = rtt << 3;
		c->rttvar = rtt << 1;
	} else {
		delta = (int32_t)rtt - (int32_t)(c->srtt >> 3);
		c->srtt = (uint32_t)((int32_t)c->srtt + delta);
		if (delta < 0)
			delta = -delta;
		c->rttvar = (uint32_t)((int32_t)c->rttvar + delta - (int32_t)(c->rttvar >> 2));
	}
	c->rto = (c->srtt >> 3) + c->rttvar;
	if (c->rto < RN_TCP_RTO_MIN)
		c->rto = RN_TCP_RTO_MIN;
	if (c->rto > RN_TCP_RTO_MAX)
		c->rto = RN_TCP_RTO_MAX;
}

/**
 * rn_tcp_ts_in() - timestamps of a segment on a flow: PAWS, then TS.Recent
 * @w:		worker
 * @c:		flow past CONNECTING (our SYN-ACK went out), not SYN_SENT
 * @s:		segment without SYN or RST
 *
 * Nothing happens without RN_TCP_F_TS or without the option in @s. PAWS
 * (RFC 7323, 5.3 R1): a TSval older than ts_recent, while that is not
 * older than RN_TCP_PAWS_IDLE, drops the segment and an ACK answers it.
 * Else (R3) ts_recent takes the TSval if the segment covers the last ACK
 * we sent.
 *
 * Return: 0, or -EBADMSG (drop_tcp_paws in @s->ctr; an ACK at the end of
 *	   the batch)
 */
int rn_tcp_ts_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s)
{
	uint32_t end = s->seq + s->len + !!(s->flags & RN_TCP_FIN);

	if (!(c->flags & RN_TCP_F_TS) || !s->ts_ok)
		return 0;
	if ((int32_t)(s->tsval - c->ts_recent) < 0 &&
	    w->now - c->ts_recent_at <= RN_TCP_PAWS_IDLE) {
		rn_tcp_ack_later(w, c);
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_paws);
	}
	if (rn_seq_le(s->seq, c->last_ack) && rn_seq_le(c->last_ack, end)) {
		c->ts_recent = s->tsval;
		c->ts_recent_at = w->now;
	}
	return 0;
}

/**
 * rn_tcp_ack_in() - process the ACK field and window of an acceptable segment
 * @w:		worker
 * @c:		established flow
 * @s:		segment
 *
 * An ACK of our FIN is the ACK event of the lifecycle: FIN_WAIT_1 moves to
 * FIN_WAIT_2, and in CLOSING or LAST_ACK, where the namespace's FIN was
 * passed on already, the flow ends (the namespace lingers in TIME_WAIT).
 *
 * Return: 0, or -EBADMSG for an unacceptable ACK (answered; the drop
 *	   counter is in @s->ctr). The flow may be closed on return.
 */
int rn_tcp_ack_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s)
{
	uint32_t ack = s->ack, wnd = (uint32_t)s->wnd << c->ns_ws;
	int wnd_changed = wnd != c->snd_wnd, fin_acked;

	if (rn_seq_lt(c->snd_max, ack)) {
		rn_tcp_ack_later(w, c);
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_ack);
	}
	/* Where the first gap ends, if SACK says (used to size a resend) */
	c->hole_end = rn_tcp_sack_above(s, ack, c->snd_max);
	if (c->hole_end == ack)
		c->hole_end = 0;
	if (rn_seq_lt(ack, c->snd_una - (65535u << c->ns_ws))) {
		rn_tcp_ack_later(w, c);
		rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
		return rn_tcp_drop(s, RN_WCTR_drop_tcp_ack);
	}

	/* Window update, from the newest segment only (RFC 793 SND.WL1/WL2) */
	if (rn_seq_lt(c->snd_wl1, s->seq) ||
	    (c->snd_wl1 == s->seq && rn_seq_le(c->snd_wl2, ack))) {
		c->snd_wnd = wnd;
		c->snd_wl1 = s->seq;
		c->snd_wl2 = ack;
	} else {
		wnd_changed = 0;
	}

	if (rn_seq_lt(c->snd_una, ack)) {
		/* The bytes leave the host socket at the end of the batch */
		fin_acked = rn_tcp_fin_sent(c) && ack == c->fin_seq + 1;
		c->snd_una = ack;
		c->flags &= ~RN_TCP_F_TLP_OUT;
		if (rn_seq_lt(c->snd_nxt, ack))
			c->snd_nxt = ack;
		c->dup_acks = 0;
		c->retries = 0;
		if ((c->flags & RN_TCP_F_RTT) && rn_seq_lt(c->rtt_seq, ack)) {
			rn_tcp_rtt_sample(c, (uint32_t)(w->now - c->rtt_ts));
			c->flags &= ~RN_TCP_F_RTT;
		}
		c->rto_at = c->snd_una == c->snd_max ? 0 : w->now + c->rto;
		rn_tcp_tlp_arm(w, c);
		if (c->flags & RN_TCP_F_RECOVERY) {
			if (rn_seq_lt(ack, c->recover))
				rn_tcp_retransmit_head(w, c);
			else
				c->flags &= ~RN_TCP_F_RECOVERY;
		}
		rn_tcp_arm(w, c);
		c->flags |= RN_TCP_F_MORE;
		if (fin_acked && !(c->f.flags & RN_FLOW_F_CLOSED)) {
			rn_tcp_go(c, RN_TCP_EV_ACK);
			if (c->f.state == RN_TCP_CLOSED) {
				/* Unread bytes at close() would make it a reset */
				rn_tcp_discard_upto_una(w, c);
				rn_tcp_close(w, c, 0, 0);
			}
		}
	} else if (ack == c->snd_una && !s->len && !(s->flags & RN_TCP_FIN) &&
		   (!wnd_changed || c->hole_end) && c->snd_una != c->snd_max) {
		/* With SACK the window may shrink as the namespace queues data
		 * out of order: blocks above snd_una make it a duplicate anyway.
		 * With fewer than four frames in flight, three duplicates never
		 * come: early retransmit (RFC 5827) after as many as can. */
		uint32_t frame = rn_tcp_max_frame(c);
		uint32_t flight = (c->snd_max - c->snd_una + frame - 1) / frame;
		uint32_t thresh = flight < 4 ? (flight > 1 ? flight - 1 : 1) : RN_TCP_DUPACKS;

		if (!c->hole_end && flight < 4)
			thresh = RN_TCP_DUPACKS;	/* no evidence beyond the window rule */
		if (++c->dup_acks >= thresh && !(c->flags & RN_TCP_F_RECOVERY)) {
			c->flags |= RN_TCP_F_RECOVERY;
			c->tlp_at = 0;
			c->recover = c->snd_max;
			c->flags &= ~RN_TCP_F_RTT;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_fast_retransmits, 1);
			rn_tcp_retransmit_head(w, c);
		}
	} else if (wnd_changed) {
		c->flags |= RN_TCP_F_MORE;
	}
	return 0;
}

/**
 * rn_tcp_ns_fin() - pass the namespace's FIN on: shutdown(SHUT_WR)
 * @w:		worker
 * @c:		flow whose data before the FIN all went to the host socket
 *
 * The FIN event of the lifecycle: ESTABLISHED moves to CLOSE_WAIT,
 * FIN_WAIT_1 to CLOSING, and FIN_WAIT_2 (our FIN was acknowledged) to
 * TIME_WAIT, where the host socket is closed at once.
 */
static void rn_tcp_ns_fin(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->rcv_nxt++;
	c->flags &= ~(RN_TCP_F_WANT_OUT | RN_TCP_F_SHORT | RN_TCP_F_FIN_PEND);
	if (!c->closing)
		c->closing = w->now;
	shutdown(c->f.fd, SHUT_WR);
	rn_tcp_go(c, RN_TCP_EV_FIN);
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
	/* In CLOSE_WAIT the ACK may ride on our FIN (tcp_delack.c) */
	if (c->f.state == RN_TCP_CLOSE_WAIT)
		rn_tcp_update_later(w, c);
	else
		rn_tcp_ack_later(w, c);
	if (c->f.state == RN_TCP_TIME_WAIT)
		rn_tcp_time_wait(w, c);
}

/**
 * rn_tcp_to_host() - send namespace bytes to the host socket
 * @w:		worker
 * @c:		flow
 * @data:	bytes that follow rcv_nxt
 * @len:	their length
 *
 * rcv_nxt advances by what the socket took.
 *
 * Return: bytes taken, or negative errno for a host socket error
 */
static ssize_t rn_tcp_to_host(struct rn_worker *w, struct rn_tcp_flow *c, const uint8_t *data,
			      uint32_t len)
{
	ssize_t n = send(c->f.fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);

	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
			return -errno;
		n = 0;
	}
	c->rcv_nxt += (uint32_t)n;
	c->f.bytes_up += (uint64_t)n;
	c->f.pkts_up += n > 0;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_bytes_up, (uint64_t)n);
	return n;
}

/**
 * rn_tcp_hold_grow() - grow a flow's hold buffer to at least @need bytes
 * @w:		worker
 * @c:		flow
 * @buf:	the buffer (may be NULL), updated
 * @cap:	its capacity, updated
 * @need:	bytes it must hold
 *
 * Capacity doubles from 64 KiB, within RN_TCP_HOLD_FLOW for all of the
 * flow's buffers together and RN_TCP_HOLD_WORKER for all flows of this
 * worker process.
 *
 * Return: 0, or -ENOMEM when a limit (or malloc) says no
 */
static int rn_tcp_hold_grow(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t **buf, uint32_t *cap, uint32_t need)
{
	uint32_t ncap = *cap ? *cap : 65536u;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	while (ncap < need && ncap < RN_TCP_HOLD_FLOW)
		ncap *= 2;
	if (ncap > RN_TCP_HOLD_FLOW)
		ncap = RN_TCP_HOLD_FLOW;
	if (ncap < need || c->held - *cap + ncap > RN_TCP_HOLD_FLOW ||
	    w->tcp_held - *cap + ncap > RN_TCP_HOLD_WORKER)
		return -ENOMEM;
	p = realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	w->tcp_held += ncap - *cap;
	c->held += ncap - *cap;
	*buf = p;
	*cap = ncap;
	return 0;
}

/**
 * rn_tcp_hold_free() - free one of a flow's hold buffers
 * @w:		worker
 * @c:		flow
 * @buf:	the buffer, set to NULL
 * @cap:	its capacity, set to 0
 */
void rn_tcp_hold_free(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t **buf, uint32_t *cap)
{
	free(*buf);
	w->tcp_held -= *cap;
	c->held -= *cap;
	*buf = NULL;
	*cap = 0;
}

/**
 * rn_tcp_ovf_drain() - send buffered namespace bytes to the host socket
 * @w:		worker
 * @c:		flow
 *
 * Frees the buffer once empty, and then passes on a FIN that waited for it.
 *
 * Return: 0, or negative errno for a host socket error
 */
int rn_tcp_ovf_drain(struct rn_worker *w, struct rn_tcp_flow *c)
{
	ssize_t n;

	if (!c->ovf_len)
		return 0;
	n = rn_tcp_to_host(w, c, c->ovf + c->ovf_off, c->ovf_len);
	if (n < 0)
		return (int)n;
	c->ovf_off += (uint32_t)n;
	c->ovf_len -= (uint32_t)n;
	if (n)
		rn_tcp_update_later(w, c);
	if (c->ovf_len) {
		c->flags |= RN_TCP_F_WANT_OUT;
		return 0;
	}
	rn_tcp_hold_free(w, c, &c->ovf, &c->ovf_cap);
	c->ovf_off = 0;
	if (c->flags & RN_TCP_F_FIN_PEND)
		rn_tcp_ns_fin(w, c);
	return 0;
}

/**
 * rn_tcp_take() - pass in-order bytes to the host socket, or buffer them
 * @w:		worker
 * @c:		flow
 * @data:	bytes that follow rcv_nxt + ovf_len
 * @len:	their length
 *
 * What the socket does not take goes to the flow's overflow buffer, not
 * acknowledged until the socket takes it (EPOLLOUT); only what the hold
 * limits do not let in is refused (RN_TCP_F_SHORT: the namespace must send
 * it again).
 *
 * Return: bytes refused, or negative errno for a host socket error
 */
static ssize_t rn_tcp_take(struct rn_worker *w, struct rn_tcp_flow *c, const uint8_t *data,
			   uint32_t len)
{
	uint32_t take;
	ssize_t n;
	int rc;

	rc = rn_tcp_ovf_drain(w, c);
	if (rc)
		return rc;
	if (!c->ovf_len) {
		n = rn_tcp_to_host(w, c, data, len);
		if (n < 0)
			return n;
		data += n;
		len -= (uint32_t)n;
	}
	if (len) {
		if (c->ovf_off && c->ovf_off + c->ovf_len + len > c->ovf_cap) {
			memmove(c->ovf, c->ovf + c->ovf_off, c->ovf_len);
			c->ovf_off = 0;
		}
		take = len;
		while (take && rn_tcp_hold_grow(w, c, &c->ovf, &c->ovf_cap,
						c->ovf_off + c->ovf_len + take))
			take = take > 65536u ? take - 65536u : 0;
		memcpy(c->ovf + c->ovf_off + c->ovf_len, data, take);
		c->ovf_len += take;
		len -= take;
		c->flags |= RN_TCP_F_WANT_OUT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_buffered, take);
	}
	if (len) {
		c->flags |= RN_TCP_F_SHORT | RN_TCP_F_WANT_OUT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_short_sends, 1);
	}
	/* The window is recomputed once, when the ACK goes out */
	rn_tcp_update_later(w, c);
	return len;
}

/**
 * rn_tcp_ooo_drop() - forget out-of-order block @i
 * @w:		worker
 * @c:		flow
 * @i:		block index
 */
static void rn_tcp_ooo_drop(struct rn_worker *w, struct rn_tcp_flow *c, unsigned int i)
{
	rn_tcp_hold_free(w, c, &c->ooo[i].buf, &c->ooo[i].cap);
	memmove(&c->ooo[i], &c->ooo[i + 1], (c->nooo - i - 1) * sizeof(c->ooo[0]));
	c->nooo--;
	memset(&c->ooo[c->nooo], 0, sizeof(c->ooo[0]));
}

/**
 * rn_tcp_ooo_append() - add bytes at the end of out-of-order block @i
 * @w:		worker
 * @c:		flow
 * @i:		block index
 * @data:	bytes that follow the block
 * @len:	their length
 *
 * Return: 0, or -ENOMEM (nothing added)
 */
static int rn_tcp_ooo_append(struct rn_worker *w, struct rn_tcp_flow *c, unsigned int i, const uint8_t *data,
			     uint32_t len)
{
	struct rn_tcp_blk *b = &c->ooo[i];

	if (rn_tcp_hold_grow(w, c, &b->buf, &b->cap, b->len + len))
		return -ENOMEM;
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return 0;
}

/**
 * rn_tcp_ooo_join() - merge block @i with the blocks it now reaches
 * @w:		worker
 * @c:		flow
 * @i:		block index
 */
static void rn_tcp_ooo_join(struct rn_worker *w, struct rn_tcp_flow *c, unsigned int i)
{
	struct rn_tcp_blk *b = &c->ooo[i], *n;
	uint32_t end, nend;

	while (i + 1 < c->nooo) {
		n = &c->ooo[i + 1];
		end = b->seq + b->len;
		if (rn_seq_lt(end, n->seq))
			return;
		nend = n->seq + n->len;
		/* If the bytes do not fit, the next block is lost: it comes again */
		if (rn_seq_lt(end, nend))
			rn_tcp_ooo_append(w, c, i, n->buf + (end - n->seq), nend - end);
		rn_tcp_ooo_drop(w, c, i + 1);
	}
}

/**
 * rn_tcp_ooo_add() - keep a segment that arrived after a gap
 * @w:		worker
 * @c:		flow
 * @seq:	its sequence number, after rcv_nxt + ovf_len
 * @data:	payload
 * @len:	payload length
 *
 * Up to RN_TCP_OOO_BLOCKS disjoint blocks, in sequence order, are kept in
 * hold buffers; a segment extends or repeats a block, joins two, or starts
 * a new one. What the limits do not let in is dropped (the namespace sends
 * it again).
 *
 * Return: true if the segment's bytes are now held
 */
int rn_tcp_ooo_add(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t seq,
		   const uint8_t *data, uint32_t len)
{
	uint32_t end = seq + len, bend;
	unsigned int i;

	for (i = 0; i < c->nooo; i++) {
		if (rn_seq_le(seq, c->ooo[i].seq + c->ooo[i].len))
			break;
	}
	if (i < c->nooo && rn_seq_le(c->ooo[i].seq, seq)) {
		/* Starts inside block i or right at its end */
		bend = c->ooo[i].seq + c->ooo[i].len;
		if (rn_seq_lt(bend, end)) {
			if (rn_tcp_ooo_append(w, c, i, data + (bend - seq), end - bend))
				return 0;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_ooo_held, end - bend);
			rn_tcp_ooo_join(w, c, i);
		}
		c->sack_first = c->ooo[i].seq;
		return 1;
	}
	if (c->nooo == RN_TCP_OOO_BLOCKS)
		return 0;
	memmove(&c->ooo[i + 1], &c->ooo[i], (c->nooo - i) * sizeof(c->ooo[0]));
	memset(&c->ooo[i], 0, sizeof(c->ooo[0]));
	c->nooo++;
	c->ooo[i].seq = seq;
	if (rn_tcp_ooo_append(w, c, i, data, len)) {
		rn_tcp_ooo_drop(w, c, i);
		return 0;
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_ooo_held, len);
	rn_tcp_ooo_join(w, c, i);
	c->sack_first = c->ooo[i].seq;
	return 1;
}

/**
 * rn_tcp_ooo_free() - forget every out-of-order block
 * @w:		worker
 * @c:		flow
 */
void rn_tcp_ooo_free(struct rn_worker *w, struct rn_tcp_flow *c)
{
	while (c->nooo)
		rn_tcp_ooo_drop(w, c, c->nooo - 1);
}

/**
 * rn_tcp_ooo_merge() - take out-of-order blocks that the in-order data reached
 * @w:		worker
 * @c:		flow
 *
 * A block's buffer becomes the overflow buffer when the host socket cannot
 * take it all and nothing else is buffered, so that nothing is copied twice.
 *
 * Return: 0, or negative errno for a host socket error
 */
static int rn_tcp_ooo_merge(struct rn_worker *w, struct rn_tcp_flow *c)
{
	struct rn_tcp_blk *b;
	uint32_t tail, skip;
	ssize_t n;

	while (c->nooo) {
		b = &c->ooo[0];
		tail = c->rcv_nxt + c->ovf_len;
		if (rn_seq_lt(tail, b->seq))
			return 0;
		skip = tail - b->seq;
		if (skip >= b->len) {
			rn_tcp_ooo_drop(w, c, 0);
			continue;
		}
		if (c->ovf_len) {
			n = rn_tcp_take(w, c, b->buf + skip, b->len - skip);
			rn_tcp_ooo_drop(w, c, 0);
			if (n < 0)
				return (int)n;
			continue;
		}
		n = rn_tcp_to_host(w, c, b->buf + skip, b->len - skip);
		if (n < 0)
			return (int)n;
		rn_tcp_update_later(w, c);
		if ((uint32_t)n < b->len - skip) {
			rn_tcp_hold_free(w, c, &c->ovf, &c->ovf_cap);
			c->ovf = b->buf;
			c->ovf_cap = b->cap;
			c->ovf_off = skip + (uint32_t)n;
			c->ovf_len = b->len - c->ovf_off;
			c->flags |= RN_TCP_F_WANT_OUT;
			b->buf = NULL;
			b->cap = 0;
		}
		rn_tcp_ooo_drop(w, c, 0);
	}
	return 0;
}

/**
 * rn_tcp_data_in() - pass in-order payload and FIN on to the host socket
 * @w:		worker
 * @c:		established flow
 * @s:		segment, trimmed to start at rcv_nxt + ovf_len
 * @fin_end:	sequence number right after the segment's payload (where its
 *		FIN sits, if it has one)
 *
 * Return: 0, or a negative errno of the host socket (the flow is closed)
 */
int rn_tcp_data_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s,
		   uint32_t fin_end)
{
	ssize_t left = 0;

	if (s->len) {
		/* Data that fills (part of) a gap is acknowledged at once, never
		 * delayed (RFC 5681 4.2; tcp_delack.c) */
		if (c->nooo)
			rn_tcp_ack_later(w, c);
		left = rn_tcp_take(w, c, s->data, s->len);
		if (!left && rn_tcp_ooo_merge(w, c))
			left = -EPIPE;
		if (left < 0) {
			rn_tcp_host_error(w, c, (int)left);
			return (int)left;
		}
	}
	if ((s->flags & RN_TCP_FIN) && !left && !rn_tcp_ns_fin_taken(c) &&
	    c->rcv_nxt + c->ovf_len == fin_end) {
		if (c->ovf_len)
			c->flags |= RN_TCP_F_FIN_PEND;
		else
			rn_tcp_ns_fin(w, c);
	}
	if (c->flags & RN_TCP_F_WANT_OUT)
		rn_tcp_watch(w, c);
	return 0;
}
