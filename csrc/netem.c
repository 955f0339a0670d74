/* netem.c - network emulation in the worker: a timed queue and a token bucket per direction
 *
 * Theory of operation
 * -------------------
 * Where: "up" frames (namespace -> world) are queued as they are taken from
 * ring to_worker, before intake: the ring space is released at once and the
 * frame is validated and dispatched (rn_tap_input()) only when it leaves the
 * queue, so a frame's fate is decided exactly as without emulation, later.
 * "down" frames (world -> namespace) are queued where they would enter ring
 * to_ns: with down emulation on, rn_worker_tx_reserve() hands out room in
 * the queue instead of the ring (no copy on the way in), and the frame is
 * copied into to_ns when it leaves. A flow that finds the down queue full
 * waits for room exactly as for a full ring (rn_worker_wait_room(): its data
 * stays in its host socket, and the namespace sees a slower link, not
 * losses); replies that do not fit (ACKs, echo replies) are lost and counted
 * as for a full ring. The up queue cannot push back on the namespace: a
 * frame that does not fit is dropped and counted (netem_full_up), as a
 * router's queue does.
 *
 * The queue: a byte FIFO of RN_NETEM_QUEUE_BYTES (allocated when the
 * direction is first turned on) holding 16-byte-aligned records {due time,
 * length} + frame, never wrapping (a PAD record fills the end), at most
 * limit= frames. Frames leave in the order they came: a frame's due time is
 * its arrival plus delay, plus a uniform draw in [-jitter, +jitter], but never
 * earlier than the frame before it, so jitter varies the delay without
 * reordering (Linux netem reorders on jitter unless a rate is set; a real
 * link does not). reorder=P% sends a frame at once, ahead of everything
 * queued (netem's "reorder": it needs a delay to overtake anything).
 *
 * Rate: a token bucket kept as a time, link_free: when the emulated link has
 * finished sending what it took. The head frame leaves at max(due,
 * link_free), and link_free then advances by its IP bytes * 8 / rate (the
 * virtio-net header is not charged). Since link_free advances from the
 * virtual time and not from when the worker woke up, a late wake-up sends
 * the frames that fell due together and the average rate stays exact; the
 * bucket holds no credit beyond a frame's own due time, so an idle link
 * gives no burst.
 *
 * TSO and USO super-frames (up to 64 KiB) are one unit: one draw decides
 * the loss, duplication or reordering of all the segments they carry, and
 * the bucket charges all their bytes (their headers once). Loss is per frame,
 * not per wire packet: with loss=1%, 1% of the frames the namespace hands
 * over or the worker builds are lost.
 *
 * Timers: the worker's epoll loop. A timerfd (CLOCK_MONOTONIC, absolute,
 * nanoseconds: an epoll timeout counts whole milliseconds) in the worker's
 * epoll is armed, only when the loop is about to block, for the earliest
 * head frame's leaving time (rn_netem_arm()); it is re-armed only when that
 * time moves earlier than the armed one, so a queue in steady use costs one
 * timerfd_settime() per wake-up at most. rn_netem_run() releases what is due
 * on every pass of the loop: up to RN_WORKER_BATCH up frames per pass, and
 * down frames as long as to_ns has room; when to_ns is full the head waits
 * (stalled) for the pump's kick, not for a timer. Nothing ever spins: a pass
 * that leaves due frames behind does not block, one that does not arms the
 * timer.
 *
 * Changes at run time (rn_netem_set(), between loop passes): new parameters
 * apply to new frames; frames queued keep their times (so a smaller delay
 * shows once the queue has drained: frames never overtake). A direction
 * turned off while frames are queued drains first: those frames leave at
 * once, in order, new ones after them, and the direction goes back to the
 * direct path when its queue is empty.
 *
 * Off, the data path pays one predictable branch per frame and direction
 * (worker.c's intake, tap.c's reserve and commit test a flag) and the loop
 * one more per pass. The fault injector of the tests (fault.c) and netem
 * are exclusive per direction; they share those branches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "netem.h"
#include "shm.h"
#include "tap.h"
#include "worker.h"

#define RN_NETEM_REC		16u
#define RN_NETEM_F_PAD		1u
#define RN_NETEM_MASK		((uint64_t)RN_NETEM_QUEUE_BYTES - 1)

_Static_assert((RN_NETEM_QUEUE_BYTES & (RN_NETEM_QUEUE_BYTES - 1)) == 0,
	       "the netem queue is a power of two");

/**
 * struct rn_netem_rec - a record in a queue; the frame follows
 * @due:	when the frame may leave, ns (CLOCK_MONOTONIC)
 * @len:	frame length, vnet header included (PAD: the record's size)
 * @flags:	RN_NETEM_F_PAD for the filler at the end of the buffer
 */
