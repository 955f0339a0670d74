/* ringtest.c - producer and consumer loops for the ring stress test and benchmark
 *
 * See ringtest.h. The loops follow the same protocol as the data path: publish
 * and release once per batch, kick the other side only when its NEED_WAKEUP
 * flag says it sleeps, and block on an eventfd only after announcing it and
 * re-checking the ring.
 *
 * Pauses. A side that pauses numbers the pause (k) in struct
 * rn_ringtest_shared, then waits until the other side, committing to block,
 * copies k into its acknowledgement. The side that commits to block sets its
 * ring flag (need_space or need_wakeup), issues a full fence, re-checks the
 * ring and only then reads k; the pausing side stores k, issues a full fence
 * and reads that flag, and kicks the other side when it is set. So either the
 * blocking side reads the new k, or the pausing side sees the flag and its
 * kick makes the other side wake, find the ring still full (or empty) and
 * commit again, this time reading k. Every acknowledged pause is a distinct
 * full (or empty) ring on which the other side blocked: the counts in struct
 * rn_ringtest_stats that follow from it are exact lower bounds, not chances.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"
#include "ringtest.h"

#define PATTERN_SIZE	(1u << 18)
#define PATTERN_SKEW	251u
#define LEN_LIMIT	(PATTERN_SIZE - PATTERN_SKEW - 8u)
/* Publish or release at least this often, in bytes: a fraction of the ring */
#define BATCH_BYTES(p)	((p)->size / 8)
/* The meeting area follows the ring and has a page of its own */
#define SHARED_SIZE	4096u
/* How often a pausing side looks at the other side's acknowledgement */
#define PAUSE_POLL_NS	20000L

_Static_assert(sizeof(struct rn_ringtest_shared) <= SHARED_SIZE, "ringtest shared area");

static uint8_t pattern[PATTERN_SIZE];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

/**
 * pattern_init() - fill the frame content pattern, once per process
 *
 * Return: nothing
 */
static void pattern_init(void)
{
	uint32_t i, x = 0x9e3779b9u;

	for (i = 0; i < PATTERN_SIZE; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pattern[i] = (uint8_t)x;
	}
}

/**
 * rn_ringtest_mem_size() - bytes of shared memory a run needs
 * @size:	ring data area size
 *
 * Return: the ring's memory (rn_ring_mem_size()) plus the meeting area
 */
size_t rn_ringtest_mem_size(uint32_t size)
{
	return rn_ring_mem_size(size) + SHARED_SIZE;
}

/**
 * shared_of() - the meeting area of a run
 * @mem:	the run's memory, rn_ringtest_mem_size() bytes
 * @p:		run parameters
 *
 * Return: the struct rn_ringtest_shared right after the ring
 */
static struct rn_ringtest_shared *shared_of(void *mem, const struct rn_ringtest_params *p)
{
	return (struct rn_ringtest_shared *)((uint8_t *)mem + rn_ring_mem_size(p->size));
}

/**
 * mix64() - splitmix64 finaliser
 * @x:		input
 *
 * Return: a well-mixed 64-bit value
 */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/**
 * rn_ringtest_frame_len() - length of frame @seq in a run
 * @p:		run parameters
 * @seq:	sequence number
 *
 * Return: a length in [p->minlen, p->maxlen], a pure function of seed and @seq
 */
uint32_t rn_ringtest_frame_len(const struct rn_ringtest_params *p, uint64_t seq)
{
	uint64_t span;

	if (p->maxlen <= p->minlen)
		return p->minlen;
	span = (uint64_t)p->maxlen - p->minlen + 1;
	return p->minlen + (uint32_t)(mix64(p->seed ^ (seq * 0xd1b54a32d192ed03ULL)) % span);
}

/**
 * rn_ringtest_fill() - write the content of frame @seq
 * @frame:	where the frame goes
 * @len:	frame length, below LEN_LIMIT
 * @seq:	sequence number
 *
 * Return: nothing
 */
