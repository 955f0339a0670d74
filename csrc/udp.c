/* udp.c - UDP between the namespace and host sockets: flows, namespace -> host, DNS
 *
 * Theory of operation
 * -------------------
 * A UDP flow is one (source, destination) pair as the namespace sends it
 * (flowtab.h key). The first datagram creates it, after the destination
 * policy (policy.c: the DNS address goes to an upstream resolver, the
 * gateway to host loopback when that is allowed; refusals are answered with
 * an ICMP error, icmp.c).
 *
 * Mapping: endpoint-independent (RFC 4787). The flows of one namespace
 * source address and port share one unconnected host socket, a "port"
 * (struct rn_udp_port), bound by the kernel on the first send and used with
 * sendto() for every destination: the source keeps one host port whoever it
 * talks to, as STUN and peer-to-peer protocols expect, and a namespace
 * sending to many destinations from one socket costs one host port, not one
 * per destination. A port is not in the flow table (so it is not a flow for
 * max_flows, statistics or flows_open_udp) but is watched by the worker's
 * loop like one; it closes with its last flow, and its struct is freed at
 * the next frame intake, when no epoll batch can still name it. A flow to a
 * DNS upstream has a socket of its own instead (failover may move it to an
 * upstream of the other family). Ports are per worker, and so is the
 * mapping, but a UDP flow is owned by the hash of its namespace source
 * (address, port) alone (flow.h), so every flow of one source is in one
 * worker, and the mapping is endpoint-independent across workers. The
 * exception: a fragmented datagram belongs to the worker of its address
 * pair (its later pieces carry no ports), which reassembles it and sends it
 * from its own port for the source, another host port if that worker is
 * not the source's.
 *
 * Filtering: address-dependent (RFC 4787). A datagram on a port is
 * delivered if the source sent to its sender's address: through the flow to
 * exactly that address and port, else through any flow of the port to that
 * address, shown as coming from the port it came from (so that an answer
 * from another port of a server reaches the namespace, whose reply to it is
 * then a flow of its own on the same port). Datagrams from hosts the source
 * never sent to are dropped (host_drops). Endpoint-independent filtering,
 * which slirp4netns has, would make every host port of the namespace an open
 * inbound port for anyone who learns it; address-dependent filtering keeps
 * what the namespace's applications rely on (replies from any port of the
 * peer, hole punching towards peers it sends to first) without that. A DNS
 * flow takes answers from every configured upstream and shows them all as
 * coming from port 53.
 *
 * Budget: ports and DNS flows' sockets together are at most udp_ports per
 * worker (its share of the network's budget, far below the host's
 * ephemeral range, so that a namespace cannot starve the host's own UDP and
 * DNS of ports); beyond it a flow that needs a new socket is refused
 * (flows_refused_ports) while sources that hold a port keep opening flows.
 * Flows also count against max_flows with every other protocol: at the cap
 * new flows are refused (flows_refused_cap) and nothing else changes. A flow
 * closes after udp_timeout_ms without traffic either way
 * (RN_UDP_DNS_TIMEOUT_MS for DNS, whose clients use a port per query).
 * Creation, idle timer, pausing and the error queue are shared with the echo
 * flows of icmp.c (dgram.c).
 *
 * Namespace -> host: rn_udp_input() checks the header (length against the
 * IP length, no port 0, the checksum unless the namespace left it to
 * offload) and queues the payload where it lies, in ring to_worker, which is
 * not released before the end of the intake batch; the namespace can only
 * alter its own data meanwhile (a frame that is not in the ring, such as a
 * reassembled datagram, is sent at once). The flow asks for ops->flush() at
 * the end of the batch (rn_worker_defer()), where rn_udp_flush() sends
 * everything queued: a run of datagrams of one flow goes out in one
 * sendmmsg(), and equal-sized datagrams within it (the last one may be
 * shorter) are merged into one UDP_SEGMENT send, which the host stack
 * handles as one packet as far as it can. A USO frame from the namespace
 * (gso_type UDP_L4) is one UDP_SEGMENT send of gso_size segments. When the
 * kernel refuses segmentation for a flow (EIO, EINVAL: no checksum offload
 * on the route, segment larger than the path MTU), that message and all the
 * flow's later datagrams are sent one by one. A send the host refuses is
 * counted (host_send_errors) and the datagram is lost, as on a wire.
 *
 * Host -> namespace: udp_rx.c reads the flows' sockets and writes their
 * datagrams into ring to_ns (see there).
 *
 * Errors: every socket has IP_RECVERR (IPV6_RECVERR); ICMP errors the host
 * receives for a flow (port unreachable, fragmentation needed or packet too
 * big, ...) become ICMP errors in the namespace (icmp.c) quoting a rebuilt
 * copy of the datagram, so that a connected socket inside sees
 * ECONNREFUSED.
 *
 * DNS failover (dns.c has the rules and does the choosing): a DNS flow
 * follows the worker's current upstream with each query
 * (rn_udp_dns_query()) and, with more than one upstream, has dns.c keep a
 * copy of its queries in flight (rn_dns_keep()). The flow's timer runs at
 * the earlier of its idle deadline and the failover deadline
 * (rn_udp_timer()); an unanswered query (rn_dns_due()), or one an upstream
 * answers with an ICMP unreachable (rn_udp_dns_err(), before
 * rn_dgram_errors() reports it), goes to rn_dns_retry(), which calls back
 * rn_udp_dns_resend() for the upstream it picks: the query is resent from
 * the flow's socket, which is replaced by one of the other family when the
 * upstream's family differs.
 *
 * Per-worker state (struct rn_udp, allocated on first use): the send queue
 * of the current intake batch, the receive buffers and the ports' hash
 * table (SipHash under the worker's key, one chain per port there can be).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checksum.h"
#include "dgram.h"
#include "dns.h"
#include "flowtab.h"
#include "icmp.h"
#include "ip.h"
#include "policy.h"
#include "udp.h"
#include "udp_int.h"

#define RN_UDP_DNS_TIMEOUT_MS	10000u
/* Socket buffers: bursts at 1 Gbit/s wait here while the worker is busy
 * (the kernel caps them at net.core.rmem_max and wmem_max) */