struct rn_netem_rec {
	int64_t due;
	uint32_t len;
	uint32_t flags;
};

_Static_assert(sizeof(struct rn_netem_rec) == RN_NETEM_REC, "record header size");

/**
 * rn_netem_now() - monotonic clock in nanoseconds
 *
 * Return: nanoseconds since an arbitrary point (the timerfd's clock)
 */
static int64_t rn_netem_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/**
 * rn_netem_rec_size() - bytes a record of a frame takes in the buffer
 * @len:	frame length
 *
 * Return: header plus frame, rounded up to 16
 */
static uint32_t rn_netem_rec_size(uint32_t len)
{
	return RN_NETEM_REC + ((len + 15u) & ~15u);
}

/**
 * rn_netem_draw() - next pseudo-random number in 0..RN_NETEM_PPM-1
 * @q:		queue whose generator to use
 *
 * xorshift64* (Vigna): fast and even enough; nothing here is secret.
 *
 * Return: the number
 */
static uint32_t rn_netem_draw(struct rn_netem_q *q)
{
	q->rng ^= q->rng >> 12;
	q->rng ^= q->rng << 25;
	q->rng ^= q->rng >> 27;
	return (uint32_t)(((q->rng * 0x2545f4914f6cdd1dull) >> 32) % RN_NETEM_PPM);
}

/**
 * rn_netem_fate() - draw what happens to the next frame of a direction
 * @q:		queue, on
 * @reorder:	set to 1 if the frame skips the queue
 *
 * Return: copies to deliver: 0 (lost), 1, or 2 (duplicated)
 */
static int rn_netem_fate(struct rn_netem_q *q, int *reorder)
{
	int copies = 1;

	*reorder = 0;
	if (q->draining)
		return 1;
	if (q->p.loss_ppm && rn_netem_draw(q) < q->p.loss_ppm)
		return 0;
	if (q->p.dup_ppm && rn_netem_draw(q) < q->p.dup_ppm)
		copies = 2;
	if (q->p.reorder_ppm && rn_netem_draw(q) < q->p.reorder_ppm)
		*reorder = 1;
	return copies;
}

/**
 * rn_netem_due() - when a frame arriving now may leave
 * @q:		queue
 * @now:	current time, ns
 *
 * Return: now + delay +- jitter, not before the frame queued before it
 */
static int64_t rn_netem_due(struct rn_netem_q *q, int64_t now)
{
	int64_t due = now + (int64_t)q->p.delay_ns;
	uint64_t j = q->p.jitter_ns, r;

	if (j && !q->draining) {
		/* 2^53 values over [-j, +j]: 60 s of jitter in ns fits easily */
		r = (q->rng * 0x2545f4914f6cdd1dull) >> 11;
		rn_netem_draw(q);
		due += (int64_t)(r % (2 * j + 1)) - (int64_t)j;
	}
	if (q->draining || due < now)
		due = now;
	if (due < q->last_due)
		due = q->last_due;
	q->last_due = due;
	return due;
}