void rn_ringtest_fill(uint8_t *frame, uint32_t len, uint64_t seq)
{
	uint64_t le = seq;
	uint32_t off = (uint32_t)(seq % PATTERN_SKEW), i;

	pthread_once(&pattern_once, pattern_init);
	for (i = 0; i < 8 && i < len; i++, le >>= 8)
		frame[i] = (uint8_t)le;
	if (len > 8)
		memcpy(frame + 8, pattern + off + 8, len - 8);
}

/**
 * rn_ringtest_check() - compare a frame with what frame @seq must hold
 * @frame:	the frame
 * @len:	its length
 * @seq:	sequence number it should have
 *
 * Return: 0 if it matches, RN_RINGTEST_BAD if not
 */
int rn_ringtest_check(const uint8_t *frame, uint32_t len, uint64_t seq)
{
	uint32_t off = (uint32_t)(seq % PATTERN_SKEW), i;
	uint64_t le = seq;

	pthread_once(&pattern_once, pattern_init);
	if (len >= LEN_LIMIT)
		return RN_RINGTEST_BAD;
	for (i = 0; i < 8 && i < len; i++, le >>= 8) {
		if (frame[i] != (uint8_t)le)
			return RN_RINGTEST_BAD;
	}
	if (len > 8 && memcmp(frame + 8, pattern + off + 8, len - 8))
		return RN_RINGTEST_BAD;
	return 0;
}

/**
 * kick() - add one to an eventfd
 * @fd:		eventfd
 *
 * Return: 0, or negative errno
 */
