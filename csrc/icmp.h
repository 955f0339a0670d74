/* icmp.h - ICMP and ICMPv6: echo for the gateway, echo forwarding, errors to the namespace
 *
 * For worker.c (rn_icmp_input(), rn_icmp_ops) and for the other protocol
 * cores, which turn refusals and host socket errors into ICMP errors for the
 * namespace through rn_icmp_refuse(), rn_icmp_read_err() and
 * rn_icmp_flow_err().
 */
#ifndef RN_ICMP_H
#define RN_ICMP_H

#include <stdint.h>
#include <sys/socket.h>

#include "flow.h"
#include "worker.h"

/**
 * enum rn_icmp_kind - an ICMP error, independent of the IP version
 * @RN_ICMP_NET:	network unreachable (ICMPv6: no route)
 * @RN_ICMP_HOST:	host unreachable (ICMPv6: address unreachable)
 * @RN_ICMP_PORT:	port unreachable
 * @RN_ICMP_ADMIN:	communication administratively prohibited
 * @RN_ICMP_TOO_BIG:	fragmentation needed (ICMPv6: packet too big), with an MTU
 * @RN_ICMP_TIME:	time exceeded in transit
 */
enum rn_icmp_kind {
	RN_ICMP_NET,
	RN_ICMP_HOST,
	RN_ICMP_PORT,
	RN_ICMP_ADMIN,
	RN_ICMP_TOO_BIG,
	RN_ICMP_TIME,
};

/**
 * struct rn_icmp_err - an ICMP error to report to the namespace
 * @kind:	enum rn_icmp_kind
 * @mtu:	next-hop MTU as the namespace's IP version counts it (RN_ICMP_TOO_BIG)
 */
struct rn_icmp_err {
	uint8_t kind;
	uint32_t mtu;
};

extern const struct rn_flow_ops rn_icmp_ops;

int rn_icmp_input(struct rn_worker *w, struct rn_frame *f);
int rn_icmp_policy_kind(int reason);
int rn_icmp_refuse(struct rn_worker *w, struct rn_frame *f, int kind);
int rn_icmp_read_err(int fd, int ns_family, uint8_t *buf, uint32_t cap, uint32_t *len,
		     struct rn_icmp_err *e, struct sockaddr_storage *to);
int rn_icmp_flow_err(struct rn_worker *w, const struct rn_flow_key *k,
		     const struct rn_icmp_err *e, const uint8_t *l4, uint32_t l4len);

#endif /* RN_ICMP_H */
