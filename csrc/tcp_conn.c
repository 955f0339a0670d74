/* tcp_conn.c - TCP connection: host socket, connect, DNS retry, open, close, TIME_WAIT
 *
 * Theory of operation
 * -------------------
 * A SYN without a flow is checked (policy.c, then the on_connect hook, which
 * may hold the SYN until its verdict and replay it: verdict.c) and a flow is
 * created (at the max_flows cap, after evicting the oldest TIME_WAIT flow if
 * there is one: RST, flows_refused_cap); a non-blocking connect() starts. The SYN-ACK goes
 * out only once the host connect succeeded (EPOLLOUT, SO_ERROR 0), so a
 * refused connect becomes a RST at once (the application sees ECONNREFUSED),
 * an unreachable destination an ICMP destination unreachable, anything else
 * (timeout...) a RST; a flow to a DNS upstream first connects to the next
 * upstream (rn_tcp_dns_retry(), dns.c), also when the connect has not
 * completed after RN_DNS_FAILOVER_MS while another upstream is left. Options
 * negotiated: MSS (ours from the MTU; theirs caps gso_size), window scaling
 * (shift RN_TCP_WS), SACK-permitted and timestamps (RFC 7323), each only
 * when the namespace offers it. With timestamps every segment carries 12
 * bytes of options, so a segment's payload is the MSS less 12 (the MSS
 * excludes options, RFC 6691) and c->mss says so. Timestamps matter beyond
 * RTT and PAWS here: Linux reuses a tuple it holds in TIME_WAIT for a new
 * connect() only if the old connection had them (tcp_twsk_unique()), so
 * without them a namespace that opens many short connections runs out of
 * ports, or spends its connect()s scanning TIME_WAIT sockets (for an
 * ephemeral port Linux also wants net.ipv4.tcp_tw_reuse=1 inside, which
 * ringnet/_sysctl.py sets in the namespaces ringnet creates: the default
 * reuses only loopback tuples; a bound port needs nothing more). Our TSval is
 * the worker's millisecond clock plus an offset per address pair
 * (rn_tcp_ts_offset()). To host loopback the kernel usually completes the
 * handshake before connect() returns; TCP_INFO then says so and the SYN-ACK
 * goes out in the same pass (tcp_connects_at_once) instead of after an
 * EPOLLOUT round.
 *
 * Active open (inbound port forwarding, forward.c): rn_tcp_connect_ns()
 * takes a host socket the worker accepted and starts a flow in SYN_SENT: our
 * SYN offers MSS, window scaling, SACK-permitted and timestamps, each kept
 * only if the namespace's SYN-ACK offers it too; the SYN is resent on RTO up to
 * RN_TCP_SYNACK_RETRIES times, then the client is reset. The accepted socket
 * is watched only for errors until the SYN-ACK: client bytes wait in it and
 * are pushed once the flow is ESTABLISHED, from where on it is an ordinary
 * flow.
 *
 * Closing: a FIN from the namespace (after all its data was taken) becomes
 * shutdown(SHUT_WR); EOF from the host becomes our FIN once all data before
 * it went out. When both FINs are done and ours is acknowledged, the host
 * socket is closed at once. If the namespace's FIN came last, the flow
 * lingers RN_TCP_TIME_WAIT_MS without a socket, to acknowledge a
 * retransmitted FIN. A RST either way is passed on (to the host by close()
 * with SO_LINGER 0). Timeouts: tcp_idle_timeout_ms without activity,
 * tcp_fin_timeout_ms after the first FIN; both reset both sides.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"
#include "flow.h"
#include "policy.h"
#include "tcp_int.h"
#include "verdict.h"

/**
 * rn_tcp_close() - end a flow, optionally resetting either side
 * @w:		worker
 * @c:		flow
 * @rst_ns:	send a RST to the namespace
 * @rst_host:	reset the host connection (SO_LINGER 0) instead of closing it
 */
