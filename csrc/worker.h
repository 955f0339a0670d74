/* worker.h - a host stack worker: context, frame intake, hooks for protocol code
 *
 * The first half is the API Python uses (mirrored in worker.cdef). The second
 * half is for the protocol modules (icmp.c, tcp.c, udp.c) that tap.c's
 * rn_tap_l4_input() dispatches to: the frame being processed, its private
 * copy, the way to put a reply into the namespace ring, and the flow services
 * (host sockets in the worker's epoll, timers, waiting for ring room).
 *
 * Flow services, for a protocol core (see worker.c, "Flows"):
 * - allocate its flow struct (it begins with struct rn_flow, flowtab.h), set
 *   key, type and fd (-1 until there is a socket), then rn_worker_flow_add():
 *   -ENOSPC at the max_flows cap (refuse, count flows_refused_cap);
 * - rn_worker_flow_watch() registers the fd with the events wanted (0
 *   removes it); the worker calls ops->event() with the ready events;
 * - rn_worker_flow_timer() arms the one timer per flow; ops->timer() runs
 *   when it expires (disarmed before the call);
 * - when rn_worker_tx_reserve() finds no room, the protocol stops reading its
 *   host socket (rn_worker_flow_watch() without EPOLLIN) and calls
 *   rn_worker_wait_room(); ops->room() runs once a largest frame fits again;
 * - rn_worker_defer() asks for ops->flush() once the current batch of frames
 *   or events is done (one ACK per flow per batch, resuming a flow that
 *   stopped to let others run);
 * - rn_worker_flow_close() ends a flow: out of the table, epoll and lists, fd
 *   closed, ops->release() called, memory freed with free() at the end of
 *   the loop pass (so pointers in the current epoll batch stay valid).
 * Hooks run inside the event loop with w->now current; they report a fatal
 * ring error through rn_worker_tx_reserve()'s sticky error and never block.
 */
#ifndef RN_WORKER_H
#define RN_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "counters.h"
#include "fault.h"
#include "flowtab.h"
#include "busypoll.h"
#include "moderate.h"
#include "netem.h"
#include "packet.h"
#include "ring.h"
#include "shm.h"

/* Frame bytes copied out of shared memory before any parsing */
#define RN_WORKER_HDR_COPY	256u
/* Frames processed between two releases/publications of the rings */
#define RN_WORKER_BATCH		64u
/* struct rn_worker.logged: one-time messages already written to stderr */
#define RN_WORKER_LOGGED_PING	1u

struct rn_udp;
struct rn_frag;
struct rn_fwd;
struct rn_rules_ctx;
struct rn_splice_ctl;
struct rn_verdict;
struct rn_capture;

