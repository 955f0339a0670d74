/* tcp.c - TCP flow termination: namespace connections become host sockets
 *
 * Theory of operation
 * -------------------
 * Each TCP connection the namespace opens is terminated here and re-originated
 * as an ordinary non-blocking host socket: a translation layer, not a TCP
 * stack with buffers of its own. The namespace's Linux TCP is our peer and
 * judges every segment we send; the host kernel's TCP does the rest.
 *
 * Connection setup: a SYN without a flow is checked (policy.c) and a flow is
 * created (at the max_flows cap: RST, flows_refused_cap); connect() starts
 * without blocking. The SYN-ACK goes out only once the host connect succeeded
 * (EPOLLOUT, SO_ERROR 0), so a refused connect becomes a RST at once (the
 * application sees ECONNREFUSED), an unreachable destination an ICMP
 * destination unreachable, anything else (timeout...) a RST; a flow to a
 * DNS upstream first connects to the next upstream (rn_tcp_dns_retry(),
 * dns.c), also when the connect has not completed after
 * RN_DNS_FAILOVER_MS while another upstream is left. Options
 * negotiated: MSS (ours from the MTU; theirs caps gso_size), window scaling
 * (shift RN_TCP_WS) and SACK-permitted (as a receiver: see below), each only
 * when the namespace offers it. Timestamps are not implemented, so the
 * SYN-ACK does not claim them.
 *
 * Namespace -> host: an in-order segment's payload goes to send(MSG_DONTWAIT)
 * straight from ring memory, and rcv_nxt (what we acknowledge) advances by
 * exactly what the socket took. The window we advertise follows the socket's
 * free send buffer (SO_MEMINFO: sndbuf - wmem_queued, the test tcp_sendmsg()
 * applies, less 1/32 for buffer overhead); its right edge never moves left.
 * The socket's accounting still drifts from our estimate, so bytes it
 * refuses from inside the window go to the flow's overflow buffer and are
 * acknowledged when the socket takes them: data that arrived inside our
 * window is never dropped (pasta's ns->host stall). Segments after a gap (a
 * loss) are answered at once with a duplicate ACK each and kept, in up to
 * RN_TCP_OOO_BLOCKS blocks, until the gap is filled; with SACK permitted
 * (we offer it when the namespace does) every ACK lists the blocks held
 * (RFC 2018), so the namespace resends only the gaps. Overflow and
 * out-of-order bytes live in hold buffers, allocated while needed, within
 * RN_TCP_HOLD_FLOW per flow and RN_TCP_HOLD_WORKER for the whole worker;
 * only what those limits refuse is refused to the namespace, and then the
 * window update sent when the socket drains (EPOLLOUT) is followed by
 * duplicate ACKs so that the namespace resends at once rather than after its
 * RTO. Other ACKs go out once per batch per flow (rn_tcp_flush()), and only
 * if the ACK number or window changed.
 *
 * Host -> namespace: data stays in the host socket's receive queue until the
 * namespace acknowledges it. We peek (MSG_PEEK with SO_PEEK_OFF, so each
 * peek continues where the last one ended) straight into ring memory, up to
 * 64 KiB per frame as a TSO super-frame (gso_size = the namespace's MSS),
 * and discard acknowledged bytes with recv(MSG_TRUNC), once per batch. Retransmission peeks
 * again from offset 0. Without SO_PEEK_OFF (kernels before 6.9), the peek
 * skips already-sent bytes into a static discard buffer, which caps the bytes
 * in flight at RN_TCP_DISCARD. Frames carry NEEDS_CSUM with the pseudo-header
 * sum in the checksum field, so no payload byte is ever summed by us.
 *
 * Memory per connection: struct rn_tcp_flow (about 300 bytes), one host
 * socket, and only while needed, hold buffers for bytes the socket refused
 * and bytes after a gap: at most RN_TCP_HOLD_FLOW (4 MiB) per flow and
 * RN_TCP_HOLD_WORKER (64 MiB) for all flows of a worker. The kernel bounds
 * the rest: the socket's send buffer (net.ipv4.tcp_wmem max) holds namespace
 * data not yet sent on, its receive buffer (tcp_rmem max) host data the
 * namespace has not acknowledged.
 *
 * Reliability towards the namespace: one retransmission timer per flow
 * (RFC 6298 estimator in milliseconds, minimum RN_TCP_RTO_MIN, doubling on
 * each expiry, go-back-N from snd_una); fast retransmit on the third
 * duplicate ACK (or ACK with SACK blocks) with NewReno-style partial-ACK
 * recovery, one super-frame per ACK, cut to the first gap when the
 * namespace's SACK blocks show where it ends; zero-window probes (an ACK
 * with seq = snd_una - 1) while the namespace's window is closed; a tail
 * loss probe (RFC 8985: the last frame again, after about two RTTs without
 * an ACK) so that losing the last frames of a burst costs no RTO. No congestion control: the peer sits behind
 * a memory ring and its receive window bounds what is in flight.
 *
 * Closing: a FIN from the namespace (after all its data was taken) becomes
 * shutdown(SHUT_WR); EOF from the host (a peek returning 0) becomes our FIN
 * once all data before it went out. When both FINs are done and ours is
 * acknowledged, the host socket is closed at once. If the namespace's FIN
 * came last, the flow lingers RN_TCP_TIME_WAIT_MS without a socket, to
 * acknowledge a retransmitted FIN. A RST either way is passed on (to the host
 * by close() with SO_LINGER 0). Timeouts: tcp_idle_timeout_ms without
 * activity, tcp_fin_timeout_ms after the first FIN; both reset both sides.
 *
 * Bad input (RFC 793, RFC 5961): segments are checked in rn_tcp_parse() for
 * length, data offset, options that overrun the header, illegal flag
 * combinations, zero ports and the checksum (only when the namespace's
 * kernel computed it: NEEDS_CSUM frames carry a partial sum we do not
 * verify; then the checksum field must be where TCP's is). A RST is accepted
 * only with seq == rcv_nxt, answered with a challenge ACK inside the window
 * and dropped outside; a SYN on a synchronised flow gets a challenge ACK; an
 * ACK for data never sent is answered with an ACK and dropped. Each case has
 * its own drop counter; a segment for no flow gets a RST (drop_tcp_no_flow).
 *
 * Flow state (struct rn_flow.state) follows enum rn_tcp_state in tcp.h and is
 * derived from the event flags RN_TCP_F_*.
 */
#include <errno.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checksum.h"
#include "dns.h"
#include "policy.h"
#include "tcp.h"

#define RN_IPPROTO_TCP		6u
#define RN_IPPROTO_ICMP		1u
#define RN_IPPROTO_ICMPV6	58u

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
#define RN_TCP_DUPACKS		3
#define RN_TCP_PTO_MIN		10		/* ms, tail loss probe (RFC 8985) */
#define RN_TCP_DELACK		40		/* ms, the peer's delayed ACK, at most */
#define RN_TCP_HOLD_FLOW	(4u << 20)	/* hold buffers of one flow, bytes */
#define RN_TCP_HOLD_WORKER	(64u << 20)	/* hold buffers of all flows */
#define RN_TCP_OOO_BLOCKS	4		/* out-of-order blocks per flow */

/* Event flags */
#define RN_TCP_F_CONNECTING	0x0001u	/* connect() in progress */
#define RN_TCP_F_SYNACK		0x0002u	/* SYN-ACK sent */
#define RN_TCP_F_ESTABLISHED	0x0004u	/* namespace acknowledged our SYN */
#define RN_TCP_F_NS_FIN		0x0008u	/* FIN from the namespace taken */
#define RN_TCP_F_HOST_EOF	0x0010u	/* EOF from the host seen: fin_seq valid */
#define RN_TCP_F_FIN_SENT	0x0020u	/* our FIN sent at least once */
#define RN_TCP_F_FIN_ACKED	0x0040u	/* our FIN acknowledged */
#define RN_TCP_F_TIME_WAIT	0x0080u	/* socket closed, lingering */
#define RN_TCP_F_ACK_DUE	0x0100u	/* an ACK must go out at flush */
#define RN_TCP_F_MORE		0x0200u	/* host data may be waiting: push at flush */
#define RN_TCP_F_SHORT		0x0400u	/* a send() to the host was short */
#define RN_TCP_F_WANT_OUT	0x0800u	/* waiting for EPOLLOUT to reopen the window */
#define RN_TCP_F_NO_PEEKOFF	0x1000u	/* SO_PEEK_OFF unsupported */
#define RN_TCP_F_RECOVERY	0x2000u	/* fast recovery until snd_una reaches recover */
#define RN_TCP_F_RTT		0x4000u	/* timing rtt_seq */
#define RN_TCP_F_WS		0x8000u	/* window scaling in use */
#define RN_TCP_F_FIN_PEND	0x10000u /* FIN from the namespace behind buffered bytes */
#define RN_TCP_F_ACK_MAYBE	0x20000u /* an ACK at flush if ack or window changed */
#define RN_TCP_F_NS_FIN_LAST	0x40000u /* the namespace's FIN came after ours was acked */
#define RN_TCP_F_SACK		0x80000u /* SACK permitted: we report held blocks */
#define RN_TCP_F_TLP_OUT	0x100000u /* a tail loss probe is out: no other until an ACK */
#define RN_TCP_F_DNS		0x200000u /* to a DNS upstream: a failed connect tries the next */

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
 * @flags:	RN_TCP_F_*
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
 * @mss:	segment size towards the namespace (gso_size)
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
 * @fin_seq:	sequence number of our FIN (valid with RN_TCP_F_HOST_EOF)
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
 * @closing:	when the first FIN was seen, ms (0: not closing)
 * @peek_off:	the host socket's SO_PEEK_OFF as we last left it
 * @q_head:	sequence number of the first byte in the host socket's receive
 *		queue: acknowledged bytes are discarded up to snd_una once per
 *		batch (rn_tcp_flush())
 * @dns_up:	with RN_TCP_F_DNS: the upstream connected to (index, dns.c)
 * @dns_tried:	upstreams this flow tried to connect to, one bit per index
 * @dns_gen:	w->dns_gen that @dns_up and @dns_tried refer to
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
	int64_t closing;
	uint32_t peek_off;
	uint32_t q_head;
	uint8_t dns_up;
	uint8_t dns_tried;
	uint32_t dns_gen;
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
};

/* Skip buffer for peeking without SO_PEEK_OFF */
static uint8_t rn_tcp_discard[RN_TCP_DISCARD];

/* Bytes of hold buffers allocated by all flows of this process (a worker) */
static size_t rn_tcp_held;

static void rn_tcp_push(struct rn_worker *w, struct rn_tcp_flow *c);
static void rn_tcp_arm(struct rn_worker *w, struct rn_tcp_flow *c);
static uint32_t rn_tcp_sack_opts(const struct rn_tcp_flow *c, uint8_t *opts);
static uint32_t rn_tcp_sack_above(const struct rn_tcp_seg *s, uint32_t ack, uint32_t max);
static int rn_tcp_discard_upto_una(struct rn_tcp_flow *c);

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
 * rn_put_le16() - store a 16-bit value little-endian (virtio-net header)
 * @p:		destination
 * @v:		value
 */
static inline void rn_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/**
 * rn_tcp_l3len() - IP header length of the frames of a flow
 * @k:		flow key
 *
 * Return: 20 or 40
 */
static inline uint32_t rn_tcp_l3len(const struct rn_flow_key *k)
{
	return k->family == 6 ? 40u : 20u;
}

/**
 * rn_tcp_max_payload() - largest payload of one frame to the namespace
 * @k:		flow key
 *
 * Return: bytes: the IP length fields (16 bits) are the limit
 */
static inline uint32_t rn_tcp_max_payload(const struct rn_flow_key *k)
{
	return k->family == 6 ? 65535u - RN_TCP_HDR : 65535u - 20u - RN_TCP_HDR;
}

/**
 * rn_tcp_set_state() - derive the displayed state from the event flags
 * @c:		flow
 */
