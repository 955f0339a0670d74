/* forward.c - inbound port forwarding through the C core: accept, hand off, open
 *
 * Theory of operation
 * -------------------
 * A forward is a listening host socket that Python created and bound (so
 * errors such as a port in use are Python's to report) and a destination
 * inside the namespace. Every worker gets the same listener (the same open
 * socket: one accept queue) and watches it in its epoll, exclusively
 * (EPOLLEXCLUSIVE), so one worker is woken per connection. The worker that
 * accepts a connection opens it towards the namespace through the tun as an
 * active open (rn_tcp_connect_ns(): SYN_SENT, then an ordinary flow).
 *
 * Which address the namespace sees:
 * - a client on host loopback (127.0.0.0/8, ::1, or an address of the other
 *   family than the destination) appears from the gateway address, as with
 *   pasta; its port is chosen with rn_flow_pick_port() so that the flow
 *   hashes to the accepting worker, and so that it is free in its table;
 * - any other client appears with its real address and port, which the
 *   worker cannot choose: the flow hash (flow.c) names the worker the
 *   namespace's replies go to (the pump routes them by it), so a worker that
 *   accepted a connection it does not own hands the accepted socket to the
 *   owner: each worker has a handoff socket (a SOCK_DGRAM socketpair per
 *   forward and worker, made by Python), and the accepted fd travels as
 *   SCM_RIGHTS to the owner's, which opens the flow. One hop at most: the
 *   owner computes the same hash. With one worker nothing is ever handed off.
 *
 * When the worker has a splice socket (the default), a client on host
 * loopback takes the splice route instead (splice.c): a socket connected
 * inside the namespace by the namespace child, relayed with splice(); it
 * never reaches the C core, and the namespace sees it from its own
 * loopback.
 *
 * A connection that cannot get a flow (flow cap, tuple busy, no memory) is
 * reset (SO_LINGER 0) and counted (fwd_refused).
 *
 * A UDP forward (rn_worker_forward_add_udp()) is served by one worker: the
 * one that owns the forward's namespace address and port, since a UDP flow
 * belongs to the worker of its namespace endpoint (flow.h), and every flow
 * of the forward has that endpoint; Python picks that worker
 * (_publish.py) and the worker refuses a forward it does not own. Its
 * socket is a UDP port of its own kind (udp_fwd.c), and each sender gets a
 * flow, keyed as above (rn_fwd_client_key()): its real address, or the
 * gateway's (loopback clients). Removing a forward closes its sockets;
 * connections already accepted go on as ordinary flows.
 *
 * The listener and the handoff socket are in the worker's epoll with
 * epoll_data pointing at a struct rn_flow header of type RN_FLOW_FWD that is
 * never in the flow table; rn_fwd_ops.event() is their hook.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forward.h"
#include "splice.h"
#include "tcp.h"

#define RN_FWD_LISTENER	0
#define RN_FWD_HANDOFF	1

/**
 * rn_fwd_of() - the forward an epoll header belongs to
 * @f:		&fwd->lis or &fwd->hand
 *
 * Return: the forward
 */
static struct rn_fwd *rn_fwd_of(struct rn_flow *f)
{
	if (f->state == RN_FWD_HANDOFF)
		return (struct rn_fwd *)((char *)f - offsetof(struct rn_fwd, hand));
	return (struct rn_fwd *)((char *)f - offsetof(struct rn_fwd, lis));
}

/**
 * rn_fwd_reset() - refuse an accepted connection: the client sees a reset
 * @w:		worker
 * @fd:		accepted socket, closed here
 */
static void rn_fwd_reset(struct rn_worker *w, int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	rn_ctr_add(w->ctr, RN_WCTR_fwd_refused, 1);
}

/**
 * rn_fwd_real_addr() - the client's address as the namespace may see it
 * @fwd:	forward
 * @ss:		the client's address (getpeername())
 * @addr:	set to the address (network order, @fwd->family's length)
 * @port:	set to the port, host order
 *
 * Return: true if the client keeps its real address: same family as the
 *	   destination (an IPv4-mapped IPv6 address counts as IPv4), and not
 *	   host loopback
 */
