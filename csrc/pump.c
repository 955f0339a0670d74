/* pump.c - the namespace pump: tun queues <-> worker rings, one thread per queue
 *
 * Theory of operation
 * -------------------
 * Thread i owns tun queue i, the consumer side of worker i's ring to_ns, and
 * the eventfd ev_ns[i] it sleeps on. The producer side of every ring to_worker
 * is shared by all threads (a frame read from queue i may belong to worker j),
 * so each has a mutex (struct pump_ring): the ring stays single-producer as the
 * worker sees it.
 *
 * tun -> worker: the thread locks its own ring i, reserves RN_FRAME_MAX bytes
 * and read()s the frame straight into them. If the frame's flow owner is i it
 * commits; else it copies the frame into ring j (trying j's lock while holding
 * i's, so no lock order can deadlock) and leaves the reservation in ring i
 * uncommitted. If j's lock is busy or ring j is full, the frame goes to a
 * per-thread buffer first and the thread delivers it later. Frames committed
 * to ring i are published once per batch (or every ring_size/8 bytes); a
 * publish that finds the worker asleep kicks ev_worker[i].
 *
 * Full rings: a thread that cannot reserve stops reading tun until it can
 * (frames wait in the tun queue, whose overflow the namespace's stack sees as
 * congestion; the pump itself never drops a frame it has read). It records
 * itself in the ring's waiter mask and announces need_space in the ring. The
 * worker kicks ev_ns[j] when it releases space with need_space set, which
 * wakes thread j only; so thread j looks at its ring's waiter mask on every
 * loop and every wakeup, and when space for a largest frame is there it wakes
 * the waiters by writing to their own ev_ns. A thread whose reservation
 * succeeds wakes the waiters too. Invariant (outside the lock): need_space is
 * set whenever the mask is not empty, so no release goes unnoticed; it is
 * cleared only by the thread that empties the mask, which wakes everyone in
 * it.
 *
 * worker -> tun: the thread peeks frames from ring to_ns i, write()s each to
 * tun queue i and releases the batch; a write error drops the frame (counted).
 * A worker waiting for space is kicked once half the ring is free (or the
 * ring is empty), not at the first release.
 *
 * Idle: during a stream of small frames (at most RN_MOD_SMALL bytes, either
 * way) the thread naps instead (moderate.h) and looks again. During
 * request/response traffic it spins a while (busypoll.h): yields the CPU and
 * runs its loop again, without announcing sleep. Else it announces
 * sleep on to_ns (NEED_WAKEUP), then poll()s ev_ns[i], the stop eventfd and,
 * unless waiting for ring space, the tun queue. A busy thread makes no syscall
 * for wakeups. rn_pump_stop() sets a flag that every loop looks at before it
 * writes the stop eventfd, so a thread that never sleeps stops too.
 *
 * Counters are kept per thread and added to the shared array (relaxed atomic
 * adds, several threads write it) once per loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "busypoll.h"
#include "clock.h"
#include "counters.h"
#include "flow.h"
#include "moderate.h"
#include "pump.h"
#include "ring.h"
#include "shm.h"
#include "slice.h"

#define PUMP_BATCH	64u	/* frames per direction per loop */

/**
 * struct pump_ring - producer side of one worker's to_worker ring
 * @lock:	serialises the producer view among the pump threads
 * @r:		producer view, under @lock
 * @waiters:	bit i: thread i waits for space; written under @lock, read
 *		without it (atomic)
 */
struct pump_ring {
	_Alignas(64) pthread_mutex_t lock;
	struct rn_ring r;
	uint64_t waiters;
};

/**
 * struct pump_queue - one thread's state
 * @pump:	the pump
 * @idx:	queue and worker index
 * @tun:	tun queue fd, non-blocking
 * @ev_worker:	eventfd kicking worker @idx
 * @ev_ns:	eventfd this thread sleeps on
 * @to_ns:	consumer view of worker @idx's ring to_ns
 * @thread:	the thread
 * @started:	@thread exists
 * @waiting:	rx stopped: a ring was full (the thread is in its waiter mask)
 * @unpub:	bytes committed to ring @idx and not yet published by us
 * @owed:	worker @idx waits for space in to_ns and was not kicked yet
 * @held:	a frame for another worker waits in @buf
 * @held_len:	its length
 * @held_owner:	its worker
 * @buf:	RN_FRAME_MAX bytes for a held frame
 * @mod:	wake-up moderation (moderate.h)
 * @bp:		busy polling (busypoll.h)
 * @moved:	bytes read from and written to the tun queue (for @bp)
 * @ctr:	counts not yet added to the shared array
 */