#define RN_UDP_RCVBUF		(4 << 20)
#define RN_UDP_SNDBUF		(1 << 20)

/**
 * rn_udp_state() - the worker's UDP state, allocated on first use
 * @w:		worker
 *
 * Return: the state, or NULL when out of memory
 */
struct rn_udp *rn_udp_state(struct rn_worker *w)
{
	struct rn_udp *u = w->udp;
	uint32_t i, want, n = 16;

	if (u)
		return u;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	/* One chain per port there can be: max_flows, or the budget if smaller */
	want = w->p.max_flows ? w->p.max_flows : 1;
	if (w->p.udp_ports && w->p.udp_ports < want)
		want = w->p.udp_ports;
	while (n < want && n < (1u << 20))
		n <<= 1;
	u->ports = calloc(n, sizeof(*u->ports));
	if (!u->ports) {
		free(u);
		return NULL;
	}
	u->pmask = n - 1;
	u->budget = w->p.udp_ports;
	for (i = 0; i < RN_UDP_RX_BATCH; i++) {
		u->riov[i].iov_base = u->rbuf[i];
		u->riov[i].iov_len = sizeof(u->rbuf[i]);
		u->rmsg[i].msg_hdr.msg_iov = &u->riov[i];
		u->rmsg[i].msg_hdr.msg_iovlen = 1;
		u->rmsg[i].msg_hdr.msg_name = &u->rsa[i];
		u->rmsg[i].msg_hdr.msg_control = u->rcmsg[i].buf;
	}
	w->udp = u;
	return u;
}

/**
 * rn_udp_set_uso() - allow USO frames (gso_type UDP_L4) towards the namespace
 * @w:		worker
 * @on:		the namespace's tun device accepted the USO offloads
 *
 * Sockets of flows created from now on also ask the kernel to coalesce what
 * they receive (UDP_GRO).
 *
 * Return: 0, or -ENOMEM
 */
int rn_udp_set_uso(struct rn_worker *w, int on)
{
	struct rn_udp *u = rn_udp_state(w);

	if (!u)
		return -ENOMEM;
	u->uso = !!on;
	return 0;
}

/**
 * rn_udp_free() - free the worker's UDP state and ports (its flows are closed already)
 * @w:		worker
 */
void rn_udp_free(struct rn_worker *w)
{
	struct rn_udp *u = w->udp;
	struct rn_udp_port *pt;
	uint32_t i;

	if (!u)
		return;
	/* Every flow is closed, so every port is too; free whatever is left */
	for (i = 0; i <= u->pmask; i++) {
		while ((pt = u->ports[i])) {
			u->ports[i] = pt->hnext;
			if (pt->f.fd >= 0)
				close(pt->f.fd);
			free(pt);
		}
	}
	while ((pt = u->closed)) {
		u->closed = pt->hnext;
		free(pt);
	}
	free(u->ports);
	free(u);
	w->udp = NULL;
}