void rn_tcp_close(struct rn_worker *w, struct rn_tcp_flow *c, int rst_ns, int rst_host)
{
	/* snd_max: what the namespace most likely expects next (exactly, unless
	 * frames are in flight: then it answers with a challenge ACK, and that
	 * ACK, finding no flow, gets a RST at the exact sequence number) */
	if (rst_ns && c->f.state == RN_TCP_SYN_SENT)
		rn_tcp_rst_key(w, &c->f.key, c->snd_max, 0, 0);	/* nothing to acknowledge */
	else if (rst_ns && c->f.state != RN_TCP_CONNECTING)
		rn_tcp_rst_key(w, &c->f.key, c->snd_max, c->rcv_nxt, 1);
	else if (rst_ns)
		rn_tcp_rst_key(w, &c->f.key, 0, c->rcv_nxt, 1);
	if (rst_host && c->f.fd >= 0) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(c->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		rn_ctr_add(w->ctr, RN_WCTR_tcp_host_resets, 1);
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_closed, 1);
	rn_flow_end(&c->f, rst_ns || rst_host ? RN_FLOW_END_RESET : RN_FLOW_END_FIN);
	c->f.state = RN_TCP_CLOSED;
	rn_worker_flow_close(w, &c->f);
}

/**
 * rn_tcp_time_wait() - entering TIME_WAIT: ACK the namespace's FIN, close the socket
 * @w:		worker
 * @c:		flow just moved to TIME_WAIT (the namespace's FIN came after ours
 *		was acknowledged)
 *
 * The flow lingers RN_TCP_TIME_WAIT_MS without a socket, to acknowledge a
 * retransmitted FIN.
 */
void rn_tcp_time_wait(struct rn_worker *w, struct rn_tcp_flow *c)
{
	/* Unread bytes at close() would make it a reset */
	rn_tcp_discard_upto_una(w, c);
	rn_tcp_send_ack(w, c);
	if (c->f.fd >= 0) {
		close(c->f.fd);
		c->f.fd = -1;
		c->f.events = 0;
	}
	c->flags &= ~(RN_TCP_F_MORE | RN_TCP_F_WANT_OUT);
	c->rto_at = 0;
	c->end_at = w->now + RN_TCP_TIME_WAIT_MS;
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_watch() - register the host socket's events for the flow's state
 * @w:		worker
 * @c:		flow
 *
 * Edge-triggered: EPOLLIN while host data may still come (it is pushed
 * whenever the namespace's window or the ring allows, not only on events),
 * EPOLLOUT while connecting or while waiting for send buffer space.
 */
void rn_tcp_watch(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t ev = EPOLLET;

	if (c->f.fd < 0)
		return;
	if (c->f.state == RN_TCP_CONNECTING) {
		ev |= EPOLLOUT;
	} else if (c->f.state == RN_TCP_SYN_SENT) {
		/* Client data and EOF wait for the handshake: only errors
		 * (EPOLLERR, EPOLLHUP, always reported) */
	} else if (rn_tcp_synced(c)) {
		if (!rn_tcp_host_eof(c))
			ev |= EPOLLIN | EPOLLRDHUP;
		if ((c->flags & RN_TCP_F_WANT_OUT) && !rn_tcp_ns_fin_taken(c))
			ev |= EPOLLOUT;
	}
	if (rn_worker_flow_watch(w, &c->f, ev)) {
		rn_flow_end(&c->f, RN_FLOW_END_ERROR);
		rn_tcp_close(w, c, 1, 1);
	}
}

/**
 * rn_tcp_arm() - set the flow's timer to its nearest deadline
 * @w:		worker
 * @c:		flow
 */
void rn_tcp_arm(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int64_t t = c->rto_at;

	if (c->tlp_at && (!t || c->tlp_at < t))
		t = c->tlp_at;
	if (c->end_at && (!t || c->end_at < t))
		t = c->end_at;
	if (c->dack_at && (!t || c->dack_at < t))
		t = c->dack_at;
	rn_worker_flow_timer(w, &c->f, t);
}

/**
 * rn_tcp_end_deadline() - (re)compute the idle or FIN timeout deadline
 * @w:		worker
 * @c:		flow
 */
void rn_tcp_end_deadline(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (c->f.state == RN_TCP_TIME_WAIT)
		return;
	if (c->closing)
		c->end_at = c->closing + w->p.tcp_fin_timeout_ms;
	else
		c->end_at = c->f.last + w->p.tcp_idle_timeout_ms;
}

/**
 * rn_tcp_host_error() - the host socket failed: reset the namespace side
 * @w:		worker
 * @c:		flow
 * @err:	negative errno
 */
void rn_tcp_host_error(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	if (w->err)
		return;
	(void)err;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_host_errors, 1);
	rn_flow_end(&c->f, RN_FLOW_END_HOST_ERROR);
	rn_tcp_close(w, c, 1, 0);
}

/**
 * rn_tcp_handshake_done() - what both opens do once our SYN or SYN-ACK is acknowledged
 * @w:		worker
 * @c:		flow that has just become ESTABLISHED
 *
 * The handshake's retransmission state ends, its round trip becomes the first
 * RTT sample (if it was timed), and tcp_established counts the connection.
 */
static void rn_tcp_handshake_done(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->retries = 0;
	c->rto_at = 0;
	if (c->flags & RN_TCP_F_RTT) {
		rn_tcp_rtt_sample(c, (uint32_t)(w->now - c->rtt_ts));
		c->flags &= ~RN_TCP_F_RTT;
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_established, 1);
}

/**
 * rn_tcp_established() - the namespace acknowledged our SYN-ACK: SYN_RCVD -> ESTABLISHED
 * @w:		worker
 * @c:		flow in SYN_RCVD
 */
void rn_tcp_established(struct rn_worker *w, struct rn_tcp_flow *c)
{
	rn_tcp_go(c, RN_TCP_EV_ACK);
	c->snd_una = c->iss + 1;
	c->q_head = c->snd_una;
	rn_tcp_handshake_done(w, c);
	rn_tcp_watch(w, c);
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_socket() - a host socket for a flow: non-blocking, no Nagle, peek offset
 * @c:		flow (RN_TCP_F_NO_PEEKOFF follows the new socket)
 * @family:	AF_INET or AF_INET6
 *
 * Return: the fd, or negative errno of socket()
 */
static int rn_tcp_socket(struct rn_tcp_flow *c, int family)
{
	int fd, one = 1, zero = 0;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->flags &= ~RN_TCP_F_NO_PEEKOFF;
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)))
		c->flags |= RN_TCP_F_NO_PEEKOFF;
	return fd;
}