struct pump_queue {
	_Alignas(64) struct rn_pump *pump;
	uint32_t idx;
	int tun;
	int ev_worker;
	int ev_ns;
	struct rn_ring to_ns;
	pthread_t thread;
	int started;
	int waiting;
	uint32_t unpub;
	int owed;
	int held;
	uint32_t held_len;
	uint32_t held_owner;
	uint8_t *buf;
	struct rn_mod mod;
	struct rn_bpoll bp;
	uint64_t moved;
	uint64_t ctr[RN_PCTR_COUNT];
};

/**
 * struct rn_pump - the pump
 * @nqueues:	number of queues and threads
 * @key:	flow hash secret
 * @ring_size:	data area of each ring
 * @stop_fd:	eventfd written once by rn_pump_stop(), never read
 * @stopping:	set by rn_pump_stop() before it writes @stop_fd (atomic): a thread
 *		that never sleeps (a busy queue, naps) looks at it every loop
 * @error:	first error a thread hit, 0 if none (atomic)
 * @counters:	shared counter array, RN_CTR_SLOTS entries
 * @rings:	@nqueues producer sides of the to_worker rings
 * @qs:		@nqueues thread states
 */
struct rn_pump {
	uint32_t nqueues;
	uint8_t key[16];
	uint32_t ring_size;
	int stop_fd;
	int stopping;
	int error;
	uint64_t *counters;
	struct pump_ring *rings;
	struct pump_queue *qs;
};

/**
 * pump_fail() - record the first error of any thread
 * @pump:	the pump
 * @err:	negative errno
 *
 * Return: @err
 */
static int pump_fail(struct rn_pump *pump, int err)
{
	int zero = 0;

	__atomic_compare_exchange_n(&pump->error, &zero, err, 0, __ATOMIC_SEQ_CST,
				    __ATOMIC_SEQ_CST);
	return err;
}

/**
 * efd_write() - add one to an eventfd
 * @fd:		eventfd
 *
 * Return: 0, or negative errno
 */
static int efd_write(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) < 0) {
		if (errno == EINTR)
			continue;
		/* EAGAIN: the counter is near overflow, the reader is awake anyway */
		return errno == EAGAIN ? 0 : -errno;
	}
	return 0;
}

/**
 * pump_small_pkts() - small packets in a frame, for wake-up moderation
 * @f:		frame, virtio-net header first (from either side: only counted)
 * @len:	its length
 *
 * Return: 1 for a frame of at most RN_MOD_SMALL bytes, the datagrams of a
 *	   USO frame of small datagrams, else 0 (see moderate.h)
 */
static uint32_t pump_small_pkts(const uint8_t *f, uint32_t len)
{
	struct rn_vnet_hdr h;

	if (len <= RN_MOD_SMALL)
		return 1;
	if (len < sizeof(h))
		return 0;
	memcpy(&h, f, sizeof(h));
	if ((h.gso_type & ~RN_VNET_GSO_ECN) != RN_VNET_GSO_UDP_L4 || !h.gso_size ||
	    h.gso_size > RN_MOD_SMALL)
		return 0;
	return len / h.gso_size;
}

/**
 * kick_worker() - wake worker @j
 * @q:		calling thread
 * @j:		worker
 *
 * Return: 0, or negative errno
 */
static int kick_worker(struct pump_queue *q, uint32_t j)
{
	q->ctr[RN_PCTR_kicks]++;
	return efd_write(q->pump->qs[j].ev_worker);
}

/**
 * wake_threads() - wake the pump threads in @mask through their own doorbells
 * @pump:	the pump
 * @mask:	bit per thread
 *
 * Return: 0, or negative errno
 */
static int wake_threads(struct rn_pump *pump, uint64_t mask)
{
	int rc, ret = 0;
	uint32_t k;

	for (k = 0; mask; k++, mask >>= 1) {
		if ((mask & 1) && (rc = efd_write(pump->qs[k].ev_ns)))
			ret = rc;
	}
	return ret;
}