static void rn_tcp_set_state(struct rn_tcp_flow *c)
{
	uint32_t fl = c->flags;
	uint8_t s;

	if (fl & RN_TCP_F_TIME_WAIT)
		s = RN_TCP_TIME_WAIT;
	else if (fl & RN_TCP_F_CONNECTING)
		s = RN_TCP_CONNECTING;
	else if (!(fl & RN_TCP_F_ESTABLISHED))
		s = RN_TCP_SYN_RCVD;
	else if ((fl & RN_TCP_F_NS_FIN) && (fl & RN_TCP_F_FIN_SENT))
		s = RN_TCP_CLOSING;
	else if (fl & RN_TCP_F_NS_FIN)
		s = RN_TCP_CLOSE_WAIT;
	else if (fl & RN_TCP_F_FIN_SENT)
		s = RN_TCP_FIN_WAIT;
	else
		s = RN_TCP_ESTABLISHED;
	c->f.state = s;
}

/**
 * rn_tcp_headers() - write IP and TCP headers and the virtio-net header
 * @pkt:	start of the IP packet in ring memory (vnet header before it,
 *		zeroed by rn_worker_tx_reserve())
 * @k:		flow key as the namespace sees it: we send from daddr:dport to
 *		saddr:sport
 * @ip_id:	IPv4 identification
 * @seq:	sequence number
 * @ack:	acknowledgement number (0 unless @flags has ACK)
 * @flags:	TCP flags
 * @wnd:	window field
 * @opts:	options, a multiple of 4 bytes, or NULL
 * @optlen:	their length
 * @datalen:	payload bytes already at pkt + l3 + 20 + @optlen
 * @mss:	segment size for GSO: frames with more payload become TSO frames
 *
 * The TCP checksum is left to the namespace's kernel (NEEDS_CSUM): the field
 * holds the pseudo-header sum over the full length, not inverted.
 */
static void rn_tcp_headers(uint8_t *pkt, const struct rn_flow_key *k, uint16_t ip_id,
			   uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd,
			   const uint8_t *opts, uint32_t optlen, uint32_t datalen, uint16_t mss)
{
	uint32_t l3 = rn_tcp_l3len(k), thl = RN_TCP_HDR + optlen, l4len = thl + datalen;
	uint8_t *t = pkt + l3, *v = pkt - RN_VNET_HDR_LEN;
	uint32_t sum;

	if (k->family == 4) {
		memset(pkt, 0, 20);
		pkt[0] = 0x45;
		rn_put_be16(pkt + 2, (uint16_t)(20 + l4len));
		rn_put_be16(pkt + 4, ip_id);
		rn_put_be16(pkt + 6, 0x4000);	/* DF */
		pkt[8] = 64;
		pkt[9] = RN_IPPROTO_TCP;
		memcpy(pkt + 12, k->daddr, 4);
		memcpy(pkt + 16, k->saddr, 4);
		rn_put_be16(pkt + 10, rn_csum(pkt, 20, 0));
		sum = rn_csum_pseudo4(k->daddr, k->saddr, RN_IPPROTO_TCP, (uint16_t)l4len);
	} else {
		memset(pkt, 0, 40);
		pkt[0] = 0x60;
		rn_put_be16(pkt + 4, (uint16_t)l4len);
		pkt[6] = RN_IPPROTO_TCP;
		pkt[7] = 64;
		memcpy(pkt + 8, k->daddr, 16);
		memcpy(pkt + 24, k->saddr, 16);
		sum = rn_csum_pseudo6(k->daddr, k->saddr, RN_IPPROTO_TCP, l4len);
	}

	rn_put_be16(t, k->dport);
	rn_put_be16(t + 2, k->sport);
	rn_put_be32(t + 4, seq);
	rn_put_be32(t + 8, ack);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	rn_put_be16(t + 14, wnd);
	rn_put_be16(t + 16, rn_csum_fold(sum));
	rn_put_be16(t + 18, 0);
	if (optlen)
		memcpy(t + RN_TCP_HDR, opts, optlen);

	v[0] = RN_VNET_F_NEEDS_CSUM;
	rn_put_le16(v + 6, (uint16_t)l3);
	rn_put_le16(v + 8, 16);
	if (mss && datalen > mss) {
		v[1] = k->family == 4 ? RN_VNET_GSO_TCPV4 : RN_VNET_GSO_TCPV6;
		rn_put_le16(v + 2, (uint16_t)(l3 + thl));
		rn_put_le16(v + 4, mss);
	}
}

/**
 * rn_tcp_wnd_field() - the window field for the next segment we send
 * @c:		flow
 *
 * Return: (rcv_edge - rcv_nxt) scaled down, at most 65535
 */
static uint16_t rn_tcp_wnd_field(const struct rn_tcp_flow *c)
{
	uint32_t wnd = rn_seq_lt(c->rcv_nxt, c->rcv_edge) ? c->rcv_edge - c->rcv_nxt : 0;

	wnd >>= c->our_ws;
	return wnd > 65535u ? 65535u : (uint16_t)wnd;
}

/**
 * rn_tcp_wnd_update() - recompute the window from the host socket's free space
 * @c:		flow with a host socket
 *
 * The right edge never moves left. Asks for EPOLLOUT (RN_TCP_F_WANT_OUT)
 * when less than a quarter of the send buffer is free.
 */
static void rn_tcp_wnd_update(struct rn_tcp_flow *c)
{
	uint32_t mem[SK_MEMINFO_VARS], max = 65535u << c->our_ws, edge;
	socklen_t sl = sizeof(mem);
	int64_t room = 0;

	if (c->f.fd >= 0 && !getsockopt(c->f.fd, SOL_SOCKET, SO_MEMINFO, mem, &sl) &&
	    sl >= sizeof(uint32_t) * (SK_MEMINFO_WMEM_QUEUED + 1)) {
		/* Buffer accounting includes overhead: keep 1/32 in reserve */
		room = (int64_t)mem[SK_MEMINFO_SNDBUF] - mem[SK_MEMINFO_WMEM_QUEUED] -
		       mem[SK_MEMINFO_SNDBUF] / 32;
		if (room < (int64_t)mem[SK_MEMINFO_SNDBUF] / 4)
			c->flags |= RN_TCP_F_WANT_OUT;
	}
	if (room < 0)
		room = 0;
	if (room > max)
		room = max;
	edge = c->rcv_nxt + (uint32_t)room;
	if (rn_seq_lt(c->rcv_edge, edge))
		c->rcv_edge = edge;
}

/**
 * rn_tcp_send_ctl() - send a segment without payload on a flow
 * @w:		worker
 * @c:		flow
 * @flags:	TCP flags (ACK is added once the namespace's SYN was seen)
 * @seq:	sequence number
 *
 * Return: 0, -EAGAIN if to_ns is full, or a fatal negative errno
 */
static int rn_tcp_send_ctl(struct rn_worker *w, struct rn_tcp_flow *c, uint8_t flags,
			   uint32_t seq)
{
	uint8_t opts[40];
	uint32_t optlen = 0, l3 = rn_tcp_l3len(&c->f.key);
	uint16_t wnd;
	uint8_t *pkt;
	int err;

	if (flags & RN_TCP_SYN) {
		uint16_t mss = (uint16_t)(w->p.mtu - l3 - RN_TCP_HDR);

		opts[0] = 2;
		opts[1] = 4;
		rn_put_be16(opts + 2, mss);
		optlen = 4;
		if (c->flags & RN_TCP_F_SACK) {
			opts[optlen++] = 1;
			opts[optlen++] = 1;
			opts[optlen++] = 4;	/* SACK permitted */
			opts[optlen++] = 2;
		}
		if (c->flags & RN_TCP_F_WS) {
			opts[optlen++] = 1;
			opts[optlen++] = 3;
			opts[optlen++] = 3;
			opts[optlen++] = RN_TCP_WS;
		}
	} else if (!(flags & RN_TCP_RST)) {
		optlen = rn_tcp_sack_opts(c, opts);
	}
	pkt = rn_worker_tx_reserve(w, l3 + RN_TCP_HDR + optlen, &err);
	if (!pkt)
		return err ? err : -EAGAIN;
	/* The window of a SYN-ACK is never scaled (RFC 7323) */
	wnd = rn_tcp_wnd_field(c);
	if (flags & RN_TCP_SYN) {
		uint32_t raw = c->rcv_edge - c->rcv_nxt;

		wnd = raw > 65535u ? 65535u : (uint16_t)raw;
	}
	rn_tcp_headers(pkt, &c->f.key, c->ip_id++, seq, c->rcv_nxt, flags | RN_TCP_ACK,
		       wnd, opts, optlen, 0, 0);
	c->last_ack = c->rcv_nxt;
	c->last_wnd = wnd;
	c->flags &= ~RN_TCP_F_ACK_MAYBE;
	rn_worker_tx_commit(w, l3 + RN_TCP_HDR + optlen);
	return 0;
}

/**
 * rn_tcp_send_ack() - send an ACK now, or as soon as to_ns has room
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_send_ack(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int rc = rn_tcp_send_ctl(w, c, RN_TCP_ACK, c->snd_nxt);

	if (rc == -EAGAIN) {
		c->flags |= RN_TCP_F_ACK_DUE;
		rn_worker_wait_room(w, &c->f);
		return;
	}
	c->flags &= ~RN_TCP_F_ACK_DUE;
}

/**
 * rn_tcp_ack_later() - send an ACK at the end of this batch (one per flow)
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_ack_later(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->flags |= RN_TCP_F_ACK_DUE;
	rn_worker_defer(w, &c->f);
}

/**
 * rn_tcp_update_later() - at the end of this batch, ACK if anything changed
 * @w:		worker
 * @c:		flow
 *
 * For data taken or buffered: an ACK that repeats the last one would look
 * like a duplicate ACK to the namespace, so none is sent then.
 */
static void rn_tcp_update_later(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->flags |= RN_TCP_F_ACK_MAYBE;
	rn_worker_defer(w, &c->f);
}

/**
 * rn_tcp_rst_key() - send a RST for a segment that has no flow
 * @w:		worker
 * @k:		key of the segment (as the namespace sees it)
 * @seq:	sequence number of the RST
 * @ack:	acknowledgement number, used if @with_ack
 * @with_ack:	set the ACK flag
 */
static void rn_tcp_rst_key(struct rn_worker *w, const struct rn_flow_key *k, uint32_t seq,
			   uint32_t ack, int with_ack)
{
	uint32_t l3 = rn_tcp_l3len(k);
	uint8_t *pkt;
	int err;

	pkt = rn_worker_tx_reserve(w, l3 + RN_TCP_HDR, &err);
	if (!pkt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_ring_full, 1);
		return;
	}
	rn_tcp_headers(pkt, k, 0, seq, with_ack ? ack : 0,
		       (uint8_t)(RN_TCP_RST | (with_ack ? RN_TCP_ACK : 0)), 0, NULL, 0, 0, 0);
	rn_worker_tx_commit(w, l3 + RN_TCP_HDR);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_sent, 1);
}

/**
 * rn_tcp_rst_reply() - answer a segment without a flow with a RST (RFC 793)
 * @w:		worker
 * @k:		its key
 * @s:		the segment (never a RST itself)
 */
static void rn_tcp_rst_reply(struct rn_worker *w, const struct rn_flow_key *k,
			     const struct rn_tcp_seg *s)
{
	uint32_t seglen = s->len + !!(s->flags & RN_TCP_SYN) + !!(s->flags & RN_TCP_FIN);

	if (s->flags & RN_TCP_ACK)
		rn_tcp_rst_key(w, k, s->ack, 0, 0);
	else
		rn_tcp_rst_key(w, k, 0, s->seq + seglen, 1);
}

/**
 * rn_tcp_icmp_unreach() - tell the namespace its SYN's destination is unreachable
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 * @err:	errno of the failed connect (ENETUNREACH or EHOSTUNREACH)
 *
 * An ICMP (ICMPv6) destination unreachable from the destination address,
 * quoting an IP header and the first 8 bytes of the SYN (ports and
 * sequence number, which the namespace's TCP matches against its socket).
 */
