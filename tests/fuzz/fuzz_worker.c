/* fuzz_worker.c - libFuzzer harness: the worker's frame intake and TCP input path
 *
 * Each input is a sequence of records {u8 mode, u16le len, len bytes}. A record
 * is a frame for ring to_worker, pushed as it is or, with mode bit FIX, with its
 * addresses, TCP destination port and checksums made valid so that the fuzzer
 * reaches the TCP state machine behind the header checks: the destination is
 * the gateway, which maps to a listener of this process on host loopback (the
 * worker is also confined to loopback, whatever the frames say). Other mode
 * bits run the worker, and make the host side accept, write, half-close or
 * reset its end of the connections. A fresh worker serves each input.
 *
 * Oracles: AddressSanitizer and UBSan, the worker's accounting (one outcome
 * counter per frame taken), and every frame the worker emits being a
 * well-formed IP packet whose lengths agree with the frame.
 *
 * Build (tests/test_tcp_fuzz.py does this, with -Wall -Wextra -Werror; the
 * test-only csrc/ringtest.c is left out):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icsrc \
 *         tests/fuzz/fuzz_worker.c csrc/ *.c -o fuzz_worker -lpthread
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checksum.h"
#include "counters.h"
#include "ring.h"
#include "shm.h"
#include "worker.h"

#include "fuzz_common.h"

#define RING		(512u * 1024u)
#define MODE_FIX	0x01u	/* make addresses, port and checksums valid */
#define MODE_POLL	0x02u	/* run the worker after this record */
#define MODE_HOST	0x04u	/* let the host side act on its connections */
#define MODE_RELACK	0x08u	/* ack field relative to the last SYN-ACK's sequence */
#define MODE_PARTIAL	0x10u	/* NEEDS_CSUM with the pseudo-header sum instead */
#define MODE_TSO	0x20u	/* GSO TCPV4/TCPV6 header */
#define MAX_HOST	64

static struct rn_worker_params params;
static uint8_t *mem;
static int ev_worker, ev_ns, listeners[2];
static uint16_t ports[2];
static int host[MAX_HOST], nhost;
static uint32_t synack_seq;

static int listen_on(int family, uint16_t *port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		abort();
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 512) ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl))
		abort();
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
			    ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	rn_fuzz_params(&params, RING, 32);
	mem = aligned_alloc(4096, rn_shm_size(RING));
	ev_worker = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ev_ns = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	listeners[0] = listen_on(AF_INET, &ports[0]);
	listeners[1] = listen_on(AF_INET6, &ports[1]);
	if (!mem || ev_worker < 0 || ev_ns < 0)
		abort();
	return 0;
}