/**
 * ring_reserve() - reserve in a shared ring, or join its waiters if it is full
 * @pr:		ring, lock held
 * @self:	calling thread
 * @maxlen:	largest frame that will be written
 * @err:	0 when the ring is full (the caller waits now), else negative errno
 * @kick:	set to 1 if the worker must be kicked (we published)
 * @wake:	threads to wake once the lock is dropped are added here
 *
 * Return: where to write the frame, or NULL (see @err)
 */
static uint8_t *ring_reserve(struct pump_ring *pr, uint32_t self, uint32_t maxlen,
			     int *err, int *kick, uint64_t *wake)
{
	uint64_t bit = 1ULL << self, w;
	uint8_t *f;
	int rc;

	for (;;) {
		f = rn_ring_reserve(&pr->r, maxlen, err);
		if (*err)
			return NULL;
		if (f) {
			/* There is space: whoever waits may find some too */
			w = __atomic_exchange_n(&pr->waiters, 0, __ATOMIC_RELAXED);
			if (w) {
				*wake |= w & ~bit;
				rn_ring_producer_awake(&pr->r);
			}
			return f;
		}
		/* Full: the worker must see what is committed before anyone waits */
		if (rn_ring_publish(&pr->r))
			*kick = 1;
		/* Join the mask before need_space is set: whoever sees the flag
		 * and takes the lock finds us (see pump_check_waiters()) */
		__atomic_fetch_or(&pr->waiters, bit, __ATOMIC_SEQ_CST);
		rc = rn_ring_producer_sleep(&pr->r, maxlen);
		if (rc < 0) {
			*err = rc;
			return NULL;
		}
		if (rc == 1)
			return NULL;
		/* Space appeared and need_space is clear: the others must look */
		*wake |= __atomic_exchange_n(&pr->waiters, 0, __ATOMIC_RELAXED) & ~bit;
	}
}

/**
 * pump_check_waiters() - wake threads waiting for space in our own ring
 * @q:		calling thread, owner of the ring's doorbell
 * @force:	look even if the mask seems empty (after a doorbell)
 *
 * Return: 0, or negative errno
 */