static void rn_tcp_icmp_unreach(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	const struct rn_flow_key *k = &c->f.key;
	uint32_t l3 = rn_tcp_l3len(k), len = l3 + 8 + l3 + 8;
	uint8_t *pkt, *icmp, *q;
	int e;

	pkt = rn_worker_tx_reserve(w, len, &e);
	if (!pkt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_ring_full, 1);
		return;
	}
	memset(pkt, 0, len);
	icmp = pkt + l3;
	q = icmp + 8;
	if (k->family == 4) {
		pkt[0] = 0x45;
		rn_put_be16(pkt + 2, (uint16_t)len);
		pkt[8] = 64;
		pkt[9] = RN_IPPROTO_ICMP;
		memcpy(pkt + 12, k->daddr, 4);
		memcpy(pkt + 16, k->saddr, 4);
		rn_put_be16(pkt + 10, rn_csum(pkt, 20, 0));
		icmp[0] = 3;			/* destination unreachable */
		icmp[1] = err == ENETUNREACH ? 0 : 1;
		q[0] = 0x45;
		rn_put_be16(q + 2, 20 + 20);
		rn_put_be16(q + 6, 0x4000);
		q[8] = 64;
		q[9] = RN_IPPROTO_TCP;
		memcpy(q + 12, k->saddr, 4);
		memcpy(q + 16, k->daddr, 4);
		rn_put_be16(q + 10, rn_csum(q, 20, 0));
	} else {
		pkt[0] = 0x60;
		rn_put_be16(pkt + 4, (uint16_t)(len - 40));
		pkt[6] = RN_IPPROTO_ICMPV6;
		pkt[7] = 64;
		memcpy(pkt + 8, k->daddr, 16);
		memcpy(pkt + 24, k->saddr, 16);
		icmp[0] = 1;			/* destination unreachable */
		icmp[1] = err == ENETUNREACH ? 0 : 3;
		q[0] = 0x60;
		rn_put_be16(q + 4, 20);
		q[6] = RN_IPPROTO_TCP;
		q[7] = 64;
		memcpy(q + 8, k->saddr, 16);
		memcpy(q + 24, k->daddr, 16);
	}
	q += l3;
	rn_put_be16(q, k->sport);
	rn_put_be16(q + 2, k->dport);
	rn_put_be32(q + 4, c->irs);
	rn_put_be16(icmp + 2, rn_csum(icmp, len - l3, k->family == 6 ?
				      rn_csum_pseudo6(k->daddr, k->saddr, RN_IPPROTO_ICMPV6,
						      len - l3) : 0));
	rn_worker_tx_commit(w, len);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_icmp_sent, 1);
}

/**
 * rn_tcp_close() - end a flow, optionally resetting either side
 * @w:		worker
 * @c:		flow
 * @rst_ns:	send a RST to the namespace
 * @rst_host:	reset the host connection (SO_LINGER 0) instead of closing it
 */
static void rn_tcp_close(struct rn_worker *w, struct rn_tcp_flow *c, int rst_ns, int rst_host)
{
	/* snd_max: what the namespace most likely expects next (exactly, unless
	 * frames are in flight: then it answers with a challenge ACK, and that
	 * ACK, finding no flow, gets a RST at the exact sequence number) */
	if (rst_ns && (c->flags & RN_TCP_F_SYNACK))
		rn_tcp_rst_key(w, &c->f.key, c->snd_max, c->rcv_nxt, 1);
	else if (rst_ns)
		rn_tcp_rst_key(w, &c->f.key, 0, c->rcv_nxt, 1);
	if (rst_host && c->f.fd >= 0) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(c->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		rn_ctr_add(w->ctr, RN_WCTR_tcp_host_resets, 1);
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_closed, 1);
	rn_worker_flow_close(w, &c->f);
}

/**
 * rn_tcp_time_wait() - close the host socket, keep the flow to re-ACK a FIN
 * @w:		worker
 * @c:		flow whose both directions are finished
 */
static void rn_tcp_time_wait(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (c->f.fd >= 0) {
		close(c->f.fd);
		c->f.fd = -1;
		c->f.events = 0;
	}
	c->flags |= RN_TCP_F_TIME_WAIT;
	c->flags &= ~(RN_TCP_F_MORE | RN_TCP_F_WANT_OUT);
	c->rto_at = 0;
	c->end_at = w->now + RN_TCP_TIME_WAIT_MS;
	rn_tcp_set_state(c);
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_check_done() - close the flow once both directions are finished
 * @w:		worker
 * @c:		flow
 *
 * Return: true if the flow is gone or in TIME_WAIT
 */
static int rn_tcp_check_done(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if ((c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_ACKED)) !=
	    (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_ACKED))
		return 0;
	if (c->flags & RN_TCP_F_TIME_WAIT)
		return 1;
	/* Unread bytes at close() would make it a reset */
	rn_tcp_discard_upto_una(c);
	if (c->flags & RN_TCP_F_NS_FIN_LAST) {
		/* The namespace's FIN came last: ACK it, linger for a repeat */
		rn_tcp_send_ack(w, c);
		rn_tcp_time_wait(w, c);
		return 1;
	}
	/* Ours came last and is acknowledged: the namespace is in TIME_WAIT */
	rn_tcp_close(w, c, 0, 0);
	return 1;
}

/**
 * rn_tcp_watch() - register the host socket's events for the flow's state
 * @w:		worker
 * @c:		flow
 *
 * Edge-triggered: EPOLLIN while host data may still come (it is pushed
 * whenever the namespace's window or the ring allows, not only on events),
 * EPOLLOUT while connecting or while waiting for send buffer space.
 */
static void rn_tcp_watch(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t ev = EPOLLET;

	if (c->f.fd < 0)
		return;
	if (c->flags & RN_TCP_F_CONNECTING) {
		ev |= EPOLLOUT;
	} else if (c->flags & RN_TCP_F_ESTABLISHED) {
		if (!(c->flags & RN_TCP_F_HOST_EOF))
			ev |= EPOLLIN | EPOLLRDHUP;
		if ((c->flags & RN_TCP_F_WANT_OUT) && !(c->flags & RN_TCP_F_NS_FIN))
			ev |= EPOLLOUT;
	}
	if (rn_worker_flow_watch(w, &c->f, ev))
		rn_tcp_close(w, c, 1, 1);
}

/**
 * rn_tcp_arm() - set the flow's timer to its nearest deadline
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_arm(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int64_t t = c->rto_at;

	if (c->tlp_at && (!t || c->tlp_at < t))
		t = c->tlp_at;
	if (c->end_at && (!t || c->end_at < t))
		t = c->end_at;
	rn_worker_flow_timer(w, &c->f, t);
}

/**
 * rn_tcp_end_deadline() - (re)compute the idle or FIN timeout deadline
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_end_deadline(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (c->flags & RN_TCP_F_TIME_WAIT)
		return;
	if (c->closing)
		c->end_at = c->closing + w->p.tcp_fin_timeout_ms;
	else
		c->end_at = c->f.last + w->p.tcp_idle_timeout_ms;
}

/**
 * rn_tcp_rto_start() - start the retransmission timer unless it runs
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_rto_start(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if (!c->rto_at) {
		c->rto_at = w->now + c->rto;
		rn_tcp_arm(w, c);
	}
}

/**
 * rn_tcp_tlp_arm() - schedule a tail loss probe while data is in flight
 * @w:		worker
 * @c:		flow
 *
 * PTO = 2 SRTT, at least RN_TCP_PTO_MIN, plus the peer's delayed ACK time
 * when a single frame is in flight (RFC 8985, 7.2); none in recovery, none
 * while a probe awaits its ACK, and none that would come after the RTO.
 */
static void rn_tcp_tlp_arm(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t pto = c->srtt >> 2;

	c->tlp_at = 0;
	if (c->snd_una == c->snd_max || (c->flags & (RN_TCP_F_RECOVERY | RN_TCP_F_TLP_OUT)))
		return;
	if (pto < RN_TCP_PTO_MIN)
		pto = RN_TCP_PTO_MIN;
	if (c->snd_max - c->snd_una <= c->mss * 2u || c->snd_max - c->snd_una <= 65536u)
		pto += RN_TCP_DELACK;
	if (pto < c->rto)
		c->tlp_at = w->now + pto;
}

/**
 * rn_tcp_rtt_sample() - RFC 6298 estimator update
 * @c:		flow
 * @rtt:	measured round trip, ms
 */
static void rn_tcp_rtt_sample(struct rn_tcp_flow *c, uint32_t rtt)
{
	int32_t delta;

	if (!c->srtt) {
		c->srtt = rtt << 3;
		c->rttvar = rtt << 1;
	} else {
		delta = (int32_t)rtt - (int32_t)(c->srtt >> 3);
		c->srtt = (uint32_t)((int32_t)c->srtt + delta);
		if (delta < 0)
			delta = -delta;
		c->rttvar = (uint32_t)((int32_t)c->rttvar + delta - (int32_t)(c->rttvar >> 2));
	}
	c->rto = (c->srtt >> 3) + c->rttvar;
	if (c->rto < RN_TCP_RTO_MIN)
		c->rto = RN_TCP_RTO_MIN;
	if (c->rto > RN_TCP_RTO_MAX)
		c->rto = RN_TCP_RTO_MAX;
}

/**
 * rn_tcp_peek() - copy host data at an offset from snd_una without consuming it
 * @c:		flow
 * @off:	offset from the head of the socket's receive queue (= snd_una)
 * @buf:	destination (ring memory)
 * @len:	bytes wanted
 *
 * Return: bytes copied, 0 at EOF, or negative errno (-EAGAIN: nothing there)
 */