/**
 * rn_tcp_dns_deadline() - give a DNS connect RN_DNS_FAILOVER_MS if another upstream is left
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 *
 * Sets @c->rto_at (the caller arms the timer). With no other upstream the
 * kernel's own connect timeout applies, as for any flow.
 */
static void rn_tcp_dns_deadline(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if ((c->flags & RN_TCP_F_DNS) && rn_dns_try_left(w, &c->dns))
		c->rto_at = w->now + RN_DNS_FAILOVER_MS;
}

/**
 * rn_tcp_dns_connect() - rn_dns_send_fn: connect a new socket to another upstream
 * @w:		worker
 * @ctx:	the flow, in RN_TCP_CONNECTING with RN_TCP_F_DNS
 * @up:		the upstream (dns.c picked it)
 * @d:		its host address
 *
 * The flow's socket is replaced by one of the upstream's family. dns.c
 * counts dns_resends for every upstream this is called for.
 *
 * Return: RN_DNS_SENT (connect under way, or the flow was closed meanwhile),
 *	   RN_DNS_FAILED (the connect failed at once), RN_DNS_STOP (no socket)
 */
static int rn_tcp_dns_connect(struct rn_worker *w, void *ctx, uint32_t up,
			      const struct rn_policy_dest *d)
{
	struct rn_tcp_flow *c = ctx;
	int fd = rn_tcp_socket(c, d->family);

	(void)up;
	if (fd < 0)
		return RN_DNS_STOP;
	rn_worker_flow_watch(w, &c->f, 0);
	close(c->f.fd);
	c->f.fd = fd;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connects, 1);
	if (connect(fd, (const struct sockaddr *)&d->sa, d->salen) && errno != EINPROGRESS) {
		rn_ctr_add(w->ctr, errno == ECONNREFUSED ? RN_WCTR_tcp_connect_refused :
			   RN_WCTR_tcp_connect_failed, 1);
		return RN_DNS_FAILED;
	}
	rn_tcp_watch(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return RN_DNS_SENT;
	c->rto_at = 0;
	rn_tcp_dns_deadline(w, c);
	rn_tcp_arm(w, c);
	return RN_DNS_SENT;
}

