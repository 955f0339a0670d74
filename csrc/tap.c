/* tap.c - the worker's end of the namespace rings: frame intake, validation, output
 *
 * Theory of operation
 * -------------------
 * This file plays the part of passt's tap.c: it is where the untrusted
 * namespace side's bytes enter the worker, and where frames for it are
 * written. worker.c's event loop hands it each frame of ring to_worker
 * (rn_tap_input()); protocol cores write their frames into ring to_ns
 * through rn_worker_tx_reserve() and rn_worker_tx_commit().
 *
 * Intake: the frame stays in shared memory, where the namespace side may
 * rewrite it at any time. The first RN_WORKER_HDR_COPY bytes are copied into
 * the worker's private buffer and everything is parsed and validated from
 * that copy only, through the bounds-checked accessor of packet.h; a
 * validated length is never read again from shared memory. Protocol code
 * that needs more of the frame copies it with rn_worker_pull(). The checks,
 * in order, each with its own drop counter: frame length (drop_short),
 * virtio-net header (drop_vnet), IP version (drop_ip_version), IPv4 header
 * and total length (drop_ipv4_header), IPv4 header checksum
 * (drop_ipv4_csum), IPv6 payload length (drop_ipv6_header), source address
 * (drop_src_addr), multicast and broadcast destinations (drop_multicast),
 * IPv6 extension headers (drop_ext_header), offload fields against the
 * packet (drop_vnet; drop_gso_size for a USO frame of too many segments),
 * flow ownership (drop_wrong_owner; a fragment belongs to the worker of its
 * address pair). rn_tap_l4_input() then hands fragments to frag.c, which
 * reassembles them and feeds the whole datagram back through
 * rn_worker_reinput(), and dispatches the rest on the transport protocol:
 * tcp.c, udp.c, icmp.c.
 *
 * Accounting: every frame taken from to_worker adds to frames_in and bytes_in
 * and then to exactly one outcome counter: a drop_* reason, a reply counter,
 * or ring_full. Handlers return that counter's index and rn_tap_input() adds
 * it, so no path can count a frame twice or not at all.
 *
 * Output: rn_worker_tx_reserve() reserves a frame in to_ns with a zeroed
 * virtio-net header (ip.c's rn_ip_build() fills it and the IP header);
 * rn_worker_tx_commit() commits it, through the output fault injector when
 * that is on (fault.c). With down emulation on (netem.c), the room is in
 * the emulation queue instead and the commit queues the frame there; it
 * enters to_ns when it is due. Frames become visible when worker.c publishes
 * the ring, once per batch.
 */
#include <errno.h>
#include <string.h>

#include "capture.h"
#include "checksum.h"
#include "fault.h"
#include "flow.h"
#include "frag.h"
#include "icmp.h"
#include "ip.h"
#include "netem.h"
#include "tap.h"
#include "tcp.h"
#include "udp.h"
#include "worker.h"

#define RN_TAP_UDP_HDR_LEN	8u
/* Most segments a USO frame may carry: the kernel's UDP_MAX_SEGMENTS (64,
 * 128 in recent kernels) bounds what a namespace sender builds */
#define RN_TAP_USO_SEGS_MAX	128u

/**
 * rn_worker_pull() - copy more of the transport part into the private buffer
 * @w:		worker
 * @f:		frame being processed
 * @n:		transport bytes wanted, clamped to f->l4len
 *
 * Updates f->l4 and f->copied. The bytes come from shared memory once; the
 * range lies inside the frame because 12 + f->pktlen <= f->len.
 *
 * Return: transport bytes now present in f->l4
 */
uint32_t rn_worker_pull(struct rn_worker *w, struct rn_frame *f, uint32_t n)
{
	uint32_t l4off = RN_VNET_HDR_LEN + f->l3len, want, end;

	if (n > f->l4len)
		n = f->l4len;
	want = l4off + n;
	if (want > f->copied) {
		memcpy(w->buf + f->copied, f->shm + f->copied, want - f->copied);
		f->copied = want;
	}
	end = RN_VNET_HDR_LEN + f->pktlen;
	if (end > f->copied)
		end = f->copied;
	f->l4.p = w->buf + l4off;
	f->l4.len = end - l4off;
	return f->l4.len;
}

