/* splice.c - forwarded connections of host-local clients, relayed with splice()
 *
 * Theory of operation
 * -------------------
 * A forwarded port's client on host loopback (127.0.0.0/8, ::1, or
 * IPv4-mapped loopback) needs no translation: both of its ends are on this
 * machine. So, as pasta's spliced path does, the worker relays it socket to
 * socket, without frames and without copies:
 *
 * 1. forward.c accepts the client and calls rn_splice_start(): a flow of
 *    type RN_FLOW_SPLICE (in the flow table, under the max_flows cap, shown
 *    by flows()), state REQUESTED, and a request on the splice socket:
 *    "a TCP socket connected to ADDR:PORT", ADDR being the namespace's own
 *    loopback (127.0.0.1 or ::1, as pasta connects). The worker does not
 *    wait: the answer comes as an event of the splice socket.
 * 2. The namespace child (rn_splice_serve(), called from its Python loop when
 *    the socket is readable) creates a non-blocking socket inside the
 *    namespace, starts its connect and answers at once with the socket as
 *    SCM_RIGHTS, or with the errno of socket()/connect().
 * 3. The worker checks the answer (size, header, a request of ours, one fd
 *    that is a TCP socket of the family asked for; anything else is dropped
 *    and counted, fds closed: the namespace side is untrusted), makes it
 *    non-blocking, and waits for the connect (EPOLLOUT, SO_ERROR):
 *    CONNECTING. Refused on loopback, it asks once more for the forward's
 *    address (a server bound to that address only); refused again, or any
 *    error, the client is reset.
 * 4. OPEN: each direction moves data source socket -> pipe -> destination
 *    socket with splice(SPLICE_F_NONBLOCK | SPLICE_F_MOVE). A direction
 *    fills its pipe (at most RN_SPLICE_PIPE bytes) only when it is empty,
 *    so "source has nothing" is the only meaning of EAGAIN on the way in,
 *    and a full destination stops the reading of its source (back-pressure
 *    stays in the kernel's socket buffers). Level-triggered epoll on both
 *    sockets with exactly the events the directions wait for; a direction
 *    that used its RN_SPLICE_ROUNDS fills defers the flow to the end of the
 *    batch (rn_worker_defer()), so one connection cannot starve the loop.
 * 5. End of file on a source, once its pipe is drained, becomes a
 *    shutdown(SHUT_WR) of the destination (half-close: HALF); both
 *    directions done, the flow closes. An error on either socket (a reset)
 *    resets the other (SO_LINGER 0). The idle timeout of TCP flows applies.
 *
 * The namespace sees these connections from its own loopback address, not
 * from the gateway; clients elsewhere keep their real source through the C
 * core (forward.c). Each connection holds two sockets and two pipes (six
 * fds) while it lives; up to RN_SPLICE_POOL empty pipes of ended
 * connections are kept for the next ones.
 *
 * Wire format of the splice socket (little-endian, the control protocol's
 * 12-byte header: magic "RNCT", version, type, body length):
 *	REQ (25):	u32 id, u8 family, u8 0, u16 port, u8 addr[16]
 *	FD (26):	u32 id, i32 errno (0: one fd rides as SCM_RIGHTS)
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "splice.h"

#define RN_SPLICE_MAGIC		0x54434E52u	/* "RNCT", _control._MAGIC */
#define RN_SPLICE_VERSION	1u		/* _control.PROTOCOL_VERSION */
#define RN_SPLICE_HDR		12u
#define RN_SPLICE_REQ_LEN	24u
#define RN_SPLICE_FD_LEN	8u

/**
 * rn_splice_put32() - store a little-endian u32
 * @p:		where
 * @v:		value
 */
static void rn_splice_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/**
 * rn_splice_get32() - load a little-endian u32
 * @p:		from where
 *
 * Return: the value
 */
static uint32_t rn_splice_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/**
 * rn_splice_hdr() - write a message header
 * @p:		RN_SPLICE_HDR bytes
 * @type:	RN_SPLICE_MSG_*
 * @len:	body length
 */
