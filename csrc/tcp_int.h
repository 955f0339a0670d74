/* tcp_int.h - private to the TCP files (tcp*.c): the flow, the segment, helpers
 *
 * Nothing outside csrc/tcp*.c includes this; worker.c and the rest see only
 * tcp.h. The TCP core is split along its seams:
 *
 *   tcp.c	input dispatch per state, host socket events, timers, ops table
 *   tcp_fsm.c	the state/event table (the lifecycle's single description)
 *   tcp_wire.c	wire format: parse, build, SACK option, control segments, RST
 *   tcp_recv.c	namespace -> host: ACK processing, window, hold buffers
 *   tcp_send.c	host -> namespace: peek, push, retransmit, loss probe
 *   tcp_conn.c	connection: socket, connect, DNS retry, open, active open
 *		towards the namespace (SYN_SENT), close, TIME_WAIT
 *
 * Return convention of the functions below: 0 or a count on success, a
 * negative errno on failure (what failure means is in each contract); the
 * outcome counter of a segment is never a return value of these.
 */
#ifndef RN_TCP_INT_H
#define RN_TCP_INT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dns.h"
#include "ip.h"
#include "tcp.h"

#define RN_TCP_FIN		0x01u
#define RN_TCP_SYN		0x02u
#define RN_TCP_RST		0x04u
#define RN_TCP_PSH		0x08u
#define RN_TCP_ACK		0x10u

#define RN_TCP_HDR		20u
#define RN_TCP_WS		7u		/* our window scale shift */
#define RN_TCP_RTO_INIT		1000		/* ms, RFC 6298 */
#define RN_TCP_RTO_MIN		200		/* ms, as Linux */
#define RN_TCP_RTO_MAX		60000		/* ms */
#define RN_TCP_SYNACK_RETRIES	6
#define RN_TCP_RETRIES		12		/* RTO expiries before giving up */
#define RN_TCP_TIME_WAIT_MS	1000
#define RN_TCP_BUDGET		(256u * 1024u)	/* host bytes per flow per pass */
#define RN_TCP_DISCARD		(1u << 20)	/* peek fallback: max bytes in flight */
#define RN_TCP_NEAR_RTT_US	250u		/* a host path this near gets ... */
#define RN_TCP_NEAR_CLAMP	(4 << 20)	/* ... this receive window clamp */
#define RN_TCP_CLAMP_SHIFT	20		/* re-applied every 1 MiB consumed */
#define RN_TCP_DUPACKS		3
#define RN_TCP_PTO_MIN		10		/* ms, tail loss probe (RFC 8985) */
#define RN_TCP_DELACK		40		/* ms, the peer's delayed ACK, at most */
#define RN_TCP_HOLD_FLOW	(4u << 20)	/* hold buffers of one flow, bytes */
#define RN_TCP_HOLD_WORKER	(64u << 20)	/* hold buffers of all flows */
#define RN_TCP_OOO_BLOCKS	4		/* out-of-order blocks per flow */
#define RN_TCP_TS_LEN		12u		/* NOP, NOP, timestamps (RFC 7323, 3.2) */
#define RN_TCP_OPT_MAX		40u		/* option space of a TCP header */
#define RN_TCP_PAWS_IDLE	(24LL * 24 * 3600 * 1000) /* ms: ts_recent expires (RFC 7323, 5.5) */

/*
 * Pending work and properties of a flow (struct rn_tcp_flow.flags). The
 * lifecycle is not here: it is the flow's state (enum rn_tcp_state, tcp.h).
 */
