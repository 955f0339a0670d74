/* ip.h - IP headers of the packets the worker writes towards the namespace */
#ifndef RN_IP_H
#define RN_IP_H

#include <stdint.h>

#define RN_IP4_HDR_LEN		20u
#define RN_IP6_HDR_LEN		40u
#define RN_IP_TTL		64u

/**
 * rn_ip_hdr_len() - length of the header rn_ip_hdr() writes
 * @family:	4 or 6
 *
 * Return: 20 or 40
 */
static inline uint32_t rn_ip_hdr_len(int family)
{
	return family == 6 ? RN_IP6_HDR_LEN : RN_IP4_HDR_LEN;
}

uint32_t rn_ip_hdr(uint8_t *p, int family, const uint8_t *src, const uint8_t *dst,
		   uint8_t proto, uint32_t l4len);
uint32_t rn_ip_pseudo(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		      uint32_t l4len);

#endif /* RN_IP_H */
