/* icmp.c - ICMP and ICMPv6: echo for the gateway, echo forwarding, errors to the namespace
 *
 * Theory of operation
 * -------------------
 * Echo requests are the only ICMP messages the namespace may send; anything
 * else is dropped (drop_icmp_type). A request is checked (length, type and
 * code, then the checksum over the whole message, after completing a
 * NEEDS_CSUM partial checksum) and then:
 *
 * - to the gateway address while host loopback is not allowed, or to the DNS
 *   address: answered at once, the reply written straight into ring to_ns
 *   (icmp_echo_replies, icmp6_echo_replies);
 * - to anything else: forwarded through an unprivileged ICMP datagram socket
 *   ("ping socket": SOCK_DGRAM, IPPROTO_ICMP or IPPROTO_ICMPV6), one per
 *   (destination, identifier) flow, after the destination policy
 *   (policy.c: the gateway is host loopback when allowed, the own subnet and
 *   host loopback are refused with an ICMP unreachable). The kernel replaces
 *   the identifier by the socket's own; replies get the namespace's
 *   identifier back, a fresh checksum and the namespace's addresses.
 *   Replies are received straight into ring to_ns, never without room
 *   (the flow waits for room instead). Idle flows close after
 *   RN_ICMP_TIMEOUT_MS.
 *
 * Ping sockets need the worker's group in net.ipv4.ping_group_range (which
 * also covers ICMPv6). When socket() is refused, the namespace gets
 * "administratively prohibited" for each request (icmp_ping_denied) and the
 * worker says why on stderr, once; requests to the gateway mapped to host
 * loopback are then answered by the worker, since loopback would answer.
 *
 * ICMP errors towards the namespace (this file builds all of them, for UDP
 * too): rn_icmp_refuse() answers a frame the worker refuses, quoting the
 * frame; rn_icmp_read_err() reads an error from a host socket's error queue
 * (IP_RECVERR, IPV6_RECVERR) and rn_icmp_flow_err() reports it, quoting a
 * reconstruction of what the namespace sent. Errors come from the
 * destination for "port unreachable", else from the gateway, as a router
 * would send them; they never exceed 576 (IPv4) or 1280 (IPv6) bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checksum.h"
#include "dgram.h"
#include "flowtab.h"
#include "icmp.h"
#include "ip.h"
#include "policy.h"

#define RN_ICMP_HDR_LEN		8u
#define RN_ICMP_ECHO_REPLY	0u
#define RN_ICMP_UNREACH		3u
#define RN_ICMP_ECHO_REQUEST	8u
#define RN_ICMP_TIME_EXCEEDED	11u
#define RN_ICMP6_UNREACH	1u
#define RN_ICMP6_TOO_BIG	2u
#define RN_ICMP6_TIME_EXCEEDED	3u
#define RN_ICMP6_ECHO_REQUEST	128u
#define RN_ICMP6_ECHO_REPLY	129u
/* Largest ICMP error: the minimum MTU each version guarantees */
#define RN_ICMP4_ERR_MAX	576u
#define RN_ICMP6_ERR_MAX	1280u
/* Idle echo flows close after this long, as in passt */
#define RN_ICMP_TIMEOUT_MS	60000
/* Replies read per host socket event */
#define RN_ICMP_RECV_BUDGET	16u

/**
 * rn_icmp_echo_reply() - answer an echo request to the gateway or DNS address
 * @w:		worker
 * @f:		the validated request, fully pulled
 * @msg:	the request's ICMP message (f->l4len bytes, private copy)
 *
 * The reply carries the request's identifier, sequence number and data, and
 * over IPv4 the request's TOS, identification and DF. Its checksum is the
 * request's, updated for the new type (RFC 1624): the IPv6 pseudo-header sum
 * does not change when the addresses swap.
 *
 * Return: the reply counter, ring_full, or negative errno (ring corrupted)
 */
