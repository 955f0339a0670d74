/* flowtab.c - the per-worker flow table: hash lookup, cap, timer heap, list
 *
 * See flowtab.h for the data structures and their invariants. Nothing here
 * allocates after rn_flowtab_init(), and nothing here knows about sockets or
 * protocols.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "flowtab.h"

/**
 * rn_flowtab_init() - create an empty table for at most @max flows
 * @ft:		table to initialise
 * @max:	cap on flows of all types, at least 1
 * @key:	hash secret
 *
 * Return: 0, -EINVAL for a zero @max, or -ENOMEM
 */
int rn_flowtab_init(struct rn_flowtab *ft, uint32_t max, const uint8_t key[16])
{
	uint32_t n = 16;

	memset(ft, 0, sizeof(*ft));
	if (!max || max > (1u << 24))
		return -EINVAL;
	while (n < max)
		n <<= 1;
	ft->buckets = calloc(n, sizeof(*ft->buckets));
	ft->heap = calloc(max, sizeof(*ft->heap));
	if (!ft->buckets || !ft->heap) {
		rn_flowtab_fini(ft);
		return -ENOMEM;
	}
	ft->max = max;
	ft->mask = n - 1;
	memcpy(ft->key, key, sizeof(ft->key));
	return 0;
}

/**
 * rn_flowtab_fini() - free the table's own memory; flows are the caller's
 * @ft:		table
 */
void rn_flowtab_fini(struct rn_flowtab *ft)
{
	free(ft->buckets);
	free(ft->heap);
	ft->buckets = NULL;
	ft->heap = NULL;
	ft->count = 0;
	ft->nheap = 0;
	ft->first = ft->last = NULL;
}

/**
 * rn_flow_key_zero() - clear a key, so that it compares by memcmp()
 * @k:		key
 */
void rn_flow_key_zero(struct rn_flow_key *k)
{
	memset(k, 0, sizeof(*k));
}

static const char *const rn_flow_end_names[RN_FLOW_END_TYPES] = {
	[RN_FLOW_END_NONE] = "closed",
	[RN_FLOW_END_FIN] = "fin",
	[RN_FLOW_END_RESET] = "reset",
	[RN_FLOW_END_NS_RESET] = "ns_reset",
	[RN_FLOW_END_HOST_ERROR] = "host_error",
	[RN_FLOW_END_CONNECT_FAILED] = "connect_failed",
	[RN_FLOW_END_IDLE] = "idle_timeout",
	[RN_FLOW_END_FIN_TIMEOUT] = "fin_timeout",
	[RN_FLOW_END_RETRANSMIT] = "retransmit_timeout",
	[RN_FLOW_END_SHUTDOWN] = "shutdown",
	[RN_FLOW_END_ERROR] = "error",
};

/**
 * rn_flow_end_name() - the flow log's name of a close reason
 * @end:	enum rn_flow_end
 *
 * Return: the name, or NULL past the end
 */
const char *rn_flow_end_name(unsigned int end)
{
	return end < RN_FLOW_END_TYPES ? rn_flow_end_names[end] : NULL;
}

/**
 * rn_flowtab_hash() - hash of a key under the table's secret
 * @ft:		table
 * @k:		key
 *
 * Return: 64-bit hash
 */
static uint64_t rn_flowtab_hash(const struct rn_flowtab *ft, const struct rn_flow_key *k)
{
	return rn_siphash(ft->key, (const uint8_t *)k, sizeof(*k));
}

/**
 * rn_flowtab_lookup() - find the flow with key @k
 * @ft:		table
 * @k:		key as the namespace sees the flow (zeroed unused bytes)
 *
 * Return: the flow, or NULL
 */
struct rn_flow *rn_flowtab_lookup(const struct rn_flowtab *ft, const struct rn_flow_key *k)
{
	uint64_t h = rn_flowtab_hash(ft, k);
	struct rn_flow *f;

	for (f = ft->buckets[h & ft->mask]; f; f = f->hnext) {
		if (f->hash == h && !memcmp(&f->key, k, sizeof(*k)))
			return f;
	}
	return NULL;
}

/**
 * rn_flowtab_insert() - add a flow whose key and type are set
 * @ft:		table
 * @f:		flow, not in any table
 * @now:	current time, ms: becomes @f->created and @f->last
 *
 * Return: 0, -ENOSPC at the cap, -EEXIST if a flow with the key exists,
 *	   -EINVAL for a bad type
 */
