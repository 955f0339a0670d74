/* moderate.h - wake-up moderation: serve a stream of small packets in batches
 *
 * Theory of operation
 * -------------------
 * A worker or pump thread that runs out of work blocks, and whoever produces
 * its next packet wakes it: an eventfd write or a socket wake-up, which on a
 * small (virtual) machine costs the waker an inter-processor interrupt and
 * both sides a context switch. A stream of small packets (UDP at 1 Gbit/s is
 * 89,000 datagrams of 1400 bytes a second) then wakes the thread every few
 * packets, and the wake-ups cost more CPU than the packets do.
 *
 * Like a NIC's adaptive interrupt coalescing, a thread that has just moved a
 * one-way burst of small packets (RN_MOD_BURST or more since it last went
 * idle, counted as packets one way minus packets the other way) naps for
 * nap_us instead of blocking. It announces no sleep meanwhile, so nobody
 * kicks it, and packets pile up for it to move as one batch (one recvmmsg(),
 * one USO frame, one ring publish) when the nap ends. The nap is judged when
 * the thread is idle again: it failed if it brought in fewer small packets
 * (again one way minus the other) than a stream of RN_MOD_RATE packets a
 * second would have in nap_us, and at least RN_MOD_YIELD. Requests and
 * their answers, connection handshakes and TCP's ACKs go both ways in equal
 * numbers and never make a thread nap; a stream goes one way. A stream paced in bursts fails once per gap
 * between bursts; RN_MOD_FAILS failures in a row mean the traffic is not a
 * stream (requests and their answers, a pause), and the thread stops napping
 * for a cooling period that doubles each time, from RN_MOD_COOL_MIN_NS up to
 * RN_MOD_COOL_MAX_NS, and goes back to the minimum after a nap that paid off.
 * So request/response traffic pays for a few failed naps per cooling period
 * at most, and a stream pays nothing but up to nap_us of extra latency per
 * batch.
 *
 * Only small packets count (callers decide which: the pump counts frames of
 * at most RN_MOD_SMALL bytes and the datagrams of USO frames, the worker UDP
 * datagrams): TCP streams come in 64 KiB offload frames, which already
 * amortize a wake-up, and their ACK clock must not wait.
 *
 * nap_us 0 turns moderation off: every idle thread blocks at once.
 *
 * rn_mod_decide() applies these rules at a time it is given (tests drive it
 * with made-up clocks, tests/test_moderate.py); rn_mod_idle() applies them
 * at the real time and takes the nap.
 */
#ifndef RN_MODERATE_H
#define RN_MODERATE_H

#include <stdint.h>

#define RN_MOD_NAP_MAX_US	1000u
#define RN_MOD_SMALL		2048u
#define RN_MOD_BURST		2u
#define RN_MOD_YIELD		4u
#define RN_MOD_RATE		40000u
#define RN_MOD_FAILS		4u
#define RN_MOD_COOL_MIN_NS	(20 * 1000 * 1000LL)
#define RN_MOD_COOL_MAX_NS	(1000 * 1000 * 1000LL)

/**
 * struct rn_mod - one thread's moderation state
 * @nap_ns:	length of a nap, 0: moderation off
 * @yield:	small packets a nap must bring in to count as a success
 * @napped:	the thread's last idle point was a nap, not yet judged
 * @fails:	failed naps in a row
 * @up:	small packets moved one way (towards the host) since the last idle point
 * @down:	small packets moved the other way (towards the namespace)
 * @cool_ns:	cooling period after the next failed nap
 * @cool_until:	no naps before this time (CLOCK_MONOTONIC, ns)
 */
struct rn_mod {
	uint32_t nap_ns;
	uint32_t yield;
	uint16_t napped;
	uint16_t fails;
	uint64_t up;
	uint64_t down;
	int64_t cool_ns;
	int64_t cool_until;
};

void rn_mod_init(struct rn_mod *m, uint32_t nap_us);
int rn_mod_may_nap(const struct rn_mod *m);
int rn_mod_decide(struct rn_mod *m, int64_t now);
int rn_mod_idle(struct rn_mod *m);

/**
 * rn_mod_up() - count small packets the thread moved towards the host
 * @m:		moderation state
 * @n:		packets
 */
static inline void rn_mod_up(struct rn_mod *m, uint64_t n)
{
	m->up += n;
}

/**
 * rn_mod_down() - count small packets the thread moved towards the namespace
 * @m:		moderation state
 * @n:		packets
 */
static inline void rn_mod_down(struct rn_mod *m, uint64_t n)
{
	m->down += n;
}

/**
 * rn_mod_work() - one-way small packets since the last idle point
 * @m:		moderation state
 *
 * Return: the larger count minus the smaller
 */
static inline uint64_t rn_mod_work(const struct rn_mod *m)
{
	return m->up > m->down ? m->up - m->down : m->down - m->up;
}

#endif /* RN_MODERATE_H */
