/* ip.c - the one builder of virtio-net and IP headers towards the namespace
 *
 * Theory of operation
 * -------------------
 * A frame into ring to_ns is a virtio-net header (12 bytes, little-endian
 * fields, struct virtio_net_hdr_v1) and an IP packet. rn_ip_build() writes
 * both from a struct rn_ip_out; the transport protocol then writes its own
 * header and payload after the IP header. The IP header is always minimal:
 * IPv4 without options, TTL 64, the caller's identification, DF and TOS,
 * header checksum computed; IPv6 with traffic class and flow label 0, hop
 * limit 64.
 *
 * The virtio-net header describes the offloads the namespace's kernel is to
 * do, as a NIC would for it:
 * - RN_IP_OUT_CSUM: NEEDS_CSUM, csum_start at the transport header,
 *   csum_offset the caller's, and the pseudo-header sum (folded, not
 *   complemented, over @l4len) stored in the transport checksum field, so
 *   that the kernel completes the checksum without us reading the payload;
 * - a GSO type: the frame is segmented into gso_size payload pieces, each
 *   behind a copy of the hdr_len = IP + transport header bytes.
 * Without either the header is all zero. RN_IP_OUT_BARE writes the IP header
 * only, for the packet an ICMP error quotes.
 *
 * The transport checksum field is rn_ip_build()'s with RN_IP_OUT_CSUM: the
 * caller writes the other transport header fields, before or after the call.
 */
#include <endian.h>
#include <string.h>

#include "checksum.h"
#include "ip.h"

/**
 * rn_vnet_get() - read a virtio-net header from a frame
 * @v:		filled, host order
 * @p:		the header's RN_VNET_HDR_LEN bytes (a private copy)
 */
void rn_vnet_get(struct rn_vnet_hdr *v, const void *p)
{
	memcpy(v, p, sizeof(*v));
	v->hdr_len = le16toh(v->hdr_len);
	v->gso_size = le16toh(v->gso_size);
	v->csum_start = le16toh(v->csum_start);
	v->csum_offset = le16toh(v->csum_offset);
	v->num_buffers = le16toh(v->num_buffers);
}

/**
 * rn_vnet_put() - write a virtio-net header into a frame
 * @p:		where its RN_VNET_HDR_LEN bytes go
 * @v:		the header, host order
 */
void rn_vnet_put(void *p, const struct rn_vnet_hdr *v)
{
	struct rn_vnet_hdr le = {
		.flags = v->flags,
		.gso_type = v->gso_type,
		.hdr_len = htole16(v->hdr_len),
		.gso_size = htole16(v->gso_size),
		.csum_start = htole16(v->csum_start),
		.csum_offset = htole16(v->csum_offset),
		.num_buffers = htole16(v->num_buffers),
	};

	memcpy(p, &le, sizeof(le));
}

/**
 * rn_ip_build() - write the virtio-net and IP headers of a frame to the namespace
 * @pkt:	where the IP packet starts; unless @o has RN_IP_OUT_BARE, the
 *		RN_VNET_HDR_LEN bytes before it are the frame's virtio-net
 *		header (as rn_worker_tx_reserve() returns it)
 * @o:		what to write (see struct rn_ip_out); with RN_IP_OUT_CSUM the
 *		transport checksum field at @pkt + IP header + @o->csum_offset
 *		is written too
 *
 * Return: the IP header length, where the transport header goes
 */
uint32_t rn_ip_build(uint8_t *pkt, const struct rn_ip_out *o)
{
	uint32_t l3 = rn_ip_hdr_len(o->family);
	struct rn_vnet_hdr v = { 0 };

	if (o->family == 6) {
		memset(pkt, 0, RN_IP6_HDR_LEN);
		pkt[0] = 0x60;
		rn_put_be16(pkt + 4, (uint16_t)o->l4len);
		pkt[6] = o->proto;
		pkt[7] = RN_IP_TTL;
		memcpy(pkt + 8, o->src, 16);
		memcpy(pkt + 24, o->dst, 16);
	} else {
		memset(pkt, 0, RN_IP4_HDR_LEN);
		pkt[0] = 0x45;
		pkt[1] = o->tos;
		rn_put_be16(pkt + 2, (uint16_t)(RN_IP4_HDR_LEN + o->l4len));
		rn_put_be16(pkt + 4, o->id);
		rn_put_be16(pkt + 6, (o->flags & RN_IP_OUT_DF) ? RN_IPV4_DF : 0);
		pkt[8] = RN_IP_TTL;
		pkt[9] = o->proto;
		memcpy(pkt + 12, o->src, 4);
		memcpy(pkt + 16, o->dst, 4);
		rn_put_be16(pkt + 10, rn_csum(pkt, RN_IP4_HDR_LEN, 0));
	}
	if (o->flags & RN_IP_OUT_BARE)
		return l3;

	if (o->flags & RN_IP_OUT_CSUM) {
		v.flags = RN_VNET_F_NEEDS_CSUM;
		v.csum_start = (uint16_t)l3;
		v.csum_offset = o->csum_offset;
		rn_put_be16(pkt + l3 + o->csum_offset,
			    rn_csum_fold(rn_ip_pseudo(o->family, o->src, o->dst, o->proto,
						      o->l4len)));
	}
	if (o->gso_type != RN_VNET_GSO_NONE) {
		v.gso_type = o->gso_type;
		v.gso_size = o->gso_size;
		v.hdr_len = (uint16_t)(l3 + o->l4hdr);
	}
	rn_vnet_put(pkt - RN_VNET_HDR_LEN, &v);
	return l3;
}

/**
 * rn_ip_pseudo() - partial sum of the pseudo-header of either family
 * @family:	4 or 6
 * @src:	source address
 * @dst:	destination address
 * @proto:	transport protocol
 * @l4len:	transport length
 *
 * Return: partial sum (checksum.h), to add to the transport bytes' sum
 */
uint32_t rn_ip_pseudo(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		      uint32_t l4len)
{
	if (family == 6)
		return rn_csum_pseudo6(src, dst, proto, l4len);
	return rn_csum_pseudo4(src, dst, proto, (uint16_t)l4len);
}