static int rn_fwd_real_addr(const struct rn_fwd *fwd, const struct sockaddr_storage *ss,
			    uint8_t *addr, uint16_t *port)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t lo6[16] = { [15] = 1 };
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	const uint8_t *a;

	if (ss->ss_family == AF_INET) {
		a = (const uint8_t *)&s4->sin_addr;
		*port = ntohs(s4->sin_port);
		if (fwd->family != 4 || a[0] == 127)
			return 0;
		memcpy(addr, a, 4);
		return 1;
	}
	if (ss->ss_family != AF_INET6)
		return 0;
	a = (const uint8_t *)&s6->sin6_addr;
	*port = ntohs(s6->sin6_port);
	if (!memcmp(a, mapped, 12)) {
		if (fwd->family != 4 || a[12] == 127)
			return 0;
		memcpy(addr, a + 12, 4);
		return 1;
	}
	if (fwd->family != 6 || !memcmp(a, lo6, 16))
		return 0;
	memcpy(addr, a, 16);
	return 1;
}

/**
 * rn_fwd_ns_key() - start a forward's flow key: its namespace side
 * @k:		set: zeroed, then family, proto and the namespace side
 * @family:	4 or 6
 * @proto:	RN_IPPROTO_TCP or RN_IPPROTO_UDP
 * @nsaddr:	namespace address, network order (4 or 16 bytes)
 * @nsport:	namespace port
 */
static void rn_fwd_ns_key(struct rn_flow_key *k, uint8_t family, uint8_t proto,
			  const uint8_t *nsaddr, uint16_t nsport)
{
	rn_flow_key_zero(k);
	k->family = family;
	k->proto = proto;
	memcpy(k->saddr, nsaddr, family == 6 ? 16 : 4);
	k->sport = nsport;
}

/**
 * rn_fwd_owner() - the worker that owns the flow @k, as the pump routes it (flow.h)
 * @w:		worker (its hash key and worker count)
 * @k:		flow key as seen from the namespace
 *
 * Return: worker index
 */
static uint32_t rn_fwd_owner(const struct rn_worker *w, const struct rn_flow_key *k)
{
	return rn_flow_owner_key(w->p.hash_key, w->p.nworkers ? w->p.nworkers : 1, k);
}

/**
 * rn_fwd_gw_key() - show the client from the gateway, on a port this worker owns
 * @w:		worker
 * @k:		key with the namespace side set; daddr/dport are filled
 *
 * For a UDP key any free port will do if this worker owns the namespace
 * endpoint, and none will if not (flow.h: UDP is owned by that endpoint).
 *
 * Return: 0, or -EADDRNOTAVAIL if no free port hashes to this worker
 */
static int rn_fwd_gw_key(struct rn_worker *w, struct rn_flow_key *k)
{
	uint16_t start;
	int port, tries;

	memcpy(k->daddr, k->family == 6 ? w->p.gw6 : w->p.gw4, k->family == 6 ? 16 : 4);
	if (getrandom(&start, sizeof(start), GRND_NONBLOCK) != sizeof(start))
		start = (uint16_t)w->now;
	for (tries = 0; tries < 64; tries++) {
		port = rn_flow_pick_port(w->p.hash_key, w->p.nworkers ? w->p.nworkers : 1,
					 w->p.index, k, 1024, 65535, start);
		if (port < 0)
			return port;
		if (!rn_flowtab_lookup(&w->flows, k))
			return 0;
		start = (uint16_t)(port + 1);
	}
	return -EADDRNOTAVAIL;
}

/**
 * rn_fwd_client_key() - the flow key a forward's client gets: who the namespace sees
 * @w:		worker
 * @fwd:	forward
 * @proto:	RN_IPPROTO_TCP or RN_IPPROTO_UDP
 * @ss:		the client's address
 * @k:		set to the key (namespace side: the forward's address and port)
 *
 * The client's real address and port when it keeps them (rn_fwd_real_addr())
 * and the flow hashes to this worker; else the gateway address on a port
 * that hashes here (UDP forwards have no handoff: one worker serves each,
 * the owner of the forward's namespace endpoint, which owns every flow of
 * it whoever the client is).
 *
 * Return: 0, or -EADDRNOTAVAIL
 */
int rn_fwd_client_key(struct rn_worker *w, const struct rn_fwd *fwd, uint8_t proto,
		      const struct sockaddr_storage *ss, struct rn_flow_key *k)
{
	rn_fwd_ns_key(k, fwd->family, proto, fwd->nsaddr, fwd->nsport);
	if (rn_fwd_real_addr(fwd, ss, k->daddr, &k->dport) && rn_fwd_owner(w, k) == w->p.index)
		return 0;
	memset(k->daddr, 0, sizeof(k->daddr));
	return rn_fwd_gw_key(w, k);
}

