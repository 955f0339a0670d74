/* dgram.c - flows over host datagram sockets: what udp.c and icmp.c share
 *
 * A UDP flow and an echo flow look alike from the worker's side: created by
 * the namespace's first packet after the destination policy (and the
 * on_connect hook, which may hold that packet until its verdict: verdict.c),
 * one non-blocking socket with IP_RECVERR (IPV6_RECVERR) watched for EPOLLIN, an
 * idle timeout, reading paused while ring to_ns has no room, and errors from
 * the socket's error queue reported to the namespace as ICMP errors. The
 * protocol files keep what differs: how datagrams are sent and received, and
 * what the quoted transport header of an error looks like.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "dgram.h"
#include "dns.h"
#include "icmp.h"
#include "ip.h"
#include "policy.h"
#include "verdict.h"

/**
 * rn_dgram_socket() - a non-blocking datagram socket that queues ICMP errors
 * @family:	AF_INET or AF_INET6
 * @icmp:	a ping socket (IPPROTO_ICMP, IPPROTO_ICMPV6) rather than UDP
 *
 * Return: the fd, or negative errno of socket()
 */
int rn_dgram_socket(int family, int icmp)
{
	int fd, one = 1;

	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    !icmp ? 0 : family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
	if (fd < 0)
		return -errno;
	if (family == AF_INET6)
		setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof(one));
	else
		setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof(one));
	return fd;
}

/**
 * rn_dgram_admit() - the checks before a new flow: destination policy, flow cap
 * @w:		worker
 * @f:		the packet (quoted by the ICMP error of a policy refusal)
 * @k:		its flow key
 * @d:		filled with the host destination when admitted
 *
 * Return: 0, the outcome counter that refuses the flow (policy_refused after
 *	   an ICMP error, hook_denied after an administratively prohibited one,
 *	   flows_refused_cap) or holds it (hook_held, hook_absorbed: the on_connect
 *	   hook decides, verdict.c), or negative errno when ring to_ns is corrupted
 */
int rn_dgram_admit(struct rn_worker *w, struct rn_frame *f, const struct rn_flow_key *k,
		   struct rn_policy_dest *d)
{
	int reason, rc, ctr;

	reason = rn_policy_dest(&w->p, rn_dns_current(w), k, d);
	if (reason) {
		rc = rn_icmp_refuse(w, f, rn_icmp_policy_kind(reason));
		return rc < 0 ? rc : RN_WCTR_policy_refused;
	}
	/* The on_connect hook (verdict.c), after the policy: hold, refuse or go on */
	reason = rn_verdict_check(w, f, k, d, &ctr);
	if (reason == RN_VERDICT_WAIT)
		return ctr;
	if (reason == RN_VERDICT_REFUSE) {
		rc = rn_icmp_refuse(w, f, RN_ICMP_ADMIN);
		return rc < 0 ? rc : ctr;
	}
	if (w->flows.count >= w->flows.max)
		return RN_WCTR_flows_refused_cap;
	return 0;
}

/**
 * rn_dgram_create() - create an admitted flow, with its host socket if it has one
 * @w:		worker
 * @k:		flow key
 * @s:		kind of flow
 * @d:		host destination (rn_dgram_admit())
 * @fd:		the flow's own socket, taken over (closed on failure), or -1
 *		for a flow that sends through a socket it shares (udp.c)
 * @out:	set to the new flow (s->size bytes, zeroed but for what is set here)
 *
 * Return: 0, or the outcome counter that refuses the flow (flows_refused_cap,
 *	   flows_refused_fd)
 */
int rn_dgram_create(struct rn_worker *w, const struct rn_flow_key *k,
		    const struct rn_dgram_spec *s, const struct rn_policy_dest *d, int fd,
		    struct rn_dgram_flow **out)
{
	struct rn_dgram_flow *fl;

	fl = calloc(1, s->size);
	if (!fl) {
		if (fd >= 0)
			close(fd);
		return RN_WCTR_flows_refused_fd;
	}
	fl->f.key = *k;
	fl->f.type = s->type;
	fl->f.fd = fd;
	memcpy(&fl->dst, &d->sa, sizeof(d->sa));
	fl->dstlen = d->salen;
	fl->dns = d->dns;
	fl->dns_up = d->dns_up;
	fl->f.rule = d->rule;
	fl->dns_gen = w->dns_gen;
	fl->timeout_ms = s->timeout_ms ? s->timeout_ms : 1;
	if (d->dns && s->dns_timeout_ms && fl->timeout_ms > s->dns_timeout_ms)
		fl->timeout_ms = s->dns_timeout_ms;
	if (rn_worker_flow_add(w, &fl->f)) {
		if (fd >= 0)
			close(fd);
		free(fl);
		return RN_WCTR_flows_refused_cap;
	}
	if (rn_worker_flow_watch(w, &fl->f, EPOLLIN)) {
		rn_worker_flow_close(w, &fl->f);
		return RN_WCTR_flows_refused_fd;
	}
	rn_worker_flow_timer(w, &fl->f, w->now + fl->timeout_ms);
	if (d->dns)
		rn_ctr_add(w->ctr, RN_WCTR_dns_flows, 1);
	*out = fl;
	return 0;
}

