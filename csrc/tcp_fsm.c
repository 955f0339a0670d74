/* tcp_fsm.c - the TCP lifecycle table: every (state, event) pair and what follows
 *
 * Theory of operation
 * -------------------
 * rn_tcp_fsm[state][event] is the one description of a flow's lifecycle
 * (states and events: tcp.h). Each cell says whether the event is legal in
 * the state, the state that follows, what the namespace receives and the
 * counter that records the outcome. The handlers in tcp.c and beside it do
 * the work of an event; when it moves the flow, they call rn_tcp_go(), which
 * takes the next state from this table and nowhere else. Illegal pairs have
 * a defined outcome too (a drop counter, and an ACK, a RST or nothing), and
 * pairs that cannot reach a flow (no host socket, EPOLLOUT not watched, no
 * timer armed) are marked so. tests/test_tcp_states.py is generated from this
 * table: it drives every pair through the real code with real host sockets
 * and checks the state, the reply and the counter against the cell.
 *
 * Reading a row: the namespace is the peer. Segment events are what the
 * namespace sends, host events what epoll reports for the host socket, timer
 * events the flow's deadlines. SYN_SENT is the worker opening a connection
 * towards the namespace for a forwarded host port (forward.c,
 * rn_tcp_connect_ns()): the host socket is the accepted client, watched only
 * for errors until the namespace's SYN-ACK arrives.
 */
#include "tcp_int.h"

#define RN_WCTR_none RN_WCTR_COUNT

/* A legal event: next state, reply, counter */
#define OK(st, r, c)	{ RN_TCP_##st, RN_TCP_LEGAL, RN_TCP_R_##r, RN_WCTR_##c }
/* An illegal event: state kept, reply, drop (or outcome) counter */
#define NO(st, r, c)	{ RN_TCP_##st, RN_TCP_ILLEGAL, RN_TCP_R_##r, RN_WCTR_##c }
/* An event that cannot reach a flow in this state */
#define NEVER(st)	{ RN_TCP_##st, RN_TCP_NEVER, RN_TCP_R_NONE, RN_WCTR_none }

/* Segments that find no flow: a SYN opens one, the rest get a RST */
#define RN_TCP_ROW_CLOSED {						\
	[RN_TCP_EV_SYN]		= OK(CONNECTING, NONE, tcp_segments_in),	\
	[RN_TCP_EV_SYNACK]	= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_ACK]		= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_DATA]	= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_FIN]		= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_RST]		= NO(CLOSED, NONE, drop_tcp_no_flow),	\
	[RN_TCP_EV_RST_WIN]	= NO(CLOSED, NONE, drop_tcp_no_flow),	\
	[RN_TCP_EV_ACK_UNSENT]	= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_OLD]		= NO(CLOSED, RST, drop_tcp_no_flow),	\
	[RN_TCP_EV_READABLE]	= NEVER(CLOSED),				\
	[RN_TCP_EV_EOF]		= NEVER(CLOSED),				\
	[RN_TCP_EV_WRITABLE]	= NEVER(CLOSED),				\
	[RN_TCP_EV_ERROR]	= NEVER(CLOSED),				\
	[RN_TCP_EV_RTO]		= NEVER(CLOSED),				\
	[RN_TCP_EV_TIMEOUT]	= NEVER(CLOSED),				\
}

/* Synchronised states share the answers to bad segments */
#define RN_TCP_BAD_SEGS(st)						\
	[RN_TCP_EV_SYN]		= NO(st, ACK, drop_tcp_syn),		\
	[RN_TCP_EV_SYNACK]	= NO(st, ACK, drop_tcp_syn),		\
	[RN_TCP_EV_RST]		= OK(CLOSED, NONE, tcp_segments_in),	\
	[RN_TCP_EV_RST_WIN]	= NO(st, ACK, drop_tcp_rst),		\
	[RN_TCP_EV_ACK_UNSENT]	= NO(st, ACK, drop_tcp_ack),		\
	[RN_TCP_EV_OLD]		= NO(st, ACK, drop_tcp_old)

