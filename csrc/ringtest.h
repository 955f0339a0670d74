/* ringtest.h - test and benchmark loops for the ring, in C so Python is not measured
 *
 * For tests and perf/ only: nothing in ringnet's data path calls these, and the
 * shipped extension does not contain them (ringnet/_build.py puts them in the
 * test extension, ringnet._ringnet_test).
 *
 * A producer and a consumer, normally in two processes sharing a memfd, move
 * @nframes frames through one ring using the NEED_WAKEUP protocol with two
 * eventfds, exactly as the pump and the workers do. Frame @seq has a length
 * drawn from [@minlen, @maxlen] by a hash of (@seed, @seq); its first bytes are
 * @seq (little-endian, truncated to the frame) and the rest is a fixed pattern
 * read at an offset that depends on @seq, so producing is a memcpy and checking
 * is a memcmp, and a stale or misplaced frame does not match.
 *
 * Pauses make the ring's edge cases happen on every run, whatever the
 * scheduler does: a consumer pause (@cpause_every) releases everything
 * consumed and then waits until the producer has found the ring full and
 * committed to block on its eventfd (or has published its last frame); a
 * producer pause (@ppause_every) publishes everything and waits until the
 * consumer has found the ring empty and committed to block. The two sides meet
 * through struct rn_ringtest_shared, which lies right after the ring's memory:
 * a run needs rn_ringtest_mem_size() bytes, zeroed (a fresh memfd or mapping),
 * not rn_ring_mem_size().
 */
#ifndef RN_RINGTEST_H
#define RN_RINGTEST_H

#include <stddef.h>
#include <stdint.h>

/* rn_ringtest_consume() found a frame whose length or content is wrong */
#define RN_RINGTEST_BAD		1

/**
 * struct rn_ringtest_params - what both sides of a test run agree on
 * @size:	ring data area size (the ring is already initialised)
 * @frame_max:	largest frame
 * @nframes:	frames to move
 * @minlen:	shortest frame
 * @maxlen:	longest frame, at most @frame_max
 * @seed:	seed of the length sequence
 * @batch:	frames per publish (producer) or release (consumer), at least 1
 * @verify:	consumer: 1 to check every frame, 0 to copy it out unchecked
 * @cpause_every: consumer: pause after every this many frames (0: never)
 * @ppause_every: producer: pause after every this many frames (0: never;
 *		not together with @cpause_every)
 * @ev_consumer: eventfd the consumer blocks on, the producer kicks
 * @ev_producer: eventfd the producer blocks on, the consumer kicks
 * @timeout_ms:	give up with -ETIMEDOUT after blocking (or pausing) this long
 */
struct rn_ringtest_params {
	uint32_t size;
	uint32_t frame_max;
	uint64_t nframes;
	uint32_t minlen;
	uint32_t maxlen;
	uint64_t seed;
	uint32_t batch;
	int32_t verify;
	uint32_t cpause_every;
	uint32_t ppause_every;
	int32_t ev_consumer;
	int32_t ev_producer;
	int32_t timeout_ms;
};

/**
 * struct rn_ringtest_stats - what one side saw
 * @frames:	frames moved
 * @bytes:	frame bytes moved
 * @kicks:	eventfd writes to the other side
 * @sleeps:	times this side blocked on its eventfd
 * @full:	producer: times the ring was full
 * @bad_seq:	consumer: first frame found wrong (valid with RN_RINGTEST_BAD)
 * @pauses:	pauses that ended because the other side committed to block
 *		(a consumer pause can also end because the producer is done)
 */
struct rn_ringtest_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t kicks;
	uint64_t sleeps;
	uint64_t full;
	uint64_t bad_seq;
	uint64_t pauses;
};

/**
 * struct rn_ringtest_shared - how the two sides of a run meet for a pause
 * @cpause:	consumer: number of its current pause (0: none yet)
 * @cpause_ack:	producer: @cpause as it read it when it last committed to block
 * @ppause:	producer: number of its current pause
 * @ppause_ack:	consumer: @ppause as it read it when it last committed to block
 * @published_all: producer: 1 once its last frame is published
 */
struct rn_ringtest_shared {
	_Alignas(64) uint64_t cpause;
	uint64_t cpause_ack;
	uint64_t ppause;
	uint64_t ppause_ack;
	uint32_t published_all;
};

size_t rn_ringtest_mem_size(uint32_t size);
uint32_t rn_ringtest_frame_len(const struct rn_ringtest_params *p, uint64_t seq);
void rn_ringtest_fill(uint8_t *frame, uint32_t len, uint64_t seq);
int rn_ringtest_check(const uint8_t *frame, uint32_t len, uint64_t seq);
int rn_ringtest_produce(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st);
int rn_ringtest_consume(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st);
uint64_t rn_ringtest_memcpy(void *dst, size_t dst_size, uint32_t len, uint64_t count);

#endif /* RN_RINGTEST_H */
