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
 * follows it with its next query (an open TCP connection stays put). It
 * starts at the first entry and moves on, round robin, only when the current
 * one fails for a flow (rn_dns_failed(); what counts as a failure is below).
 * A failed upstream is used again only once the current one fails too and
 * the turn comes back to it; there is no probing in the background (glibc
 * without "options rotate" does the same within a process). Several flows
 * that see the same upstream fail move the current index once: a flow moves
 * it only while it still names the upstream that failed, within the same
 * list (w->dns_gen counts list replacements, so an index from an older list
 * never moves the current one).
 *
 * The flow that saw the failure retries there itself, through
 * rn_dns_retry(): it marks the upstream failed, picks the next one the query
 * (connect) has not been to (rn_dns_pick(), struct rn_dns_try), checks it
 * against the policy (rn_policy_dns()) and has the transport send there (a
 * rn_dns_send_fn: udp.c resends the query from the flow's socket, tcp.c
 * connects a new socket), counting dns_resends; an upstream that fails at
 * once is marked failed too and the next one is tried. Each query (connect)
 * goes to each upstream at most once; when all were tried the namespace sees
 * the failure, as it does with a single upstream. Replacing the list
 * (rn_dns_set_upstreams()) makes its first entry current again; a struct
 * rn_dns_try of an older list starts over with the new one.
 *
 * What counts as a failure: a TCP connect that fails or does not finish
 * within RN_DNS_FAILOVER_MS while another upstream is left
 * (rn_dns_try_left()); for UDP, an ICMP unreachable for a query
 * (rn_dns_error_fails()) or no answer within RN_DNS_FAILOVER_MS. A UDP flow
 * keeps its queries in flight for that (rn_dns_keep(): up to RN_DNS_SAVED
 * queries of up to RN_DNS_QUERY_MAX bytes, matched with answers and errors by
 * DNS ID, memory held only while one waits); rn_dns_due() names those whose
 * deadline passed and rn_dns_answered() retires the answered ones.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "icmp.h"
#include "policy.h"

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
 * rn_dns_try_start() - a query (connect) goes to its first upstream
 * @w:		worker
 * @t:		filled: @up tried, in the current list
 * @up:		the upstream, index into w->p.dns
 */
void rn_dns_try_start(const struct rn_worker *w, struct rn_dns_try *t, uint32_t up)
{
	t->up = up;
	t->tried = 1u << up;
	t->gen = w->dns_gen;
}

/**
 * rn_dns_try_left() - whether a failure of @t could still move on to another upstream
 * @w:		worker
 * @t:		where the query (connect) went
 *
 * Return: true if @t refers to the current list and an upstream it has not
 *	   been to is left (a TCP connect then gets RN_DNS_FAILOVER_MS, not the
 *	   kernel's own timeout)
 */
int rn_dns_try_left(const struct rn_worker *w, const struct rn_dns_try *t)
{
	return t->gen == w->dns_gen && rn_dns_pick(w, t->tried) >= 0;
}

/**
 * rn_dns_retry() - the upstream a query (connect) went to failed: try the next one
 * @w:		worker
 * @t:		where it went; updated with where it goes now
 * @send:	sends it to one upstream
 * @ctx:	passed to @send
 *
 * The failed upstream stops being the current one (rn_dns_failed()); a @t
 * of an older list starts over. Then each upstream rn_dns_pick() names, in
 * turn, is checked against the policy and handed to @send, until one takes
 * the query; each one handed over counts dns_resends, and one that fails at
 * once (RN_DNS_FAILED) stops being current too.
 *
 * Return: 1 if the query (connect) is under way again; 0 if no upstream is
 *	   left or @send gave up (RN_DNS_STOP); -1 if the flow was closed
 */
int rn_dns_retry(struct rn_worker *w, struct rn_dns_try *t, rn_dns_send_fn *send, void *ctx)
{
	struct rn_policy_dest d;
	int next, rc;

	rn_dns_failed(w, t->up, t->gen);
	if (t->gen != w->dns_gen) {
		t->gen = w->dns_gen;
		t->tried = 0;
	}
	for (;;) {
		next = rn_dns_pick(w, t->tried);
		if (next < 0)
			return 0;
		t->tried |= 1u << next;
		if (rn_policy_dns(&w->p, next, &d))
			continue;
		t->up = (uint32_t)next;
		rc = send(w, ctx, (uint32_t)next, &d);
		if (rc == RN_DNS_SKIP)
			continue;
		if (rc == RN_DNS_STOP)
			return 0;
		if (rc == RN_DNS_CLOSED)
			return -1;
		rn_ctr_add(w->ctr, RN_WCTR_dns_resends, 1);
		if (rc == RN_DNS_SENT)
			return 1;
		rn_dns_failed(w, (uint32_t)next, t->gen);
	}
}

