/* forward.h - inbound port forwarding through the C core: host listeners of a worker
 *
 * For worker.c and Python (forward.cdef): a forward is a listening host
 * socket (created by Python) and a destination inside the namespace; the
 * worker accepts on it and opens the connection towards the namespace
 * (rn_tcp_connect_ns()). forward.c says how flows reach the worker that owns
 * them.
 */
#ifndef RN_FORWARD_H
#define RN_FORWARD_H

#include <stdint.h>

#include "worker.h"

/* Workers a forward's handoff sockets can reach */
#define RN_FWD_WORKERS_MAX	64u
/* Connections accepted per listener event, so one busy port cannot starve the loop */
#define RN_FWD_ACCEPT_BATCH	64

/**
 * struct rn_fwd - one forward in one worker
 * @lis:	the listening socket as the worker's epoll sees it (type
 *		RN_FLOW_FWD, state 0; never in the flow table)
 * @hand:	this worker's handoff socket (state 1): accepted connections
 *		another worker handed over; fd -1 without one
 * @id:		the forward's id (Python's)
 * @family:	4 or 6: the namespace destination's family
 * @nsaddr:	namespace destination address, network order
 * @nsport:	namespace destination port, host order
 * @nout:	entries in @out
 * @out:	handoff sockets towards each worker by index (-1: none, and
 *		ours): SOCK_DGRAM, an accepted fd rides as SCM_RIGHTS
 * @udp:	a UDP forward's host socket (udp_fwd.c: a UDP port of its own
 *		kind), NULL for TCP; its fd is then not in @lis
 * @next:	the worker's list of forwards
 */
struct rn_fwd {
	struct rn_flow lis;
	struct rn_flow hand;
	struct rn_udp_port *udp;
	uint32_t id;
	uint8_t family;
	uint8_t nsaddr[16];
	uint16_t nsport;
	uint32_t nout;
	int out[RN_FWD_WORKERS_MAX];
	struct rn_fwd *next;
};

struct rn_udp_port;
struct sockaddr_storage;

extern const struct rn_flow_ops rn_fwd_ops;

int rn_worker_forward_add(struct rn_worker *w, uint32_t id, int lfd, uint8_t family,
			  const uint8_t *nsaddr, uint16_t nsport, int hand_in,
			  const int *hand_out, uint32_t nout);
int rn_worker_forward_add_udp(struct rn_worker *w, uint32_t id, int fd, uint8_t family,
			      const uint8_t *nsaddr, uint16_t nsport);
int rn_worker_forward_del(struct rn_worker *w, uint32_t id);
int rn_fwd_client_key(struct rn_worker *w, const struct rn_fwd *fwd, uint8_t proto,
		      const struct sockaddr_storage *ss, struct rn_flow_key *k);
/* udp_fwd.c */
int rn_udp_fwd_open(struct rn_worker *w, struct rn_fwd *fwd, int fd);
void rn_udp_fwd_close(struct rn_worker *w, struct rn_fwd *fwd);
void rn_fwd_free(struct rn_worker *w);

#endif /* RN_FORWARD_H */
