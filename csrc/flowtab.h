/* flowtab.h - the per-worker flow table: lookup, cap, timers, iteration
 *
 * Theory of operation
 * -------------------
 * Every flow a worker terminates (TCP connection, UDP or ICMP "session") is a
 * protocol struct that begins with struct rn_flow, the common header:
 *
 *	struct rn_tcp_flow { struct rn_flow f; ...TCP state... };
 *
 * so that the table, the event loop (epoll_data.ptr points at the header) and
 * the timer heap deal with one type, and a protocol gets its own struct back
 * with container_of-style casting (the header is the first member).
 *
 * Keys are struct rn_flow_key as seen from the namespace: saddr/sport are the
 * namespace end (guest address and port), daddr/dport the remote end as the
 * namespace names it (before policy translation), so a frame from the
 * namespace finds its flow with the key rn_flow_key_parse() gives, and a flow
 * the worker opens towards the namespace is stored the same way round. Unused
 * address bytes are zero (keys are compared with memcmp(), and struct
 * rn_flow_key has no padding).
 *
 * The table is a chained hash table (SipHash under the worker's key, so the
 * namespace cannot force long chains), a doubly linked list of all flows in
 * creation order (iteration for timers-of-last-resort, statistics and
 * teardown), and a binary min-heap of timer deadlines (one deadline per flow,
 * milliseconds on CLOCK_MONOTONIC; 0 means none), so that the event loop
 * learns the nearest deadline in O(1) and a protocol re-arms in O(log n).
 *
 * The cap: at most @max flows of all types together; rn_flowtab_insert()
 * refuses the next one with -ENOSPC, and the protocol refuses the flow
 * (TCP: RST, counted flows_refused_cap). Buckets and heap are sized for @max
 * at creation, so insertion never allocates.
 *
 * The table never allocates or frees flows: protocols allocate their struct,
 * fill the key and type, and insert it; they end a flow through
 * rn_worker_flow_close() (worker.h), which also takes care of the fd, epoll and
 * deferred freeing. Worker-managed header fields are documented below as
 * "worker"; the others belong to the protocol.
 */
#ifndef RN_FLOWTAB_H
#define RN_FLOWTAB_H

#include <stdint.h>

#include "flow.h"

/**
 * enum rn_flow_type - which protocol core a flow belongs to
 * @RN_FLOW_NONE:	not a flow (never in the table)
 * @RN_FLOW_TCP:	tcp.c
 * @RN_FLOW_UDP:	udp.c
 * @RN_FLOW_ICMP:	ICMP echo forwarding
 * @RN_FLOW_FWD:	a forward's listening or handoff socket (forward.c):
 *			in the worker's epoll only, never in the table
 * @RN_FLOW_SPLICE:	a forwarded connection of a host-local client relayed
 *			with splice() (splice.c); its two helper headers (the
 *			socket inside, the splice socket) are never in the table
 * @RN_FLOW_TYPES:	number of types
 */
enum rn_flow_type {
	RN_FLOW_NONE = 0,
	RN_FLOW_TCP,
	RN_FLOW_UDP,
	RN_FLOW_ICMP,
	RN_FLOW_FWD,
	RN_FLOW_SPLICE,
	RN_FLOW_TYPES
};

/* struct rn_flow.flags, worker-managed */
#define RN_FLOW_F_ROOM_WAIT	1u	/* on the worker's wait list for to_ns room */
#define RN_FLOW_F_CLOSED	2u	/* closed, freed at the end of the loop pass */
#define RN_FLOW_F_DEFER		4u	/* on the worker's list for ops->flush() */

#define RN_FLOW_NO_HEAP		UINT32_MAX

/**
 * enum rn_flow_end - why a flow ended, for the flow log (capture.c)
 * @RN_FLOW_END_NONE:		not recorded ("closed")
 * @RN_FLOW_END_FIN:		both sides finished in order ("fin")
 * @RN_FLOW_END_RESET:		reset by ringnet towards either side ("reset")
 * @RN_FLOW_END_NS_RESET:	the namespace sent a RST ("ns_reset")
 * @RN_FLOW_END_HOST_ERROR:	the host socket failed: reset by its peer and
 *				the like ("host_error")
 * @RN_FLOW_END_CONNECT_FAILED:	the host connect failed ("connect_failed")
 * @RN_FLOW_END_IDLE:		idle timeout ("idle_timeout")
 * @RN_FLOW_END_FIN_TIMEOUT:	closing took longer than the FIN timeout ("fin_timeout")
 * @RN_FLOW_END_RETRANSMIT:	the namespace stopped acknowledging ("retransmit_timeout")
 * @RN_FLOW_END_SHUTDOWN:	the network closed ("shutdown")
 * @RN_FLOW_END_ERROR:		no socket or epoll for it ("error")
 * @RN_FLOW_END_TYPES:		number of reasons
 *
 * Protocol code records the reason with rn_flow_end() before it closes the
 * flow; the first reason recorded sticks. rn_flow_end_name() names them.
 */
enum rn_flow_end {
	RN_FLOW_END_NONE = 0,
	RN_FLOW_END_FIN,
	RN_FLOW_END_RESET,
	RN_FLOW_END_NS_RESET,
	RN_FLOW_END_HOST_ERROR,
	RN_FLOW_END_CONNECT_FAILED,
	RN_FLOW_END_IDLE,
	RN_FLOW_END_FIN_TIMEOUT,
	RN_FLOW_END_RETRANSMIT,
	RN_FLOW_END_SHUTDOWN,
	RN_FLOW_END_ERROR,
	RN_FLOW_END_TYPES
};