/**
 * rn_udp_csum_ok() - verify the checksum of a datagram
 * @f:		validated UDP frame
 * @uh:		its UDP header (private copy)
 *
 * A checksum left to offload (NEEDS_CSUM) is the namespace kernel's business
 * and passes if it is in its place; any other checksum is verified, also
 * with DATA_VALID (cheap, and a forged destination cannot slip through). The
 * sum runs over the datagram in shared memory: a namespace that changes it
 * meanwhile fools only itself.
 *
 * Return: true if the checksum is right or absent (IPv4 only)
 */
static int rn_udp_csum_ok(const struct rn_frame *f, const uint8_t *uh)
{
	const uint8_t *dgram = f->shm + RN_VNET_HDR_LEN + f->l3len;

	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM)
		return f->vnet.csum_start == f->l3len && f->vnet.csum_offset == 6;
	if (!rn_be16(uh + 6))
		return f->family == 4;
	return !rn_csum(dgram, f->l4len, rn_ip_pseudo(f->family, f->saddr, f->daddr,
						       RN_IPPROTO_UDP, f->l4len));
}

/**
 * rn_udp_sockopts() - the options every UDP flow's host socket gets
 * @w:		worker
 * @fd:		the socket
 */
static void rn_udp_sockopts(struct rn_worker *w, int fd)
{
	int one = 1, rcvbuf = RN_UDP_RCVBUF, sndbuf = RN_UDP_SNDBUF;

	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (w->udp && w->udp->uso)
		setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
}

/**
 * rn_udp_held() - count host UDP sockets taken or given back
 * @w:		worker
 * @u:		UDP state
 * @delta:	+1 or -1
 */
static void rn_udp_held(struct rn_worker *w, struct rn_udp *u, int delta)
{
	u->held += (uint32_t)delta;
	rn_ctr_add(w->ctr, RN_WCTR_udp_ports_open, (uint64_t)(int64_t)delta);
}

/**
 * rn_udp_port_chain() - the hash chain of a namespace source
 * @w:		worker (hash key)
 * @u:		UDP state
 * @k:		a flow key of that source
 *
 * Return: the chain's head pointer
 */
static struct rn_udp_port **rn_udp_port_chain(struct rn_worker *w, struct rn_udp *u,
					      const struct rn_flow_key *k)
{
	uint8_t buf[1 + 16 + 2];
	uint32_t alen = k->family == 6 ? 16 : 4;

	buf[0] = k->family;
	memcpy(buf + 1, k->saddr, alen);
	buf[1 + alen] = (uint8_t)(k->sport >> 8);
	buf[2 + alen] = (uint8_t)k->sport;
	return &u->ports[rn_siphash(w->p.hash_key, buf, 3 + alen) & u->pmask];
}

/**
 * rn_udp_port_find() - the port of a flow key's namespace source
 * @w:		worker
 * @u:		UDP state
 * @k:		flow key
 *
 * Return: the port, or NULL if that source has none
 */
static struct rn_udp_port *rn_udp_port_find(struct rn_worker *w, struct rn_udp *u,
					    const struct rn_flow_key *k)
{
	struct rn_udp_port *pt;

	for (pt = *rn_udp_port_chain(w, u, k); pt; pt = pt->hnext) {
		if (pt->f.key.family == k->family && pt->f.key.sport == k->sport &&
		    !memcmp(pt->f.key.saddr, k->saddr, sizeof(k->saddr)))
			return pt;
	}
	return NULL;
}

/**
 * rn_udp_port_reap() - free the ports closed since the last call
 * @u:		UDP state
 *
 * Only from frame intake: no epoll batch is being dispatched then, so no
 * event still points at them.
 */
static void rn_udp_port_reap(struct rn_udp *u)
{
	struct rn_udp_port *pt;

	while ((pt = u->closed)) {
		u->closed = pt->hnext;
		free(pt);
	}
}

/**
 * rn_udp_port_open() - the host socket for a new namespace source
 * @w:		worker
 * @u:		UDP state
 * @k:		the first flow's key
 * @family:	AF_INET or AF_INET6
 * @out:	set to the port
 *
 * Return: 0, or the outcome counter refusing the flow (flows_refused_ports
 *	   when the budget is spent, flows_refused_fd)
 */
