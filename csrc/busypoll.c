/* busypoll.c - adaptive busy polling: look again instead of blocking
 *
 * See busypoll.h for the theory of operation.
 */
#include "busypoll.h"

/**
 * rn_bpoll_init() - set up busy polling for one thread
 * @b:		state to fill
 * @max_us:	longest spin, 0 (off) to RN_BPOLL_MAX_US; larger values are cut
 */
void rn_bpoll_init(struct rn_bpoll *b, uint32_t max_us)
{
	if (max_us > RN_BPOLL_MAX_US)
		max_us = RN_BPOLL_MAX_US;
	b->max_ns = max_us * 1000u;
	b->win_ns = 0;
	b->idle_since = 0;
	b->spinning = 0;
	b->bulk_until = 0;
	b->moved_at = 0;
}

/**
 * rn_bpoll_idle() - the thread found nothing to do: spin (look again) or block
 * @b:		busy-poll state
 * @now:	the time (CLOCK_MONOTONIC, ns, > 0)
 * @moved:	bytes the thread has moved so far (a running total, either way)
 *
 * The first idle point after work starts the idle period, and looks at the
 * bytes moved since the previous one (a stream never spins); later ones (the
 * thread looked again and still found nothing) continue it. The caller spins
 * (yields, then runs its loop again without announcing sleep) while this says
 * so, and blocks once it does not; either way it calls rn_bpoll_work() when
 * work turns up.
 *
 * Return: 1 to spin, 0 to block
 */
int rn_bpoll_idle(struct rn_bpoll *b, int64_t now, uint64_t moved)
{
	if (!b->idle_since) {
		b->idle_since = now;
		if (moved - b->moved_at >= RN_BPOLL_BULK)
			b->bulk_until = now + RN_BPOLL_BULK_HOLD_NS;
		b->moved_at = moved;
	}
	b->spinning = b->win_ns && now >= b->bulk_until &&
		      now - b->idle_since < (int64_t)b->win_ns;
	return b->spinning;
}

/**
 * rn_bpoll_work() - the thread found work: end the idle period and learn from it
 * @b:		busy-poll state
 * @now:	the time (CLOCK_MONOTONIC, ns, > 0)
 *
 * Adapts the window to the idle period that ends here (busypoll.h's rules).
 * Cheap when the thread was busy already (no idle period): callers may call
 * it after every round of work.
 *
 * Return: 1 if the work ended a spin (a hit), else 0
 */
int rn_bpoll_work(struct rn_bpoll *b, int64_t now)
{
	uint32_t start = b->max_ns / RN_BPOLL_START_DIV;
	int64_t idle;
	int hit;

	if (!b->idle_since)
		return 0;
	idle = now - b->idle_since;
	hit = b->spinning;
	b->idle_since = 0;
	b->spinning = 0;
	if (!b->max_ns || hit)
		return hit;
	if (idle <= (int64_t)b->max_ns) {
		/* a longer spin would have caught it */
		if (!b->win_ns)
			b->win_ns = start ? start : b->max_ns;
		else if (b->win_ns < b->max_ns / 2)
			b->win_ns *= 2;
		else
			b->win_ns = b->max_ns;
	} else {
		/* a pause: the spin (if any) was wasted */
		b->win_ns /= 2;
		if (b->win_ns < start)
			b->win_ns = 0;
	}
	return 0;
}
