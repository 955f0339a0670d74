/* tcp_send.c - host -> namespace: peek, push, retransmit, tail loss probe
 *
 * Theory of operation
 * -------------------
 * Host data stays in the host socket's receive queue until the namespace
 * acknowledges it. We peek (MSG_PEEK with SO_PEEK_OFF, so each peek continues
 * where the last one ended) straight into ring memory, up to 64 KiB per frame
 * as a TSO super-frame (gso_size = the namespace's MSS, less the 12 bytes
 * of timestamps on a flow that uses them: every segment carries them), and discard
 * acknowledged bytes with recv(MSG_TRUNC), once per batch. Retransmission
 * peeks again from the offset of snd_una. Without SO_PEEK_OFF (kernels before
 * 6.9), the peek skips already-sent bytes into the worker's discard buffer
 * (w->tcp_discard, allocated on first use, freed by rn_tcp_free()), which
 * caps the bytes in flight at RN_TCP_DISCARD. No payload byte is ever summed by us.
 *
 * rn_tcp_push() sends as far as the namespace's window and the ring allow, at
 * most RN_TCP_BUDGET bytes per flow per pass (then RN_TCP_F_MORE: busy flows
 * take turns). A peek returning 0 is the host's EOF: the event that moves
 * the flow to FIN_WAIT_1 or LAST_ACK, our FIN at fin_seq going out once all
 * data before it did.
 *
 * Reliability: one retransmission timer per flow (RFC 6298 estimator in
 * milliseconds, minimum RN_TCP_RTO_MIN, doubling on each expiry, go-back-N
 * from snd_una); fast retransmit on the third duplicate ACK (or ACK with SACK
 * blocks) with partial-ACK recovery, one super-frame per ACK, cut to the
 * first gap when the namespace's SACK blocks show where it ends; zero-window
 * probes (an ACK with seq = snd_una - 1) while the namespace's window is
 * closed; a tail loss probe (RFC 8985: the last frame again, after about two
 * RTTs without an ACK) so that losing the last frames of a burst costs no
 * RTO. No congestion control: the peer sits behind a memory ring and its
 * receive window bounds what is in flight.
 *
 * The host socket's receive window, on a near path (minimum RTT at most
 * RN_TCP_NEAR_RTT_US: host loopback, a LAN), is clamped to RN_TCP_NEAR_CLAMP
 * (TCP_WINDOW_CLAMP), re-applied after every RN_TCP_CLAMP_SHIFT-sized step of
 * consumed bytes because the kernel's receive-buffer autotuning raises the
 * clamp each time it grows the buffer. Why: the bytes we hold in the socket
 * until the namespace acknowledges them shrink its free space, so the
 * kernel's receive path no longer sees the window's right edge advance and
 * delays its ACK; the ACK then leaves from our worker's recv() on our CPU,
 * and the sender, freed by it there, transmits from that CPU as well as its
 * own. Frames from two CPUs arrive out of order, and over loopback (a
 * minimum RTT of a microsecond) the sender's RACK takes the reordering for
 * loss: host->namespace streams retransmitted 4-5 times what plain loopback
 * does, every retransmission spurious. With a window well below the buffer,
 * free space stays above it, every second segment is acknowledged at once
 * on the sender's CPU, and the retransmissions go. 4 MiB is still 134
 * Gbit/s at the threshold RTT; far paths keep the kernel's window.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "tcp_int.h"

/**
 * rn_tcp_rto_start() - start the retransmission timer unless it runs
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_rto_start(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (!c->rto_at) {
		c->rto_at = w->now + c->rto;
		rn_tcp_arm(w, c);
	}
}

/**
 * rn_tcp_tlp_arm() - schedule a tail loss probe while data is in flight
 * @w:		worker
 * @c:		flow
 *
 * PTO = 2 SRTT, at least RN_TCP_PTO_MIN, plus the peer's delayed ACK time
 * when a single frame is in flight (RFC 8985, 7.2); none in recovery, none
 * while a probe awaits its ACK, and none that would come after the RTO.
 */
void rn_tcp_tlp_arm(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t pto = c->srtt >> 2;

	c->tlp_at = 0;
	if (c->snd_una == c->snd_max || (c->flags & (RN_TCP_F_RECOVERY | RN_TCP_F_TLP_OUT)))
		return;
	if (pto < RN_TCP_PTO_MIN)
		pto = RN_TCP_PTO_MIN;
	if (c->snd_max - c->snd_una <= c->mss * 2u || c->snd_max - c->snd_una <= 65536u)
		pto += RN_TCP_DELACK;
	if (pto < c->rto)
		c->tlp_at = w->now + pto;
}