static int rn_udp_port_open(struct rn_worker *w, struct rn_udp *u, const struct rn_flow_key *k,
			    int family, struct rn_udp_port **out)
{
	struct rn_udp_port **chain, *pt;
	int fd;

	if (u->budget && u->held >= u->budget)
		return RN_WCTR_flows_refused_ports;
	pt = calloc(1, sizeof(*pt));
	if (!pt)
		return RN_WCTR_flows_refused_fd;
	fd = rn_dgram_socket(family, 0);
	if (fd < 0) {
		free(pt);
		return RN_WCTR_flows_refused_fd;
	}
	rn_udp_sockopts(w, fd);
	pt->f.type = RN_FLOW_UDP;
	pt->f.fd = fd;
	pt->f.key.family = k->family;
	pt->f.key.proto = k->proto;
	memcpy(pt->f.key.saddr, k->saddr, sizeof(k->saddr));
	pt->f.key.sport = k->sport;
	pt->f.heap_idx = RN_FLOW_NO_HEAP;
	if (rn_worker_flow_watch(w, &pt->f, EPOLLIN)) {
		close(fd);
		free(pt);
		return RN_WCTR_flows_refused_fd;
	}
	chain = rn_udp_port_chain(w, u, k);
	pt->hnext = *chain;
	*chain = pt;
	rn_udp_held(w, u, 1);
	*out = pt;
	return 0;
}

/**
 * rn_udp_port_close() - close a port whose last flow ended
 * @w:		worker
 * @u:		UDP state
 * @pt:		port without flows
 *
 * The socket is closed now (which takes it out of epoll); the struct waits
 * on u->closed, marked closed, for rn_udp_port_reap().
 */
static void rn_udp_port_close(struct rn_worker *w, struct rn_udp *u, struct rn_udp_port *pt)
{
	struct rn_udp_port **pp = rn_udp_port_chain(w, u, &pt->f.key);

	while (*pp && *pp != pt)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = pt->hnext;
	close(pt->f.fd);
	pt->f.fd = -1;
	pt->f.events = 0;
	pt->f.flags |= RN_FLOW_F_CLOSED;
	pt->hnext = u->closed;
	u->closed = pt;
	rn_udp_held(w, u, -1);
}

/**
 * rn_udp_port_unlink() - take a closing flow off its port; close the port if it was the last
 * @w:		worker
 * @fl:		flow being released
 *
 * A paused port whose room waiter this flow was hands the wait to another
 * of its flows (the worker took this one off the room list already).
 */
static void rn_udp_port_unlink(struct rn_worker *w, struct rn_udp_flow *fl)
{
	struct rn_udp_port *pt = fl->port;

	if (!pt)
		return;
	*fl->pprev = fl->pnext;
	if (fl->pnext)
		fl->pnext->pprev = fl->pprev;
	fl->port = NULL;
	pt->nflows--;
	if (!pt->nflows && pt->fwd) {
		/* a forward's socket stays (udp_fwd.c); heard again if paused */
		if (pt->paused && pt->f.fd >= 0) {
			pt->paused = 0;
			pt->waiter = NULL;
			rn_worker_flow_watch(w, &pt->f, EPOLLIN);
		}
		return;
	}
	if (!pt->nflows) {
		rn_udp_port_close(w, w->udp, pt);
		return;
	}
	if (pt->waiter == fl) {
		pt->waiter = pt->flows;
		rn_worker_wait_room(w, &pt->waiter->g.f);
	}
}

/**
 * rn_udp_flow_new() - create the flow for a datagram's key
 * @w:		worker
 * @u:		UDP state
 * @f:		the datagram
 * @k:		its flow key
 * @out:	set to the new flow
 *
 * A flow to a DNS upstream gets a socket of its own (its upstream, and so
 * its family, may change with failover); every other flow sends through
 * the port of its namespace source, opened with its first flow: one host
 * port per source whatever the destinations (endpoint-independent mapping,
 * RFC 4787). Ports and DNS sockets count against the worker's budget.
 *
 * Return: 0, the outcome counter refusing the flow, or negative errno (ring
 *	   corrupted while sending an ICMP error)
 */
static int rn_udp_flow_new(struct rn_worker *w, struct rn_udp *u, struct rn_frame *f,
			   const struct rn_flow_key *k, struct rn_udp_flow **out)
{
	struct rn_dgram_spec spec = {
		.type = RN_FLOW_UDP, .size = sizeof(struct rn_udp_flow),
		.timeout_ms = w->p.udp_timeout_ms, .dns_timeout_ms = RN_UDP_DNS_TIMEOUT_MS,
	};
	struct rn_policy_dest d;
	struct rn_udp_port *pt = NULL;
	struct rn_dgram_flow *g;
	struct rn_udp_flow *fl;
	int rc, fd, opened = 0;

	rc = rn_dgram_admit(w, f, k, &d);
	if (rc)
		return rc;
	if (d.dns) {
		if (u->budget && u->held >= u->budget)
			return RN_WCTR_flows_refused_ports;
		fd = rn_dgram_socket(d.family, 0);
		if (fd < 0)
			return RN_WCTR_flows_refused_fd;
		rn_udp_sockopts(w, fd);
		rc = rn_dgram_create(w, k, &spec, &d, fd, &g);
		if (rc)
			return rc;
		fl = (struct rn_udp_flow *)g;
		fl->own_sock = 1;
		rn_udp_held(w, u, 1);
		*out = fl;
		return 0;
	}

	rn_udp_port_reap(u);
	pt = rn_udp_port_find(w, u, k);
	if (!pt) {
		rc = rn_udp_port_open(w, u, k, d.family, &pt);
		if (rc)
			return rc;
		opened = 1;
	}
	rc = rn_dgram_create(w, k, &spec, &d, -1, &g);
	if (rc) {
		if (opened)
			rn_udp_port_close(w, u, pt);
		return rc;
	}
	fl = (struct rn_udp_flow *)g;
	rn_udp_port_link(pt, fl);
	*out = fl;
	return 0;
}

