/* udp_rx.c - UDP from host sockets to the namespace
 *
 * Theory of operation
 * -------------------
 * Host -> namespace: a port's socket (or a DNS flow's own) is read with
 * recvmmsg() into the worker's private buffers, never more datagrams than
 * ring to_ns surely holds (rn_ring_frames_free()); with no room the socket
 * is no longer watched until there is (a port has one of its flows wait on
 * the worker's room list for it), so datagrams wait in the host socket
 * rather than being read and lost. A datagram on a port goes to the flow
 * its sender belongs to (rn_udp_port_flow(): the exact flow, else one to
 * the same address; a run of datagrams from one sender is looked up once,
 * and a port with one flow needs no lookup). Each datagram becomes a frame
 * from the destination as the namespace named it (the port the
 * namespace sent to, or the other port the host answered from) with
 * NEEDS_CSUM and the pseudo-header sum in the checksum field: the
 * namespace's kernel takes it as checksummed, so no payload is summed here.
 * Once the orchestrator says the namespace's tun device takes USO frames
 * (rn_udp_set_uso()), a run of equal-sized datagrams from one sender in a
 * recvmmsg() batch becomes one frame with gso_type UDP_L4, and sockets ask
 * for UDP_GRO so that the kernel hands over what a GSO sender sent as one
 * buffer: one write into the tun device for up to RN_UDP_GSO_SEGS datagrams.
 * A datagram is at most 65507 (IPv4) or 65527 (IPv6) bytes and is written
 * as one IP packet even above the namespace's MTU: a receiving kernel does
 * not enforce its MTU.
 *
 * Host socket errors (IP_RECVERR) are read first on EPOLLERR: a port's by
 * rn_udp_port_errors(), which finds the flow from the destination the
 * kernel names for the offending datagram; a DNS flow's through dgram.c's
 * rn_dgram_errors(), which lets it fail over before the namespace is told
 * (rn_udp_dns_err(), udp.c). See udp.c for flows and the
 * other direction.
 */
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "rules.h"
#include "udp_int.h"

/**
 * rn_udp_same_host() - whether a datagram's source is the flow's destination host
 * @dst:	the flow's destination
 * @src:	where the datagram came from
 *
 * Return: true if family and address agree (the port may differ)
 */
static int rn_udp_same_host(const struct sockaddr_storage *dst,
			    const struct sockaddr_storage *src)
{
	if (dst->ss_family != src->ss_family)
		return 0;
	if (dst->ss_family == AF_INET)
		return !memcmp(&((const struct sockaddr_in *)dst)->sin_addr,
			       &((const struct sockaddr_in *)src)->sin_addr, 4);
	return !memcmp(&((const struct sockaddr_in6 *)dst)->sin6_addr,
		       &((const struct sockaddr_in6 *)src)->sin6_addr, 16);
}

/**
 * rn_udp_port() - port of an IPv4 or IPv6 socket address
 * @sa:		address
 *
 * Return: the port, host order
 */
