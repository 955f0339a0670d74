/* policy.c - destination policy and translation for new flows
 *
 * The rules, in order, for a flow key as the namespace sees it (destination
 * address and port):
 *
 * 1. The DNS address (dns4, dns6) on port 53, TCP or UDP: the upstream
 *    resolver the caller names (the worker's current one, dns.c), whatever
 *    its family and even on host loopback or an address of the host (a
 *    resolver such as 127.0.0.53 must work when host loopback is otherwise
 *    denied). No upstream: refused (RN_POLICY_NO_DNS). rn_policy_dns()
 *    applies the same rule to another upstream when a DNS flow fails over.
 * 2. The gateway address (gw4, gw6): 127.0.0.1 / ::1 when
 *    allow_host_loopback is set, else refused (RN_POLICY_LOOPBACK).
 * 3. Host loopback itself (127.0.0.0/8, ::1): always refused
 *    (RN_POLICY_LOOPBACK). The namespace's own kernel never routes these
 *    out, so only hand-made frames get here; allow_host_loopback opens the
 *    gateway mapping only, not the rest of 127/8.
 * 4. Unroutable destinations: 0.0.0.0/8 (connect() to it reaches the host's
 *    loopback on Linux), 255.255.255.255, ::, IPv4-mapped and IPv4-compatible
 *    IPv6, and a family the namespace does not have: refused
 *    (RN_POLICY_INVALID).
 * 5. Link-local destinations, 169.254.0.0/16 and fe80::/10, where cloud
 *    metadata services answer (169.254.169.254): refused unless
 *    allow_link_local (RN_POLICY_LINK_LOCAL). Allowed, an IPv6 link-local
 *    destination still fails on the host (no interface to scope it to).
 * 6. The host's own addresses (every address of every interface, as
 *    netlink's local routes list them, kept current by the orchestrator):
 *    refused unless allow_host (RN_POLICY_HOST). A server listening on
 *    0.0.0.0 of the host is otherwise reachable through them even when host
 *    loopback is denied.
 * 7. Other addresses in the namespace's own subnet (cidr4, cidr6; the DNS
 *    address on other ports included): nothing is there, refused
 *    (RN_POLICY_SUBNET). A prefix length of 0 means the subnet is unknown
 *    and this rule is skipped.
 * 8. Everything else: the same address and port on the host, unless
 *    loopback_only (tests) refuses all but host loopback and the host's own
 *    addresses, which stay on the machine (RN_POLICY_INVALID, also for a DNS
 *    upstream off the machine).
 *
 * A flow these rules allow is then judged by the user's egress rules
 * (rn_policy_dest() calls rn_rules_check(), rules.c): RN_POLICY_RULE refuses it.
 *
 * The host's addresses are two sorted arrays in the worker's parameters
 * (at most RN_HOST_ADDR_MAX per family), searched by bisection; an update
 * (rn_policy_host_set(), between two loop passes) replaces them whole, so a
 * decision sees either the old set or the new one. Flows already open stay
 * open when their destination becomes an address of the host.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "rules.h"

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
 * Return: true for ::, IPv4-compatible (::/96 but ::1) and IPv4-mapped
 *	   (::ffff:0:0/96) addresses
 */
static int rn_policy_unroutable6(const uint8_t *a)
{
	static const uint8_t zero[12];

	if (!memcmp(a, zero, 12))
		return !(a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1);
	return !memcmp(a, zero, 10) && a[10] == 0xff && a[11] == 0xff;
}

/**
 * rn_policy_link_local() - whether a destination is link-local
 * @family:	4 or 6
 * @a:		address
 *
 * Return: true for 169.254.0.0/16 and fe80::/10
 */
