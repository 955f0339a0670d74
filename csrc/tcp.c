/* tcp.c - TCP flow termination: namespace connections become host sockets
 *
 * Theory of operation
 * -------------------
 * Each TCP connection the namespace opens is terminated here and re-originated
 * as an ordinary non-blocking host socket: a translation layer, not a TCP
 * stack with buffers of its own. The namespace's Linux TCP is our peer and
 * judges every segment we send; the host kernel's TCP does the rest.
 *
 * This file is the dispatcher: rn_tcp_input() takes a parsed segment
 * (tcp_wire.c) to its flow and handles it by the flow's state, host socket
 * events (rn_tcp_event()) and timers (rn_tcp_timer()) arrive through the flow
 * ops table. The work itself lives beside it, one file per seam (tcp_int.h
 * lists them): tcp_recv.c for namespace -> host, tcp_send.c for host ->
 * namespace, tcp_conn.c for a connection's setup and end.
 *
 * Memory per connection: struct rn_tcp_flow (about 300 bytes), one host
 * socket, and only while needed, hold buffers for bytes the socket refused
 * and bytes after a gap: at most RN_TCP_HOLD_FLOW (4 MiB) per flow and
 * RN_TCP_HOLD_WORKER (64 MiB) for all flows of a worker. The kernel bounds
 * the rest: the socket's send buffer (net.ipv4.tcp_wmem max) holds namespace
 * data not yet sent on, its receive buffer (tcp_rmem max) host data the
 * namespace has not acknowledged.
 *
 * Bad input on a flow (RFC 793, RFC 5961): a RST is accepted only with seq ==
 * rcv_nxt, answered with a challenge ACK inside the window and dropped
 * outside; a SYN on a synchronised flow gets a challenge ACK; an ACK for data
 * never sent is answered with an ACK and dropped. Each case has its own drop
 * counter; a segment for no flow gets a RST (drop_tcp_no_flow).
 *
 * Flow state (struct rn_flow.state) follows enum rn_tcp_state in tcp.h and is
 * derived from the event flags RN_TCP_F_*.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "tcp_int.h"

/**
 * rn_tcp_rst_in() - a RST from the namespace (RFC 5961, 3.2)
 * @w:		worker
 * @c:		flow
 * @s:		the RST
 *
 * Return: the outcome counter
 */
static int rn_tcp_rst_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s)
{
	if (s->seq == c->rcv_nxt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_received, 1);
		rn_tcp_close(w, c, 0, 1);
		return RN_WCTR_tcp_segments_in;
	}
	if (rn_seq_lt(c->rcv_nxt, s->seq) && rn_seq_lt(s->seq, c->rcv_edge) &&
	    !(c->flags & RN_TCP_F_CONNECTING)) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
		rn_tcp_ack_later(w, c);
	}
	return RN_WCTR_drop_tcp_rst;
}

/**
 * rn_tcp_syn_in() - a SYN on an existing flow
 * @w:		worker
 * @c:		flow
 * @k:		its key
 * @s:		the SYN
 *
 * Return: the outcome counter, or a fatal negative errno
 */
