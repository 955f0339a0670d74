/* shm.h - layout of the memory one worker shares with the namespace child
 *
 * One memfd per worker, created and sealed (no shrink, no grow, no more seals)
 * by the namespace child and passed to the worker in the HELLO control message:
 *
 *   offset 0                      struct rn_shm_hdr (one 4 KiB page)
 *   RN_SHM_HDR_SIZE               ring "to_worker": namespace -> worker (pump produces)
 *   + rn_ring_mem_size(size)      ring "to_ns": worker -> namespace (worker produces)
 *
 * The layout is a pure function of the ring size, which the worker learns from
 * the orchestrator (trusted), not from the header: the worker checks the memfd's
 * size and seals and the header's magic and version, and nothing else in the
 * header is used for addressing.
 *
 * Every frame in a ring starts with a 12-byte virtio-net header (struct
 * virtio_net_hdr_v1, as the tun device reads and writes it with
 * TUNSETVNETHDRSZ 12) followed by an IPv4 or IPv6 packet.
 */
#ifndef RN_SHM_H
#define RN_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h"

#define RN_SHM_MAGIC		0x524e4731u	/* "RNG1" */
#define RN_SHM_VERSION		1u
#define RN_SHM_HDR_SIZE		4096u

#define RN_VNET_HDR_LEN		12u
/* Largest IP packet a frame can carry: IPv6 header plus a 64 KiB payload */
#define RN_PKT_MAX		(40u + 65535u)
#define RN_FRAME_MAX		(RN_VNET_HDR_LEN + RN_PKT_MAX)

/* virtio-net header, little-endian fields (struct virtio_net_hdr_v1) */
#define RN_VNET_F_NEEDS_CSUM	1u
#define RN_VNET_F_DATA_VALID	2u
#define RN_VNET_GSO_NONE	0u
#define RN_VNET_GSO_TCPV4	1u
#define RN_VNET_GSO_UDP		3u
#define RN_VNET_GSO_TCPV6	4u
#define RN_VNET_GSO_UDP_L4	5u
#define RN_VNET_GSO_ECN		0x80u

/**
 * struct rn_vnet_hdr - virtio-net header as it sits in a frame
 * @flags:		RN_VNET_F_*
 * @gso_type:		RN_VNET_GSO_*, possibly with RN_VNET_GSO_ECN
 * @hdr_len:		bytes of headers (Ethernet-less: IP + L4) for GSO
 * @gso_size:		segment payload size for GSO
 * @csum_start:		where checksumming starts, from the IP header
 * @csum_offset:	where the checksum goes, from @csum_start
 * @num_buffers:	unused here, zero
 */
struct rn_vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

_Static_assert(sizeof(struct rn_vnet_hdr) == RN_VNET_HDR_LEN, "vnet header size");

/**
 * struct rn_shm_hdr - first page of a worker's shared mapping
 * @magic:	RN_SHM_MAGIC
 * @version:	RN_SHM_VERSION
 * @ring_size:	data area size of each ring (informational, see above)
 * @frame_max:	largest frame (informational)
 * @worker:	index of the worker this mapping belongs to (informational)
 */
struct rn_shm_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t ring_size;
	uint32_t frame_max;
	uint32_t worker;
};

/**
 * rn_shm_size() - total bytes of a worker mapping for rings of @ring_size
 * @ring_size:	data area size of each ring
 */
static inline size_t rn_shm_size(uint32_t ring_size)
{
	return RN_SHM_HDR_SIZE + 2 * rn_ring_mem_size(ring_size);
}

/**
 * rn_shm_to_worker() - memory of the namespace -> worker ring in a mapping
 * @base:	start of the mapping
 * @ring_size:	data area size of each ring
 */
static inline void *rn_shm_to_worker(void *base, uint32_t ring_size)
{
	(void)ring_size;
	return (uint8_t *)base + RN_SHM_HDR_SIZE;
}

/**
 * rn_shm_to_ns() - memory of the worker -> namespace ring in a mapping
 * @base:	start of the mapping
 * @ring_size:	data area size of each ring
 */
static inline void *rn_shm_to_ns(void *base, uint32_t ring_size)
{
	return (uint8_t *)base + RN_SHM_HDR_SIZE + rn_ring_mem_size(ring_size);
}

#endif /* RN_SHM_H */
