/* splice.c - forwarded connections of host-local clients, relayed with splice()
 *
 * Theory of operation
 * -------------------
 * A forwarded port's client on host loopback (127.0.0.0/8, ::1, or
 * IPv4-mapped loopback) needs no translation: both of its ends are on this
 * machine. So, as pasta's spliced path does, the worker relays it socket to
 * socket, without frames and without copies:
 *
 * 1. The worker holds a stock of fresh, unconnected TCP sockets made
 *    inside the namespace (a socket stays in the network namespace it was
 *    created in, whoever holds it), per family: the namespace child makes
 *    them in batches on request (rn_splice_serve(), called from its Python
 *    loop when the splice socket is readable) and sends them as SCM_RIGHTS.
 *    The worker asks for more when a stock runs below half, so that
 *    connection set-up normally involves no other process.
 * 2. forward.c accepts the client and calls rn_splice_start(): a flow of
 *    type RN_FLOW_SPLICE (in the flow table, under the max_flows cap, shown
 *    by flows()). With a socket in stock, the worker connects it at once,
 *    non-blocking, to the namespace's own loopback (127.0.0.1 or ::1, as
 *    pasta connects): CONNECTING. Without one, the flow waits (REQUESTED)
 *    for the next batch; the worker never blocks.
 * 3. The worker checks every socket it receives (size and header of the
 *    message, one batch asked for, each fd a TCP socket of the family asked
 *    for and not connected; anything else is dropped and counted, fds
 *    closed: the namespace side is untrusted), and waits for the connect
 *    (EPOLLOUT, SO_ERROR). Refused on loopback, it tries once more with a
 *    fresh socket towards the forward's address (a server bound to that
 *    address only); refused again, or any error, the client is reset.
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
 *	REQ (25):	u32 count, u8 family, u8 0, u16 0: "make me count sockets"
 *	FD (26):	u32 count, u8 family, u8 0, u16 errno: count fds ride as
 *			SCM_RIGHTS (errno set when the namespace made none)
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "splice.h"

#define RN_SPLICE_MAGIC		0x54434E52u	/* "RNCT", _control._MAGIC */
#define RN_SPLICE_VERSION	1u		/* _control.PROTOCOL_VERSION */
#define RN_SPLICE_HDR		12u
#define RN_SPLICE_REQ_LEN	8u
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

static void rn_splice_connected(struct rn_worker *w, struct rn_splice *s, int err);

/**
 * rn_splice_unwait() - take a connection off the list of those waiting for a socket
 * @w:		worker
 * @s:		connection
 */
