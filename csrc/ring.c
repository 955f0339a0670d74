/* ring.c - lock-free SPSC frame ring: reserve/commit/publish, peek/consume/release
 *
 * See ring.h for the layout, the memory ordering and the wakeup protocol.
 */
#include <errno.h>
#include <string.h>

#include "ring.h"

#define ALIGN_UP(x, a)	(((x) + ((a) - 1)) & ~((a) - 1))

static inline uint32_t load_acq(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline uint32_t load_rlx(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void store_rel(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void store_rlx(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline void fence_full(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline uint32_t rec_size(uint32_t len)
{
	return ALIGN_UP(RN_RING_REC_HDR + len, RN_RING_ALIGN);
}

/**
 * rn_ring_mem_size() - bytes of shared memory one ring needs
 * @size:	data area size
 *
 * Return: control block plus data area, rounded up to a 4 KiB page
 */
size_t rn_ring_mem_size(uint32_t size)
{
	return ALIGN_UP((size_t)RN_RING_CTRL_SIZE + size, (size_t)4096);
}

/**
 * rn_ring_attach() - set up a private view of a ring in shared memory
 * @r:		view to fill
 * @mem:	start of the ring's memory, 64-byte aligned, rn_ring_mem_size() bytes
 * @size:	data area size: a power of two, RN_RING_MIN_SIZE..RN_RING_MAX_SIZE
 * @frame_max:	largest frame; two records of it must fit in @size
 * @reset:	zero the control block (the creating side), else adopt it
 *
 * Return: 0, -EINVAL for bad parameters, -EPROTO if an adopted control block is
 *	   inconsistent
 */
int rn_ring_attach(struct rn_ring *r, void *mem, uint32_t size, uint32_t frame_max,
		   int reset)
{
	uint32_t head, tail;

	memset(r, 0, sizeof(*r));
	if (!mem || ((uintptr_t)mem & 63))
		return -EINVAL;
	if (size < RN_RING_MIN_SIZE || size > RN_RING_MAX_SIZE || (size & (size - 1)))
		return -EINVAL;
	if (!frame_max || frame_max > size / 4 || rec_size(frame_max) > size / 2)
		return -EINVAL;

	r->ctrl = mem;
	r->data = (uint8_t *)mem + RN_RING_CTRL_SIZE;
	r->size = size;
	r->frame_max = frame_max;
	r->resv = ~0u;

	if (reset) {
		memset(r->ctrl, 0, sizeof(*r->ctrl));
		fence_full();
		return 0;
	}

	head = load_acq(&r->ctrl->head);
	tail = load_acq(&r->ctrl->tail);
	if ((head | tail) & (RN_RING_ALIGN - 1) || head - tail > size)
		return -EPROTO;
	r->head = head;
	r->tail_cache = tail;
	r->tail = tail;
	r->head_cache = head;
	return 0;
}

/**
 * rn_ring_reserve() - producer: claim room for a frame of up to @maxlen bytes
 * @r:		producer view
 * @maxlen:	most bytes the frame will have, at most r->frame_max
 * @err:	set to 0 when the ring is full, -EINVAL for a bad @maxlen, -EPROTO
 *		when the consumer's tail is impossible
 *
 * Nothing is visible to the consumer until rn_ring_commit() and
 * rn_ring_publish(); a reservation that is not committed is simply dropped by
 * the next reserve.
 *
 * Return: where to write the frame, or NULL (see @err)
 */
uint8_t *rn_ring_reserve(struct rn_ring *r, uint32_t maxlen, int *err)
{
	uint32_t mask = r->size - 1, pos, to_end, need, pad, tail;
	uint8_t *rec;

	*err = 0;
	if (maxlen > r->frame_max) {
		*err = -EINVAL;
		return NULL;
	}

	need = rec_size(maxlen);
	pos = r->head & mask;
	to_end = r->size - pos;
	pad = to_end < need ? to_end : 0;

	if (r->size - (r->head - r->tail_cache) < pad + need) {
		/* Pairs with the consumer's release store in rn_ring_release() */
		tail = load_acq(&r->ctrl->tail);
		if (r->head - tail > r->size || (tail & (RN_RING_ALIGN - 1))) {
			*err = -EPROTO;
			return NULL;
		}
		r->tail_cache = tail;
		if (r->size - (r->head - tail) < pad + need)
			return NULL;
	}

	r->resv = pad;
	if (pad) {
		rec = r->data + pos;
		store_rlx((uint32_t *)rec, pad - RN_RING_REC_HDR);
		store_rlx((uint32_t *)rec + 1, RN_RING_F_PAD);
		return r->data + RN_RING_REC_HDR;
	}
	return r->data + pos + RN_RING_REC_HDR;
}

/**
 * rn_ring_commit() - producer: finish the reserved frame with its real length
 * @r:		producer view with a reservation outstanding
 * @len:	frame length, at most the reserved maxlen
 */
void rn_ring_commit(struct rn_ring *r, uint32_t len)
{
	uint32_t pos;
	uint8_t *rec;

	if (r->resv == ~0u)
		return;
	pos = r->resv ? 0 : (r->head & (r->size - 1));
	rec = r->data + pos;
	store_rlx((uint32_t *)rec, len);
	store_rlx((uint32_t *)rec + 1, 0);
	r->head += r->resv + rec_size(len);
	r->resv = ~0u;
}

/**
 * rn_ring_publish() - producer: make committed frames visible to the consumer
 * @r:		producer view
 *
 * Return: 1 if the consumer sleeps and must be kicked, else 0
 */
int rn_ring_publish(struct rn_ring *r)
{
	if (load_rlx(&r->ctrl->head) == r->head)
		return 0;
	/* Pairs with the consumer's acquire load of head in rn_ring_peek() */
	store_rel(&r->ctrl->head, r->head);
	/* Orders our head store before the need_wakeup load: pairs with the
	 * fence in rn_ring_consumer_sleep() (store flag, fence, load head) */
	fence_full();
	return load_rlx(&r->ctrl->need_wakeup) != 0;
}

/**
 * rn_ring_frames_free() - producer: how many frames surely fit, one after another
 * @r:		producer view, no reservation outstanding
 * @maxlen:	largest frame the caller will reserve, at most r->frame_max
 *
 * Counts from the consumer's tail as it is now, and leaves out one record for
 * the padding a reservation may need at the end of the data area, so that
 * this many reservations of up to @maxlen bytes in a row all succeed (for a
 * caller that must know before it reads data it cannot put back). An
 * impossible tail counts as a full ring; rn_ring_reserve() reports it.
 *
 * Return: number of frames
 */
uint32_t rn_ring_frames_free(const struct rn_ring *r, uint32_t maxlen)
{
	/* Pairs with the consumer's release store in rn_ring_release() */
	uint32_t tail = load_acq(&r->ctrl->tail), used = r->head - tail, n;

	if (maxlen > r->frame_max || used > r->size)
		return 0;
	n = (r->size - used) / rec_size(maxlen);
	return n ? n - 1 : 0;
}

/**
 * rn_ring_producer_sleep() - producer: announce that we wait for space
 * @r:		producer view
 * @maxlen:	size of the frame we want to write
 *
 * Return: 1 if the ring is still full and the caller may block on its doorbell,
 *	   0 if space appeared (the flag is cleared again), -EPROTO on a bad tail
 */
int rn_ring_producer_sleep(struct rn_ring *r, uint32_t maxlen)
{
	uint8_t *p;
	int err;

	store_rlx(&r->ctrl->need_space, 1);
	/* Pairs with the fence in rn_ring_release() */
	fence_full();
	p = rn_ring_reserve(r, maxlen, &err);
	if (err)
		return err;
	if (!p)
		return 1;
	r->resv = ~0u;
	store_rlx(&r->ctrl->need_space, 0);
	return 0;
}

/**
 * rn_ring_producer_awake() - producer: no longer waiting for space
 * @r:		producer view
 */
void rn_ring_producer_awake(struct rn_ring *r)
{
	store_rlx(&r->ctrl->need_space, 0);
}

/**
 * rn_ring_peek() - consumer: look at the next frame without consuming it
 * @r:		consumer view
 * @frame:	set to the frame's first byte (in shared memory)
 * @len:	set to the frame's length, at most r->frame_max
 *
 * The record header is validated against the ring geometry and the bytes the
 * producer published; PAD records are skipped.
 *
 * Return: 1 with a frame, 0 if the ring is empty, -EPROTO if the producer's
 *	   head or a record header is impossible
 */
int rn_ring_peek(struct rn_ring *r, const uint8_t **frame, uint32_t *len)
{
	uint32_t mask = r->size - 1, avail, pos, to_end, rlen, rflags, head, sz;
	const uint32_t *rec;

	for (;;) {
		avail = r->head_cache - r->tail;
		if (!avail) {
			/* Pairs with the release store in rn_ring_publish() */
			head = load_acq(&r->ctrl->head);
			/* Records are 16-byte aligned and tail is: so is head */
			if (head - r->tail > r->size || (head & (RN_RING_ALIGN - 1)))
				return -EPROTO;
			r->head_cache = head;
			avail = head - r->tail;
			if (!avail)
				return 0;
		}
		if (avail < RN_RING_REC_HDR)
			return -EPROTO;

		pos = r->tail & mask;
		to_end = r->size - pos;
		rec = (const uint32_t *)(r->data + pos);
		rlen = load_rlx(rec);
		rflags = load_rlx(rec + 1);

		if (rflags == RN_RING_F_PAD) {
			if (rlen != to_end - RN_RING_REC_HDR || avail < to_end)
				return -EPROTO;
			r->tail += to_end;
			continue;
		}
		if (rflags || rlen > r->frame_max)
			return -EPROTO;
		sz = rec_size(rlen);
		if (sz > to_end || sz > avail)
			return -EPROTO;

		*frame = (const uint8_t *)(rec + 2);
		*len = rlen;
		r->cur = sz;
		return 1;
	}
}

/**
 * rn_ring_consume() - consumer: drop the frame returned by the last peek
 * @r:		consumer view
 *
 * The bytes go back to the producer at the next rn_ring_release().
 */
void rn_ring_consume(struct rn_ring *r)
{
	r->tail += r->cur;
	r->cur = 0;
}

/**
 * rn_ring_release() - consumer: hand consumed bytes back to the producer
 * @r:		consumer view
 *
 * Return: 1 if the producer waits for space and must be kicked, else 0
 */
int rn_ring_release(struct rn_ring *r)
{
	if (load_rlx(&r->ctrl->tail) == r->tail)
		return 0;
	/* Pairs with the acquire load of tail in rn_ring_reserve() */
	store_rel(&r->ctrl->tail, r->tail);
	/* Pairs with the fence in rn_ring_producer_sleep() */
	fence_full();
	return load_rlx(&r->ctrl->need_space) != 0;
}

/**
 * rn_ring_consumer_sleep() - consumer: announce that we are about to block
 * @r:		consumer view, everything consumed already released
 *
 * Return: 1 if the ring is still empty and the caller may block on its
 *	   doorbell, 0 if frames arrived meanwhile (the flag is cleared again)
 */
int rn_ring_consumer_sleep(struct rn_ring *r)
{
	store_rlx(&r->ctrl->need_wakeup, 1);
	/* Pairs with the fence in rn_ring_publish() */
	fence_full();
	if (load_acq(&r->ctrl->head) == r->tail)
		return 1;
	store_rlx(&r->ctrl->need_wakeup, 0);
	return 0;
}

/**
 * rn_ring_consumer_awake() - consumer: busy again, no kicks needed
 * @r:		consumer view
 */
void rn_ring_consumer_awake(struct rn_ring *r)
{
	store_rlx(&r->ctrl->need_wakeup, 0);
}

/**
 * rn_ring_used() - bytes published and not yet released, as the control block says
 * @r:		either view
 *
 * Return: head - tail from the shared control block (may be stale)
 */
uint32_t rn_ring_used(const struct rn_ring *r)
{
	return load_acq(&r->ctrl->head) - load_acq(&r->ctrl->tail);
}
