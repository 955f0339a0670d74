/* dgram.h - flows over host datagram sockets: what udp.c and icmp.c share */
#ifndef RN_DGRAM_H
#define RN_DGRAM_H

#include <stdint.h>
#include <sys/socket.h>

#include "flow.h"
#include "worker.h"

/**
 * struct rn_dgram_flow - a flow with one host datagram socket (UDP, ping)
 * @f:		common header
 * @dst:	host destination (policy.c): where datagrams go, replies come from
 *		(the host socket is the flow's own, or shared: udp.c)
 * @dstlen:	its length
 * @timeout_ms:	idle timeout
 * @dns:	@dst is a DNS upstream (the namespace sent to its DNS address)
 * @dns_up:	which one: index into w->p.dns (dns.c)
 * @dns_gen:	w->dns_gen when @dns_up was chosen
 */
struct rn_dgram_flow {
	struct rn_flow f;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	uint32_t timeout_ms;
	uint8_t dns;
	uint8_t dns_up;
	uint32_t dns_gen;
};

struct rn_icmp_err;

/**
 * typedef rn_dgram_take_fn - a protocol's look at a socket error before it is reported
 * @w:		worker
 * @fl:		flow whose socket had the error
 * @e:		the error
 * @payload:	start of the payload of the datagram that caused it
 * @len:	bytes at @payload
 *
 * Return: 0 to report the error to the namespace, 1 if it was dealt with
 *	   (not reported), -1 if the flow was closed meanwhile
 */
typedef int rn_dgram_take_fn(struct rn_worker *w, struct rn_dgram_flow *fl,
			     const struct rn_icmp_err *e, const uint8_t *payload, uint32_t len);

/**
 * struct rn_dgram_spec - what kind of flow rn_dgram_open() makes
 * @type:	enum rn_flow_type
 * @icmp:	a ping socket (IPPROTO_ICMP or IPPROTO_ICMPV6) rather than UDP
 * @size:	size of the protocol's flow struct (it begins with struct rn_dgram_flow)
 * @timeout_ms:	idle timeout
 * @dns_timeout_ms: idle timeout of a flow to a DNS upstream, if shorter
 */
struct rn_dgram_spec {
	uint8_t type;
	int icmp;
	uint32_t size;
	uint32_t timeout_ms;
	uint32_t dns_timeout_ms;
};

struct rn_policy_dest;

int rn_dgram_admit(struct rn_worker *w, struct rn_frame *f, const struct rn_flow_key *k,
		   struct rn_policy_dest *d);
int rn_dgram_create(struct rn_worker *w, const struct rn_flow_key *k,
		    const struct rn_dgram_spec *s, const struct rn_policy_dest *d, int fd,
		    struct rn_dgram_flow **out);
int rn_dgram_open(struct rn_worker *w, struct rn_frame *f, const struct rn_flow_key *k,
		  const struct rn_dgram_spec *s, struct rn_dgram_flow **out, int *sock_err);
void rn_dgram_pause(struct rn_worker *w, struct rn_flow *f);
int rn_dgram_resume(struct rn_worker *w, struct rn_flow *f);
void rn_dgram_timer(struct rn_worker *w, struct rn_flow *f);
int rn_dgram_socket(int family, int icmp);
int rn_dgram_errors(struct rn_worker *w, struct rn_dgram_flow *fl, uint32_t hdrlen,
		    void (*fix)(const struct rn_flow_key *k, uint8_t *l4, uint32_t len),
		    rn_dgram_take_fn *take);

#endif /* RN_DGRAM_H */
