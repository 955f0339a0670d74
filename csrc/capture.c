/* capture.c - packet capture and flow events: the worker's producer side, the
 * orchestrator's draining side, and pcapng packet blocks
 *
 * See capture.h for the shared layout and where frames are tapped. The worker
 * side never blocks and never makes a system call but clock_gettime() (vDSO);
 * the draining side runs in the orchestrator's writer threads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "capture.h"
#include "flowtab.h"
#include "worker.h"

/* pcapng Enhanced Packet Block: type, lengths, interface, timestamp, flags */
#define RN_PCAPNG_EPB		6u
#define RN_PCAPNG_EPB_FIXED	28u	/* type .. original length */
#define RN_PCAPNG_OPT_FLAGS	2u
#define RN_PCAPNG_EPB_TAIL	16u	/* epb_flags option, end of options, total length */
/* epb_flags direction bits */
#define RN_PCAPNG_INBOUND	1u
#define RN_PCAPNG_OUTBOUND	2u
/* Frames written per writev() by rn_capture_drain_fd(): three iovecs each */
#define RN_CAP_IOV_FRAMES	128u

/**
 * rn_capture_realtime_ns() - the wall clock, for capture timestamps
 *
 * Return: CLOCK_REALTIME in nanoseconds
 */
static uint64_t rn_capture_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/**
 * rn_capture_shm_size() - bytes of a capture mapping
 *
 * Return: the header page and both rings (capture.h layout)
 */
size_t rn_capture_shm_size(void)
{
	return RN_CAP_HDR_SIZE + rn_ring_mem_size(RN_CAP_EV_RING) + rn_ring_mem_size(RN_CAP_PKT_RING);
}

/**
 * rn_capture_rings() - attach both rings of a mapping
 * @mem:	start of the mapping, page aligned
 * @len:	its length
 * @pkt:	packet ring view to fill
 * @ev:		event ring view to fill
 * @reset:	reset both rings (the creator), else adopt them
 *
 * Return: 0, -EINVAL for a bad mapping, -EPROTO for a bad header or ring
 */
static int rn_capture_rings(void *mem, size_t len, struct rn_ring *pkt, struct rn_ring *ev,
			    int reset)
{
	const struct rn_cap_shm_hdr *h = mem;
	uint8_t *base = mem;
	int rc;

	if (!mem || len != rn_capture_shm_size())
		return -EINVAL;
	if (!reset && (h->magic != RN_CAP_MAGIC || h->ev_size != RN_CAP_EV_RING ||
		       h->pkt_size != RN_CAP_PKT_RING))
		return -EPROTO;
	rc = rn_ring_attach(ev, base + RN_CAP_HDR_SIZE, RN_CAP_EV_RING,
			    sizeof(struct rn_cap_event), reset);
	if (!rc)
		rc = rn_ring_attach(pkt, base + RN_CAP_HDR_SIZE + rn_ring_mem_size(RN_CAP_EV_RING),
				    RN_CAP_PKT_RING, sizeof(struct rn_cap_pkt) + RN_CAP_SNAPLEN_MAX,
				    reset);
	return rc;
}

/**
 * rn_capture_shm_init() - orchestrator: write the header and reset both rings
 * @mem:	a new mapping of rn_capture_shm_size() bytes, page aligned
 * @len:	its length
 *
 * Return: 0, or -EINVAL for a bad mapping
 */
int rn_capture_shm_init(void *mem, size_t len)
{
	struct rn_ring pkt, ev;
	struct rn_cap_shm_hdr *h = mem;
	int rc;

	rc = rn_capture_rings(mem, len, &pkt, &ev, 1);
	if (rc)
		return rc;
	h->magic = RN_CAP_MAGIC;
	h->ev_size = RN_CAP_EV_RING;
	h->pkt_size = RN_CAP_PKT_RING;
	return 0;
}

/**
 * rn_capture_attach() - worker: produce into a capture mapping, capture off
 * @w:		worker without one
 * @mem:	the mapping rn_capture_shm_init() set up, page aligned
 * @len:	its length
 *
 * Return: 0, -EINVAL (bad mapping, or one attached already), -EPROTO (bad
 *	   header or ring), -ENOMEM
 */
int rn_capture_attach(struct rn_worker *w, void *mem, size_t len)
{
	struct rn_capture *c;
	int rc;

	if (w->cap)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	rc = rn_capture_rings(mem, len, &c->pkt, &c->ev, 0);
	if (rc) {
		free(c);
		return rc;
	}
	w->cap = c;
	return 0;
}

