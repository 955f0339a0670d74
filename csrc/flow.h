/* flow.h - flow keys and flow ownership: which worker owns a frame's flow
 *
 * A flow is owned by exactly one worker. The hashes are SipHash-2-4 under a
 * per-network random key, so the namespace cannot aim flows at one worker
 * without knowing the key.
 *
 * - UDP: owner = hash(family, namespace source address, source port) %
 *   nworkers. Every flow of one namespace source is in one worker, whatever
 *   its destination, so the source has one host port (udp.c:
 *   endpoint-independent mapping across workers). Keys are as seen from the
 *   namespace (saddr, sport: its side); every frame the owner is computed
 *   for comes from the namespace, and a worker that opens a UDP flow towards
 *   the namespace (a published port, forward.c) must own that endpoint.
 * - TCP, ICMP echo, anything else: owner = symhash(5-tuple) % nworkers, over
 *   the tuple in a canonical order (lower (address, port) end first), so both
 *   directions of a flow hash alike (forward.c relies on it to hand accepted
 *   connections over). ICMP echo uses its identifier as both ports.
 *
 * Keys without ports hash on the address pair (symmetric): IPv4 fragments
 * (whose later pieces carry no ports), IPv6 extension headers, truncated
 * transport headers, other protocols. A fragmented UDP datagram is thus
 * reassembled and sent by the worker of its address pair, which need not be
 * its source's: it may leave from another host port than the source's
 * unfragmented datagrams (as it could when the 5-tuple decided).
 * Frames too short or malformed to yield a key belong to worker 0, which drops
 * and counts them for the precise reason.
 */
#ifndef RN_FLOW_H
#define RN_FLOW_H

#include <stdint.h>

/**
 * struct rn_flow_key - a flow's 5-tuple as seen from the namespace (source: its side)
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
