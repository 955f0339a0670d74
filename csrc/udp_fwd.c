/* udp_fwd.c - UDP forwards: a published host UDP port as a UDP port of its own kind
 *
 * Theory of operation
 * -------------------
 * The UDP core (udp.c, udp_rx.c) already has what a UDP forward needs: a
 * *port* is a host socket standing for one namespace source (address,
 * port), and its flows are the (source, destination) pairs that send
 * through it; datagrams read from it go to the flow of their sender, and the
 * namespace's datagrams of a flow leave through it with sendmmsg() to the
 * flow's destination. A forward's socket (bound by Python) is such a port
 * for the namespace source it publishes (the forward's address and port),
 * with two differences, marked by rn_udp_port.fwd:
 *
 * - any sender gets a flow of its own (rn_udp_fwd_flow_new(), called by
 *   udp_rx.c for a sender without one): no filtering, the port is
 *   published. Its key shows the sender as forward.c decides for TCP
 *   (rn_fwd_client_key()): its real address and port, or the gateway
 *   address on a free port (a client on host loopback). This worker owns
 *   the forward's namespace endpoint (rn_worker_forward_add_udp() refuses
 *   it otherwise), and a UDP flow belongs to the owner of its namespace
 *   endpoint (flow.h). So replies from the namespace reach this worker,
 *   find the flow, and leave through the forward's socket towards that
 *   sender alone: one flow per client, each gets only its own replies.
 * - the port is not in the UDP core's table of ports (the namespace's own
 *   datagrams from that source to other destinations still get an ordinary
 *   port, in this worker too) and does not close with its last flow; it closes when the
 *   forward is removed (rn_udp_fwd_close()), ending its flows.
 *
 * Flows expire after udp_timeout idle, as outbound UDP flows do, and count
 * against max_flows; a forward's socket does not count against the UDP port
 * budget (it was opened by the user's request, not by the namespace).
 * Senders are found by a walk of the port's flows (one walk per run of
 * datagrams from one sender): cheap for the few clients a published port
 * usually has.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "forward.h"
#include "policy.h"
#include "udp_int.h"

/**
 * rn_udp_fwd_open() - make a forward's UDP socket a port of the worker
 * @w:		worker
 * @fwd:	forward (family, address, port set), @fwd->udp set on success
 * @fd:		bound UDP socket, non-blocking; the port's on success
 *
 * Return: 0, -ENOMEM, or negative errno of epoll_ctl()
 */
int rn_udp_fwd_open(struct rn_worker *w, struct rn_fwd *fwd, int fd)
{
	struct rn_udp *u = rn_udp_state(w);
	struct rn_udp_port *pt;
	int rc;

	if (!u)
		return -ENOMEM;
	pt = calloc(1, sizeof(*pt));
	if (!pt)
		return -ENOMEM;
	pt->f.type = RN_FLOW_UDP;
	pt->f.fd = fd;
	pt->f.key.family = fwd->family;
	pt->f.key.proto = RN_IPPROTO_UDP;
	memcpy(pt->f.key.saddr, fwd->nsaddr, 16);
	pt->f.key.sport = fwd->nsport;
	pt->f.heap_idx = RN_FLOW_NO_HEAP;
	pt->fwd = fwd;
	rc = rn_worker_flow_watch(w, &pt->f, EPOLLIN);
	if (rc) {
		free(pt);
		return rc;
	}
	fwd->udp = pt;
	return 0;
}

/**
 * rn_udp_fwd_close() - end a UDP forward: its flows, then its socket
 * @w:		worker
 * @fwd:	forward with a UDP port
 *
 * The struct waits on the UDP core's list of closed ports, freed where no
 * epoll batch can still point at it.
 */
void rn_udp_fwd_close(struct rn_worker *w, struct rn_fwd *fwd)
{
	struct rn_udp_port *pt = fwd->udp;
	struct rn_udp *u = w->udp;

	while (pt->flows)
		rn_worker_flow_close(w, &pt->flows->g.f);	/* unlinks it */
	close(pt->f.fd);	/* out of the epoll too */
	pt->f.fd = -1;
	pt->f.events = 0;
	pt->f.flags |= RN_FLOW_F_CLOSED;
	pt->fwd = NULL;
	fwd->udp = NULL;
	if (u) {
		pt->hnext = u->closed;
		u->closed = pt;
	} else {
		free(pt);
	}
}

/**
 * rn_udp_fwd_flow_new() - the flow of a new sender to a forward's socket
 * @w:		worker
 * @pt:		the forward's port
 * @src:	the sender (as recvmmsg() gave it)
 *
 * Return: the flow, or NULL (flow cap, no free gateway port, no memory:
 *	   the datagram is dropped and counted, fwd_udp_refused)
 */
struct rn_udp_flow *rn_udp_fwd_flow_new(struct rn_worker *w, struct rn_udp_port *pt,
					const struct sockaddr_storage *src)
{
	struct rn_dgram_spec spec = {
		.type = RN_FLOW_UDP, .size = sizeof(struct rn_udp_flow),
		.timeout_ms = w->p.udp_timeout_ms,
	};
	struct rn_policy_dest d;
	struct rn_dgram_flow *g;
	struct rn_udp_flow *fl;
	struct rn_flow_key k;

	if (src->ss_family != AF_INET && src->ss_family != AF_INET6)
		goto refuse;
	if (rn_fwd_client_key(w, pt->fwd, RN_IPPROTO_UDP, src, &k) ||
	    rn_flowtab_lookup(&w->flows, &k))
		goto refuse;
	memset(&d, 0, sizeof(d));
	memcpy(&d.sa, src, sizeof(d.sa));
	d.salen = src->ss_family == AF_INET ? sizeof(struct sockaddr_in) :
					      sizeof(struct sockaddr_in6);
	d.family = src->ss_family;
	if (rn_dgram_create(w, &k, &spec, &d, -1, &g))
		goto refuse;
	fl = (struct rn_udp_flow *)g;
	rn_udp_port_link(pt, fl);
	rn_ctr_add(w->ctr, RN_WCTR_fwd_udp_flows, 1);
	return fl;
refuse:
	rn_ctr_add(w->ctr, RN_WCTR_fwd_udp_refused, 1);
	return NULL;
}