/* Make a frame's addresses, port and checksums valid, as the namespace would send it */
static void fix(uint8_t *f, uint32_t len, uint8_t mode)
{
	uint8_t *ip = f + RN_VNET_HDR_LEN, *t;
	uint32_t plen = len - RN_VNET_HDR_LEN, l3, l4len, sum;
	int v6 = (ip[0] >> 4) == 6;

	memset(f, 0, RN_VNET_HDR_LEN);
	if (v6) {
		if (plen < 40 + 20)
			return;
		l3 = 40;
		ip[0] = 0x60;
		ip[6] = 6;
		rn_put_be16(ip + 4, (uint16_t)(plen - 40));
		memcpy(ip + 8, params.guest6, 16);
		memcpy(ip + 24, params.gw6, 16);
	} else {
		if (plen < 20 + 20)
			return;
		l3 = 20;
		ip[0] = 0x45;
		ip[9] = 6;
		ip[6] &= 0x40;	/* no fragments */
		ip[7] = 0;
		rn_put_be16(ip + 2, (uint16_t)(plen > 65535 ? 65535 : plen));
		memcpy(ip + 12, params.guest4, 4);
		memcpy(ip + 16, params.gw4, 4);
		ip[10] = ip[11] = 0;
		rn_put_be16(ip + 10, rn_csum(ip, 20, 0));
		if (plen > 65535)
			return;
	}
	t = ip + l3;
	l4len = plen - l3;
	if (!rn_be16(t))
		t[1] = 1;
	rn_put_be16(t + 2, ports[v6]);
	if (mode & MODE_RELACK)
		rn_put_be32(t + 8, synack_seq + 1 + (rn_be32(t + 8) & 0xffff));
	sum = v6 ? rn_csum_pseudo6(ip + 8, ip + 24, 6, l4len) :
		   rn_csum_pseudo4(ip + 12, ip + 16, 6, (uint16_t)l4len);
	t[16] = t[17] = 0;
	if (mode & MODE_PARTIAL) {
		f[0] = RN_VNET_F_NEEDS_CSUM;
		f[6] = (uint8_t)l3;
		f[8] = 16;
		rn_put_be16(t + 16, rn_csum_fold(sum));
	} else {
		rn_put_be16(t + 16, rn_csum(t, l4len, sum));
	}
	if (mode & MODE_TSO) {
		f[0] = RN_VNET_F_NEEDS_CSUM;
		f[1] = v6 ? RN_VNET_GSO_TCPV6 : RN_VNET_GSO_TCPV4;
		f[4] = 0xb4;	/* gso_size 1460 */
		f[5] = 0x05;
		f[6] = (uint8_t)l3;
		f[8] = 16;
		t[16] = t[17] = 0;
		rn_put_be16(t + 16, rn_csum_fold(sum));
	}
}

/* Every frame the worker emits must be a consistent IP packet */
static void check_out(struct rn_ring *to_ns)
{
	const uint8_t *fr;
	uint32_t len;
	int rc;

	while ((rc = rn_ring_peek(to_ns, &fr, &len)) == 1) {
		const uint8_t *ip = fr + RN_VNET_HDR_LEN;

		if (len < RN_VNET_HDR_LEN + 20)
			abort();
		if ((ip[0] >> 4) == 4) {
			if (rn_be16(ip + 2) != len - RN_VNET_HDR_LEN || rn_csum(ip, 20, 0))
				abort();
			if (ip[9] == 6 && (ip[33] & 0x12) == 0x12)
				synack_seq = rn_be32(ip + 24);
		} else if ((ip[0] >> 4) == 6) {
			if (len < RN_VNET_HDR_LEN + 40 || rn_be16(ip + 4) != len - RN_VNET_HDR_LEN - 40)
				abort();
			if (ip[6] == 6 && len >= RN_VNET_HDR_LEN + 60 && (ip[53] & 0x12) == 0x12)
				synack_seq = rn_be32(ip + 44);
		} else {
			abort();
		}
		if ((fr[0] & RN_VNET_F_NEEDS_CSUM) &&
		    (uint32_t)fr[6] + fr[8] + 2 > len - RN_VNET_HDR_LEN)
			abort();
		rn_ring_consume(to_ns);
	}
	if (rc < 0)
		abort();
	rn_ring_release(to_ns);
}