/**
 * rn_tcp_dns_retry() - a DNS flow's connect failed: connect to another upstream
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING, with RN_TCP_F_DNS
 *
 * dns.c marks the failed upstream and picks the next one the flow has not
 * tried (rn_dns_retry()); rn_tcp_dns_connect() connects to it.
 *
 * Return: 1 if a connect is under way (or the flow was closed meanwhile),
 *	   0 if no upstream is left (or no socket): the caller refuses the flow
 */
static int rn_tcp_dns_retry(struct rn_worker *w, struct rn_tcp_flow *c)
{
	return rn_dns_retry(w, &c->dns, rn_tcp_dns_connect, c) != 0;
}

/**
 * rn_tcp_connect_done() - the host connect() finished: SYN-ACK, or refuse
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 * @err:	0 on success, else the positive errno of the connect
 *
 * A DNS flow whose connect failed connects to another upstream first, if
 * one is left (rn_tcp_dns_retry()); only then is the namespace told.
 */
void rn_tcp_connect_done(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	int rc;

	if (err) {
		rn_ctr_add(w->ctr, err == ECONNREFUSED ? RN_WCTR_tcp_connect_refused :
			   RN_WCTR_tcp_connect_failed, 1);
		if ((c->flags & RN_TCP_F_DNS) && rn_tcp_dns_retry(w, c))
			return;
		if (err == ENETUNREACH || err == EHOSTUNREACH) {
			rn_tcp_icmp_unreach(w, c, err);
		} else {
			rn_tcp_rst_key(w, &c->f.key, 0, c->rcv_nxt, 1);
		}
		rn_ctr_add(w->ctr, RN_WCTR_tcp_closed, 1);
		rn_tcp_go(c, RN_TCP_EV_ERROR);
		rn_flow_end(&c->f, RN_FLOW_END_CONNECT_FAILED);
		rn_worker_flow_close(w, &c->f);
		return;
	}
	rn_tcp_go(c, RN_TCP_EV_WRITABLE);
	rn_tcp_wnd_update(c);
	c->flags &= ~RN_TCP_F_WANT_OUT;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->flags |= RN_TCP_F_RTT;
	c->rtt_seq = c->iss;
	c->rtt_ts = w->now;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connected, 1);
	rn_tcp_watch(w, c);
	rc = rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
	if (rc && rc != -EAGAIN)
		return;
	/* A SYN-ACK lost to a full ring is sent again by the timer */
	c->rto_at = w->now + c->rto;
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_evict_time_wait() - at the flow cap, end the oldest TIME_WAIT flow
 * @w:		worker
 *
 * A lingering flow holds no socket and must not keep a new connection out.
 * Walks the flows from the oldest: only done at the cap.
 *
 * Return: true if a flow was ended
 */
static int rn_tcp_evict_time_wait(struct rn_worker *w)
{
	struct rn_flow *f;

	for (f = rn_flowtab_first(&w->flows); f; f = rn_flowtab_next(f)) {
		if (f->type == RN_FLOW_TCP && rn_tcp_of(f)->f.state == RN_TCP_TIME_WAIT) {
			rn_tcp_close(w, rn_tcp_of(f), 0, 0);
			return 1;
		}
	}
	return 0;
}

/**
 * rn_tcp_flow_new() - allocate a TCP flow for a key and add it to the flow table
 * @w:		worker
 * @k:		flow key
 * @rule:	struct rn_flow.rule: the egress rule that decided (slot + 1), 0 for
 *		none; set before the flow enters the table, for the flow log's open record
 * @out:	the new flow, without a socket (fd -1), state CLOSED
 *
 * At the max_flows cap the oldest TIME_WAIT flow makes room (one try). Used by
 * both opens: the namespace's SYN (rn_tcp_open()) and a published port's
 * client (rn_tcp_connect_ns()).
 *
 * Return: 0, -ENOMEM, or rn_worker_flow_add()'s -ENOSPC / -EEXIST
 */