/**
 * struct rn_worker_params - what a worker needs to know, from the orchestrator
 * @index:	this worker's index
 * @nworkers:	number of workers, at least 1
 * @hash_key:	flow hash secret (flow.h)
 * @ring_size:	data area size of each ring (shm.h layout)
 * @mtu:	namespace interface MTU, 1280..65520
 * @guest4:	namespace IPv4 address, network order
 * @gw4:	IPv4 gateway address (answered by the worker)
 * @dns4:	IPv4 DNS address
 * @guest6:	namespace IPv6 address
 * @gw6:	IPv6 gateway address
 * @dns6:	IPv6 DNS address
 * @prefix4:	prefix length of the namespace's IPv4 subnet (0: unknown)
 * @prefix6:	prefix length of the namespace's IPv6 subnet (0: unknown)
 * @allow_host_loopback:	map the gateway addresses to 127.0.0.1 / ::1
 * @allow_host:	let flows reach the host's own addresses (@host4, @host6)
 * @allow_link_local:	let flows reach 169.254.0.0/16 and fe80::/10
 * @loopback_only:	refuse every destination but host loopback (the gateway
 *			mapping, DNS upstreams on loopback): for tests that must
 *			not send anything off the machine, whatever the frames say
 * @max_flows:	flows (all protocols) this worker may hold; new ones are refused
 * @udp_ports:	host UDP sockets (so host ports) this worker may hold, its share
 *		of the network's budget; 0: bounded by @max_flows only
 * @tcp_idle_timeout_ms:	close established TCP flows idle this long
 * @tcp_fin_timeout_ms:	give up on closing TCP flows after this long
 * @udp_timeout_ms:	expire UDP flows idle this long
 * @ndns:	entries used in @dns
 * @dns:	upstream resolvers the DNS addresses forward to
 * @faults:	test-only fault injection on the ring path (all zero: off)
 * @coalesce_us:	nap this long instead of sleeping during small-packet streams
 *		(moderate.h), 0 to always sleep at once
 * @busy_poll_us:	spin at most this long before sleeping (busypoll.h), 0: never
 * @tcp_delack_ms:	delay the ACK of small namespace data this long, for it to
 *		ride on the host's answer (tcp_delack.c), 0: ACK at once
 * @nhost4:	entries used in @host4
 * @nhost6:	entries used in @host6
 * @host4:	the host's own IPv4 addresses, sorted ascending (memcmp order),
 *		no duplicates; rn_policy_host_set() keeps them so (policy.c)
 * @host6:	the host's own IPv6 addresses, likewise
 */
struct rn_dns_upstream {
	uint8_t family;		/* 4 or 6 */
	uint8_t addr[16];	/* network order, IPv4 in the first 4 bytes */
	uint16_t port;		/* host order */
};

#define RN_DNS_UPSTREAM_MAX	3
/* The host's own addresses the policy knows, per family */
#define RN_HOST_ADDR_MAX	64

/**
 * struct rn_fault_params - seeded fault injection on the ring path (tests only)
 * @drop_ppm:		frames dropped, parts per million
 * @dup_ppm:		frames duplicated, parts per million
 * @reorder_ppm:	frames held back and sent after the next one, parts per million
 * @seed:		PRNG seed, so that a failing run can be repeated
 */
struct rn_fault_params {
	uint32_t drop_ppm;
	uint32_t dup_ppm;
	uint32_t reorder_ppm;
	uint64_t seed;
};

struct rn_worker_params {
	uint32_t index;
	uint32_t nworkers;
	uint8_t hash_key[16];
	uint32_t ring_size;
	uint32_t mtu;
	uint8_t guest4[4], gw4[4], dns4[4];
	uint8_t guest6[16], gw6[16], dns6[16];
	uint8_t prefix4, prefix6;
	uint8_t allow_host_loopback;
	uint8_t loopback_only;
	uint8_t allow_host;
	uint8_t allow_link_local;
	uint32_t max_flows;
	uint32_t udp_ports;
	uint32_t tcp_idle_timeout_ms;
	uint32_t tcp_fin_timeout_ms;
	uint32_t udp_timeout_ms;
	uint32_t ndns;
	struct rn_dns_upstream dns[RN_DNS_UPSTREAM_MAX];
	struct rn_fault_params faults;
	uint32_t coalesce_us;
	uint32_t busy_poll_us;
	uint32_t tcp_delack_ms;
	uint32_t nhost4;
	uint32_t nhost6;
	uint8_t host4[RN_HOST_ADDR_MAX][4];
	uint8_t host6[RN_HOST_ADDR_MAX][16];
};