static ssize_t rn_tcp_peek(struct rn_tcp_flow *c, uint32_t off, uint8_t *buf, uint32_t len)
{
	struct iovec iov[2];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	int v = (int)off;
	ssize_t n;

	if (!(c->flags & RN_TCP_F_NO_PEEKOFF)) {
		if (c->peek_off != off) {
			if (setsockopt(c->f.fd, SOL_SOCKET, SO_PEEK_OFF, &v, sizeof(v)))
				return -errno;
			c->peek_off = off;
		}
		n = recv(c->f.fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0)
			return -errno;
		c->peek_off += (uint32_t)n;
		return n;
	}
	if (off > RN_TCP_DISCARD)
		return -EAGAIN;
	iov[0].iov_base = rn_tcp_discard;
	iov[0].iov_len = off;
	iov[1].iov_base = buf;
	iov[1].iov_len = len;
	n = recvmsg(c->f.fd, &mh, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 0;
	if ((size_t)n <= off)
		return -EAGAIN;
	return n - (ssize_t)off;
}

/**
 * rn_tcp_discard_acked() - drop bytes the namespace acknowledged from the socket
 * @c:		flow
 * @n:		bytes
 *
 * Return: 0, or negative errno from recv()
 */
static int rn_tcp_discard_acked(struct rn_tcp_flow *c, uint32_t n)
{
	ssize_t got;

	while (n) {
		got = recv(c->f.fd, NULL, n, MSG_TRUNC | MSG_DONTWAIT);
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EPIPE;
		n -= (uint32_t)got;
		/* The kernel moves SO_PEEK_OFF back by what was consumed */
		c->peek_off = c->peek_off > (uint32_t)got ? c->peek_off - (uint32_t)got : 0;
	}
	return 0;
}

/**
 * rn_tcp_discard_upto_una() - drop what the namespace acknowledged from the socket
 * @c:		flow
 *
 * Once per batch rather than per ACK: one recv(MSG_TRUNC) for all of them.
 *
 * Return: 0, or negative errno from recv()
 */
static int rn_tcp_discard_upto_una(struct rn_tcp_flow *c)
{
	uint32_t target = c->flags & RN_TCP_F_FIN_ACKED ? c->fin_seq : c->snd_una;
	int rc;

	if (c->f.fd < 0 || !rn_seq_lt(c->q_head, target))
		return 0;
	rc = rn_tcp_discard_acked(c, target - c->q_head);
	if (!rc)
		c->q_head = target;
	return rc;
}

/**
 * rn_tcp_send_fin() - send our FIN at fin_seq
 * @w:		worker
 * @c:		flow with RN_TCP_F_HOST_EOF, snd_nxt == fin_seq
 *
 * Return: 0, -EAGAIN if to_ns is full, or a fatal negative errno
 */
static int rn_tcp_send_fin(struct rn_worker *w, struct rn_tcp_flow *c)
{
	int rc = rn_tcp_send_ctl(w, c, RN_TCP_FIN | RN_TCP_ACK, c->fin_seq);

	if (rc)
		return rc;
	c->flags &= ~RN_TCP_F_ACK_DUE;
	if (c->flags & RN_TCP_F_FIN_SENT)
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
	c->flags |= RN_TCP_F_FIN_SENT;
	if (!c->closing)
		c->closing = w->now;
	c->snd_nxt = c->fin_seq + 1;
	if (rn_seq_lt(c->snd_max, c->snd_nxt))
		c->snd_max = c->snd_nxt;
	rn_tcp_set_state(c);
	rn_tcp_rto_start(w, c);
	return 0;
}

/**
 * rn_tcp_frame_len() - payload bytes one frame carries when @len bytes may go
 * @c:		flow
 * @len:	bytes the window and the budget allow
 *
 * Return: @len capped to a 64 KiB frame and, above one segment, cut down to
 *	   whole segments of the namespace's MSS
 */
static uint32_t rn_tcp_frame_len(const struct rn_tcp_flow *c, uint32_t len)
{
	if (len > rn_tcp_max_payload(&c->f.key))
		len = rn_tcp_max_payload(&c->f.key);
	if (len > c->mss)
		len -= len % c->mss;
	return len;
}

/**
 * rn_tcp_send_data() - send one frame of host data at snd_nxt
 * @w:		worker
 * @c:		flow
 * @len:	most payload bytes to send (cut to one frame, rn_tcp_frame_len())
 *
 * Return: payload bytes sent, 0 at host EOF (RN_TCP_F_HOST_EOF is set),
 *	   -EAGAIN if nothing could be sent (no data, or no room: then the flow
 *	   waits for room), or another negative errno (host socket error, or
 *	   fatal ring error with w->err set)
 */
static ssize_t rn_tcp_send_data(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t len)
{
	uint32_t l3 = rn_tcp_l3len(&c->f.key), hdr = l3 + RN_TCP_HDR, end;
	uint8_t *pkt;
	ssize_t n;
	int err;

	len = rn_tcp_frame_len(c, len);
	pkt = rn_worker_tx_reserve(w, hdr + len, &err);
	if (!pkt) {
		if (err)
			return err;
		rn_worker_wait_room(w, &c->f);
		return -EAGAIN;
	}
	n = rn_tcp_peek(c, c->snd_nxt - c->q_head, pkt + hdr, len);
	if (n == 0) {
		c->flags |= RN_TCP_F_HOST_EOF;
		c->fin_seq = c->snd_nxt;
		if (!c->closing)
			c->closing = w->now;
		return 0;
	}
	if (n < 0)
		return n;
	c->flags &= ~(RN_TCP_F_ACK_DUE | RN_TCP_F_ACK_MAYBE);
	c->last_ack = c->rcv_nxt;
	c->last_wnd = rn_tcp_wnd_field(c);
	rn_tcp_headers(pkt, &c->f.key, c->ip_id++, c->snd_nxt, c->rcv_nxt,
		       RN_TCP_ACK | RN_TCP_PSH, c->last_wnd, NULL, 0, (uint32_t)n, c->mss);
	rn_worker_tx_commit(w, hdr + (uint32_t)n);

	end = c->snd_nxt + (uint32_t)n;
	if (rn_seq_lt(c->snd_max, end)) {
		uint32_t fresh = end - c->snd_max;

		if (fresh < (uint32_t)n)
			rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
		c->f.bytes_down += fresh;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_bytes_down, fresh);
		c->snd_max = end;
		if (!(c->flags & RN_TCP_F_RTT)) {
			c->flags |= RN_TCP_F_RTT;
			c->rtt_seq = c->snd_nxt;
			c->rtt_ts = w->now;
		}
	} else {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
	}
	c->snd_nxt = end;
	rn_tcp_rto_start(w, c);
	if (!c->tlp_at) {
		rn_tcp_tlp_arm(w, c);
		rn_tcp_arm(w, c);
	}
	return n;
}

/**
 * rn_tcp_host_error() - the host socket failed: reset the namespace side
 * @w:		worker
 * @c:		flow
 * @err:	negative errno
 */
static void rn_tcp_host_error(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	if (w->err)
		return;
	(void)err;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_host_errors, 1);
	rn_tcp_close(w, c, 1, 0);
}

/**
 * rn_tcp_push() - send host data (and our FIN) as far as window and ring allow
 * @w:		worker
 * @c:		flow
 *
 * Sends at most RN_TCP_BUDGET bytes, then asks to be called again at the end
 * of the loop pass (RN_TCP_F_MORE), so that busy flows take turns.
 */
static void rn_tcp_push(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t budget = RN_TCP_BUDGET, wnd_end, avail, len;
	ssize_t n;

	if (!(c->flags & RN_TCP_F_ESTABLISHED) || (c->flags & RN_TCP_F_TIME_WAIT) ||
	    (c->f.flags & RN_FLOW_F_ROOM_WAIT))
		return;
	c->flags &= ~RN_TCP_F_MORE;
	for (;;) {
		if (c->flags & RN_TCP_F_HOST_EOF) {
			if (c->snd_nxt == c->fin_seq) {
				n = rn_tcp_send_fin(w, c);
				if (n == -EAGAIN)
					rn_worker_wait_room(w, &c->f);
				return;
			}
			if (!rn_seq_lt(c->snd_nxt, c->fin_seq))
				return;
		}
		wnd_end = c->snd_una + c->snd_wnd;
		avail = rn_seq_lt(c->snd_nxt, wnd_end) ? wnd_end - c->snd_nxt : 0;
		if ((c->flags & RN_TCP_F_NO_PEEKOFF) &&
		    avail > RN_TCP_DISCARD - (c->snd_nxt - c->q_head))
			avail = RN_TCP_DISCARD - (c->snd_nxt - c->q_head);
		if (c->flags & RN_TCP_F_HOST_EOF && avail > c->fin_seq - c->snd_nxt)
			avail = c->fin_seq - c->snd_nxt;
		if (!avail) {
			/* Closed window, nothing in flight: probe it */
			if (!c->snd_wnd && c->snd_una == c->snd_max)
				rn_tcp_rto_start(w, c);
			return;
		}
		if (!budget) {
			c->flags |= RN_TCP_F_MORE;
			rn_worker_defer(w, &c->f);
			return;
		}
		/* One frame's worth: a shorter peek than that means drained (below) */
		len = rn_tcp_frame_len(c, avail < budget ? avail : budget);
		n = rn_tcp_send_data(w, c, len);
		if (n == -EAGAIN || w->err)
			return;
		if (n < 0) {
			rn_tcp_host_error(w, c, (int)n);
			return;
		}
		if (n == 0) {
			rn_tcp_watch(w, c);
			continue;
		}
		budget = (uint32_t)n < budget ? budget - (uint32_t)n : 0;
		/* Drained for now: new data raises EPOLLIN again, and an EOF
		 * behind it is found by the push that the namespace's ACK of
		 * this data brings */
		if ((uint32_t)n < len)
			return;
	}
}

/**
 * rn_tcp_retransmit_head() - resend the first unacknowledged frame's worth
 * @w:		worker
 * @c:		flow
 *
 * Used by fast retransmit and for each partial ACK in recovery: one
 * super-frame from snd_una, or only the gap up to the first block the
 * namespace's SACK reported, or the FIN if only that is outstanding; then
 * snd_nxt goes back to where it was.
 */
static void rn_tcp_retransmit_head(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t saved = c->snd_nxt, len;
	ssize_t n;

	if (c->flags & RN_TCP_F_HOST_EOF && c->snd_una == c->fin_seq) {
		if (!rn_tcp_send_fin(w, c))
			c->snd_nxt = saved;
		return;
	}
	len = (c->flags & RN_TCP_F_HOST_EOF ? c->fin_seq : c->snd_max) - c->snd_una;
	if (c->hole_end && rn_seq_lt(c->snd_una, c->hole_end) &&
	    c->hole_end - c->snd_una < len)
		len = c->hole_end - c->snd_una;	/* just the gap SACK reported */
	if (!len || rn_seq_lt(c->snd_nxt, c->snd_una + 1))
		return;
	c->snd_nxt = c->snd_una;
	n = rn_tcp_send_data(w, c, len);
	if (n > 0 && rn_seq_lt(c->snd_nxt, saved))
		c->snd_nxt = saved;
	else if (n <= 0)
		c->snd_nxt = saved;
	if (n < 0 && n != -EAGAIN && !w->err)
		rn_tcp_host_error(w, c, (int)n);
}

/**
 * rn_tcp_probe_tail() - tail loss probe: resend the last frame in flight
 * @w:		worker
 * @c:		flow with data in flight, not in recovery
 *
 * Its acknowledgement (with SACK, or as a duplicate) reveals a loss that no
 * later frame would have, so fast retransmit repairs it instead of the RTO.
 * Only our FIN in flight: the FIN again.
 */
static void rn_tcp_probe_tail(struct rn_worker *w, struct rn_tcp_flow *c)
{
	uint32_t saved = c->snd_nxt, end, frame, start;
	ssize_t n;

	end = c->flags & RN_TCP_F_HOST_EOF ? c->fin_seq : c->snd_max;
	if (!rn_seq_lt(c->snd_una, end)) {
		if (c->flags & RN_TCP_F_FIN_SENT && !rn_tcp_send_fin(w, c))
			c->snd_nxt = saved;
		return;
	}
	frame = rn_tcp_max_payload(&c->f.key);
	if (frame > c->mss)
		frame -= frame % c->mss;
	start = end - c->snd_una > frame ? end - frame : c->snd_una;
	c->snd_nxt = start;
	n = rn_tcp_send_data(w, c, end - start);
	c->snd_nxt = saved;
	if (n < 0 && n != -EAGAIN && !w->err)
		rn_tcp_host_error(w, c, (int)n);
}

/**
 * rn_tcp_established() - the namespace acknowledged our SYN-ACK
 * @w:		worker
 * @c:		flow
 */
