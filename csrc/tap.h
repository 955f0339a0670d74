/* tap.h - the worker's end of the namespace rings: for worker.c, fault.c and netem.c
 *
 * The hooks protocol cores use (rn_worker_pull(), rn_worker_tx_reserve(),
 * rn_worker_tx_commit(), ...) are declared in worker.h; these are the
 * entry points of the event loop, the fault injector and the emulation.
 * See tap.c.
 */
#ifndef RN_TAP_H
#define RN_TAP_H

#include <stdint.h>

#include "worker.h"

int rn_tap_input(struct rn_worker *w, const uint8_t *shm, uint32_t len);
void rn_tap_put(struct rn_worker *w, const uint8_t *frame, uint32_t len);
int rn_tap_copy(struct rn_worker *w, const uint8_t *frame, uint32_t len);

#endif /* RN_TAP_H */