static int rn_policy_link_local(int family, const uint8_t *a)
{
	if (family == 4)
		return a[0] == 169 && a[1] == 254;
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/**
 * rn_policy_is_host() - whether an address is one of the host's own
 * @p:		worker parameters (host4/host6, sorted)
 * @family:	4 or 6
 * @addr:	network-order address, 4 or 16 bytes
 *
 * Return: true if @addr is in the host's address set
 */
int rn_policy_is_host(const struct rn_worker_params *p, int family, const uint8_t *addr)
{
	const uint8_t *base = family == 6 ? &p->host6[0][0] : &p->host4[0][0];
	uint32_t n = family == 6 ? p->nhost6 : p->nhost4;
	size_t alen = family == 6 ? 16 : 4;
	uint32_t lo = 0, hi, mid;
	int c;

	if (family != 4 && family != 6)
		return 0;
	hi = n < RN_HOST_ADDR_MAX ? n : RN_HOST_ADDR_MAX;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = memcmp(addr, base + mid * alen, alen);
		if (!c)
			return 1;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

/**
 * rn_policy_cmp4() - qsort() order of IPv4 addresses
 * @a:		address
 * @b:		address
 *
 * Return: memcmp() of the 4 bytes
 */
static int rn_policy_cmp4(const void *a, const void *b)
{
	return memcmp(a, b, 4);
}

/**
 * rn_policy_cmp6() - qsort() order of IPv6 addresses
 * @a:		address
 * @b:		address
 *
 * Return: memcmp() of the 16 bytes
 */
static int rn_policy_cmp6(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/**
 * rn_policy_addr_set() - sort and deduplicate addresses into a parameter array
 * @dst:	host4 or host6 of the parameters
 * @ndst:	set to the entries used
 * @src:	@n addresses of @alen bytes each, any order
 * @n:		at most RN_HOST_ADDR_MAX
 * @alen:	4 or 16
 */
static void rn_policy_addr_set(uint8_t *dst, uint32_t *ndst, const uint8_t *src, uint32_t n,
			       size_t alen)
{
	uint8_t tmp[RN_HOST_ADDR_MAX * 16];
	uint32_t i, m = 0;

	if (!n) {
		*ndst = 0;
		return;
	}
	memcpy(tmp, src, n * alen);
	qsort(tmp, n, alen, alen == 4 ? rn_policy_cmp4 : rn_policy_cmp6);
	for (i = 0; i < n; i++) {
		if (m && !memcmp(tmp + (m - 1) * alen, tmp + i * alen, alen))
			continue;
		memmove(tmp + m * alen, tmp + i * alen, alen);
		m++;
	}
	memcpy(dst, tmp, m * alen);
	*ndst = m;
}

/**
 * rn_policy_host_set() - replace the worker's set of the host's own addresses
 * @w:		worker
 * @v4:		@n4 IPv4 addresses, 4 bytes each, network order, any order
 * @n4:		at most RN_HOST_ADDR_MAX
 * @v6:		@n6 IPv6 addresses, 16 bytes each
 * @n6:		at most RN_HOST_ADDR_MAX
 *
 * Called between loop passes (the orchestrator's HOST_ADDRS message), so
 * no decision sees half a set. New flows are judged against the new set.
 *
 * Return: 0, or -EINVAL if a count is too large (nothing changed)
 */
int rn_policy_host_set(struct rn_worker *w, const uint8_t *v4, uint32_t n4, const uint8_t *v6,
		       uint32_t n6)
{
	if (n4 > RN_HOST_ADDR_MAX || n6 > RN_HOST_ADDR_MAX || (n4 && !v4) || (n6 && !v6))
		return -EINVAL;
	rn_policy_addr_set(&w->p.host4[0][0], &w->p.nhost4, v4, n4, 4);
	rn_policy_addr_set(&w->p.host6[0][0], &w->p.nhost6, v6, n6, 16);
	return 0;
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
 * rn_policy_decide() - decide where a new flow goes on the host (no counting)
 * @p:		worker parameters (addresses, prefixes, policy, DNS upstreams,
 *		the host's addresses)
 * @dns_up:	the upstream a DNS flow goes to (rn_dns_current()), -1 for none
 * @k:		flow key as the namespace sees it
 * @d:		filled with the host destination when allowed
 *
 * Return: RN_POLICY_ALLOW (0), or the enum rn_policy_reason refusing it
 */
int rn_policy_decide(const struct rn_worker_params *p, int dns_up, const struct rn_flow_key *k,
		     struct rn_policy_dest *d)
{
	static const uint8_t lo4[4] = { 127, 0, 0, 1 };
	static const uint8_t lo6[16] = { [15] = 1 };
	static const uint8_t zero6[16];
	int v6 = k->family == 6, host;
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

	if (v6 ? !memcmp(k->daddr, lo6, 16) : k->daddr[0] == 127)
		return RN_POLICY_LOOPBACK;
	if (v6 ? rn_policy_unroutable6(k->daddr) : rn_policy_unroutable4(k->daddr))
		return RN_POLICY_INVALID;
	if (rn_policy_link_local(k->family, k->daddr) && !p->allow_link_local)
		return RN_POLICY_LINK_LOCAL;
	host = rn_policy_is_host(p, k->family, k->daddr);
	if (host && !p->allow_host)
		return RN_POLICY_HOST;
	if (plen && rn_policy_in_prefix(k->daddr, guest, plen, alen))
		return RN_POLICY_SUBNET;
	if (p->loopback_only && !host)
		return RN_POLICY_INVALID;

	rn_policy_sa(d, k->family, k->daddr, k->dport);
	return RN_POLICY_ALLOW;
}

/**
 * rn_policy_dest() - decide where a new flow goes, counting a refusal's reason
 * @p:		the parameters of a worker: &w->p, never a copy (the refusal is
 *		counted in that worker's counters)
 * @dns_up:	the upstream a DNS flow goes to (rn_dns_current()), -1 for none
 * @k:		flow key as the namespace sees it
 * @d:		filled with the host destination when allowed
 *
 * rn_policy_decide(), plus the per-reason counters (policy_host,
 * policy_link_local, policy_loopback), then the user's egress rules
 * (rn_rules_check(): RN_POLICY_RULE, d->rule set to the deciding rule); the
 * caller counts policy_refused, the frame's outcome.
 *
 * Return: RN_POLICY_ALLOW (0), or the enum rn_policy_reason refusing it
 */
int rn_policy_dest(const struct rn_worker_params *p, int dns_up, const struct rn_flow_key *k,
		   struct rn_policy_dest *d)
{
	struct rn_worker *w = (struct rn_worker *)((char *)p - offsetof(struct rn_worker, p));
	int reason = rn_policy_decide(p, dns_up, k, d);
	int32_t rule;

	switch (reason) {
	case RN_POLICY_HOST:
		rn_ctr_add(w->ctr, RN_WCTR_policy_host, 1);
		break;
	case RN_POLICY_LINK_LOCAL:
		rn_ctr_add(w->ctr, RN_WCTR_policy_link_local, 1);
		break;
	case RN_POLICY_LOOPBACK:
		rn_ctr_add(w->ctr, RN_WCTR_policy_loopback, 1);
		break;
	case RN_POLICY_ALLOW:
		if (rn_rules_check(w, k, d->dns, &rule))
			reason = RN_POLICY_RULE;
		d->rule = rule < 0 ? 0 : (uint32_t)rule + 1;
		break;
	}
	return reason;
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
	case RN_POLICY_HOST:
		return "host";
	case RN_POLICY_LINK_LOCAL:
		return "link_local";
	case RN_POLICY_RULE:
		return "rule";
	}
	return "unknown";
}
