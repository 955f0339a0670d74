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
 * (tcp_wire.c) to its flow and handles it by the flow's state; host socket
 * events (rn_tcp_event()) and timers (rn_tcp_timer()) arrive through the flow
 * ops table. The work itself lives beside it, one file per seam (tcp_int.h
 * lists them): tcp_recv.c for namespace -> host, tcp_send.c for host ->
 * namespace, tcp_conn.c for a connection's setup and end.
 *
 * Memory per connection: struct rn_tcp_flow (about 500 bytes), one host
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
 * never sent is answered with an ACK and dropped; on a flow with timestamps
 * (RFC 7323) a segment other than RST or SYN whose TSval is older than the
 * last one taken is answered with an ACK and dropped (PAWS, rn_tcp_ts_in(),
 * before the state's checks: it never moves a flow, so it is no event of the
 * lifecycle table). Each case has its own drop counter; a segment for no flow
 * gets a RST (drop_tcp_no_flow).
 *
 * Lifecycle: the flow's state (struct rn_flow.state, enum rn_tcp_state in
 * tcp.h) is the one record of where a connection is. Input is handled per
 * state: a segment for no flow (CLOSED) opens one or gets a RST; RST and SYN
 * are checked first in every state; CONNECTING has nothing to acknowledge
 * yet; SYN_RCVD needs the ACK of our SYN-ACK, which moves it to ESTABLISHED;
 * SYN_SENT (our active open for a forwarded port) needs the namespace's
 * SYN-ACK (rn_tcp_syn_sent_in());
 * TIME_WAIT only re-acknowledges a FIN; the synchronised states share the
 * sequence, ACK and data checks (rn_tcp_seq_in()). A flow moves only through
 * rn_tcp_go(), which takes the next state from the table in tcp_fsm.c, or
 * ends (rn_tcp_close(): CLOSED); what is not lifecycle (an ACK due, more to send, recovery, an
 * RTT sample, a loss probe out...) stays in pending-work flags RN_TCP_F_*.
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
 * @s:		the RST; its outcome is recorded in @s->ctr
 *
 * Accepted only at rcv_nxt (the flow ends, the host connection is reset);
 * inside the window it gets a challenge ACK once a SYN-ACK went out, outside
 * it is dropped silently.
 */
static void rn_tcp_rst_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s)
{
	if (s->seq == c->rcv_nxt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_received, 1);
		rn_flow_end(&c->f, RN_FLOW_END_NS_RESET);
		rn_tcp_close(w, c, 0, 1);
		s->ctr = RN_WCTR_tcp_segments_in;
		return;
	}
	if (rn_seq_lt(c->rcv_nxt, s->seq) && rn_seq_lt(s->seq, c->rcv_edge) &&
	    c->f.state != RN_TCP_CONNECTING) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
		rn_tcp_ack_later(w, c);
	}
	s->ctr = RN_WCTR_drop_tcp_rst;
}

/**
 * rn_tcp_syn_in() - a SYN on an existing flow
 * @w:		worker
 * @c:		flow
 * @k:		its key
 * @s:		the SYN; its outcome is recorded in @s->ctr
 *
 * A repeated first SYN before the handshake completed is answered with the
 * SYN-ACK once there is one; in TIME_WAIT a SYN starts a new connection on
 * the tuple; anything else gets a challenge ACK (none before our SYN-ACK).
 *
 * Return: 0, or a negative errno from rn_tcp_open()
 */