static int rn_tcp_flow_new(struct rn_worker *w, const struct rn_flow_key *k, uint32_t rule,
			   struct rn_tcp_flow **out)
{
	struct rn_tcp_flow *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->f.key = *k;
	c->f.type = RN_FLOW_TCP;
	c->f.fd = -1;
	c->f.rule = rule;
	rc = rn_worker_flow_add(w, &c->f);
	if (rc == -ENOSPC && rn_tcp_evict_time_wait(w))
		rc = rn_worker_flow_add(w, &c->f);
	if (rc) {
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

/**
 * rn_tcp_new_isn() - an initial sequence number
 * @w:		worker
 * @c:		flow (its address stirs the fallback)
 *
 * Return: random, or a clock-based value when getrandom() has nothing
 */
static uint32_t rn_tcp_new_isn(struct rn_worker *w, const struct rn_tcp_flow *c)
{
	uint32_t isn;

	if (getrandom(&isn, sizeof(isn), GRND_NONBLOCK) != sizeof(isn))
		isn = (uint32_t)w->now * 2654435761u ^ (uint32_t)(uintptr_t)c;
	return isn;
}

/**
 * rn_tcp_ts_offset() - the offset of our TSval towards one address pair (RFC 7323, 7.1)
 * @w:		worker (its hash key is the secret)
 * @k:		flow key (only the family and the addresses count)
 *
 * A keyed hash of the address pair, as Linux does: the namespace learns
 * nothing about our clock or other pairs, while on one pair our TSval keeps
 * growing from one connection to the next, so that a SYN of ours for a
 * tuple the namespace still holds in TIME_WAIT passes its PAWS check.
 *
 * Return: the offset
 */
uint32_t rn_tcp_ts_offset(const struct rn_worker *w, const struct rn_flow_key *k)
{
	uint8_t in[3 + 32];

	in[0] = 't';
	in[1] = 's';
	in[2] = k->family;
	memcpy(in + 3, k->saddr, 16);
	memcpy(in + 19, k->daddr, 16);
	return (uint32_t)rn_siphash(w->flows.key, in, sizeof(in));
}

/**
 * rn_tcp_ts_start() - timestamps in use on a flow from now on
 * @w:		worker
 * @c:		flow
 * @tsval:	the namespace's TSval in its SYN or SYN-ACK: the first ts_recent
 *
 * c->ts_off must be set already (rn_tcp_ts_offset(): by rn_tcp_open(), or by
 * rn_tcp_connect_ns() for the SYN it sends). Also cuts c->mss (set already)
 * by the option bytes every segment carries.
 */
static void rn_tcp_ts_start(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t tsval)
{
	c->flags |= RN_TCP_F_TS;
	c->ts_recent = tsval;
	c->ts_recent_at = w->now;
	c->mss = (uint16_t)(c->mss - RN_TCP_TS_LEN);
}

/**
 * rn_tcp_connected_now() - whether a non-blocking connect() has completed already
 * @fd:		TCP socket whose connect() returned EINPROGRESS
 *
 * Return: true if the socket is ESTABLISHED (TCP_INFO), false otherwise
 *	   (still connecting, failed, or the kernel would not say)
 */
static int rn_tcp_connected_now(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) || len < 1)
		return 0;
	return ti.tcpi_state == TCP_ESTABLISHED;
}

/**
 * rn_tcp_open() - a SYN for a new flow: policy, cap, socket, connect()
 * @w:		worker
 * @k:		flow key
 * @s:		the SYN
 *
 * The outcome goes to @s->ctr: tcp_segments_in, or the reason the flow was
 * refused (a RST answers the SYN then), or hook_held / hook_absorbed while
 * the on_connect hook decides (verdict.c replays the SYN then).
 *
 * Return: 0, or -EBADMSG when the flow was refused
 */