/**
 * rn_fwd_handoff() - pass an accepted socket to the worker that owns its flow
 * @w:		worker
 * @fwd:	forward
 * @owner:	that worker's index
 * @fd:		accepted socket, closed here (sent or refused)
 */
static void rn_fwd_handoff(struct rn_worker *w, struct rn_fwd *fwd, uint32_t owner, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	char one = 'F';
	struct iovec iov = { .iov_base = &one, .iov_len = 1 };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cm.buf, .msg_controllen = sizeof(cm.buf),
	};
	struct cmsghdr *c;

	memset(&cm, 0, sizeof(cm));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(fwd->out[owner], &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != 1) {
		rn_fwd_reset(w, fd);
		return;
	}
	close(fd);
	rn_ctr_add(w->ctr, RN_WCTR_fwd_handoffs, 1);
}

/**
 * rn_fwd_take() - open the flow for an accepted connection, or hand it over
 * @w:		worker
 * @fwd:	forward
 * @fd:		accepted socket, non-blocking; the flow's, handed off or closed
 * @may_hand:	false for a socket another worker handed over (it is ours)
 */
static void rn_fwd_take(struct rn_worker *w, struct rn_fwd *fwd, int fd, int may_hand)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct rn_flow_key k;
	uint32_t owner;
	int rc;

	rn_fwd_ns_key(&k, fwd->family, RN_IPPROTO_TCP, fwd->nsaddr, fwd->nsport);
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &sl)) {
		close(fd);	/* gone already */
		return;
	}
	if (w->splice && rn_splice_local(&ss)) {
		/* host-local client: socket to socket (splice.c) */
		if (rn_splice_start(w, fd, &ss, fwd->family, fwd->nsaddr, fwd->nsport))
			rn_fwd_reset(w, fd);
		return;
	}
	if (rn_fwd_real_addr(fwd, &ss, k.daddr, &k.dport)) {
		owner = rn_fwd_owner(w, &k);
		if (owner != w->p.index) {
			if (may_hand && owner < fwd->nout && fwd->out[owner] >= 0) {
				rn_fwd_handoff(w, fwd, owner, fd);
				return;
			}
			/* No way to the owner: the gateway address, then */
			memset(k.daddr, 0, sizeof(k.daddr));
			rc = rn_fwd_gw_key(w, &k);
			if (rc) {
				rn_fwd_reset(w, fd);
				return;
			}
		}
	} else if (rn_fwd_gw_key(w, &k)) {
		rn_fwd_reset(w, fd);
		return;
	}
	rc = rn_tcp_connect_ns(w, &k, fd);
	if (rc)
		rn_fwd_reset(w, fd);
}

/**
 * rn_fwd_accept() - accept what the listener has queued (a batch at most)
 * @w:		worker
 * @fwd:	forward
 *
 * Another worker may take a connection first (EAGAIN): that is fine.
 */
static void rn_fwd_accept(struct rn_worker *w, struct rn_fwd *fwd)
{
	int i, fd;

	for (i = 0; i < RN_FWD_ACCEPT_BATCH && !w->err; i++) {
		fd = accept4(fwd->lis.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == ECONNABORTED || errno == EINTR)
				continue;
			return;		/* EAGAIN, or out of fds: the queue keeps it */
		}
		rn_ctr_add(w->ctr, RN_WCTR_fwd_accepted, 1);
		rn_fwd_take(w, fwd, fd, 1);
	}
}

/**
 * rn_fwd_receive() - take the sockets other workers handed to this one
 * @w:		worker
 * @fwd:	forward
 *
 * Anything but one fd in SCM_RIGHTS is discarded (fds closed).
 */
static void rn_fwd_receive(struct rn_worker *w, struct rn_fwd *fwd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} cm;
	struct cmsghdr *c;
	struct msghdr mh;
	struct iovec iov;
	char byte;
	int i, n, fd, nfd;

	for (i = 0; i < RN_FWD_ACCEPT_BATCH && !w->err; i++) {
		iov.iov_base = &byte;
		iov.iov_len = 1;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		if (recvmsg(fwd->hand.fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
			return;
		nfd = 0;
		fd = -1;
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			for (n = 0; (size_t)n < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); n++) {
				int got;

				memcpy(&got, CMSG_DATA(c) + n * sizeof(int), sizeof(int));
				if (!nfd++)
					fd = got;
				else
					close(got);
			}
		}
		if (fd < 0)
			continue;
		if (nfd != 1 || (mh.msg_flags & MSG_CTRUNC)) {
			close(fd);
			continue;
		}
		rn_fwd_take(w, fwd, fd, 0);
	}
}

