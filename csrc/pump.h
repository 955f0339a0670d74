/* pump.h - the namespace pump: tun queues <-> worker rings, one thread per queue
 *
 * Runs in the namespace child. Thread i owns tun queue i and serves worker i:
 *
 *   tun queue i  --read()-->  ring to_worker of owner(frame)  -->  worker
 *   tun queue i  <--write()-- ring to_ns of worker i          <--  worker i
 *
 * See pump.c for the theory of operation.
 */
#ifndef RN_PUMP_H
#define RN_PUMP_H

#include <stdint.h>

#define RN_PUMP_MAX_QUEUES	64u

/**
 * struct rn_pump_params - what the pump needs besides file descriptors
 * @nqueues:	tun queues, one per worker, 1..RN_PUMP_MAX_QUEUES
 * @hash_key:	flow hash secret, the workers' too
 * @ring_size:	data area size of each ring
 * @coalesce_us: nap this long instead of sleeping during small-packet streams
 *		(moderate.h), 0 to always sleep at once
 * @busy_poll_us: spin at most this long before sleeping (busypoll.h), 0: never
 */
struct rn_pump_params {
	uint32_t nqueues;
	uint8_t hash_key[16];
	uint32_t ring_size;
	uint32_t coalesce_us;
	uint32_t busy_poll_us;
};

struct rn_pump;

int rn_pump_start(struct rn_pump **out, const struct rn_pump_params *p, const int *tun_fds,
		  void *const *shms, const int *ev_worker_fds, const int *ev_ns_fds,
		  uint64_t *counters);
int rn_pump_stop(struct rn_pump *p);
int rn_pump_error(const struct rn_pump *p);

#endif /* RN_PUMP_H */