static void rn_tcp_established(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->flags |= RN_TCP_F_ESTABLISHED;
	c->snd_una = c->iss + 1;
	c->q_head = c->snd_una;
	c->retries = 0;
	c->rto_at = 0;
	if (c->flags & RN_TCP_F_RTT) {
		rn_tcp_rtt_sample(c, (uint32_t)(w->now - c->rtt_ts));
		c->flags &= ~RN_TCP_F_RTT;
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_established, 1);
	rn_tcp_set_state(c);
	rn_tcp_watch(w, c);
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_ack_in() - process the ACK field and window of an acceptable segment
 * @w:		worker
 * @c:		established flow
 * @s:		segment
 *
 * Return: 0, or the drop counter for an unacceptable ACK (answered)
 */
static int rn_tcp_ack_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s)
{
	uint32_t ack = s->ack, wnd = (uint32_t)s->wnd << c->ns_ws;
	int wnd_changed = wnd != c->snd_wnd;

	if (rn_seq_lt(c->snd_max, ack)) {
		rn_tcp_ack_later(w, c);
		return RN_WCTR_drop_tcp_ack;
	}
	/* Where the first gap ends, if SACK says (used to size a resend) */
	c->hole_end = rn_tcp_sack_above(s, ack, c->snd_max);
	if (c->hole_end == ack)
		c->hole_end = 0;
	if (rn_seq_lt(ack, c->snd_una - (65535u << c->ns_ws))) {
		rn_tcp_ack_later(w, c);
		rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
		return RN_WCTR_drop_tcp_ack;
	}

	/* Window update, from the newest segment only (RFC 793 SND.WL1/WL2) */
	if (rn_seq_lt(c->snd_wl1, s->seq) ||
	    (c->snd_wl1 == s->seq && rn_seq_le(c->snd_wl2, ack))) {
		c->snd_wnd = wnd;
		c->snd_wl1 = s->seq;
		c->snd_wl2 = ack;
	} else {
		wnd_changed = 0;
	}

	if (rn_seq_lt(c->snd_una, ack)) {
		/* The bytes leave the host socket at the end of the batch */
		if ((c->flags & RN_TCP_F_FIN_SENT) && ack == c->fin_seq + 1)
			c->flags |= RN_TCP_F_FIN_ACKED;
		c->snd_una = ack;
		c->flags &= ~RN_TCP_F_TLP_OUT;
		if (rn_seq_lt(c->snd_nxt, ack))
			c->snd_nxt = ack;
		c->dup_acks = 0;
		c->retries = 0;
		if ((c->flags & RN_TCP_F_RTT) && rn_seq_lt(c->rtt_seq, ack)) {
			rn_tcp_rtt_sample(c, (uint32_t)(w->now - c->rtt_ts));
			c->flags &= ~RN_TCP_F_RTT;
		}
		c->rto_at = c->snd_una == c->snd_max ? 0 : w->now + c->rto;
		rn_tcp_tlp_arm(w, c);
		if (c->flags & RN_TCP_F_RECOVERY) {
			if (rn_seq_lt(ack, c->recover))
				rn_tcp_retransmit_head(w, c);
			else
				c->flags &= ~RN_TCP_F_RECOVERY;
		}
		rn_tcp_arm(w, c);
		c->flags |= RN_TCP_F_MORE;
	} else if (ack == c->snd_una && !s->len && !(s->flags & RN_TCP_FIN) &&
		   (!wnd_changed || c->hole_end) && c->snd_una != c->snd_max) {
		/* With SACK the window may shrink as the namespace queues data
		 * out of order: blocks above snd_una make it a duplicate anyway.
		 * With fewer than four frames in flight, three duplicates never
		 * come: early retransmit (RFC 5827) after as many as can. */
		uint32_t frame = rn_tcp_max_payload(&c->f.key) - rn_tcp_max_payload(&c->f.key) %
				 c->mss, flight = (c->snd_max - c->snd_una + frame - 1) / frame;
		uint32_t thresh = flight < 4 ? (flight > 1 ? flight - 1 : 1) : RN_TCP_DUPACKS;

		if (!c->hole_end && flight < 4)
			thresh = RN_TCP_DUPACKS;	/* no evidence beyond the window rule */
		if (++c->dup_acks >= thresh && !(c->flags & RN_TCP_F_RECOVERY)) {
			c->flags |= RN_TCP_F_RECOVERY;
			c->tlp_at = 0;
			c->recover = c->snd_max;
			c->flags &= ~RN_TCP_F_RTT;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_fast_retransmits, 1);
			rn_tcp_retransmit_head(w, c);
		}
	} else if (wnd_changed) {
		c->flags |= RN_TCP_F_MORE;
	}
	return 0;
}

/**
 * rn_tcp_ns_fin() - pass the namespace's FIN on: shutdown(SHUT_WR)
 * @w:		worker
 * @c:		flow whose data before the FIN all went to the host socket
 */
static void rn_tcp_ns_fin(struct rn_worker *w, struct rn_tcp_flow *c)
{
	c->rcv_nxt++;
	c->flags |= RN_TCP_F_NS_FIN;
	if (c->flags & RN_TCP_F_FIN_ACKED)
		c->flags |= RN_TCP_F_NS_FIN_LAST;
	c->flags &= ~(RN_TCP_F_WANT_OUT | RN_TCP_F_SHORT | RN_TCP_F_FIN_PEND);
	if (!c->closing)
		c->closing = w->now;
	shutdown(c->f.fd, SHUT_WR);
	rn_tcp_set_state(c);
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
	rn_tcp_ack_later(w, c);
}

/**
 * rn_tcp_to_host() - send namespace bytes to the host socket
 * @w:		worker
 * @c:		flow
 * @data:	bytes that follow rcv_nxt
 * @len:	their length
 *
 * rcv_nxt advances by what the socket took.
 *
 * Return: bytes taken, or negative errno for a host socket error
 */
static ssize_t rn_tcp_to_host(struct rn_worker *w, struct rn_tcp_flow *c, const uint8_t *data,
			      uint32_t len)
{
	ssize_t n = send(c->f.fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);

	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
			return -errno;
		n = 0;
	}
	c->rcv_nxt += (uint32_t)n;
	c->f.bytes_up += (uint64_t)n;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_bytes_up, (uint64_t)n);
	return n;
}

/**
 * rn_tcp_hold_grow() - grow a flow's hold buffer to at least @need bytes
 * @c:		flow
 * @buf:	the buffer (may be NULL), updated
 * @cap:	its capacity, updated
 * @need:	bytes it must hold
 *
 * Capacity doubles from 64 KiB, within RN_TCP_HOLD_FLOW for all of the
 * flow's buffers together and RN_TCP_HOLD_WORKER for all flows of this
 * worker process.
 *
 * Return: 0, or -ENOMEM when a limit (or malloc) says no
 */
static int rn_tcp_hold_grow(struct rn_tcp_flow *c, uint8_t **buf, uint32_t *cap, uint32_t need)
{
	uint32_t ncap = *cap ? *cap : 65536u;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	while (ncap < need && ncap < RN_TCP_HOLD_FLOW)
		ncap *= 2;
	if (ncap > RN_TCP_HOLD_FLOW)
		ncap = RN_TCP_HOLD_FLOW;
	if (ncap < need || c->held - *cap + ncap > RN_TCP_HOLD_FLOW ||
	    rn_tcp_held - *cap + ncap > RN_TCP_HOLD_WORKER)
		return -ENOMEM;
	p = realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	rn_tcp_held += ncap - *cap;
	c->held += ncap - *cap;
	*buf = p;
	*cap = ncap;
	return 0;
}

/**
 * rn_tcp_hold_free() - free one of a flow's hold buffers
 * @c:		flow
 * @buf:	the buffer, set to NULL
 * @cap:	its capacity, set to 0
 */
static void rn_tcp_hold_free(struct rn_tcp_flow *c, uint8_t **buf, uint32_t *cap)
{
	free(*buf);
	rn_tcp_held -= *cap;
	c->held -= *cap;
	*buf = NULL;
	*cap = 0;
}

/**
 * rn_tcp_ovf_drain() - send buffered namespace bytes to the host socket
 * @w:		worker
 * @c:		flow
 *
 * Frees the buffer once empty, and then passes on a FIN that waited for it.
 *
 * Return: 0, or negative errno for a host socket error
 */
static int rn_tcp_ovf_drain(struct rn_worker *w, struct rn_tcp_flow *c)
{
	ssize_t n;

	if (!c->ovf_len)
		return 0;
	n = rn_tcp_to_host(w, c, c->ovf + c->ovf_off, c->ovf_len);
	if (n < 0)
		return (int)n;
	c->ovf_off += (uint32_t)n;
	c->ovf_len -= (uint32_t)n;
	if (n)
		rn_tcp_update_later(w, c);
	if (c->ovf_len) {
		c->flags |= RN_TCP_F_WANT_OUT;
		return 0;
	}
	rn_tcp_hold_free(c, &c->ovf, &c->ovf_cap);
	c->ovf_off = 0;
	if (c->flags & RN_TCP_F_FIN_PEND)
		rn_tcp_ns_fin(w, c);
	return 0;
}

/**
 * rn_tcp_take() - pass in-order bytes to the host socket, or buffer them
 * @w:		worker
 * @c:		flow
 * @data:	bytes that follow rcv_nxt + ovf_len
 * @len:	their length
 *
 * What the socket does not take goes to the flow's overflow buffer, not
 * acknowledged until the socket takes it (EPOLLOUT); only what the hold
 * limits do not let in is refused (RN_TCP_F_SHORT: the namespace must send
 * it again).
 *
 * Return: bytes refused, or negative errno for a host socket error
 */
static ssize_t rn_tcp_take(struct rn_worker *w, struct rn_tcp_flow *c, const uint8_t *data,
			   uint32_t len)
{
	uint32_t take;
	ssize_t n;
	int rc;

	rc = rn_tcp_ovf_drain(w, c);
	if (rc)
		return rc;
	if (!c->ovf_len) {
		n = rn_tcp_to_host(w, c, data, len);
		if (n < 0)
			return n;
		data += n;
		len -= (uint32_t)n;
	}
	if (len) {
		if (c->ovf_off && c->ovf_off + c->ovf_len + len > c->ovf_cap) {
			memmove(c->ovf, c->ovf + c->ovf_off, c->ovf_len);
			c->ovf_off = 0;
		}
		take = len;
		while (take && rn_tcp_hold_grow(c, &c->ovf, &c->ovf_cap,
						c->ovf_off + c->ovf_len + take))
			take = take > 65536u ? take - 65536u : 0;
		memcpy(c->ovf + c->ovf_off + c->ovf_len, data, take);
		c->ovf_len += take;
		len -= take;
		c->flags |= RN_TCP_F_WANT_OUT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_buffered, take);
	}
	if (len) {
		c->flags |= RN_TCP_F_SHORT | RN_TCP_F_WANT_OUT;
		rn_ctr_add(w->ctr, RN_WCTR_tcp_short_sends, 1);
	}
	/* The window is recomputed once, when the ACK goes out */
	rn_tcp_update_later(w, c);
	return len;
}

/**
 * rn_tcp_ooo_drop() - forget out-of-order block @i
 * @c:		flow
 * @i:		block index
 */
static void rn_tcp_ooo_drop(struct rn_tcp_flow *c, unsigned int i)
{
	rn_tcp_hold_free(c, &c->ooo[i].buf, &c->ooo[i].cap);
	memmove(&c->ooo[i], &c->ooo[i + 1], (c->nooo - i - 1) * sizeof(c->ooo[0]));
	c->nooo--;
	memset(&c->ooo[c->nooo], 0, sizeof(c->ooo[0]));
}

/**
 * rn_tcp_ooo_append() - add bytes at the end of out-of-order block @i
 * @c:		flow
 * @i:		block index
 * @data:	bytes that follow the block
 * @len:	their length
 *
 * Return: 0, or -ENOMEM (nothing added)
 */
static int rn_tcp_ooo_append(struct rn_tcp_flow *c, unsigned int i, const uint8_t *data,
			     uint32_t len)
{
	struct rn_tcp_blk *b = &c->ooo[i];

	if (rn_tcp_hold_grow(c, &b->buf, &b->cap, b->len + len))
		return -ENOMEM;
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return 0;
}

/**
 * rn_tcp_ooo_join() - merge block @i with the blocks it now reaches
 * @c:		flow
 * @i:		block index
 */
static void rn_tcp_ooo_join(struct rn_tcp_flow *c, unsigned int i)
{
	struct rn_tcp_blk *b = &c->ooo[i], *n;
	uint32_t end, nend;

	while (i + 1 < c->nooo) {
		n = &c->ooo[i + 1];
		end = b->seq + b->len;
		if (rn_seq_lt(end, n->seq))
			return;
		nend = n->seq + n->len;
		/* If the bytes do not fit, the next block is lost: it comes again */
		if (rn_seq_lt(end, nend))
			rn_tcp_ooo_append(c, i, n->buf + (end - n->seq), nend - end);
		rn_tcp_ooo_drop(c, i + 1);
	}
}

/**
 * rn_tcp_ooo_add() - keep a segment that arrived after a gap
 * @w:		worker
 * @c:		flow
 * @seq:	its sequence number, after rcv_nxt + ovf_len
 * @data:	payload
 * @len:	payload length
 *
 * Up to RN_TCP_OOO_BLOCKS disjoint blocks, in sequence order, are kept in
 * hold buffers; a segment extends or repeats a block, joins two, or starts
 * a new one. What the limits do not let in is dropped (the namespace sends
 * it again).
 *
 * Return: true if the segment's bytes are now held
 */