/**
 * rn_fwd_event() - a forward's listener or handoff socket is readable
 * @w:		worker
 * @f:		&fwd->lis or &fwd->hand
 * @events:	epoll events
 */
static void rn_fwd_event(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	struct rn_fwd *fwd = rn_fwd_of(f);

	(void)events;
	if (f->state == RN_FWD_HANDOFF)
		rn_fwd_receive(w, fwd);
	else
		rn_fwd_accept(w, fwd);
}

const struct rn_flow_ops rn_fwd_ops = {
	.event = rn_fwd_event,
};

/**
 * rn_fwd_watch() - put one of a forward's sockets into the worker's epoll
 * @w:		worker
 * @f:		&fwd->lis or &fwd->hand, fd set
 * @events:	epoll events
 *
 * Return: 0, or negative errno from epoll_ctl()
 */
static int rn_fwd_watch(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = f };

	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, f->fd, &ev))
		return -errno;
	f->events = events;
	return 0;
}

/**
 * rn_fwd_close() - close a forward's sockets and free it (it is off the list)
 * @w:		worker
 * @fwd:	forward
 */
static void rn_fwd_close(struct rn_worker *w, struct rn_fwd *fwd)
{
	uint32_t i;

	if (fwd->udp)
		rn_udp_fwd_close(w, fwd);

	if (fwd->lis.fd >= 0) {
		if (fwd->lis.events)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, fwd->lis.fd, NULL);
		close(fwd->lis.fd);
	}
	if (fwd->hand.fd >= 0) {
		if (fwd->hand.events)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, fwd->hand.fd, NULL);
		close(fwd->hand.fd);
	}
	for (i = 0; i < fwd->nout; i++) {
		if (fwd->out[i] >= 0)
			close(fwd->out[i]);
	}
	free(fwd);
}

/**
 * rn_fwd_new() - check a new forward's common arguments and allocate it
 * @w:		worker
 * @id:		forward id, unique among this worker's forwards
 * @fd:		the forward's host socket (listener or UDP socket)
 * @family:	4 or 6: family of @nsaddr
 * @nsaddr:	namespace destination address, network order (4 or 16 bytes)
 * @nsport:	namespace destination port, host order, not 0
 * @out:	set to the new forward (zeroed but for id, family, nsaddr,
 *		nsport and the flow types), not yet linked into @w
 *
 * Shared by rn_worker_forward_add() and rn_worker_forward_add_udp().
 *
 * Return: 0, -EINVAL for bad arguments, -EEXIST for a taken id, or -ENOMEM
 */
static int rn_fwd_new(struct rn_worker *w, uint32_t id, int fd, uint8_t family,
		      const uint8_t *nsaddr, uint16_t nsport, struct rn_fwd **out)
{
	struct rn_fwd *fwd;

	if (!w || fd < 0 || !nsaddr || !nsport || (family != 4 && family != 6))
		return -EINVAL;
	for (fwd = w->fwd; fwd; fwd = fwd->next) {
		if (fwd->id == id)
			return -EEXIST;
	}
	fwd = calloc(1, sizeof(*fwd));
	if (!fwd)
		return -ENOMEM;
	fwd->id = id;
	fwd->family = family;
	memcpy(fwd->nsaddr, nsaddr, family == 6 ? 16 : 4);
	fwd->nsport = nsport;
	fwd->lis.type = fwd->hand.type = RN_FLOW_FWD;
	*out = fwd;
	return 0;
}

/**
 * rn_worker_forward_add() - start accepting on a forwarded host port
 * @w:		worker
 * @id:		forward id, unique among this worker's forwards
 * @lfd:	listening TCP socket (bound, listen() called), non-blocking
 * @family:	4 or 6: family of @nsaddr
 * @nsaddr:	namespace destination address, network order (4 or 16 bytes)
 * @nsport:	namespace destination port, host order, not 0
 * @hand_in:	this worker's handoff socket (SOCK_DGRAM), or -1
 * @hand_out:	handoff sockets towards each worker by index, -1 for none
 *		(ours included), or NULL
 * @nout:	entries in @hand_out, at most RN_FWD_WORKERS_MAX
 *
 * On success the worker owns every fd passed (closed by
 * rn_worker_forward_del() or rn_worker_free()); on failure the caller
 * keeps them.
 *
 * Return: 0, -EINVAL for bad arguments, -EEXIST for a taken id, -ENOMEM, or
 *	   negative errno from epoll_ctl()
 */
