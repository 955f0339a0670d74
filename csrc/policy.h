/* policy.h - where a new flow from the namespace may go, as a host address
 *
 * For TCP, UDP and ICMP forwarding: a protocol core asks rn_policy_dest()
 * once, when a flow is created (and rn_policy_dns() when a DNS flow fails
 * over to another upstream, dns.c), and either connects its host socket to
 * the sockaddr it gets or refuses the flow with the reason (TCP: RST; UDP
 * and echo: an ICMP error, rn_icmp_policy_kind()), counting policy_refused;
 * rn_policy_dest() itself counts the reasons that have a counter of their
 * own (policy_host, policy_link_local, policy_loopback) and then applies the
 * user's egress rules (rules.c, policy_rule). The host's own
 * addresses come from the orchestrator (ringnet/_hostaddrs.py) at start and
 * whenever they change (rn_policy_host_set()). See policy.c for the rules.
 */
#ifndef RN_POLICY_H
#define RN_POLICY_H

#include <stdint.h>
#include <sys/socket.h>

#include "flow.h"
#include "worker.h"

/**
 * enum rn_policy_reason - why a destination is refused
 * @RN_POLICY_ALLOW:	not refused
 * @RN_POLICY_LOOPBACK:	host loopback (127.0.0.0/8, ::1), or the gateway while
 *			host loopback is not allowed
 * @RN_POLICY_SUBNET:	another address in the namespace's own subnet
 * @RN_POLICY_INVALID:	unspecified, link-local, IPv4-mapped or otherwise
 *			unroutable destination, or a family that is off
 * @RN_POLICY_NO_DNS:	the DNS address, but no upstream resolver is known
 * @RN_POLICY_HOST:	an address of the host itself, while allow_host is off
 * @RN_POLICY_LINK_LOCAL: 169.254.0.0/16 or fe80::/10 (cloud metadata services
 *			live there), while allow_link_local is off
 * @RN_POLICY_RULE:	refused by the user's egress rules (rules.c), or by
 *			default_deny when none matched
 */
enum rn_policy_reason {
	RN_POLICY_ALLOW = 0,
	RN_POLICY_LOOPBACK,
	RN_POLICY_SUBNET,
	RN_POLICY_INVALID,
	RN_POLICY_NO_DNS,
	RN_POLICY_HOST,
	RN_POLICY_LINK_LOCAL,
	RN_POLICY_RULE,
};

/**
 * struct rn_policy_dest - the host side of a new flow
 * @sa:		destination address for connect()/sendto()
 * @salen:	its length
 * @family:	AF_INET or AF_INET6 (may differ from the namespace's family: an
 *		IPv4 DNS flow can go to an IPv6 resolver)
 * @dns:	the flow goes to a DNS upstream
 * @dns_up:	which one (index into the worker's DNS upstreams), if @dns
 * @loopback:	the destination is host loopback (gateway mapping or DNS)
 * @rule:	rn_policy_dest(): the egress rule that decided, as struct
 *		rn_flow.rule (slot + 1, 0 for none)
 */
struct rn_policy_dest {
	struct sockaddr_storage sa;
	socklen_t salen;
	int family;
	uint8_t dns;
	uint8_t dns_up;
	uint8_t loopback;
	uint32_t rule;
};

int rn_policy_decide(const struct rn_worker_params *p, int dns_up, const struct rn_flow_key *k,
		     struct rn_policy_dest *d);
int rn_policy_dest(const struct rn_worker_params *p, int dns_up, const struct rn_flow_key *k,
		   struct rn_policy_dest *d);
int rn_policy_is_host(const struct rn_worker_params *p, int family, const uint8_t *addr);
int rn_policy_host_set(struct rn_worker *w, const uint8_t *v4, uint32_t n4, const uint8_t *v6,
		       uint32_t n6);
int rn_policy_dns(const struct rn_worker_params *p, int i, struct rn_policy_dest *d);
const char *rn_policy_reason_name(int reason);

#endif /* RN_POLICY_H */