#define RN_TCP_F_ACK_DUE	0x0001u	/* an ACK must go out at flush */
#define RN_TCP_F_ACK_MAYBE	0x0002u	/* an ACK at flush if ack or window changed */
#define RN_TCP_F_MORE		0x0004u	/* host data may be waiting: push at flush */
#define RN_TCP_F_SHORT		0x0008u	/* a send() to the host was short */
#define RN_TCP_F_WANT_OUT	0x0010u	/* waiting for EPOLLOUT to reopen the window */
#define RN_TCP_F_FIN_PEND	0x0020u	/* FIN from the namespace behind buffered bytes */
#define RN_TCP_F_RECOVERY	0x0040u	/* fast recovery until snd_una reaches recover */
#define RN_TCP_F_RTT		0x0080u	/* timing rtt_seq */
#define RN_TCP_F_TLP_OUT	0x0100u	/* a tail loss probe is out: no other until an ACK */
#define RN_TCP_F_NO_PEEKOFF	0x0200u	/* SO_PEEK_OFF unsupported */
#define RN_TCP_F_WS		0x0400u	/* window scaling in use */
#define RN_TCP_F_SACK		0x0800u	/* SACK permitted: we report held blocks */
#define RN_TCP_F_DNS		0x1000u	/* to a DNS upstream: a failed connect tries the next */
#define RN_TCP_F_TS		0x2000u	/* timestamps in use (RFC 7323): every segment we
					 * send carries them, mss excludes them */

/**
 * struct rn_tcp_blk - bytes held after a sequence gap
 * @seq:	sequence number of the first byte
 * @len:	bytes held
 * @cap:	capacity of @buf
 * @buf:	the bytes (a hold buffer)
 */
struct rn_tcp_blk {
	uint32_t seq;
	uint32_t len;
	uint32_t cap;
	uint8_t *buf;
};

/**
 * struct rn_tcp_flow - one TCP connection (begins with the common header)
 * @f:		common flow header (flowtab.h)
 * @flags:	RN_TCP_F_*: pending work and properties (the state is @f.state)
 * @ovf:	namespace bytes the host socket refused (a hold buffer),
 *		not yet acknowledged
 * @ovf_cap:	its capacity
 * @ovf_off:	first byte of @ovf still to send
 * @ovf_len:	bytes in @ovf from @ovf_off: they follow rcv_nxt
 * @ooo:	blocks of namespace bytes that arrived after a gap, in sequence
 *		order, disjoint (hold buffers)
 * @nooo:	blocks in use
 * @sack_first:	sequence number of the block that got the latest segment
 * @held:	bytes of hold buffers this flow has allocated
 * @last_ack:	acknowledgement number of the last segment we sent
 * @last_wnd:	window field of the last segment we sent
 * @ns_ws:	window scale shift the namespace's windows use
 * @our_ws:	window scale shift of the windows we send
 * @dup_acks:	duplicate ACKs in a row
 * @retries:	RTO expiries since the last progress
 * @mss:	payload bytes per segment towards the namespace (gso_size): the
 *		namespace's MSS (capped by our MTU), less RN_TCP_TS_LEN with
 *		RN_TCP_F_TS, since its MSS excludes options (RFC 6691)
 * @ip_id:	IPv4 identification of the next frame
 * @irs:	the namespace's initial sequence number
 * @rcv_nxt:	next sequence number expected from the namespace
 * @rcv_edge:	right edge of the window we advertised
 * @iss:	our initial sequence number
 * @snd_una:	oldest sequence number not acknowledged by the namespace
 * @snd_nxt:	next sequence number to send
 * @snd_max:	highest sequence number sent, plus one
 * @snd_wnd:	the namespace's receive window, bytes
 * @snd_wl1:	seq of the segment that last updated @snd_wnd
 * @snd_wl2:	ack of that segment
 * @fin_seq:	sequence number of our FIN (valid once the host's EOF was seen:
 *		rn_tcp_host_eof())
 * @recover:	snd_max when fast recovery began
 * @hole_end:	end of the first gap the namespace reported with SACK (0: none)
 * @rtt_seq:	sequence number being timed
 * @rtt_ts:	when it was sent, ms
 * @srtt:	smoothed RTT, ms << 3
 * @rttvar:	RTT variation, ms << 2
 * @rto:	retransmission timeout, ms
 * @rto_at:	retransmission or probe deadline, 0 for none
 * @tlp_at:	tail loss probe deadline, 0 for none
 * @end_at:	idle, FIN or TIME_WAIT deadline, 0 for none
 * @dack_at:	delayed ACK deadline (rn_tcp_ack_delay()), 0 for none
 * @closing:	when the first FIN was seen, ms (0: not closing)
 * @peek_off:	the host socket's SO_PEEK_OFF as we last left it
 * @q_head:	sequence number of the first byte in the host socket's receive
 *		queue: acknowledged bytes are discarded up to snd_una once per
 *		batch (rn_tcp_flush())
 * @ts_recent:	with RN_TCP_F_TS: TS.Recent, the namespace's TSval we echo
 *		(RFC 7323, 4.3), the reference of the PAWS check
 * @ts_off:	with RN_TCP_F_TS: added to w->now for our TSval (RFC 7323, 7.1;
 *		rn_tcp_ts_offset())
 * @ts_recent_at: when @ts_recent was last set, ms (it expires after
 *		RN_TCP_PAWS_IDLE)
 * @dns:	with RN_TCP_F_DNS: the upstreams connected to (dns.c)
 */