static int rn_icmp_echo_reply(struct rn_worker *w, struct rn_frame *f, const uint8_t *msg)
{
	int v6 = f->family == 6;
	uint8_t req_type = v6 ? RN_ICMP6_ECHO_REQUEST : RN_ICMP_ECHO_REQUEST;
	uint8_t rep_type = v6 ? RN_ICMP6_ECHO_REPLY : RN_ICMP_ECHO_REPLY;
	uint32_t l3out = rn_ip_hdr_len(f->family);
	uint16_t csum = rn_be16(msg + 2);
	struct rn_ip_out o = {
		.family = f->family, .proto = v6 ? RN_IPPROTO_ICMPV6 : RN_IPPROTO_ICMP,
		.src = f->daddr, .dst = f->saddr, .l4len = f->l4len,
	};
	uint8_t *out;
	int err;

	if (!v6) {
		o.tos = f->l3.p[1];
		o.id = rn_be16(f->l3.p + 4);
		o.flags = (rn_be16(f->l3.p + 6) & RN_IPV4_DF) ? RN_IP_OUT_DF : 0;
	}
	out = rn_worker_tx_reserve(w, l3out + f->l4len, &err);
	if (!out)
		return err ? err : RN_WCTR_ring_full;
	rn_ip_build(out, &o);
	memcpy(out + l3out, msg, f->l4len);
	out[l3out] = rep_type;
	rn_put_be16(out + l3out + 2, rn_csum_update16(csum, (uint16_t)(req_type << 8),
						      (uint16_t)(rep_type << 8)));
	rn_worker_tx_commit(w, l3out + f->l4len);

	return v6 ? RN_WCTR_icmp6_echo_replies : RN_WCTR_icmp_echo_replies;
}

/**
 * rn_icmp_type_code() - the ICMP or ICMPv6 header fields of an error
 * @v6:		ICMPv6
 * @e:		the error
 * @hdr:	first 8 bytes of the message: type, code, checksum 0, rest
 */
static void rn_icmp_type_code(int v6, const struct rn_icmp_err *e, uint8_t *hdr)
{
	static const uint8_t code4[] = { [RN_ICMP_NET] = 0, [RN_ICMP_HOST] = 1,
		[RN_ICMP_PORT] = 3, [RN_ICMP_ADMIN] = 13, [RN_ICMP_TOO_BIG] = 4 };
	static const uint8_t code6[] = { [RN_ICMP_NET] = 0, [RN_ICMP_HOST] = 3,
		[RN_ICMP_PORT] = 4, [RN_ICMP_ADMIN] = 1 };
	uint8_t kind = e->kind <= RN_ICMP_TIME ? e->kind : RN_ICMP_HOST;

	memset(hdr, 0, RN_ICMP_HDR_LEN);
	if (kind == RN_ICMP_TIME) {
		hdr[0] = v6 ? RN_ICMP6_TIME_EXCEEDED : RN_ICMP_TIME_EXCEEDED;
	} else if (v6 && kind == RN_ICMP_TOO_BIG) {
		hdr[0] = RN_ICMP6_TOO_BIG;
		rn_put_be32(hdr + 4, e->mtu);
	} else if (v6) {
		hdr[0] = RN_ICMP6_UNREACH;
		hdr[1] = code6[kind];
	} else {
		hdr[0] = RN_ICMP_UNREACH;
		hdr[1] = code4[kind];
		if (kind == RN_ICMP_TOO_BIG)
			rn_put_be16(hdr + 6, (uint16_t)(e->mtu > 0xffff ? 0xffff : e->mtu));
	}
}

/**
 * rn_icmp_error() - put an ICMP error for the namespace into ring to_ns
 * @w:		worker
 * @family:	4 or 6
 * @e:		the error
 * @daddr:	the destination the quoted packet went to, as the namespace
 *		named it: the error's source for "port unreachable"
 * @quote:	the packet the error is about, from its IP header on
 * @qlen:	its length; cut to what fits in 576 or 1280 bytes
 *
 * Return: 1 if sent, 0 if ring to_ns is full (nothing sent), negative errno
 *	   if the ring is corrupted
 */