static int rn_tcp_syn_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_flow_key *k,
			 struct rn_tcp_seg *s)
{
	if (!(s->flags & RN_TCP_ACK) && s->seq == c->irs &&
	    (c->f.state == RN_TCP_CONNECTING || c->f.state == RN_TCP_SYN_RCVD)) {
		/* The namespace repeats its SYN: answer again once connected */
		if (c->f.state == RN_TCP_SYN_RCVD)
			rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
		s->ctr = RN_WCTR_tcp_segments_in;
		return 0;
	}
	if (!(s->flags & RN_TCP_ACK) && c->f.state == RN_TCP_TIME_WAIT) {
		/* A new connection reusing the tuple of a finished one */
		rn_flow_end(&c->f, RN_FLOW_END_FIN);
		c->f.state = RN_TCP_CLOSED;
		rn_worker_flow_close(w, &c->f);
		return rn_tcp_open(w, k, s);
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
	if (c->f.state != RN_TCP_CONNECTING)
		rn_tcp_ack_later(w, c);
	s->ctr = RN_WCTR_drop_tcp_syn;
	return 0;
}

/**
 * rn_tcp_seq_in() - a segment on a synchronised flow: sequence, ACK, then data
 * @w:		worker
 * @c:		flow from ESTABLISHED to LAST_ACK
 * @s:		segment without SYN or RST; its outcome is recorded in @s->ctr
 *
 * Sequence acceptability (RFC 793, 3.3), then the ACK field (tcp_recv.c),
 * then payload and FIN; bytes buffered for the host count as received here.
 */
static void rn_tcp_seq_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s)
{
	uint32_t fin_end, wmax, tail;
	int fin_taken;
	int32_t rel;

	tail = c->rcv_nxt + c->ovf_len;
	rel = (int32_t)(s->seq - tail);
	fin_end = s->seq + s->len;
	wmax = 65535u << c->our_ws;
	/* The namespace's FIN was passed on, or waits behind buffered bytes */
	fin_taken = rn_tcp_ns_fin_taken(c) || (c->flags & RN_TCP_F_FIN_PEND);
	s->ctr = RN_WCTR_tcp_segments_in;
	if (!s->len && !(s->flags & RN_TCP_FIN)) {
		/* A pure ACK is acceptable from rcv_nxt on (the namespace may
		 * have gone back to resend what we buffered); rcv_nxt - 1 is a
		 * window probe or keepalive, answered below */
		rel = (int32_t)(s->seq - c->rcv_nxt);
		if (rel < 0) {
			rn_tcp_ack_later(w, c);
			s->ctr = RN_WCTR_drop_tcp_old;
			return;
		}
	}
	if (rel > 0 || (rel == 0 && !s->len && !(s->flags & RN_TCP_FIN))) {
		if ((uint32_t)rel > wmax) {
			rn_tcp_ack_later(w, c);
			s->ctr = RN_WCTR_drop_tcp_window;
			return;
		}
		if (rn_tcp_ack_in(w, c, s) || (c->f.flags & RN_FLOW_F_CLOSED))
			return;
		if (s->len || ((s->flags & RN_TCP_FIN) && rel > 0)) {
			/* After a gap: keep what we can, and ask for the gap with an
			 * immediate duplicate ACK (one per segment, as a receiver
			 * should, so that the namespace retransmits fast) */
			s->ctr = s->len && !fin_taken && rn_tcp_ooo_add(w, c, s->seq, s->data, s->len) ?
				 RN_WCTR_tcp_segments_in : RN_WCTR_drop_tcp_ooo;
			rn_tcp_send_ack(w, c);
		}
	} else if (rn_seq_lt(fin_end, tail) ||
		   (fin_end == tail && !((s->flags & RN_TCP_FIN) && !fin_taken))) {
		/* Old duplicate, or a zero-window probe: answer with an ACK */
		rn_tcp_ack_later(w, c);
		s->ctr = RN_WCTR_drop_tcp_old;
	} else {
		if (rel < 0) {
			s->data += (uint32_t)-rel;
			s->len -= (uint32_t)-rel;
			s->seq = tail;
		}
		if (rn_tcp_ack_in(w, c, s))
			return;
		if (fin_taken) {
			/* Nothing may follow the namespace's FIN */
			if (!(c->f.flags & RN_FLOW_F_CLOSED))
				rn_tcp_ack_later(w, c);
			s->ctr = s->len ? RN_WCTR_drop_tcp_window : RN_WCTR_tcp_segments_in;
		} else if (!(c->f.flags & RN_FLOW_F_CLOSED)) {
			rn_tcp_data_in(w, c, s, fin_end);
		}
	}
}

/**
 * rn_tcp_synced_in() - a segment without SYN or RST on a synchronised flow
 * @w:		worker
 * @c:		flow from ESTABLISHED to LAST_ACK (closed meanwhile: nothing done)
 * @s:		segment; its outcome is recorded in @s->ctr
 *
 * rn_tcp_seq_in(), then, if the ACK opened room for host data, one more push
 * at the end of the batch.
 */
static void rn_tcp_synced_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s)
{
	s->ctr = RN_WCTR_tcp_segments_in;
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return;
	rn_tcp_seq_in(w, c, s);
	if (!w->err && !(c->f.flags & RN_FLOW_F_CLOSED) && (c->flags & RN_TCP_F_MORE))
		rn_worker_defer(w, &c->f);
}