/**
 * struct rn_worker - one worker's context; all mutable state lives here
 * @p:		parameters, copied at creation
 * @rx:		ring to_worker, consumer side
 * @tx:		ring to_ns, producer side
 * @ctr:	counter array (RN_CTR_SLOTS entries), owned by this worker
 * @ev_worker:	eventfd we block on (caller owns it)
 * @ev_ns:	eventfd that wakes the namespace side (caller owns it)
 * @epfd:	epoll instance: @ev_worker and the watched control fds
 * @err:	fatal error (negative errno) once a ring was found corrupted, else 0
 * @now:	CLOCK_MONOTONIC milliseconds, refreshed at every loop pass
 * @flows:	flow table
 * @room_head:	flows waiting for room in to_ns, first in first served
 * @room_tail:	where the next waiting flow is linked
 * @closed:	flows closed during this loop pass, freed at its end
 * @deferred:	flows waiting for ops->flush()
 * @udp:	UDP core state (udp.c), allocated on first use
 * @fwd:	forwarded host ports this worker accepts on (forward.c)
 * @splice:	the splice socket towards the namespace child (splice.c), or NULL
 * @tcp_held:	bytes of TCP hold buffers allocated by all flows (tcp_recv.c)
 * @tcp_discard: TCP peek skip buffer for sockets without SO_PEEK_OFF
 *		(tcp_send.c), allocated on first use, freed by rn_tcp_free()
 * @frag:	fragment reassembly slots (frag.c), allocated on first use
 * @vd:		on_connect hook verdicts (verdict.c), NULL without a hook
 * @logged:	RN_WORKER_LOGGED_* one-time messages already written
 * @dns_cur:	the current DNS upstream, an index into @p.dns (dns.c)
 * @dns_gen:	times @p.dns was replaced: DNS indexes of older lists are stale
 * @tx_resv:	frame (vnet header first) of the last rn_worker_tx_reserve()
 * @fin:	fault injection on frames from the namespace (tests only)
 * @fout:	fault injection on frames to the namespace (tests only)
 * @netem:	network emulation (netem.h): queues, timerfd
 * @mod:	wake-up moderation (moderate.h), fed with UDP datagrams moved
 * @mod_up:	udp_in when @mod was last fed
 * @mod_down:	udp_out when @mod was last fed
 * @bp:	busy polling (busypoll.h)
 * @rules:	egress rules, name table and rule hits (rules.c), or NULL
 * @cap:	packet capture and flow log (capture.c), NULL until attached
 * @buf:	private copy of the frame being processed
 */
struct rn_worker {
	struct rn_worker_params p;
	struct rn_ring rx;
	struct rn_ring tx;
	uint64_t *ctr;
	int ev_worker;
	int ev_ns;
	int epfd;
	int err;
	int64_t now;
	struct rn_flowtab flows;
	struct rn_flow *room_head;
	struct rn_flow **room_tail;
	struct rn_flow *closed;
	struct rn_flow *deferred;
	struct rn_udp *udp;
	struct rn_fwd *fwd;
	struct rn_splice_ctl *splice;
	size_t tcp_held;
	uint8_t *tcp_discard;
	struct rn_frag *frag;
	struct rn_verdict *vd;
	uint32_t logged;
	uint32_t dns_cur;
	uint32_t dns_gen;
	uint8_t *tx_resv;
	struct rn_fault fin;
	struct rn_fault fout;
	struct rn_netem netem;
	struct rn_mod mod;
	uint64_t mod_up;
	uint64_t mod_down;
	struct rn_bpoll bp;
	struct rn_rules_ctx *rules;
	struct rn_capture *cap;
	uint8_t buf[RN_FRAME_MAX];
};

int rn_worker_new(struct rn_worker **out, const struct rn_worker_params *p, void *shm,
		  size_t shm_len, uint64_t *counters, int ev_worker_fd, int ev_ns_fd);
int rn_worker_watch_fd(struct rn_worker *w, int fd);
int rn_worker_run(struct rn_worker *w, int timeout_ms);
int rn_worker_poll(struct rn_worker *w);
void rn_worker_free(struct rn_worker *w);