/**
 * rn_worker_csum_complete() - fill in a NEEDS_CSUM partial checksum, privately
 * @w:		worker
 * @f:		frame with NEEDS_CSUM, transport part fully pulled
 *
 * Does what a NIC would: the sum from csum_start to the end of the packet
 * (the field holds the pseudo-header sum) is folded, complemented and stored
 * at csum_start + csum_offset, in the private copy only. The range was
 * validated against the packet in rn_tap_vnet_l3().
 */
void rn_worker_csum_complete(struct rn_worker *w, struct rn_frame *f)
{
	uint32_t start = f->vnet.csum_start, field = start + f->vnet.csum_offset;
	uint8_t *pkt = w->buf + RN_VNET_HDR_LEN;

	if (RN_VNET_HDR_LEN + f->pktlen > f->copied)
		return;
	rn_put_be16(pkt + field, rn_csum(pkt + start, f->pktlen - start, 0));
}

/**
 * rn_worker_tx_reserve() - room for a frame to the namespace, vnet header zeroed
 * @w:		worker
 * @pktlen:	length of the IP packet that will follow the virtio-net header
 * @err:	set to 0 if the ring is full, or to a negative errno that
 *		finishes the worker: -EPROTO if the ring is corrupted, -EINVAL if
 *		@pktlen exceeds RN_PKT_MAX (a bug in the caller)
 *
 * Return: where the IP packet goes, or NULL (see @err)
 */
uint8_t *rn_worker_tx_reserve(struct rn_worker *w, uint32_t pktlen, int *err)
{
	uint8_t *p;

	*err = 0;
	if (pktlen > RN_PKT_MAX) {
		*err = rn_worker_fatal(w, -EINVAL);
		return NULL;
	}
	if (w->netem.down.on)
		p = rn_netem_tx_reserve(w, RN_VNET_HDR_LEN + pktlen, err);
	else
		p = rn_ring_reserve(&w->tx, RN_VNET_HDR_LEN + pktlen, err);
	if (!p) {
		if (*err)
			*err = rn_worker_fatal(w, *err);
		return NULL;
	}
	memset(p, 0, RN_VNET_HDR_LEN);
	w->tx_resv = p;
	return p + RN_VNET_HDR_LEN;
}

/**
 * rn_tap_put() - commit a frame of @len bytes (vnet header included)
 * @w:		worker
 * @frame:	the frame reserved in to_ns (vnet header first), for the capture
 * @len:	frame length
 */
void rn_tap_put(struct rn_worker *w, const uint8_t *frame, uint32_t len)
{
	if (w->cap && w->cap->snaplen)
		rn_capture_frame(w, frame, len, RN_CAP_DIR_IN);
	rn_ring_commit(&w->tx, len);
	rn_ctr_add(w->ctr, RN_WCTR_frames_out, 1);
	rn_ctr_add(w->ctr, RN_WCTR_bytes_out, len);
}

/**
 * rn_tap_copy() - put a copy of a frame into to_ns, if it fits
 * @w:		worker
 * @frame:	frame, vnet header first (not in the current reservation)
 * @len:	its length
 *
 * Return: true if it was committed
 */
int rn_tap_copy(struct rn_worker *w, const uint8_t *frame, uint32_t len)
{
	uint8_t *p;
	int err;

	p = rn_ring_reserve(&w->tx, len, &err);
	if (!p) {
		if (err)
			rn_worker_fatal(w, err);
		return 0;
	}
	memcpy(p, frame, len);
	rn_tap_put(w, p, len);
	return 1;
}

/**
 * rn_worker_tx_commit() - finish the frame reserved by rn_worker_tx_reserve()
 * @w:		worker
 * @pktlen:	IP packet length, at most what was reserved
 *
 * The frame becomes visible to the namespace at the end of the batch. With
 * output faults or down emulation on, it may be lost, doubled, delayed or
 * reordered (callers cannot tell, as on a lossy link).
 */
void rn_worker_tx_commit(struct rn_worker *w, uint32_t pktlen)
{
	uint32_t len = RN_VNET_HDR_LEN + pktlen;

	/* One branch for both hooks, which are exclusive */
	if (w->fout.on | w->netem.down.on) {
		rn_netem_tx_commit(w, len);
		return;
	}
	rn_tap_put(w, w->tx_resv, len);
}