/**
 * rn_udp_dns_point() - send a DNS flow's datagrams to upstream @d from now on
 * @w:		worker
 * @fl:		DNS flow
 * @d:		the upstream's host address (policy checked)
 *
 * An upstream of the other address family gets a new socket of that
 * family, which replaces the flow's (answers still on their way to the old
 * one are lost with it).
 *
 * Return: 0; -1 if there is no socket for it, nothing changed; -2 if the
 *	   flow had to be closed (epoll refused the new socket)
 */
static int rn_udp_dns_point(struct rn_worker *w, struct rn_udp_flow *fl,
			    const struct rn_policy_dest *d)
{
	struct rn_dgram_flow *g = &fl->g;
	uint32_t events = g->f.events;
	int fd;

	if (d->family != g->dst.ss_family) {
		fd = rn_dgram_socket(d->family, 0);
		if (fd < 0)
			return -1;
		rn_udp_sockopts(w, fd);
		rn_worker_flow_watch(w, &g->f, 0);
		close(g->f.fd);
		g->f.fd = fd;
		fl->no_gso = 0;
		if (events && rn_worker_flow_watch(w, &g->f, events)) {
			rn_worker_flow_close(w, &g->f);
			return -2;
		}
	}
	memcpy(&g->dst, &d->sa, sizeof(d->sa));
	g->dstlen = d->salen;
	g->dns_up = d->dns_up;
	g->dns_gen = w->dns_gen;
	return 0;
}

/**
 * rn_udp_dns_arm() - make the flow's timer run when a kept query is due
 * @w:		worker
 * @fl:		DNS flow
 *
 * The timer keeps the earlier of its deadline (the idle timeout) and the
 * failover deadline of the queries waiting for an answer.
 */
static void rn_udp_dns_arm(struct rn_worker *w, struct rn_udp_flow *fl)
{
	int64_t t = fl->dnsq ? rn_dns_next_deadline(fl->dnsq) : 0;

	if (t && (!fl->g.f.deadline || t < fl->g.f.deadline))
		rn_worker_flow_timer(w, &fl->g.f, t);
}

/**
 * struct rn_udp_resend - what rn_udp_dns_resend() resends, from which flow
 * @fl:		DNS flow
 * @q:		the kept query
 */
struct rn_udp_resend {
	struct rn_udp_flow *fl;
	struct rn_dns_query *q;
};

/**
 * rn_udp_dns_resend() - rn_dns_send_fn: resend a kept query to another upstream
 * @w:		worker
 * @ctx:	struct rn_udp_resend
 * @up:		the upstream
 * @d:		its host address
 *
 * The flow sends there from now on (rn_udp_dns_point()).
 *
 * Return: enum rn_dns_sent
 */
static int rn_udp_dns_resend(struct rn_worker *w, void *ctx, uint32_t up,
			     const struct rn_policy_dest *d)
{
	struct rn_udp_resend *r = ctx;
	struct rn_dgram_flow *g = &r->fl->g;
	int rc = rn_udp_dns_point(w, r->fl, d);

	if (rc)
		return rc == -2 ? RN_DNS_CLOSED : RN_DNS_SKIP;
	if (sendto(g->f.fd, r->q->msg, r->q->len, MSG_DONTWAIT,
		   (const struct sockaddr *)&g->dst, g->dstlen) < 0) {
		rn_ctr_add(w->ctr, RN_WCTR_host_send_errors, 1);
		return RN_DNS_FAILED;
	}
	r->q->sent_at = w->now;
	return RN_DNS_SENT;
}

/**
 * rn_udp_dns_failover() - a query's upstream failed: resend it to another one
 * @w:		worker
 * @fl:		DNS flow
 * @q:		the kept query that failed, or NULL if it was not kept
 *
 * dns.c's rn_dns_retry() decides where it goes; a query that was not kept
 * only makes its upstream stop being the current one.
 *
 * Return: 1 if the query was resent; 0 if not (not kept, every upstream
 *	   tried); -1 if the flow was closed
 */
