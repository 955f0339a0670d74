/* flowstats.c - per-flow statistics rows from a worker's flow table */
#include <string.h>

#include "flowstats.h"
#include "flowtab.h"
#include "splice.h"
#include "tcp.h"
#include "worker.h"

/**
 * rn_flow_state_name() - a flow state's name for statistics
 * @type:	enum rn_flow_type
 * @state:	protocol state
 *
 * Return: a static string; "active" for protocols without states, "?" for
 *	   values no protocol defines
 */
const char *rn_flow_state_name(uint8_t type, uint8_t state)
{
	if (type == RN_FLOW_TCP)
		return rn_tcp_state_name(state);
	if (type == RN_FLOW_SPLICE)
		return rn_splice_state_name(state);
	if (type == RN_FLOW_UDP || type == RN_FLOW_ICMP)
		return "active";
	return "?";
}

/**
 * rn_worker_flow_count() - flows in a worker's table
 * @w:		worker
 *
 * Return: the number of flows of all types
 */
uint32_t rn_worker_flow_count(const struct rn_worker *w)
{
	return w->flows.count;
}

/**
 * rn_worker_flow_rows() - fill statistics rows for a worker's flows
 * @w:		worker, not running (called between rn_worker_run() calls)
 * @rows:	where to write, @max entries
 * @max:	capacity of @rows
 *
 * Flows closed but not yet freed are skipped; the oldest flows come first.
 *
 * Return: the number of rows written
 */
uint32_t rn_worker_flow_rows(const struct rn_worker *w, struct rn_flow_row *rows, uint32_t max)
{
	const struct rn_flow *f;
	int64_t now = rn_worker_now_ms();
	uint32_t n = 0;

	for (f = rn_flowtab_first(&w->flows); f && n < max; f = rn_flowtab_next(f)) {
		struct rn_flow_row *r = &rows[n];

		if (f->flags & RN_FLOW_F_CLOSED)
			continue;
		memset(r, 0, sizeof(*r));
		r->type = f->type;
		r->state = f->state;
		r->family = f->key.family;
		r->proto = f->key.proto;
		memcpy(r->guest, f->key.saddr, sizeof(r->guest));
		memcpy(r->remote, f->key.daddr, sizeof(r->remote));
		r->guest_port = f->key.sport;
		r->remote_port = f->key.dport;
		r->bytes_up = f->bytes_up;
		r->bytes_down = f->bytes_down;
		r->age_ms = now - f->created;
		r->idle_ms = now - f->last;
		n++;
	}
	return n;
}