/**
 * rn_capture_set() - worker: start, change or stop capture and the flow log
 * @w:		worker with a capture mapping attached
 * @snaplen:	bytes of each IP packet to capture, RN_CAP_SNAPLEN_MIN..
 *		RN_CAP_SNAPLEN_MAX, or 0 to stop capturing
 * @flowlog:	record flow open and close events
 *
 * Return: 0, -ENODEV without a mapping, -EINVAL for a bad @snaplen
 */
int rn_capture_set(struct rn_worker *w, uint32_t snaplen, int flowlog)
{
	if (!w->cap)
		return -ENODEV;
	if (snaplen && (snaplen < RN_CAP_SNAPLEN_MIN || snaplen > RN_CAP_SNAPLEN_MAX))
		return -EINVAL;
	w->cap->snaplen = snaplen;
	w->cap->flowlog = !!flowlog;
	return 0;
}

/**
 * rn_capture_free() - worker: stop producing and forget the mapping
 * @w:		worker (the mapping itself stays the caller's)
 */
void rn_capture_free(struct rn_worker *w)
{
	free(w->cap);
	w->cap = NULL;
}

/**
 * rn_capture_frame() - worker: copy the start of a frame into the capture ring
 * @w:		worker with capture on (w->cap->snaplen set)
 * @frame:	the frame, virtio-net header first, in ring memory
 * @len:	frame length
 * @dir:	RN_CAP_DIR_OUT (from the namespace) or RN_CAP_DIR_IN (to it)
 *
 * The bytes are copied as they are, never parsed: the namespace may be
 * rewriting them, which can only spoil its own capture. A full ring drops the
 * frame from the capture (capture_drops); the ring is published at once.
 */
void rn_capture_frame(struct rn_worker *w, const uint8_t *frame, uint32_t len, uint32_t dir)
{
	struct rn_capture *c = w->cap;
	struct rn_cap_pkt h;
	uint32_t pktlen, caplen;
	uint8_t *p;
	int err;

	if (len <= RN_VNET_HDR_LEN)
		return;
	pktlen = len - RN_VNET_HDR_LEN;
	caplen = pktlen < c->snaplen ? pktlen : c->snaplen;
	p = rn_ring_reserve(&c->pkt, sizeof(h) + caplen, &err);
	if (!p) {
		rn_ctr_add(w->ctr, RN_WCTR_capture_drops, 1);
		return;
	}
	h.ts_ns = rn_capture_realtime_ns();
	h.orig_len = pktlen;
	h.dir = dir;
	memcpy(p, &h, sizeof(h));
	memcpy(p + sizeof(h), frame + RN_VNET_HDR_LEN, caplen);
	rn_ring_commit(&c->pkt, sizeof(h) + caplen);
	rn_ring_publish(&c->pkt);
	rn_ctr_add(w->ctr, RN_WCTR_capture_frames, 1);
	rn_ctr_add(w->ctr, RN_WCTR_capture_bytes, caplen);
}

/**
 * rn_capture_flow() - worker: put a flow's open or close record into the event ring
 * @w:		worker
 * @f:		flow (in the table for an open, being closed for a close)
 * @kind:	RN_CAP_EV_OPEN or RN_CAP_EV_CLOSE
 *
 * Does nothing unless the flow log is on. A full ring loses the record
 * (flowlog_drops).
 */
void rn_capture_flow(struct rn_worker *w, const struct rn_flow *f, unsigned int kind)
{
	struct rn_capture *c = w->cap;
	struct rn_cap_event ev;
	uint8_t *p;
	int err;

	if (!c || !c->flowlog)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.ts_ns = rn_capture_realtime_ns();
	ev.opened_ns = ev.ts_ns - (uint64_t)(rn_worker_now_ms() - f->created) * 1000000ull;
	ev.kind = (uint8_t)kind;
	ev.family = f->key.family;
	ev.proto = f->key.proto;
	ev.sport = f->key.sport;
	ev.dport = f->key.dport;
	memcpy(ev.saddr, f->key.saddr, sizeof(ev.saddr));
	memcpy(ev.daddr, f->key.daddr, sizeof(ev.daddr));
	/* struct rn_flow.rule is the deciding rule's slot + 1 (rules.c), 0 for none */
	ev.rule = f->rule ? f->rule - 1 : RN_CAP_NO_RULE;
	if (kind == RN_CAP_EV_CLOSE) {
		ev.bytes_up = f->bytes_up;
		ev.bytes_down = f->bytes_down;
		ev.pkts_up = f->pkts_up;
		ev.pkts_down = f->pkts_down;
		ev.end = f->end;
	}
	p = rn_ring_reserve(&c->ev, sizeof(ev), &err);
	if (!p) {
		rn_ctr_add(w->ctr, RN_WCTR_flowlog_drops, 1);
		return;
	}
	memcpy(p, &ev, sizeof(ev));
	rn_ring_commit(&c->ev, sizeof(ev));
	rn_ring_publish(&c->ev);
	rn_ctr_add(w->ctr, RN_WCTR_flowlog_events, 1);
}

