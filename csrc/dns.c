/* dns.c - the DNS forwarder's upstream resolvers: the list, the current one, failover
 *
 * Theory of operation
 * -------------------
 * The DNS addresses of the namespace (dns4, dns6) forward port 53 to the
 * upstream resolvers in w->p.dns (at most RN_DNS_UPSTREAM_MAX): the
 * orchestrator reads them from the host's resolv.conf at start and again
 * whenever it changes, or takes them from --dns-upstream.
 *
 * Each worker has a current upstream, w->dns_cur, an index into that list:
 * new DNS flows, TCP and UDP, go there (policy.c), and an open UDP flow
 * follows it with its next query (an open TCP connection stays put). It starts at the first
 * entry and moves on, round robin, only when the current one fails for a
 * flow (rn_dns_failed()): a UDP query without an answer after
 * RN_DNS_FAILOVER_MS, an ICMP error (unreachable) for a query, or a failed
 * TCP connect (udp.c, tcp.c). A failed upstream is used again only once the
 * current one fails too and the turn comes back to it; there is no probing
 * in the background (glibc without "options rotate" does the same within a
 * process). Several flows that see the same upstream fail move the current
 * index once: a flow moves it only while it still names the upstream that
 * failed, within the same list (w->dns_gen counts list replacements, so an
 * index from an older list never moves the current one).
 *
 * The flow that saw the failure retries there itself: a UDP flow resends
 * the query it kept (struct rn_dns_query, up to RN_DNS_SAVED queries of up
 * to RN_DNS_QUERY_MAX bytes, matched with answers and errors by DNS ID), a
 * TCP flow connects again. Each query (connect) goes to each upstream at
 * most once (rn_dns_pick()); when all were tried the namespace sees the
 * failure, as it does with a single upstream. Replacing the list
 * (rn_dns_set_upstreams()) makes its first entry current again.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "dns.h"

/**
 * rn_dns_set_upstreams() - replace the upstream resolvers
 * @w:		worker
 * @ups:	new resolvers, in order of preference
 * @n:		entries in @ups, 0..RN_DNS_UPSTREAM_MAX (0: DNS queries fail)
 *
 * The first entry becomes the current upstream.
 *
 * Return: 0, or -EINVAL if @n is too large or an entry has a bad family or
 *	   port 0 (then nothing changes)
 */
int rn_dns_set_upstreams(struct rn_worker *w, const struct rn_dns_upstream *ups, uint32_t n)
{
	uint32_t i;

	if (n > RN_DNS_UPSTREAM_MAX || (n && !ups))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if ((ups[i].family != 4 && ups[i].family != 6) || !ups[i].port)
			return -EINVAL;
	}
	memset(w->p.dns, 0, sizeof(w->p.dns));
	if (n)
		memcpy(w->p.dns, ups, n * sizeof(*ups));
	w->p.ndns = n;
	w->dns_cur = 0;
	w->dns_gen++;
	return 0;
}

/**
 * rn_dns_current() - the upstream new DNS flows go to
 * @w:		worker
 *
 * Return: its index into w->p.dns, or -1 if there is no upstream
 */
int rn_dns_current(const struct rn_worker *w)
{
	if (!w->p.ndns || w->p.ndns > RN_DNS_UPSTREAM_MAX)
		return -1;
	return w->dns_cur < w->p.ndns ? (int)w->dns_cur : 0;
}

/**
 * rn_dns_pick() - where a query goes next, given where it went already
 * @w:		worker
 * @tried:	upstreams the query (connect) went to, one bit per index
 *
 * Return: the current upstream if it is not in @tried, else the next one
 *	   round robin that is not; -1 if every upstream was tried
 */
int rn_dns_pick(const struct rn_worker *w, uint32_t tried)
{
	int cur = rn_dns_current(w);
	uint32_t i, j;

	if (cur < 0)
		return -1;
	for (i = 0; i < w->p.ndns; i++) {
		j = ((uint32_t)cur + i) % w->p.ndns;
		if (!(tried & (1u << j)))
			return (int)j;
	}
	return -1;
}

/**
 * rn_dns_failed() - an upstream failed a flow: make the next one current
 * @w:		worker
 * @up:		index of the upstream that failed
 * @gen:	w->dns_gen when the flow learnt @up
 *
 * Only if @up is still the current upstream of the same list, and there is
 * another one (counted as dns_failovers); otherwise nothing changes.
 */
