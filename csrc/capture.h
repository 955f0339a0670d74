/* capture.h - packet capture and flow events, off the data path
 *
 * Theory of operation
 * -------------------
 * Each worker shares one more memfd with the orchestrator (not with the
 * namespace): the orchestrator creates and seals it at start, the worker maps
 * it and produces, the orchestrator maps it and consumes. Layout:
 *
 *   offset 0			struct rn_cap_shm_hdr (one 4 KiB page)
 *   RN_CAP_HDR_SIZE		ring "events": flow open and close records
 *				(struct rn_cap_event), RN_CAP_EV_RING bytes
 *   + rn_ring_mem_size(ev)	ring "packets": captured frames, RN_CAP_PKT_RING
 *				bytes; each record a struct rn_cap_pkt and the
 *				first bytes of the IP packet
 *
 * Both rings are ring.h's single-producer single-consumer rings, used without
 * doorbells: the orchestrator's writer threads poll them (every few
 * milliseconds while a capture or flow log runs), so the worker never makes a
 * system call for them. The worker never waits either: a record that does not
 * fit is dropped and counted (capture_drops, flowlog_drops), so a slow disk or
 * a stalled writer costs the capture frames, never the traffic.
 *
 * Where frames are tapped: in the worker, which sees both directions of each
 * of its flows, at the ring boundary, as the namespace's interface sees them:
 * a frame from ring to_worker as it is taken (rn_worker_batch(), before
 * validation, network emulation and fault injection: malformed frames and
 * frames the emulation loses are captured too), a frame into ring to_ns as it
 * is committed (rn_tap_put(), so after the emulation's delay, and never one
 * it lost). The capture holds the IP packet
 * without its virtio-net header (pcapng LINKTYPE_RAW); TSO and USO super-frames
 * appear as they cross the rings: one frame of up to 64 KiB whose IP length
 * covers all of it, as tcpdump shows them on an interface with offloads, and
 * with the partial transport checksum NEEDS_CSUM leaves (tcpdump -v reports it
 * as incorrect). Capture costs a branch per frame when off; when on, a copy of
 * at most the snap length and a clock read.
 *
 * The orchestrator writes the packet ring to the capture file as pcapng
 * Enhanced Packet Blocks with writev() straight from ring memory
 * (rn_capture_drain_fd(): the bytes are copied once more, by the kernel), and
 * drains the event ring into an array of records (rn_capture_drain_events()),
 * both with the GIL released.
 */
#ifndef RN_CAPTURE_H
#define RN_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h"
#include "shm.h"

struct rn_worker;
struct rn_flow;

#define RN_CAP_MAGIC		0x504e4352u	/* "RNCP" */
#define RN_CAP_HDR_SIZE		4096u
#define RN_CAP_EV_RING		(1u << 20)
#define RN_CAP_PKT_RING		(8u << 20)
/* Largest snap length: the largest IP packet a frame carries */
#define RN_CAP_SNAPLEN_MAX	RN_PKT_MAX
#define RN_CAP_SNAPLEN_MIN	64u

/* struct rn_cap_pkt.dir: as the namespace's interface sees it */
#define RN_CAP_DIR_OUT		1u	/* sent by the namespace (to the worker) */
#define RN_CAP_DIR_IN		2u	/* received by the namespace (from the worker) */

/* struct rn_cap_event.kind */
#define RN_CAP_EV_OPEN		1u
#define RN_CAP_EV_CLOSE		2u
/* struct rn_cap_event.rule: no rule decided this flow */
#define RN_CAP_NO_RULE		UINT32_MAX

/**
 * struct rn_cap_shm_hdr - first page of a capture mapping
 * @magic:	RN_CAP_MAGIC
 * @ev_size:	data area of the event ring
 * @pkt_size:	data area of the packet ring
 */
struct rn_cap_shm_hdr {
	uint32_t magic;
	uint32_t ev_size;
	uint32_t pkt_size;
};

/**
 * struct rn_cap_pkt - header of a captured frame's record; the packet follows
 * @ts_ns:	CLOCK_REALTIME nanoseconds when the worker saw the frame
 * @orig_len:	IP packet length as it crossed the ring (vnet header excluded)
 * @dir:	RN_CAP_DIR_*
 */
struct rn_cap_pkt {
	uint64_t ts_ns;
	uint32_t orig_len;
	uint32_t dir;
};

/**
 * struct rn_cap_event - a flow opened or closed, as the flow log writes it
 * @ts_ns:	CLOCK_REALTIME nanoseconds of the event
 * @opened_ns:	CLOCK_REALTIME nanoseconds when the flow was created
 * @bytes_up:	payload bytes namespace -> host (close only)
 * @bytes_down:	payload bytes host -> namespace (close only)
 * @pkts_up:	frames with payload namespace -> host (close only)
 * @pkts_down:	frames with new payload host -> namespace (close only)
 * @rule:	the slot of the egress rule that decided for the flow (rules.c),
 *		RN_CAP_NO_RULE when none did
 * @kind:	RN_CAP_EV_OPEN or RN_CAP_EV_CLOSE
 * @family:	4 or 6
 * @proto:	IP protocol number
 * @end:	enum rn_flow_end (close only)
 * @sport:	namespace-side port (ICMP: echo identifier)
 * @dport:	remote port as the namespace names it
 * @saddr:	namespace-side address, IPv4 in the first 4 bytes
 * @daddr:	remote address as the namespace names it
 */
struct rn_cap_event {
	uint64_t ts_ns;
	uint64_t opened_ns;
	uint64_t bytes_up;
	uint64_t bytes_down;
	uint64_t pkts_up;
	uint64_t pkts_down;
	uint32_t rule;
	uint8_t kind;
	uint8_t family;
	uint8_t proto;
	uint8_t end;
	uint16_t sport;
	uint16_t dport;
	uint8_t saddr[16];
	uint8_t daddr[16];
};

/**
 * struct rn_capture - a worker's producer side
 * @pkt:	packet ring, producer view
 * @ev:		event ring, producer view
 * @snaplen:	bytes of each IP packet to capture; 0: capture off
 * @flowlog:	record flow events
 */
struct rn_capture {
	struct rn_ring pkt;
	struct rn_ring ev;
	uint32_t snaplen;
	uint8_t flowlog;
};

/**
 * struct rn_cap_reader - the orchestrator's consumer side of one mapping
 * @pkt:	packet ring, consumer view
 * @ev:		event ring, consumer view
 */
struct rn_cap_reader {
	struct rn_ring pkt;
	struct rn_ring ev;
};

size_t rn_capture_shm_size(void);
int rn_capture_shm_init(void *mem, size_t len);
int rn_capture_attach(struct rn_worker *w, void *mem, size_t len);
int rn_capture_set(struct rn_worker *w, uint32_t snaplen, int flowlog);
void rn_capture_free(struct rn_worker *w);
void rn_capture_frame(struct rn_worker *w, const uint8_t *frame, uint32_t len, uint32_t dir);
void rn_capture_flow(struct rn_worker *w, const struct rn_flow *f, unsigned int kind);

int rn_capture_reader_init(struct rn_cap_reader *r, void *mem, size_t len);
long rn_capture_drain_pcapng(struct rn_cap_reader *r, uint8_t *out, uint32_t cap,
			     uint32_t ifid, uint64_t *frames);
int rn_capture_drain_fd(struct rn_cap_reader *r, int fd, uint32_t ifid, uint64_t *frames,
			uint64_t *bytes);
int rn_capture_drain_events(struct rn_cap_reader *r, struct rn_cap_event *out, uint32_t max);

#endif /* RN_CAPTURE_H */