static void rn_splice_unwait(struct rn_worker *w, struct rn_splice *s)
{
	struct rn_splice **pp;

	if (!s->waiting || !w->splice)
		return;
	for (pp = &w->splice->waiting; *pp; pp = &(*pp)->pnext) {
		if (*pp == s) {
			*pp = s->pnext;
			break;
		}
	}
	s->waiting = 0;
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
 * rn_splice_ask() - ask the namespace child for a batch of sockets, if due
 * @w:		worker with a splice socket
 * @fi:		family index: 0 IPv4, 1 IPv6
 *
 * Due when the stock is below half and no batch of that family is on its
 * way. A full splice socket leaves it for the next take.
 */
static void rn_splice_ask(struct rn_worker *w, int fi)
{
	struct rn_splice_ctl *c = w->splice;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_REQ_LEN];

	if (c->asked[fi] || c->nstock[fi] >= RN_SPLICE_STOCK / 2)
		return;
	memset(msg, 0, sizeof(msg));
	rn_splice_hdr(msg, RN_SPLICE_MSG_REQ, RN_SPLICE_REQ_LEN);
	rn_splice_put32(msg + RN_SPLICE_HDR, RN_SPLICE_STOCK - c->nstock[fi]);
	msg[RN_SPLICE_HDR + 4] = fi ? 6 : 4;
	if (send(c->hdr.fd, msg, sizeof(msg), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
		return;
	c->asked[fi] = 1;
	rn_ctr_add(w->ctr, RN_WCTR_splice_requests, 1);
}

/**
 * rn_splice_connect() - connect a namespace socket for a connection, or wait for one
 * @w:		worker with a splice socket
 * @s:		connection without a socket inside (REQUESTED)
 *
 * Attempt 0 connects to the namespace's loopback, 1 to the forward's
 * address. Without a socket in stock the connection waits for the next
 * batch (its timer runs).
 */
static void rn_splice_connect(struct rn_worker *w, struct rn_splice *s)
{
	static const uint8_t lo4[4] = { 127, 0, 0, 1 };
	static const uint8_t lo6[16] = { [15] = 1 };
	struct rn_splice_ctl *c = w->splice;
	int fi = s->family == 6, fd, err = 0;
	struct sockaddr_storage ss;
	struct rn_splice **pp;
	socklen_t sl;

	s->f.state = RN_SPLICE_S_REQUESTED;
	if (!c->nstock[fi]) {
		rn_splice_ask(w, fi);
		if (!s->waiting) {
			for (pp = &c->waiting; *pp; pp = &(*pp)->pnext)
				;
			*pp = s;
			s->pnext = NULL;
			s->waiting = 1;
		}
		return;
	}
	fd = c->stock[fi][--c->nstock[fi]];
	rn_splice_ask(w, fi);
	memset(&ss, 0, sizeof(ss));
	if (s->family == 6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(s->f.key.sport);
		memcpy(&a->sin6_addr, s->attempt ? s->nsaddr : lo6, 16);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(s->f.key.sport);
		memcpy(&a->sin_addr, s->attempt ? s->nsaddr : lo4, 4);
		sl = sizeof(*a);
	}
	s->peer.fd = fd;
	s->f.state = RN_SPLICE_S_CONNECTING;
	if (connect(fd, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS)
		err = errno;
	if (!err && rn_worker_flow_watch(w, &s->peer, EPOLLOUT))
		err = EIO;
	if (err)
		rn_splice_connected(w, s, err);	/* refused at once */
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
 * Return: 0 (the flow has the client: connected, connecting, waiting for a
 *	   socket, or already reset), -ENOTCONN without a splice socket,
 *	   -ENOSPC at the flow cap, -ENOMEM, -EEXIST; on failure the caller
 *	   keeps @cfd
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
	s->f.fd = cfd;
	s->f.last = w->now;
	rn_worker_flow_timer(w, &s->f, w->now + RN_SPLICE_SETUP_MS);
	rn_splice_connect(w, s);
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
 * rn_splice_connected() - the connect inside the namespace finished (or failed)
 * @w:		worker
 * @s:		connection, CONNECTING
 * @err:	the connect's error if known already, else 0 (SO_ERROR says)
 */
static void rn_splice_connected(struct rn_worker *w, struct rn_splice *s, int err)
{
	socklen_t sl = sizeof(int);

	if (!err && getsockopt(s->peer.fd, SOL_SOCKET, SO_ERROR, &err, &sl))
		err = errno;
	if (err == ECONNREFUSED && !s->attempt) {
		/* nothing on the namespace's loopback: its address, then */
		rn_worker_flow_watch(w, &s->peer, 0);
		close(s->peer.fd);
		s->peer.fd = -1;
		s->peer.events = 0;
		s->attempt = 1;
		rn_splice_connect(w, s);
		return;
	}
	if (err || rn_splice_pipes(w, s)) {
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
 * rn_splice_check() - whether a received fd is a fresh TCP socket of a family
 * @fd:		the fd
 * @family:	4 or 6
 *
 * Makes it non-blocking too.
 *
 * Return: true for an unconnected TCP socket of @family
 */
static int rn_splice_check(int fd, uint8_t family)
{
	int type = 0, proto = 0, dom = 0, fl;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) || type != SOCK_STREAM)
		return 0;
	sl = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl) || proto != IPPROTO_TCP)
		return 0;
	sl = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &sl) ||
	    dom != (family == 6 ? AF_INET6 : AF_INET))
		return 0;
	sl = sizeof(ss);
	if (!getpeername(fd, (struct sockaddr *)&ss, &sl) || errno != ENOTCONN)
		return 0;
	fl = fcntl(fd, F_GETFL);
	return fl >= 0 && !fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/**
 * rn_splice_serve_waiting() - give sockets in stock to the connections waiting
 * @w:		worker
 * @fi:		family index that got sockets
 * @err:	errno the namespace reported instead, or 0
 *
 * With @err (no socket came), the waiting connections of that family are
 * reset.
 */
static void rn_splice_serve_waiting(struct rn_worker *w, int fi, int err)
{
	struct rn_splice_ctl *c = w->splice;
	struct rn_splice *s, *next;

	for (s = c->waiting; s; s = next) {
		next = s->pnext;
		if ((s->family == 6) != fi)
			continue;
		if (!err && !c->nstock[fi])
			break;
		rn_splice_unwait(w, s);
		if (err)
			rn_splice_abort(w, s, RN_WCTR_splice_refused);
		else
			rn_splice_connect(w, s);
	}
}

/**
 * rn_splice_answers() - take the batches of sockets the namespace child sent
 * @w:		worker
 * @c:		the splice socket
 *
 * A malformed message, or a batch nobody asked for, is dropped and counted
 * (splice_bad_replies), its fds closed, and so is every fd that is not a
 * fresh TCP socket of the family asked for. End of file or an error stops
 * watching the splice socket: connections waiting for sockets then time out.
 */
static void rn_splice_answers(struct rn_worker *w, struct rn_splice_ctl *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(RN_SPLICE_STOCK * sizeof(int))];
	} cm;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_FD_LEN + 1];
	int fds[RN_SPLICE_STOCK], i, fi, err, ok;
	struct cmsghdr *cmh;
	struct msghdr mh;
	struct iovec iov;
	uint32_t k, nfd, count;
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
		nfd = 0;
		for (cmh = CMSG_FIRSTHDR(&mh); cmh; cmh = CMSG_NXTHDR(&mh, cmh)) {
			if (cmh->cmsg_level != SOL_SOCKET || cmh->cmsg_type != SCM_RIGHTS)
				continue;
			for (k = 0; k < (cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				int got;

				memcpy(&got, CMSG_DATA(cmh) + k * sizeof(int), sizeof(int));
				if (nfd < RN_SPLICE_STOCK)
					fds[nfd++] = got;
				else
					close(got);
			}
		}
		ok = rn_splice_hdr_ok(msg, (size_t)n, RN_SPLICE_MSG_FD, RN_SPLICE_FD_LEN) &&
		     !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
		count = ok ? rn_splice_get32(msg + RN_SPLICE_HDR) : 0;
		fi = ok ? msg[RN_SPLICE_HDR + 4] == 6 : 0;
		err = ok ? msg[RN_SPLICE_HDR + 6] | msg[RN_SPLICE_HDR + 7] << 8 : 0;
		if (!ok || (msg[RN_SPLICE_HDR + 4] != 4 && msg[RN_SPLICE_HDR + 4] != 6) ||
		    !c->asked[fi] || count != nfd || (!nfd && !err)) {
			for (k = 0; k < nfd; k++)
				close(fds[k]);
			rn_ctr_add(w->ctr, RN_WCTR_splice_bad_replies, 1);
			continue;
		}
		c->asked[fi] = 0;
		for (k = 0; k < nfd; k++) {
			if (c->nstock[fi] < RN_SPLICE_STOCK && rn_splice_check(fds[k], fi ? 6 : 4)) {
				c->stock[fi][c->nstock[fi]++] = fds[k];
				continue;
			}
			close(fds[k]);
			rn_ctr_add(w->ctr, RN_WCTR_splice_bad_replies, 1);
		}
		rn_splice_serve_waiting(w, fi, nfd ? 0 : (err ? err : EIO));
		/* the waiting ones may have emptied the stock again */
		if (c->waiting)
			rn_splice_ask(w, fi);
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
			rn_splice_connected(w, s, 0);
		return;
	}
	if (s->f.state == RN_SPLICE_S_OPEN || s->f.state == RN_SPLICE_S_HALF)
		rn_splice_relay(w, s);
}