static uint16_t rn_udp_port(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

/**
 * rn_udp_deliver() - put datagrams from the host into ring to_ns, as one frame
 * @w:		worker
 * @fl:		flow whose socket received them
 * @src:	where they came from
 * @iov:	payload pieces, copied one after the other
 * @niov:	number of pieces
 * @len:	payload length, all pieces together
 * @gso:	0 for one datagram; else the frame is a USO frame of @gso-sized
 *		datagrams (the last one may be shorter), which the namespace's
 *		kernel splits
 */
static void rn_udp_deliver(struct rn_worker *w, struct rn_udp_flow *fl,
			   const struct sockaddr_storage *src, const struct iovec *iov,
			   uint32_t niov, uint32_t len, uint16_t gso)
{
	const struct rn_flow_key *k = &fl->g.f.key;
	uint32_t l3 = rn_ip_hdr_len(k->family), ulen = RN_UDP_HDR_LEN + len, i, off;
	uint32_t dgrams = gso ? (len + gso - 1) / gso : 1;
	uint16_t sport = rn_udp_port(src);
	struct rn_ip_out o = {
		.family = k->family, .proto = RN_IPPROTO_UDP, .flags = RN_IP_OUT_DF | RN_IP_OUT_CSUM,
		.src = k->daddr, .dst = k->saddr, .l4len = ulen, .csum_offset = 6,
	};
	uint8_t *out, *uh;
	int err;

	if (!(rn_udp_same_host(&fl->g.dst, src) || (fl->g.dns && rn_dns_is_upstream(w, src))) ||
	    len > (k->family == 6 ? RN_UDP_MAX6 : RN_UDP_MAX4)) {
		rn_ctr_add(w->ctr, RN_WCTR_host_drops, dgrams);
		return;
	}
	if (fl->g.dns || sport == rn_udp_port(&fl->g.dst))
		sport = k->dport;
	/* names for the egress rules, learnt before the namespace can read the answers:
	 * one datagram per piece, or @gso-sized ones in a single coalesced piece */
	for (i = 0; fl->g.dns && i < niov; i++) {
		for (off = 0; off < iov[i].iov_len; off += niov > 1 || !gso ? len : gso)
			rn_rules_learn(w, (const uint8_t *)iov[i].iov_base + off,
				       niov > 1 || !gso || iov[i].iov_len - off < gso ?
				       (uint32_t)(iov[i].iov_len - off) : gso);
	}
	out = rn_worker_tx_reserve(w, l3 + ulen, &err);
	if (!out)
		return;	/* room was checked: only a corrupted ring (fatal) gets here */
	if (gso) {
		o.gso_type = RN_VNET_GSO_UDP_L4;
		o.gso_size = gso;
		o.l4hdr = RN_UDP_HDR_LEN;
		rn_ctr_add(w->ctr, RN_WCTR_udp_uso_out, 1);
	}
	uh = out + rn_ip_build(out, &o);
	rn_put_be16(uh, sport);
	rn_put_be16(uh + 2, k->sport);
	rn_put_be16(uh + 4, (uint16_t)ulen);
	for (i = 0, off = RN_UDP_HDR_LEN; i < niov; off += (uint32_t)iov[i++].iov_len)
		memcpy(uh + off, iov[i].iov_base, iov[i].iov_len);
	rn_worker_tx_commit(w, l3 + ulen);
	rn_ctr_add(w->ctr, RN_WCTR_udp_out, dgrams);
	fl->g.f.last = w->now;
	fl->g.f.bytes_down += len;
	fl->g.f.pkts_down++;
	/* An answer (read from our private copy): its query needs no failover */
	rn_dns_answered(&fl->dnsq, iov[0].iov_base, (uint32_t)iov[0].iov_len);
}

/**
 * rn_udp_same_sender() - whether two received datagrams come from one address and port
 * @a:		source address
 * @b:		source address
 *
 * Return: true if they are equal
 */
static int rn_udp_same_sender(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	return rn_udp_same_host(a, b) && rn_udp_port(a) == rn_udp_port(b);
}

/**
 * rn_udp_gro_size() - segment size of a datagram the kernel coalesced (UDP_GRO)
 * @mh:		its message header, with the control data received
 *
 * Return: the segment size, or 0 if the buffer is one datagram
 */
static uint16_t rn_udp_gro_size(struct msghdr *mh)
{
	struct cmsghdr *c;
	int size;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
			memcpy(&size, CMSG_DATA(c), sizeof(size));
			return size > 0 && size < 0xffff ? (uint16_t)size : 0;
		}
	}
	return 0;
}

/**
 * rn_udp_port_key() - the flow key of a port's flow to a host address
 * @w:		worker
 * @pt:		port
 * @sa:		host address and port (a datagram's sender, an error's destination)
 * @k:		set to the key as the namespace names that peer
 *
 * Host loopback is the gateway as the namespace sees it (the only
 * translation a flow through a port has, policy.c).
 *
 * Return: 0, or -1 for an address of the other family
 */
static int rn_udp_port_key(const struct rn_worker *w, const struct rn_udp_port *pt,
			   const struct sockaddr_storage *sa, struct rn_flow_key *k)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	const uint8_t *a;

	*k = pt->f.key;
	if (pt->f.key.family == 4) {
		if (sa->ss_family != AF_INET)
			return -1;
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		memcpy(k->daddr, w->p.allow_host_loopback && !memcmp(a, "\x7f\0\0\1", 4) ?
			w->p.gw4 : a, 4);
	} else {
		if (sa->ss_family != AF_INET6)
			return -1;
		a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(k->daddr, w->p.allow_host_loopback && !memcmp(a, lo6, 16) ? w->p.gw6 : a, 16);
	}
	k->dport = rn_udp_port(sa);
	return 0;
}