/**
 * rn_capture_reader_init() - orchestrator: consume from a capture mapping
 * @r:		reader to fill
 * @mem:	the mapping, set up by rn_capture_shm_init()
 * @len:	its length
 *
 * Return: 0, -EINVAL, or -EPROTO (see rn_capture_rings())
 */
int rn_capture_reader_init(struct rn_cap_reader *r, void *mem, size_t len)
{
	return rn_capture_rings(mem, len, &r->pkt, &r->ev, 0);
}

/**
 * rn_capture_put32() - store a native-order 32-bit word (pcapng is written in
 *			the writer's byte order, announced by its section header)
 * @p:		where
 * @v:		value
 */
static void rn_capture_put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

/**
 * rn_capture_put16() - store a native-order 16-bit word
 * @p:		where
 * @v:		value
 */
static void rn_capture_put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

/**
 * rn_capture_epb() - the parts of a captured frame's Enhanced Packet Block around its data
 * @h:		the frame's record header
 * @caplen:	bytes of packet data captured
 * @ifid:	interface id the block names
 * @head:	the fixed part (type .. original length), RN_PCAPNG_EPB_FIXED bytes
 * @tail:	padding of the data to 4 bytes, then the epb_flags option (the
 *		direction: outbound is sent by the namespace), the end of options and
 *		the total length; 3 + RN_PCAPNG_EPB_TAIL bytes of room
 *
 * Return: bytes of @tail used (padding included)
 */
static uint32_t rn_capture_epb(const struct rn_cap_pkt *h, uint32_t caplen, uint32_t ifid,
			       uint8_t *head, uint8_t *tail)
{
	uint32_t pad = (4u - (caplen & 3u)) & 3u;
	uint32_t total = RN_PCAPNG_EPB_FIXED + caplen + pad + RN_PCAPNG_EPB_TAIL;

	rn_capture_put32(head, RN_PCAPNG_EPB);
	rn_capture_put32(head + 4, total);
	rn_capture_put32(head + 8, ifid);
	rn_capture_put32(head + 12, (uint32_t)(h->ts_ns >> 32));
	rn_capture_put32(head + 16, (uint32_t)h->ts_ns);
	rn_capture_put32(head + 20, caplen);
	rn_capture_put32(head + 24, h->orig_len);
	memset(tail, 0, pad);
	rn_capture_put16(tail + pad, RN_PCAPNG_OPT_FLAGS);
	rn_capture_put16(tail + pad + 2, 4);
	rn_capture_put32(tail + pad + 4, h->dir == RN_CAP_DIR_IN ? RN_PCAPNG_INBOUND :
			 RN_PCAPNG_OUTBOUND);
	rn_capture_put32(tail + pad + 8, 0);
	rn_capture_put32(tail + pad + 12, total);
	return pad + RN_PCAPNG_EPB_TAIL;
}

/**
 * rn_capture_drain_pcapng() - orchestrator: captured frames as pcapng blocks in a buffer
 * @r:		reader
 * @out:	buffer for Enhanced Packet Blocks
 * @cap:	its size; at least one largest block must fit (RN_CAP_SNAPLEN_MAX + 64)
 * @ifid:	interface id the blocks name (its Interface Description Block
 *		says LINKTYPE_RAW and nanosecond timestamps)
 * @frames:	set to the number of blocks written
 *
 * Takes frames from the packet ring while their blocks fit in @out. The
 * consumed room goes back to the worker once, at the end. (The writer uses
 * rn_capture_drain_fd(), which saves this copy; tests read blocks from here.)
 *
 * Return: bytes written to @out, or -EPROTO if the ring is corrupted, -EINVAL
 *	   for a buffer too small
 */
long rn_capture_drain_pcapng(struct rn_cap_reader *r, uint8_t *out, uint32_t cap,
			     uint32_t ifid, uint64_t *frames)
{
	const uint8_t *rec;
	struct rn_cap_pkt h;
	uint8_t tail[3 + RN_PCAPNG_EPB_TAIL];
	uint32_t len, caplen, ntail, off = 0;
	int rc;

	*frames = 0;
	if (cap < RN_CAP_SNAPLEN_MAX + 64)
		return -EINVAL;
	for (;;) {
		rc = rn_ring_peek(&r->pkt, &rec, &len);
		if (rc < 0)
			return rc;
		if (!rc)
			break;
		if (len < sizeof(h)) {
			rn_ring_consume(&r->pkt);
			continue;
		}
		memcpy(&h, rec, sizeof(h));
		caplen = len - (uint32_t)sizeof(h);
		if (RN_PCAPNG_EPB_FIXED + caplen + sizeof(tail) > cap - off)
			break;
		ntail = rn_capture_epb(&h, caplen, ifid, out + off, tail);
		memcpy(out + off + RN_PCAPNG_EPB_FIXED, rec + sizeof(h), caplen);
		memcpy(out + off + RN_PCAPNG_EPB_FIXED + caplen, tail, ntail);
		off += RN_PCAPNG_EPB_FIXED + caplen + ntail;
		rn_ring_consume(&r->pkt);
		(*frames)++;
	}
	rn_ring_release(&r->pkt);
	return off;
}

