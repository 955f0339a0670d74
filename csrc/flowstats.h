/* flowstats.h - per-flow rows for statistics (ringnet stats, ringnet top) */
#ifndef RN_FLOWSTATS_H
#define RN_FLOWSTATS_H

#include <stdint.h>

struct rn_worker;

/**
 * struct rn_flow_row - one flow as statistics show it
 * @type:	enum rn_flow_type
 * @state:	protocol state (rn_flow_state_name() names it)
 * @family:	4 or 6
 * @proto:	IP protocol number
 * @guest:	namespace-side address, IPv4 in the first 4 bytes
 * @remote:	remote address as the namespace names it
 * @guest_port:	namespace-side port (ICMP: echo identifier)
 * @remote_port: remote port
 * @bytes_up:	payload bytes namespace -> host
 * @bytes_down:	payload bytes host -> namespace
 * @age_ms:	milliseconds since the flow was created
 * @idle_ms:	milliseconds since its last activity
 */
struct rn_flow_row {
	uint8_t type;
	uint8_t state;
	uint8_t family;
	uint8_t proto;
	uint8_t guest[16];
	uint8_t remote[16];
	uint16_t guest_port;
	uint16_t remote_port;
	uint64_t bytes_up;
	uint64_t bytes_down;
	int64_t age_ms;
	int64_t idle_ms;
};

uint32_t rn_worker_flow_rows(const struct rn_worker *w, struct rn_flow_row *rows, uint32_t max);
uint32_t rn_worker_flow_count(const struct rn_worker *w);
const char *rn_flow_state_name(uint8_t type, uint8_t state);

#endif /* RN_FLOWSTATS_H */