struct rn_tcp_flow {
	struct rn_flow f;
	uint32_t flags;
	uint8_t *ovf;
	uint32_t ovf_cap;
	uint32_t ovf_off;
	uint32_t ovf_len;
	struct rn_tcp_blk ooo[RN_TCP_OOO_BLOCKS];
	unsigned int nooo;
	uint32_t sack_first;
	uint32_t held;
	uint32_t last_ack;
	uint16_t last_wnd;
	uint8_t ns_ws;
	uint8_t our_ws;
	uint8_t dup_acks;
	uint8_t retries;
	uint16_t mss;
	uint16_t ip_id;
	uint32_t irs;
	uint32_t rcv_nxt;
	uint32_t rcv_edge;
	uint32_t iss;
	uint32_t snd_una;
	uint32_t snd_nxt;
	uint32_t snd_max;
	uint32_t snd_wnd;
	uint32_t snd_wl1;
	uint32_t snd_wl2;
	uint32_t fin_seq;
	uint32_t recover;
	uint32_t hole_end;
	uint32_t rtt_seq;
	int64_t rtt_ts;
	uint32_t srtt;
	uint32_t rttvar;
	uint32_t rto;
	int64_t rto_at;
	int64_t tlp_at;
	int64_t end_at;
	int64_t dack_at;
	int64_t closing;
	uint32_t peek_off;
	uint32_t q_head;
	uint32_t ts_recent;
	uint32_t ts_off;
	int64_t ts_recent_at;
	struct rn_dns_try dns;
};

/**
 * struct rn_tcp_seg - a parsed segment from the namespace
 * @seq:	sequence number
 * @ack:	acknowledgement number
 * @wnd:	window field (unscaled)
 * @flags:	TCP flags
 * @hlen:	header length
 * @len:	payload length
 * @data:	payload, in shared memory (only ever copied out, never parsed)
 * @mss:	MSS option, 0 if absent
 * @ws:		window scale option, 0xff if absent
 * @sack_ok:	SACK-permitted option present
 * @sack_left:	left edges of the SACK blocks
 * @nsack:	SACK blocks in the segment
 * @ts_ok:	timestamps option present (kind 8, length 10)
 * @tsval:	its TSval
 * @tsecr:	its TSecr
 * @ctr:	its outcome: the counter (RN_WCTR_*) rn_tcp_input() returns
 * @frame:	the frame it came in (held by the on_connect hook, verdict.c)
 */
struct rn_tcp_seg {
	uint32_t seq;
	uint32_t ack;
	uint16_t wnd;
	uint8_t flags;
	uint32_t hlen;
	uint32_t len;
	const uint8_t *data;
	uint16_t mss;
	uint8_t ws;
	uint8_t sack_ok;
	uint32_t sack_left[4];
	uint8_t nsack;
	uint8_t ts_ok;
	uint32_t tsval;
	uint32_t tsecr;
	uint16_t ctr;
	const struct rn_frame *frame;
};

/**
 * rn_seq_lt() - sequence number comparison, modulo 2^32
 * @a:		sequence number
 * @b:		sequence number
 *
 * Return: true if @a is before @b
 */
static inline int rn_seq_lt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