static void rn_splice_hdr(uint8_t *p, uint32_t type, uint32_t len)
{
	rn_splice_put32(p, RN_SPLICE_MAGIC);
	p[4] = (uint8_t)RN_SPLICE_VERSION;
	p[5] = (uint8_t)(RN_SPLICE_VERSION >> 8);
	p[6] = (uint8_t)type;
	p[7] = (uint8_t)(type >> 8);
	rn_splice_put32(p + 8, len);
}

/**
 * rn_splice_hdr_ok() - check a received message's header
 * @p:		the message
 * @n:		its length
 * @type:	RN_SPLICE_MSG_* expected
 * @len:	body length expected
 *
 * Return: true when @p is exactly a header of @type followed by @len bytes
 */
static int rn_splice_hdr_ok(const uint8_t *p, size_t n, uint32_t type, uint32_t len)
{
	return n == RN_SPLICE_HDR + len && rn_splice_get32(p) == RN_SPLICE_MAGIC &&
	       (p[4] | p[5] << 8) == RN_SPLICE_VERSION && (uint32_t)(p[6] | p[7] << 8) == type &&
	       rn_splice_get32(p + 8) == len;
}

/**
 * rn_splice_of() - the spliced connection a header of its belongs to
 * @f:		&s->f or &s->peer
 *
 * Return: the connection
 */
static struct rn_splice *rn_splice_of(struct rn_flow *f)
{
	if (f->state == RN_SPLICE_S_PEER)
		return (struct rn_splice *)((char *)f - offsetof(struct rn_splice, peer));
	return (struct rn_splice *)f;
}

/**
 * rn_splice_local() - whether a client is on host loopback
 * @ss:		the client's address (getpeername())
 *
 * Return: true for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104
 */