static int rn_tcp_ooo_add(struct rn_worker *w, struct rn_tcp_flow *c, uint32_t seq,
			  const uint8_t *data, uint32_t len)
{
	uint32_t end = seq + len, bend;
	unsigned int i;

	for (i = 0; i < c->nooo; i++) {
		if (rn_seq_le(seq, c->ooo[i].seq + c->ooo[i].len))
			break;
	}
	if (i < c->nooo && rn_seq_le(c->ooo[i].seq, seq)) {
		/* Starts inside block i or right at its end */
		bend = c->ooo[i].seq + c->ooo[i].len;
		if (rn_seq_lt(bend, end)) {
			if (rn_tcp_ooo_append(c, i, data + (bend - seq), end - bend))
				return 0;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_ooo_held, end - bend);
			rn_tcp_ooo_join(c, i);
		}
		c->sack_first = c->ooo[i].seq;
		return 1;
	}
	if (c->nooo == RN_TCP_OOO_BLOCKS)
		return 0;
	memmove(&c->ooo[i + 1], &c->ooo[i], (c->nooo - i) * sizeof(c->ooo[0]));
	memset(&c->ooo[i], 0, sizeof(c->ooo[0]));
	c->nooo++;
	c->ooo[i].seq = seq;
	if (rn_tcp_ooo_append(c, i, data, len)) {
		rn_tcp_ooo_drop(c, i);
		return 0;
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_ooo_held, len);
	rn_tcp_ooo_join(c, i);
	c->sack_first = c->ooo[i].seq;
	return 1;
}

/**
 * rn_tcp_ooo_free() - forget every out-of-order block
 * @c:		flow
 */
static void rn_tcp_ooo_free(struct rn_tcp_flow *c)
{
	while (c->nooo)
		rn_tcp_ooo_drop(c, c->nooo - 1);
}

/**
 * rn_tcp_ooo_merge() - take out-of-order blocks that the in-order data reached
 * @w:		worker
 * @c:		flow
 *
 * A block's buffer becomes the overflow buffer when the host socket cannot
 * take it all and nothing else is buffered, so that nothing is copied twice.
 *
 * Return: 0, or negative errno for a host socket error
 */
static int rn_tcp_ooo_merge(struct rn_worker *w, struct rn_tcp_flow *c)
{
	struct rn_tcp_blk *b;
	uint32_t tail, skip;
	ssize_t n;

	while (c->nooo) {
		b = &c->ooo[0];
		tail = c->rcv_nxt + c->ovf_len;
		if (rn_seq_lt(tail, b->seq))
			return 0;
		skip = tail - b->seq;
		if (skip >= b->len) {
			rn_tcp_ooo_drop(c, 0);
			continue;
		}
		if (c->ovf_len) {
			n = rn_tcp_take(w, c, b->buf + skip, b->len - skip);
			rn_tcp_ooo_drop(c, 0);
			if (n < 0)
				return (int)n;
			continue;
		}
		n = rn_tcp_to_host(w, c, b->buf + skip, b->len - skip);
		if (n < 0)
			return (int)n;
		rn_tcp_update_later(w, c);
		if ((uint32_t)n < b->len - skip) {
			rn_tcp_hold_free(c, &c->ovf, &c->ovf_cap);
			c->ovf = b->buf;
			c->ovf_cap = b->cap;
			c->ovf_off = skip + (uint32_t)n;
			c->ovf_len = b->len - c->ovf_off;
			c->flags |= RN_TCP_F_WANT_OUT;
			b->buf = NULL;
			b->cap = 0;
		}
		rn_tcp_ooo_drop(c, 0);
	}
	return 0;
}

/**
 * rn_tcp_sack_opts() - SACK option for the blocks we hold (RFC 2018)
 * @c:		flow
 * @opts:	where the option goes (up to 36 bytes)
 *
 * The block that received the latest segment comes first, the others
 * follow in sequence order.
 *
 * Return: option length, a multiple of 4 (0 without SACK or blocks)
 */
static uint32_t rn_tcp_sack_opts(const struct rn_tcp_flow *c, uint8_t *opts)
{
	uint32_t len = 4, i, first = c->nooo;

	if (!(c->flags & RN_TCP_F_SACK) || !c->nooo)
		return 0;
	for (i = 0; i < c->nooo; i++) {
		if (c->ooo[i].seq == c->sack_first)
			first = i;
	}
	opts[0] = opts[1] = 1;
	opts[2] = 5;
	if (first < c->nooo) {
		rn_put_be32(opts + len, c->ooo[first].seq);
		rn_put_be32(opts + len + 4, c->ooo[first].seq + c->ooo[first].len);
		len += 8;
	}
	for (i = 0; i < c->nooo; i++) {
		if (i == first)
			continue;
		rn_put_be32(opts + len, c->ooo[i].seq);
		rn_put_be32(opts + len + 4, c->ooo[i].seq + c->ooo[i].len);
		len += 8;
	}
	opts[3] = (uint8_t)(len - 2);
	return len;
}

/**
 * rn_tcp_data_in() - pass in-order payload and FIN on to the host socket
 * @w:		worker
 * @c:		established flow
 * @s:		segment, trimmed to start at rcv_nxt + ovf_len
 * @fin_end:	sequence number right after the segment's payload (where its
 *		FIN sits, if it has one)
 *
 * Return: the outcome counter
 */
static int rn_tcp_data_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s,
			  uint32_t fin_end)
{
	ssize_t left = 0;

	if (s->len) {
		left = rn_tcp_take(w, c, s->data, s->len);
		if (!left && rn_tcp_ooo_merge(w, c))
			left = -EPIPE;
		if (left < 0) {
			rn_tcp_host_error(w, c, (int)left);
			return RN_WCTR_tcp_segments_in;
		}
	}
	if ((s->flags & RN_TCP_FIN) && !left && !(c->flags & RN_TCP_F_NS_FIN) &&
	    c->rcv_nxt + c->ovf_len == fin_end) {
		if (c->ovf_len)
			c->flags |= RN_TCP_F_FIN_PEND;
		else
			rn_tcp_ns_fin(w, c);
	}
	if (c->flags & RN_TCP_F_WANT_OUT)
		rn_tcp_watch(w, c);
	return RN_WCTR_tcp_segments_in;
}

/**
 * rn_tcp_parse_sack() - note the left edges of a SACK option's blocks
 * @s:		segment being parsed
 * @blk:	the blocks (8 bytes each, inside the validated header)
 * @n:		their number
 */
static void rn_tcp_parse_sack(struct rn_tcp_seg *s, const uint8_t *blk, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n && s->nsack < 4; i++)
		s->sack_left[s->nsack++] = rn_be32(blk + 8 * i);
}

/**
 * rn_tcp_sack_above() - the lowest SACK left edge above an ACK number
 * @s:		segment
 * @ack:	its acknowledgement number
 * @max:	highest sequence number we sent, plus one
 *
 * Blocks at or below @ack (D-SACK, RFC 2883: duplicates received) say
 * nothing about a gap and are ignored.
 *
 * Return: the left edge where the first gap after @ack ends, or @ack if none
 */
static uint32_t rn_tcp_sack_above(const struct rn_tcp_seg *s, uint32_t ack, uint32_t max)
{
	uint32_t i, lo = ack;

	for (i = 0; i < s->nsack; i++) {
		uint32_t l = s->sack_left[i];

		if (rn_seq_lt(ack, l) && rn_seq_le(l, max) && (lo == ack || rn_seq_lt(l, lo)))
			lo = l;
	}
	return lo;
}

/**
 * rn_tcp_parse() - check a segment's header and parse it
 * @w:		worker
 * @f:		validated frame carrying TCP
 * @s:		filled on success
 *
 * Return: 0, or the drop counter
 */
static int rn_tcp_parse(struct rn_worker *w, struct rn_frame *f, struct rn_tcp_seg *s)
{
	const uint8_t *h, *o;
	uint32_t off, sum;

	memset(s, 0, sizeof(*s));
	s->ws = 0xff;
	if (f->l4len < RN_TCP_HDR || !(h = rn_pkt_get(&f->l4, 0, RN_TCP_HDR)))
		return RN_WCTR_drop_tcp_header;
	s->hlen = (h[12] >> 4) * 4u;
	if (s->hlen < RN_TCP_HDR || s->hlen > f->l4len)
		return RN_WCTR_drop_tcp_header;
	if (rn_worker_pull(w, f, s->hlen) < s->hlen || !(h = rn_pkt_get(&f->l4, 0, s->hlen)))
		return RN_WCTR_drop_tcp_header;

	s->seq = rn_be32(h + 4);
	s->ack = rn_be32(h + 8);
	s->flags = h[13] & 0x3f;
	s->wnd = rn_be16(h + 14);
	s->len = f->l4len - s->hlen;
	s->data = f->shm + RN_VNET_HDR_LEN + f->l3len + s->hlen;

	if (!rn_be16(h) || !rn_be16(h + 2))
		return RN_WCTR_drop_tcp_port;
	if ((s->flags & RN_TCP_SYN && s->flags & (RN_TCP_FIN | RN_TCP_RST)) ||
	    !(s->flags & (RN_TCP_SYN | RN_TCP_ACK | RN_TCP_RST)))
		return RN_WCTR_drop_tcp_flags;

	for (off = RN_TCP_HDR; off < s->hlen;) {
		o = h + off;
		if (o[0] == 0)
			break;
		if (o[0] == 1) {
			off++;
			continue;
		}
		if (off + 2 > s->hlen || o[1] < 2 || o[1] > s->hlen - off)
			return RN_WCTR_drop_tcp_options;
		if (o[0] == 2 && o[1] == 4)
			s->mss = rn_be16(o + 2);
		else if (o[0] == 3 && o[1] == 3)
			s->ws = o[2] > 14 ? 14 : o[2];
		else if (o[0] == 4 && o[1] == 2)
			s->sack_ok = 1;
		else if (o[0] == 5 && o[1] >= 10 && (o[1] - 2) % 8 == 0)
			rn_tcp_parse_sack(s, o + 2, (o[1] - 2u) / 8u);
		off += o[1];
	}

	if (f->vnet.flags & RN_VNET_F_NEEDS_CSUM) {
		/* The namespace's kernel left the sum to us: do not verify it */
		if (f->vnet.csum_start != f->l3len || f->vnet.csum_offset != 16)
			return RN_WCTR_drop_tcp_csum;
	} else if (!(f->vnet.flags & RN_VNET_F_DATA_VALID)) {
		if (rn_worker_pull(w, f, f->l4len) != f->l4len)
			return RN_WCTR_drop_tcp_header;
		sum = f->family == 4 ?
			rn_csum_pseudo4(f->saddr, f->daddr, RN_IPPROTO_TCP, (uint16_t)f->l4len) :
			rn_csum_pseudo6(f->saddr, f->daddr, RN_IPPROTO_TCP, f->l4len);
		if (rn_csum(f->l4.p, f->l4len, sum))
			return RN_WCTR_drop_tcp_csum;
	}
	return 0;
}

/**
 * rn_tcp_socket() - a host socket for a flow: non-blocking, no Nagle, peek offset
 * @c:		flow (RN_TCP_F_NO_PEEKOFF follows the new socket)
 * @family:	AF_INET or AF_INET6
 *
 * Return: the fd, or negative errno of socket()
 */
static int rn_tcp_socket(struct rn_tcp_flow *c, int family)
{
	int fd, one = 1, zero = 0;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->flags &= ~RN_TCP_F_NO_PEEKOFF;
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)))
		c->flags |= RN_TCP_F_NO_PEEKOFF;
	return fd;
}

/**
 * rn_tcp_dns_deadline() - give a DNS connect RN_DNS_FAILOVER_MS if another upstream is left
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 *
 * Sets @c->rto_at (the caller arms the timer). With no other upstream the
 * kernel's own connect timeout applies, as for any flow.
 */
static void rn_tcp_dns_deadline(struct rn_worker *w, struct rn_tcp_flow *c)
{
	if ((c->flags & RN_TCP_F_DNS) && c->dns_gen == w->dns_gen &&
	    rn_dns_pick(w, c->dns_tried) >= 0)
		c->rto_at = w->now + RN_DNS_FAILOVER_MS;
}

