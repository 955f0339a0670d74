/* tcp.h - TCP flow termination: namespace connections become host sockets
 *
 * For worker.c: rn_tcp_input() takes validated TCP frames, rn_tcp_ops is the
 * flow type's event, timer, room, flush and release hooks, rn_tcp_free() frees
 * the worker's TCP state once its flows are closed. The TCP states, as
 * shown in flow statistics (struct rn_flow.state), are listed here.
 */
#ifndef RN_TCP_H
#define RN_TCP_H

#include "worker.h"

/**
 * enum rn_tcp_state - where a TCP flow is, as statistics show it
 * @RN_TCP_CONNECTING:	SYN from the namespace, host connect() in progress
 * @RN_TCP_SYN_RCVD:	host connected, SYN-ACK sent, waiting for the ACK
 * @RN_TCP_ESTABLISHED:	data both ways
 * @RN_TCP_CLOSE_WAIT:	FIN from the namespace passed on (host SHUT_WR)
 * @RN_TCP_FIN_WAIT:	host EOF passed on: FIN sent to the namespace
 * @RN_TCP_CLOSING:	both FINs passed on, waiting for the last ACK
 * @RN_TCP_TIME_WAIT:	host socket closed; lingering to re-ACK a FIN
 */
enum rn_tcp_state {
	RN_TCP_CONNECTING = 1,
	RN_TCP_SYN_RCVD,
	RN_TCP_ESTABLISHED,
	RN_TCP_CLOSE_WAIT,
	RN_TCP_FIN_WAIT,
	RN_TCP_CLOSING,
	RN_TCP_TIME_WAIT,
};

extern const struct rn_flow_ops rn_tcp_ops;

int rn_tcp_input(struct rn_worker *w, struct rn_frame *f);
void rn_tcp_free(struct rn_worker *w);

#endif /* RN_TCP_H */
