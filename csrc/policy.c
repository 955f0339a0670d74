/* policy.c - destination policy and translation for new flows
 *
 * The rules, in order, for a flow key as the namespace sees it (destination
 * address and port):
 *
 * 1. The DNS address (dns4, dns6) on port 53, TCP or UDP: the upstream
 *    resolver the caller names (the worker's current one, dns.c), whatever
 *    its family and even on host loopback (a resolver such as 127.0.0.53
 *    must work when host loopback is otherwise denied). No upstream: refused
 *    (RN_POLICY_NO_DNS). rn_policy_dns() applies the same rule to another
 *    upstream when a DNS flow fails over.
 * 2. The gateway address (gw4, gw6): 127.0.0.1 / ::1 when
 *    allow_host_loopback is set, else refused (RN_POLICY_LOOPBACK).
 * 3. Host loopback itself (127.0.0.0/8, ::1): refused unless
 *    allow_host_loopback (the namespace's own kernel never routes these out,
 *    so only crafted frames get here).
 * 4. Unroutable destinations: 0.0.0.0/8 (connect() to it reaches the host's
 *    loopback on Linux), 255.255.255.255, ::, IPv4-mapped and IPv4-compatible
 *    IPv6, link-local fe80::/10, and a family the namespace does not have:
 *    refused (RN_POLICY_INVALID).
 * 5. Other addresses in the namespace's own subnet (cidr4, cidr6; the DNS
 *    address on other ports included): nothing is there, refused
 *    (RN_POLICY_SUBNET). A prefix length of 0 means the subnet is unknown
 *    and this rule is skipped.
 * 6. Everything else: the same address and port on the host, unless
 *    loopback_only (tests) refuses all but host loopback (RN_POLICY_INVALID,
 *    also for a DNS upstream off the machine).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "policy.h"

#define RN_DNS_PORT		53u
#define RN_IPPROTO_TCP		6u
#define RN_IPPROTO_UDP		17u

/**
 * rn_policy_sa() - fill a sockaddr from a raw address and port
 * @d:		destination to fill
 * @family:	4 or 6
 * @addr:	network-order address, 4 or 16 bytes
 * @port:	port, host order
 */
static void rn_policy_sa(struct rn_policy_dest *d, int family, const uint8_t *addr,
			 uint16_t port)
{
	memset(&d->sa, 0, sizeof(d->sa));
	if (family == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&d->sa;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		d->salen = sizeof(*sin);
		d->family = AF_INET;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&d->sa;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		d->salen = sizeof(*sin6);
		d->family = AF_INET6;
	}
}

/**
 * rn_policy_in_prefix() - whether @a lies in the network of @net / @plen
 * @a:		address
 * @net:	any address of the network
 * @plen:	prefix length in bits
 * @alen:	address length in bytes
 *
 * Return: true if the first @plen bits agree
 */
static int rn_policy_in_prefix(const uint8_t *a, const uint8_t *net, unsigned int plen,
			       unsigned int alen)
{
	unsigned int full = plen / 8, rest = plen % 8;

	if (plen > alen * 8)
		return 0;
	if (memcmp(a, net, full))
		return 0;
	if (!rest)
		return 1;
	return !((a[full] ^ net[full]) & (0xffu << (8 - rest)));
}

/**
 * rn_policy_unroutable4() - IPv4 destinations no flow may go to
 * @a:		address
 *
 * Return: true for 0.0.0.0/8 and the limited broadcast address
 */
static int rn_policy_unroutable4(const uint8_t *a)
{
	return a[0] == 0 || !memcmp(a, "\xff\xff\xff\xff", 4);
}

/**
 * rn_policy_unroutable6() - IPv6 destinations no flow may go to
 * @a:		address
 *
 * Return: true for ::, IPv4-compatible (::/96 but ::1), IPv4-mapped
 *	   (::ffff:0:0/96) and link-local (fe80::/10) addresses
 */