/**
 * rn_tcp_syn_sent_in() - a segment on a flow in SYN_SENT (our active open)
 * @w:		worker
 * @c:		flow in SYN_SENT
 * @k:		its key
 * @s:		the segment; its outcome is recorded in @s->ctr
 *
 * RFC 793 (SYN-SENT) with RFC 5961: an ACK that does not acknowledge our SYN
 * gets a RST (unless the segment is one); a RST counts only when its ACK
 * acknowledges our SYN (the namespace refused: the client is reset); a
 * SYN-ACK acknowledging our SYN completes the handshake; anything else (a
 * bare SYN: no simultaneous open; segments without SYN) is dropped.
 */
static void rn_tcp_syn_sent_in(struct rn_worker *w, struct rn_tcp_flow *c,
			       const struct rn_flow_key *k, struct rn_tcp_seg *s)
{
	int ack_ok = (s->flags & RN_TCP_ACK) && s->ack == c->iss + 1;

	if ((s->flags & RN_TCP_ACK) && !ack_ok) {
		if (!(s->flags & RN_TCP_RST))
			rn_tcp_rst_key(w, k, s->ack, 0, 0);
		s->ctr = (s->flags & RN_TCP_RST) ? RN_WCTR_drop_tcp_rst : RN_WCTR_drop_tcp_ack;
		return;
	}
	if (s->flags & RN_TCP_RST) {
		if (!ack_ok) {
			s->ctr = RN_WCTR_drop_tcp_rst;
			return;
		}
		rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_received, 1);
		rn_flow_end(&c->f, RN_FLOW_END_NS_RESET);
		rn_tcp_close(w, c, 0, 1);
		s->ctr = RN_WCTR_tcp_segments_in;
		return;
	}
	if (!(s->flags & RN_TCP_SYN)) {
		s->ctr = RN_WCTR_drop_tcp_ack;
		return;
	}
	if (!ack_ok) {
		s->ctr = RN_WCTR_drop_tcp_syn;
		return;
	}
	s->ctr = RN_WCTR_tcp_segments_in;
	rn_tcp_synack_in(w, c, s);
}

/**
 * rn_tcp_no_flow() - a segment that finds no flow (CLOSED)
 * @w:		worker
 * @k:		its key
 * @s:		the segment; its outcome is recorded in @s->ctr
 *
 * A SYN opens a flow; a RST is dropped; anything else is answered with a RST.
 */
static void rn_tcp_no_flow(struct rn_worker *w, const struct rn_flow_key *k, struct rn_tcp_seg *s)
{
	if ((s->flags & (RN_TCP_SYN | RN_TCP_ACK)) == RN_TCP_SYN) {
		rn_tcp_open(w, k, s);
		return;
	}
	if (!(s->flags & RN_TCP_RST))
		rn_tcp_rst_reply(w, k, s);
	s->ctr = RN_WCTR_drop_tcp_no_flow;
}