/**
 * rn_seq_le() - sequence number comparison, modulo 2^32
 * @a:		sequence number
 * @b:		sequence number
 *
 * Return: true if @a is not after @b
 */
static inline int rn_seq_le(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}

/**
 * rn_tcp_of() - the TCP flow a common header belongs to
 * @f:		common header of a TCP flow
 *
 * Return: the enclosing struct rn_tcp_flow
 */
static inline struct rn_tcp_flow *rn_tcp_of(struct rn_flow *f)
{
	return (struct rn_tcp_flow *)f;
}

/**
 * rn_tcp_opt_len() - option bytes of every data segment we send on a flow
 * @c:		flow
 *
 * Return: RN_TCP_TS_LEN with timestamps, else 0
 */
static inline uint32_t rn_tcp_opt_len(const struct rn_tcp_flow *c)
{
	return (c->flags & RN_TCP_F_TS) ? RN_TCP_TS_LEN : 0;
}

/**
 * rn_tcp_max_payload() - largest payload of one frame to the namespace
 * @c:		flow (its family, and its options: rn_tcp_opt_len())
 *
 * Return: bytes: the IP length fields (16 bits) are the limit
 */
static inline uint32_t rn_tcp_max_payload(const struct rn_tcp_flow *c)
{
	uint32_t hdr = RN_TCP_HDR + rn_tcp_opt_len(c);

	return c->f.key.family == 6 ? 65535u - hdr : 65535u - RN_IP4_HDR_LEN - hdr;
}

/**
 * rn_tcp_max_frame() - largest payload of one frame, in whole segments
 * @c:		flow
 *
 * Return: rn_tcp_max_payload() cut down to a multiple of c->mss (when it
 *	   holds more than one segment): the payload of a full super-frame
 */
static inline uint32_t rn_tcp_max_frame(const struct rn_tcp_flow *c)
{
	uint32_t frame = rn_tcp_max_payload(c);

	return frame > c->mss ? frame - frame % c->mss : frame;
}

/**
 * rn_tcp_wnd_field() - the window field for the next segment we send
 * @c:		flow
 *
 * Return: (rcv_edge - rcv_nxt) scaled down, at most 65535
 */
static inline uint16_t rn_tcp_wnd_field(const struct rn_tcp_flow *c)
{
	uint32_t wnd = rn_seq_lt(c->rcv_nxt, c->rcv_edge) ? c->rcv_edge - c->rcv_nxt : 0;

	wnd >>= c->our_ws;
	return wnd > 65535u ? 65535u : (uint16_t)wnd;
}

/**
 * rn_tcp_synced() - whether the handshake with the namespace is complete
 * @c:		flow
 *
 * Return: true from ESTABLISHED on, TIME_WAIT included
 */
static inline int rn_tcp_synced(const struct rn_tcp_flow *c)
{
	return c->f.state >= RN_TCP_ESTABLISHED && c->f.state <= RN_TCP_TIME_WAIT;
}

/**
 * rn_tcp_ns_fin_taken() - whether the namespace's FIN was passed on to the host
 * @c:		flow
 *
 * Return: true in CLOSE_WAIT, CLOSING, LAST_ACK and TIME_WAIT
 */
static inline int rn_tcp_ns_fin_taken(const struct rn_tcp_flow *c)
{
	return c->f.state == RN_TCP_CLOSE_WAIT || c->f.state == RN_TCP_CLOSING ||
	       c->f.state == RN_TCP_LAST_ACK || c->f.state == RN_TCP_TIME_WAIT;
}

/**
 * rn_tcp_host_eof() - whether the host's EOF was seen (fin_seq is valid)
 * @c:		flow
 *
 * Return: true in FIN_WAIT_1, FIN_WAIT_2, CLOSING, LAST_ACK and TIME_WAIT
 */
static inline int rn_tcp_host_eof(const struct rn_tcp_flow *c)
{
	return c->f.state >= RN_TCP_FIN_WAIT_1 && c->f.state <= RN_TCP_TIME_WAIT;
}