/**
 * rn_udp_port_exact() - the flow of a port whose destination is exactly @sa
 * @w:		worker
 * @pt:		port
 * @sa:		host address and port
 *
 * Return: the flow, or NULL
 */
static struct rn_udp_flow *rn_udp_port_exact(struct rn_worker *w, struct rn_udp_port *pt,
					     const struct sockaddr_storage *sa)
{
	struct rn_flow_key k;
	struct rn_flow *f;

	/* The common case, one flow per port: no hashing */
	if (pt->nflows == 1 && rn_udp_same_sender(&pt->flows->g.dst, sa))
		return pt->flows;
	if (rn_udp_port_key(w, pt, sa, &k))
		return NULL;
	f = rn_flowtab_lookup(&w->flows, &k);
	if (!f || f->type != RN_FLOW_UDP || ((struct rn_udp_flow *)f)->port != pt)
		return NULL;
	return (struct rn_udp_flow *)f;
}

/**
 * rn_udp_port_flow() - the flow a datagram received on a port belongs to
 * @w:		worker
 * @pt:		port
 * @src:	the datagram's sender
 *
 * Filtering is address-dependent (RFC 4787): a sender is let in if the
 * namespace source sent to its address, from any port of it; a datagram
 * from another port of a host the namespace talks to comes in through the
 * flow to that host, shown as coming from the port it came from.
 *
 * Return: the flow, or NULL (the datagram is dropped)
 */
static struct rn_udp_flow *rn_udp_port_flow(struct rn_worker *w, struct rn_udp_port *pt,
					    const struct sockaddr_storage *src)
{
	struct rn_udp_flow *fl;

	if (pt->fwd) {
		/* A forward's socket: one flow per sender, any sender (udp_fwd.c) */
		for (fl = pt->flows; fl; fl = fl->pnext) {
			if (rn_udp_same_sender(&fl->g.dst, src))
				return fl;
		}
		return rn_udp_fwd_flow_new(w, pt, src);
	}
	fl = rn_udp_port_exact(w, pt, src);
	if (fl)
		return fl;
	for (fl = pt->flows; fl; fl = fl->pnext) {
		if (rn_udp_same_host(&fl->g.dst, src))
			return fl;
	}
	return NULL;
}

/**
 * rn_udp_deliver_batch() - put what one recvmmsg() returned into ring to_ns
 * @w:		worker
 * @fl:		flow whose own socket received them, or NULL
 * @pt:		else the port whose socket received them: each sender's
 *		flow is found by rn_udp_port_flow(), senders without one are
 *		dropped (host_drops)
 * @u:		UDP state holding @n received messages
 * @n:		number of messages
 *
 * With USO frames allowed (rn_udp_set_uso()), a run of datagrams from one
 * sender with one size (the last may be shorter) becomes one USO frame of up
 * to RN_UDP_GSO_SEGS datagrams, and a buffer the kernel coalesced (UDP_GRO)
 * stays one frame: one write into the tun device instead of one per datagram.
 * Without, every datagram is a frame of its own.
 */
static void rn_udp_deliver_batch(struct rn_worker *w, struct rn_udp_flow *fl,
				 struct rn_udp_port *pt, struct rn_udp *u, uint32_t n)
{
	uint8_t family = fl ? fl->g.f.key.family : pt->f.key.family;
	uint32_t max = family == 6 ? RN_UDP_MAX6 : RN_UDP_MAX4;
	uint32_t i, j, len, total, off, seg;
	struct iovec iov[RN_UDP_GSO_SEGS];
	int32_t last = -1;
	uint16_t gro;