static int rn_policy_unroutable6(const uint8_t *a)
{
	static const uint8_t zero[12];

	if (!memcmp(a, zero, 12))
		return !(a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1);
	if (!memcmp(a, zero, 10) && a[10] == 0xff && a[11] == 0xff)
		return 1;
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/**
 * rn_policy_dns() - the host destination of DNS upstream @i
 * @p:		worker parameters (DNS upstreams, loopback_only)
 * @i:		index into @p->dns
 * @d:		filled with the upstream's address when allowed (d->dns set,
 *		d->dns_up = @i)
 *
 * Return: RN_POLICY_ALLOW (0); RN_POLICY_NO_DNS if @i is not a valid
 *	   upstream; RN_POLICY_INVALID for one off the machine while
 *	   loopback_only is set
 */
int rn_policy_dns(const struct rn_worker_params *p, int i, struct rn_policy_dest *d)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	const struct rn_dns_upstream *up;

	memset(d, 0, sizeof(*d));
	if (i < 0 || (uint32_t)i >= p->ndns || i >= RN_DNS_UPSTREAM_MAX)
		return RN_POLICY_NO_DNS;
	up = &p->dns[i];
	if (up->family != 4 && up->family != 6)
		return RN_POLICY_NO_DNS;
	rn_policy_sa(d, up->family, up->addr, up->port);
	d->dns = 1;
	d->dns_up = (uint8_t)i;
	d->loopback = up->family == 4 ? up->addr[0] == 127 : !memcmp(up->addr, lo6, 16);
	return p->loopback_only && !d->loopback ? RN_POLICY_INVALID : RN_POLICY_ALLOW;
}

/**
 * rn_policy_dest() - decide where a new flow goes on the host
 * @p:		worker parameters (addresses, prefixes, policy, DNS upstreams)
 * @dns_up:	the upstream a DNS flow goes to (rn_dns_current()), -1 for none
 * @k:		flow key as the namespace sees it
 * @d:		filled with the host destination when allowed
 *
 * Return: RN_POLICY_ALLOW (0), or the enum rn_policy_reason refusing it
 */
int rn_policy_dest(const struct rn_worker_params *p, int dns_up, const struct rn_flow_key *k,
		   struct rn_policy_dest *d)
{
	static const uint8_t lo4[4] = { 127, 0, 0, 1 };
	static const uint8_t lo6[16] = { [15] = 1 };
	static const uint8_t zero6[16];
	int v6 = k->family == 6;
	unsigned int alen = v6 ? 16 : 4;
	const uint8_t *dns = v6 ? p->dns6 : p->dns4, *gw = v6 ? p->gw6 : p->gw4;
	const uint8_t *guest = v6 ? p->guest6 : p->guest4;
	unsigned int plen = v6 ? p->prefix6 : p->prefix4;

	memset(d, 0, sizeof(*d));
	if (k->family != 4 && k->family != 6)
		return RN_POLICY_INVALID;
	if (v6 && !memcmp(p->guest6, zero6, 16))
		return RN_POLICY_INVALID;

	if ((k->proto == RN_IPPROTO_TCP || k->proto == RN_IPPROTO_UDP) &&
	    k->dport == RN_DNS_PORT && !memcmp(k->daddr, dns, alen))
		return rn_policy_dns(p, dns_up, d);

	if (!memcmp(k->daddr, gw, alen)) {
		if (!p->allow_host_loopback)
			return RN_POLICY_LOOPBACK;
		rn_policy_sa(d, k->family, v6 ? lo6 : lo4, k->dport);
		d->loopback = 1;
		return RN_POLICY_ALLOW;
	}

	if (v6 ? !memcmp(k->daddr, lo6, 16) : k->daddr[0] == 127) {
		if (!p->allow_host_loopback)
			return RN_POLICY_LOOPBACK;
		rn_policy_sa(d, k->family, k->daddr, k->dport);
		d->loopback = 1;
		return RN_POLICY_ALLOW;
	}

	if (v6 ? rn_policy_unroutable6(k->daddr) : rn_policy_unroutable4(k->daddr))
		return RN_POLICY_INVALID;
	if (plen && rn_policy_in_prefix(k->daddr, guest, plen, alen))
		return RN_POLICY_SUBNET;
	if (p->loopback_only)
		return RN_POLICY_INVALID;

	rn_policy_sa(d, k->family, k->daddr, k->dport);
	return RN_POLICY_ALLOW;
}

/**
 * rn_policy_reason_name() - a refusal reason as text
 * @reason:	enum rn_policy_reason
 *
 * Return: a static string
 */
const char *rn_policy_reason_name(int reason)
{
	switch (reason) {
	case RN_POLICY_ALLOW:
		return "allow";
	case RN_POLICY_LOOPBACK:
		return "loopback";
	case RN_POLICY_SUBNET:
		return "subnet";
	case RN_POLICY_INVALID:
		return "invalid";
	case RN_POLICY_NO_DNS:
		return "no_dns";
	}
	return "unknown";
}