/**
 * rn_tap_vnet() - parse and check the virtio-net header on its own
 * @f:		frame; f->vnet is filled
 * @frame:	private copy of the frame
 *
 * Accepts the flags NEEDS_CSUM and DATA_VALID and the GSO types NONE, TCPV4,
 * TCPV6 and UDP_L4 (the latter three with a segment size, and possibly ECN).
 *
 * Return: 0, or the drop counter
 */
static int rn_tap_vnet(struct rn_frame *f, const struct rn_pkt *frame)
{
	const uint8_t *h = rn_pkt_get(frame, 0, RN_VNET_HDR_LEN);
	struct rn_vnet_hdr *v = &f->vnet;

	if (!h)
		return RN_WCTR_drop_short;
	rn_vnet_get(v, h);

	if (v->flags & ~(RN_VNET_F_NEEDS_CSUM | RN_VNET_F_DATA_VALID))
		return RN_WCTR_drop_vnet;
	if (v->gso_type == RN_VNET_GSO_NONE)
		return 0;
	switch (v->gso_type & ~RN_VNET_GSO_ECN) {
	case RN_VNET_GSO_TCPV4:
	case RN_VNET_GSO_TCPV6:
	case RN_VNET_GSO_UDP_L4:
		return v->gso_size ? 0 : RN_WCTR_drop_vnet;
	}
	return RN_WCTR_drop_vnet;
}

/**
 * rn_tap_uso_segs() - datagrams a USO frame's payload makes
 * @f:		frame with gso_type UDP_L4 and the IP header parsed
 *
 * Return: segments of gso_size bytes (the last may be shorter) in the
 *	   payload behind a UDP header; 1 for a payload of gso_size or less
 */
static uint32_t rn_tap_uso_segs(const struct rn_frame *f)
{
	uint32_t payload = f->l4len > RN_TAP_UDP_HDR_LEN ? f->l4len - RN_TAP_UDP_HDR_LEN : 0;

	if (payload <= f->vnet.gso_size)
		return 1;
	return (payload + f->vnet.gso_size - 1) / f->vnet.gso_size;
}

/**
 * rn_tap_vnet_l3() - check the virtio-net header against the parsed packet
 * @f:		frame with the IP header parsed
 *
 * A NEEDS_CSUM checksum range must lie in the transport part of the packet,
 * and a GSO type must match the IP version and transport protocol. A USO
 * frame may not cut its payload into more than RN_TAP_USO_SEGS_MAX segments
 * (drop_gso_size): udp.c sends one datagram per segment when the host
 * refuses UDP_SEGMENT, and gso_size 1 would make that 65,000 sendto() calls.
 *
 * Return: 0, or the drop counter
 */
static int rn_tap_vnet_l3(const struct rn_frame *f)
{
	const struct rn_vnet_hdr *v = &f->vnet;

	if (v->flags & RN_VNET_F_NEEDS_CSUM) {
		if (v->csum_start < f->l3len || v->csum_start > f->pktlen ||
		    (uint32_t)v->csum_offset + 2 > f->pktlen - v->csum_start)
			return RN_WCTR_drop_vnet;
	}
	switch (v->gso_type & ~RN_VNET_GSO_ECN) {
	case RN_VNET_GSO_NONE:
		return 0;
	case RN_VNET_GSO_TCPV4:
		return f->family == 4 && f->proto == RN_IPPROTO_TCP ? 0 : RN_WCTR_drop_vnet;
	case RN_VNET_GSO_TCPV6:
		return f->family == 6 && f->proto == RN_IPPROTO_TCP ? 0 : RN_WCTR_drop_vnet;
	case RN_VNET_GSO_UDP_L4:
		if (f->proto != RN_IPPROTO_UDP)
			return RN_WCTR_drop_vnet;
		return rn_tap_uso_segs(f) > RN_TAP_USO_SEGS_MAX ? RN_WCTR_drop_gso_size : 0;
	}
	return RN_WCTR_drop_vnet;
}

/**
 * rn_tap_ip4() - validate an IPv4 header
 * @w:		worker
 * @f:		frame; the IP fields are filled
 * @pkt:	private copy of the IP packet (bytes present, maybe truncated copy)
 * @present:	bytes of the IP packet in the frame
 *
 * Return: 0, or the drop counter
 */