	for (i = 0; i < n; i = j) {
		j = i + 1;
		len = u->rmsg[i].msg_len;
		if (u->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
			rn_ctr_add(w->ctr, RN_WCTR_host_drops, 1);
			continue;
		}
		if (pt && (last < 0 || !rn_udp_same_sender(&u->rsa[last], &u->rsa[i]))) {
			/* A new sender: find its flow (a run below has one sender) */
			fl = rn_udp_port_flow(w, pt, &u->rsa[i]);
			last = (int32_t)i;
		}
		if (!fl) {
			rn_ctr_add(w->ctr, RN_WCTR_host_drops, 1);
			continue;
		}
		iov[0].iov_base = u->rbuf[i];
		iov[0].iov_len = len;
		gro = rn_udp_gro_size(&u->rmsg[i].msg_hdr);
		if (gro && gro < len && (!u->uso || len / gro >= RN_UDP_GSO_SEGS)) {
			/* Coalesced by the kernel, but not to be passed on as such */
			for (off = 0; off < len; off += seg) {
				seg = len - off < gro ? len - off : gro;
				iov[0].iov_base = u->rbuf[i] + off;
				iov[0].iov_len = seg;
				rn_udp_deliver(w, fl, &u->rsa[i], iov, 1, seg, 0);
			}
			continue;
		}
		if (gro && gro < len) {
			rn_udp_deliver(w, fl, &u->rsa[i], iov, 1, len, gro);
			continue;
		}
		total = len;
		while (u->uso && len && j < n && j - i < RN_UDP_GSO_SEGS &&
		       !(u->rmsg[j].msg_hdr.msg_flags & MSG_TRUNC) &&
		       !rn_udp_gro_size(&u->rmsg[j].msg_hdr) &&
		       u->rmsg[j].msg_len && u->rmsg[j].msg_len <= len &&
		       total + u->rmsg[j].msg_len <= max &&
		       rn_udp_same_sender(&u->rsa[i], &u->rsa[j])) {
			iov[j - i].iov_base = u->rbuf[j];
			iov[j - i].iov_len = u->rmsg[j].msg_len;
			total += u->rmsg[j].msg_len;
			if (u->rmsg[j++].msg_len < len)
				break;
		}
		rn_udp_deliver(w, fl, &u->rsa[i], iov, j - i, total, j - i > 1 ? (uint16_t)len : 0);
	}
}

/**
 * rn_udp_quote() - the UDP header of a datagram quoted in an ICMP error
 * @k:		the flow's key
 * @l4:		8 bytes of header, then the payload the error queue returned
 * @len:	all of it
 */
static void rn_udp_quote(const struct rn_flow_key *k, uint8_t *l4, uint32_t len)
{
	rn_put_be16(l4, k->sport);
	rn_put_be16(l4 + 2, k->dport);
	rn_put_be16(l4 + 4, (uint16_t)len);
	rn_put_be16(l4 + 6, 0);
}

/**
 * rn_udp_port_pause() - stop reading a port until ring to_ns has room
 * @w:		worker
 * @pt:		port (it has flows)
 *
 * One of its flows waits for room on the port's behalf (ports are not in
 * the flow table, so the worker's lists hold flows only).
 */
static void rn_udp_port_pause(struct rn_worker *w, struct rn_udp_port *pt)
{
	/* A forward's socket without flows has no flow to wait with: it stays
	 * watched, and is read again once the pump made room */
	if (!pt->flows)
		return;
	rn_worker_flow_watch(w, &pt->f, 0);
	if (pt->paused)
		return;
	pt->paused = 1;
	pt->waiter = pt->flows;
	rn_worker_wait_room(w, &pt->waiter->g.f);
}

/**
 * rn_udp_read() - deliver what a socket holds, in batches, as far as to_ns has room
 * @w:		worker
 * @u:		the worker's UDP state
 * @fl:		a flow with a socket of its own (DNS), or NULL
 * @pt:		a port, or NULL: exactly one of @fl and @pt is given
 *
 * At most RN_UDP_RX_BUDGET batches of RN_UDP_RX_BATCH datagrams, so that one
 * busy socket does not starve the others; when to_ns is full the socket is
 * paused (its flow, or the port through one of its flows) until room comes.
 */
static void rn_udp_read(struct rn_worker *w, struct rn_udp *u, struct rn_udp_flow *fl,
			struct rn_udp_port *pt)
{
	int fd = pt ? pt->f.fd : fl->g.f.fd;
	uint32_t b, i, room;
	int n;