static int rn_tcp_syn_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_flow_key *k,
			 const struct rn_tcp_seg *s)
{
	if (!(s->flags & RN_TCP_ACK) && s->seq == c->irs &&
	    !(c->flags & (RN_TCP_F_ESTABLISHED | RN_TCP_F_TIME_WAIT))) {
		/* The namespace repeats its SYN: answer again once connected */
		if (c->flags & RN_TCP_F_SYNACK)
			rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
		return RN_WCTR_tcp_segments_in;
	}
	if (!(s->flags & RN_TCP_ACK) && (c->flags & RN_TCP_F_TIME_WAIT)) {
		/* A new connection reusing the tuple of a finished one */
		rn_worker_flow_close(w, &c->f);
		return rn_tcp_open(w, k, s);
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
	if (c->flags & RN_TCP_F_SYNACK)
		rn_tcp_ack_later(w, c);
	return RN_WCTR_drop_tcp_syn;
}

/**
 * rn_tcp_input() - handle a TCP segment from the namespace
 * @w:		worker
 * @f:		validated frame, f->proto TCP
 *
 * Return: the counter recording what became of the frame, or a negative
 *	   errno when the worker must stop (ring corrupted)
 */
int rn_tcp_input(struct rn_worker *w, struct rn_frame *f)
{
	struct rn_flow_key k;
	struct rn_tcp_flow *c;
	struct rn_tcp_seg s;
	struct rn_flow *fl;
	uint32_t fin_end, wmax, tail;
	int32_t rel;
	int rc;

	rc = rn_tcp_parse(w, f, &s);
	if (rc)
		return rc;

	rn_flow_key_zero(&k);
	k.family = f->family;
	k.proto = RN_IPPROTO_TCP;
	memcpy(k.saddr, f->saddr, f->family == 6 ? 16 : 4);
	memcpy(k.daddr, f->daddr, f->family == 6 ? 16 : 4);
	k.sport = rn_be16(f->l4.p);
	k.dport = rn_be16(f->l4.p + 2);

	fl = rn_flowtab_lookup(&w->flows, &k);
	if (!fl || fl->type != RN_FLOW_TCP) {
		if ((s.flags & (RN_TCP_SYN | RN_TCP_ACK)) == RN_TCP_SYN)
			rc = rn_tcp_open(w, &k, &s);
		else if (s.flags & RN_TCP_RST)
			rc = RN_WCTR_drop_tcp_no_flow;
		else {
			rn_tcp_rst_reply(w, &k, &s);
			rc = RN_WCTR_drop_tcp_no_flow;
		}
		return w->err ? w->err : rc;
	}
	c = rn_tcp_of(fl);
	c->f.last = w->now;

	if (s.flags & RN_TCP_RST)
		rc = rn_tcp_rst_in(w, c, &s);
	else if (s.flags & RN_TCP_SYN)
		rc = rn_tcp_syn_in(w, c, &k, &s);
	else if (c->flags & RN_TCP_F_TIME_WAIT) {
		/* A repeated FIN: ACK it again */
		if (s.flags & RN_TCP_FIN)
			rn_tcp_ack_later(w, c);
		rc = RN_WCTR_tcp_segments_in;
	} else if (!(c->flags & RN_TCP_F_SYNACK)) {
		rc = RN_WCTR_drop_tcp_ack;	/* nothing of ours to acknowledge yet */
	} else if (!(c->flags & RN_TCP_F_ESTABLISHED) && s.ack != c->iss + 1) {
		rn_tcp_rst_key(w, &k, s.ack, 0, 0);
		rc = RN_WCTR_drop_tcp_ack;
	} else {
		if (!(c->flags & RN_TCP_F_ESTABLISHED))
			rn_tcp_established(w, c);
		rc = -1;
	}
	if (rc >= 0 || w->err)
		return w->err ? w->err : rc;
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return RN_WCTR_tcp_segments_in;

	/* Sequence acceptability (RFC 793, 3.3), then ACK, then data; bytes
	 * buffered for the host count as received here */
	tail = c->rcv_nxt + c->ovf_len;
	rel = (int32_t)(s.seq - tail);
	fin_end = s.seq + s.len;
	wmax = 65535u << c->our_ws;
	if (!s.len && !(s.flags & RN_TCP_FIN)) {
		/* A pure ACK is acceptable from rcv_nxt on (the namespace may
		 * have gone back to resend what we buffered); rcv_nxt - 1 is a
		 * window probe or keepalive, answered below */
		rel = (int32_t)(s.seq - c->rcv_nxt);
		if (rel < 0) {
			rn_tcp_ack_later(w, c);
			return RN_WCTR_drop_tcp_old;
		}
	}
	if (rel > 0 || (rel == 0 && !s.len && !(s.flags & RN_TCP_FIN))) {
		if ((uint32_t)rel > wmax) {
			rn_tcp_ack_later(w, c);
			return RN_WCTR_drop_tcp_window;
		}
		rc = rn_tcp_ack_in(w, c, &s);
		if (!rc && !(c->f.flags & RN_FLOW_F_CLOSED) &&
		    (s.len || ((s.flags & RN_TCP_FIN) && rel > 0))) {
			/* After a gap: keep what we can, and ask for the gap with an
			 * immediate duplicate ACK (one per segment, as a receiver
			 * should, so that the namespace retransmits fast) */
			rc = s.len && !(c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND)) &&
			     rn_tcp_ooo_add(w, c, s.seq, s.data, s.len) ?
			     RN_WCTR_tcp_segments_in : RN_WCTR_drop_tcp_ooo;
			rn_tcp_send_ack(w, c);
		}
	} else if (rn_seq_lt(fin_end, tail) ||
		   (fin_end == tail && !((s.flags & RN_TCP_FIN) &&
					 !(c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND))))) {
		/* Old duplicate, or a zero-window probe: answer with an ACK */
		rn_tcp_ack_later(w, c);
		rc = RN_WCTR_drop_tcp_old;
	} else {
		if (rel < 0) {
			s.data += (uint32_t)-rel;
			s.len -= (uint32_t)-rel;
			s.seq = tail;
		}
		rc = rn_tcp_ack_in(w, c, &s);
		if (!rc && !(c->f.flags & RN_FLOW_F_CLOSED)) {
			if (c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND)) {
				rn_tcp_ack_later(w, c);
				rc = s.len ? RN_WCTR_drop_tcp_window : RN_WCTR_tcp_segments_in;
			} else {
				rc = rn_tcp_data_in(w, c, &s, fin_end);
			}
		}
	}
	if (w->err)
		return w->err;
	if (!rc)
		rc = RN_WCTR_tcp_segments_in;
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return rc;
	if (!rn_tcp_check_done(w, c) && (c->flags & RN_TCP_F_MORE))
		rn_worker_defer(w, &c->f);
	return rc;
}