int rn_splice_local(const struct sockaddr_storage *ss)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const uint8_t lo6[16] = { [15] = 1 };
	const uint8_t *a;

	if (ss->ss_family == AF_INET)
		return ((const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr)[0] == 127;
	if (ss->ss_family != AF_INET6)
		return 0;
	a = (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	return !memcmp(a, lo6, 16) || (!memcmp(a, mapped, 12) && a[12] == 127);
}

/**
 * rn_splice_state_name() - a spliced connection's state for statistics
 * @state:	enum rn_splice_state
 *
 * Return: a static string
 */
const char *rn_splice_state_name(uint8_t state)
{
	switch (state) {
	case RN_SPLICE_S_REQUESTED:
		return "SPLICE_REQ";
	case RN_SPLICE_S_CONNECTING:
		return "SPLICE_CONN";
	case RN_SPLICE_S_OPEN:
		return "SPLICED";
	case RN_SPLICE_S_HALF:
		return "SPLICED_HALF";
	}
	return "?";
}

/**
 * rn_splice_unpend() - take a connection off the list of outstanding requests
 * @w:		worker
 * @s:		connection
 */
static void rn_splice_unpend(struct rn_worker *w, struct rn_splice *s)
{
	struct rn_splice **pp;

	if (!s->id || !w->splice)
		return;
	for (pp = &w->splice->pending; *pp; pp = &(*pp)->pnext) {
		if (*pp == s) {
			*pp = s->pnext;
			break;
		}
	}
	s->id = 0;
	s->pnext = NULL;
}

/**
 * rn_splice_abort() - end a connection abortively: the client sees a reset
 * @w:		worker
 * @s:		connection
 * @ctr:	RN_WCTR_* counter to add one to
 */
static void rn_splice_abort(struct rn_worker *w, struct rn_splice *s, unsigned int ctr)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (s->f.fd >= 0)
		setsockopt(s->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (s->peer.fd >= 0)
		setsockopt(s->peer.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	rn_ctr_add(w->ctr, ctr, 1);
	rn_worker_flow_close(w, &s->f);
}

/**
 * rn_splice_request() - ask the namespace child for a connected socket
 * @w:		worker with a splice socket
 * @s:		connection, REQUESTED, not on the pending list
 *
 * Attempt 0 asks for the namespace's loopback, 1 for the forward's address.
 *
 * Return: 0, or negative errno (the splice socket is full or gone)
 */
static int rn_splice_request(struct rn_worker *w, struct rn_splice *s)
{
	static const uint8_t lo4[4] = { 127, 0, 0, 1 };
	static const uint8_t lo6[16] = { [15] = 1 };
	struct rn_splice_ctl *c = w->splice;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_REQ_LEN];
	uint8_t *b = msg + RN_SPLICE_HDR;

	if (!++c->next_id)
		c->next_id = 1;
	memset(msg, 0, sizeof(msg));
	rn_splice_hdr(msg, RN_SPLICE_MSG_REQ, RN_SPLICE_REQ_LEN);
	rn_splice_put32(b, c->next_id);
	b[4] = s->family;
	b[6] = (uint8_t)s->f.key.sport;
	b[7] = (uint8_t)(s->f.key.sport >> 8);
	if (s->attempt)
		memcpy(b + 8, s->nsaddr, s->family == 6 ? 16 : 4);
	else
		memcpy(b + 8, s->family == 6 ? lo6 : lo4, s->family == 6 ? 16 : 4);
	if (send(c->hdr.fd, msg, sizeof(msg), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
		return -errno ? -errno : -EIO;
	s->id = c->next_id;
	s->pnext = c->pending;
	c->pending = s;
	s->f.state = RN_SPLICE_S_REQUESTED;
	rn_worker_flow_timer(w, &s->f, w->now + RN_SPLICE_SETUP_MS);
	rn_ctr_add(w->ctr, RN_WCTR_splice_requests, 1);
	return 0;
}

/**
 * rn_splice_start() - take a host-local client of a forward onto the splice route
 * @w:		worker
 * @cfd:	the accepted client socket, non-blocking; the flow's on success
 * @ss:		its address (getpeername())
 * @family:	4 or 6: the forward's namespace family
 * @nsaddr:	the forward's namespace address, network order
 * @nsport:	the forward's namespace port, host order
 *
 * Return: 0 (the request is on its way), -ENOTCONN without a splice socket,
 *	   -ENOSPC at the flow cap, -ENOMEM, -EEXIST, or negative errno of the
 *	   request; on failure the caller keeps @cfd
 */
int rn_splice_start(struct rn_worker *w, int cfd, const struct sockaddr_storage *ss,
		    uint8_t family, const uint8_t *nsaddr, uint16_t nsport)
{
	struct rn_splice *s;
	int rc, d;

	if (!w->splice)
		return -ENOTCONN;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	rn_flow_key_zero(&s->f.key);
	s->f.key.family = family;
	s->f.key.proto = RN_IPPROTO_TCP;
	memcpy(s->f.key.saddr, nsaddr, family == 6 ? 16 : 4);
	s->f.key.sport = nsport;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		if (family == 4)
			memcpy(s->f.key.daddr, &a->sin_addr, 4);
		s->f.key.dport = ntohs(a->sin_port);
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		const uint8_t *p = (const uint8_t *)&a->sin6_addr;

		memcpy(s->f.key.daddr, family == 4 ? p + 12 : p, family == 4 ? 4 : 16);
		s->f.key.dport = ntohs(a->sin6_port);
	}
	s->f.type = RN_FLOW_SPLICE;
	s->f.fd = -1;
	s->peer.type = RN_FLOW_SPLICE;
	s->peer.state = RN_SPLICE_S_PEER;
	s->peer.fd = -1;
	for (d = 0; d < 2; d++)
		s->dir[d].pipe[0] = s->dir[d].pipe[1] = -1;
	s->family = family;
	memcpy(s->nsaddr, nsaddr, family == 6 ? 16 : 4);
	rc = rn_worker_flow_add(w, &s->f);
	if (rc) {
		free(s);
		return rc;
	}
	rc = rn_splice_request(w, s);
	if (rc) {
		/* the caller resets its client: the flow must not close it */
		rn_worker_flow_close(w, &s->f);
		return rc;
	}
	s->f.fd = cfd;
	s->f.last = w->now;
	return 0;
}

/**
 * rn_splice_pipes() - open a connection's two pipes, or take them from the pool
 * @w:		worker
 * @s:		connection
 *
 * A pipe larger than the default (RN_SPLICE_PIPE) means fewer splice()
 * calls; if the user's pipe budget refuses it, the default size does.
 *
 * Return: 0, or negative errno of pipe2()
 */
static int rn_splice_pipes(struct rn_worker *w, struct rn_splice *s)
{
	struct rn_splice_ctl *c = w->splice;
	int d;

	for (d = 0; d < 2; d++) {
		if (c && c->npool) {
			c->npool--;
			s->dir[d].pipe[0] = c->pool[c->npool][0];
			s->dir[d].pipe[1] = c->pool[c->npool][1];
			continue;
		}
		if (pipe2(s->dir[d].pipe, O_NONBLOCK | O_CLOEXEC))
			return -errno;
		(void)fcntl(s->dir[d].pipe[1], F_SETPIPE_SZ, (int)RN_SPLICE_PIPE);
	}
	return 0;
}

/**
 * rn_splice_move() - move what one direction can move now
 * @w:		worker
 * @s:		connection, OPEN or HALF
 * @d:		0: client -> namespace, 1: namespace -> client
 *
 * Sets @d's wait flags; defers the flow when it used its rounds.
 *
 * Return: 0, or negative errno of splice() (the connection is broken)
 */
static int rn_splice_move(struct rn_worker *w, struct rn_splice *s, int d)
{
	struct rn_splice_dir *x = &s->dir[d];
	int src = d ? s->peer.fd : s->f.fd, dst = d ? s->f.fd : s->peer.fd;
	unsigned int rounds = 0;
	ssize_t n;

	x->wait_in = x->wait_out = 0;
	for (;;) {
		while (x->pending) {
			n = splice(x->pipe[0], NULL, dst, NULL, x->pending,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n > 0) {
				x->pending -= (uint32_t)n;
				if (d)
					s->f.bytes_up += (uint64_t)n;
				else
					s->f.bytes_down += (uint64_t)n;
				s->f.last = w->now;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN) {
				x->wait_out = 1;
				return 0;
			}
			return n < 0 ? -errno : -EPIPE;
		}
		if (x->eof) {
			if (!x->shut) {
				shutdown(dst, SHUT_WR);
				x->shut = 1;
			}
			return 0;
		}
		if (rounds++ == RN_SPLICE_ROUNDS) {
			rn_worker_defer(w, &s->f);
			return 0;
		}
		n = splice(src, NULL, x->pipe[1], NULL, RN_SPLICE_PIPE,
			   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			x->pending = (uint32_t)n;
		} else if (n == 0) {
			x->eof = 1;
		} else if (errno == EAGAIN) {
			x->wait_in = 1;
			return 0;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
}

/**
 * rn_splice_relay() - run both directions, then watch what they wait for
 * @w:		worker
 * @s:		connection, OPEN or HALF
 */
static void rn_splice_relay(struct rn_worker *w, struct rn_splice *s)
{
	uint32_t ce, pe;
	int d, rc;

	for (d = 0; d < 2; d++) {
		rc = rn_splice_move(w, s, d);
		if (rc) {
			rn_splice_abort(w, s, RN_WCTR_splice_resets);
			return;
		}
	}
	if (s->dir[0].shut && s->dir[1].shut) {
		rn_worker_flow_close(w, &s->f);
		return;
	}
	if (s->dir[0].shut || s->dir[1].shut)
		s->f.state = RN_SPLICE_S_HALF;
	ce = (s->dir[0].wait_in ? EPOLLIN : 0) | (s->dir[1].wait_out ? EPOLLOUT : 0);
	pe = (s->dir[1].wait_in ? EPOLLIN : 0) | (s->dir[0].wait_out ? EPOLLOUT : 0);
	if (rn_worker_flow_watch(w, &s->f, ce) || rn_worker_flow_watch(w, &s->peer, pe))
		rn_splice_abort(w, s, RN_WCTR_splice_resets);
}

/**
 * rn_splice_connected() - the connect inside the namespace finished
 * @w:		worker
 * @s:		connection, CONNECTING
 */
static void rn_splice_connected(struct rn_worker *w, struct rn_splice *s)
{
	socklen_t sl = sizeof(int);
	int err = 0;

	if (getsockopt(s->peer.fd, SOL_SOCKET, SO_ERROR, &err, &sl))
		err = errno;
	if (err == ECONNREFUSED && !s->attempt) {
		/* nothing on the namespace's loopback: its address, then */
		rn_worker_flow_watch(w, &s->peer, 0);
		close(s->peer.fd);
		s->peer.fd = -1;
		s->attempt = 1;
		if (!rn_splice_request(w, s))
			return;
	}
	if (err || s->peer.fd < 0) {
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
		return;
	}
	if (rn_splice_pipes(w, s)) {
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
		return;
	}
	s->f.state = RN_SPLICE_S_OPEN;
	s->f.last = w->now;
	rn_worker_flow_timer(w, &s->f, w->p.tcp_idle_timeout_ms ?
			     w->now + w->p.tcp_idle_timeout_ms : 0);
	rn_ctr_add(w->ctr, RN_WCTR_splice_opened, 1);
	rn_splice_relay(w, s);
}

/**
 * rn_splice_got() - the namespace child's answer to one of our requests
 * @w:		worker
 * @s:		the connection that asked, REQUESTED, off the pending list
 * @err:	the errno reported (0: @fd is the socket)
 * @fd:		the socket received, or -1; the connection's or closed
 */
static void rn_splice_got(struct rn_worker *w, struct rn_splice *s, int err, int fd)
{
	int type = 0, proto = 0, dom = 0, fl;
	socklen_t sl = sizeof(int);

	if (err || fd < 0) {
		if (fd >= 0)
			close(fd);
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) || (sl = sizeof(int),
	    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl)) || (sl = sizeof(int),
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &sl)) || type != SOCK_STREAM ||
	    proto != IPPROTO_TCP || dom != (s->family == 6 ? AF_INET6 : AF_INET) ||
	    (fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK)) {
		close(fd);
		rn_ctr_add(w->ctr, RN_WCTR_splice_bad_replies, 1);
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
		return;
	}
	s->peer.fd = fd;
	s->f.state = RN_SPLICE_S_CONNECTING;
	if (rn_worker_flow_watch(w, &s->peer, EPOLLOUT))
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
}

/**
 * rn_splice_answers() - read the namespace child's answers on the splice socket
 * @w:		worker
 * @c:		the splice socket
 *
 * A malformed answer, or one for no request of ours, is dropped and counted
 * (splice_bad_replies), its fds closed. End of file or an error closes the
 * splice socket: new host-local clients are then reset.
 */
static void rn_splice_answers(struct rn_worker *w, struct rn_splice_ctl *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} cm;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_FD_LEN + 1];
	struct rn_splice **pp, *s;
	struct cmsghdr *cmh;
	struct msghdr mh;
	struct iovec iov;
	int i, fd, nfd, err;
	uint32_t id, k;
	ssize_t n;

	for (i = 0; i < RN_SPLICE_SERVE_BATCH && !w->err; i++) {
		iov.iov_base = msg;
		iov.iov_len = sizeof(msg);
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		n = recvmsg(c->hdr.fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			rn_worker_flow_watch(w, &c->hdr, 0);
			return;	/* the namespace child is gone: its ERROR/EOF ends us */
		}
		fd = -1;
		nfd = 0;
		for (cmh = CMSG_FIRSTHDR(&mh); cmh; cmh = CMSG_NXTHDR(&mh, cmh)) {
			if (cmh->cmsg_level != SOL_SOCKET || cmh->cmsg_type != SCM_RIGHTS)
				continue;
			for (k = 0; k < (cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				int got;

				memcpy(&got, CMSG_DATA(cmh) + k * sizeof(int), sizeof(int));
				if (!nfd++)
					fd = got;
				else
					close(got);
			}
		}
		id = 0;
		err = 0;
		if (rn_splice_hdr_ok(msg, (size_t)n, RN_SPLICE_MSG_FD, RN_SPLICE_FD_LEN) &&
		    !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
			id = rn_splice_get32(msg + RN_SPLICE_HDR);
			err = (int)rn_splice_get32(msg + RN_SPLICE_HDR + 4);
		}
		s = NULL;
		for (pp = &c->pending; id && *pp; pp = &(*pp)->pnext) {
			if ((*pp)->id == id) {
				s = *pp;
				break;
			}
		}
		if (!s || nfd > 1 || (err ? nfd != 0 || err < 0 : nfd != 1)) {
			if (fd >= 0)
				close(fd);
			rn_ctr_add(w->ctr, RN_WCTR_splice_bad_replies, 1);
			if (s)
				rn_splice_abort(w, s, RN_WCTR_splice_refused);
			continue;
		}
		*pp = s->pnext;
		s->pnext = NULL;
		s->id = 0;
		rn_splice_got(w, s, err, fd);
	}
}