/**
 * rn_tcp_peek() - copy host data at an offset from snd_una without consuming it
 * @w:		worker
 * @c:		flow
 * @off:	offset from the head of the socket's receive queue (= snd_una)
 * @buf:	destination (ring memory)
 * @len:	bytes wanted
 *
 * Return: bytes copied, 0 at EOF, or negative errno (-EAGAIN: nothing there,
 *	   -ENOMEM: no discard buffer for a socket without SO_PEEK_OFF)
 */
static ssize_t rn_tcp_peek(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t off, uint8_t *buf, uint32_t len)
{
	struct iovec iov[2];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	int v = (int)off;
	ssize_t n;

	if (!(c->flags & RN_TCP_F_NO_PEEKOFF)) {
		if (c->peek_off != off) {
			if (setsockopt(c->f.fd, SOL_SOCKET, SO_PEEK_OFF, &v, sizeof(v)))
				return -errno;
			c->peek_off = off;
		}
		n = recv(c->f.fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0)
			return -errno;
		c->peek_off += (uint32_t)n;
		return n;
	}
	if (off > RN_TCP_DISCARD)
		return -EAGAIN;
	if (!w->tcp_discard && !(w->tcp_discard = malloc(RN_TCP_DISCARD)))
		return -ENOMEM;
	iov[0].iov_base = w->tcp_discard;
	iov[0].iov_len = off;
	iov[1].iov_base = buf;
	iov[1].iov_len = len;
	n = recvmsg(c->f.fd, &mh, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 0;
	if ((size_t)n <= off)
		return -EAGAIN;
	return n - (ssize_t)off;
}

/**
 * rn_tcp_discard_acked() - drop bytes the namespace acknowledged from the socket
 * @c:		flow
 * @n:		bytes
 *
 * Return: 0, or negative errno from recv()
 */
static int rn_tcp_discard_acked(struct rn_tcp_flow *c, uint32_t n)
{
	ssize_t got;

	while (n) {
		got = recv(c->f.fd, NULL, n, MSG_TRUNC | MSG_DONTWAIT);
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EPIPE;
		n -= (uint32_t)got;
		/* The kernel moves SO_PEEK_OFF back by what was consumed */
		c->peek_off = c->peek_off > (uint32_t)got ? c->peek_off - (uint32_t)got : 0;
	}
	return 0;
}

/**
 * rn_tcp_clamp_near() - clamp a near path's receive window (see the header)
 * @w:		worker
 * @c:		flow with a host socket
 */
static void rn_tcp_clamp_near(struct rn_worker *w, struct rn_tcp_flow *c)
{
	/* glibc's struct tcp_info stops before the kernel's tcpi_min_rtt (4.10) */
	struct {
		struct tcp_info base;
		uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
		uint32_t segs_out, segs_in, notsent_bytes, min_rtt;
	} ti;
	socklen_t len = sizeof(ti);
	int clamp = RN_TCP_NEAR_CLAMP;

	_Static_assert(offsetof(__typeof__(ti), min_rtt) == 148, "Linux's tcpi_min_rtt offset");
	if (getsockopt(c->f.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) || len < sizeof(ti))
		return;
	if (!ti.min_rtt || ti.min_rtt > RN_TCP_NEAR_RTT_US)
		return;
	if (!setsockopt(c->f.fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &clamp, sizeof(clamp)))
		rn_ctr_add(w->ctr, RN_WCTR_tcp_window_clamps, 1);
}

/**
 * rn_tcp_discard_upto_una() - drop what the namespace acknowledged from the socket
 * @w:		worker
 * @c:		flow
 *
 * Once per batch rather than per ACK: one recv(MSG_TRUNC) for all of them;
 * every 1 MiB consumed, a near path's window clamp again (rn_tcp_clamp_near()).
 *
 * Return: 0, or negative errno from recv()
 */
int rn_tcp_discard_upto_una(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t target = c->snd_una;
	int rc;

	/* Our FIN, once acknowledged, is no byte of the socket's */
	if (rn_tcp_host_eof(c) && rn_seq_lt(c->fin_seq, target))
		target = c->fin_seq;
	if (c->f.fd < 0 || !rn_seq_lt(c->q_head, target))
		return 0;
	rc = rn_tcp_discard_acked(c, target - c->q_head);
	if (rc)
		return rc;
	/* a step of consumed bytes crossed: the clamp again (autotuning raises it) */
	if ((target ^ c->q_head) >> RN_TCP_CLAMP_SHIFT)
		rn_tcp_clamp_near(w, c);
	c->q_head = target;
	return 0;
}

/**
 * rn_tcp_send_fin() - send our FIN at fin_seq
 * @w:		worker
 * @c:		flow after the host's EOF (rn_tcp_host_eof()), snd_nxt == fin_seq
 *
 * Return: 0, -EAGAIN if to_ns is full, or a fatal negative errno
 */
static int rn_tcp_send_fin(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int rc = rn_tcp_send_ctl(w, c, RN_TCP_FIN | RN_TCP_ACK, c->fin_seq);

	if (rc)
		return rc;
	c->flags &= ~RN_TCP_F_ACK_DUE;
	if (rn_tcp_fin_sent(c))
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
	if (!c->closing)
		c->closing = w->now;
	c->snd_nxt = c->fin_seq + 1;
	if (rn_seq_lt(c->snd_max, c->snd_nxt))
		c->snd_max = c->snd_nxt;
	rn_tcp_rto_start(w, c);
	return 0;
}

/**
 * rn_tcp_frame_len() - payload bytes one frame carries when @len bytes may go
 * @c:		flow
 * @len:	bytes the window and the budget allow
 *
 * Return: @len capped to a 64 KiB frame (options included) and, above one
 *	   segment, cut down to whole segments of c->mss (the namespace's MSS
 *	   less our options)
 */
static uint32_t rn_tcp_frame_len(const struct rn_tcp_flow *c, uint32_t len)
{
	uint32_t max = rn_tcp_max_frame(c);

	if (len >= max)
		return max;
	if (len > c->mss)
		len -= len % c->mss;
	return len;
}

/**
 * rn_tcp_send_data() - send one frame of host data at snd_nxt
 * @w:		worker
 * @c:		flow
 * @len:	most payload bytes to send (cut to one frame, rn_tcp_frame_len())
 *
 * Return: payload bytes sent, 0 at host EOF (the flow moved on, tcp_fsm.c),
 *	   -EAGAIN if nothing could be sent (no data, or no room: then the flow
 *	   waits for room), or another negative errno (host socket error, or
 *	   fatal ring error with w->err set)
 */
static ssize_t rn_tcp_send_data(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t len)
{
	uint32_t l3 = rn_ip_hdr_len(c->f.key.family), end, optlen;
	uint32_t hdr = l3 + RN_TCP_HDR + rn_tcp_opt_len(c);
	uint8_t *pkt, opts[RN_TCP_TS_LEN];
	ssize_t n;
	int err;

	len = rn_tcp_frame_len(c, len);
	pkt = rn_worker_tx_reserve(w, hdr + len, &err);
	if (!pkt) {
		if (err)
			return err;
		rn_worker_wait_room(w, &c->f);
		return -EAGAIN;
	}
	n = rn_tcp_peek(w, c, c->snd_nxt - c->q_head, pkt + hdr, len);
	if (n == 0) {
		/* The host's EOF: our FIN goes at this sequence number */
		if (!rn_tcp_host_eof(c)) {
			c->fin_seq = c->snd_nxt;
			rn_tcp_go(c, RN_TCP_EV_EOF);
		}
		if (!c->closing)
			c->closing = w->now;
		return 0;
	}
	if (n < 0)
		return n;
	c->flags &= ~(RN_TCP_F_ACK_DUE | RN_TCP_F_ACK_MAYBE);
	c->last_ack = c->rcv_nxt;
	c->last_wnd = rn_tcp_wnd_field(c);
	/* Each segment of a super-frame gets this header, timestamps included */
	optlen = rn_tcp_ts_opts(w, c, opts);
	rn_tcp_headers(pkt, &c->f.key, c->ip_id++, c->snd_nxt, c->rcv_nxt,
		       RN_TCP_ACK | RN_TCP_PSH, c->last_wnd, optlen ? opts : NULL, optlen,
		       (uint32_t)n, c->mss);
	rn_worker_tx_commit(w, hdr + (uint32_t)n);
	rn_tcp_ack_sent(w, c);

	end = c->snd_nxt + (uint32_t)n;
	if (rn_seq_lt(c->snd_max, end)) {
		uint32_t fresh = end - c->snd_max;

		if (fresh < (uint32_t)n)
			rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
		c->f.bytes_down += fresh;
		c->f.pkts_down++;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_bytes_down, fresh);
		c->snd_max = end;
		if (!(c->flags & RN_TCP_F_RTT)) {
			c->flags |= RN_TCP_F_RTT;
			c->rtt_seq = c->snd_nxt;
			c->rtt_ts = w->now;
		}
	} else {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
	}
	c->snd_nxt = end;
	rn_tcp_rto_start(w, c);
	if (!c->tlp_at) {
		rn_tcp_tlp_arm(w, c);
		rn_tcp_arm(w, c);
	}
	return n;
}