/**
 * rn_netem_tx_ns() - time the emulated link takes to send a frame
 * @q:		queue with a rate
 * @len:	frame length, vnet header included (not charged)
 *
 * Return: nanoseconds
 */
static int64_t rn_netem_tx_ns(const struct rn_netem_q *q, uint32_t len)
{
	uint64_t bytes = len > RN_VNET_HDR_LEN ? len - RN_VNET_HDR_LEN : 0;

	/* at most 65,575 * 8e9: no overflow */
	return (int64_t)(bytes * 8u * 1000000000ull / q->p.rate_bps);
}

/**
 * rn_netem_charge() - a frame that skipped the queue still uses the link
 * @q:		queue
 * @now:	current time, ns
 * @len:	frame length
 */
static void rn_netem_charge(struct rn_netem_q *q, int64_t now, uint32_t len)
{
	if (!q->p.rate_bps)
		return;
	if (q->link_free < now)
		q->link_free = now;
	q->link_free += rn_netem_tx_ns(q, len);
}

/**
 * rn_netem_q_reserve() - room for a record of a frame at the queue's tail
 * @q:		queue with a buffer
 * @len:	most bytes the frame will have
 *
 * A PAD record fills the end of the buffer first if the record would not
 * fit there. A reservation not committed is overwritten by the next one.
 *
 * Return: the record, or NULL when the queue is full (frames or bytes)
 */
static struct rn_netem_rec *rn_netem_q_reserve(struct rn_netem_q *q, uint32_t len)
{
	uint64_t pos = q->tail & RN_NETEM_MASK, to_end = RN_NETEM_QUEUE_BYTES - pos, pad;
	uint32_t need = rn_netem_rec_size(len);
	struct rn_netem_rec *rec;

	pad = to_end < need ? to_end : 0;
	if (q->frames >= q->p.limit ||
	    RN_NETEM_QUEUE_BYTES - (q->tail - q->head) < pad + need)
		return NULL;
	if (pad) {
		rec = (struct rn_netem_rec *)(q->buf + pos);
		rec->due = 0;
		rec->len = (uint32_t)pad;
		rec->flags = RN_NETEM_F_PAD;
		q->tail += pad;
		pos = 0;
	}
	return (struct rn_netem_rec *)(q->buf + pos);
}

/**
 * rn_netem_q_commit() - append the reserved record
 * @w:		worker (counters)
 * @q:		queue
 * @rec:	record from rn_netem_q_reserve(), frame written
 * @len:	frame length, at most what was reserved
 * @due:	when it may leave
 * @gauge:	the direction's queued-frames counter
 */
static void rn_netem_q_commit(struct rn_worker *w, struct rn_netem_q *q, struct rn_netem_rec *rec,
			      uint32_t len, int64_t due, unsigned int gauge)
{
	rec->due = due;
	rec->len = len;
	rec->flags = 0;
	q->tail += rn_netem_rec_size(len);
	q->frames++;
	rn_ctr_add(w->ctr, gauge, 1);
}

/**
 * rn_netem_head() - the oldest frame of a queue, skipping PAD records
 * @q:		queue
 *
 * Return: its record, or NULL if the queue is empty
 */
static struct rn_netem_rec *rn_netem_head(struct rn_netem_q *q)
{
	struct rn_netem_rec *rec;

	while (q->head != q->tail) {
		rec = (struct rn_netem_rec *)(q->buf + (q->head & RN_NETEM_MASK));
		if (!(rec->flags & RN_NETEM_F_PAD))
			return rec;
		q->head += rec->len;
	}
	return NULL;
}

/**
 * rn_netem_start() - when the head frame may leave
 * @q:		queue
 * @rec:	its head record
 *
 * Return: max(due, link_free), or 1 (long past) while draining
 */
static int64_t rn_netem_start(const struct rn_netem_q *q, const struct rn_netem_rec *rec)
{
	if (q->draining)
		return 1;
	return rec->due > q->link_free ? rec->due : q->link_free;
}