void rn_dns_failed(struct rn_worker *w, uint32_t up, uint32_t gen)
{
	if (gen != w->dns_gen || w->p.ndns < 2 || (int)up != rn_dns_current(w))
		return;
	w->dns_cur = (up + 1) % w->p.ndns;
	rn_ctr_add(w->ctr, RN_WCTR_dns_failovers, 1);
}

/**
 * rn_dns_is_upstream() - whether a host address and port is a configured upstream
 * @w:		worker
 * @sa:		address (AF_INET or AF_INET6; others are not)
 *
 * Return: true if family, address and port agree with an entry of w->p.dns
 */
int rn_dns_is_upstream(const struct rn_worker *w, const struct sockaddr_storage *sa)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	const struct rn_dns_upstream *up;
	uint32_t i;

	for (i = 0; i < w->p.ndns && i < RN_DNS_UPSTREAM_MAX; i++) {
		up = &w->p.dns[i];
		if (sa->ss_family == AF_INET && up->family == 4 &&
		    ntohs(sin->sin_port) == up->port && !memcmp(&sin->sin_addr, up->addr, 4))
			return 1;
		if (sa->ss_family == AF_INET6 && up->family == 6 &&
		    ntohs(sin6->sin6_port) == up->port && !memcmp(&sin6->sin6_addr, up->addr, 16))
			return 1;
	}
	return 0;
}

/**
 * rn_dns_id() - the ID of a DNS message
 * @msg:	message, at least 2 bytes
 *
 * Return: the ID field, network order as it is
 */
static uint16_t rn_dns_id(const uint8_t *msg)
{
	return (uint16_t)(msg[0] << 8 | msg[1]);
}

/**
 * rn_dns_save() - keep a copy of a query just sent, for a resend
 * @q:		the flow's RN_DNS_SAVED slots
 * @now:	time it is sent, ms (not 0)
 * @up:		upstream it goes to
 * @msg:	the query
 * @len:	its length
 *
 * A query with the ID of one kept replaces it (the client asked again);
 * otherwise a free slot or, with none, the one sent longest ago is used.
 *
 * Return: the slot, or NULL if the query is shorter than a DNS header or
 *	   longer than RN_DNS_QUERY_MAX (not kept)
 */
struct rn_dns_query *rn_dns_save(struct rn_dns_query *q, int64_t now, uint32_t up,
				 const uint8_t *msg, uint32_t len)
{
	struct rn_dns_query *s = NULL;
	uint32_t i;

	if (len < RN_DNS_HDR_LEN || len > RN_DNS_QUERY_MAX)
		return NULL;
	for (i = 0; i < RN_DNS_SAVED; i++) {
		if (q[i].sent_at && rn_dns_id(q[i].msg) == rn_dns_id(msg)) {
			s = &q[i];
			break;
		}
		if (!s || (s->sent_at && (!q[i].sent_at || q[i].sent_at < s->sent_at)))
			s = &q[i];
	}
	memcpy(s->msg, msg, len);
	s->len = len;
	s->sent_at = now;
	s->up = up;
	s->tried = 1u << up;
	return s;
}

/**
 * rn_dns_find() - the query in flight an answer or error belongs to
 * @q:		the flow's RN_DNS_SAVED slots
 * @msg:	the answer, or the payload an ICMP error quoted
 * @len:	its length
 *
 * Return: the slot with the same DNS ID still waiting, or NULL
 */
struct rn_dns_query *rn_dns_find(struct rn_dns_query *q, const uint8_t *msg, uint32_t len)
{
	uint32_t i;

	if (len < 2)
		return NULL;
	for (i = 0; i < RN_DNS_SAVED; i++) {
		if (q[i].sent_at && rn_dns_id(q[i].msg) == rn_dns_id(msg))
			return &q[i];
	}
	return NULL;
}

/**
 * rn_dns_next_deadline() - when the next kept query is due for a failover
 * @q:		the flow's RN_DNS_SAVED slots
 *
 * Return: the earliest sent_at + RN_DNS_FAILOVER_MS of the queries waiting,
 *	   0 if none waits
 */
int64_t rn_dns_next_deadline(const struct rn_dns_query *q)
{
	int64_t t = 0;
	uint32_t i;

	for (i = 0; i < RN_DNS_SAVED; i++) {
		if (q[i].sent_at && (!t || q[i].sent_at + RN_DNS_FAILOVER_MS < t))
			t = q[i].sent_at + RN_DNS_FAILOVER_MS;
	}
	return t;
}
