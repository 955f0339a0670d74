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

/**
 * struct rn_udp_flow - a UDP flow and its host socket
 * @g:		datagram flow: header, destination, idle timeout (dgram.h)
 * @no_gso:	the kernel refused UDP_SEGMENT once: send datagrams one by one
 * @dnsq:	a DNS flow's queries in flight, RN_DNS_SAVED of them, kept for a
 *		resend to another upstream (allocated only while one waits)
 */
struct rn_udp_flow {
	struct rn_dgram_flow g;
	uint8_t no_gso;
	struct rn_dns_query *dnsq;
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
	uint8_t rbuf[RN_UDP_RX_BATCH][RN_UDP_MAX6];
};

struct rn_udp *rn_udp_state(struct rn_worker *w);
int rn_udp_dns_err(struct rn_worker *w, struct rn_dgram_flow *g, const struct rn_icmp_err *e,
		   const uint8_t *payload, uint32_t len);
void rn_udp_event(struct rn_worker *w, struct rn_flow *f, uint32_t events);
void rn_udp_room(struct rn_worker *w, struct rn_flow *f);

#endif /* RN_UDP_INT_H */