/**
 * rn_tcp_dns_retry() - a DNS flow's connect failed: connect to another upstream
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING, with RN_TCP_F_DNS
 *
 * The failed upstream stops being the current one (dns.c); the flow gets a
 * new socket (of the new upstream's family) and connects to the upstream
 * rn_dns_pick() names, one it did not try yet (dns_resends).
 *
 * Return: 1 if a connect is under way (or the flow was closed meanwhile),
 *	   0 if no upstream is left: the flow is unchanged, the caller refuses it
 */
static int rn_tcp_dns_retry(struct rn_worker *w, struct rn_tcp_flow *c)
{
	struct rn_policy_dest d;
	int next, fd;

	rn_dns_failed(w, c->dns_up, c->dns_gen);
	if (c->dns_gen != w->dns_gen) {
		c->dns_gen = w->dns_gen;
		c->dns_tried = 0;
	}
	for (;;) {
		next = rn_dns_pick(w, c->dns_tried);
		if (next < 0)
			return 0;
		c->dns_tried |= (uint8_t)(1u << next);
		if (rn_policy_dns(&w->p, next, &d))
			continue;
		fd = rn_tcp_socket(c, d.family);
		if (fd < 0)
			return 0;
		rn_worker_flow_watch(w, &c->f, 0);
		close(c->f.fd);
		c->f.fd = fd;
		c->dns_up = (uint8_t)next;
		rn_ctr_add(w->ctr, RN_WCTR_dns_resends, 1);
		rn_ctr_add(w->ctr, RN_WCTR_tcp_connects, 1);
		if (connect(fd, (struct sockaddr *)&d.sa, d.salen) && errno != EINPROGRESS) {
			rn_ctr_add(w->ctr, errno == ECONNREFUSED ? RN_WCTR_tcp_connect_refused :
				   RN_WCTR_tcp_connect_failed, 1);
			rn_dns_failed(w, (uint32_t)next, c->dns_gen);
			continue;
		}
		rn_tcp_watch(w, c);
		if (c->f.flags & RN_FLOW_F_CLOSED)
			return 1;
		c->rto_at = 0;
		rn_tcp_dns_deadline(w, c);
		rn_tcp_arm(w, c);
		return 1;
	}
}

/**
 * rn_tcp_connect_done() - the host connect() finished: SYN-ACK, or refuse
 * @w:		worker
 * @c:		flow in RN_TCP_CONNECTING
 * @err:	0 on success, else the positive errno of the connect
 *
 * A DNS flow whose connect failed connects to another upstream first, if
 * one is left (rn_tcp_dns_retry()); only then is the namespace told.
 */
static void rn_tcp_connect_done(struct rn_worker *w, struct rn_tcp_flow *c, int err)
{
	int rc;

	if (err) {
		rn_ctr_add(w->ctr, err == ECONNREFUSED ? RN_WCTR_tcp_connect_refused :
			   RN_WCTR_tcp_connect_failed, 1);
		if ((c->flags & RN_TCP_F_DNS) && rn_tcp_dns_retry(w, c))
			return;
		if (err == ENETUNREACH || err == EHOSTUNREACH) {
			rn_tcp_icmp_unreach(w, c, err);
		} else {
			rn_tcp_rst_key(w, &c->f.key, 0, c->rcv_nxt, 1);
		}
		rn_ctr_add(w->ctr, RN_WCTR_tcp_closed, 1);
		rn_worker_flow_close(w, &c->f);
		return;
	}
	c->flags &= ~RN_TCP_F_CONNECTING;
	c->flags |= RN_TCP_F_SYNACK;
	rn_tcp_wnd_update(c);
	c->flags &= ~RN_TCP_F_WANT_OUT;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->flags |= RN_TCP_F_RTT;
	c->rtt_seq = c->iss;
	c->rtt_ts = w->now;
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connected, 1);
	rn_tcp_set_state(c);
	rn_tcp_watch(w, c);
	rc = rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
	if (rc && rc != -EAGAIN)
		return;
	/* A SYN-ACK lost to a full ring is sent again by the timer */
	c->rto_at = w->now + c->rto;
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_evict_time_wait() - at the flow cap, end the oldest TIME_WAIT flow
 * @w:		worker
 *
 * A lingering flow holds no socket and must not keep a new connection out.
 * Walks the flows from the oldest: only done at the cap.
 *
 * Return: true if a flow was ended
 */
static int rn_tcp_evict_time_wait(struct rn_worker *w)
{
	struct rn_flow *f;

	for (f = rn_flowtab_first(&w->flows); f; f = rn_flowtab_next(f)) {
		if (f->type == RN_FLOW_TCP && (rn_tcp_of(f)->flags & RN_TCP_F_TIME_WAIT)) {
			rn_tcp_close(w, rn_tcp_of(f), 0, 0);
			return 1;
		}
	}
	return 0;
}

/**
 * rn_tcp_open() - a SYN for a new flow: policy, cap, socket, connect()
 * @w:		worker
 * @k:		flow key
 * @s:		the SYN
 *
 * Return: the outcome counter, or a fatal negative errno
 */
static int rn_tcp_open(struct rn_worker *w, const struct rn_flow_key *k, const struct rn_tcp_seg *s)
{
	struct rn_policy_dest d;
	struct rn_tcp_flow *c;
	uint32_t isn;
	int fd, rc;

	rc = rn_policy_dest(&w->p, rn_dns_current(w), k, &d);
	if (rc) {
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return RN_WCTR_policy_refused;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return RN_WCTR_flows_refused_fd;
	}
	c->f.key = *k;
	c->f.type = RN_FLOW_TCP;
	c->f.fd = -1;
	rc = rn_worker_flow_add(w, &c->f);
	if (rc == -ENOSPC && rn_tcp_evict_time_wait(w))
		rc = rn_worker_flow_add(w, &c->f);
	if (rc) {
		free(c);
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return RN_WCTR_flows_refused_cap;
	}

	fd = rn_tcp_socket(c, d.family);
	if (fd < 0) {
		rn_worker_flow_close(w, &c->f);
		rn_tcp_rst_key(w, k, 0, s->seq + 1, 1);
		return RN_WCTR_flows_refused_fd;
	}
	c->f.fd = fd;
	if (d.dns) {
		c->flags |= RN_TCP_F_DNS;
		c->dns_up = d.dns_up;
		c->dns_tried = (uint8_t)(1u << d.dns_up);
		c->dns_gen = w->dns_gen;
	}

	if (getrandom(&isn, sizeof(isn), GRND_NONBLOCK) != sizeof(isn))
		isn = (uint32_t)w->now * 2654435761u ^ (uint32_t)(uintptr_t)c;
	c->iss = isn;
	c->snd_una = c->snd_nxt = c->snd_max = isn;
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->rcv_edge = c->rcv_nxt;
	c->snd_wl1 = s->seq;
	c->snd_wnd = s->wnd;		/* never scaled in a SYN */
	if (s->sack_ok)
		c->flags |= RN_TCP_F_SACK;
	if (s->ws != 0xff) {
		c->flags |= RN_TCP_F_WS;
		c->ns_ws = s->ws;
		c->our_ws = RN_TCP_WS;
	}
	c->mss = (uint16_t)(w->p.mtu - rn_tcp_l3len(k) - RN_TCP_HDR);
	if (!s->mss)
		c->mss = k->family == 6 ? 1220 : 536;
	else if (s->mss < c->mss)
		c->mss = s->mss < 64 ? 64 : s->mss;
	c->rto = RN_TCP_RTO_INIT;
	c->flags |= RN_TCP_F_CONNECTING;
	rn_tcp_set_state(c);
	rn_tcp_end_deadline(w, c);
	rn_ctr_add(w->ctr, RN_WCTR_tcp_connects, 1);

	if (connect(fd, (struct sockaddr *)&d.sa, d.salen) && errno != EINPROGRESS) {
		rn_tcp_connect_done(w, c, errno);
		return RN_WCTR_tcp_segments_in;
	}
	/* Even an immediate success is reported by EPOLLOUT */
	rn_tcp_watch(w, c);
	rn_tcp_dns_deadline(w, c);
	rn_tcp_arm(w, c);
	return RN_WCTR_tcp_segments_in;
}

/**
 * rn_tcp_rst_in() - a RST from the namespace (RFC 5961, 3.2)
 * @w:		worker
 * @c:		flow
 * @s:		the RST
 *
 * Return: the outcome counter
 */
static int rn_tcp_rst_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_tcp_seg *s)
{
	if (s->seq == c->rcv_nxt) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_rst_received, 1);
		rn_tcp_close(w, c, 0, 1);
		return RN_WCTR_tcp_segments_in;
	}
	if (rn_seq_lt(c->rcv_nxt, s->seq) && rn_seq_lt(s->seq, c->rcv_edge) &&
	    !(c->flags & RN_TCP_F_CONNECTING)) {
		rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
		rn_tcp_ack_later(w, c);
	}
	return RN_WCTR_drop_tcp_rst;
}

/**
 * rn_tcp_syn_in() - a SYN on an existing flow
 * @w:		worker
 * @c:		flow
 * @k:		its key
 * @s:		the SYN
 *
 * Return: the outcome counter, or a fatal negative errno
 */
static int rn_tcp_syn_in(struct rn_worker *w, struct rn_tcp_flow *c, const struct rn_flow_key *k,
			 const struct rn_tcp_seg *s)
{
	if (!(s->flags & RN_TCP_ACK) && s->seq == c->irs &&
	    !(c->flags & (RN_TCP_F_ESTABLISHED | RN_TCP_F_TIME_WAIT))) {
		/* The namespace repeats its SYN: answer again once connected */
		if (c->flags & RN_TCP_F_SYNACK)
			rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
		return RN_WCTR_tcp_segments_in;
	}
	if (!(s->flags & RN_TCP_ACK) && (c->flags & RN_TCP_F_TIME_WAIT)) {
		/* A new connection reusing the tuple of a finished one */
		rn_worker_flow_close(w, &c->f);
		return rn_tcp_open(w, k, s);
	}
	rn_ctr_add(w->ctr, RN_WCTR_tcp_challenge_acks, 1);
	if (c->flags & RN_TCP_F_SYNACK)
		rn_tcp_ack_later(w, c);
	return RN_WCTR_drop_tcp_syn;
}

/**
 * rn_tcp_input() - handle a TCP segment from the namespace
 * @w:		worker
 * @f:		validated frame, f->proto TCP
 *
 * Return: the counter recording what became of the frame, or a negative
 *	   errno when the worker must stop (ring corrupted)
 */