int rn_flowtab_insert(struct rn_flowtab *ft, struct rn_flow *f, int64_t now)
{
	uint32_t b;

	if (f->type == RN_FLOW_NONE || f->type >= RN_FLOW_TYPES)
		return -EINVAL;
	if (ft->count >= ft->max)
		return -ENOSPC;
	if (rn_flowtab_lookup(ft, &f->key))
		return -EEXIST;

	f->hash = rn_flowtab_hash(ft, &f->key);
	b = (uint32_t)(f->hash & ft->mask);
	f->hnext = ft->buckets[b];
	ft->buckets[b] = f;

	f->next = NULL;
	f->prev = ft->last;
	if (ft->last)
		ft->last->next = f;
	else
		ft->first = f;
	ft->last = f;

	f->created = f->last = now;
	f->deadline = 0;
	f->heap_idx = RN_FLOW_NO_HEAP;
	ft->count++;
	ft->by_type[f->type]++;
	return 0;
}

/**
 * rn_flowtab_swap() - exchange two heap slots
 * @ft:		table
 * @i:		slot
 * @j:		slot
 */
static void rn_flowtab_swap(struct rn_flowtab *ft, uint32_t i, uint32_t j)
{
	struct rn_flow *t = ft->heap[i];

	ft->heap[i] = ft->heap[j];
	ft->heap[j] = t;
	ft->heap[i]->heap_idx = i;
	ft->heap[j]->heap_idx = j;
}

/**
 * rn_flowtab_sift() - restore the heap order around slot @i
 * @ft:		table
 * @i:		slot whose deadline changed
 */
static void rn_flowtab_sift(struct rn_flowtab *ft, uint32_t i)
{
	uint32_t l, r, m;

	while (i && ft->heap[(i - 1) / 2]->deadline > ft->heap[i]->deadline) {
		rn_flowtab_swap(ft, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < ft->nheap && ft->heap[l]->deadline < ft->heap[m]->deadline)
			m = l;
		if (r < ft->nheap && ft->heap[r]->deadline < ft->heap[m]->deadline)
			m = r;
		if (m == i)
			return;
		rn_flowtab_swap(ft, i, m);
		i = m;
	}
}

/**
 * rn_flowtab_timer() - set, move or cancel a flow's timer
 * @ft:		table
 * @f:		flow in the table
 * @deadline:	CLOCK_MONOTONIC ms when the protocol's timer hook should run,
 *		or 0 to cancel
 */
void rn_flowtab_timer(struct rn_flowtab *ft, struct rn_flow *f, int64_t deadline)
{
	uint32_t i = f->heap_idx;

	if (deadline < 0)
		deadline = 0;
	if (deadline == f->deadline && (deadline == 0) == (i == RN_FLOW_NO_HEAP))
		return;
	f->deadline = deadline;
	if (i == RN_FLOW_NO_HEAP) {
		if (!deadline)
			return;
		i = ft->nheap++;
		ft->heap[i] = f;
		f->heap_idx = i;
		rn_flowtab_sift(ft, i);
		return;
	}
	if (!deadline) {
		f->heap_idx = RN_FLOW_NO_HEAP;
		if (i != --ft->nheap) {
			ft->heap[i] = ft->heap[ft->nheap];
			ft->heap[i]->heap_idx = i;
			rn_flowtab_sift(ft, i);
		}
		return;
	}
	rn_flowtab_sift(ft, i);
}

/**
 * rn_flowtab_remove() - take a flow out of the table (and its timer)
 * @ft:		table
 * @f:		flow in the table
 */
void rn_flowtab_remove(struct rn_flowtab *ft, struct rn_flow *f)
{
	struct rn_flow **pp = &ft->buckets[f->hash & ft->mask];

	rn_flowtab_timer(ft, f, 0);
	while (*pp && *pp != f)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = f->hnext;
	f->hnext = NULL;

	if (f->prev)
		f->prev->next = f->next;
	else
		ft->first = f->next;
	if (f->next)
		f->next->prev = f->prev;
	else
		ft->last = f->prev;
	f->prev = f->next = NULL;

	ft->count--;
	ft->by_type[f->type]--;
}

/**
 * rn_flowtab_next_deadline() - the nearest timer deadline
 * @ft:		table
 *
 * Return: deadline in ms, or 0 if no flow has a timer
 */
int64_t rn_flowtab_next_deadline(const struct rn_flowtab *ft)
{
	return ft->nheap ? ft->heap[0]->deadline : 0;
}

/**
 * rn_flowtab_expired() - take the next flow whose deadline has passed
 * @ft:		table
 * @now:	current time, ms
 *
 * The flow's timer is cancelled (deadline 0) before it is returned; the
 * protocol's timer hook re-arms it if needed.
 *
 * Return: a flow with deadline <= @now, or NULL if none
 */
struct rn_flow *rn_flowtab_expired(struct rn_flowtab *ft, int64_t now)
{
	struct rn_flow *f;

	if (!ft->nheap || ft->heap[0]->deadline > now)
		return NULL;
	f = ft->heap[0];
	rn_flowtab_timer(ft, f, 0);
	return f;
}
