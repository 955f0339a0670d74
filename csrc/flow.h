/* flow.h - flow keys and flow ownership: which worker owns a frame's flow
 *
 * A flow is owned by exactly one worker, owner = symhash(5-tuple) % nworkers.
 * The hash is SipHash-2-4 under a per-network random key over the tuple in a
 * canonical order (lower (address, port) end first), so both directions of a
 * flow hash alike and the namespace cannot aim flows at one worker without
 * knowing the key. ICMP echo uses its identifier as both ports; fragments,
 * IPv6 extension headers and other protocols hash on the address pair.
 * Frames too short or malformed to yield a key belong to worker 0, which drops
 * and counts them for the precise reason.
 */
#ifndef RN_FLOW_H
#define RN_FLOW_H

#include <stdint.h>

/**
 * struct rn_flow_key - a flow's 5-tuple as seen from the namespace
 * @family:	4 or 6
 * @proto:	IP protocol number (ICMPv6 is 58, ICMP 1)
 * @saddr:	source address, IPv4 in the first 4 bytes
 * @daddr:	destination address
 * @sport:	source port, or ICMP echo identifier, host order
 * @dport:	destination port, or ICMP echo identifier, host order
 */
struct rn_flow_key {
	uint8_t family;
	uint8_t proto;
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint16_t sport;
	uint16_t dport;
};

uint64_t rn_siphash(const uint8_t key[16], const uint8_t *data, uint32_t len);
int rn_flow_key_parse(const uint8_t *pkt, uint32_t len, struct rn_flow_key *k);
uint64_t rn_flow_hash(const uint8_t key[16], const struct rn_flow_key *k);
uint32_t rn_flow_owner(const uint8_t key[16], uint32_t nworkers, const uint8_t *frame,
		       uint32_t len);
uint32_t rn_flow_owner_key(const uint8_t key[16], uint32_t nworkers,
			   const struct rn_flow_key *k);
int rn_flow_pick_port(const uint8_t key[16], uint32_t nworkers, uint32_t want,
		      struct rn_flow_key *k, uint16_t lo, uint16_t hi, uint16_t start);

#endif /* RN_FLOW_H */