static int rn_icmp_error(struct rn_worker *w, int family, const struct rn_icmp_err *e,
			 const uint8_t *daddr, const uint8_t *quote, uint32_t qlen)
{
	int v6 = family == 6;
	const uint8_t *guest = v6 ? w->p.guest6 : w->p.guest4;
	const uint8_t *src = e->kind == RN_ICMP_PORT ? daddr : v6 ? w->p.gw6 : w->p.gw4;
	uint32_t l3 = rn_ip_hdr_len(family), max = v6 ? RN_ICMP6_ERR_MAX : RN_ICMP4_ERR_MAX;
	struct rn_ip_out o = {
		.family = (uint8_t)family, .proto = v6 ? RN_IPPROTO_ICMPV6 : RN_IPPROTO_ICMP,
		.flags = RN_IP_OUT_DF, .src = src, .dst = guest,
	};
	uint32_t len, sum = 0;
	uint8_t *out, *msg;
	int err;

	if (qlen > max - l3 - RN_ICMP_HDR_LEN)
		qlen = max - l3 - RN_ICMP_HDR_LEN;
	len = RN_ICMP_HDR_LEN + qlen;
	out = rn_worker_tx_reserve(w, l3 + len, &err);
	if (!out)
		return err;
	o.l4len = len;
	rn_ip_build(out, &o);
	msg = out + l3;
	rn_icmp_type_code(v6, e, msg);
	memcpy(msg + RN_ICMP_HDR_LEN, quote, qlen);
	if (v6)
		sum = rn_csum_pseudo6(src, guest, RN_IPPROTO_ICMPV6, len);
	rn_put_be16(msg + 2, rn_csum(msg, len, sum));
	rn_worker_tx_commit(w, l3 + len);
	rn_ctr_add(w->ctr, RN_WCTR_icmp_errors_out, 1);
	return 1;
}

/**
 * rn_icmp_policy_kind() - the ICMP error that tells the namespace a policy refusal
 * @reason:	enum rn_policy_reason, not RN_POLICY_ALLOW
 *
 * Return: enum rn_icmp_kind: host loopback, the host's own addresses and
 *	   link-local destinations are administratively prohibited, a
 *	   missing DNS upstream looks like a closed port, addresses in the own
 *	   subnet are unreachable hosts, unroutable ones unreachable networks
 */
int rn_icmp_policy_kind(int reason)
{
	switch (reason) {
	case RN_POLICY_LOOPBACK:
	case RN_POLICY_HOST:
	case RN_POLICY_LINK_LOCAL:
	case RN_POLICY_RULE:
		return RN_ICMP_ADMIN;
	case RN_POLICY_NO_DNS:
		return RN_ICMP_PORT;
	case RN_POLICY_SUBNET:
		return RN_ICMP_HOST;
	}
	return RN_ICMP_NET;
}

/**
 * rn_icmp_refuse() - answer a frame from the namespace with an ICMP error
 * @w:		worker
 * @f:		validated frame (not itself an ICMP error)
 * @kind:	enum rn_icmp_kind (not RN_ICMP_TOO_BIG)
 *
 * The error quotes the frame's IP header and as much of its transport part
 * as fits, from the private copy.
 *
 * Return: 1 if sent, 0 if ring to_ns is full, negative errno if it is corrupted
 */
int rn_icmp_refuse(struct rn_worker *w, struct rn_frame *f, int kind)
{
	struct rn_icmp_err e = { .kind = (uint8_t)kind };
	uint32_t room = (f->family == 6 ? RN_ICMP6_ERR_MAX : RN_ICMP4_ERR_MAX) -
			2 * f->l3len - RN_ICMP_HDR_LEN;
	uint32_t n = rn_worker_pull(w, f, room);

	return rn_icmp_error(w, f->family, &e, f->daddr, w->buf + RN_VNET_HDR_LEN,
			     f->l3len + n);
}

/**
 * rn_icmp_err_kind4() - classify an ICMP (IPv4) error a host socket received
 * @type:	ICMP type
 * @code:	ICMP code
 *
 * Return: enum rn_icmp_kind, or -1 for messages that are not reported
 */
static int rn_icmp_err_kind4(uint8_t type, uint8_t code)
{
	if (type == RN_ICMP_TIME_EXCEEDED)
		return RN_ICMP_TIME;
	if (type != RN_ICMP_UNREACH)
		return -1;
	switch (code) {
	case 0: case 6: case 11:
		return RN_ICMP_NET;
	case 2: case 3:
		return RN_ICMP_PORT;
	case 4:
		return RN_ICMP_TOO_BIG;
	case 9: case 10: case 13:
		return RN_ICMP_ADMIN;
	}
	return RN_ICMP_HOST;
}

/**
 * rn_icmp_err_kind6() - classify an ICMPv6 error a host socket received
 * @type:	ICMPv6 type
 * @code:	ICMPv6 code
 *
 * Return: enum rn_icmp_kind, or -1 for messages that are not reported
 */