const struct rn_tcp_rule rn_tcp_fsm[RN_TCP_NSTATES][RN_TCP_NEVENTS] = {
	[RN_TCP_CLOSED] = RN_TCP_ROW_CLOSED,
	[RN_TCP_CONNECTING] = {
		[RN_TCP_EV_SYN]		= OK(CONNECTING, NONE, tcp_segments_in),
		/* no SYN-ACK sent yet: nothing to acknowledge, no challenge ACK */
		[RN_TCP_EV_SYNACK]	= NO(CONNECTING, NONE, drop_tcp_syn),
		[RN_TCP_EV_ACK]		= NO(CONNECTING, NONE, drop_tcp_ack),
		[RN_TCP_EV_DATA]	= NO(CONNECTING, NONE, drop_tcp_ack),
		[RN_TCP_EV_FIN]		= NO(CONNECTING, NONE, drop_tcp_ack),
		[RN_TCP_EV_RST]		= OK(CLOSED, NONE, tcp_segments_in),
		[RN_TCP_EV_RST_WIN]	= NO(CONNECTING, NONE, drop_tcp_rst),
		[RN_TCP_EV_ACK_UNSENT]	= NO(CONNECTING, NONE, drop_tcp_ack),
		[RN_TCP_EV_OLD]		= NO(CONNECTING, NONE, drop_tcp_ack),
		[RN_TCP_EV_READABLE]	= NEVER(CONNECTING),
		[RN_TCP_EV_EOF]		= NEVER(CONNECTING),
		[RN_TCP_EV_WRITABLE]	= OK(SYN_RCVD, SYNACK, tcp_connected),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_connect_refused),
		/* only a DNS flow with another upstream left: connect to that */
		[RN_TCP_EV_RTO]		= OK(CONNECTING, NONE, dns_resends),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_idle_timeouts),
	},
	[RN_TCP_SYN_RCVD] = {
		[RN_TCP_EV_SYN]		= OK(SYN_RCVD, SYNACK, tcp_segments_in),
		[RN_TCP_EV_SYNACK]	= NO(SYN_RCVD, ACK, drop_tcp_syn),
		[RN_TCP_EV_ACK]		= OK(ESTABLISHED, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= OK(ESTABLISHED, ACK, tcp_segments_in),
		[RN_TCP_EV_FIN]		= OK(CLOSE_WAIT, ACK, tcp_segments_in),
		[RN_TCP_EV_RST]		= OK(CLOSED, NONE, tcp_segments_in),
		[RN_TCP_EV_RST_WIN]	= NO(SYN_RCVD, ACK, drop_tcp_rst),
		/* any ACK but iss + 1 is for a connection we do not have */
		[RN_TCP_EV_ACK_UNSENT]	= NO(SYN_RCVD, RST, drop_tcp_ack),
		/* the ACK in it completes the handshake; the payload, old, is dropped */
		[RN_TCP_EV_OLD]		= OK(ESTABLISHED, ACK, drop_tcp_old),
		/* host data and EOF wait for the handshake */
		[RN_TCP_EV_READABLE]	= OK(SYN_RCVD, NONE, none),
		[RN_TCP_EV_EOF]		= OK(SYN_RCVD, NONE, none),
		[RN_TCP_EV_WRITABLE]	= NEVER(SYN_RCVD),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		[RN_TCP_EV_RTO]		= OK(SYN_RCVD, SYNACK, tcp_retransmits),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_idle_timeouts),
	},
	[RN_TCP_ESTABLISHED] = {
		RN_TCP_BAD_SEGS(ESTABLISHED),
		[RN_TCP_EV_ACK]		= OK(ESTABLISHED, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= OK(ESTABLISHED, ACK, tcp_segments_in),
		[RN_TCP_EV_FIN]		= OK(CLOSE_WAIT, ACK, tcp_segments_in),
		[RN_TCP_EV_READABLE]	= OK(ESTABLISHED, DATA, tcp_bytes_down),
		[RN_TCP_EV_EOF]		= OK(FIN_WAIT_1, FIN, none),
		[RN_TCP_EV_WRITABLE]	= OK(ESTABLISHED, ACK, tcp_window_updates),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		[RN_TCP_EV_RTO]		= OK(ESTABLISHED, DATA, tcp_rto_expired),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_idle_timeouts),
	},
	[RN_TCP_CLOSE_WAIT] = {
		RN_TCP_BAD_SEGS(CLOSE_WAIT),
		[RN_TCP_EV_ACK]		= OK(CLOSE_WAIT, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= NO(CLOSE_WAIT, ACK, drop_tcp_window),
		[RN_TCP_EV_FIN]		= NO(CLOSE_WAIT, ACK, drop_tcp_old),
		[RN_TCP_EV_READABLE]	= OK(CLOSE_WAIT, DATA, tcp_bytes_down),
		[RN_TCP_EV_EOF]		= OK(LAST_ACK, FIN, none),
		/* the host socket is shut for writing: EPOLLOUT not watched */
		[RN_TCP_EV_WRITABLE]	= NEVER(CLOSE_WAIT),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		[RN_TCP_EV_RTO]		= OK(CLOSE_WAIT, DATA, tcp_rto_expired),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_fin_timeouts),
	},
	[RN_TCP_FIN_WAIT_1] = {
		RN_TCP_BAD_SEGS(FIN_WAIT_1),
		[RN_TCP_EV_ACK]		= OK(FIN_WAIT_2, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= OK(FIN_WAIT_1, ACK, tcp_segments_in),
		[RN_TCP_EV_FIN]		= OK(CLOSING, ACK, tcp_segments_in),
		/* after EOF the host sends nothing more, and EPOLLIN is not watched */
		[RN_TCP_EV_READABLE]	= NEVER(FIN_WAIT_1),
		[RN_TCP_EV_EOF]		= NEVER(FIN_WAIT_1),
		[RN_TCP_EV_WRITABLE]	= OK(FIN_WAIT_1, ACK, tcp_window_updates),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		[RN_TCP_EV_RTO]		= OK(FIN_WAIT_1, FIN, tcp_rto_expired),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_fin_timeouts),
	},
	[RN_TCP_FIN_WAIT_2] = {
		RN_TCP_BAD_SEGS(FIN_WAIT_2),
		[RN_TCP_EV_ACK]		= OK(FIN_WAIT_2, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= OK(FIN_WAIT_2, ACK, tcp_segments_in),
		[RN_TCP_EV_FIN]		= OK(TIME_WAIT, ACK, tcp_segments_in),
		[RN_TCP_EV_READABLE]	= NEVER(FIN_WAIT_2),
		[RN_TCP_EV_EOF]		= NEVER(FIN_WAIT_2),
		[RN_TCP_EV_WRITABLE]	= OK(FIN_WAIT_2, ACK, tcp_window_updates),
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		/* everything is acknowledged: no retransmission timer */
		[RN_TCP_EV_RTO]		= NEVER(FIN_WAIT_2),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_fin_timeouts),
	},
	[RN_TCP_CLOSING] = {
		RN_TCP_BAD_SEGS(CLOSING),
		/* both FINs passed on: the host socket closes at once */
		[RN_TCP_EV_ACK]		= OK(CLOSED, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= NO(CLOSING, ACK, drop_tcp_window),
		[RN_TCP_EV_FIN]		= NO(CLOSING, ACK, drop_tcp_old),
		[RN_TCP_EV_READABLE]	= NEVER(CLOSING),
		[RN_TCP_EV_EOF]		= NEVER(CLOSING),
		[RN_TCP_EV_WRITABLE]	= NEVER(CLOSING),
		/* both directions of the host connection are finished: a reset
		 * from the host finds no connection */
		[RN_TCP_EV_ERROR]	= NEVER(CLOSING),
		[RN_TCP_EV_RTO]		= OK(CLOSING, FIN, tcp_rto_expired),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_fin_timeouts),
	},
	[RN_TCP_LAST_ACK] = {
		RN_TCP_BAD_SEGS(LAST_ACK),
		[RN_TCP_EV_ACK]		= OK(CLOSED, NONE, tcp_segments_in),
		[RN_TCP_EV_DATA]	= NO(LAST_ACK, ACK, drop_tcp_window),
		[RN_TCP_EV_FIN]		= NO(LAST_ACK, ACK, drop_tcp_old),
		[RN_TCP_EV_READABLE]	= NEVER(LAST_ACK),
		[RN_TCP_EV_EOF]		= NEVER(LAST_ACK),
		[RN_TCP_EV_WRITABLE]	= NEVER(LAST_ACK),
		/* both directions of the host connection are finished: a reset
		 * from the host finds no connection */
		[RN_TCP_EV_ERROR]	= NEVER(LAST_ACK),
		[RN_TCP_EV_RTO]		= OK(LAST_ACK, FIN, tcp_rto_expired),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_fin_timeouts),
	},
	[RN_TCP_TIME_WAIT] = {
		/* a new connection reusing the tuple replaces the lingering flow */
		[RN_TCP_EV_SYN]		= OK(CONNECTING, NONE, tcp_segments_in),
		[RN_TCP_EV_SYNACK]	= NO(TIME_WAIT, ACK, drop_tcp_syn),
		[RN_TCP_EV_ACK]		= OK(TIME_WAIT, NONE, tcp_segments_in),
		/* taken and forgotten: the namespace has sent its FIN */
		[RN_TCP_EV_DATA]	= NO(TIME_WAIT, NONE, tcp_segments_in),
		/* a repeated FIN: our ACK of it was lost */
		[RN_TCP_EV_FIN]		= OK(TIME_WAIT, ACK, tcp_segments_in),
		[RN_TCP_EV_RST]		= OK(CLOSED, NONE, tcp_segments_in),
		[RN_TCP_EV_RST_WIN]	= NO(TIME_WAIT, ACK, drop_tcp_rst),
		[RN_TCP_EV_ACK_UNSENT]	= NO(TIME_WAIT, NONE, tcp_segments_in),
		[RN_TCP_EV_OLD]		= NO(TIME_WAIT, NONE, tcp_segments_in),
		/* no host socket any more */
		[RN_TCP_EV_READABLE]	= NEVER(TIME_WAIT),
		[RN_TCP_EV_EOF]		= NEVER(TIME_WAIT),
		[RN_TCP_EV_WRITABLE]	= NEVER(TIME_WAIT),
		[RN_TCP_EV_ERROR]	= NEVER(TIME_WAIT),
		[RN_TCP_EV_RTO]		= NEVER(TIME_WAIT),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, NONE, tcp_closed),
	},
	[RN_TCP_SYN_SENT] = {
		/* no simultaneous open: a bare SYN is dropped */
		[RN_TCP_EV_SYN]		= NO(SYN_SENT, NONE, drop_tcp_syn),
		[RN_TCP_EV_SYNACK]	= OK(ESTABLISHED, ACK, tcp_segments_in),
		/* acknowledges our SYN but carries no SYN: dropped (RFC 793) */
		[RN_TCP_EV_ACK]		= NO(SYN_SENT, NONE, drop_tcp_ack),
		[RN_TCP_EV_DATA]	= NO(SYN_SENT, NONE, drop_tcp_ack),
		[RN_TCP_EV_FIN]		= NO(SYN_SENT, NONE, drop_tcp_ack),
		/* RST acknowledging our SYN: the namespace refused; client reset */
		[RN_TCP_EV_RST]		= OK(CLOSED, NONE, tcp_segments_in),
		/* a RST that does not acknowledge our SYN (RFC 5961) */
		[RN_TCP_EV_RST_WIN]	= NO(SYN_SENT, NONE, drop_tcp_rst),
		/* acknowledges what we never sent: a RST at its ACK (RFC 793) */
		[RN_TCP_EV_ACK_UNSENT]	= NO(SYN_SENT, RST, drop_tcp_ack),
		[RN_TCP_EV_OLD]		= NO(SYN_SENT, NONE, drop_tcp_ack),
		/* client data and EOF are not watched before the handshake */
		[RN_TCP_EV_READABLE]	= NEVER(SYN_SENT),
		[RN_TCP_EV_EOF]		= NEVER(SYN_SENT),
		[RN_TCP_EV_WRITABLE]	= NEVER(SYN_SENT),
		/* the client reset or closed: the namespace's half-open is reset */
		[RN_TCP_EV_ERROR]	= OK(CLOSED, RST, tcp_host_errors),
		[RN_TCP_EV_RTO]		= OK(SYN_SENT, SYN, tcp_retransmits),
		[RN_TCP_EV_TIMEOUT]	= OK(CLOSED, RST, tcp_idle_timeouts),
	},
};

