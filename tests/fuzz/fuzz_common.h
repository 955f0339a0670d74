/* fuzz_common.h - the worker parameters both libFuzzer harnesses start from
 *
 * For tests/fuzz/fuzz_worker.c and fuzz_ring.c only: one worker with the
 * default slirp4netns addresses (10.0.2.100/.2/.3, fd00::100/::2/::3), host
 * loopback reachable through the gateway, and loopback_only set, so that
 * whatever the frames say, nothing leaves loopback.
 */
#ifndef RN_FUZZ_COMMON_H
#define RN_FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>

#include "worker.h"

/**
 * rn_fuzz_params() - fill the parameters of the fuzzed worker
 * @p:		parameters to fill (zeroed by the caller: static storage)
 * @ring:	ring size in bytes
 * @max_flows:	flow cap
 */
static inline void rn_fuzz_params(struct rn_worker_params *p, uint32_t ring, uint32_t max_flows)
{
	static const uint8_t g4[4] = { 10, 0, 2, 100 }, gw4[4] = { 10, 0, 2, 2 },
			     d4[4] = { 10, 0, 2, 3 };
	uint8_t g6[16] = { 0xfd }, gw6[16] = { 0xfd }, d6[16] = { 0xfd };

	g6[14] = 1;
	gw6[15] = 2;
	d6[15] = 3;
	p->index = 0;
	p->nworkers = 1;
	p->ring_size = ring;
	p->mtu = 1500;
	memcpy(p->guest4, g4, 4);
	memcpy(p->gw4, gw4, 4);
	memcpy(p->dns4, d4, 4);
	memcpy(p->guest6, g6, 16);
	memcpy(p->gw6, gw6, 16);
	memcpy(p->dns6, d6, 16);
	p->prefix4 = 24;
	p->prefix6 = 64;
	p->allow_host_loopback = 1;
	p->loopback_only = 1;
	p->max_flows = max_flows;
	p->tcp_idle_timeout_ms = 1000;
	p->tcp_fin_timeout_ms = 1000;
	p->udp_timeout_ms = 1000;
}

#endif /* RN_FUZZ_COMMON_H */