/**
 * rn_tcp_event() - the host socket is ready
 * @w:		worker
 * @fl:		flow
 * @events:	epoll events
 */
static void rn_tcp_event(struct rn_worker *w, struct rn_flow *fl, uint32_t events)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);
	socklen_t sl = sizeof(int);
	int err = 0, i;

	c->f.last = w->now;
	if (c->flags & RN_TCP_F_CONNECTING) {
		if (getsockopt(c->f.fd, SOL_SOCKET, SO_ERROR, &err, &sl))
			err = errno;
		if (!err && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (!err && (events & (EPOLLERR | EPOLLHUP)))
			err = ECONNRESET;
		rn_tcp_connect_done(w, c, err);
		return;
	}
	if (events & EPOLLERR) {
		/* A reset host connection aborts: data not yet passed on is lost,
		 * as it would be on the wire */
		if (getsockopt(c->f.fd, SOL_SOCKET, SO_ERROR, &err, &sl) || err) {
			rn_tcp_host_error(w, c, -err);
			return;
		}
	}
	if ((events & EPOLLOUT) && (c->flags & RN_TCP_F_WANT_OUT)) {
		uint16_t before = rn_tcp_wnd_field(c);

		c->flags &= ~RN_TCP_F_WANT_OUT;
		err = rn_tcp_ovf_drain(w, c);
		if (err) {
			rn_tcp_host_error(w, c, err);
			return;
		}
		rn_tcp_wnd_update(c);
		if (rn_tcp_wnd_field(c) != before || (c->flags & RN_TCP_F_SHORT)) {
			rn_ctr_add(w->ctr, RN_WCTR_tcp_window_updates, 1);
			rn_tcp_send_ack(w, c);
			/* Refused bytes: three duplicates make the namespace resend now */
			for (i = 0; (c->flags & RN_TCP_F_SHORT) && i < RN_TCP_DUPACKS; i++)
				rn_tcp_send_ack(w, c);
			c->flags &= ~RN_TCP_F_SHORT;
		}
		rn_tcp_watch(w, c);
	}
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
		rn_tcp_push(w, c);
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_timer() - retransmission, probe, idle, FIN and TIME_WAIT timeouts
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_timer(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	if (c->end_at && w->now >= c->end_at) {
		if (c->flags & RN_TCP_F_TIME_WAIT) {
			rn_tcp_close(w, c, 0, 0);
			return;
		}
		rn_tcp_end_deadline(w, c);
		if (w->now >= c->end_at) {
			rn_ctr_add(w->ctr, c->closing ? RN_WCTR_tcp_fin_timeouts :
				   RN_WCTR_tcp_idle_timeouts, 1);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
	}
	if (c->tlp_at && w->now >= c->tlp_at) {
		c->tlp_at = 0;
		if ((c->flags & RN_TCP_F_ESTABLISHED) && c->snd_una != c->snd_max &&
		    !(c->flags & RN_TCP_F_RECOVERY)) {
			rn_ctr_add(w->ctr, RN_WCTR_tcp_loss_probes, 1);
			c->flags |= RN_TCP_F_TLP_OUT;
			rn_tcp_probe_tail(w, c);
			if (c->f.flags & RN_FLOW_F_CLOSED)
				return;
		}
	}
	if (c->rto_at && w->now >= c->rto_at) {
		c->rto_at = 0;
		if (c->flags & RN_TCP_F_CONNECTING) {
			/* connect() has its own timeout; only a DNS flow with
			 * another upstream left gives up sooner and tries that */
			if (c->flags & RN_TCP_F_DNS)
				rn_tcp_connect_done(w, c, ETIMEDOUT);
		} else if (!(c->flags & RN_TCP_F_ESTABLISHED)) {
			if (++c->retries > RN_TCP_SYNACK_RETRIES) {
				rn_tcp_close(w, c, 1, 1);
				return;
			}
			c->flags &= ~RN_TCP_F_RTT;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
			rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
			c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
			c->rto_at = w->now + c->rto;
		} else if (c->snd_una != c->snd_max) {
			if (++c->retries > RN_TCP_RETRIES) {
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
		} else if (!c->snd_wnd && !(c->flags & RN_TCP_F_HOST_EOF)) {
			/* Zero window: an old sequence number makes the peer ACK */
			rn_ctr_add(w->ctr, RN_WCTR_tcp_window_probes, 1);
			rn_tcp_send_ctl(w, c, RN_TCP_ACK, c->snd_una - 1);
			c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
			c->rto_at = w->now + c->rto;
		}
		if (c->f.flags & RN_FLOW_F_CLOSED)
			return;
		/* Whatever stopped the resend (closed window, full ring), keep timing */
		if (!c->rto_at && (c->flags & RN_TCP_F_ESTABLISHED) && c->snd_una != c->snd_max)
			c->rto_at = w->now + c->rto;
	}
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_room() - to_ns has room again: pending ACK, then data
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_room(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	if (c->flags & RN_TCP_F_ACK_DUE)
		rn_tcp_send_ack(w, c);
	if (!(c->f.flags & RN_FLOW_F_ROOM_WAIT))
		rn_tcp_push(w, c);
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_flush() - end of a batch: one ACK per flow, continue busy flows
 * @w:		worker
 * @fl:		flow deferred with rn_worker_defer()
 */
static void rn_tcp_flush(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);
	int rc = rn_tcp_discard_upto_una(c);

	if (rc) {
		rn_tcp_host_error(w, c, rc);
		return;
	}
	if (c->flags & RN_TCP_F_MORE)
		rn_tcp_push(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return;
	if (c->flags & (RN_TCP_F_ACK_DUE | RN_TCP_F_ACK_MAYBE)) {
		if (c->f.fd >= 0 && !(c->flags & RN_TCP_F_NS_FIN))
			rn_tcp_wnd_update(c);
		if ((c->flags & RN_TCP_F_ACK_DUE) || c->last_ack != c->rcv_nxt ||
		    c->last_wnd != rn_tcp_wnd_field(c))
			rn_tcp_send_ack(w, c);
		c->flags &= ~RN_TCP_F_ACK_MAYBE;
		if (c->flags & RN_TCP_F_WANT_OUT)
			rn_tcp_watch(w, c);
	}
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_release() - free what a closing flow owns besides its struct and fd
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_release(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	rn_tcp_hold_free(w, c, &c->ovf, &c->ovf_cap);
	c->ovf_len = 0;
	rn_tcp_ooo_free(w, c);
}

/**
 * rn_tcp_free() - free the worker's TCP state (its flows are closed already)
 * @w:		worker
 */
void rn_tcp_free(struct rn_worker *w)
{
	free(w->tcp_discard);
	w->tcp_discard = NULL;
}

const struct rn_flow_ops rn_tcp_ops = {
	.event = rn_tcp_event,
	.timer = rn_tcp_timer,
	.room = rn_tcp_room,
	.flush = rn_tcp_flush,
	.release = rn_tcp_release,
};
