/* tcp.h - TCP flow termination: namespace connections become host sockets
 *
 * For worker.c: rn_tcp_input() takes validated TCP frames, rn_tcp_ops is the
 * flow type's event, timer, room, flush and release hooks, rn_tcp_free() frees
 * the worker's TCP state once its flows are closed. For forward.c:
 * rn_tcp_connect_ns() opens a connection towards the namespace for an
 * accepted host socket.
 *
 * The TCP lifecycle is described here once: enum rn_tcp_state is a flow's
 * state (struct rn_flow.state, also what flow statistics show), enum
 * rn_tcp_event the events that reach a flow, and rn_tcp_fsm[][] (tcp_fsm.c)
 * says for every (state, event) pair whether the event is legal there, the
 * state that follows, what goes to the namespace and which counter records
 * the outcome. The code moves a flow only through that table (rn_tcp_go())
 * or ends it (CLOSED); tests/test_tcp_states.py drives every pair through the real
 * code and checks it against the table.
 */
#ifndef RN_TCP_H
#define RN_TCP_H

#include "worker.h"

/**
 * enum rn_tcp_state - where a TCP flow is in its lifecycle
 * @RN_TCP_CLOSED:	no connection (segments that find no flow; a flow
 *			being closed)
 * @RN_TCP_CONNECTING:	SYN from the namespace, host connect() in progress
 * @RN_TCP_SYN_RCVD:	host connected, SYN-ACK sent, waiting for the ACK
 * @RN_TCP_ESTABLISHED:	data both ways
 * @RN_TCP_CLOSE_WAIT:	the namespace's FIN passed on (host SHUT_WR)
 * @RN_TCP_FIN_WAIT_1:	host EOF: our FIN due at fin_seq, not acknowledged
 * @RN_TCP_FIN_WAIT_2:	our FIN acknowledged, the namespace still sends
 * @RN_TCP_CLOSING:	FIN_WAIT_1, then the namespace's FIN passed on
 * @RN_TCP_LAST_ACK:	CLOSE_WAIT, then host EOF: waiting for our FIN's ACK
 * @RN_TCP_TIME_WAIT:	host socket closed; lingering to re-ACK a FIN (the
 *			namespace's FIN came after ours was acknowledged)
 * @RN_TCP_SYN_SENT:	active open towards the namespace (inbound port
 *			forwarding, forward.c): our SYN sent, waiting for the
 *			SYN-ACK
 * @RN_TCP_NSTATES:	number of states
 */
enum rn_tcp_state {
	RN_TCP_CLOSED = 0,
	RN_TCP_CONNECTING,
	RN_TCP_SYN_RCVD,
	RN_TCP_ESTABLISHED,
	RN_TCP_CLOSE_WAIT,
	RN_TCP_FIN_WAIT_1,
	RN_TCP_FIN_WAIT_2,
	RN_TCP_CLOSING,
	RN_TCP_LAST_ACK,
	RN_TCP_TIME_WAIT,
	RN_TCP_SYN_SENT,
	RN_TCP_NSTATES
};

/**
 * enum rn_tcp_event - what can happen to a flow
 * @RN_TCP_EV_SYN:	SYN without ACK (on a flow: repeating the first SYN)
 * @RN_TCP_EV_SYNACK:	SYN with ACK
 * @RN_TCP_EV_ACK:	ACK of everything we sent, in sequence, no payload
 * @RN_TCP_EV_DATA:	in-order payload acknowledging nothing new (in
 *			SYN_RCVD: acknowledging our SYN)
 * @RN_TCP_EV_FIN:	the namespace's FIN in order (or repeated), likewise
 * @RN_TCP_EV_RST:	RST with seq == rcv_nxt
 * @RN_TCP_EV_RST_WIN:	RST inside the window, not at rcv_nxt
 * @RN_TCP_EV_ACK_UNSENT: ACK for data never sent
 * @RN_TCP_EV_OLD:	payload entirely before rcv_nxt (a duplicate)
 * @RN_TCP_EV_READABLE:	host data arrived (EPOLLIN)
 * @RN_TCP_EV_EOF:	the host shut its sending side (a peek returns 0)
 * @RN_TCP_EV_WRITABLE:	EPOLLOUT: connect() done, or send buffer space again
 * @RN_TCP_EV_ERROR:	host socket error (connect failed, reset)
 * @RN_TCP_EV_RTO:	retransmission timer (CONNECTING: DNS failover)
 * @RN_TCP_EV_TIMEOUT:	idle, FIN or TIME_WAIT deadline
 * @RN_TCP_NEVENTS:	number of events
 */
