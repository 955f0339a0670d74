/* udp_int.h - what udp.c and udp_rx.c share: UDP flows and per-worker state
 *
 * Private to the UDP core; worker.c and the rest see udp.h only.
 */
#ifndef RN_UDP_INT_H
#define RN_UDP_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include "dgram.h"
#include "dns.h"
#include "icmp.h"
#include "ip.h"
#include "worker.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT		103
#endif
#ifndef UDP_GRO
#define UDP_GRO			104
#endif

#define RN_UDP_HDR_LEN		8u
/* Datagrams per recvmmsg(), and recvmmsg() calls per socket event */
#define RN_UDP_RX_BATCH		32u
#define RN_UDP_RX_BUDGET	4u
/* Largest UDP payload: IPv4 counts its header in the 64 KiB limit */
#define RN_UDP_MAX4		(65535u - RN_IP4_HDR_LEN - RN_UDP_HDR_LEN)
#define RN_UDP_MAX6		(65535u - RN_UDP_HDR_LEN)
/* UDP_SEGMENT sends: at most this many segments, this many bytes */
#define RN_UDP_GSO_SEGS		64u
#define RN_UDP_GSO_BYTES	RN_UDP_MAX4

struct rn_udp_port;

/**
 * struct rn_udp_flow - a UDP flow: one (source, destination) pair of the namespace
 * @g:		datagram flow: header, destination, idle timeout (dgram.h); its
 *		fd is the flow's own socket (DNS flows), else -1
 * @port:	the host socket it sends through and receives on, shared by
 *		every flow of its namespace source (NULL for a DNS flow)
 * @pnext:	next flow of @port
 * @pprev:	where this flow is linked in @port's list
 * @no_gso:	the kernel refused UDP_SEGMENT once: send datagrams one by one
 * @own_sock:	@g.f.fd is this flow's own host socket (counted in the budget)
 * @dnsq:	a DNS flow's queries in flight, RN_DNS_SAVED of them, kept for a
 *		resend to another upstream (allocated only while one waits)
 */
struct rn_udp_flow {
	struct rn_dgram_flow g;
	struct rn_udp_port *port;
	struct rn_udp_flow *pnext;
	struct rn_udp_flow **pprev;
	uint8_t no_gso;
	uint8_t own_sock;
	struct rn_dns_query *dnsq;
};

/**
 * struct rn_udp_port - the host socket of one namespace source (address, port)
 * @f:		header for the worker's event loop only (epoll, type
 *		RN_FLOW_UDP): never in the flow table; key: the source, with
 *		daddr and dport zero (rn_udp_is_port()); fd: the socket
 * @hnext:	hash chain in struct rn_udp, or the list of closed ports
 * @flows:	the flows that send through it
 * @nflows:	how many
 * @paused:	not reading: ring to_ns is full and @waiter waits for room
 * @waiter:	the flow on the worker's room list on this port's behalf
 * @fwd:	a UDP forward's host socket (udp_fwd.c), or NULL: any sender
 *		gets a flow of its own, and the port stays without flows
 */
struct rn_udp_port {
	struct rn_flow f;
	struct rn_udp_port *hnext;
	struct rn_udp_flow *flows;
	uint32_t nflows;
	uint8_t paused;
	struct rn_udp_flow *waiter;
	struct rn_fwd *fwd;
};

/**
 * struct rn_udp_tx - a datagram queued for the end of the intake batch
 * @fl:		its flow
 * @data:	payload, in ring to_worker
 * @len:	payload length
 * @gso:	segment size of a USO frame's payload, 0 for one datagram
 */
struct rn_udp_tx {
	struct rn_udp_flow *fl;
	const uint8_t *data;
	uint32_t len;
	uint16_t gso;
};