static int kick(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/**
 * wait_fd() - block until an eventfd is readable, then reset it
 * @fd:		eventfd
 * @timeout_ms:	how long to wait at most
 *
 * Return: 0, -ETIMEDOUT, or negative errno
 */
static int wait_fd(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint64_t v;
	int rc;

	do
		rc = poll(&pfd, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	if (!rc)
		return -ETIMEDOUT;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
		return -errno;
	return 0;
}

/**
 * ms_since() - milliseconds elapsed on the monotonic clock
 * @t0:		start
 *
 * Return: milliseconds since @t0
 */
static int64_t ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/**
 * pause_until_acked() - number a pause, make sure the other side sees it, wait
 * @pause:	our pause counter in the meeting area (we are its only writer)
 * @ack:	the other side's acknowledgement of it
 * @flag:	the other side's "I block" flag in the ring's control block
 * @ev:		the other side's eventfd
 * @done:	a flag that also ends the pause (the producer's last publish), or NULL
 * @timeout_ms:	give up after this long
 * @st:		our statistics (kicks, pauses)
 *
 * See "Pauses" at the top of this file. Must be called with everything of
 * ours in the ring published (producer) or released (consumer).
 *
 * Return: 0 when acknowledged or @done, -ETIMEDOUT, or negative errno
 */
static int pause_until_acked(uint64_t *pause, const uint64_t *ack, const uint32_t *flag,
			     int ev, const uint32_t *done, int timeout_ms,
			     struct rn_ringtest_stats *st)
{
	const struct timespec nap = { 0, PAUSE_POLL_NS };
	uint64_t k = __atomic_load_n(pause, __ATOMIC_RELAXED) + 1;
	struct timespec t0;
	int rc;

	__atomic_store_n(pause, k, __ATOMIC_RELEASE);
	/* Pairs with the fence in rn_ring_producer_sleep() / rn_ring_consumer_sleep() */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(flag, __ATOMIC_RELAXED)) {
		if ((rc = kick(ev)))
			return rc;
		st->kicks++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (__atomic_load_n(ack, __ATOMIC_ACQUIRE) == k) {
			st->pauses++;
			return 0;
		}
		if (done && __atomic_load_n(done, __ATOMIC_ACQUIRE))
			return 0;
		if (ms_since(&t0) > timeout_ms)
			return -ETIMEDOUT;
		nanosleep(&nap, NULL);
	}
}

/**
 * acknowledge() - tell a pausing side that we commit to block
 * @pause:	its pause counter
 * @ack:	our acknowledgement of it
 *
 * Called after the ring flag is set and the ring re-checked (see "Pauses").
 *
 * Return: nothing
 */
static void acknowledge(const uint64_t *pause, uint64_t *ack)
{
	__atomic_store_n(ack, __atomic_load_n(pause, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
}

/**
 * check_params() - validate run parameters
 * @p:		run parameters
 *
 * Return: 0, or -EINVAL (also for consumer and producer pauses together)
 */
static int check_params(const struct rn_ringtest_params *p)
{
	if (!p->batch || p->minlen > p->maxlen || p->maxlen > p->frame_max ||
	    p->maxlen >= LEN_LIMIT)
		return -EINVAL;
	/* Each side's pause waits for the other to block: both at once could wait forever */
	if (p->cpause_every && p->ppause_every)
		return -EINVAL;
	return 0;
}

/**
 * rn_ringtest_produce() - producer side of a run
 * @mem:	the run's shared memory (rn_ringtest_mem_size()), the ring initialised
 * @p:		run parameters
 * @st:		filled with what the producer saw
 *
 * Return: 0, or negative errno (-EPROTO from the ring, -ETIMEDOUT if the
 *	   consumer stopped consuming)
 */
int rn_ringtest_produce(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st)
{
	struct rn_ringtest_shared *sh = shared_of(mem, p);
	uint32_t len, pending = 0, pending_bytes = 0;
	struct rn_ring r;
	uint64_t seq = 0;
	int rc, err, pause;
	uint8_t *f;

	memset(st, 0, sizeof(*st));
	if ((rc = check_params(p)) || (rc = rn_ring_attach(&r, mem, p->size, p->frame_max, 0)))
		return rc;

	while (seq < p->nframes) {
		len = rn_ringtest_frame_len(p, seq);
		f = rn_ring_reserve(&r, len, &err);
		if (!f) {
			if (err)
				return err;
			/* Full: what we hold back must be visible before we wait */
			if (rn_ring_publish(&r)) {
				if ((rc = kick(p->ev_consumer)))
					return rc;
				st->kicks++;
			}
			pending = pending_bytes = 0;
			st->full++;
			rc = rn_ring_producer_sleep(&r, len);
			if (rc < 0)
				return rc;
			if (rc == 1) {
				acknowledge(&sh->cpause, &sh->cpause_ack);
				st->sleeps++;
				if ((rc = wait_fd(p->ev_producer, p->timeout_ms)))
					return rc;
			}
			rn_ring_producer_awake(&r);
			continue;
		}
		rn_ringtest_fill(f, len, seq);
		rn_ring_commit(&r, len);
		st->frames++;
		st->bytes += len;
		seq++;
		pending_bytes += len;
		pause = p->ppause_every && !(seq % p->ppause_every) && seq < p->nframes;
		if (++pending >= p->batch || pending_bytes >= BATCH_BYTES(p) ||
		    seq == p->nframes || pause) {
			pending = pending_bytes = 0;
			if (rn_ring_publish(&r)) {
				if ((rc = kick(p->ev_consumer)))
					return rc;
				st->kicks++;
			}
		}
		if (pause && (rc = pause_until_acked(&sh->ppause, &sh->ppause_ack,
						     &r.ctrl->need_wakeup, p->ev_consumer,
						     NULL, p->timeout_ms, st)))
			return rc;
	}
	__atomic_store_n(&sh->published_all, 1, __ATOMIC_RELEASE);
	return 0;
}

/**
 * consumer_release() - release consumed frames, kicking the producer if it waits
 * @r:		consumer view
 * @p:		run parameters
 * @st:		consumer statistics
 * @owed:	a kick the producer asked for and did not get yet
 * @now:	kick now if owed (we are about to sleep or done)
 *
 * A producer waiting for space is woken once half the ring is free rather
 * than at the first release: it then has room for a run of frames instead of
 * one, and both sides sleep and wake far less often.
 *
 * Return: 0, or negative errno
 */
static int consumer_release(struct rn_ring *r, const struct rn_ringtest_params *p,
			    struct rn_ringtest_stats *st, int *owed, int now)
{
	int rc;

	if (rn_ring_release(r))
		*owed = 1;
	if (!*owed || (!now && rn_ring_used(r) > p->size / 2))
		return 0;
	*owed = 0;
	if ((rc = kick(p->ev_producer)))
		return rc;
	st->kicks++;
	return 0;
}

/**
 * rn_ringtest_consume() - consumer side of a run
 * @mem:	the run's shared memory (rn_ringtest_mem_size()), the ring initialised
 * @p:		run parameters
 * @st:		filled with what the consumer saw; @st->bad_seq on RN_RINGTEST_BAD
 *
 * Return: 0, RN_RINGTEST_BAD on a wrong frame, or negative errno (-EPROTO
 *	   from the ring, -ETIMEDOUT if the producer stopped producing)
 */
int rn_ringtest_consume(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st)
{
	struct rn_ringtest_shared *sh = shared_of(mem, p);
	uint32_t len, since = 0, since_bytes = 0;
	int rc, owed = 0;
	uint8_t *scratch = NULL;
	const uint8_t *f;
	struct rn_ring r;
	uint64_t seq = 0;

	memset(st, 0, sizeof(*st));
	if ((rc = check_params(p)) || (rc = rn_ring_attach(&r, mem, p->size, p->frame_max, 0)))
		return rc;
	if (!p->verify && !(scratch = malloc(p->frame_max ? p->frame_max : 1)))
		return -ENOMEM;

	while (seq < p->nframes) {
		rc = rn_ring_peek(&r, &f, &len);
		if (rc < 0)
			goto out;
		if (!rc) {
			since = since_bytes = 0;
			if ((rc = consumer_release(&r, p, st, &owed, 1)))
				goto out;
			rc = rn_ring_consumer_sleep(&r);
			if (rc == 1) {
				acknowledge(&sh->ppause, &sh->ppause_ack);
				st->sleeps++;
				if ((rc = wait_fd(p->ev_consumer, p->timeout_ms)))
					goto out;
			}
			rn_ring_consumer_awake(&r);
			continue;
		}
		if (p->verify) {
			if (len != rn_ringtest_frame_len(p, seq) || rn_ringtest_check(f, len, seq)) {
				st->bad_seq = seq;
				rc = RN_RINGTEST_BAD;
				goto out;
			}
		} else {
			memcpy(scratch, f, len);
		}
		rn_ring_consume(&r);
		st->frames++;
		st->bytes += len;
		seq++;
		since_bytes += len;
		if (++since >= p->batch || since_bytes >= BATCH_BYTES(p)) {
			since = since_bytes = 0;
			if ((rc = consumer_release(&r, p, st, &owed, 0)))
				goto out;
		}
		if (p->cpause_every && !(seq % p->cpause_every) && seq < p->nframes) {
			since = since_bytes = 0;
			if ((rc = consumer_release(&r, p, st, &owed, 1)))
				goto out;
			if ((rc = pause_until_acked(&sh->cpause, &sh->cpause_ack,
						    &r.ctrl->need_space, p->ev_producer,
						    &sh->published_all, p->timeout_ms, st)))
				goto out;
		}
	}
	rc = consumer_release(&r, p, st, &owed, 1);
out:
	free(scratch);
	return rc;
}

/**
 * rn_ringtest_memcpy() - the baseline: copy frames as a ring would, on one core
 * @dst:	destination area, laid out like a ring's data area
 * @dst_size:	its size
 * @len:	bytes per copy, below LEN_LIMIT and at most @dst_size
 * @count:	number of copies
 *
 * Copies @len bytes of the pattern to successive 16-byte aligned positions of
 * @dst (record header room included), wrapping at the end like a ring.
 *
 * Return: a byte of the destination, so the copies cannot be optimised away
 */
uint64_t rn_ringtest_memcpy(void *dst, size_t dst_size, uint32_t len, uint64_t count)
{
	size_t step = ((size_t)len + 8 + 15) & ~(size_t)15, pos = 0;
	uint8_t *d = dst;
	uint64_t i;

	pthread_once(&pattern_once, pattern_init);
	if (len >= LEN_LIMIT || step > dst_size)
		return 0;
	for (i = 0; i < count; i++) {
		if (pos + step > dst_size)
			pos = 0;
		memcpy(d + pos + 8, pattern + (i % PATTERN_SKEW), len);
		__asm__ volatile("" : : "r"(d) : "memory");
		pos += step;
	}
	return d[8];
}
