/* ringtest.h - test and benchmark loops for the ring, in C so Python is not measured
 *
 * For tests and perf/ only: nothing in ringnet's data path calls these.
 *
 * A producer and a consumer, normally in two processes sharing a memfd, move
 * @nframes frames through one ring using the NEED_WAKEUP protocol with two
 * eventfds, exactly as the pump and the workers do. Frame @seq has a length
 * drawn from [@minlen, @maxlen] by a hash of (@seed, @seq); its first bytes are
 * @seq (little-endian, truncated to the frame) and the rest is a fixed pattern
 * read at an offset that depends on @seq, so producing is a memcpy and checking
 * is a memcmp, and a stale or misplaced frame does not match.
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
 * @csleep_every: consumer: sleep after every this many frames (0: never)
 * @csleep_us:	consumer: how long to sleep, microseconds
 * @psleep_every: producer: sleep after every this many frames (0: never)
 * @psleep_us:	producer: how long to sleep, microseconds
 * @ev_consumer: eventfd the consumer blocks on, the producer kicks
 * @ev_producer: eventfd the producer blocks on, the consumer kicks
 * @timeout_ms:	give up with -ETIMEDOUT after blocking this long
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
	uint32_t csleep_every;
	uint32_t csleep_us;
	uint32_t psleep_every;
	uint32_t psleep_us;
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
 */
struct rn_ringtest_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t kicks;
	uint64_t sleeps;
	uint64_t full;
	uint64_t bad_seq;
};

uint32_t rn_ringtest_frame_len(const struct rn_ringtest_params *p, uint64_t seq);
void rn_ringtest_fill(uint8_t *frame, uint32_t len, uint64_t seq);
int rn_ringtest_check(const uint8_t *frame, uint32_t len, uint64_t seq);
int rn_ringtest_produce(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st);
int rn_ringtest_consume(void *mem, const struct rn_ringtest_params *p,
			struct rn_ringtest_stats *st);
uint64_t rn_ringtest_memcpy(void *dst, size_t dst_size, uint32_t len, uint64_t count);

#endif /* RN_RINGTEST_H */