static int rn_udp_dns_failover(struct rn_worker *w, struct rn_udp_flow *fl,
			       struct rn_dns_query *q)
{
	struct rn_udp_resend r = { .fl = fl, .q = q };

	if (!q) {
		rn_dns_failed(w, fl->g.dns_up, fl->g.dns_gen);
		return 0;
	}
	q->sent_at = 0;
	return rn_dns_retry(w, &q->t, rn_udp_dns_resend, &r);
}

/**
 * rn_udp_dns_err() - rn_dgram_take_fn: an upstream refused a query, try another
 * @w:		worker
 * @g:		flow whose socket had the error
 * @e:		the error
 * @payload:	the datagram it quotes (the query, as far as returned)
 * @len:	its length
 *
 * An error that fails the upstream over (rn_dns_error_fails()) resends the
 * query (rn_udp_dns_failover()); the namespace sees the error only when the
 * query could not be resent.
 *
 * Return: 1 if the query was resent (the error is not reported), 0 to report
 *	   it, -1 if the flow was closed
 */
int rn_udp_dns_err(struct rn_worker *w, struct rn_dgram_flow *g,
		   const struct rn_icmp_err *e, const uint8_t *payload, uint32_t len)
{
	struct rn_udp_flow *fl = (struct rn_udp_flow *)g;
	int rc;

	if (!g->dns || !rn_dns_error_fails(w, e->kind))
		return 0;
	rc = rn_udp_dns_failover(w, fl, fl->dnsq ? rn_dns_find(fl->dnsq, payload, len) : NULL);
	if (rc > 0)
		rn_udp_dns_arm(w, fl);
	return rc;
}

/**
 * rn_udp_dns_query() - a datagram to the DNS address: current upstream, keep a copy
 * @w:		worker
 * @fl:		DNS flow
 * @msg:	the query (payload), before it is sent
 * @len:	its length
 * @gso:	it is a USO frame of several datagrams (never kept)
 *
 * The flow follows the worker's current upstream; the query is kept for a
 * failover (rn_dns_keep()) and the flow's timer set for its deadline.
 *
 * Return: 0, or -1 if the flow was closed
 */
static int rn_udp_dns_query(struct rn_worker *w, struct rn_udp_flow *fl, const uint8_t *msg,
			    uint32_t len, int gso)
{
	int cur = rn_dns_current(w);
	struct rn_policy_dest d;

	if (cur >= 0 && (fl->g.dns_up != cur || fl->g.dns_gen != w->dns_gen) &&
	    !rn_policy_dns(&w->p, cur, &d) && rn_udp_dns_point(w, fl, &d) == -2)
		return -1;
	if (!gso && rn_dns_keep(w, &fl->dnsq, fl->g.dns_up, fl->g.dns_gen, msg, len))
		rn_udp_dns_arm(w, fl);
	return 0;
}

/**
 * rn_udp_input() - take a UDP datagram (or USO frame) from the namespace
 * @w:		worker
 * @f:		validated frame, f->proto UDP
 *
 * Return: the outcome counter, or negative errno (ring corrupted)
 */
int rn_udp_input(struct rn_worker *w, struct rn_frame *f)
{
	int uso = (f->vnet.gso_type & ~RN_VNET_GSO_ECN) == RN_VNET_GSO_UDP_L4;
	struct rn_udp *u = rn_udp_state(w);
	struct rn_udp_flow *fl;
	struct rn_flow_key k;
	const uint8_t *uh, *data;
	struct rn_udp_tx *t;
	uint32_t len;
	uint16_t gso;
	int rc;

	if (f->l4len < RN_UDP_HDR_LEN || !(uh = rn_pkt_get(&f->l4, 0, RN_UDP_HDR_LEN)) ||
	    rn_be16(uh + 4) != f->l4len)
		return RN_WCTR_drop_udp_header;
	if (!rn_be16(uh) || !rn_be16(uh + 2))
		return RN_WCTR_drop_udp_port;
	if (!rn_udp_csum_ok(f, uh))
		return RN_WCTR_drop_udp_csum;
	if (!u)
		return RN_WCTR_flows_refused_fd;

	if (rn_flow_key_parse(w->buf + RN_VNET_HDR_LEN, f->copied - RN_VNET_HDR_LEN, &k))
		return RN_WCTR_drop_udp_header;
	fl = (struct rn_udp_flow *)rn_flowtab_lookup(&w->flows, &k);
	if (!fl) {
		rc = rn_udp_flow_new(w, u, f, &k, &fl);
		if (rc)
			return rc;
	}

	if (u->ntx == RN_WORKER_BATCH)
		rn_udp_flush(w);
	len = f->l4len - RN_UDP_HDR_LEN;
	data = f->shm + RN_VNET_HDR_LEN + f->l3len + RN_UDP_HDR_LEN;
	gso = uso && len > f->vnet.gso_size ? f->vnet.gso_size : 0;
	if (fl->g.dns && rn_udp_dns_query(w, fl, data, len, gso))
		return RN_WCTR_flows_refused_fd;
	t = &u->tx[u->ntx++];
	t->fl = fl;
	t->data = data;
	t->len = len;
	t->gso = gso;
	fl->g.f.last = w->now;
	fl->g.f.bytes_up += len;
	fl->g.f.pkts_up++;
	if (t->data >= w->rx.data && t->data < w->rx.data + w->rx.size)
		rn_worker_defer(w, &fl->g.f);
	else
		rn_udp_flush(w);
	return RN_WCTR_udp_in;
}