/**
 * rn_netem_pop() - remove the head frame, which has left at @start
 * @w:		worker (counters)
 * @q:		queue
 * @rec:	head record
 * @start:	when it left (rn_netem_start())
 * @gauge:	the direction's queued-frames counter
 */
static void rn_netem_pop(struct rn_worker *w, struct rn_netem_q *q, struct rn_netem_rec *rec,
			 int64_t start, unsigned int gauge)
{
	if (q->p.rate_bps)
		q->link_free = start + rn_netem_tx_ns(q, rec->len);
	q->head += rn_netem_rec_size(rec->len);
	q->frames--;
	rn_ctr_add(w->ctr, gauge, (uint64_t)-1);
}

/**
 * rn_netem_q_off() - a direction back on the direct path, its buffer freed
 * @q:		queue, empty
 */
static void rn_netem_q_off(struct rn_netem_q *q)
{
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/**
 * rn_netem_update() - recompute the loop's flag after a direction changed
 * @w:		worker
 */
static void rn_netem_update(struct rn_worker *w)
{
	w->netem.active = w->netem.up.on | w->netem.down.on;
}

/**
 * rn_netem_init() - create the timerfd and put it into the worker's epoll
 * @w:		worker whose epoll instance exists; netem state zeroed
 *
 * Called at creation, before the sandbox: after set-up only
 * timerfd_settime() and read() are needed.
 *
 * Return: 0, or negative errno
 */
int rn_netem_init(struct rn_worker *w)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->netem };

	w->netem.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (w->netem.tfd < 0)
		return -errno;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->netem.tfd, &ev))
		return -errno;
	return 0;
}

/**
 * rn_netem_fini() - free both queues (frames queued are lost) and the timerfd
 * @w:		worker
 */
void rn_netem_fini(struct rn_worker *w)
{
	rn_netem_q_off(&w->netem.up);
	rn_netem_q_off(&w->netem.down);
	if (w->netem.tfd >= 0)
		close(w->netem.tfd);
	w->netem.tfd = -1;
	w->netem.active = 0;
}

/**
 * rn_netem_set() - set one direction's emulation
 * @w:		worker, between two loop passes
 * @dir:	RN_NETEM_UP or RN_NETEM_DOWN
 * @p:		parameters; NULL or all effects zero: off
 *
 * The generator is seeded from @p->seed, the worker index and @dir. Frames
 * already queued keep their times; turning a direction off drains it first.
 *
 * Return: 0, -EINVAL for a bad direction or parameter, -EBUSY when the test
 *	   fault injector works on that direction, -ENOMEM
 */
int rn_netem_set(struct rn_worker *w, int dir, const struct rn_netem_params *p)
{
	struct rn_netem_q *q;
	int want;

	if (dir != RN_NETEM_UP && dir != RN_NETEM_DOWN)
		return -EINVAL;
	q = dir == RN_NETEM_UP ? &w->netem.up : &w->netem.down;
	if (p && (p->loss_ppm > RN_NETEM_PPM || p->dup_ppm > RN_NETEM_PPM ||
		  p->reorder_ppm > RN_NETEM_PPM || p->delay_ns > RN_NETEM_DELAY_MAX ||
		  p->jitter_ns > RN_NETEM_DELAY_MAX || !p->limit || p->limit > RN_NETEM_LIMIT_MAX))
		return -EINVAL;
	want = p && (p->delay_ns || p->jitter_ns || p->rate_bps || p->loss_ppm ||
		     p->dup_ppm || p->reorder_ppm);
	if (want && (dir == RN_NETEM_UP ? w->fin.on : w->fout.on))
		return -EBUSY;
	if (!want) {
		if (q->on && q->frames) {
			memset(&q->p, 0, sizeof(q->p));
			q->p.limit = RN_NETEM_LIMIT_MAX;
			q->draining = 1;
		} else {
			rn_netem_q_off(q);
		}
		rn_netem_update(w);
		return 0;
	}
	if (!q->buf) {
		q->buf = malloc(RN_NETEM_QUEUE_BYTES);
		if (!q->buf)
			return -ENOMEM;
		q->head = q->tail = 0;
	}
	q->p = *p;
	q->draining = 0;
	q->rng = (p->seed ^ ((2ull * w->p.index + (uint64_t)dir + 1) * 0x9e3779b97f4a7c15ull)) | 1;
	q->on = 1;
	rn_netem_update(w);
	return 0;
}