enum rn_tcp_event {
	RN_TCP_EV_SYN = 0,
	RN_TCP_EV_SYNACK,
	RN_TCP_EV_ACK,
	RN_TCP_EV_DATA,
	RN_TCP_EV_FIN,
	RN_TCP_EV_RST,
	RN_TCP_EV_RST_WIN,
	RN_TCP_EV_ACK_UNSENT,
	RN_TCP_EV_OLD,
	RN_TCP_EV_READABLE,
	RN_TCP_EV_EOF,
	RN_TCP_EV_WRITABLE,
	RN_TCP_EV_ERROR,
	RN_TCP_EV_RTO,
	RN_TCP_EV_TIMEOUT,
	RN_TCP_NEVENTS
};

/**
 * enum rn_tcp_legal - whether an event is legal in a state
 * @RN_TCP_LEGAL:	part of the protocol: handled, @next follows
 * @RN_TCP_ILLEGAL:	not acceptable there: dropped and counted, answered
 *			as @reply says (challenge ACK, ACK, RST or nothing)
 * @RN_TCP_NEVER:	cannot reach the flow in this state (no socket, not
 *			watched, no timer armed, state not entered yet): no
 *			effect
 */
enum rn_tcp_legal {
	RN_TCP_LEGAL = 0,
	RN_TCP_ILLEGAL,
	RN_TCP_NEVER,
};

/**
 * enum rn_tcp_reply - what the namespace receives because of an event
 * @RN_TCP_R_NONE:	nothing
 * @RN_TCP_R_ACK:	an ACK (acknowledgement, duplicate or challenge ACK,
 *			window update)
 * @RN_TCP_R_SYNACK:	our SYN-ACK
 * @RN_TCP_R_RST:	a RST
 * @RN_TCP_R_DATA:	host data
 * @RN_TCP_R_FIN:	our FIN
 * @RN_TCP_R_SYN:	our SYN (active open)
 */
enum rn_tcp_reply {
	RN_TCP_R_NONE = 0,
	RN_TCP_R_ACK,
	RN_TCP_R_SYNACK,
	RN_TCP_R_RST,
	RN_TCP_R_DATA,
	RN_TCP_R_FIN,
	RN_TCP_R_SYN,
};

/**
 * struct rn_tcp_rule - one (state, event) cell of the lifecycle table
 * @next:	enum rn_tcp_state after the event
 * @legal:	enum rn_tcp_legal
 * @reply:	enum rn_tcp_reply
 * @ctr:	counter (RN_WCTR_*) that records the outcome: for a segment,
 *		what rn_tcp_input() returns; RN_WCTR_COUNT for none
 */
struct rn_tcp_rule {
	uint8_t next;
	uint8_t legal;
	uint8_t reply;
	uint16_t ctr;
};

extern const struct rn_tcp_rule rn_tcp_fsm[RN_TCP_NSTATES][RN_TCP_NEVENTS];
extern const struct rn_flow_ops rn_tcp_ops;

int rn_tcp_input(struct rn_worker *w, struct rn_frame *f);
void rn_tcp_free(struct rn_worker *w);
const char *rn_tcp_state_name(unsigned int state);
const char *rn_tcp_event_name(unsigned int event);
int rn_tcp_connect_ns(struct rn_worker *w, const struct rn_flow_key *k, int fd);

#endif /* RN_TCP_H */