	for (b = 0; b < RN_UDP_RX_BUDGET && !w->err; b++) {
		room = rn_ring_frames_free(&w->tx, RN_FRAME_MAX);
		if (!room) {
			if (pt)
				rn_udp_port_pause(w, pt);
			else
				rn_dgram_pause(w, &fl->g.f);
			return;
		}
		if (room > RN_UDP_RX_BATCH)
			room = RN_UDP_RX_BATCH;
		for (i = 0; i < room; i++) {
			u->rmsg[i].msg_hdr.msg_namelen = sizeof(u->rsa[i]);
			u->rmsg[i].msg_hdr.msg_controllen = sizeof(u->rcmsg[i]);
		}
		n = recvmmsg(fd, u->rmsg, room, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		rn_udp_deliver_batch(w, fl, pt, u, (uint32_t)n);
		if ((uint32_t)n < room)
			return;
	}
}

/**
 * rn_udp_drain() - deliver what a flow's socket holds, as far as to_ns has room
 * @w:		worker
 * @fl:		flow
 * @events:	epoll events seen (EPOLLERR: read the error queue first)
 */
static void rn_udp_drain(struct rn_worker *w, struct rn_udp_flow *fl, uint32_t events)
{
	struct rn_udp *u = rn_udp_state(w);

	if ((events & EPOLLERR) &&
	    rn_dgram_errors(w, &fl->g, RN_UDP_HDR_LEN, rn_udp_quote, rn_udp_dns_err))
		return;
	if (!u)
		return;
	rn_udp_read(w, u, fl, NULL);
}

/**
 * rn_udp_port_errors() - report what a port's error queue holds to the namespace
 * @w:		worker
 * @pt:		port
 *
 * Each error names the destination of the datagram that caused it, which
 * finds the flow (errors for destinations without a flow are dropped).
 *
 * Return: 0, or -1 if ring to_ns is full (the port is paused) or corrupted
 */
static int rn_udp_port_errors(struct rn_worker *w, struct rn_udp_port *pt)
{
	uint8_t buf[RN_IP6_HDR_LEN + 1280];
	struct sockaddr_storage to;
	struct rn_udp_flow *fl;
	struct rn_icmp_err e;
	uint32_t len;
	int rc;

	for (;;) {
		if (!rn_ring_frames_free(&w->tx, sizeof(buf))) {
			rn_udp_port_pause(w, pt);
			return -1;
		}
		rc = rn_icmp_read_err(pt->f.fd, pt->f.key.family, buf + RN_UDP_HDR_LEN,
				      (uint32_t)sizeof(buf) - RN_UDP_HDR_LEN, &len, &e, &to);
		if (!rc)
			return 0;
		if (rc < 0)
			continue;
		fl = rn_udp_port_exact(w, pt, &to);
		if (!fl)
			continue;
		rn_udp_quote(&fl->g.f.key, buf, RN_UDP_HDR_LEN + len);
		if (rn_icmp_flow_err(w, &fl->g.f.key, &e, buf, RN_UDP_HDR_LEN + len) < 0)
			return -1;
	}
}

/**
 * rn_udp_port_drain() - deliver what a port's socket holds, as far as to_ns has room
 * @w:		worker
 * @pt:		port
 * @events:	epoll events seen (EPOLLERR: read the error queue first)
 */
void rn_udp_port_drain(struct rn_worker *w, struct rn_udp_port *pt, uint32_t events)
{
	struct rn_udp *u = w->udp;

	if (!u || pt->f.fd < 0 || pt->paused)
		return;
	if ((events & EPOLLERR) && rn_udp_port_errors(w, pt))
		return;
	rn_udp_read(w, u, NULL, pt);
}

/**
 * rn_udp_event() - ops->event: a port's or a DNS flow's socket is readable or has errors
 * @w:		worker
 * @f:		port or flow
 * @events:	epoll events
 */
void rn_udp_event(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	if (rn_udp_is_port(f))
		rn_udp_port_drain(w, (struct rn_udp_port *)f, events);
	else
		rn_udp_drain(w, (struct rn_udp_flow *)f, events);
}

/**
 * rn_udp_room() - ops->room: ring to_ns has room again; read the socket again
 * @w:		worker
 * @f:		a flow with its own socket, or one waiting for its port
 */
void rn_udp_room(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_udp_flow *fl = (struct rn_udp_flow *)f;
	struct rn_udp_port *pt = fl->port;

	if (!pt) {
		if (!rn_dgram_resume(w, f))
			rn_udp_drain(w, fl, EPOLLERR);
		return;
	}
	if (pt->waiter != fl)
		return;
	pt->waiter = NULL;
	pt->paused = 0;
	if (rn_worker_flow_watch(w, &pt->f, EPOLLIN)) {
		/* No way to hear the port again: end its flows (the last closes it) */
		while (pt->flows && pt->f.fd >= 0)
			rn_worker_flow_close(w, &pt->flows->g.f);
		return;
	}
	rn_udp_port_drain(w, pt, EPOLLERR);
}