/**
 * rn_tcp_push() - send host data (and our FIN) as far as window and ring allow
 * @w:		worker
 * @c:		flow
 *
 * Sends at most RN_TCP_BUDGET bytes, then asks to be called again at the end
 * of the loop pass (RN_TCP_F_MORE), so that busy flows take turns.
 */
void rn_tcp_push(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t budget = RN_TCP_BUDGET, wnd_end, avail, len;
	ssize_t n;

	if (!rn_tcp_synced(c) || c->f.state == RN_TCP_TIME_WAIT ||
	    (c->f.flags & RN_FLOW_F_ROOM_WAIT))
		return;
	c->flags &= ~RN_TCP_F_MORE;
	for (;;) {
		if (rn_tcp_host_eof(c)) {
			if (c->snd_nxt == c->fin_seq) {
				n = rn_tcp_send_fin(w, c);
				if (n == -EAGAIN)
					rn_worker_wait_room(w, &c->f);
				return;
			}
			if (!rn_seq_lt(c->snd_nxt, c->fin_seq))
				return;
		}
		wnd_end = c->snd_una + c->snd_wnd;
		avail = rn_seq_lt(c->snd_nxt, wnd_end) ? wnd_end - c->snd_nxt : 0;
		if ((c->flags & RN_TCP_F_NO_PEEKOFF) &&
		    avail > RN_TCP_DISCARD - (c->snd_nxt - c->q_head))
			avail = RN_TCP_DISCARD - (c->snd_nxt - c->q_head);
		if (rn_tcp_host_eof(c) && avail > c->fin_seq - c->snd_nxt)
			avail = c->fin_seq - c->snd_nxt;
		if (!avail) {
			/* Closed window, nothing in flight: probe it */
			if (!c->snd_wnd && c->snd_una == c->snd_max)
				rn_tcp_rto_start(w, c);
			return;
		}
		if (!budget) {
			c->flags |= RN_TCP_F_MORE;
			rn_worker_defer(w, &c->f);
			return;
		}
		/* One frame's worth: a shorter peek than that means drained (below) */
		len = rn_tcp_frame_len(c, avail < budget ? avail : budget);
		n = rn_tcp_send_data(w, c, len);
		if (n == -EAGAIN || w->err)
			return;
		if (n < 0) {
			rn_tcp_host_error(w, c, (int)n);
			return;
		}
		if (n == 0) {
			rn_tcp_watch(w, c);
			continue;
		}
		budget = (uint32_t)n < budget ? budget - (uint32_t)n : 0;
		/* Drained for now: new data raises EPOLLIN again, and an EOF
		 * behind it is found by the push that the namespace's ACK of
		 * this data brings */
		if ((uint32_t)n < len)
			return;
	}
}