/* Control buffers: UDP_SEGMENT to send, UDP_GRO received */
union rn_udp_cmsg {
	char buf[CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
};

union rn_udp_rcmsg {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/**
 * struct rn_udp - one worker's UDP state
 * @ntx:	datagrams queued in @tx
 * @tx:		send queue of the current intake batch
 * @msg:	sendmmsg() messages
 * @msg_dgrams:	datagrams each message carries
 * @iov:	their payload pieces
 * @cmsg:	their UDP_SEGMENT control messages
 * @rmsg:	recvmmsg() messages
 * @riov:	their buffers
 * @rsa:	their source addresses
 * @rcmsg:	their control data (UDP_GRO segment size)
 * @uso:	the namespace's tun device takes USO frames (rn_udp_set_uso())
 * @ports:	hash table of the ports (namespace sources), @pmask + 1 chains
 * @pmask:	chains minus one (power of two)
 * @closed:	ports closed, freed when no epoll batch can hold them
 * @held:	host UDP sockets held: ports and DNS flows' own sockets
 * @budget:	at most this many (w->p.udp_ports; 0: no limit of its own)
 * @rbuf:	receive buffers, one largest datagram each
 */
struct rn_udp {
	uint32_t ntx;
	struct rn_udp_tx tx[RN_WORKER_BATCH];
	struct mmsghdr msg[RN_WORKER_BATCH];
	uint32_t msg_dgrams[RN_WORKER_BATCH];
	struct iovec iov[RN_WORKER_BATCH];
	union rn_udp_cmsg cmsg[RN_WORKER_BATCH];
	struct mmsghdr rmsg[RN_UDP_RX_BATCH];
	struct iovec riov[RN_UDP_RX_BATCH];
	struct sockaddr_storage rsa[RN_UDP_RX_BATCH];
	union rn_udp_rcmsg rcmsg[RN_UDP_RX_BATCH];
	int uso;
	struct rn_udp_port **ports;
	uint32_t pmask;
	struct rn_udp_port *closed;
	uint32_t held;
	uint32_t budget;
	uint8_t rbuf[RN_UDP_RX_BATCH][RN_UDP_MAX6];
};

/**
 * rn_udp_is_port() - whether an event loop header is a port rather than a flow
 * @f:		header of a struct rn_udp_port or struct rn_udp_flow
 *
 * Return: true for a port (a flow's destination port is never 0)
 */
static inline int rn_udp_is_port(const struct rn_flow *f)
{
	return f->key.dport == 0;
}

/**
 * rn_udp_fd() - the host socket a flow sends through
 * @fl:		flow
 *
 * Return: its port's socket, or its own (DNS)
 */
static inline int rn_udp_fd(const struct rn_udp_flow *fl)
{
	return fl->port ? fl->port->f.fd : fl->g.f.fd;
}

/**
 * rn_udp_port_link() - put a new flow on its port's list of flows
 * @pt:		the port (host socket) the flow sends through
 * @fl:		new flow, on no port's list yet
 *
 * Sets @fl->port, links @fl first in @pt->flows and counts it in
 * @pt->nflows; rn_udp_port_unlink() (udp.c) undoes it when the flow closes.
 */
static inline void rn_udp_port_link(struct rn_udp_port *pt, struct rn_udp_flow *fl)
{
	fl->port = pt;
	fl->pnext = pt->flows;
	if (pt->flows)
		pt->flows->pprev = &fl->pnext;
	fl->pprev = &pt->flows;
	pt->flows = fl;
	pt->nflows++;
}

struct rn_udp *rn_udp_state(struct rn_worker *w);
int rn_udp_dns_err(struct rn_worker *w, struct rn_dgram_flow *g, const struct rn_icmp_err *e,
		   const uint8_t *payload, uint32_t len);
void rn_udp_event(struct rn_worker *w, struct rn_flow *f, uint32_t events);
void rn_udp_room(struct rn_worker *w, struct rn_flow *f);
void rn_udp_port_drain(struct rn_worker *w, struct rn_udp_port *pt, uint32_t events);
/* UDP forwards (udp_fwd.c) */
struct rn_udp_flow *rn_udp_fwd_flow_new(struct rn_worker *w, struct rn_udp_port *pt,
					const struct sockaddr_storage *src);

#endif /* RN_UDP_INT_H */