/* The host side: accept new connections, then write, half-close or reset them */
static void host_act(uint8_t how)
{
	static const char junk[4096];
	struct linger lg = { 1, 0 };
	int i, fd;

	for (i = 0; i < 2; i++) {
		while (nhost < MAX_HOST && (fd = accept4(listeners[i], NULL, NULL,
							 SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
			host[nhost++] = fd;
	}
	for (i = 0; i < nhost; i++) {
		if (host[i] < 0)
			continue;
		switch ((how >> 6) ^ (i & 3)) {
		case 0:
			if (send(host[i], junk, sizeof(junk) >> (i & 7), MSG_DONTWAIT) < 0 &&
			    errno != EAGAIN)
				break;
			break;
		case 1:
			shutdown(host[i], SHUT_WR);
			break;
		case 2:
			setsockopt(host[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(host[i]);
			host[i] = -1;
			break;
		default:
			while (recv(host[i], (void *)junk, 0, MSG_DONTWAIT) > 0)
				;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t frame[RN_FRAME_MAX];
	struct rn_ring to_worker, to_ns;
	struct rn_shm_hdr *hdr = (struct rn_shm_hdr *)mem;
	uint64_t ctr[RN_CTR_SLOTS] = { 0 }, outcomes = 0;
	struct rn_worker *w;
	uint32_t len, i;
	uint8_t mode, *p;
	int err;

	memset(mem, 0, RN_SHM_HDR_SIZE);
	hdr->magic = RN_SHM_MAGIC;
	hdr->version = RN_SHM_VERSION;
	if (rn_ring_attach(&to_worker, rn_shm_to_worker(mem, RING), RING, RN_FRAME_MAX, 1) ||
	    rn_ring_attach(&to_ns, rn_shm_to_ns(mem, RING), RING, RN_FRAME_MAX, 1))
		abort();
	if (rn_worker_new(&w, &params, mem, rn_shm_size(RING), ctr, ev_worker, ev_ns))
		abort();
	synack_seq = 0;
	nhost = 0;

	while (size >= 3) {
		mode = data[0];
		len = (uint32_t)data[1] | (uint32_t)data[2] << 8;
		data += 3;
		size -= 3;
		if (len > size)
			len = (uint32_t)size;
		memcpy(frame, data, len);
		if ((mode & MODE_FIX) && len >= RN_VNET_HDR_LEN + 1)
			fix(frame, len, mode);
		data += len;
		size -= len;

		p = rn_ring_reserve(&to_worker, len, &err);
		if (!p) {
			rn_ring_publish(&to_worker);
			if (rn_worker_poll(w) < 0)
				abort();
			check_out(&to_ns);
			p = rn_ring_reserve(&to_worker, len, &err);
			if (!p)
				abort();
		}
		memcpy(p, frame, len);
		rn_ring_commit(&to_worker, len);
		rn_ring_publish(&to_worker);
		if (mode & MODE_POLL) {
			if (rn_worker_poll(w) < 0)
				abort();
			check_out(&to_ns);
		}
		if (mode & MODE_HOST) {
			host_act(mode);
			if (rn_worker_run(w, 0) < 0)
				abort();
			check_out(&to_ns);
		}
	}
	if (rn_worker_poll(w) < 0)
		abort();
	check_out(&to_ns);

	/* Accounting: each frame taken ended in exactly one outcome counter */
	for (i = 0; i < rn_worker_counter_count(); i++) {
		const char *n = rn_worker_counter_name(i);

		if (!strncmp(n, "drop_", 5) || !strcmp(n, "tcp_segments_in") ||
		    !strcmp(n, "policy_refused") || !strncmp(n, "flows_refused_", 14) ||
		    !strcmp(n, "icmp_echo_replies") || !strcmp(n, "icmp6_echo_replies") ||
		    !strcmp(n, "ring_full") || !strcmp(n, "fault_drop_in") ||
		    !strcmp(n, "udp_in") || !strcmp(n, "icmp_echo_fwd") ||
		    !strcmp(n, "icmp6_echo_fwd") || !strcmp(n, "icmp_ping_denied") ||
		    !strcmp(n, "frag_held"))
			outcomes += ctr[i];
	}
	if (getenv("RINGNET_FUZZ_DEBUG")) {
		for (i = 0; i < rn_worker_counter_count(); i++) {
			if (ctr[i])
				fprintf(stderr, "%s=%llu ", rn_worker_counter_name(i),
					(unsigned long long)ctr[i]);
		}
		fprintf(stderr, "\n");
	}
	if (outcomes != ctr[RN_WCTR_frames_in]) {
		fprintf(stderr, "accounting: %llu outcomes for %llu frames\n",
			(unsigned long long)outcomes, (unsigned long long)ctr[RN_WCTR_frames_in]);
		abort();
	}

	rn_worker_free(w);
	for (i = 0; i < (uint32_t)nhost; i++) {
		if (host[i] >= 0)
			close(host[i]);
	}
	return 0;
}