/**
 * rn_tcp_retransmit_head() - resend the first unacknowledged frame's worth
 * @w:		worker
 * @c:		flow
 *
 * Used by fast retransmit and for each partial ACK in recovery: one
 * super-frame from snd_una, or only the gap up to the first block the
 * namespace's SACK reported, or the FIN if only that is outstanding; then
 * snd_nxt goes back to where it was.
 */
void rn_tcp_retransmit_head(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t saved = c->snd_nxt, len;
	ssize_t n;

	if (rn_tcp_host_eof(c) && c->snd_una == c->fin_seq) {
		if (!rn_tcp_send_fin(w, c))
			c->snd_nxt = saved;
		return;
	}
	len = (rn_tcp_host_eof(c) ? c->fin_seq : c->snd_max) - c->snd_una;
	if (c->hole_end && rn_seq_lt(c->snd_una, c->hole_end) &&
	    c->hole_end - c->snd_una < len)
		len = c->hole_end - c->snd_una;	/* just the gap SACK reported */
	if (!len || rn_seq_lt(c->snd_nxt, c->snd_una + 1))
		return;
	c->snd_nxt = c->snd_una;
	n = rn_tcp_send_data(w, c, len);
	if (n > 0 && rn_seq_lt(c->snd_nxt, saved))
		c->snd_nxt = saved;
	else if (n <= 0)
		c->snd_nxt = saved;
	if (n < 0 && n != -EAGAIN && !w->err)
		rn_tcp_host_error(w, c, (int)n);
}

