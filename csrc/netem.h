/* netem.h - network emulation in the worker: delay, jitter, loss, duplication, reordering, rate
 *
 * A rootless netem: each worker can put either direction of its traffic
 * through a timed queue with a token bucket (netem.c has the theory of
 * operation). "up" is namespace -> world (frames taken from ring to_worker,
 * queued before intake), "down" is world -> namespace (frames the protocol
 * cores commit, queued before they enter ring to_ns). Parameters arrive at
 * any time through rn_netem_set() (Python: ringnet/_netem.py). Off, the data
 * path pays one predictable branch per frame and direction.
 */
#ifndef RN_NETEM_H
#define RN_NETEM_H

#include <stdint.h>

struct rn_worker;

#define RN_NETEM_UP		0
#define RN_NETEM_DOWN		1
/* Queue limits: frames (the limit= key) and bytes, per worker and direction */
#define RN_NETEM_LIMIT_MAX	100000u
#define RN_NETEM_QUEUE_BYTES	(8u << 20)
/* Largest delay and jitter, ns (60 s) */
#define RN_NETEM_DELAY_MAX	60000000000ull
#define RN_NETEM_PPM		1000000u

/**
 * struct rn_netem_params - one direction's emulation (all zero but @limit: off)
 * @delay_ns:	added to every frame's time in the queue
 * @jitter_ns:	the delay varies uniformly by up to this much either way
 * @rate_bps:	token bucket rate in bits per second over IP packet bytes, 0: no limit
 * @seed:	generator seed (with the worker and direction), so a run repeats
 * @loss_ppm:	frames lost, parts per million
 * @dup_ppm:	frames delivered twice, parts per million
 * @reorder_ppm: frames sent at once, ahead of the queue, parts per million
 * @limit:	frames the queue holds at most, 1..RN_NETEM_LIMIT_MAX
 */
struct rn_netem_params {
	uint64_t delay_ns;
	uint64_t jitter_ns;
	uint64_t rate_bps;
	uint64_t seed;
	uint32_t loss_ppm;
	uint32_t dup_ppm;
	uint32_t reorder_ppm;
	uint32_t limit;
};

/**
 * struct rn_netem_q - one direction's queue: a byte FIFO of timed records
 * @on:		frames of this direction go through the queue (data path flag)
 * @draining:	turned off while frames were queued: they leave at once, in
 *		order, then @on is cleared
 * @stalled:	down only: the head frame is due but to_ns was full; the
 *		pump's kick on ev_worker, not a timer, brings us back
 * @p:		parameters
 * @rng:	xorshift64* state, never zero
 * @buf:	RN_NETEM_QUEUE_BYTES of records (allocated on first use)
 * @head:	consumer position, bytes, free-running
 * @tail:	producer position, bytes, free-running
 * @frames:	frames queued
 * @last_due:	due time of the youngest frame: frames leave in order
 * @link_free:	when the emulated link has sent what it took (token bucket)
 * @resv:	down: the record of the current reservation, or NULL
 */
struct rn_netem_q {
	int on;
	int draining;
	int stalled;
	struct rn_netem_params p;
	uint64_t rng;
	uint8_t *buf;
	uint64_t head;
	uint64_t tail;
	uint32_t frames;
	int64_t last_due;
	int64_t link_free;
	uint8_t *resv;
};

/**
 * struct rn_netem - a worker's emulation state
 * @active:	either direction is on (the event loop's one branch)
 * @tfd:	timerfd (CLOCK_MONOTONIC) in the worker's epoll, tagged with
 *		this struct's address
 * @armed:	absolute deadline @tfd is armed for, ns; 0: none
 * @up:		namespace -> world
 * @down:	world -> namespace
 */
struct rn_netem {
	int active;
	int tfd;
	int64_t armed;
	struct rn_netem_q up;
	struct rn_netem_q down;
};

int rn_netem_init(struct rn_worker *w);
void rn_netem_fini(struct rn_worker *w);
int rn_netem_set(struct rn_worker *w, int dir, const struct rn_netem_params *p);
uint32_t rn_netem_queued(struct rn_worker *w, int dir);

int rn_netem_input(struct rn_worker *w, const uint8_t *shm, uint32_t len);
uint8_t *rn_netem_tx_reserve(struct rn_worker *w, uint32_t len, int *err);
void rn_netem_tx_commit(struct rn_worker *w, uint32_t len);
int rn_netem_room(struct rn_worker *w);
int rn_netem_run(struct rn_worker *w);
int rn_netem_arm(struct rn_worker *w);
void rn_netem_timer_event(struct rn_worker *w);

#endif /* RN_NETEM_H */
