/* checksum.h - internet checksum (RFC 1071), pseudo-headers, incremental update
 *
 * Sums are kept as host-order values of big-endian 16-bit words: a partial sum
 * is a uint32_t that callers may add together (each returned sum is folded to
 * at most 0xffff, so a handful of them cannot overflow), then fold and
 * complement once with rn_csum_fold(). Only the last piece of a message may
 * have an odd length.
 */
#ifndef RN_CHECKSUM_H
#define RN_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/**
 * rn_csum_fold() - fold a partial sum to 16 bits (end-around carry)
 * @sum:	partial sum
 *
 * Return: the one's complement sum in 16 bits, not complemented
 */
static inline uint16_t rn_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffffu) + (sum >> 16);
	return (uint16_t)sum;
}

uint32_t rn_csum_partial(const void *buf, size_t len, uint32_t sum);
uint16_t rn_csum(const void *buf, size_t len, uint32_t sum);
uint32_t rn_csum_pseudo4(const uint8_t saddr[4], const uint8_t daddr[4], uint8_t proto,
			 uint16_t len);
uint32_t rn_csum_pseudo6(const uint8_t saddr[16], const uint8_t daddr[16], uint8_t proto,
			 uint32_t len);
uint16_t rn_csum_update16(uint16_t csum, uint16_t old, uint16_t new);
uint16_t rn_csum_replace(uint16_t csum, const void *old, const void *new, size_t len);

#endif /* RN_CHECKSUM_H */
