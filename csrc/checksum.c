/* checksum.c - internet checksum (RFC 1071), pseudo-headers, incremental update */
#include <string.h>

#include "checksum.h"
#include "packet.h"

/**
 * rn_csum_partial() - add the 16-bit big-endian words of @buf to a partial sum
 * @buf:	data
 * @len:	bytes; odd only for the last piece of a message
 * @sum:	partial sum so far (0 to start)
 *
 * Whole 32-bit words are summed in native byte order into a 64-bit
 * accumulator and byte-swapped once at the end: a one's complement sum does
 * not depend on byte order (RFC 1071, 2.B), and 64 bits cannot overflow for
 * any buffer we handle.
 *
 * Return: the new partial sum, folded to at most 0xffff
 */
uint32_t rn_csum_partial(const void *buf, size_t len, uint32_t sum)
{
	const uint8_t *p = buf;
	uint64_t acc = 0;
	uint32_t w;

	for (; len >= 4; p += 4, len -= 4) {
		memcpy(&w, p, sizeof(w));
		acc += w;
	}
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = rn_csum_fold((uint32_t)acc);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	acc = (uint16_t)(acc << 8 | acc >> 8);
#endif
	if (len >= 2) {
		acc += rn_be16(p);
		p += 2;
		len -= 2;
	}
	if (len)
		acc += (uint32_t)p[0] << 8;
	return rn_csum_fold((uint32_t)acc + rn_csum_fold(sum));
}

/**
 * rn_csum() - checksum of @buf, ready to store
 * @buf:	data
 * @len:	bytes
 * @sum:	partial sum of what precedes @buf (pseudo-header), or 0
 *
 * Return: the complemented one's complement sum, host order (store with
 *	   rn_put_be16())
 */
uint16_t rn_csum(const void *buf, size_t len, uint32_t sum)
{
	return (uint16_t)~rn_csum_fold(rn_csum_partial(buf, len, sum));
}

/**
 * rn_csum_pseudo4() - partial sum of an IPv4 pseudo-header
 * @saddr:	source address
 * @daddr:	destination address
 * @proto:	IP protocol
 * @len:	transport header plus payload length
 *
 * Return: partial sum, folded to at most 0xffff
 */
uint32_t rn_csum_pseudo4(const uint8_t saddr[4], const uint8_t daddr[4], uint8_t proto,
			 uint16_t len)
{
	uint32_t sum = (uint32_t)proto + len;

	sum += rn_be16(saddr) + rn_be16(saddr + 2);
	sum += rn_be16(daddr) + rn_be16(daddr + 2);
	return rn_csum_fold(sum);
}

/**
 * rn_csum_pseudo6() - partial sum of an IPv6 pseudo-header (RFC 8200, 8.1)
 * @saddr:	source address
 * @daddr:	destination address
 * @proto:	upper-layer protocol
 * @len:	upper-layer packet length
 *
 * Return: partial sum, folded to at most 0xffff
 */
uint32_t rn_csum_pseudo6(const uint8_t saddr[16], const uint8_t daddr[16], uint8_t proto,
			 uint32_t len)
{
	uint32_t sum = (uint32_t)proto + (len >> 16) + (len & 0xffffu);

	sum = rn_csum_partial(saddr, 16, sum);
	return rn_csum_partial(daddr, 16, sum);
}

/**
 * rn_csum_nonzero() - the checksum value to store for a result of an update
 * @csum:	complemented sum, host order
 *
 * An incremental update adds x + ~x somewhere and so ends at -0 (0xffff)
 * where a sum from scratch over all-zero data is +0: it then yields 0x0000,
 * which a receiver rejects for all-zero data (an echo reply with identifier,
 * sequence and data all zero). 0xffff is the same value in one's complement
 * and verifies whenever 0x0000 does, so it is always the safe choice (and the
 * one UDP requires).
 *
 * Return: @csum, or 0xffff for 0x0000
 */
static uint16_t rn_csum_nonzero(uint16_t csum)
{
	return csum ? csum : 0xffff;
}

/**
 * rn_csum_update16() - update a checksum for one changed 16-bit word (RFC 1624)
 * @csum:	checksum as stored, host order
 * @old:	old value of the word
 * @new:	new value of the word
 *
 * Uses eqn. 3 of RFC 1624, HC' = ~(~HC + ~m + m'). See rn_csum_nonzero()
 * for the one case it cannot get right on its own.
 *
 * Return: the updated checksum, host order, never 0x0000
 */
uint16_t rn_csum_update16(uint16_t csum, uint16_t old, uint16_t new)
{
	uint32_t sum = (uint32_t)(uint16_t)~csum + (uint16_t)~old + new;

	return rn_csum_nonzero((uint16_t)~rn_csum_fold(sum));
}

/**
 * rn_csum_replace() - update a checksum for a changed field of even length
 * @csum:	checksum as stored, host order
 * @old:	old field bytes
 * @new:	new field bytes
 * @len:	field length, even
 *
 * Return: the updated checksum, host order, never 0x0000
 */
uint16_t rn_csum_replace(uint16_t csum, const void *old, const void *new, size_t len)
{
	uint32_t sum = (uint16_t)~csum;

	sum += (uint16_t)~rn_csum_fold(rn_csum_partial(old, len, 0));
	sum += rn_csum_partial(new, len, 0);
	return rn_csum_nonzero((uint16_t)~rn_csum_fold(sum));
}