/**
 * rn_splice_event() - an event on a client, a socket inside, or the splice socket
 * @w:		worker
 * @f:		&s->f, &s->peer or &ctl->hdr
 * @events:	epoll events
 */
static void rn_splice_event(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	struct rn_splice *s;

	(void)events;
	if (f->state == RN_SPLICE_S_CTL) {
		rn_splice_answers(w, (struct rn_splice_ctl *)f);
		return;
	}
	s = rn_splice_of(f);
	if (s->f.flags & RN_FLOW_F_CLOSED)
		return;
	if (s->f.state == RN_SPLICE_S_CONNECTING) {
		if (f == &s->peer)
			rn_splice_connected(w, s);
		return;
	}
	if (s->f.state == RN_SPLICE_S_OPEN || s->f.state == RN_SPLICE_S_HALF)
		rn_splice_relay(w, s);
}

/**
 * rn_splice_timer() - no answer in time, or the idle timeout
 * @w:		worker
 * @f:		&s->f
 */
static void rn_splice_timer(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_splice *s = rn_splice_of(f);
	uint32_t idle = w->p.tcp_idle_timeout_ms;

	if (s->f.state == RN_SPLICE_S_REQUESTED || s->f.state == RN_SPLICE_S_CONNECTING) {
		rn_splice_abort(w, s, RN_WCTR_splice_refused);
		return;
	}
	if (idle && w->now - s->f.last < (int64_t)idle) {
		rn_worker_flow_timer(w, f, s->f.last + idle);
		return;
	}
	rn_splice_abort(w, s, RN_WCTR_tcp_idle_timeouts);
}

