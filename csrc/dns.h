/* dns.h - the DNS forwarder's upstream resolvers: the list, the current one, failover
 *
 * For policy.c (where new DNS flows go), udp.c and tcp.c (failing over a
 * flow to another upstream) and Python (rn_dns_set_upstreams(), dns.cdef).
 * See dns.c for the rules. A transport fails over by calling rn_dns_retry()
 * with a struct rn_dns_try (where the query or connect went) and a
 * rn_dns_send_fn that sends it to one upstream; UDP also keeps its queries
 * in flight here (struct rn_dns_query, rn_dns_keep() and the functions after
 * it).
 */
#ifndef RN_DNS_H
#define RN_DNS_H

#include <stdint.h>
#include <sys/socket.h>

#include "worker.h"

/* A query without an answer this long is sent to the next upstream: well
 * under the 5 s a glibc client waits before it retries by itself, well over
 * a resolver's usual round trip (a cache miss included) */
#define RN_DNS_FAILOVER_MS	1000
/* Largest query kept for a resend: the EDNS payload size the DNS flag day
 * of 2020 recommends; larger queries are passed on but not resent by us */
#define RN_DNS_QUERY_MAX	1232u
/* DNS header: queries shorter than this are passed on but never resent */
#define RN_DNS_HDR_LEN		12u
/* Queries in flight kept per UDP flow: glibc sends A and AAAA together */
#define RN_DNS_SAVED		2u

struct rn_policy_dest;

/**
 * struct rn_dns_try - where a query (UDP) or a connect (TCP) went, for failover
 * @up:		upstream it went to last (index into w->p.dns)
 * @tried:	upstreams it went to, one bit per index
 * @gen:	w->dns_gen that @up and @tried refer to
 */
struct rn_dns_try {
	uint32_t up;
	uint32_t tried;
	uint32_t gen;
};

/**
 * enum rn_dns_sent - what a rn_dns_send_fn did with one upstream
 * @RN_DNS_STOP:	give up (no socket): rn_dns_retry() returns 0
 * @RN_DNS_FAILED:	the upstream failed at once: it stops being current, the
 *			next one is tried
 * @RN_DNS_SENT:	sent (connect under way): rn_dns_retry() returns 1
 * @RN_DNS_SKIP:	could not be tried (no socket of its family): the next
 *			one is tried, this one is not blamed
 * @RN_DNS_CLOSED:	the flow was closed: rn_dns_retry() returns -1
 */
enum rn_dns_sent {
	RN_DNS_CLOSED = -2,
	RN_DNS_STOP = -1,
	RN_DNS_FAILED = 0,
	RN_DNS_SENT = 1,
	RN_DNS_SKIP = 2,
};

/**
 * typedef rn_dns_send_fn - send a query (or connect) to one upstream
 * @w:		worker
 * @ctx:	the caller's context (its flow)
 * @up:		the upstream, index into w->p.dns
 * @d:		its host address, policy checked (policy.h)
 *
 * Return: enum rn_dns_sent
 */
typedef int rn_dns_send_fn(struct rn_worker *w, void *ctx, uint32_t up,
			   const struct rn_policy_dest *d);

/**
 * struct rn_dns_query - a query in flight on a UDP flow, kept for a resend
 * @sent_at:	when it was last sent, ms (0: answered, or given up)
 * @t:		where it went
 * @len:	bytes in @msg
 * @msg:	the query as the namespace sent it
 */
struct rn_dns_query {
	int64_t sent_at;
	struct rn_dns_try t;
	uint32_t len;
	uint8_t msg[RN_DNS_QUERY_MAX];
};

int rn_dns_set_upstreams(struct rn_worker *w, const struct rn_dns_upstream *ups, uint32_t n);
int rn_dns_current(const struct rn_worker *w);
int rn_dns_pick(const struct rn_worker *w, uint32_t tried);
void rn_dns_failed(struct rn_worker *w, uint32_t up, uint32_t gen);
int rn_dns_is_upstream(const struct rn_worker *w, const struct sockaddr_storage *sa);

void rn_dns_try_start(const struct rn_worker *w, struct rn_dns_try *t, uint32_t up);
int rn_dns_try_left(const struct rn_worker *w, const struct rn_dns_try *t);
int rn_dns_retry(struct rn_worker *w, struct rn_dns_try *t, rn_dns_send_fn *send, void *ctx);
int rn_dns_error_fails(const struct rn_worker *w, int kind);

int rn_dns_keep(const struct rn_worker *w, struct rn_dns_query **qs, uint32_t up, uint32_t gen,
		const uint8_t *msg, uint32_t len);
void rn_dns_answered(struct rn_dns_query **qs, const uint8_t *msg, uint32_t len);
struct rn_dns_query *rn_dns_due(struct rn_dns_query *qs, int64_t now);
void rn_dns_forget(struct rn_dns_query **qs);
struct rn_dns_query *rn_dns_save(struct rn_dns_query *q, int64_t now, uint32_t up, uint32_t gen,
				 const uint8_t *msg, uint32_t len);
struct rn_dns_query *rn_dns_find(struct rn_dns_query *q, const uint8_t *msg, uint32_t len);
int64_t rn_dns_next_deadline(const struct rn_dns_query *q);

#endif /* RN_DNS_H */