static int rn_icmp_err_kind6(uint8_t type, uint8_t code)
{
	if (type == RN_ICMP6_TOO_BIG)
		return RN_ICMP_TOO_BIG;
	if (type == RN_ICMP6_TIME_EXCEEDED)
		return RN_ICMP_TIME;
	if (type != RN_ICMP6_UNREACH)
		return -1;
	switch (code) {
	case 0:
		return RN_ICMP_NET;
	case 1: case 5: case 6:
		return RN_ICMP_ADMIN;
	case 4:
		return RN_ICMP_PORT;
	}
	return RN_ICMP_HOST;
}

/**
 * rn_icmp_read_err() - read one error from a host socket's error queue
 * @fd:		socket with IP_RECVERR or IPV6_RECVERR set
 * @ns_family:	the namespace side's IP version (4 or 6), for the MTU
 * @buf:	receives the start of the offending datagram's payload (for
 *		ICMP sockets: the echo message)
 * @cap:	size of @buf
 * @len:	set to the bytes stored in @buf
 * @e:		set to the error, as the namespace should see it
 * @to:		if not NULL, set to the destination of the offending datagram
 *		(what an unconnected socket needs to find the flow), or zeroed
 *		if the kernel did not say
 *
 * Also clears the socket's pending error (SO_ERROR), which would otherwise
 * keep EPOLLERR raised once the queue is empty.
 *
 * Return: 1 if an error was read and translated, 0 if the queue is empty,
 *	   -1 if an entry was read that is not reported (try the next one)
 */
int rn_icmp_read_err(int fd, int ns_family, uint8_t *buf, uint32_t cap, uint32_t *len,
		     struct rn_icmp_err *e, struct sockaddr_storage *to)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct sock_extended_err) +
				    sizeof(struct sockaddr_in6))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct sockaddr_storage name;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_name = &name,
			     .msg_namelen = sizeof(name),
			     .msg_control = control.buf, .msg_controllen = sizeof(control) };
	const struct sock_extended_err *ee = NULL;
	struct cmsghdr *c;
	int kind, host6 = 0, soerr;
	socklen_t sl = sizeof(soerr);
	ssize_t n;

	n = recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
	if (n < 0) {
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		return 0;
	}
	*len = (uint32_t)n;
	if (to) {
		memset(to, 0, sizeof(*to));
		if (mh.msg_namelen >= sizeof(struct sockaddr_in) &&
		    mh.msg_namelen <= sizeof(name))
			memcpy(to, &name, mh.msg_namelen);
	}
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
		    (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
			ee = (const struct sock_extended_err *)CMSG_DATA(c);
			host6 = c->cmsg_level == SOL_IPV6;
		}
	}
	if (!ee)
		return -1;

	switch (ee->ee_origin) {
	case SO_EE_ORIGIN_ICMP:
		kind = rn_icmp_err_kind4(ee->ee_type, ee->ee_code);
		break;
	case SO_EE_ORIGIN_ICMP6:
		kind = rn_icmp_err_kind6(ee->ee_type, ee->ee_code);
		break;
	case SO_EE_ORIGIN_LOCAL:
		kind = ee->ee_errno == EMSGSIZE ? RN_ICMP_TOO_BIG : -1;
		break;
	default:
		kind = -1;
	}
	if (kind < 0)
		return -1;
	e->kind = (uint8_t)kind;
	e->mtu = ee->ee_info;
	if (kind == RN_ICMP_TOO_BIG) {
		/* The same packet size has 20 bytes more payload room over IPv4 */
		if (host6 && ns_family == 4)
			e->mtu = e->mtu > 20 ? e->mtu - 20 : 0;
		else if (!host6 && ns_family == 6)
			e->mtu += 20;
		if (ns_family == 6 && e->mtu < 1280)
			e->mtu = 1280;
		else if (ns_family == 4 && e->mtu < 68)
			e->mtu = 68;
	}
	return 1;
}

/**
 * rn_icmp_flow_err() - report a host socket's error to the namespace
 * @w:		worker
 * @k:		the flow the error belongs to, as the namespace sees it
 * @e:		the error (rn_icmp_read_err())
 * @l4:		transport header and payload as the namespace sent them (as far
 *		as known)
 * @l4len:	their length
 *
 * The quoted packet is rebuilt: an IP header from the namespace's address
 * to the flow's destination, then @l4.
 *
 * Return: 1 if sent, 0 if ring to_ns is full, negative errno if it is corrupted
 */