/**
 * rn_dns_error_fails() - whether an ICMP error for a UDP query fails its upstream over
 * @w:		worker
 * @kind:	enum rn_icmp_kind of the error (icmp.h)
 *
 * Return: true for an unreachable error (network, host, port, prohibited)
 *	   while there is another upstream; "too big" and "time exceeded" say
 *	   nothing about the resolver and are passed on
 */
int rn_dns_error_fails(const struct rn_worker *w, int kind)
{
	return w->p.ndns >= 2 && kind != RN_ICMP_TOO_BIG && kind != RN_ICMP_TIME;
}

/**
 * rn_dns_keep() - keep a UDP query just sent to an upstream, for a failover
 * @w:		worker
 * @qs:		the flow's kept queries (RN_DNS_SAVED slots, or NULL: allocated here)
 * @up:		upstream the query went to
 * @gen:	w->dns_gen that @up refers to
 * @msg:	the query
 * @len:	its length
 *
 * Only with more than one upstream, and only queries of RN_DNS_HDR_LEN to
 * RN_DNS_QUERY_MAX bytes (others are passed on but never resent).
 *
 * Return: true if the query was kept: its failover deadline
 *	   (rn_dns_next_deadline()) is due for the flow's timer
 */
int rn_dns_keep(const struct rn_worker *w, struct rn_dns_query **qs, uint32_t up, uint32_t gen,
		const uint8_t *msg, uint32_t len)
{
	if (w->p.ndns < 2 || len < RN_DNS_HDR_LEN || len > RN_DNS_QUERY_MAX)
		return 0;
	if (!*qs)
		*qs = calloc(RN_DNS_SAVED, sizeof(**qs));
	return *qs && rn_dns_save(*qs, w->now, up, gen, msg, len);
}

/**
 * rn_dns_answered() - an answer came from an upstream: its query needs no failover
 * @qs:		the flow's kept queries, or NULL
 * @msg:	the answer (private copy)
 * @len:	its length
 */
void rn_dns_answered(struct rn_dns_query **qs, const uint8_t *msg, uint32_t len)
{
	struct rn_dns_query *q;

	if (!*qs || !(q = rn_dns_find(*qs, msg, len)))
		return;
	q->sent_at = 0;
	rn_dns_forget(qs);
}

/**
 * rn_dns_due() - a kept query without an answer for RN_DNS_FAILOVER_MS
 * @qs:		the flow's kept queries, or NULL
 * @now:	current time, ms
 *
 * Return: the first such query, or NULL (a query failed over is sent again
 *	   or given up, so it is not due any more)
 */
struct rn_dns_query *rn_dns_due(struct rn_dns_query *qs, int64_t now)
{
	uint32_t i;

	for (i = 0; qs && i < RN_DNS_SAVED; i++) {
		if (qs[i].sent_at && now - qs[i].sent_at >= RN_DNS_FAILOVER_MS)
			return &qs[i];
	}
	return NULL;
}

/**
 * rn_dns_forget() - free a flow's kept queries once none waits for its answer
 * @qs:		the flow's kept queries, or NULL
 */
void rn_dns_forget(struct rn_dns_query **qs)
{
	if (*qs && !rn_dns_next_deadline(*qs)) {
		free(*qs);
		*qs = NULL;
	}
}

/**
 * rn_dns_id() - the ID of a DNS message
 * @msg:	message, at least 2 bytes
 *
 * Return: the ID field, host order
 */
static uint16_t rn_dns_id(const uint8_t *msg)
{
	return rn_be16(msg);
}

/**
 * rn_dns_save() - keep a copy of a query just sent, for a resend
 * @q:		the flow's RN_DNS_SAVED slots
 * @now:	time it is sent, ms (not 0)
 * @up:		upstream it goes to
 * @gen:	w->dns_gen that @up refers to
 * @msg:	the query
 * @len:	its length
 *
 * A query with the ID of one kept replaces it (the client asked again);
 * otherwise a free slot or, with none, the one sent longest ago is used.
 *
 * Return: the slot, or NULL if the query is shorter than a DNS header or
 *	   longer than RN_DNS_QUERY_MAX (not kept)
 */
struct rn_dns_query *rn_dns_save(struct rn_dns_query *q, int64_t now, uint32_t up, uint32_t gen,
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
	s->t.up = up;
	s->t.tried = 1u << up;
	s->t.gen = gen;
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
