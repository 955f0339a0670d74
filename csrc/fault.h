/* fault.h - seeded fault injection on the ring path, for tests only
 *
 * A worker has two injectors, one for frames taken from to_worker and one for
 * frames put into to_ns (worker.c applies them). Each frame independently is
 * dropped, duplicated, or held back and delivered after the next frame, with
 * the probabilities of struct rn_fault_params (parts per million), from a
 * xorshift generator seeded by the parameters and the worker index, so that a
 * failing run repeats. All zero: the injector is off and costs one branch.
 * rn_fault_input(), rn_fault_input_held(), rn_fault_commit() and
 * rn_fault_tx_held() apply the injectors to a worker's frames (fault.c).
 */
#ifndef RN_FAULT_H
#define RN_FAULT_H

#include <stdint.h>

struct rn_fault_params;		/* worker.h, which includes this header */
struct rn_worker;

/**
 * enum rn_fault_verdict - what to do with one frame
 * @RN_FAULT_PASS:	deliver it
 * @RN_FAULT_DROP:	lose it
 * @RN_FAULT_DUP:	deliver it twice
 * @RN_FAULT_HOLD:	deliver it after the next frame
 */
enum rn_fault_verdict {
	RN_FAULT_PASS = 0,
	RN_FAULT_DROP,
	RN_FAULT_DUP,
	RN_FAULT_HOLD,
};

/**
 * struct rn_fault - one direction's injector
 * @on:		any probability is non-zero
 * @drop:	drop threshold, ppm
 * @dup:	drop + duplicate threshold
 * @hold:	drop + duplicate + reorder threshold
 * @state:	generator state, never zero
 * @held:	the frame held back (RN_FRAME_MAX bytes, allocated when @on)
 * @held_len:	its length, 0 if none is held
 */
struct rn_fault {
	int on;
	uint32_t drop;
	uint32_t dup;
	uint32_t hold;
	uint64_t state;
	uint8_t *held;
	uint32_t held_len;
};

int rn_fault_init(struct rn_fault *ft, const struct rn_fault_params *p, uint64_t stream);
void rn_fault_fini(struct rn_fault *ft);
int rn_fault_decide(struct rn_fault *ft);

int rn_fault_input(struct rn_worker *w, const uint8_t *shm, uint32_t len);
int rn_fault_input_held(struct rn_worker *w);
void rn_fault_commit(struct rn_worker *w, uint32_t len);
void rn_fault_tx_held(struct rn_worker *w);

#endif /* RN_FAULT_H */