int rn_worker_forward_add(struct rn_worker *w, uint32_t id, int lfd, uint8_t family,
			  const uint8_t *nsaddr, uint16_t nsport, int hand_in,
			  const int *hand_out, uint32_t nout)
{
	struct rn_fwd *fwd;
	uint32_t i;
	int rc;

	if (nout > RN_FWD_WORKERS_MAX || (nout && !hand_out))
		return -EINVAL;
	rc = rn_fwd_new(w, id, lfd, family, nsaddr, nsport, &fwd);
	if (rc)
		return rc;
	fwd->lis.state = RN_FWD_LISTENER;
	fwd->hand.state = RN_FWD_HANDOFF;
	fwd->lis.fd = lfd;
	fwd->hand.fd = hand_in;
	rc = rn_fwd_watch(w, &fwd->lis, EPOLLIN | EPOLLEXCLUSIVE);
	if (!rc && hand_in >= 0)
		rc = rn_fwd_watch(w, &fwd->hand, EPOLLIN);
	if (rc) {
		if (fwd->lis.events)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, lfd, NULL);
		free(fwd);
		return rc;
	}
	fwd->nout = nout;
	for (i = 0; i < nout; i++)
		fwd->out[i] = hand_out[i];
	fwd->next = w->fwd;
	w->fwd = fwd;
	rn_splice_prime(w);	/* the first stock, before the first client */
	return 0;
}

/**
 * rn_worker_forward_add_udp() - start serving a forwarded UDP host port
 * @w:		worker
 * @id:		forward id, unique among this worker's forwards
 * @fd:		bound UDP socket, non-blocking
 * @family:	4 or 6: family of @nsaddr
 * @nsaddr:	namespace destination address, network order (4 or 16 bytes)
 * @nsport:	namespace destination port, host order, not 0
 *
 * One worker serves a UDP forward (no handoff: a datagram cannot be passed
 * on as a connection can): the owner of the namespace endpoint
 * (@nsaddr, @nsport), to which every flow of the forward belongs whoever
 * its client is (flow.h). On success the worker owns @fd; on failure the
 * caller keeps it.
 *
 * Return: 0, -EINVAL for bad arguments, -EXDEV if another worker owns the
 *	   endpoint, -EEXIST for a taken id, -ENOMEM, or negative errno from
 *	   epoll_ctl()
 */
int rn_worker_forward_add_udp(struct rn_worker *w, uint32_t id, int fd, uint8_t family,
			      const uint8_t *nsaddr, uint16_t nsport)
{
	struct rn_flow_key k;
	struct rn_fwd *fwd;
	int rc;

	if (!w || !nsaddr || !nsport || (family != 4 && family != 6))
		return -EINVAL;
	rn_fwd_ns_key(&k, family, RN_IPPROTO_UDP, nsaddr, nsport);
	if (rn_fwd_owner(w, &k) != w->p.index)
		return -EXDEV;
	rc = rn_fwd_new(w, id, fd, family, nsaddr, nsport, &fwd);
	if (rc)
		return rc;
	fwd->lis.fd = fwd->hand.fd = -1;
	rc = rn_udp_fwd_open(w, fwd, fd);
	if (rc) {
		free(fwd);
		return rc;
	}
	fwd->next = w->fwd;
	w->fwd = fwd;
	return 0;
}

/**
 * rn_worker_forward_del() - stop accepting on a forward and close its sockets
 * @w:		worker, not inside rn_worker_run()
 * @id:		forward id
 *
 * Connections accepted already stay, as ordinary flows.
 *
 * Return: 0, or -ENOENT for an unknown id
 */
int rn_worker_forward_del(struct rn_worker *w, uint32_t id)
{
	struct rn_fwd **pp, *fwd;

	for (pp = &w->fwd; (fwd = *pp); pp = &fwd->next) {
		if (fwd->id == id) {
			*pp = fwd->next;
			rn_fwd_close(w, fwd);
			return 0;
		}
	}
	return -ENOENT;
}

/**
 * rn_fwd_free() - close every forward of a worker (rn_worker_free())
 * @w:		worker
 */
void rn_fwd_free(struct rn_worker *w)
{
	struct rn_fwd *fwd;

	while ((fwd = w->fwd)) {
		w->fwd = fwd->next;
		rn_fwd_close(w, fwd);
	}
}