/**
 * rn_splice_flush() - continue a connection that used its rounds
 * @w:		worker
 * @f:		&s->f
 */
static void rn_splice_flush(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_splice *s = rn_splice_of(f);

	if (s->f.state == RN_SPLICE_S_OPEN || s->f.state == RN_SPLICE_S_HALF)
		rn_splice_relay(w, s);
}

/**
 * rn_splice_release() - a connection is closing: its socket inside, its pipes
 * @w:		worker
 * @f:		&s->f (the worker closes the client socket)
 */
static void rn_splice_release(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_splice *s = rn_splice_of(f);
	int d, e;

	rn_splice_unpend(w, s);
	if (s->peer.fd >= 0) {
		close(s->peer.fd);	/* out of the epoll too */
		s->peer.fd = -1;
	}
	s->peer.events = 0;
	s->peer.flags |= RN_FLOW_F_CLOSED;	/* events of this pass skip it */
	for (d = 0; d < 2; d++) {
		struct rn_splice_dir *x = &s->dir[d];

		if (x->pipe[0] >= 0 && !x->pending && w->splice &&
		    w->splice->npool < RN_SPLICE_POOL) {
			/* empty: the next connection's */
			w->splice->pool[w->splice->npool][0] = x->pipe[0];
			w->splice->pool[w->splice->npool++][1] = x->pipe[1];
			x->pipe[0] = x->pipe[1] = -1;
			continue;
		}
		for (e = 0; e < 2; e++) {
			if (x->pipe[e] >= 0)
				close(x->pipe[e]);
			x->pipe[e] = -1;
		}
	}
}