int rn_icmp_flow_err(struct rn_worker *w, const struct rn_flow_key *k,
		     const struct rn_icmp_err *e, const uint8_t *l4, uint32_t l4len)
{
	uint8_t quote[RN_ICMP6_ERR_MAX];
	uint32_t l3 = rn_ip_hdr_len(k->family), room = sizeof(quote) - l3;
	struct rn_ip_out o = {
		.family = k->family, .proto = k->proto, .flags = RN_IP_OUT_DF | RN_IP_OUT_BARE,
		.src = k->saddr, .dst = k->daddr, .l4len = l4len,
	};

	rn_ip_build(quote, &o);
	memcpy(quote + l3, l4, l4len < room ? l4len : room);
	return rn_icmp_error(w, k->family, e, k->daddr, quote,
			     l3 + (l4len < room ? l4len : room));
}

/**
 * rn_icmp_log_denied() - say once why echo requests get "prohibited"
 * @w:		worker
 * @err:	errno of the refused socket()
 */
static void rn_icmp_log_denied(struct rn_worker *w, int err)
{
	char range[64] = "unreadable";
	ssize_t n;
	int fd;

	if (w->logged & RN_WORKER_LOGGED_PING)
		return;
	w->logged |= RN_WORKER_LOGGED_PING;
	fd = open("/proc/sys/net/ipv4/ping_group_range", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, range, sizeof(range) - 1);
		range[n > 0 ? n : 0] = '\0';
		for (n = 0; range[n]; n++) {
			if (range[n] == '\t' || range[n] == '\n')
				range[n] = range[n] == '\t' ? ' ' : '\0';
		}
		close(fd);
	}
	dprintf(STDERR_FILENO, "ringnet[worker %d] WARNING ping sockets are not permitted (%s): "
		"group %u is outside net.ipv4.ping_group_range (\"%s\"), so echo requests from "
		"the namespace to hosts other than the gateway get ICMP unreachable "
		"(administratively prohibited); allow with "
		"sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"\n",
		(int)getpid(), strerror(err), (unsigned int)getgid(), range);
}

/**
 * rn_icmp_to_gateway() - whether @f is addressed to a gateway address
 * @w:		worker
 * @f:		validated frame
 */
static int rn_icmp_to_gateway(const struct rn_worker *w, const struct rn_frame *f)
{
	int v6 = f->family == 6;

	return !memcmp(f->daddr, v6 ? w->p.gw6 : w->p.gw4, v6 ? 16 : 4);
}

/**
 * rn_icmp_flow_new() - open a ping socket flow for an echo request
 * @w:		worker
 * @f:		the validated request
 * @msg:	its ICMP message (f->l4len bytes, private copy)
 * @k:		its flow key
 * @out:	set to the new flow
 *
 * When ping sockets are not permitted, a request to the gateway (which maps
 * to host loopback, always up and always answering) is answered by the
 * worker itself, as it is when host loopback is not mapped; other
 * destinations get an ICMP unreachable.
 *
 * Return: 0, or the outcome counter of a request answered or refused here
 *	   (refused: after an ICMP unreachable where the policy or
 *	   ping_group_range says no), or negative errno (ring corrupted)
 */
static int rn_icmp_flow_new(struct rn_worker *w, struct rn_frame *f, const uint8_t *msg,
			    const struct rn_flow_key *k, struct rn_dgram_flow **out)
{
	static const struct rn_dgram_spec spec = {
		.type = RN_FLOW_ICMP, .icmp = 1, .size = sizeof(struct rn_dgram_flow),
		.timeout_ms = RN_ICMP_TIMEOUT_MS,
	};
	int rc, err;

	/* Echo flows are plain datagram flows; their key ports are the identifier */
	rc = rn_dgram_open(w, f, k, &spec, out, &err);
	if (err == EACCES || err == EPERM) {
		rn_icmp_log_denied(w, err);
		if (rn_icmp_to_gateway(w, f))
			return rn_icmp_echo_reply(w, f, msg);
		rc = rn_icmp_refuse(w, f, RN_ICMP_ADMIN);
		return rc < 0 ? rc : RN_WCTR_icmp_ping_denied;
	}
	return rc;
}