/**
 * struct rn_flow - common header every protocol's flow struct begins with
 * @key:	5-tuple as the namespace sees it (protocol, set before insert)
 * @type:	enum rn_flow_type (protocol, set before insert)
 * @state:	protocol-defined state, shown in statistics (protocol)
 * @flags:	RN_FLOW_F_* (worker)
 * @fd:		host socket, or -1 (protocol sets it; the worker closes it)
 * @events:	epoll events registered for @fd, 0 if not registered (worker)
 * @created:	creation time, ms (table, at insert)
 * @last:	last activity, ms (protocol, for idle timeouts and statistics)
 * @deadline:	timer deadline, ms, 0 for none (table: set only through
 *		rn_flowtab_timer())
 * @heap_idx:	position in the timer heap, RN_FLOW_NO_HEAP if none (table)
 * @hash:	hash of @key (table)
 * @bytes_up:	payload bytes namespace -> host (protocol)
 * @bytes_down:	payload bytes host -> namespace (protocol)
 * @rule:	the egress rule that decided for the flow: its slot + 1 (rules.c,
 *		struct rn_rule_spec.slot), 0 when none did (no rule matched, or a
 *		flow towards the namespace); set by the protocol at creation
 * @pkts_up:	frames carrying payload namespace -> host (protocol; a TSO or
 *		USO frame counts once)
 * @pkts_down:	frames carrying new payload host -> namespace (protocol)
 * @end:	enum rn_flow_end, why the flow ended (protocol, rn_flow_end())
 * @hnext:	hash chain (table)
 * @prev:	list of all flows, creation order (table)
 * @next:	list of all flows (table)
 * @wnext:	room wait list (worker)
 * @dnext:	list of flows deferred to the end of the batch (worker)
 * @cnext:	list of flows closed during this loop pass (worker)
 */
struct rn_flow {
	struct rn_flow_key key;
	uint8_t type;
	uint8_t state;
	uint8_t flags;
	int fd;
	uint32_t events;
	int64_t created;
	int64_t last;
	int64_t deadline;
	uint32_t heap_idx;
	uint64_t hash;
	uint64_t bytes_up;
	uint64_t bytes_down;
	uint32_t rule;
	uint64_t pkts_up;
	uint64_t pkts_down;
	uint8_t end;
	struct rn_flow *hnext;
	struct rn_flow *prev;
	struct rn_flow *next;
	struct rn_flow *wnext;
	struct rn_flow *dnext;
	struct rn_flow *cnext;
};

/**
 * struct rn_flowtab - one worker's flows
 * @max:	cap on flows of all types
 * @count:	flows in the table
 * @by_type:	flows per enum rn_flow_type
 * @mask:	number of buckets minus one (power of two)
 * @buckets:	hash chains
 * @heap:	timer min-heap on deadline, @nheap entries
 * @nheap:	flows with a deadline
 * @first:	oldest flow
 * @last:	newest flow
 * @key:	hash secret
 */
struct rn_flowtab {
	uint32_t max;
	uint32_t count;
	uint32_t by_type[RN_FLOW_TYPES];
	uint32_t mask;
	struct rn_flow **buckets;
	struct rn_flow **heap;
	uint32_t nheap;
	struct rn_flow *first;
	struct rn_flow *last;
	uint8_t key[16];
};

int rn_flowtab_init(struct rn_flowtab *ft, uint32_t max, const uint8_t key[16]);
void rn_flowtab_fini(struct rn_flowtab *ft);
void rn_flow_key_zero(struct rn_flow_key *k);
const char *rn_flow_end_name(unsigned int end);
struct rn_flow *rn_flowtab_lookup(const struct rn_flowtab *ft, const struct rn_flow_key *k);
int rn_flowtab_insert(struct rn_flowtab *ft, struct rn_flow *f, int64_t now);
void rn_flowtab_remove(struct rn_flowtab *ft, struct rn_flow *f);
void rn_flowtab_timer(struct rn_flowtab *ft, struct rn_flow *f, int64_t deadline);
int64_t rn_flowtab_next_deadline(const struct rn_flowtab *ft);
struct rn_flow *rn_flowtab_expired(struct rn_flowtab *ft, int64_t now);

/**
 * rn_flowtab_first() - oldest flow, for iteration
 * @ft:		table
 *
 * Iterate with rn_flowtab_next(); a flow may be removed while iterating if
 * its successor was fetched first.
 *
 * Return: the oldest flow, or NULL if the table is empty
 */
static inline struct rn_flow *rn_flowtab_first(const struct rn_flowtab *ft)
{
	return ft->first;
}

/**
 * rn_flowtab_next() - the flow created after @f
 * @f:		flow in the table
 *
 * Return: the next flow, or NULL at the end
 */
static inline struct rn_flow *rn_flowtab_next(const struct rn_flow *f)
{
	return f->next;
}

/**
 * rn_flow_end() - record why @f ends, unless a reason was recorded already
 * @f:		flow about to be closed
 * @why:	enum rn_flow_end
 */
static inline void rn_flow_end(struct rn_flow *f, unsigned int why)
{
	if (!f->end)
		f->end = (uint8_t)why;
}

#endif /* RN_FLOWTAB_H */
