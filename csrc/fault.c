/* fault.c - seeded fault injection on the ring path, for tests only
 *
 * See fault.h. The generator is xorshift64* (Vigna): fast, and good enough
 * to spread faults evenly; nothing here is security relevant.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "shm.h"
#include "worker.h"

#define RN_FAULT_PPM	1000000u

/**
 * rn_fault_init() - set up one injector
 * @ft:		injector
 * @p:		probabilities and seed
 * @stream:	distinguishes injectors with the same seed (worker, direction)
 *
 * Return: 0, -EINVAL if the probabilities add up to more than one, -ENOMEM
 */
int rn_fault_init(struct rn_fault *ft, const struct rn_fault_params *p, uint64_t stream)
{
	uint64_t sum = (uint64_t)p->drop_ppm + p->dup_ppm + p->reorder_ppm;

	memset(ft, 0, sizeof(*ft));
	if (sum > RN_FAULT_PPM)
		return -EINVAL;
	if (!sum)
		return 0;
	ft->held = malloc(RN_FRAME_MAX);
	if (!ft->held)
		return -ENOMEM;
	ft->on = 1;
	ft->drop = p->drop_ppm;
	ft->dup = ft->drop + p->dup_ppm;
	ft->hold = ft->dup + p->reorder_ppm;
	ft->state = (p->seed ^ (stream * 0x9e3779b97f4a7c15ull)) | 1;
	return 0;
}

/**
 * rn_fault_fini() - free an injector's buffer
 * @ft:		injector
 */
void rn_fault_fini(struct rn_fault *ft)
{
	free(ft->held);
	ft->held = NULL;
	ft->held_len = 0;
	ft->on = 0;
}

/**
 * rn_fault_decide() - draw the fate of the next frame
 * @ft:		injector, on
 *
 * Return: an enum rn_fault_verdict
 */
int rn_fault_decide(struct rn_fault *ft)
{
	uint32_t r;

	ft->state ^= ft->state >> 12;
	ft->state ^= ft->state << 25;
	ft->state ^= ft->state >> 27;
	r = (uint32_t)(((ft->state * 0x2545f4914f6cdd1dull) >> 32) % RN_FAULT_PPM);
	if (r < ft->drop)
		return RN_FAULT_DROP;
	if (r < ft->dup)
		return RN_FAULT_DUP;
	if (r < ft->hold)
		return RN_FAULT_HOLD;
	return RN_FAULT_PASS;
}