int rn_tcp_open(struct rn_worker *w, const struct rn_flow_key *k, struct rn_tcp_seg *s)
{
	struct rn_policy_dest d;
	struct rn_tcp_flow *c;
	uint32_t isn;
	int fd, rc, ctr;

	rc = rn_policy_dest(&w->p, rn_dns_current(w), k, &d);
	if (rc) {
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return rn_tcp_drop(s, RN_WCTR_policy_refused);
	}
	/* The on_connect hook (verdict.c), after the policy: hold, refuse or go on */
	rc = rn_verdict_check(w, s->frame, k, &d, &ctr);
	if (rc == RN_VERDICT_WAIT)
		return rn_tcp_drop(s, (unsigned int)ctr);
	if (rc == RN_VERDICT_REFUSE) {
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return rn_tcp_drop(s, (unsigned int)ctr);
	}
	rc = rn_tcp_flow_new(w, k, d.rule, &c);
	if (rc) {
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return rn_tcp_drop(s, rc == -ENOMEM ? RN_WCTR_flows_refused_fd :
				   RN_WCTR_flows_refused_cap);
	}

	fd = rn_tcp_socket(c, d.family);
	if (fd < 0) {
		rn_flow_end(&c->f, RN_FLOW_END_ERROR);
		rn_worker_flow_close(w, &c->f);
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return rn_tcp_drop(s, RN_WCTR_flows_refused_fd);
	}
	c->f.fd = fd;
	if (d.dns) {
		c->flags |= RN_TCP_F_DNS;
		rn_dns_try_start(w, &c->dns, d.dns_up);
	}

	isn = rn_tcp_new_isn(w, c);
	c->iss = isn;
	c->snd_una = c->snd_nxt = c->snd_max = isn;
	c->q_head = isn + 1;	/* host data starts after our SYN */
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->rcv_edge = c->rcv_nxt;
	c->snd_wl1 = s->seq;
	c->snd_wnd = s->wnd;		/* never scaled in a SYN */
	if (s->sack_ok)
		c->flags |= RN_TCP_F_SACK;
	if (s->ws != 0xff) {
		c->flags |= RN_TCP_F_WS;
		c->ns_ws = s->ws;
		c->our_ws = RN_TCP_WS;
	}
	c->mss = (uint16_t)(w->p.mtu - rn_ip_hdr_len(k->family) - RN_TCP_HDR);
	if (!s->mss)
		c->mss = k->family == 6 ? 1220 : 536;
	else if (s->mss < c->mss)
		c->mss = s->mss < 64 ? 64 : s->mss;
	if (s->ts_ok) {
		c->ts_off = rn_tcp_ts_offset(w, k);
		rn_tcp_ts_start(w, c, s->tsval);
	}
	c->rto = RN_TCP_RTO_INIT;
	rn_tcp_go(c, RN_TCP_EV_SYN);	/* CLOSED -> CONNECTING */
	s->ctr = RN_WCTR_tcp_segments_in;
	rn_tcp_end_deadline(w, c);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connects, 1);

	if (connect(fd, (struct sockaddr *)&d.sa, d.salen) && errno != EINPROGRESS) {
		rn_tcp_connect_done(w, c, errno);
		return 0;
	}
	/* To host loopback the handshake is usually over before connect()
	 * returns: answer the SYN in this pass, not after an EPOLLOUT round */
	if (rn_tcp_connected_now(fd)) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_connects_at_once, 1);
		rn_tcp_connect_done(w, c, 0);
		return 0;
	}
	/* Else EPOLLOUT reports the outcome */
	rn_tcp_watch(w, c);
	rn_tcp_dns_deadline(w, c);
	rn_tcp_arm(w, c);
	return 0;
}

/**
 * rn_tcp_connect_ns() - open a connection towards the namespace for a host socket
 * @w:		worker that owns @k (rn_flow_owner_key() == its index)
 * @k:		flow key as the namespace will see it: saddr/sport the namespace's
 *		listening address and port, daddr/dport the client as shown inside
 * @fd:		connected host socket (accepted on a forward), non-blocking;
 *		owned by the flow on success, the caller's on failure
 *
 * The active open of inbound port forwarding (forward.c): the flow starts in
 * SYN_SENT and sends our SYN with MSS, SACK-permitted, window scale and
 * timestamps (TSecr 0); the
 * namespace's SYN-ACK makes it ESTABLISHED (rn_tcp_syn_sent_in(), tcp.c),
 * after which it is an ordinary flow. A flow lingering in TIME_WAIT on the
 * same tuple is replaced.
 *
 * Return: 0, -EEXIST if a live flow has the tuple, -ENOSPC at the flow cap,
 *	   -ENOMEM
 */
