/* splice.h - forwarded connections of host-local clients, relayed with splice()
 *
 * For worker.c, forward.c and Python (splice.cdef). A client of a forwarded
 * port on host loopback does not go through the C core: the worker connects
 * a TCP socket made inside the namespace (the namespace child sends them in
 * batches over the splice socket, a SOCK_SEQPACKET socketpair it makes, one
 * per worker, its end sent in HELLO) to the forward's port there, and
 * relays the two sockets with splice() through pipes. splice.c has the
 * theory of operation; both ends of the splice socket are in C.
 */
#ifndef RN_SPLICE_H
#define RN_SPLICE_H

#include <stdint.h>
#include <sys/socket.h>

#include "worker.h"

/* Message types on the splice socket (ringnet/_control.py Msg numbers) */
#define RN_SPLICE_MSG_REQ	25u
#define RN_SPLICE_MSG_FD	26u
/* Bytes a pipe of a spliced connection holds at most (per direction) */
#define RN_SPLICE_PIPE		(256u * 1024u)
/* Pipe fills per direction and event before the flow lets others run */
#define RN_SPLICE_ROUNDS	16u
/* Fresh namespace sockets a worker keeps per family; it asks for more below half */
#define RN_SPLICE_STOCK		16u
/* Time for the namespace to answer and the connect inside to complete */
#define RN_SPLICE_SETUP_MS	10000
/* Empty pipes a worker keeps for its next spliced connections */
#define RN_SPLICE_POOL		32u
/* Requests the namespace child serves per call of rn_splice_serve() */
#define RN_SPLICE_SERVE_BATCH	64

/**
 * struct rn_splice_dir - one direction of a spliced connection
 * @pipe:	read end, write end; -1 when not open
 * @pending:	bytes in the pipe, not yet written to the destination
 * @eof:	the source reached end of file
 * @shut:	the destination was shut down for writing (direction done)
 * @wait_in:	waiting for the source to be readable
 * @wait_out:	waiting for the destination to be writable
 */
struct rn_splice_dir {
	int pipe[2];
	uint32_t pending;
	uint8_t eof;
	uint8_t shut;
	uint8_t wait_in;
	uint8_t wait_out;
};

/**
 * struct rn_splice - a spliced connection: a flow of type RN_FLOW_SPLICE
 * @f:		the common header (flow table); @f.fd is the client's socket,
 *		@f.key names the forward's namespace port (saddr, sport) and
 *		the client (daddr, dport)
 * @peer:	the socket inside the namespace as the worker's epoll sees it
 *		(type RN_FLOW_SPLICE, state RN_SPLICE_S_PEER, never in the
 *		table); fd -1 until the namespace child's answer
 * @dir:	[0] client -> namespace (bytes_down), [1] namespace -> client
 *		(bytes_up)
 * @waiting:	on the worker's list of flows waiting for a namespace socket
 * @attempt:	0: connect to the namespace's loopback; 1: to the forward's
 *		address
 * @family:	4 or 6
 * @nsaddr:	the forward's namespace address, network order
 * @pnext:	list of flows waiting for a namespace socket, oldest first
 */
struct rn_splice {
	struct rn_flow f;
	struct rn_flow peer;
	struct rn_splice_dir dir[2];
	uint8_t waiting;
	uint8_t attempt;
	uint8_t family;
	uint8_t nsaddr[16];
	struct rn_splice *pnext;
};

/**
 * struct rn_splice_ctl - a worker's end of the splice socket
 * @hdr:	the socket as the worker's epoll sees it (type RN_FLOW_SPLICE,
 *		state RN_SPLICE_S_CTL, never in the table)
 * @waiting:	flows waiting for a namespace socket, oldest first
 * @nstock:	sockets in @stock, per family (0: IPv4, 1: IPv6)
 * @asked:	a batch of that family is asked for and not answered yet
 * @stock:	fresh unconnected TCP sockets made inside the namespace
 * @npool:	pipes in @pool
 * @pool:	empty pipes of ended connections, reused by the next ones (two
 *		pipe2() and two fcntl() less per connection)
 */
struct rn_splice_ctl {
	struct rn_flow hdr;
	struct rn_splice *waiting;
	uint32_t nstock[2];
	uint8_t asked[2];
	int stock[2][RN_SPLICE_STOCK];
	uint32_t npool;
	int pool[RN_SPLICE_POOL][2];
};

/* struct rn_flow.state of spliced connections (and the two headers) */
enum rn_splice_state {
	RN_SPLICE_S_REQUESTED = 0,	/* waiting for a socket of the namespace */
	RN_SPLICE_S_CONNECTING,		/* its connect inside is in progress */
	RN_SPLICE_S_OPEN,		/* relaying both ways */
	RN_SPLICE_S_HALF,		/* one direction is done */
	RN_SPLICE_S_PEER = 0xfe,	/* &rn_splice.peer */
	RN_SPLICE_S_CTL = 0xff,		/* &rn_splice_ctl.hdr */
};

extern const struct rn_flow_ops rn_splice_ops;

int rn_splice_attach(struct rn_worker *w, int fd);
void rn_splice_prime(struct rn_worker *w);
int rn_splice_local(const struct sockaddr_storage *ss);
int rn_splice_start(struct rn_worker *w, int cfd, const struct sockaddr_storage *ss,
		    uint8_t family, const uint8_t *nsaddr, uint16_t nsport);
const char *rn_splice_state_name(uint8_t state);
void rn_splice_free(struct rn_worker *w);
int rn_splice_serve(int sock);

#endif /* RN_SPLICE_H */