/**
 * rn_icmp_forward() - send an echo request through its flow's ping socket
 * @w:		worker
 * @f:		the validated request, fully pulled
 * @msg:	its ICMP message (f->l4len bytes, private copy)
 *
 * Return: the outcome counter, or negative errno (ring corrupted)
 */
static int rn_icmp_forward(struct rn_worker *w, struct rn_frame *f, const uint8_t *msg)
{
	struct rn_dgram_flow *fl;
	struct rn_flow_key k;
	int rc;

	if (rn_flow_key_parse(w->buf + RN_VNET_HDR_LEN, f->copied - RN_VNET_HDR_LEN, &k))
		return RN_WCTR_drop_icmp_header;
	fl = (struct rn_dgram_flow *)rn_flowtab_lookup(&w->flows, &k);
	if (!fl) {
		rc = rn_icmp_flow_new(w, f, msg, &k, &fl);
		if (rc)
			return rc;
	}
	if (sendto(fl->f.fd, msg, f->l4len, 0, (const struct sockaddr *)&fl->dst,
		   fl->dstlen) < 0)
		rn_ctr_add(w->ctr, RN_WCTR_host_send_errors, 1);
	fl->f.last = w->now;
	fl->f.bytes_up += f->l4len - RN_ICMP_HDR_LEN;
	fl->f.pkts_up++;
	return f->family == 6 ? RN_WCTR_icmp6_echo_fwd : RN_WCTR_icmp_echo_fwd;
}

/**
 * rn_icmp_local() - whether the worker itself answers echo requests to @f's destination
 * @w:		worker
 * @f:		validated frame
 *
 * Return: true for the DNS address, and for the gateway unless it maps to
 *	   host loopback
 */
static int rn_icmp_local(const struct rn_worker *w, const struct rn_frame *f)
{
	int v6 = f->family == 6;
	uint32_t alen = v6 ? 16 : 4;

	if (!memcmp(f->daddr, v6 ? w->p.dns6 : w->p.dns4, alen))
		return 1;
	return !w->p.allow_host_loopback && rn_icmp_to_gateway(w, f);
}

/**
 * rn_icmp_input() - handle an ICMP (IPv4) or ICMPv6 (IPv6) message from the namespace
 * @w:		worker
 * @f:		validated frame, f->proto ICMP for IPv4 or ICMPv6 for IPv6
 *
 * Only echo requests pass (see the top of this file); they are answered by
 * the worker or forwarded through a ping socket.
 *
 * Return: the counter recording what became of the frame, or negative errno
 *	   if ring to_ns turned out to be corrupted
 */
int rn_icmp_input(struct rn_worker *w, struct rn_frame *f)
{
	int v6 = f->family == 6;
	uint8_t req_type = v6 ? RN_ICMP6_ECHO_REQUEST : RN_ICMP_ECHO_REQUEST;
	const uint8_t *msg;
	uint32_t sum = 0;

	if (f->l4len < RN_ICMP_HDR_LEN || !(msg = rn_pkt_get(&f->l4, 0, RN_ICMP_HDR_LEN)))
		return RN_WCTR_drop_icmp_header;
	if (msg[0] != req_type || msg[1] != 0)
		return RN_WCTR_drop_icmp_type;

	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM) {
		/* Only the checksum field itself may be left to us */
		if (f->vnet.csum_start != f->l3len || f->vnet.csum_offset != 2)
			return RN_WCTR_drop_icmp_csum;
	}
	if (rn_worker_pull(w, f, f->l4len) != f->l4len)
		return RN_WCTR_drop_icmp_header;
	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM)
		rn_worker_csum_complete(w, f);

	msg = rn_pkt_get(&f->l4, 0, f->l4len);
	if (!msg)
		return RN_WCTR_drop_icmp_header;
	if (v6)
		sum = rn_csum_pseudo6(f->saddr, f->daddr, RN_IPPROTO_ICMPV6, f->l4len);
	if (rn_csum(msg, f->l4len, sum))
		return RN_WCTR_drop_icmp_csum;

	if (rn_icmp_local(w, f))
		return rn_icmp_echo_reply(w, f, msg);
	return rn_icmp_forward(w, f, msg);
}

