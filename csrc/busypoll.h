/* busypoll.h - adaptive busy polling: look again instead of blocking (issue 12)
 *
 * Theory of operation
 * -------------------
 * Every request that crosses ringnet wakes a pump thread and a worker twice
 * (the request in, the answer out). A thread that blocks leaves its CPU idle,
 * and an idle virtual CPU halts: waking a halted vCPU is an inter-processor
 * interrupt that the hypervisor turns into a host-side wake-up of the vCPU's
 * thread, tens of microseconds on small VMs (measured on this project's
 * 2-vCPU Firecracker machine: 35-45 us per wake-up to a halted vCPU, under 2
 * us to a running one). Guest kernels hide this with cpuidle-haltpoll, which
 * polls a while before halting; where it is off (guest_halt_poll_ns = 0) or
 * absent, every hop of a request pays the full price, and ringnet has twice
 * the hops of a one-process peer.
 *
 * So an idle data path thread may spin for a while before it blocks: it runs
 * its loop again (the ring, the tun queue or its epoll without blocking),
 * calling sched_yield() between looks so that any other runnable task on its
 * CPU (the application, the server it talks to) runs first. While spinning it
 * announces no sleep on its ring, so nobody kicks it either.
 *
 * How long to spin is learnt per thread, as cpuidle-haltpoll's governor does
 * for the guest's idle loop (own rules, same idea):
 *   - a thread idle for no longer than the limit (busy_poll_us) would have
 *     been served by a long enough spin: the window doubles (from
 *     RN_BPOLL_START_DIV-th of the limit, up to the limit);
 *   - a thread idle for longer than the limit (a pause, a slow host) wasted
 *     its spin: the window halves, and drops to 0 below the start value;
 *   - a spin that found work (a hit) keeps the window.
 * "Idle for" counts from the first idle look (the start of the spin) to the
 * work that ended it, so a spin that ran out and was followed by a short
 * block still grows the window. Request/response traffic, whose gaps are
 * shorter than the limit, keeps its threads spinning; a stream never idles;
 * an idle network spins once per window size at most, halving each time, and
 * never again until traffic comes back: at most twice the limit of CPU per
 * pause of traffic.
 *
 * Streams do not spin: a thread that moved RN_BPOLL_BULK bytes or more
 * between two idle points (64 KiB offload frames) blocks at once, as without
 * busy polling, for the next RN_BPOLL_BULK_HOLD_NS (the idle points of a
 * stream's ACK-only batches in between do not spin either). A stream's
 * wake-ups are already paid for by the bytes each one moves, and a spin there
 * would only burn CPU (measured: +65% CPU per GB on a one-stream iperf3 for
 * the same throughput).
 *
 * busy_poll_us 0 turns this off: every idle thread blocks at once.
 *
 * rn_bpoll_idle() and rn_bpoll_work() take the time (rn_mono_ns(), clock.h)
 * as an argument, so that tests drive the rules with made-up clocks
 * (tests/test_busypoll.py).
 */
#ifndef RN_BUSYPOLL_H
#define RN_BUSYPOLL_H

#include <stdint.h>

#define RN_BPOLL_MAX_US		1000u
#define RN_BPOLL_START_DIV	4u
#define RN_BPOLL_BULK		(32u * 1024u)
#define RN_BPOLL_BULK_HOLD_NS	(1000 * 1000LL)

/**
 * struct rn_bpoll - one thread's busy-poll state
 * @max_ns:	the limit of a spin, 0: off
 * @win_ns:	the current window, 0 .. @max_ns
 * @idle_since:	when the thread last went idle (CLOCK_MONOTONIC, ns), 0: busy
 * @spinning:	the last idle point decided to spin (a hit is due if work comes)
 * @bulk_until:	a stream was seen: no spins before this time (CLOCK_MONOTONIC, ns)
 * @moved_at:	the caller's byte count at the start of this idle period
 */
struct rn_bpoll {
	uint32_t max_ns;
	uint32_t win_ns;
	int64_t idle_since;
	int32_t spinning;
	int64_t bulk_until;
	uint64_t moved_at;
};

void rn_bpoll_init(struct rn_bpoll *b, uint32_t max_us);
int rn_bpoll_idle(struct rn_bpoll *b, int64_t now, uint64_t moved);
int rn_bpoll_work(struct rn_bpoll *b, int64_t now);

/**
 * rn_bpoll_active() - whether the thread is idle now (a spin or a block is on)
 * @b:		busy-poll state
 *
 * Return: 1 between an idle point and the work that ends it
 */
static inline int rn_bpoll_active(const struct rn_bpoll *b)
{
	return b->idle_since != 0;
}

#endif /* RN_BUSYPOLL_H */