/**
 * rn_tcp_input() - handle a TCP segment from the namespace
 * @w:		worker
 * @f:		validated frame, f->proto TCP
 *
 * Dispatch by the flow's state (tcp_fsm.c says what each state does with
 * each kind of segment): timestamps (PAWS) first, then RST and SYN, then the
 * ACK of a SYN-ACK completes the handshake, then the sequence checks of a
 * synchronised flow.
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

	if (rn_tcp_parse(w, f, &s))
		return s.ctr;
	s.frame = f;	/* what the on_connect hook holds (verdict.c) */

	rn_flow_key_zero(&k);
	k.family = f->family;
	k.proto = RN_IPPROTO_TCP;
	memcpy(k.saddr, f->saddr, f->family == 6 ? 16 : 4);
	memcpy(k.daddr, f->daddr, f->family == 6 ? 16 : 4);
	k.sport = rn_be16(f->l4.p);
	k.dport = rn_be16(f->l4.p + 2);

	fl = rn_flowtab_lookup(&w->flows, &k);
	if (!fl || fl->type != RN_FLOW_TCP) {
		rn_tcp_no_flow(w, &k, &s);
		return w->err ? w->err : s.ctr;
	}
	c = rn_tcp_of(fl);
	c->f.last = w->now;

	if (c->f.state == RN_TCP_SYN_SENT) {
		rn_tcp_syn_sent_in(w, c, &k, &s);
		return w->err ? w->err : s.ctr;
	}
	/* PAWS and TS.Recent; CONNECTING has not answered the SYN yet */
	if (!(s.flags & (RN_TCP_RST | RN_TCP_SYN)) && c->f.state != RN_TCP_CONNECTING &&
	    rn_tcp_ts_in(w, c, &s))
		return w->err ? w->err : s.ctr;
	if (s.flags & RN_TCP_RST) {
		rn_tcp_rst_in(w, c, &s);
		return w->err ? w->err : s.ctr;
	}
	if (s.flags & RN_TCP_SYN) {
		rn_tcp_syn_in(w, c, &k, &s);
		return w->err ? w->err : s.ctr;
	}
	switch (c->f.state) {
	case RN_TCP_CONNECTING:
		s.ctr = RN_WCTR_drop_tcp_ack;	/* nothing of ours to acknowledge yet */
		break;
	case RN_TCP_SYN_RCVD:
		if (s.ack != c->iss + 1) {
			/* For a connection we do not have */
			rn_tcp_rst_key(w, &k, s.ack, 0, 0);
			s.ctr = RN_WCTR_drop_tcp_ack;
			break;
		}
		rn_tcp_established(w, c);
		rn_tcp_synced_in(w, c, &s);
		break;
	case RN_TCP_TIME_WAIT:
		/* A repeated FIN: ACK it again; anything else is forgotten */
		if (s.flags & RN_TCP_FIN)
			rn_tcp_ack_later(w, c);
		s.ctr = RN_WCTR_tcp_segments_in;
		break;
	default:			/* ESTABLISHED to LAST_ACK */
		rn_tcp_synced_in(w, c, &s);
		break;
	}
	return w->err ? w->err : s.ctr;
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
	if (c->f.state == RN_TCP_CONNECTING) {
		/* EPOLLOUT (writable) or an error: the connect finished */
		if (getsockopt(c->f.fd, SOL_SOCKET, SO_ERROR, &err, &sl))
			err = errno;
		if (!err && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (!err && (events & (EPOLLERR | EPOLLHUP)))
			err = ECONNRESET;
		rn_tcp_connect_done(w, c, err);
		return;
	}
	if (c->f.state == RN_TCP_SYN_SENT) {
		/* Only errors are watched: the client gave up before the
		 * namespace answered */
		if (events & (EPOLLERR | EPOLLHUP))
			rn_tcp_host_error(w, c, -ECONNRESET);
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
	/* Readable or EOF: push finds which (a peek returning 0 is the EOF) */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
		rn_tcp_push(w, c);
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
		if (c->f.state == RN_TCP_TIME_WAIT) {
			rn_tcp_close(w, c, 0, 0);
			return;
		}
		rn_tcp_end_deadline(w, c);
		if (w->now >= c->end_at) {
			rn_ctr_add(w->ctr, c->closing ? RN_WCTR_tcp_fin_timeouts :
				   RN_WCTR_tcp_idle_timeouts, 1);
			rn_flow_end(&c->f, c->closing ? RN_FLOW_END_FIN_TIMEOUT : RN_FLOW_END_IDLE);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
	}
	if (c->dack_at && w->now >= c->dack_at) {
		c->dack_at = 0;
		if (c->last_ack != c->rcv_nxt || c->last_wnd != rn_tcp_wnd_field(c)) {
			rn_ctr_add(w->ctr, RN_WCTR_tcp_delack_timeouts, 1);
			rn_tcp_ack_later(w, c);
		}
	}
	if (c->tlp_at && w->now >= c->tlp_at) {
		c->tlp_at = 0;
		if (rn_tcp_synced(c) && c->snd_una != c->snd_max &&
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
		rn_tcp_rto(w, c);
		if (c->f.flags & RN_FLOW_F_CLOSED)
			return;
		/* Whatever stopped the resend (closed window, full ring), keep timing */
		if (!c->rto_at && rn_tcp_synced(c) && c->snd_una != c->snd_max)
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
}

/**
 * rn_tcp_flush() - end of a batch: one ACK per flow, continue busy flows
 * @w:		worker
 * @fl:		flow deferred with rn_worker_defer()
 */
static void rn_tcp_flush(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);
	int rc = rn_tcp_discard_upto_una(w, c);

	if (rc) {
		rn_tcp_host_error(w, c, rc);
		return;
	}
	if (c->flags & RN_TCP_F_MORE)
		rn_tcp_push(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return;
	if (c->flags & (RN_TCP_F_ACK_DUE | RN_TCP_F_ACK_MAYBE)) {
		if (c->f.fd >= 0 && !rn_tcp_ns_fin_taken(c))
			rn_tcp_wnd_update(c);
		if ((c->flags & RN_TCP_F_ACK_DUE) || ((c->last_ack != c->rcv_nxt ||
		    c->last_wnd != rn_tcp_wnd_field(c)) && !rn_tcp_ack_delay(w, c)))
			rn_tcp_send_ack(w, c);
		c->flags &= ~RN_TCP_F_ACK_MAYBE;
		if (c->flags & RN_TCP_F_WANT_OUT)
			rn_tcp_watch(w, c);
	}
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