/**
 * rn_dgram_open() - create the flow of a packet's key, with its own host socket
 * @w:		worker
 * @f:		the packet (quoted by the ICMP error of a policy refusal)
 * @k:		its flow key
 * @s:		kind of flow
 * @out:	set to the new flow (s->size bytes, zeroed but for what is set here)
 * @sock_err:	set to socket()'s errno when that failed, else 0
 *
 * Return: 0, the outcome counter that refuses the flow (policy_refused after
 *	   an ICMP error, flows_refused_cap, flows_refused_fd), or negative errno
 *	   when ring to_ns is corrupted
 */
int rn_dgram_open(struct rn_worker *w, struct rn_frame *f, const struct rn_flow_key *k,
		  const struct rn_dgram_spec *s, struct rn_dgram_flow **out, int *sock_err)
{
	struct rn_policy_dest d;
	int fd, rc;

	*sock_err = 0;
	rc = rn_dgram_admit(w, f, k, &d);
	if (rc)
		return rc;
	fd = rn_dgram_socket(d.family, s->icmp);
	if (fd < 0) {
		*sock_err = -fd;
		return RN_WCTR_flows_refused_fd;
	}
	return rn_dgram_create(w, k, s, &d, fd, out);
}

/**
 * rn_dgram_pause() - stop reading a flow's socket until ring to_ns has room
 * @w:		worker
 * @f:		flow; ops->room() runs once a largest frame fits
 */
void rn_dgram_pause(struct rn_worker *w, struct rn_flow *f)
{
	rn_worker_flow_watch(w, f, 0);
	rn_worker_wait_room(w, f);
}

/**
 * rn_dgram_resume() - watch a paused flow's socket again (from ops->room())
 * @w:		worker
 * @f:		flow
 *
 * Return: 0, or -1 if epoll refused (the flow is closed then)
 */
int rn_dgram_resume(struct rn_worker *w, struct rn_flow *f)
{
	if (!rn_worker_flow_watch(w, f, EPOLLIN))
		return 0;
	rn_worker_flow_close(w, f);
	return -1;
}

/**
 * rn_dgram_timer() - ops->timer: close the flow once it has been idle long enough
 * @w:		worker
 * @f:		flow (a struct rn_dgram_flow)
 */
void rn_dgram_timer(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_dgram_flow *fl = (struct rn_dgram_flow *)f;

	if (w->now - f->last >= fl->timeout_ms) {
		rn_flow_end(f, RN_FLOW_END_IDLE);
		rn_worker_flow_close(w, f);
	} else {
		rn_worker_flow_timer(w, f, f->last + fl->timeout_ms);
	}
}

/**
 * rn_dgram_errors() - report what a flow's socket error queue holds to the namespace
 * @w:		worker
 * @fl:		flow
 * @hdrlen:	bytes of transport header to put before the returned payload
 * @fix:	fills in that header, or adjusts the payload (the namespace's
 *		identifier back into an echo request), given all @len bytes
 * @take:	if not NULL, sees each error first and may keep it from the
 *		namespace (a DNS flow failing over, udp.c)
 *
 * Return: 0, or -1 if ring to_ns is full (then the flow waits for room) or
 *	   corrupted
 */
int rn_dgram_errors(struct rn_worker *w, struct rn_dgram_flow *fl, uint32_t hdrlen,
		    void (*fix)(const struct rn_flow_key *k, uint8_t *l4, uint32_t len),
		    rn_dgram_take_fn *take)
{
	uint8_t buf[RN_IP6_HDR_LEN + 1280];
	struct rn_icmp_err e;
	uint32_t len;
	int rc;

	for (;;) {
		if (!rn_ring_frames_free(&w->tx, sizeof(buf))) {
			rn_dgram_pause(w, &fl->f);
			return -1;
		}
		rc = rn_icmp_read_err(fl->f.fd, fl->f.key.family, buf + hdrlen,
				      (uint32_t)sizeof(buf) - hdrlen, &len, &e, NULL);
		if (!rc)
			return 0;
		if (rc < 0)
			continue;
		rc = take ? take(w, fl, &e, buf + hdrlen, len) : 0;
		if (rc < 0)
			return -1;
		if (rc)
			continue;
		fix(&fl->f.key, buf, hdrlen + len);
		if (rn_icmp_flow_err(w, &fl->f.key, &e, buf, hdrlen + len) < 0)
			return -1;
	}
}