/**
 * rn_tcp_go() - move a flow to the state the table names for an event
 * @c:		flow
 * @ev:		enum rn_tcp_event that happened
 *
 * Only legal pairs move a flow: for any other the state stays.
 */
void rn_tcp_go(struct rn_tcp_flow *c, enum rn_tcp_event ev)
{
	const struct rn_tcp_rule *r = &rn_tcp_fsm[c->f.state][ev];

	if (r->legal == RN_TCP_LEGAL)
		c->f.state = r->next;
}

/**
 * rn_tcp_state_name() - a TCP state's name, as statistics and tests show it
 * @state:	enum rn_tcp_state
 *
 * Return: a static string, "?" for values that are no state
 */
const char *rn_tcp_state_name(unsigned int state)
{
	static const char *const names[RN_TCP_NSTATES] = {
		[RN_TCP_CLOSED] = "CLOSED",		[RN_TCP_CONNECTING] = "CONNECTING",
		[RN_TCP_SYN_RCVD] = "SYN_RCVD",		[RN_TCP_ESTABLISHED] = "ESTABLISHED",
		[RN_TCP_CLOSE_WAIT] = "CLOSE_WAIT",	[RN_TCP_FIN_WAIT_1] = "FIN_WAIT_1",
		[RN_TCP_FIN_WAIT_2] = "FIN_WAIT_2",	[RN_TCP_CLOSING] = "CLOSING",
		[RN_TCP_LAST_ACK] = "LAST_ACK",		[RN_TCP_TIME_WAIT] = "TIME_WAIT",
		[RN_TCP_SYN_SENT] = "SYN_SENT",
	};

	return state < RN_TCP_NSTATES ? names[state] : "?";
}

/**
 * rn_tcp_event_name() - a TCP event's name, as tests show it
 * @event:	enum rn_tcp_event
 *
 * Return: a static string, "?" for values that are no event
 */
const char *rn_tcp_event_name(unsigned int event)
{
	static const char *const names[RN_TCP_NEVENTS] = {
		[RN_TCP_EV_SYN] = "syn",		[RN_TCP_EV_SYNACK] = "synack",
		[RN_TCP_EV_ACK] = "ack",		[RN_TCP_EV_DATA] = "data",
		[RN_TCP_EV_FIN] = "fin",		[RN_TCP_EV_RST] = "rst",
		[RN_TCP_EV_RST_WIN] = "rst_in_window",	[RN_TCP_EV_ACK_UNSENT] = "ack_unsent",
		[RN_TCP_EV_OLD] = "old",		[RN_TCP_EV_READABLE] = "host_readable",
		[RN_TCP_EV_EOF] = "host_eof",		[RN_TCP_EV_WRITABLE] = "host_writable",
		[RN_TCP_EV_ERROR] = "host_error",	[RN_TCP_EV_RTO] = "rto",
		[RN_TCP_EV_TIMEOUT] = "timeout",
	};

	return event < RN_TCP_NEVENTS ? names[event] : "?";
}