const struct rn_flow_ops rn_splice_ops = {
	.event = rn_splice_event,
	.timer = rn_splice_timer,
	.flush = rn_splice_flush,
	.release = rn_splice_release,
};

/**
 * rn_splice_attach() - give a worker its end of the splice socket
 * @w:		worker, without one yet
 * @fd:		SOCK_SEQPACKET socket towards the namespace child; the
 *		worker's on success
 *
 * Return: 0, -EEXIST if the worker has one, -ENOMEM, or negative errno of
 *	   epoll_ctl()
 */
int rn_splice_attach(struct rn_worker *w, int fd)
{
	struct rn_splice_ctl *c;
	int rc;

	if (w->splice)
		return -EEXIST;
	if (fd < 0)
		return -EBADF;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->hdr.type = RN_FLOW_SPLICE;
	c->hdr.state = RN_SPLICE_S_CTL;
	c->hdr.fd = fd;
	rc = rn_worker_flow_watch(w, &c->hdr, EPOLLIN);
	if (rc) {
		free(c);
		return rc;
	}
	w->splice = c;
	return 0;
}

/**
 * rn_splice_free() - close a worker's splice socket (rn_worker_free(), after
 *		      its flows)
 * @w:		worker
 */
void rn_splice_free(struct rn_worker *w)
{
	uint32_t i;

	if (!w->splice)
		return;
	for (i = 0; i < w->splice->npool; i++) {
		close(w->splice->pool[i][0]);
		close(w->splice->pool[i][1]);
	}
	close(w->splice->hdr.fd);
	free(w->splice);
	w->splice = NULL;
}

