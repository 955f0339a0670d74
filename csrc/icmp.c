/* icmp.c - ICMP and ICMPv6 towards the worker: echo replies for the gateway
 *
 * The gateway addresses (gw4, gw6) live nowhere but here: an echo request to
 * one of them is answered at once by writing the reply straight into the
 * namespace ring. Echo requests to other destinations wait for the ICMP
 * socket core (drop_unhandled_dst); other message types to the gateway are
 * dropped (drop_icmp_type).
 */
#include <string.h>

#include "checksum.h"
#include "icmp.h"

#define RN_ICMP_HDR_LEN		8u
#define RN_ICMP_ECHO_REPLY	0u
#define RN_ICMP_ECHO_REQUEST	8u
#define RN_ICMP6_ECHO_REQUEST	128u
#define RN_ICMP6_ECHO_REPLY	129u
#define RN_IPPROTO_ICMP		1u
#define RN_IPPROTO_ICMPV6	58u
#define RN_REPLY_HOP_LIMIT	64u
#define RN_IPV4_DF		0x4000u

/**
 * rn_icmp_ip4_reply() - write the IPv4 header of a reply
 * @ip:		where the header goes (20 bytes)
 * @f:		the request
 *
 * Addresses are swapped; TOS, identification and DF are those of the request;
 * no options; TTL 64.
 */
static void rn_icmp_ip4_reply(uint8_t *ip, const struct rn_frame *f)
{
	const uint8_t *req = f->l3.p;

	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[1] = req[1];
	rn_put_be16(ip + 2, (uint16_t)(20 + f->l4len));
	memcpy(ip + 4, req + 4, 2);
	rn_put_be16(ip + 6, rn_be16(req + 6) & RN_IPV4_DF);
	ip[8] = RN_REPLY_HOP_LIMIT;
	ip[9] = RN_IPPROTO_ICMP;
	memcpy(ip + 12, f->daddr, 4);
	memcpy(ip + 16, f->saddr, 4);
	rn_put_be16(ip + 10, rn_csum(ip, 20, 0));
}

/**
 * rn_icmp_ip6_reply() - write the IPv6 header of a reply
 * @ip:		where the header goes (40 bytes)
 * @f:		the request
 *
 * Addresses are swapped; traffic class and flow label zero; hop limit 64.
 */
static void rn_icmp_ip6_reply(uint8_t *ip, const struct rn_frame *f)
{
	memset(ip, 0, 40);
	ip[0] = 0x60;
	rn_put_be16(ip + 4, (uint16_t)f->l4len);
	ip[6] = RN_IPPROTO_ICMPV6;
	ip[7] = RN_REPLY_HOP_LIMIT;
	memcpy(ip + 8, f->daddr, 16);
	memcpy(ip + 24, f->saddr, 16);
}

/**
 * rn_icmp_input() - handle an ICMP (IPv4) or ICMPv6 (IPv6) message
 * @w:		worker
 * @f:		validated frame, f->proto ICMP for IPv4 or ICMPv6 for IPv6
 *
 * An echo request to the gateway is checked (length, type and code, then the
 * checksum over the whole message, after completing a NEEDS_CSUM partial
 * checksum) and answered with an echo reply carrying the same identifier,
 * sequence number and data. The reply's checksum is the request's, updated for
 * the new type (RFC 1624): the IPv6 pseudo-header sum does not change when the
 * addresses swap.
 *
 * Return: the counter recording what became of the frame, or -EPROTO if the
 *	   namespace ring turned out to be corrupted
 */
int rn_icmp_input(struct rn_worker *w, struct rn_frame *f)
{
	int v6 = f->family == 6;
	uint8_t req_type = v6 ? RN_ICMP6_ECHO_REQUEST : RN_ICMP_ECHO_REQUEST;
	uint8_t rep_type = v6 ? RN_ICMP6_ECHO_REPLY : RN_ICMP_ECHO_REPLY;
	uint32_t l3out = v6 ? 40 : 20, sum = 0;
	const uint8_t *msg;
	uint16_t csum;
	uint8_t *out;
	int err;

	if (memcmp(f->daddr, v6 ? w->p.gw6 : w->p.gw4, v6 ? 16 : 4))
		return RN_WCTR_drop_unhandled_dst;
	if (f->l4len < RN_ICMP_HDR_LEN || !(msg = rn_pkt_get(&f->l4, 0, RN_ICMP_HDR_LEN)))
		return RN_WCTR_drop_icmp_header;
	if (msg[0] != req_type || msg[1] != 0)
		return RN_WCTR_drop_icmp_type;

	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM) {
		/* Only the checksum field itself may be left to us */
		if (f->vnet.csum_start != f->l3len || f->vnet.csum_offset != 2)
			return RN_WCTR_drop_icmp_csum;
	}
	if (rn_worker_pull(w, f, f->l4len) != f->l4len)
		return RN_WCTR_drop_icmp_header;
	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM)
		rn_worker_csum_complete(w, f);

	msg = rn_pkt_get(&f->l4, 0, f->l4len);
	if (!msg)
		return RN_WCTR_drop_icmp_header;
	if (v6)
		sum = rn_csum_pseudo6(f->saddr, f->daddr, RN_IPPROTO_ICMPV6, f->l4len);
	if (rn_csum(msg, f->l4len, sum))
		return RN_WCTR_drop_icmp_csum;
	csum = rn_be16(msg + 2);

	out = rn_worker_tx_reserve(w, l3out + f->l4len, &err);
	if (!out)
		return err ? err : RN_WCTR_ring_full;
	if (v6)
		rn_icmp_ip6_reply(out, f);
	else
		rn_icmp_ip4_reply(out, f);
	memcpy(out + l3out, msg, f->l4len);
	out[l3out] = rep_type;
	rn_put_be16(out + l3out + 2, rn_csum_update16(csum, (uint16_t)(req_type << 8),
						      (uint16_t)(rep_type << 8)));
	rn_worker_tx_commit(w, l3out + f->l4len);

	return v6 ? RN_WCTR_icmp6_echo_replies : RN_WCTR_icmp_echo_replies;
}