/**
 * rn_netem_queued() - frames a direction holds now
 * @w:		worker
 * @dir:	RN_NETEM_UP or RN_NETEM_DOWN
 *
 * Return: the count (0 for a bad @dir)
 */
uint32_t rn_netem_queued(struct rn_worker *w, int dir)
{
	if (dir == RN_NETEM_UP)
		return w->netem.up.frames;
	if (dir == RN_NETEM_DOWN)
		return w->netem.down.frames;
	return 0;
}

/**
 * rn_netem_input() - a frame taken from to_worker, up emulation or faults on
 * @w:		worker
 * @shm:	frame in shared memory (copied, never parsed here)
 * @len:	its length from the ring record, at most RN_FRAME_MAX
 *
 * A lost frame, or one the full queue cannot take, counts as taken
 * (frames_in, bytes_in) with the outcome netem_loss_up or netem_full_up; a
 * queued frame is counted by rn_tap_input() when it leaves.
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_netem_input(struct rn_worker *w, const uint8_t *shm, uint32_t len)
{
	struct rn_netem_q *q = &w->netem.up;
	struct rn_netem_rec *rec;
	int copies, reorder, i, rc;
	int64_t now, due;

	if (w->fin.on)
		return rn_fault_input(w, shm, len);
	copies = rn_netem_fate(q, &reorder);
	if (!copies) {
		rn_ctr_add(w->ctr, RN_WCTR_frames_in, 1);
		rn_ctr_add(w->ctr, RN_WCTR_bytes_in, len);
		rn_ctr_add(w->ctr, RN_WCTR_netem_loss_up, 1);
		return 0;
	}
	if (copies > 1)
		rn_ctr_add(w->ctr, RN_WCTR_netem_dup_up, 1);
	now = rn_netem_now();
	if (reorder) {
		rn_ctr_add(w->ctr, RN_WCTR_netem_reorder_up, 1);
		for (i = 0; i < copies; i++) {
			rn_netem_charge(q, now, len);
			rc = rn_tap_input(w, shm, len);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	due = rn_netem_due(q, now);
	for (i = 0; i < copies; i++) {
		rec = rn_netem_q_reserve(q, len);
		if (!rec) {
			rn_ctr_add(w->ctr, RN_WCTR_frames_in, 1);
			rn_ctr_add(w->ctr, RN_WCTR_bytes_in, len);
			rn_ctr_add(w->ctr, RN_WCTR_netem_full_up, 1);
			continue;
		}
		memcpy(rec + 1, shm, len);
		rn_netem_q_commit(w, q, rec, len, due, RN_WCTR_netem_queued_up);
	}
	return 0;
}

/**
 * rn_netem_tx_reserve() - room for a frame to the namespace, in the down queue
 * @w:		worker, down emulation on
 * @len:	frame length, vnet header included, at most RN_FRAME_MAX
 * @err:	set to 0 (a full queue is not an error)
 *
 * Return: where the frame goes, or NULL when the queue is full (callers
 *	   treat it as a full ring: flows wait for room)
 */
uint8_t *rn_netem_tx_reserve(struct rn_worker *w, uint32_t len, int *err)
{
	struct rn_netem_q *q = &w->netem.down;
	struct rn_netem_rec *rec;

	*err = 0;
	rec = rn_netem_q_reserve(q, len);
	q->resv = (uint8_t *)rec;
	if (!rec) {
		rn_ctr_add(w->ctr, RN_WCTR_netem_full_down, 1);
		return NULL;
	}
	return (uint8_t *)(rec + 1);
}