/**
 * rn_udp_segment_cmsg() - attach a UDP_SEGMENT control message to a send
 * @mh:		message
 * @c:		control buffer for it
 * @gso:	segment size
 */
static void rn_udp_segment_cmsg(struct msghdr *mh, union rn_udp_cmsg *c, uint16_t gso)
{
	struct cmsghdr *cm = &c->align;

	memset(c, 0, sizeof(*c));
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(gso));
	memcpy(CMSG_DATA(cm), &gso, sizeof(gso));
	mh->msg_control = c->buf;
	mh->msg_controllen = sizeof(c->buf);
}

/**
 * rn_udp_send_split() - send a segmented message's datagrams one by one
 * @w:		worker
 * @fl:		flow
 * @mh:		message whose UDP_SEGMENT the kernel refused
 * @gso:	its segment size
 *
 * Every piece of the message is cut into @gso-sized datagrams (a merged run
 * has one datagram per piece already).
 */
static void rn_udp_send_split(struct rn_worker *w, struct rn_udp_flow *fl,
			      const struct msghdr *mh, uint16_t gso)
{
	uint32_t i, off, n;

	for (i = 0; i < mh->msg_iovlen; i++) {
		const uint8_t *p = mh->msg_iov[i].iov_base;
		uint32_t len = (uint32_t)mh->msg_iov[i].iov_len;

		off = 0;
		do {
			n = len - off < gso ? len - off : gso;
			if (sendto(rn_udp_fd(fl), p + off, n, MSG_DONTWAIT,
				   (const struct sockaddr *)&fl->g.dst, fl->g.dstlen) < 0)
				rn_ctr_add(w->ctr, RN_WCTR_host_send_errors, 1);
			off += n;
		} while (off < len);
	}
}

/**
 * rn_udp_send_run() - send the queued datagrams @from..@to-1 of one flow
 * @w:		worker
 * @u:		UDP state
 * @from:	first queue entry
 * @to:		one past the last entry; all entries in between have one flow
 */
static void rn_udp_send_run(struct rn_worker *w, struct rn_udp *u, uint32_t from, uint32_t to)
{
	struct rn_udp_flow *fl = u->tx[from].fl;
	uint32_t i = from, nmsg = 0, niov = 0, sent = 0, n, total;
	struct rn_udp_tx *t;
	struct msghdr *mh;
	uint16_t gso;
	int rc;

	while (i < to) {
		t = &u->tx[i];
		mh = &u->msg[nmsg].msg_hdr;
		memset(mh, 0, sizeof(*mh));
		mh->msg_name = &fl->g.dst;
		mh->msg_namelen = fl->g.dstlen;
		mh->msg_iov = &u->iov[niov];
		u->iov[niov].iov_base = (void *)t->data;
		u->iov[niov++].iov_len = t->len;
		gso = t->gso;
		n = 1;
		total = t->len;
		/* Merge equal-sized datagrams that follow; a shorter one ends the run */
		while (!gso && !fl->no_gso && t->len && i + n < to && n < RN_UDP_GSO_SEGS &&
		       !u->tx[i + n].gso && u->tx[i + n].len <= t->len && u->tx[i + n].len &&
		       total + u->tx[i + n].len <= RN_UDP_GSO_BYTES) {
			u->iov[niov].iov_base = (void *)u->tx[i + n].data;
			u->iov[niov++].iov_len = u->tx[i + n].len;
			total += u->tx[i + n].len;
			if (u->tx[i + n++].len < t->len)
				break;
		}
		if (n > 1)
			gso = (uint16_t)t->len;
		mh->msg_iovlen = n;
		if (gso && fl->no_gso) {
			rn_udp_send_split(w, fl, mh, gso);
			mh->msg_iovlen = 0;
		} else if (gso) {
			rn_udp_segment_cmsg(mh, &u->cmsg[nmsg], gso);
		}
		u->msg_dgrams[nmsg] = gso ? (total + gso - 1) / gso : 1;
		if (mh->msg_iovlen)
			nmsg++;
		i += n;
	}

	while (sent < nmsg) {
		rc = sendmmsg(rn_udp_fd(fl), &u->msg[sent], nmsg - sent, MSG_DONTWAIT);
		if (rc > 0) {
			for (i = sent; i < sent + (uint32_t)rc; i++) {
				if (u->msg_dgrams[i] > 1)
					rn_ctr_add(w->ctr, RN_WCTR_udp_gso_sends, 1);
			}
			sent += (uint32_t)rc;
			continue;
		}
		if (errno == EINTR)
			continue;
		mh = &u->msg[sent].msg_hdr;
		if (mh->msg_controllen && (errno == EIO || errno == EINVAL ||
					   errno == ENOPROTOOPT || errno == EOPNOTSUPP)) {
			memcpy(&gso, CMSG_DATA(&u->cmsg[sent].align), sizeof(gso));
			fl->no_gso = 1;
			rn_udp_send_split(w, fl, mh, gso);
		} else {
			rn_ctr_add(w->ctr, RN_WCTR_host_send_errors, u->msg_dgrams[sent]);
		}
		sent++;
	}
}