/**
 * rn_tcp_fin_sent() - whether our FIN went out at least once
 * @c:		flow
 *
 * Return: true once snd_max covers the FIN
 */
static inline int rn_tcp_fin_sent(const struct rn_tcp_flow *c)
{
	return rn_tcp_host_eof(c) && rn_seq_lt(c->fin_seq, c->snd_max);
}

/**
 * rn_tcp_drop() - record why a segment is dropped
 * @s:		the segment
 * @ctr:	its drop counter (RN_WCTR_drop_tcp_*)
 *
 * Return: -EBADMSG
 */
static inline int rn_tcp_drop(struct rn_tcp_seg *s, unsigned int ctr)
{
	s->ctr = (uint16_t)ctr;
	return -EBADMSG;
}

/* tcp_fsm.c */
void rn_tcp_go(struct rn_tcp_flow *c, enum rn_tcp_event ev);

/* tcp_wire.c */
void rn_tcp_headers(uint8_t *pkt, const struct rn_flow_key *k, uint16_t ip_id,
		    uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd,
		    const uint8_t *opts, uint32_t optlen, uint32_t datalen, uint16_t mss);
int rn_tcp_send_ctl(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t flags,
		    uint32_t seq);
void rn_tcp_send_ack(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_ack_later(struct rn_worker *w, struct rn_tcp_flow *c);
int rn_tcp_ack_delay(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_ack_sent(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_update_later(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_rst_key(struct rn_worker *w, const struct rn_flow_key *k, uint32_t seq,
		    uint32_t ack, int with_ack);
void rn_tcp_rst_reply(struct rn_worker *w, const struct rn_flow_key *k,
		      const struct rn_tcp_seg *s);
void rn_tcp_icmp_unreach(struct rn_worker *w, struct rn_tcp_flow *c, int err);
uint32_t rn_tcp_sack_above(const struct rn_tcp_seg *s, uint32_t ack, uint32_t max);
uint32_t rn_tcp_ts_opts(const struct rn_worker *w, const struct rn_tcp_flow *c, uint8_t *opts);
int rn_tcp_parse(struct rn_worker *w, struct rn_frame *f, struct rn_tcp_seg *s);

/* tcp_recv.c */
void rn_tcp_wnd_update(struct rn_tcp_flow *c);
void rn_tcp_rtt_sample(struct rn_tcp_flow *c, uint32_t rtt);
int rn_tcp_ack_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s);
int rn_tcp_ts_in(struct rn_worker *w, struct rn_tcp_flow *c, struct rn_tcp_seg *s);
void rn_tcp_hold_free(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t **buf, uint32_t *cap);
int rn_tcp_ovf_drain(struct rn_worker *w, struct rn_tcp_flow *c);
int rn_tcp_ooo_add(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t seq,
		   const uint8_t *data, uint32_t len);
void rn_tcp_ooo_free(struct rn_worker *w, struct rn_tcp_flow *c);
int rn_tcp_data_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s,
		   uint32_t fin_end);

/* tcp_send.c */
void rn_tcp_tlp_arm(struct rn_worker *w, struct rn_tcp_flow *c);
int rn_tcp_discard_upto_una(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_push(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_retransmit_head(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_probe_tail(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_rto(struct rn_worker *w, struct rn_tcp_flow *c);

/* tcp_conn.c */
void rn_tcp_close(struct rn_worker *w, struct rn_tcp_flow *c, int rst_ns, int rst_host);
void rn_tcp_time_wait(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_watch(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_arm(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_end_deadline(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_host_error(struct rn_worker *w, struct rn_tcp_flow *c, int err);
void rn_tcp_established(struct rn_worker *w, struct rn_tcp_flow *c);
void rn_tcp_connect_done(struct rn_worker *w, struct rn_tcp_flow *c, int err);
int rn_tcp_open(struct rn_worker *w, const struct rn_flow_key *k, struct rn_tcp_seg *s);
void rn_tcp_synack_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s);
uint32_t rn_tcp_ts_offset(const struct rn_worker *w, const struct rn_flow_key *k);

#endif /* RN_TCP_INT_H */
