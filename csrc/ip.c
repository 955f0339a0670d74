/* ip.c - IP headers of the packets the worker writes towards the namespace
 *
 * Packets the worker originates (UDP datagrams from host sockets, echo
 * replies from ping sockets, ICMP errors) carry a minimal header: IPv4
 * without options, DF set and identification 0 (an atomic datagram, RFC
 * 6864), TTL 64; IPv6 with traffic class and flow label 0, hop limit 64.
 */
#include <string.h>

#include "checksum.h"
#include "ip.h"
#include "packet.h"

#define RN_IP4_DF		0x4000u

/**
 * rn_ip_hdr() - write the IP header of a packet towards the namespace
 * @p:		where the header goes (rn_ip_hdr_len(@family) bytes)
 * @family:	4 or 6
 * @src:	source address, 4 or 16 bytes
 * @dst:	destination address
 * @proto:	transport protocol (IPv6: next header)
 * @l4len:	transport header plus payload length; the caller keeps the
 *		packet within 65535 bytes (IPv4) or its payload within 65535
 *		bytes (IPv6)
 *
 * Return: the header length
 */
uint32_t rn_ip_hdr(uint8_t *p, int family, const uint8_t *src, const uint8_t *dst,
		   uint8_t proto, uint32_t l4len)
{
	if (family == 6) {
		memset(p, 0, RN_IP6_HDR_LEN);
		p[0] = 0x60;
		rn_put_be16(p + 4, (uint16_t)l4len);
		p[6] = proto;
		p[7] = RN_IP_TTL;
		memcpy(p + 8, src, 16);
		memcpy(p + 24, dst, 16);
		return RN_IP6_HDR_LEN;
	}
	memset(p, 0, RN_IP4_HDR_LEN);
	p[0] = 0x45;
	rn_put_be16(p + 2, (uint16_t)(RN_IP4_HDR_LEN + l4len));
	rn_put_be16(p + 6, RN_IP4_DF);
	p[8] = RN_IP_TTL;
	p[9] = proto;
	memcpy(p + 12, src, 4);
	memcpy(p + 16, dst, 4);
	rn_put_be16(p + 10, rn_csum(p, RN_IP4_HDR_LEN, 0));
	return RN_IP4_HDR_LEN;
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