/**
 * rn_udp_flush() - send the datagrams queued during this intake batch
 * @w:		worker
 *
 * Called before ring to_worker is released, while the queued payloads are
 * still there (ops->flush), or at once for a frame that is not in the ring.
 */
void rn_udp_flush(struct rn_worker *w)
{
	struct rn_udp *u = w->udp;
	uint32_t i = 0, j;

	if (!u || !u->ntx)
		return;
	while (i < u->ntx) {
		for (j = i + 1; j < u->ntx && u->tx[j].fl == u->tx[i].fl; j++)
			;
		rn_udp_send_run(w, u, i, j);
		i = j;
	}
	u->ntx = 0;
}

/**
 * rn_udp_defer_flush() - ops->flush: the intake batch is done, send what it queued
 * @w:		worker
 * @f:		a flow that queued datagrams (the whole queue goes, in order)
 */
static void rn_udp_defer_flush(struct rn_worker *w, struct rn_flow *f)
{
	rn_udp_flush(w);
}

/**
 * rn_udp_release() - ops->release: free kept DNS queries, leave the port, drop queued datagrams
 * @w:		worker
 * @f:		flow being closed
 *
 * A flow closes only outside intake (timer, error), when nothing is queued;
 * this keeps the queue safe should that ever change.
 */
static void rn_udp_release(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_udp_flow *fl = (struct rn_udp_flow *)f;
	struct rn_udp *u = w->udp;
	uint32_t i, j;

	free(fl->dnsq);
	fl->dnsq = NULL;
	if (!u)
		return;
	if (fl->own_sock) {
		fl->own_sock = 0;
		rn_udp_held(w, u, -1);
	}
	rn_udp_port_unlink(w, fl);
	for (i = j = 0; i < u->ntx; i++) {
		if (u->tx[i].fl != (struct rn_udp_flow *)f)
			u->tx[j++] = u->tx[i];
	}
	u->ntx = j;
}

/**
 * rn_udp_timer() - ops->timer: DNS failover deadlines, else the idle timeout
 * @w:		worker
 * @f:		flow
 *
 * Kept DNS queries without an answer for RN_DNS_FAILOVER_MS go to the next
 * upstream (rn_udp_dns_failover()); then the idle logic of rn_dgram_timer()
 * closes the flow or re-arms it, and the timer is brought forward to the
 * next failover deadline if one is earlier.
 */
static void rn_udp_timer(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_udp_flow *fl = (struct rn_udp_flow *)f;
	struct rn_dns_query *q;

	while ((q = rn_dns_due(fl->dnsq, w->now))) {
		if (rn_udp_dns_failover(w, fl, q) < 0)
			return;
	}
	rn_dns_forget(&fl->dnsq);
	rn_dgram_timer(w, f);
	if (!(f->flags & RN_FLOW_F_CLOSED))
		rn_udp_dns_arm(w, fl);
}

const struct rn_flow_ops rn_udp_ops = {
	.event = rn_udp_event,
	.timer = rn_udp_timer,
	.room = rn_udp_room,
	.flush = rn_udp_defer_flush,
	.release = rn_udp_release,
};