/**
 * rn_netem_tx_commit() - commit the reserved frame, down emulation or faults on
 * @w:		worker
 * @len:	frame length, vnet header included, at most what was reserved
 *
 * The frame is lost, queued (twice when duplicated), or copied into to_ns at
 * once ahead of the queue (reordered; lost as ring_full if to_ns is full).
 */
void rn_netem_tx_commit(struct rn_worker *w, uint32_t len)
{
	struct rn_netem_q *q = &w->netem.down;
	struct rn_netem_rec *rec = (struct rn_netem_rec *)q->resv, *dup;
	int copies, reorder, i;
	int64_t now, due;

	if (w->fout.on) {
		rn_fault_commit(w, len);
		return;
	}
	q->resv = NULL;
	if (!rec)
		return;
	copies = rn_netem_fate(q, &reorder);
	if (!copies) {
		rn_ctr_add(w->ctr, RN_WCTR_netem_loss_down, 1);
		return;
	}
	if (copies > 1)
		rn_ctr_add(w->ctr, RN_WCTR_netem_dup_down, 1);
	now = rn_netem_now();
	if (reorder) {
		rn_ctr_add(w->ctr, RN_WCTR_netem_reorder_down, 1);
		for (i = 0; i < copies; i++) {
			rn_netem_charge(q, now, len);
			if (!rn_tap_copy(w, (const uint8_t *)(rec + 1), len))
				rn_ctr_add(w->ctr, RN_WCTR_ring_full, 1);
		}
		return;
	}
	due = rn_netem_due(q, now);
	rn_netem_q_commit(w, q, rec, len, due, RN_WCTR_netem_queued_down);
	if (copies > 1 && (dup = rn_netem_q_reserve(q, len))) {
		memcpy(dup + 1, rec + 1, len);
		rn_netem_q_commit(w, q, dup, len, due, RN_WCTR_netem_queued_down);
	}
}

/**
 * rn_netem_room() - may flows waiting for room be called back
 * @w:		worker, down emulation on
 *
 * Return: true if the down queue takes a largest frame
 */
int rn_netem_room(struct rn_worker *w)
{
	const struct rn_netem_q *q = &w->netem.down;

	return q->frames < q->p.limit &&
	       RN_NETEM_QUEUE_BYTES - (q->tail - q->head) >= 2 * rn_netem_rec_size(RN_FRAME_MAX);
}

/**
 * rn_netem_run_up() - hand the due up frames to intake
 * @w:		worker
 * @now:	current time, ns
 *
 * At most RN_WORKER_BATCH frames per call, so that a backlog does not hold
 * up the rest of the loop; rn_netem_arm() then says not to block.
 *
 * Return: 0, or negative errno when the worker must stop
 */