/**
 * rn_tcp_probe_tail() - tail loss probe: resend the last frame in flight
 * @w:		worker
 * @c:		flow with data in flight, not in recovery
 *
 * Its acknowledgement (with SACK, or as a duplicate) reveals a loss that no
 * later frame would have, so fast retransmit repairs it instead of the RTO.
 * Only our FIN in flight: the FIN again.
 */
void rn_tcp_probe_tail(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t saved = c->snd_nxt, end, frame, start;
	ssize_t n;

	end = rn_tcp_host_eof(c) ? c->fin_seq : c->snd_max;
	if (!rn_seq_lt(c->snd_una, end)) {
		if (rn_tcp_fin_sent(c) && !rn_tcp_send_fin(w, c))
			c->snd_nxt = saved;
		return;
	}
	frame = rn_tcp_max_frame(c);
	start = end - c->snd_una > frame ? end - frame : c->snd_una;
	c->snd_nxt = start;
	n = rn_tcp_send_data(w, c, end - start);
	c->snd_nxt = saved;
	if (n < 0 && n != -EAGAIN && !w->err)
		rn_tcp_host_error(w, c, (int)n);
}

/**
 * rn_tcp_rto() - the retransmission timer expired (it is cleared already)
 * @w:		worker
 * @c:		flow
 *
 * By state: CONNECTING has the kernel's connect timeout, and only a DNS
 * flow with another upstream left gives up sooner and connects to that;
 * SYN_SENT sends our SYN again, SYN_RCVD the SYN-ACK; a synchronised flow goes back to the
 * oldest unacknowledged byte (data or our FIN), or probes a closed window.
 * Each expiry doubles the timeout; too many in a row reset both sides.
 * The flow may be closed on return.
 */
void rn_tcp_rto(struct rn_worker *w, struct rn_tcp_flow *c)
{
	switch (c->f.state) {
	case RN_TCP_CONNECTING:
		if (c->flags & RN_TCP_F_DNS)
			rn_tcp_connect_done(w, c, ETIMEDOUT);
		return;
	case RN_TCP_SYN_SENT:
		/* Our SYN again; after as many tries as a SYN-ACK gets, the
		 * client is reset */
		if (++c->retries > RN_TCP_SYNACK_RETRIES) {
			rn_flow_end(&c->f, RN_FLOW_END_RETRANSMIT);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
		c->flags &= ~RN_TCP_F_RTT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
		rn_tcp_send_ctl(w, c, RN_TCP_SYN, c->iss);
		c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
		c->rto_at = w->now + c->rto;
		return;
	case RN_TCP_SYN_RCVD:
		if (++c->retries > RN_TCP_SYNACK_RETRIES) {
			rn_flow_end(&c->f, RN_FLOW_END_RETRANSMIT);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
		c->flags &= ~RN_TCP_F_RTT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
		rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
		c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
		c->rto_at = w->now + c->rto;
		return;
	default:
		break;
	}
	if (c->snd_una != c->snd_max) {
		if (++c->retries > RN_TCP_RETRIES) {
			rn_flow_end(&c->f, RN_FLOW_END_RETRANSMIT);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
		/* Go back to the oldest unacknowledged byte */
		rn_ctr_add(w->ctr, RN_WCTR_tcp_rto_expired, 1);
		c->snd_nxt = c->snd_una;
		c->dup_acks = 0;
		c->flags &= ~(RN_TCP_F_RECOVERY | RN_TCP_F_RTT);
		c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
		rn_tcp_push(w, c);
	} else if (!c->snd_wnd && !rn_tcp_host_eof(c)) {
		/* Zero window: an old sequence number makes the peer ACK */
		rn_ctr_add(w->ctr, RN_WCTR_tcp_window_probes, 1);
		rn_tcp_send_ctl(w, c, RN_TCP_ACK, c->snd_una - 1);
		c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
		c->rto_at = w->now + c->rto;
	}
}
