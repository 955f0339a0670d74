/* ip.h - the one builder of virtio-net and IP headers towards the namespace
 *
 * Every frame the worker writes into ring to_ns starts with a virtio-net
 * header and an IP header, and both come from rn_ip_build(): the caller says
 * what it wants in a struct rn_ip_out (addresses, protocol, lengths, IPv4
 * identification and DF, checksum offload, segmentation offload) and writes
 * the transport header and payload itself. rn_vnet_get() and rn_vnet_put()
 * convert a virtio-net header between its little-endian form in a frame and
 * struct rn_vnet_hdr (shm.h) in host order. See ip.c.
 */
#ifndef RN_IP_H
#define RN_IP_H

#include <stdint.h>

#include "packet.h"
#include "shm.h"

#define RN_IP_TTL		64u

/* struct rn_ip_out.flags */
#define RN_IP_OUT_DF		1u	/* IPv4: set Don't Fragment */
#define RN_IP_OUT_CSUM		2u	/* NEEDS_CSUM: the namespace sums the transport part */
#define RN_IP_OUT_BARE		4u	/* no virtio-net header (an IP header quoted in ICMP) */

/**
 * struct rn_ip_out - what rn_ip_build() writes in front of a transport header
 * @family:	4 or 6
 * @proto:	transport protocol (IPv6: next header), RN_IPPROTO_*
 * @flags:	RN_IP_OUT_*
 * @tos:	IPv4 type of service (IPv6 traffic class and flow label stay 0)
 * @id:		IPv4 identification (0 for the atomic datagrams of RFC 6864)
 * @src:	source address, 4 or 16 bytes
 * @dst:	destination address
 * @l4len:	transport header plus payload; the caller keeps the packet within
 *		65535 bytes (IPv4) or its payload within 65535 bytes (IPv6)
 * @csum_offset: with RN_IP_OUT_CSUM, where the transport checksum field is,
 *		from the transport header (TCP 16, UDP 6)
 * @gso_type:	RN_VNET_GSO_* for a frame the namespace's kernel segments, or
 *		RN_VNET_GSO_NONE (0)
 * @gso_size:	with @gso_type: payload bytes per segment
 * @l4hdr:	with @gso_type: transport header length (hdr_len counts it)
 */
struct rn_ip_out {
	uint8_t family;
	uint8_t proto;
	uint8_t flags;
	uint8_t tos;
	uint16_t id;
	const uint8_t *src;
	const uint8_t *dst;
	uint32_t l4len;
	uint16_t csum_offset;
	uint8_t gso_type;
	uint16_t gso_size;
	uint16_t l4hdr;
};

/**
 * rn_ip_hdr_len() - length of the IP header rn_ip_build() writes
 * @family:	4 or 6
 *
 * Return: 20 or 40
 */
static inline uint32_t rn_ip_hdr_len(int family)
{
	return family == 6 ? RN_IP6_HDR_LEN : RN_IP4_HDR_LEN;
}

/**
 * rn_ip6_ext() - whether an IPv6 next header value is an extension header
 * @nh:		next header value
 *
 * Return: true for the extension headers of the IANA registry, except the
 *	   fragment header (RN_IPPROTO_FRAGMENT), which callers look at first
 */
static inline int rn_ip6_ext(uint8_t nh)
{
	switch (nh) {
	case 0:		/* Hop-by-Hop */
	case 43:	/* Routing */
	case 51:	/* Authentication */
	case 60:	/* Destination Options */
	case 135:	/* Mobility */
	case 139:	/* HIP */
	case 140:	/* Shim6 */
	case 253:	/* experiments */
	case 254:
		return 1;
	}
	return 0;
}

uint32_t rn_ip_build(uint8_t *pkt, const struct rn_ip_out *o);
uint32_t rn_ip_pseudo(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		      uint32_t l4len);
void rn_vnet_get(struct rn_vnet_hdr *v, const void *p);
void rn_vnet_put(void *p, const struct rn_vnet_hdr *v);

#endif /* RN_IP_H */