static int rn_netem_run_up(struct rn_worker *w, int64_t now)
{
	struct rn_netem_q *q = &w->netem.up;
	struct rn_netem_rec *rec;
	unsigned int n;
	int64_t start;
	int rc;

	for (n = 0; n < RN_WORKER_BATCH && (rec = rn_netem_head(q)); n++) {
		start = rn_netem_start(q, rec);
		if (start > now)
			break;
		/* The record stays in place until intake is done with it */
		rc = rn_tap_input(w, (const uint8_t *)(rec + 1), rec->len);
		rn_netem_pop(w, q, rec, start, RN_WCTR_netem_queued_up);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/**
 * rn_netem_run_down() - copy the due down frames into to_ns
 * @w:		worker
 * @now:	current time, ns
 *
 * When to_ns is full, publishes it, kicks the namespace if needed and
 * announces that we wait for space: the head frame is then stalled until
 * the pump's kick (rn_netem_arm() arms no timer for it).
 *
 * Return: 0, or negative errno (-EPROTO: the namespace corrupted to_ns)
 */
static int rn_netem_run_down(struct rn_worker *w, int64_t now)
{
	struct rn_netem_q *q = &w->netem.down;
	struct rn_netem_rec *rec;
	int64_t start;
	uint8_t *p;
	int err;

	q->stalled = 0;
	while ((rec = rn_netem_head(q))) {
		start = rn_netem_start(q, rec);
		if (start > now)
			break;
		p = rn_ring_reserve(&w->tx, rec->len, &err);
		if (!p) {
			if (err)
				return rn_worker_fatal(w, err);
			if (rn_ring_publish(&w->tx))
				rn_worker_kick(w);
			err = rn_ring_producer_sleep(&w->tx, rec->len);
			if (err < 0)
				return rn_worker_fatal(w, err);
			if (err) {
				q->stalled = 1;
				break;
			}
			continue;
		}
		memcpy(p, rec + 1, rec->len);
		rn_tap_put(w, p, rec->len);
		rn_netem_pop(w, q, rec, start, RN_WCTR_netem_queued_down);
	}
	return 0;
}

/**
 * rn_netem_run() - release what is due in both directions
 * @w:		worker, netem active
 *
 * A draining direction whose queue is empty goes back to the direct path.
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_netem_run(struct rn_worker *w)
{
	int64_t now = rn_netem_now();
	int rc = 0;

	if (w->netem.up.on)
		rc = rn_netem_run_up(w, now);
	if (!rc && w->netem.down.on)
		rc = rn_netem_run_down(w, now);
	if (w->netem.up.draining && !rn_netem_head(&w->netem.up))
		rn_netem_q_off(&w->netem.up);
	if (w->netem.down.draining && !rn_netem_head(&w->netem.down))
		rn_netem_q_off(&w->netem.down);
	rn_netem_update(w);
	return rc;
}

/**
 * rn_netem_next() - when a direction's head frame may leave
 * @q:		queue
 *
 * Return: the time in ns, or 0 when no timer is needed (empty, off, or
 *	   stalled on a full to_ns)
 */
static int64_t rn_netem_next(struct rn_netem_q *q)
{
	struct rn_netem_rec *rec;

	if (!q->on || q->stalled || !(rec = rn_netem_head(q)))
		return 0;
	return rn_netem_start(q, rec);
}

/**
 * rn_netem_arm() - before the loop blocks: arm the timer for the next frame
 * @w:		worker, netem active
 *
 * Return: 1 if a frame is due already (the loop must not block), else 0;
 *	   a timerfd that cannot be armed is fatal (the loop would miss frames)
 */
int rn_netem_arm(struct rn_worker *w)
{
	struct itimerspec its = { { 0, 0 }, { 0, 0 } };
	int64_t next = rn_netem_next(&w->netem.up), t = rn_netem_next(&w->netem.down);

	if (t && (!next || t < next))
		next = t;
	if (!next)
		return 0;
	if (next <= rn_netem_now())
		return 1;
	if (w->netem.armed && w->netem.armed <= next)
		return 0;	/* fires first; re-armed then */
	its.it_value.tv_sec = next / 1000000000;
	its.it_value.tv_nsec = next % 1000000000;
	if (timerfd_settime(w->netem.tfd, TFD_TIMER_ABSTIME, &its, NULL)) {
		rn_worker_fatal(w, -errno);
		return 1;
	}
	w->netem.armed = next;
	return 0;
}

/**
 * rn_netem_timer_event() - the timerfd fired: clear it
 * @w:		worker
 *
 * The loop pass that follows releases what is due and re-arms.
 */
void rn_netem_timer_event(struct rn_worker *w)
{
	uint64_t ticks;

	if (read(w->netem.tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return;
	w->netem.armed = 0;
	rn_ctr_add(w->ctr, RN_WCTR_netem_timers, 1);
}