static int rn_tap_ip4(const struct rn_worker *w, struct rn_frame *f,
		      const struct rn_pkt *pkt, uint32_t present)
{
	const uint8_t *h = rn_pkt_get(pkt, 0, RN_IP4_HDR_LEN);
	uint32_t ihl, tot;

	if (!h)
		return RN_WCTR_drop_short;
	ihl = (h[0] & 0xfu) * 4u;
	if (ihl < RN_IP4_HDR_LEN || ihl > present || !(h = rn_pkt_get(pkt, 0, ihl)))
		return RN_WCTR_drop_ipv4_header;
	tot = rn_be16(h + 2);
	if (tot < ihl || tot > present)
		return RN_WCTR_drop_ipv4_header;
	if (rn_csum(h, ihl, 0))
		return RN_WCTR_drop_ipv4_csum;

	f->family = 4;
	f->proto = h[9];
	f->l3len = (uint16_t)ihl;
	f->pktlen = tot;
	f->l4len = tot - ihl;
	f->saddr = h + 12;
	f->daddr = h + 16;
	f->l3.p = h;
	f->l3.len = ihl;

	if (memcmp(f->saddr, w->p.guest4, 4))
		return RN_WCTR_drop_src_addr;
	if ((f->daddr[0] & 0xf0) == 0xe0 || !memcmp(f->daddr, "\xff\xff\xff\xff", 4))
		return RN_WCTR_drop_multicast;
	f->frag = !!(rn_be16(h + 6) & (RN_IPV4_MF | RN_IPV4_OFFSET));
	return 0;
}

/**
 * rn_tap_ip6() - validate an IPv6 header
 * @w:		worker
 * @f:		frame; the IP fields are filled
 * @pkt:	private copy of the IP packet
 * @present:	bytes of the IP packet in the frame
 *
 * Link-local sources are accepted here and left to rn_tap_l4_input().
 *
 * Return: 0, or the drop counter
 */
static int rn_tap_ip6(const struct rn_worker *w, struct rn_frame *f,
		      const struct rn_pkt *pkt, uint32_t present)
{
	const uint8_t *h = rn_pkt_get(pkt, 0, RN_IP6_HDR_LEN);
	uint32_t plen;

	if (!h || present < RN_IP6_HDR_LEN)
		return RN_WCTR_drop_short;
	plen = rn_be16(h + 4);
	/* Zero payload length: a jumbogram or a BIG TCP GSO frame */
	if (!plen && (h[6] == 0 || f->vnet.gso_type != RN_VNET_GSO_NONE))
		return RN_WCTR_drop_ipv6_header;
	if (plen > present - RN_IP6_HDR_LEN)
		return RN_WCTR_drop_ipv6_header;

	f->family = 6;
	f->proto = h[6];
	f->l3len = RN_IP6_HDR_LEN;
	f->pktlen = RN_IP6_HDR_LEN + plen;
	f->l4len = plen;
	f->saddr = h + 8;
	f->daddr = h + 24;
	f->l3.p = h;
	f->l3.len = RN_IP6_HDR_LEN;

	if (memcmp(f->saddr, w->p.guest6, 16) &&
	    !(f->saddr[0] == 0xfe && (f->saddr[1] & 0xc0) == 0x80))
		return RN_WCTR_drop_src_addr;
	if (f->daddr[0] == 0xff)
		return RN_WCTR_drop_multicast;
	f->frag = f->proto == RN_IPPROTO_FRAGMENT;
	if (rn_ip6_ext(f->proto))
		return RN_WCTR_drop_ext_header;
	return 0;
}

/**
 * rn_tap_l4_input() - hand a validated frame to its protocol's handler
 * @w:		worker
 * @f:		validated frame owned by this worker
 *
 * The one place that knows which protocols the worker handles: TCP and UDP
 * cores are added here. IPv6 frames from link-local sources (neighbour
 * discovery and the like) are not handled yet.
 *
 * Return: the counter recording what became of the frame, or negative errno
 *	   when the worker must stop
 */