int rn_tcp_input(struct rn_worker *w, struct rn_frame *f)
{
	struct rn_flow_key k;
	struct rn_tcp_flow *c;
	struct rn_tcp_seg s;
	struct rn_flow *fl;
	uint32_t fin_end, wmax, tail;
	int32_t rel;
	int rc;

	rc = rn_tcp_parse(w, f, &s);
	if (rc)
		return rc;

	rn_flow_key_zero(&k);
	k.family = f->family;
	k.proto = RN_IPPROTO_TCP;
	memcpy(k.saddr, f->saddr, f->family == 6 ? 16 : 4);
	memcpy(k.daddr, f->daddr, f->family == 6 ? 16 : 4);
	k.sport = rn_be16(f->l4.p);
	k.dport = rn_be16(f->l4.p + 2);

	fl = rn_flowtab_lookup(&w->flows, &k);
	if (!fl || fl->type != RN_FLOW_TCP) {
		if ((s.flags & (RN_TCP_SYN | RN_TCP_ACK)) == RN_TCP_SYN)
			rc = rn_tcp_open(w, &k, &s);
		else if (s.flags & RN_TCP_RST)
			rc = RN_WCTR_drop_tcp_no_flow;
		else {
			rn_tcp_rst_reply(w, &k, &s);
			rc = RN_WCTR_drop_tcp_no_flow;
		}
		return w->err ? w->err : rc;
	}
	c = rn_tcp_of(fl);
	c->f.last = w->now;

	if (s.flags & RN_TCP_RST)
		rc = rn_tcp_rst_in(w, c, &s);
	else if (s.flags & RN_TCP_SYN)
		rc = rn_tcp_syn_in(w, c, &k, &s);
	else if (c->flags & RN_TCP_F_TIME_WAIT) {
		/* A repeated FIN: ACK it again */
		if (s.flags & RN_TCP_FIN)
			rn_tcp_ack_later(w, c);
		rc = RN_WCTR_tcp_segments_in;
	} else if (!(c->flags & RN_TCP_F_SYNACK)) {
		rc = RN_WCTR_drop_tcp_ack;	/* nothing of ours to acknowledge yet */
	} else if (!(c->flags & RN_TCP_F_ESTABLISHED) && s.ack != c->iss + 1) {
		rn_tcp_rst_key(w, &k, s.ack, 0, 0);
		rc = RN_WCTR_drop_tcp_ack;
	} else {
		if (!(c->flags & RN_TCP_F_ESTABLISHED))
			rn_tcp_established(w, c);
		rc = -1;
	}
	if (rc >= 0 || w->err)
		return w->err ? w->err : rc;
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return RN_WCTR_tcp_segments_in;

	/* Sequence acceptability (RFC 793, 3.3), then ACK, then data; bytes
	 * buffered for the host count as received here */
	tail = c->rcv_nxt + c->ovf_len;
	rel = (int32_t)(s.seq - tail);
	fin_end = s.seq + s.len;
	wmax = 65535u << c->our_ws;
	if (!s.len && !(s.flags & RN_TCP_FIN)) {
		/* A pure ACK is acceptable from rcv_nxt on (the namespace may
		 * have gone back to resend what we buffered); rcv_nxt - 1 is a
		 * window probe or keepalive, answered below */
		rel = (int32_t)(s.seq - c->rcv_nxt);
		if (rel < 0) {
			rn_tcp_ack_later(w, c);
			return RN_WCTR_drop_tcp_old;
		}
	}
	if (rel > 0 || (rel == 0 && !s.len && !(s.flags & RN_TCP_FIN))) {
		if ((uint32_t)rel > wmax) {
			rn_tcp_ack_later(w, c);
			return RN_WCTR_drop_tcp_window;
		}
		rc = rn_tcp_ack_in(w, c, &s);
		if (!rc && !(c->f.flags & RN_FLOW_F_CLOSED) &&
		    (s.len || ((s.flags & RN_TCP_FIN) && rel > 0))) {
			/* After a gap: keep what we can, and ask for the gap with an
			 * immediate duplicate ACK (one per segment, as a receiver
			 * should, so that the namespace retransmits fast) */
			rc = s.len && !(c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND)) &&
			     rn_tcp_ooo_add(w, c, s.seq, s.data, s.len) ?
			     RN_WCTR_tcp_segments_in : RN_WCTR_drop_tcp_ooo;
			rn_tcp_send_ack(w, c);
		}
	} else if (rn_seq_lt(fin_end, tail) ||
		   (fin_end == tail && !((s.flags & RN_TCP_FIN) &&
					 !(c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND))))) {
		/* Old duplicate, or a zero-window probe: answer with an ACK */
		rn_tcp_ack_later(w, c);
		rc = RN_WCTR_drop_tcp_old;
	} else {
		if (rel < 0) {
			s.data += (uint32_t)-rel;
			s.len -= (uint32_t)-rel;
			s.seq = tail;
		}
		rc = rn_tcp_ack_in(w, c, &s);
		if (!rc && !(c->f.flags & RN_FLOW_F_CLOSED)) {
			if (c->flags & (RN_TCP_F_NS_FIN | RN_TCP_F_FIN_PEND)) {
				rn_tcp_ack_later(w, c);
				rc = s.len ? RN_WCTR_drop_tcp_window : RN_WCTR_tcp_segments_in;
			} else {
				rc = rn_tcp_data_in(w, c, &s, fin_end);
			}
		}
	}
	if (w->err)
		return w->err;
	if (!rc)
		rc = RN_WCTR_tcp_segments_in;
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return rc;
	if (!rn_tcp_check_done(w, c) && (c->flags & RN_TCP_F_MORE))
		rn_worker_defer(w, &c->f);
	return rc;
}

/**
 * rn_tcp_event() - the host socket is ready
 * @w:		worker
 * @fl:		flow
 * @events:	epoll events
 */
static void rn_tcp_event(struct rn_worker *w, struct rn_flow *fl, uint32_t events)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);
	socklen_t sl = sizeof(int);
	int err = 0, i;

	c->f.last = w->now;
	if (c->flags & RN_TCP_F_CONNECTING) {
		if (getsockopt(c->f.fd, SOL_SOCKET, SO_ERROR, &err, &sl))
			err = errno;
		if (!err && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (!err && (events & (EPOLLERR | EPOLLHUP)))
			err = ECONNRESET;
		rn_tcp_connect_done(w, c, err);
		return;
	}
	if (events & EPOLLERR) {
		/* A reset host connection aborts: data not yet passed on is lost,
		 * as it would be on the wire */
		if (getsockopt(c->f.fd, SOL_SOCKET, SO_ERROR, &err, &sl) || err) {
			rn_tcp_host_error(w, c, -err);
			return;
		}
	}
	if ((events & EPOLLOUT) && (c->flags & RN_TCP_F_WANT_OUT)) {
		uint16_t before = rn_tcp_wnd_field(c);

		c->flags &= ~RN_TCP_F_WANT_OUT;
		err = rn_tcp_ovf_drain(w, c);
		if (err) {
			rn_tcp_host_error(w, c, err);
			return;
		}
		rn_tcp_wnd_update(c);
		if (rn_tcp_wnd_field(c) != before || (c->flags & RN_TCP_F_SHORT)) {
			rn_ctr_add(w->ctr, RN_WCTR_tcp_window_updates, 1);
			rn_tcp_send_ack(w, c);
			/* Refused bytes: three duplicates make the namespace resend now */
			for (i = 0; (c->flags & RN_TCP_F_SHORT) && i < RN_TCP_DUPACKS; i++)
				rn_tcp_send_ack(w, c);
			c->flags &= ~RN_TCP_F_SHORT;
		}
		rn_tcp_watch(w, c);
	}
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
		rn_tcp_push(w, c);
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_timer() - retransmission, probe, idle, FIN and TIME_WAIT timeouts
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_timer(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	if (c->end_at && w->now >= c->end_at) {
		if (c->flags & RN_TCP_F_TIME_WAIT) {
			rn_tcp_close(w, c, 0, 0);
			return;
		}
		rn_tcp_end_deadline(w, c);
		if (w->now >= c->end_at) {
			rn_ctr_add(w->ctr, c->closing ? RN_WCTR_tcp_fin_timeouts :
				   RN_WCTR_tcp_idle_timeouts, 1);
			rn_tcp_close(w, c, 1, 1);
			return;
		}
	}
	if (c->tlp_at && w->now >= c->tlp_at) {
		c->tlp_at = 0;
		if ((c->flags & RN_TCP_F_ESTABLISHED) && c->snd_una != c->snd_max &&
		    !(c->flags & RN_TCP_F_RECOVERY)) {
			rn_ctr_add(w->ctr, RN_WCTR_tcp_loss_probes, 1);
			c->flags |= RN_TCP_F_TLP_OUT;
			rn_tcp_probe_tail(w, c);
			if (c->f.flags & RN_FLOW_F_CLOSED)
				return;
		}
	}
	if (c->rto_at && w->now >= c->rto_at) {
		c->rto_at = 0;
		if (c->flags & RN_TCP_F_CONNECTING) {
			/* connect() has its own timeout; only a DNS flow with
			 * another upstream left gives up sooner and tries that */
			if (c->flags & RN_TCP_F_DNS)
				rn_tcp_connect_done(w, c, ETIMEDOUT);
		} else if (!(c->flags & RN_TCP_F_ESTABLISHED)) {
			if (++c->retries > RN_TCP_SYNACK_RETRIES) {
				rn_tcp_close(w, c, 1, 1);
				return;
			}
			c->flags &= ~RN_TCP_F_RTT;
			rn_ctr_add(w->ctr, RN_WCTR_tcp_retransmits, 1);
			rn_tcp_send_ctl(w, c, RN_TCP_SYN | RN_TCP_ACK, c->iss);
			c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
			c->rto_at = w->now + c->rto;
		} else if (c->snd_una != c->snd_max) {
			if (++c->retries > RN_TCP_RETRIES) {
				rn_tcp_close(w, c, 1, 1);
				return;
			}
			/* Go back to the oldest unacknowledged byte */
			rn_ctr_add(w->ctr, RN_WCTR_tcp_rto_expired, 1);
			c->snd_nxt = c->snd_una;
			c->dup_acks = 0;
			c->flags &= ~(RN_TCP_F_RECOVERY | RN_TCP_F_RTT);
			c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
			rn_tcp_push(w, c);
		} else if (!c->snd_wnd && !(c->flags & RN_TCP_F_HOST_EOF)) {
			/* Zero window: an old sequence number makes the peer ACK */
			rn_ctr_add(w->ctr, RN_WCTR_tcp_window_probes, 1);
			rn_tcp_send_ctl(w, c, RN_TCP_ACK, c->snd_una - 1);
			c->rto = c->rto * 2 > RN_TCP_RTO_MAX ? RN_TCP_RTO_MAX : c->rto * 2;
			c->rto_at = w->now + c->rto;
		}
		if (c->f.flags & RN_FLOW_F_CLOSED)
			return;
		/* Whatever stopped the resend (closed window, full ring), keep timing */
		if (!c->rto_at && (c->flags & RN_TCP_F_ESTABLISHED) && c->snd_una != c->snd_max)
			c->rto_at = w->now + c->rto;
	}
	rn_tcp_end_deadline(w, c);
	rn_tcp_arm(w, c);
}

/**
 * rn_tcp_room() - to_ns has room again: pending ACK, then data
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_room(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	if (c->flags & RN_TCP_F_ACK_DUE)
		rn_tcp_send_ack(w, c);
	if (!(c->f.flags & RN_FLOW_F_ROOM_WAIT))
		rn_tcp_push(w, c);
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_flush() - end of a batch: one ACK per flow, continue busy flows
 * @w:		worker
 * @fl:		flow deferred with rn_worker_defer()
 */
static void rn_tcp_flush(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);
	int rc = rn_tcp_discard_upto_una(c);

	if (rc) {
		rn_tcp_host_error(w, c, rc);
		return;
	}
	if (c->flags & RN_TCP_F_MORE)
		rn_tcp_push(w, c);
	if (c->f.flags & RN_FLOW_F_CLOSED)
		return;
	if (c->flags & (RN_TCP_F_ACK_DUE | RN_TCP_F_ACK_MAYBE)) {
		if (c->f.fd >= 0 && !(c->flags & RN_TCP_F_NS_FIN))
			rn_tcp_wnd_update(c);
		if ((c->flags & RN_TCP_F_ACK_DUE) || c->last_ack != c->rcv_nxt ||
		    c->last_wnd != rn_tcp_wnd_field(c))
			rn_tcp_send_ack(w, c);
		c->flags &= ~RN_TCP_F_ACK_MAYBE;
		if (c->flags & RN_TCP_F_WANT_OUT)
			rn_tcp_watch(w, c);
	}
	if (!(c->f.flags & RN_FLOW_F_CLOSED))
		rn_tcp_check_done(w, c);
}

/**
 * rn_tcp_release() - free what a closing flow owns besides its struct and fd
 * @w:		worker
 * @fl:		flow
 */
static void rn_tcp_release(struct rn_worker *w, struct rn_flow *fl)
{
	struct rn_tcp_flow *c = rn_tcp_of(fl);

	rn_tcp_hold_free(c, &c->ovf, &c->ovf_cap);
	c->ovf_len = 0;
	rn_tcp_ooo_free(c);
}

const struct rn_flow_ops rn_tcp_ops = {
	.event = rn_tcp_event,
	.timer = rn_tcp_timer,
	.room = rn_tcp_room,
	.flush = rn_tcp_flush,
	.release = rn_tcp_release,
};
