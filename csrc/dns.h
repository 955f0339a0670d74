/* dns.h - the DNS forwarder's upstream resolvers: the list, the current one, failover
 *
 * For policy.c (where new DNS flows go), udp.c and tcp.c (failing over a
 * flow to another upstream) and Python (rn_dns_set_upstreams(), dns.cdef).
 * See dns.c for the rules.
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

/**
 * struct rn_dns_query - a query in flight on a UDP flow, kept for a resend
 * @sent_at:	when it was last sent, ms (0: answered, or given up)
 * @up:		upstream it was last sent to (index into w->p.dns)
 * @tried:	upstreams it was sent to, one bit per index
 * @len:	bytes in @msg
 * @msg:	the query as the namespace sent it
 */
struct rn_dns_query {
	int64_t sent_at;
	uint32_t up;
	uint32_t tried;
	uint32_t len;
	uint8_t msg[RN_DNS_QUERY_MAX];
};

int rn_dns_set_upstreams(struct rn_worker *w, const struct rn_dns_upstream *ups, uint32_t n);
int rn_dns_current(const struct rn_worker *w);
int rn_dns_pick(const struct rn_worker *w, uint32_t tried);
void rn_dns_failed(struct rn_worker *w, uint32_t up, uint32_t gen);
int rn_dns_is_upstream(const struct rn_worker *w, const struct sockaddr_storage *sa);
struct rn_dns_query *rn_dns_save(struct rn_dns_query *q, int64_t now, uint32_t up,
				 const uint8_t *msg, uint32_t len);
struct rn_dns_query *rn_dns_find(struct rn_dns_query *q, const uint8_t *msg, uint32_t len);
int64_t rn_dns_next_deadline(const struct rn_dns_query *q);

#endif /* RN_DNS_H */