static int rn_tap_l4_input(struct rn_worker *w, struct rn_frame *f)
{
	if (f->family == 6 && memcmp(f->saddr, w->p.guest6, 16))
		return RN_WCTR_drop_unhandled_proto;
	if (f->frag)
		return rn_frag_input(w, f);

	switch (f->proto) {
	case RN_IPPROTO_UDP:
		return rn_udp_input(w, f);
	case RN_IPPROTO_TCP:
		return rn_tcp_input(w, f);
	case RN_IPPROTO_ICMP:
		if (f->family == 4)
			return rn_icmp_input(w, f);
		break;
	case RN_IPPROTO_ICMPV6:
		if (f->family == 6)
			return rn_icmp_input(w, f);
		break;
	}
	return RN_WCTR_drop_unhandled_proto;
}

/**
 * rn_tap_validate() - validate a frame from its private copy
 * @w:		worker
 * @f:		frame with shm, len and copied set; the rest is filled
 *
 * Return: 0 if the frame is valid and ours, else the drop counter
 */
static int rn_tap_validate(struct rn_worker *w, struct rn_frame *f)
{
	struct rn_pkt frame = { w->buf, f->copied }, pkt;
	uint32_t present = f->len - RN_VNET_HDR_LEN;
	const uint8_t *ver;
	int drop;

	if (f->len < RN_VNET_HDR_LEN + RN_IP4_HDR_LEN)
		return RN_WCTR_drop_short;
	drop = rn_tap_vnet(f, &frame);
	if (drop)
		return drop;
	rn_pkt_sub(&frame, RN_VNET_HDR_LEN, f->copied - RN_VNET_HDR_LEN, &pkt);
	ver = rn_pkt_get(&pkt, 0, 1);
	if (!ver)
		return RN_WCTR_drop_short;

	switch (ver[0] >> 4) {
	case 4:
		drop = rn_tap_ip4(w, f, &pkt, present);
		break;
	case 6:
		drop = rn_tap_ip6(w, f, &pkt, present);
		break;
	default:
		return RN_WCTR_drop_ip_version;
	}
	if (drop)
		return drop;

	drop = rn_tap_vnet_l3(f);
	if (drop)
		return drop;

	rn_worker_pull(w, f, 0);
	if (!f->reassembled &&
	    rn_flow_owner(w->p.hash_key, w->p.nworkers, w->buf, f->copied) != w->p.index)
		return RN_WCTR_drop_wrong_owner;
	return 0;
}

/**
 * rn_tap_process() - copy, validate and dispatch a frame
 * @w:		worker
 * @f:		frame with shm and len set
 *
 * Return: the outcome counter, or negative errno when the worker must stop
 */
static int rn_tap_process(struct rn_worker *w, struct rn_frame *f)
{
	int outcome;

	f->copied = f->len < RN_WORKER_HDR_COPY ? f->len : RN_WORKER_HDR_COPY;
	memcpy(w->buf, f->shm, f->copied);
	outcome = rn_tap_validate(w, f);
	if (!outcome)
		outcome = rn_tap_l4_input(w, f);
	return outcome;
}

/**
 * rn_worker_reinput() - process a datagram frag.c reassembled, as if it came whole
 * @w:		worker
 * @frame:	virtio-net header (zero) and IP packet, in private memory
 * @len:	frame length, at most RN_FRAME_MAX
 *
 * Validated like a frame from the ring except for ownership (fragments
 * belong to the worker of their address pair); not counted in frames_in: its
 * outcome is that of the fragment that completed it.
 *
 * Return: the outcome counter, or negative errno when the worker must stop
 */
int rn_worker_reinput(struct rn_worker *w, const uint8_t *frame, uint32_t len)
{
	struct rn_frame f = { .shm = frame, .len = len, .reassembled = 1 };

	return rn_tap_process(w, &f);
}

/**
 * rn_tap_input() - process one frame from the namespace
 * @w:		worker
 * @shm:	frame in shared memory
 * @len:	frame length from the ring record, at most RN_FRAME_MAX
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_tap_input(struct rn_worker *w, const uint8_t *shm, uint32_t len)
{
	struct rn_frame f = { .shm = shm, .len = len };
	int outcome;

	rn_ctr_add(w->ctr, RN_WCTR_frames_in, 1);
	rn_ctr_add(w->ctr, RN_WCTR_bytes_in, len);

	outcome = rn_tap_process(w, &f);
	if (outcome < 0)
		return rn_worker_fatal(w, outcome);
	rn_ctr_add(w->ctr, (unsigned int)outcome, 1);
	return 0;
}
