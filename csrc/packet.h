/* packet.h - bounds-checked access to packet bytes, byte order, protocol numbers
 *
 * Every read from a received frame goes through rn_pkt_get(): it returns a
 * pointer to @n bytes at @off only if the whole range lies inside the view,
 * and NULL otherwise, so a caller that checks for NULL cannot read past the
 * end of what it was given. Views always cover a private copy of the frame
 * (see worker.c), never shared memory that the other side may change.
 *
 * The load helpers take a pointer returned by rn_pkt_get() and an offset
 * inside the range it validated. This header is the one place that defines
 * the byte-order helpers (network order: rn_be16(), rn_be32(), rn_put_be16(),
 * rn_put_be32(); the little-endian virtio-net header fields are converted by
 * rn_vnet_get() and rn_vnet_put(), ip.h) and the IP protocol numbers.
 */
#ifndef RN_PACKET_H
#define RN_PACKET_H

#include <stdint.h>
#include <stddef.h>

/* IP protocol numbers (IPv6: next header values) */
#define RN_IPPROTO_ICMP		1u
#define RN_IPPROTO_TCP		6u
#define RN_IPPROTO_UDP		17u
#define RN_IPPROTO_FRAGMENT	44u
#define RN_IPPROTO_ICMPV6	58u

/* IP headers: IPv4 without options, IPv6 without extension headers */
#define RN_IP4_HDR_LEN		20u
#define RN_IP6_HDR_LEN		40u
/* IPv4 flags and fragment offset, bytes 6-7 in host order */
#define RN_IPV4_DF		0x4000u
#define RN_IPV4_MF		0x2000u
#define RN_IPV4_OFFSET		0x1fffu

/**
 * struct rn_pkt - a view of packet bytes
 * @p:		first byte
 * @len:	bytes that may be read from @p
 */
struct rn_pkt {
	const uint8_t *p;
	uint32_t len;
};

/**
 * rn_pkt_get() - pointer to @n bytes at offset @off of a view, if they fit
 * @pkt:	view
 * @off:	offset of the first byte
 * @n:		number of bytes the caller will read
 *
 * Return: pointer to the range, or NULL if it does not fit in @pkt
 */
static inline const void *rn_pkt_get(const struct rn_pkt *pkt, uint32_t off, uint32_t n)
{
	if (off > pkt->len || n > pkt->len - off)
		return NULL;
	return pkt->p + off;
}

/**
 * rn_pkt_sub() - a view of @n bytes at offset @off of another view
 * @pkt:	view
 * @off:	offset of the first byte
 * @n:		length of the new view
 * @sub:	filled with the new view when the range fits
 *
 * Return: 0, or -1 if the range does not fit (then @sub is empty)
 */
static inline int rn_pkt_sub(const struct rn_pkt *pkt, uint32_t off, uint32_t n,
			     struct rn_pkt *sub)
{
	const uint8_t *p = rn_pkt_get(pkt, off, n);

	sub->p = p;
	sub->len = p ? n : 0;
	return p ? 0 : -1;
}

/**
 * rn_be16() - load a big-endian 16-bit value
 * @p:		first byte, inside a validated range
 *
 * Return: the value in host order
 */
static inline uint16_t rn_be16(const void *p)
{
	const uint8_t *b = p;

	return (uint16_t)(b[0] << 8 | b[1]);
}

/**
 * rn_be32() - load a big-endian 32-bit value
 * @p:		first byte, inside a validated range
 *
 * Return: the value in host order
 */
static inline uint32_t rn_be32(const void *p)
{
	const uint8_t *b = p;

	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/**
 * rn_put_be16() - store a 16-bit value big-endian
 * @p:		destination
 * @v:		value in host order
 */
static inline void rn_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;

	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

/**
 * rn_put_be32() - store a 32-bit value big-endian
 * @p:		destination
 * @v:		value in host order
 */
static inline void rn_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;

	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

#endif /* RN_PACKET_H */