/**
 * rn_splice_answer() - send the answer to one request
 * @sock:	the splice socket
 * @id:		the request's id
 * @err:	positive errno, or 0 with @fd
 * @fd:		the socket to pass, or -1
 *
 * Return: 0, or negative errno of sendmsg()
 */
static int rn_splice_answer(int sock, uint32_t id, int err, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_FD_LEN];
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	rn_splice_hdr(msg, RN_SPLICE_MSG_FD, RN_SPLICE_FD_LEN);
	rn_splice_put32(msg + RN_SPLICE_HDR, id);
	rn_splice_put32(msg + RN_SPLICE_HDR + 4, (uint32_t)err);
	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/**
 * rn_splice_serve() - in the namespace child: answer the requests a worker sent
 * @sock:	the namespace child's end of that worker's splice socket
 *		(blocking: an answer is never dropped)
 *
 * For each request: a non-blocking TCP socket of the family asked for, its
 * connect to the address and port asked for started (the worker waits for
 * it to complete), sent back; or the errno of socket() or connect(). A
 * malformed request (the worker is trusted; still checked) is answered with
 * EINVAL when its id can be read, else ignored.
 *
 * Return: 0 once no request is left, -EPIPE when the worker closed its end,
 *	   or negative errno of recv() or sendmsg()
 */
int rn_splice_serve(int sock)
{
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_REQ_LEN + 1];
	const uint8_t *b = msg + RN_SPLICE_HDR;
	struct sockaddr_storage ss;
	struct msghdr mh;
	struct iovec iov;
	socklen_t sl;
	int i, fd, err, rc;
	uint16_t port;
	uint32_t id;
	ssize_t n;

	for (i = 0; i < RN_SPLICE_SERVE_BATCH; i++) {
		/* recvmsg, not recv (recvfrom): the namespace child's allow-list */
		iov.iov_base = msg;
		iov.iov_len = sizeof(msg);
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		n = recvmsg(sock, &mh, MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		if (n == 0)
			return -EPIPE;
		if (!rn_splice_hdr_ok(msg, (size_t)n, RN_SPLICE_MSG_REQ, RN_SPLICE_REQ_LEN))
			continue;
		id = rn_splice_get32(b);
		port = (uint16_t)(b[6] | b[7] << 8);
		memset(&ss, 0, sizeof(ss));
		if (b[4] == 4) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			a->sin_family = AF_INET;
			a->sin_port = htons(port);
			memcpy(&a->sin_addr, b + 8, 4);
			sl = sizeof(*a);
		} else if (b[4] == 6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			a->sin6_family = AF_INET6;
			a->sin6_port = htons(port);
			memcpy(&a->sin6_addr, b + 8, 16);
			sl = sizeof(*a);
		} else {
			rc = rn_splice_answer(sock, id, EINVAL, -1);
			if (rc)
				return rc;
			continue;
		}
		err = 0;
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
		if (fd < 0)
			err = errno;
		else if (connect(fd, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS)
			err = errno;
		if (err && fd >= 0) {
			close(fd);
			fd = -1;
		}
		rc = rn_splice_answer(sock, id, err, fd);
		if (fd >= 0)
			close(fd);
		if (rc)
			return rc;
	}
	return 0;
}