static int pump_check_waiters(struct pump_queue *q, int force)
{
	struct pump_ring *pr = &q->pump->rings[q->idx];
	uint64_t wake = 0;
	int rc = 0;

	if (!force && !__atomic_load_n(&pr->waiters, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&pr->lock);
	if (__atomic_load_n(&pr->waiters, __ATOMIC_RELAXED)) {
		/* Sets need_space again if still full; clears it if not */
		rc = rn_ring_producer_sleep(&pr->r, RN_FRAME_MAX);
		if (!rc)
			wake = __atomic_exchange_n(&pr->waiters, 0, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&pr->lock);
	if (rc < 0)
		return rc;
	/* We are awake already: our own rx retries on this loop */
	return wake_threads(q->pump, wake & ~(1ULL << q->idx));
}

/**
 * pump_wait_state() - note whether rx waits for ring space
 * @q:		calling thread
 * @full:	1 if the last reservation found its ring full
 *
 * Return: nothing; ring_full counts each start of a wait
 */
static void pump_wait_state(struct pump_queue *q, int full)
{
	if (full && !q->waiting)
		q->ctr[RN_PCTR_ring_full]++;
	q->waiting = full;
}

/**
 * pump_deliver_held() - move the held frame into its owner's ring
 * @q:		calling thread, with q->held set
 *
 * Return: 1 if delivered, 0 if the ring is still full, negative errno
 */
static int pump_deliver_held(struct pump_queue *q)
{
	struct pump_ring *pr = &q->pump->rings[q->held_owner];
	int err, kick = 0, rc = 0;
	uint64_t wake = 0;
	uint8_t *f;

	pthread_mutex_lock(&pr->lock);
	f = ring_reserve(pr, q->idx, q->held_len, &err, &kick, &wake);
	if (f) {
		memcpy(f, q->buf, q->held_len);
		rn_ring_commit(&pr->r, q->held_len);
		if (rn_ring_publish(&pr->r))
			kick = 1;
	}
	pthread_mutex_unlock(&pr->lock);

	if (kick)
		rc = kick_worker(q, q->held_owner);
	if (!rc)
		rc = wake_threads(q->pump, wake);
	if (err)
		return err;
	if (rc)
		return rc;
	pump_wait_state(q, !f);
	if (!f)
		return 0;
	q->held = 0;
	q->ctr[RN_PCTR_handoffs]++;
	return 1;
}

/**
 * pump_handoff() - pass a frame just read into our ring on to worker @j
 * @q:		calling thread, holding its own ring's lock
 * @j:		owner of the frame, not q->idx
 * @frame:	the frame, in our ring's uncommitted reservation
 * @len:	its length
 * @kick:	set to 1 if worker @j must be kicked
 *
 * Copies straight into ring @j if its lock is free and it has room (trylock:
 * we hold another ring's lock); else keeps the frame in q->buf for
 * pump_deliver_held().
 *
 * Return: nothing; the frame is either in ring @j or held
 */
static void pump_handoff(struct pump_queue *q, uint32_t j, const uint8_t *frame,
			 uint32_t len, int *kick)
{
	struct pump_ring *pr = &q->pump->rings[j];
	uint8_t *f = NULL;
	int err;

	if (!pthread_mutex_trylock(&pr->lock)) {
		f = rn_ring_reserve(&pr->r, len, &err);
		if (f) {
			memcpy(f, frame, len);
			rn_ring_commit(&pr->r, len);
			*kick = rn_ring_publish(&pr->r);
		}
		pthread_mutex_unlock(&pr->lock);
	}
	if (f) {
		q->ctr[RN_PCTR_handoffs]++;
		return;
	}
	memcpy(q->buf, frame, len);
	q->held = 1;
	q->held_len = len;
	q->held_owner = j;
}

/**
 * pump_rx() - move a batch of frames from the tun queue into worker rings
 * @q:		calling thread
 *
 * Return: frames read (0 if none or while a ring is full), or negative errno
 */
static int pump_rx(struct pump_queue *q)
{
	struct rn_pump *pump = q->pump;
	struct pump_ring *own = &pump->rings[q->idx];
	uint32_t n = 0, j, pub_bytes = pump->ring_size / 8;
	int err = 0, rc, kick = 0, kick_j;
	uint64_t wake = 0;
	ssize_t len;
	uint8_t *f;

	if (q->held && (rc = pump_deliver_held(q)) <= 0)
		return rc;

	while (n < PUMP_BATCH) {
		pthread_mutex_lock(&own->lock);
		f = ring_reserve(own, q->idx, RN_FRAME_MAX, &rc, &kick, &wake);
		if (!f) {
			pthread_mutex_unlock(&own->lock);
			if (rc)
				err = rc;
			else
				pump_wait_state(q, 1);
			break;
		}
		pump_wait_state(q, 0);
		len = read(q->tun, f, RN_FRAME_MAX);
		if (len <= 0) {
			pthread_mutex_unlock(&own->lock);
			if (len < 0 && errno == EINTR)
				continue;
			if (len < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			/* 0: the queue is gone (a real tun never reads empty) */
			err = len < 0 ? -errno : -EPIPE;
			break;
		}
		n++;
		q->ctr[RN_PCTR_tun_frames_in]++;
		q->ctr[RN_PCTR_tun_bytes_in] += (uint64_t)len;
		q->moved += (uint64_t)len;
		rn_mod_up(&q->mod, pump_small_pkts(f, (uint32_t)len));
		j = rn_flow_owner(pump->key, pump->nqueues, f, (uint32_t)len);
		if (j == q->idx) {
			rn_ring_commit(&own->r, (uint32_t)len);
			q->unpub += (uint32_t)len;
			if (q->unpub >= pub_bytes) {
				q->unpub = 0;
				kick |= rn_ring_publish(&own->r);
			}
			pthread_mutex_unlock(&own->lock);
			continue;
		}
		/* Not ours: the reservation in our ring is left uncommitted */
		kick_j = 0;
		pump_handoff(q, j, f, (uint32_t)len, &kick_j);
		pthread_mutex_unlock(&own->lock);
		if (kick_j && (err = kick_worker(q, j)))
			break;
		if (q->held && (rc = pump_deliver_held(q)) <= 0) {
			err = rc;
			break;
		}
	}

	if (q->unpub) {
		q->unpub = 0;
		pthread_mutex_lock(&own->lock);
		kick |= rn_ring_publish(&own->r);
		pthread_mutex_unlock(&own->lock);
	}
	if (kick && (rc = kick_worker(q, q->idx)) && !err)
		err = rc;
	if ((rc = wake_threads(pump, wake)) && !err)
		err = rc;
	return err ? err : (int)n;
}

/**
 * pump_tx() - write a batch of frames from ring to_ns to the tun queue
 * @q:		calling thread
 *
 * A worker waiting for space in to_ns is kicked once half the ring is free,
 * or when the ring is empty, rather than at the first release: it then has
 * room for a run of frames, and both sides sleep and wake less often.
 *
 * Return: frames taken from the ring, or negative errno
 */
static int pump_tx(struct pump_queue *q)
{
	int rc = 0, empty = 0;
	const uint8_t *f;
	uint32_t n = 0, len;
	ssize_t w;

	while (n < PUMP_BATCH) {
		rc = rn_ring_peek(&q->to_ns, &f, &len);
		if (rc < 0)
			return rc;
		if (!rc) {
			empty = 1;
			break;
		}
		do
			w = write(q->tun, f, len);
		while (w < 0 && errno == EINTR);
		if (w < 0) {
			q->ctr[RN_PCTR_tun_write_errors]++;
		} else {
			q->ctr[RN_PCTR_tun_frames_out]++;
			q->ctr[RN_PCTR_tun_bytes_out] += len;
			q->moved += len;
			rn_mod_down(&q->mod, pump_small_pkts(f, len));
		}
		rn_ring_consume(&q->to_ns);
		n++;
	}
	if (rn_ring_release(&q->to_ns))
		q->owed = 1;
	if (q->owed && (empty || rn_ring_used(&q->to_ns) <= q->pump->ring_size / 2)) {
		q->owed = 0;
		if ((rc = kick_worker(q, q->idx)))
			return rc;
	}
	return (int)n;
}

/**
 * pump_idle() - sleep until the tun queue, a doorbell or the stop eventfd fires
 * @q:		calling thread, with everything consumed released
 *
 * Or nap, during a stream of small frames (moderate.h), or yield the CPU
 * once while busy polling (busypoll.h), and return at once.
 *
 * Return: 0 to go on, 1 to stop, or negative errno
 */
static int pump_idle(struct pump_queue *q)
{
	struct pollfd pfd[3] = {
		{ .fd = q->pump->stop_fd, .events = POLLIN },
		{ .fd = q->ev_ns, .events = POLLIN },
		{ .fd = q->tun, .events = POLLIN },
	};
	uint64_t v;
	int rc;

	/* A stream of small frames: nap before announcing sleep (moderate.h) */
	if (rn_mod_idle(&q->mod)) {
		q->ctr[RN_PCTR_naps]++;
		return 0;
	}
	/* Request/response traffic: look again for a while (busypoll.h) */
	if (q->bp.max_ns && rn_bpoll_idle(&q->bp, rn_mono_ns(), q->moved)) {
		q->ctr[RN_PCTR_polls]++;
		sched_yield();
		return 0;
	}
	if (!rn_ring_consumer_sleep(&q->to_ns))
		return 0;	/* frames arrived meanwhile */
	/* While a ring is full, tun stays unread: no POLLIN on it */
	do
		rc = poll(pfd, q->waiting ? 2 : 3, -1);
	while (rc < 0 && errno == EINTR);
	rn_ring_consumer_awake(&q->to_ns);
	if (rc < 0)
		return -errno;
	q->ctr[RN_PCTR_wakeups]++;
	if (pfd[0].revents)
		return 1;
	if (pfd[1].revents & POLLIN) {
		if (read(q->ev_ns, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		return pump_check_waiters(q, 1);
	}
	if (pfd[1].revents)
		return -EIO;
	return 0;
}

/**
 * pump_flush() - add this thread's counts to the shared counters
 * @q:		calling thread
 *
 * Return: nothing
 */
static void pump_flush(struct pump_queue *q)
{
	unsigned int i;

	for (i = 0; i < RN_PCTR_COUNT; i++) {
		if (q->ctr[i]) {
			__atomic_fetch_add(&q->pump->counters[i], q->ctr[i], __ATOMIC_RELAXED);
			q->ctr[i] = 0;
		}
	}
}

/**
 * pump_thread() - one queue's loop
 * @arg:	struct pump_queue
 *
 * Return: NULL; an error is recorded in the pump
 */
static void *pump_thread(void *arg)
{
	struct pump_queue *q = arg;
	char name[16];
	int rc, rx, tx;

	snprintf(name, sizeof(name), "rn-pump-%u", q->idx);
	pthread_setname_np(pthread_self(), name);
	rn_slice_set(RN_SLICE_US);	/* best effort: wake-ups preempt sooner */

	for (;;) {
		if (__atomic_load_n(&q->pump->stopping, __ATOMIC_ACQUIRE))
			break;
		if ((rc = pump_check_waiters(q, 0)))
			break;
		if ((rx = pump_rx(q)) < 0) {
			rc = rx;
			break;
		}
		if ((tx = pump_tx(q)) < 0) {
			rc = tx;
			break;
		}
		pump_flush(q);
		if (rx || tx) {
			if (rn_bpoll_active(&q->bp) && rn_bpoll_work(&q->bp, rn_mono_ns()))
				q->ctr[RN_PCTR_poll_hits]++;
			continue;
		}
		rc = pump_idle(q);
		if (rc) {
			rc = rc > 0 ? 0 : rc;
			break;
		}
	}
	pump_flush(q);
	if (rc)
		pump_fail(q->pump, rc);
	return NULL;
}

/**
 * pump_free() - stop and join the threads, free everything
 * @pump:	the pump, possibly half set up
 * @nlocks:	mutexes initialised
 *
 * Return: the first error a thread recorded, or 0
 */
static int pump_free(struct rn_pump *pump, uint32_t nlocks)
{
	uint32_t i;
	int err;

	__atomic_store_n(&pump->stopping, 1, __ATOMIC_RELEASE);
	if (pump->stop_fd >= 0)
		efd_write(pump->stop_fd);
	for (i = 0; pump->qs && i < pump->nqueues; i++) {
		if (pump->qs[i].started)
			pthread_join(pump->qs[i].thread, NULL);
		free(pump->qs[i].buf);
	}
	for (i = 0; i < nlocks; i++)
		pthread_mutex_destroy(&pump->rings[i].lock);
	if (pump->stop_fd >= 0)
		close(pump->stop_fd);
	err = __atomic_load_n(&pump->error, __ATOMIC_SEQ_CST);
	free(pump->rings);
	free(pump->qs);
	free(pump);
	return err;
}

/**
 * pump_setup_queue() - attach queue @i's rings and check its fds
 * @pump:	the pump
 * @i:		queue index
 * @tun:	tun queue fd
 * @shm:	worker @i's shared mapping
 * @ev_worker:	eventfd kicking worker @i
 * @ev_ns:	eventfd thread @i sleeps on
 *
 * Return: 0, -EINVAL (bad ring parameters, blocking tun fd), -EBADF, or
 *	   -EPROTO (inconsistent ring)
 */
static int pump_setup_queue(struct rn_pump *pump, uint32_t i, int tun, void *shm,
			    int ev_worker, int ev_ns)
{
	struct pump_queue *q = &pump->qs[i];
	uint32_t size = pump->ring_size;
	int fl, rc;

	if (!shm)
		return -EINVAL;
	if ((fl = fcntl(tun, F_GETFL)) < 0 || fcntl(ev_worker, F_GETFD) < 0 ||
	    fcntl(ev_ns, F_GETFD) < 0)
		return -EBADF;
	/* A blocking read() would stall the thread with a ring lock held */
	if (!(fl & O_NONBLOCK))
		return -EINVAL;
	q->pump = pump;
	q->idx = i;
	q->tun = tun;
	q->ev_worker = ev_worker;
	q->ev_ns = ev_ns;
	rc = rn_ring_attach(&pump->rings[i].r, rn_shm_to_worker(shm, size), size,
			    RN_FRAME_MAX, 0);
	if (!rc)
		rc = rn_ring_attach(&q->to_ns, rn_shm_to_ns(shm, size), size, RN_FRAME_MAX, 0);
	if (rc)
		return rc;
	if (!(q->buf = malloc(RN_FRAME_MAX)))
		return -ENOMEM;
	return 0;
}

/**
 * rn_pump_start() - attach the rings and start one thread per tun queue
 * @out:	set to the running pump
 * @p:		parameters
 * @tun_fds:	@p->nqueues non-blocking tun queue fds (vnet header of 12 bytes)
 * @shms:	worker mappings, rn_shm_size() bytes, rings initialised already
 * @ev_worker_fds: eventfds that wake each worker
 * @ev_ns_fds:	eventfds each pump thread sleeps on
 * @counters:	RN_CTR_SLOTS pump counters, added to (RN_PCTR_*)
 *
 * The caller keeps owning every fd and mapping and must keep them until
 * rn_pump_stop() returns.
 *
 * Return: 0, or negative errno (-EINVAL for bad parameters, -EPROTO for an
 *	   inconsistent ring); nothing is left behind on failure
 */
int rn_pump_start(struct rn_pump **out, const struct rn_pump_params *p, const int *tun_fds,
		  void *const *shms, const int *ev_worker_fds, const int *ev_ns_fds,
		  uint64_t *counters)
{
	uint32_t i, n, nlocks = 0;
	sigset_t all, old;
	struct rn_pump *pump;
	int rc = 0;

	if (!out || !p || !tun_fds || !shms || !ev_worker_fds || !ev_ns_fds || !counters)
		return -EINVAL;
	*out = NULL;
	n = p->nqueues;
	if (!n || n > RN_PUMP_MAX_QUEUES)
		return -EINVAL;

	if (!(pump = calloc(1, sizeof(*pump))))
		return -ENOMEM;
	pump->nqueues = n;
	memcpy(pump->key, p->hash_key, sizeof(pump->key));
	pump->ring_size = p->ring_size;
	pump->counters = counters;
	pump->stop_fd = -1;
	pump->rings = aligned_alloc(64, n * sizeof(*pump->rings));
	pump->qs = aligned_alloc(64, n * sizeof(*pump->qs));
	if (!pump->rings || !pump->qs) {
		rc = -ENOMEM;
		goto fail;
	}
	memset(pump->rings, 0, n * sizeof(*pump->rings));
	memset(pump->qs, 0, n * sizeof(*pump->qs));

	for (i = 0; i < n; i++) {
		if ((rc = -pthread_mutex_init(&pump->rings[i].lock, NULL)))
			goto fail;
		nlocks++;
		rc = pump_setup_queue(pump, i, tun_fds[i], shms[i], ev_worker_fds[i],
				      ev_ns_fds[i]);
		if (rc)
			goto fail;
		rn_mod_init(&pump->qs[i].mod, p->coalesce_us);
		rn_bpoll_init(&pump->qs[i].bp, p->busy_poll_us);
	}
	if ((pump->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		rc = -errno;
		goto fail;
	}

	/* Signals are for the caller's threads: ours start with all blocked */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < n && !rc; i++) {
		rc = -pthread_create(&pump->qs[i].thread, NULL, pump_thread, &pump->qs[i]);
		pump->qs[i].started = !rc;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		goto fail;
	*out = pump;
	return 0;
fail:
	pump_free(pump, nlocks);
	return rc;
}

/**
 * rn_pump_stop() - stop and join the threads, free the pump
 * @p:		pump from rn_pump_start(), or NULL
 *
 * Closes no fd of the caller's and unmaps nothing.
 *
 * Return: the first error a thread recorded, or 0
 */
int rn_pump_stop(struct rn_pump *p)
{
	if (!p)
		return 0;
	return pump_free(p, p->nqueues);
}

/**
 * rn_pump_error() - the first error a pump thread hit, while it runs
 * @p:		pump
 *
 * A thread that hits an error records it and exits; the others go on.
 *
 * Return: 0, or a negative errno (-EPROTO: a ring was inconsistent)
 */
int rn_pump_error(const struct rn_pump *p)
{
	return __atomic_load_n(&p->error, __ATOMIC_SEQ_CST);
}