/**
 * rn_icmp_reply() - put one echo reply from the ping socket into ring to_ns
 * @w:		worker
 * @fl:		flow
 *
 * The reply is received straight into a reserved frame; anything but an
 * echo reply is left uncommitted (counted host_drops).
 *
 * Return: 1 if a message was read, 0 if the socket is drained or to_ns is
 *	   full (then the flow waits for room)
 */
static int rn_icmp_reply(struct rn_worker *w, struct rn_dgram_flow *fl)
{
	const struct rn_flow_key *k = &fl->f.key;
	int v6 = k->family == 6, err;
	/* IPv4 counts its header in the 64 KiB limit, IPv6 does not */
	uint32_t l3 = rn_ip_hdr_len(k->family), max = v6 ? 65535 : 65535 - l3, len, sum = 0;
	const uint8_t *guest = v6 ? w->p.guest6 : w->p.guest4;
	struct rn_ip_out o = {
		.family = k->family, .proto = v6 ? RN_IPPROTO_ICMPV6 : RN_IPPROTO_ICMP,
		.flags = RN_IP_OUT_DF, .src = k->daddr, .dst = guest,
	};
	uint8_t *out, *msg;
	ssize_t n;

	out = rn_worker_tx_reserve(w, l3 + max, &err);
	if (!out) {
		if (!err)
			rn_dgram_pause(w, &fl->f);
		return 0;
	}
	msg = out + l3;
	n = recv(fl->f.fd, msg, max, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0)
		return 0;
	len = (uint32_t)n;
	if (len > max || len < RN_ICMP_HDR_LEN || msg[1] != 0 ||
	    msg[0] != (v6 ? RN_ICMP6_ECHO_REPLY : RN_ICMP_ECHO_REPLY)) {
		rn_ctr_add(w->ctr, RN_WCTR_host_drops, 1);
		return 1;
	}
	rn_put_be16(msg + 4, k->sport);
	rn_put_be16(msg + 2, 0);
	if (v6)
		sum = rn_csum_pseudo6(k->daddr, guest, RN_IPPROTO_ICMPV6, len);
	rn_put_be16(msg + 2, rn_csum(msg, len, sum));
	o.l4len = len;
	rn_ip_build(out, &o);
	rn_worker_tx_commit(w, l3 + len);
	rn_ctr_add(w->ctr, RN_WCTR_icmp_echo_in, 1);
	fl->f.last = w->now;
	fl->f.bytes_down += len - RN_ICMP_HDR_LEN;
	fl->f.pkts_down++;
	return 1;
}

/**
 * rn_icmp_quote() - give a quoted echo request its namespace identifier back
 * @k:		the flow's key (ports: the identifier)
 * @l4:		the echo request the error queue returned
 * @len:	its length
 */
static void rn_icmp_quote(const struct rn_flow_key *k, uint8_t *l4, uint32_t len)
{
	if (len >= RN_ICMP_HDR_LEN)
		rn_put_be16(l4 + 4, k->sport);
}

/**
 * rn_icmp_drain() - deliver what a flow's ping socket holds, as room allows
 * @w:		worker
 * @fl:		flow
 * @events:	epoll events seen (EPOLLERR: read the error queue first)
 */
static void rn_icmp_drain(struct rn_worker *w, struct rn_dgram_flow *fl, uint32_t events)
{
	unsigned int i;

	if ((events & EPOLLERR) && rn_dgram_errors(w, fl, 0, rn_icmp_quote, NULL))
		return;
	for (i = 0; i < RN_ICMP_RECV_BUDGET && !w->err; i++) {
		if (!rn_icmp_reply(w, fl))
			return;
	}
}

/**
 * rn_icmp_event() - ops->event: the ping socket is readable or has errors
 * @w:		worker
 * @f:		flow
 * @events:	epoll events
 */
static void rn_icmp_event(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	rn_icmp_drain(w, (struct rn_dgram_flow *)f, events);
}

/**
 * rn_icmp_room() - ops->room: ring to_ns has room again; read the socket again
 * @w:		worker
 * @f:		flow
 */
static void rn_icmp_room(struct rn_worker *w, struct rn_flow *f)
{
	if (!rn_dgram_resume(w, f))
		rn_icmp_drain(w, (struct rn_dgram_flow *)f, EPOLLERR);
}

const struct rn_flow_ops rn_icmp_ops = {
	.event = rn_icmp_event,
	.timer = rn_dgram_timer,
	.room = rn_icmp_room,
	.release = NULL,
};
