/* verdict.h - the on_connect hook's verdicts: asks, pending flows, cache (worker side)
 *
 * For tcp_conn.c and dgram.c, which call rn_verdict_check() once per new
 * flow, right after the built-in destination policy (policy.c) admitted
 * it; worker.c drives the rest (asks to send, verdicts in, deadlines). See
 * verdict.c.
 */
#ifndef RN_VERDICT_H
#define RN_VERDICT_H

#include <stdint.h>

#include "flow.h"
#include "worker.h"

/**
 * enum rn_verdict_kind - what the hook decided for a new flow
 * @RN_VERDICT_ALLOW:	go on to the destination
 * @RN_VERDICT_DENY:	refuse (TCP: RST; UDP, echo: ICMP administratively prohibited)
 * @RN_VERDICT_REDIRECT: the host socket goes to another address and port,
 *			named as the namespace would name it (the gateway for
 *			host loopback); the policy applies to it as well
 */
enum rn_verdict_kind {
	RN_VERDICT_ALLOW = 0,
	RN_VERDICT_DENY = 1,
	RN_VERDICT_REDIRECT = 2,
};

/**
 * enum rn_verdict_rc - what rn_verdict_check() tells its caller
 * @RN_VERDICT_GO:	go on with the (possibly redirected) destination
 * @RN_VERDICT_REFUSE:	refuse the flow as a policy refusal is refused
 * @RN_VERDICT_WAIT:	the frame is held (or absorbed) until the verdict
 */
enum rn_verdict_rc {
	RN_VERDICT_GO = 0,
	RN_VERDICT_REFUSE = 1,
	RN_VERDICT_WAIT = 2,
};

/**
 * struct rn_verdict_ask - one question for the orchestrator, as the hook socket carries it
 * @id:		ask id, echoed by the verdict (never 0)
 * @family:	4 or 6
 * @proto:	IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
 * @sport:	namespace source port (echo: identifier)
 * @dport:	destination port (echo: identifier)
 * @saddr:	namespace source address (first 4 bytes for IPv4)
 * @daddr:	destination as the namespace names it
 * @pad:	zero
 *
 * Host byte order (both ends are on this machine); 44 bytes, one or more per
 * message (ringnet/_hook.py unpacks them with the same layout).
 */
struct rn_verdict_ask {
	uint32_t id;
	uint8_t family;
	uint8_t proto;
	uint16_t sport;
	uint16_t dport;
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint8_t pad[2];
};

/**
 * struct rn_verdict_reply - the orchestrator's verdict for one ask, on the hook socket
 * @id:		the ask's id
 * @kind:	enum rn_verdict_kind
 * @family:	redirect: 4 or 6
 * @port:	redirect: port
 * @addr:	redirect: address as the namespace names it (first 4 bytes for IPv4)
 *
 * Host byte order; 24 bytes, one or more per message.
 */
struct rn_verdict_reply {
	uint32_t id;
	uint8_t kind;
	uint8_t family;
	uint16_t port;
	uint8_t addr[16];
};

struct rn_policy_dest;
struct rn_frame;

int rn_verdict_setup(struct rn_worker *w, int fd, uint32_t cache_ms, uint32_t pending_max,
		     uint32_t timeout_ms, int fail_open);
int rn_verdict_check(struct rn_worker *w, const struct rn_frame *f, const struct rn_flow_key *k,
		     struct rn_policy_dest *d, int *ctr);
void rn_verdict_send(struct rn_worker *w);
int rn_verdict_input(struct rn_worker *w);
int64_t rn_verdict_next(const struct rn_worker *w, int64_t next);
int rn_verdict_expire(struct rn_worker *w);
void rn_verdict_free(struct rn_worker *w);

#endif /* RN_VERDICT_H */