int rn_tcp_connect_ns(struct rn_worker *w, const struct rn_flow_key *k, int fd)
{
	struct rn_tcp_flow *c;
	struct rn_flow *old;
	int one = 1, zero = 0, rc;

	old = rn_flowtab_lookup(&w->flows, k);
	if (old && old->type == RN_FLOW_TCP && old->state == RN_TCP_TIME_WAIT)
		rn_tcp_close(w, rn_tcp_of(old), 0, 0);
	else if (old)
		return -EEXIST;
	rc = rn_tcp_flow_new(w, k, 0, &c);
	if (rc)
		return rc;
	c->f.fd = fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)))
		c->flags |= RN_TCP_F_NO_PEEKOFF;
	/* Offered in our SYN; kept only if the SYN-ACK offers them too */
	c->flags |= RN_TCP_F_SACK | RN_TCP_F_WS | RN_TCP_F_TS;
	c->our_ws = RN_TCP_WS;
	c->ts_off = rn_tcp_ts_offset(w, k);
	c->iss = rn_tcp_new_isn(w, c);
	c->snd_una = c->iss;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->q_head = c->iss + 1;
	c->mss = (uint16_t)(w->p.mtu - rn_ip_hdr_len(k->family) - RN_TCP_HDR);
	c->rto = RN_TCP_RTO_INIT;
	/* The SYN's window (never scaled) until the SYN-ACK sets rcv_nxt */
	c->rcv_nxt = 0;
	c->rcv_edge = 65535;
	c->f.state = RN_TCP_SYN_SENT;
	c->f.last = w->now;
	rn_tcp_end_deadline(w, c);
	rn_tcp_watch(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return 0;
	c->flags |= RN_TCP_F_RTT;
	c->rtt_seq = c->iss;
	c->rtt_ts = w->now;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connects, 1);
	/* A SYN lost to a full ring is sent again by the timer */
	rn_tcp_send_ctl(w, c, RN_TCP_SYN, c->iss);
	c->rto_at = w->now + c->rto;
	rn_tcp_arm(w, c);
	return 0;
}

/**
 * rn_tcp_synack_in() - the namespace's SYN-ACK: SYN_SENT -> ESTABLISHED
 * @w:		worker
 * @c:		flow in SYN_SENT
 * @s:		SYN-ACK acknowledging our SYN (ack == iss + 1)
 *
 * Takes the namespace's options (MSS, window scale, SACK-permitted,
 * timestamps: each kept only if both offered it), acknowledges the SYN-ACK
 * and starts the
 * data paths: client bytes that waited in the host socket are pushed at the
 * end of the batch.
 */
void rn_tcp_synack_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s)
{
	rn_tcp_go(c, RN_TCP_EV_SYNACK);
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->rcv_edge = c->rcv_nxt;
	c->snd_una = c->iss + 1;
	c->snd_wnd = s->wnd;		/* never scaled in a SYN */
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	if (!s->sack_ok)
		c->flags &= ~RN_TCP_F_SACK;
	if (s->ws == 0xff) {
		c->flags &= ~RN_TCP_F_WS;
		c->our_ws = 0;
	} else {
		c->ns_ws = s->ws > 14 ? 14 : s->ws;
	}
	if (!s->mss)
		c->mss = c->f.key.family == 6 ? 1220 : 536;
	else if (s->mss < c->mss)
		c->mss = s->mss < 64 ? 64 : s->mss;
	c->flags &= ~RN_TCP_F_TS;
	if (s->ts_ok)
		rn_tcp_ts_start(w, c, s->tsval);
	rn_tcp_handshake_done(w, c);
	rn_tcp_wnd_update(c);
	rn_tcp_send_ack(w, c);
	rn_tcp_watch(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return;
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
	c->flags |= RN_TCP_F_MORE;
	rn_worker_defer(w, &c->f);
}