/**
 * rn_splice_timer() - no socket or no connect in time, or the idle timeout
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

	rn_splice_unwait(w, s);
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
 * rn_splice_prime() - fill the stock of namespace sockets ahead of the first client
 * @w:		worker, with or without a splice socket
 *
 * Called when the worker starts serving a TCP forward: a worker that serves
 * none holds no sockets of the namespace.
 */
void rn_splice_prime(struct rn_worker *w)
{
	if (!w->splice)
		return;
	rn_splice_ask(w, 0);
	rn_splice_ask(w, 1);
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
	for (i = 0; i < w->splice->nstock[0]; i++)
		close(w->splice->stock[0][i]);
	for (i = 0; i < w->splice->nstock[1]; i++)
		close(w->splice->stock[1][i]);
	close(w->splice->hdr.fd);
	free(w->splice);
	w->splice = NULL;
}

/**
 * rn_splice_serve() - in the namespace child: answer the requests a worker sent
 * @sock:	the namespace child's end of that worker's splice socket
 *		(blocking: an answer is never dropped)
 *
 * For each request of N sockets of a family (at most RN_SPLICE_STOCK): N
 * non-blocking TCP sockets made here, in the namespace, sent in one message
 * and closed here; if socket() fails before any was made, its errno is sent
 * instead. Malformed requests (the worker is trusted; still checked) are
 * ignored.
 *
 * Return: 0 once no request is left, -EPIPE when the worker closed its end,
 *	   or negative errno of recvmsg() or sendmsg()
 */