/**
 * rn_capture_writev_all() - write every byte @iov describes, resuming short writes
 * @fd:		file descriptor, blocking
 * @iov:	iovecs, advanced in place
 * @n:		their number
 *
 * Return: 0, or negative errno from writev()
 */
static int rn_capture_writev_all(int fd, struct iovec *iov, int n)
{
	ssize_t w;

	while (n > 0) {
		w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/**
 * rn_capture_drain_fd() - orchestrator: write captured frames to a file as pcapng blocks
 * @r:		reader
 * @fd:		the capture file, blocking, positioned after its interface block
 * @ifid:	interface id the blocks name
 * @frames:	set to the number of blocks written
 * @bytes:	set to the number of bytes written
 *
 * Each batch of up to RN_CAP_IOV_FRAMES frames goes out in one writev()
 * straight from the packet ring (each block's header and trailer from a small
 * array), and only then is the ring's room handed back to the worker: the
 * packet bytes are copied once, by the kernel, on their way to the file.
 * Runs until the ring is empty (with the GIL released: called through cffi).
 *
 * Return: 0, -EPROTO if the ring is corrupted, or negative errno from writev()
 *	   (what was written before stays counted)
 */
int rn_capture_drain_fd(struct rn_cap_reader *r, int fd, uint32_t ifid, uint64_t *frames,
			uint64_t *bytes)
{
	uint8_t head[RN_CAP_IOV_FRAMES][RN_PCAPNG_EPB_FIXED];
	uint8_t tail[RN_CAP_IOV_FRAMES][3 + RN_PCAPNG_EPB_TAIL];
	struct iovec iov[3 * RN_CAP_IOV_FRAMES];
	const uint8_t *rec;
	struct rn_cap_pkt h;
	uint32_t len, caplen, n;
	int rc = 0, niov;

	*frames = 0;
	*bytes = 0;
	do {
		n = 0;
		niov = 0;
		while (n < RN_CAP_IOV_FRAMES) {
			rc = rn_ring_peek(&r->pkt, &rec, &len);
			if (rc <= 0)
				break;
			if (len < sizeof(h)) {
				rn_ring_consume(&r->pkt);
				continue;
			}
			memcpy(&h, rec, sizeof(h));
			caplen = len - (uint32_t)sizeof(h);
			iov[niov].iov_base = head[n];
			iov[niov++].iov_len = RN_PCAPNG_EPB_FIXED;
			iov[niov].iov_base = (void *)(rec + sizeof(h));
			iov[niov++].iov_len = caplen;
			iov[niov].iov_base = tail[n];
			iov[niov++].iov_len = rn_capture_epb(&h, caplen, ifid, head[n], tail[n]);
			*bytes += RN_PCAPNG_EPB_FIXED + caplen + iov[niov - 1].iov_len;
			rn_ring_consume(&r->pkt);
			n++;
		}
		if (rc < 0)
			return rc;
		if (niov)
			rc = rn_capture_writev_all(fd, iov, niov);
		rn_ring_release(&r->pkt);
		if (rc < 0)
			return rc;
		*frames += n;
	} while (n == RN_CAP_IOV_FRAMES);
	return 0;
}

/**
 * rn_capture_drain_events() - orchestrator: take flow records from the event ring
 * @r:		reader
 * @out:	where the records go
 * @max:	room in @out
 *
 * Return: records taken, or -EPROTO if the ring is corrupted
 */
int rn_capture_drain_events(struct rn_cap_reader *r, struct rn_cap_event *out, uint32_t max)
{
	const uint8_t *rec;
	uint32_t len, n = 0;
	int rc;

	while (n < max) {
		rc = rn_ring_peek(&r->ev, &rec, &len);
		if (rc < 0)
			return rc;
		if (!rc)
			break;
		if (len == sizeof(*out))
			memcpy(&out[n++], rec, sizeof(*out));
		rn_ring_consume(&r->ev);
	}
	rn_ring_release(&r->ev);
	return (int)n;
}