/**
 * struct rn_frame - the frame being processed, as protocol handlers see it
 * @shm:	the frame in shared memory: copy from it, never parse it
 * @len:	frame length from the ring record (vnet header included)
 * @copied:	bytes of the frame present in the worker's private buffer
 * @vnet:	the validated virtio-net header, host order
 * @family:	4 or 6
 * @proto:	transport protocol (IPv6: the first next header)
 * @l3len:	IP header length: IPv4 IHL * 4, IPv6 40
 * @pktlen:	IP packet length from its header (trailing bytes excluded)
 * @saddr:	source address, in the private copy
 * @daddr:	destination address, in the private copy
 * @l3:		the validated IP header, in the private copy
 * @l4:		the transport bytes present in the private copy (see rn_worker_pull())
 * @l4len:	transport header plus payload length, from the IP header
 * @frag:	an IP fragment (frag.c reassembles it)
 * @reassembled: a datagram frag.c reassembled (rn_worker_reinput())
 *
 * All lengths here were validated: 12 + @pktlen <= @len, @l3len + @l4len ==
 * @pktlen, and the checksum range of a NEEDS_CSUM header lies in the transport
 * part.
 */
struct rn_frame {
	const uint8_t *shm;
	uint32_t len;
	uint32_t copied;
	struct rn_vnet_hdr vnet;
	uint8_t family;
	uint8_t proto;
	uint16_t l3len;
	uint32_t pktlen;
	const uint8_t *saddr;
	const uint8_t *daddr;
	struct rn_pkt l3;
	struct rn_pkt l4;
	uint32_t l4len;
	uint8_t frag;
	uint8_t reassembled;
};

/**
 * struct rn_flow_ops - what a protocol core does for the worker's event loop
 * @event:	@f's host socket is ready: @events are epoll events (EPOLLIN,
 *		EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP)
 * @timer:	@f's timer expired (it is disarmed now)
 * @room:	ring to_ns has room for a largest frame again, after
 *		rn_worker_wait_room(@f)
 * @flush:	the batch during which rn_worker_defer(@f) was called is done
 * @release:	@f is being closed: free what it owns besides its struct and fd
 *
 * Any hook may be NULL for a protocol that never asks for it.
 */
struct rn_flow_ops {
	void (*event)(struct rn_worker *w, struct rn_flow *f, uint32_t events);
	void (*timer)(struct rn_worker *w, struct rn_flow *f);
	void (*room)(struct rn_worker *w, struct rn_flow *f);
	void (*flush)(struct rn_worker *w, struct rn_flow *f);
	void (*release)(struct rn_worker *w, struct rn_flow *f);
};

/**
 * rn_worker_fatal() - record a fatal error; the worker does no more work
 * @w:		worker
 * @err:	negative errno
 *
 * The first error sticks in w->err; the event loop stops at the next check.
 *
 * Return: w->err (@err, unless an earlier error stuck)
 */
static inline int rn_worker_fatal(struct rn_worker *w, int err)
{
	if (!w->err)
		w->err = err;
	return w->err;
}

int rn_worker_flow_add(struct rn_worker *w, struct rn_flow *f);
int rn_worker_flow_watch(struct rn_worker *w, struct rn_flow *f, uint32_t events);
void rn_worker_flow_timer(struct rn_worker *w, struct rn_flow *f, int64_t deadline);
void rn_worker_wait_room(struct rn_worker *w, struct rn_flow *f);
void rn_worker_defer(struct rn_worker *w, struct rn_flow *f);
void rn_worker_flow_close(struct rn_worker *w, struct rn_flow *f);

/* The frame being processed and frames to the namespace (tap.c) */
int rn_worker_reinput(struct rn_worker *w, const uint8_t *frame, uint32_t len);
uint32_t rn_worker_pull(struct rn_worker *w, struct rn_frame *f, uint32_t n);
void rn_worker_csum_complete(struct rn_worker *w, struct rn_frame *f);
uint8_t *rn_worker_tx_reserve(struct rn_worker *w, uint32_t pktlen, int *err);
void rn_worker_tx_commit(struct rn_worker *w, uint32_t pktlen);
int64_t rn_worker_now_ms(void);
void rn_worker_kick(struct rn_worker *w);

#endif /* RN_WORKER_H */