int rn_splice_serve(int sock)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(RN_SPLICE_STOCK * sizeof(int))];
	} cm;
	uint8_t msg[RN_SPLICE_HDR + RN_SPLICE_REQ_LEN + 1];
	uint8_t out[RN_SPLICE_HDR + RN_SPLICE_FD_LEN];
	int fds[RN_SPLICE_STOCK], i, err, rc;
	uint32_t k, want, nfd;
	struct cmsghdr *c;
	struct msghdr mh;
	struct iovec iov;
	uint8_t family;
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
		want = rn_splice_get32(msg + RN_SPLICE_HDR);
		family = msg[RN_SPLICE_HDR + 4];
		if ((family != 4 && family != 6) || !want || want > RN_SPLICE_STOCK)
			continue;
		err = 0;
		for (nfd = 0; nfd < want; nfd++) {
			fds[nfd] = socket(family == 6 ? AF_INET6 : AF_INET,
					  SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
			if (fds[nfd] < 0) {
				err = errno;
				break;
			}
		}
		memset(out, 0, sizeof(out));
		rn_splice_hdr(out, RN_SPLICE_MSG_FD, RN_SPLICE_FD_LEN);
		rn_splice_put32(out + RN_SPLICE_HDR, nfd);
		out[RN_SPLICE_HDR + 4] = family;
		if (!nfd) {
			out[RN_SPLICE_HDR + 6] = (uint8_t)err;
			out[RN_SPLICE_HDR + 7] = (uint8_t)(err >> 8);
		}
		iov.iov_base = out;
		iov.iov_len = sizeof(out);
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (nfd) {
			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = CMSG_SPACE(nfd * sizeof(int));
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(nfd * sizeof(int));
			memcpy(CMSG_DATA(c), fds, nfd * sizeof(int));
		}
		rc = sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
		for (k = 0; k < nfd; k++)
			close(fds[k]);
		if (rc)
			return rc;
	}
	return 0;
}
