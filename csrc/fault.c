/* fault.c - seeded fault injection on the ring path, for tests only
 *
 * See fault.h. The generator is xorshift64* (Vigna): fast, and good enough
 * to spread faults evenly; nothing here is security relevant. The wrappers
 * at the end put the worker's two injectors on its ring path: worker.c's
 * batch loop takes frames through rn_fault_input() when input faults are
 * on, and tap.c's rn_worker_tx_commit() commits through rn_fault_commit()
 * when output faults are on; with faults off neither is called.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "shm.h"
#include "tap.h"
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

/**
 * rn_fault_tx_held() - deliver the frame the output fault injector held back
 * @w:		worker
 *
 * Called after every committed frame and before to_ns is published, so a
 * held frame is late by one frame at most (lost if to_ns is full).
 */
void rn_fault_tx_held(struct rn_worker *w)
{
	if (!w->fout.held_len)
		return;
	if (!rn_tap_copy(w, w->fout.held, w->fout.held_len))
		rn_ctr_add(w->ctr, RN_WCTR_fault_drop_out, 1);
	w->fout.held_len = 0;
}

/**
 * rn_fault_tx_decide() - apply the output fault injector to the reserved frame
 * @w:		worker
 * @len:	frame length, vnet header included
 *
 * Return: true if the frame was dealt with here (dropped, held, or committed
 *	   together with its duplicate), false if the caller commits it
 */
static int rn_fault_tx_decide(struct rn_worker *w, uint32_t len)
{
	switch (rn_fault_decide(&w->fout)) {
	case RN_FAULT_DROP:
		rn_ctr_add(w->ctr, RN_WCTR_fault_drop_out, 1);
		return 1;
	case RN_FAULT_DUP:
		rn_tap_put(w, w->tx_resv, len);
		/* The committed frame stays where it is until published */
		rn_tap_copy(w, w->tx_resv, len);
		rn_ctr_add(w->ctr, RN_WCTR_fault_dup_out, 1);
		return 1;
	case RN_FAULT_HOLD:
		if (w->fout.held_len)
			return 0;
		memcpy(w->fout.held, w->tx_resv, len);
		w->fout.held_len = len;
		rn_ctr_add(w->ctr, RN_WCTR_fault_hold_out, 1);
		return 1;
	}
	return 0;
}

/**
 * rn_fault_input() - process one frame through the input fault injector
 * @w:		worker
 * @shm:	frame in shared memory
 * @len:	frame length
 *
 * A dropped frame counts as taken (frames_in) with the outcome fault_drop_in;
 * a duplicated one is processed twice; a held one is copied and processed
 * after the next frame (or when the ring runs dry).
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_fault_input(struct rn_worker *w, const uint8_t *shm, uint32_t len)
{
	int rc;

	switch (rn_fault_decide(&w->fin)) {
	case RN_FAULT_DROP:
		rn_ctr_add(w->ctr, RN_WCTR_frames_in, 1);
		rn_ctr_add(w->ctr, RN_WCTR_bytes_in, len);
		rn_ctr_add(w->ctr, RN_WCTR_fault_drop_in, 1);
		return 0;
	case RN_FAULT_DUP:
		rn_ctr_add(w->ctr, RN_WCTR_fault_dup_in, 1);
		rc = rn_tap_input(w, shm, len);
		if (rc < 0)
			return rc;
		break;
	case RN_FAULT_HOLD:
		if (w->fin.held_len)
			break;
		memcpy(w->fin.held, shm, len);
		w->fin.held_len = len;
		rn_ctr_add(w->ctr, RN_WCTR_fault_hold_in, 1);
		return 0;
	}
	rc = rn_tap_input(w, shm, len);
	if (rc >= 0 && w->fin.held_len) {
		rc = rn_tap_input(w, w->fin.held, w->fin.held_len);
		w->fin.held_len = 0;
	}
	return rc;
}

/**
 * rn_fault_input_held() - process the input frame held back, the ring ran dry
 * @w:		worker
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_fault_input_held(struct rn_worker *w)
{
	int rc;

	if (!w->fin.held_len)
		return 0;
	rc = rn_tap_input(w, w->fin.held, w->fin.held_len);
	w->fin.held_len = 0;
	return rc;
}

/**
 * rn_fault_commit() - commit the reserved frame through the output fault injector
 * @w:		worker, output injector on
 * @len:	frame length, vnet header included
 *
 * The frame is lost, doubled, held back until the next one, or committed;
 * a frame held earlier follows a committed one.
 */
void rn_fault_commit(struct rn_worker *w, uint32_t len)
{
	if (rn_fault_tx_decide(w, len))
		return;
	rn_tap_put(w, w->tx_resv, len);
	rn_fault_tx_held(w);
}
