/* ring.h - lock-free single-producer single-consumer frame ring in shared memory
 *
 * Theory of operation
 * -------------------
 * A ring is a control block (two 64-byte cache lines) followed by a data area of
 * `size` bytes, a power of two. The producer owns the first cache line (head,
 * need_space), the consumer the second (tail, need_wakeup). head and tail are
 * free-running 32-bit byte counters, masked on access; head - tail is the number
 * of bytes in use and never exceeds size.
 *
 * The data area holds records, each 16-byte aligned:
 *     struct rn_rec { u32 len; u32 flags; }  followed by len bytes of frame
 * A record never straddles the end of the data area: when the contiguous room at
 * the end is too small the producer writes a PAD record covering the rest of the
 * area and continues at offset 0. The consumer skips PAD records.
 *
 * Ordering: the producer writes records, then publishes head with a release
 * store; the consumer reads head with an acquire load before reading records
 * (pairs with the release). The consumer releases records by storing tail with a
 * release store; the producer reads tail with an acquire load before reusing the
 * bytes (pairs with it). Publication and release happen once per batch.
 *
 * Wakeups: a consumer about to sleep sets need_wakeup, issues a full fence and
 * looks at head again; a producer publishes, issues a full fence and reads
 * need_wakeup, and kicks the consumer's doorbell (an eventfd) only when it is
 * set. The same pattern with need_space lets a producer sleep on a full ring.
 * So a busy ring costs no syscall per frame.
 *
 * Trust: one side of every shared ring is the namespace child, which the
 * namespace's root can tamper with. Every index and length read from shared
 * memory is therefore validated before use (rn_ring_peek(), rn_ring_reserve());
 * a violation returns -EPROTO and the caller abandons the ring. Frame bytes
 * stay in shared memory and can change under the reader: parsers copy headers
 * out before validating them (see worker.c).
 */
#ifndef RN_RING_H
#define RN_RING_H

#include <stdint.h>
#include <stddef.h>

#define RN_RING_ALIGN		16u
#define RN_RING_REC_HDR		8u
#define RN_RING_F_PAD		1u
#define RN_RING_MIN_SIZE	(64u * 1024u)
#define RN_RING_MAX_SIZE	(256u * 1024u * 1024u)
#define RN_RING_CTRL_SIZE	128u

/**
 * struct rn_ring_ctrl - shared control block, one cache line per side
 * @head:		bytes produced (free-running), written by the producer only
 * @need_space:		producer waits for space: consumer kicks after release
 * @tail:		bytes consumed (free-running), written by the consumer only
 * @need_wakeup:	consumer sleeps: producer kicks after publishing
 */
struct rn_ring_ctrl {
	_Alignas(64) uint32_t head;
	uint32_t need_space;
	_Alignas(64) uint32_t tail;
	uint32_t need_wakeup;
};

_Static_assert(sizeof(struct rn_ring_ctrl) == RN_RING_CTRL_SIZE, "ring ctrl layout");

/**
 * struct rn_ring - one side's private view of a shared ring
 * @ctrl:	shared control block
 * @data:	shared data area, @size bytes
 * @size:	data area size, power of two
 * @frame_max:	largest frame a record may carry
 * @head:	producer: local head, ahead of ctrl->head until published
 * @tail_cache:	producer: last tail read from ctrl
 * @resv:	producer: bytes of padding the current reservation needs (or ~0u)
 * @tail:	consumer: local tail, ahead of ctrl->tail until released
 * @head_cache:	consumer: last head read from ctrl
 * @cur:	consumer: bytes the record returned by peek occupies (0 if none)
 */
struct rn_ring {
	struct rn_ring_ctrl *ctrl;
	uint8_t *data;
	uint32_t size;
	uint32_t frame_max;
	uint32_t head;
	uint32_t tail_cache;
	uint32_t resv;
	uint32_t tail;
	uint32_t head_cache;
	uint32_t cur;
};

size_t rn_ring_mem_size(uint32_t size);
int rn_ring_attach(struct rn_ring *r, void *mem, uint32_t size, uint32_t frame_max,
		   int reset);

uint8_t *rn_ring_reserve(struct rn_ring *r, uint32_t maxlen, int *err);
void rn_ring_commit(struct rn_ring *r, uint32_t len);
int rn_ring_publish(struct rn_ring *r);
uint32_t rn_ring_frames_free(const struct rn_ring *r, uint32_t maxlen);
int rn_ring_producer_sleep(struct rn_ring *r, uint32_t maxlen);
void rn_ring_producer_awake(struct rn_ring *r);

int rn_ring_peek(struct rn_ring *r, const uint8_t **frame, uint32_t *len);
void rn_ring_consume(struct rn_ring *r);
int rn_ring_release(struct rn_ring *r);
int rn_ring_consumer_sleep(struct rn_ring *r);
void rn_ring_consumer_awake(struct rn_ring *r);

uint32_t rn_ring_used(const struct rn_ring *r);

#endif /* RN_RING_H */
