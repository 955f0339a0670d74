/* moderate.c - wake-up moderation: nap instead of blocking during small-packet streams
 *
 * See moderate.h for the theory of operation.
 */
#include <errno.h>
#include <time.h>

#include "clock.h"
#include "moderate.h"

/**
 * rn_mod_init() - set up moderation for one thread
 * @m:		state to fill
 * @nap_us:	nap length, 0 (off) to RN_MOD_NAP_MAX_US; larger values are cut
 */
void rn_mod_init(struct rn_mod *m, uint32_t nap_us)
{
	if (nap_us > RN_MOD_NAP_MAX_US)
		nap_us = RN_MOD_NAP_MAX_US;
	m->nap_ns = nap_us * 1000u;
	m->yield = (uint32_t)((uint64_t)nap_us * RN_MOD_RATE / 1000000u);
	if (m->yield < RN_MOD_YIELD)
		m->yield = RN_MOD_YIELD;
	m->napped = 0;
	m->fails = 0;
	m->up = 0;
	m->down = 0;
	m->cool_ns = RN_MOD_COOL_MIN_NS;
	m->cool_until = 0;
}

/**
 * rn_mod_may_nap() - whether rn_mod_idle() could nap, without looking at the clock
 * @m:		moderation state
 *
 * For a caller that must do extra work (a non-blocking poll) before it knows
 * that it is idle: it need not when this says no.
 *
 * Return: 1 if a nap or the judgement of one is due at the next idle point
 */
int rn_mod_may_nap(const struct rn_mod *m)
{
	return m->nap_ns && (m->napped || rn_mod_work(m) >= RN_MOD_BURST);
}

/**
 * rn_mod_decide() - the rules of an idle point, at a given time: nap or block
 * @m:		moderation state
 * @now:	the time (CLOCK_MONOTONIC, ns); read only when a nap may be due
 *
 * Judges the previous nap if there was one (see moderate.h), then decides
 * for a nap when the work since the last idle point was a burst of small
 * packets and the thread is not cooling down. Starts a new count of work
 * either way. Takes the time as an argument so that tests can drive these
 * rules with made-up clocks; rn_mod_idle() passes the real one.
 *
 * Return: 1 to nap for m->nap_ns (the nap is then judged at the next call),
 *	   0 to block
 */
int rn_mod_decide(struct rn_mod *m, int64_t now)
{
	int may = rn_mod_may_nap(m);
	uint64_t work = rn_mod_work(m);

	m->up = 0;
	m->down = 0;
	if (!may)
		return 0;
	if (m->napped) {
		m->napped = 0;
		if (work < m->yield) {
			if (++m->fails < RN_MOD_FAILS)
				return 0;
			m->fails = 0;
			m->cool_until = now + m->cool_ns;
			m->cool_ns *= 2;
			if (m->cool_ns > RN_MOD_COOL_MAX_NS)
				m->cool_ns = RN_MOD_COOL_MAX_NS;
			return 0;
		}
		m->fails = 0;
		m->cool_ns = RN_MOD_COOL_MIN_NS;
	}
	if (work < RN_MOD_BURST || now < m->cool_until)
		return 0;
	m->napped = 1;
	return 1;
}

/**
 * rn_mod_idle() - the thread has nothing to do: nap, or tell it to block
 * @m:		moderation state
 *
 * rn_mod_decide() at the current time, and the nap if it says so. The
 * caller must not have announced sleep to its peers (NEED_WAKEUP) before
 * calling this.
 *
 * Return: 1 after a nap (look for work again, do not block), 0 to block
 */
int rn_mod_idle(struct rn_mod *m)
{
	struct timespec ts;

	/* The clock costs a system call on some machines: read it only if needed */
	if (!rn_mod_decide(m, rn_mod_may_nap(m) ? rn_mono_ns() : 0))
		return 0;
	ts.tv_sec = 0;
	ts.tv_nsec = m->nap_ns;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	return 1;
}
