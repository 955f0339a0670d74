/* tcp_delack.c - our delayed ACK: small namespace data is acknowledged with the reply
 *
 * Theory of operation
 * -------------------
 * A request from the namespace (a few bytes, or its FIN) is passed to the
 * host socket at once, and its ACK used to go out at the end of the same
 * batch, as a frame of its own. The host's answer then usually comes a few
 * tens of microseconds later, in a second frame that acknowledges the same
 * bytes again. Each frame towards the namespace costs a kick of the pump
 * thread, a wake-up of it, a tun write and a pass of the namespace's TCP: for
 * 1-byte request/response traffic the lone ACK was a third of the frames and
 * of the wake-ups (issue 12).
 *
 * So, like any TCP receiver (RFC 1122 4.2.3.2, RFC 9293 3.8.6.3), we delay
 * the ACK of small data: at the end of a batch a flow whose only news is
 * less than one MSS of new in-order data (or the namespace's FIN, while our
 * FIN is not due yet) sends nothing, and sets a deadline tcp_delack_ms
 * (worker parameter; 2 ms, TCP_DELACK_MS in ringnet/_worker.py; Linux
 * itself waits 40 ms) ahead on its timer. 0 turns the delay off (the
 * in-process harness tests, whose cells expect an ACK at once). Any segment that
 * carries the acknowledgement before then (the answer's data, our FIN, a
 * window update) clears the deadline (rn_tcp_ack_sent()); when it passes,
 * the ACK goes out (rn_tcp_timer()).
 *
 * An ACK is never delayed when it matters to the sender's progress: a full
 * segment or more unacknowledged (bulk data keeps its ACK clock, as with
 * RFC 9293's "at least every second full-sized segment"), out-of-order or
 * refused bytes held (SACK blocks, duplicate ACKs), bytes waiting in the
 * overflow buffer, or a small window (under four segments, before or after
 * this batch: a sender waiting for the window to open gets its update at
 * once). Explicit ACKs (ACK_DUE: challenge and duplicate ACKs, a repeated
 * FIN, after room came back in the ring) are never delayed either.
 */
#include "tcp_int.h"

/**
 * rn_tcp_ack_delay() - at the end of a batch, hold back an ACK that may wait
 * @w:		worker
 * @c:		flow with an ACK_MAYBE pending (never called for ACK_DUE)
 *
 * Return: 1 if the ACK waits (the delayed-ACK deadline is armed, or was
 *	   already), 0 if it must go out now
 */
int rn_tcp_ack_delay(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t unacked = c->rcv_nxt - c->last_ack;
	uint64_t small = 4ull * c->mss;

	if (!w->p.tcp_delack_ms || c->f.fd < 0 || c->nooo || c->ovf_len ||
	    (c->flags & (RN_TCP_F_SHORT | RN_TCP_F_FIN_PEND)))
		return 0;
	if (c->f.state != RN_TCP_ESTABLISHED && c->f.state != RN_TCP_CLOSE_WAIT)
		return 0;
	if (unacked >= c->mss)
		return 0;
	if (((uint64_t)c->last_wnd << c->our_ws) < small ||
	    ((uint64_t)rn_tcp_wnd_field(c) << c->our_ws) < small)
		return 0;
	if (!c->dack_at) {
		c->dack_at = w->now + w->p.tcp_delack_ms;
		rn_tcp_arm(w, c);
		rn_ctr_add(w->ctr, RN_WCTR_tcp_acks_delayed, 1);
	}
	return 1;
}

/**
 * rn_tcp_ack_sent() - a segment carrying our current ACK went out
 * @w:		worker
 * @c:		flow
 *
 * Clears a pending delayed ACK and moves the flow's timer off its deadline.
 */
void rn_tcp_ack_sent(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (!c->dack_at)
		return;
	c->dack_at = 0;
	rn_tcp_arm(w, c);
}
