/* fuzz_ring.c - libFuzzer harness: a hostile producer writing ring to_worker in memory
 *
 * The namespace side of a worker's shared memory is untrusted: its root can
 * write any bytes into the rings. Here the fuzzer is that producer. Its input
 * is a start index and the bytes to_ns starts with unconsumed, followed by a
 * script of operations on the shared mapping:
 * honest frames (with PAD records at the wrap), record headers with any
 * length, flags and advance, raw 32-bit stores anywhere in the data area,
 * publication of all, part or none of what was written, arbitrary head
 * values, arbitrary tail values on to_ns (whose consumer is the namespace
 * too: it releases only what this operation says), and runs of the worker's real consumer path, rn_worker_poll(), which
 * takes frames with rn_ring_peek()/rn_ring_consume()/rn_ring_release() and
 * hands them to rn_tap_input(). A fresh worker serves each input.
 *
 * Oracles:
 * - AddressSanitizer and UBSan; the bytes between the end of each ring's
 *   data area and the next page (the rest of the ring's mapping) are poisoned,
 *   so a record read past the end of the data area is caught too;
 * - libFuzzer's -timeout: no input may make the consumer loop forever;
 * - a poll either fails with -EPROTO, the worker's production report of a
 *   corrupted ring, or leaves to_worker's tail exactly at the head it
 *   found (everything published was consumed, the tail never passes it);
 * - a published head that is unaligned or more than a ring ahead of the tail
 *   is always reported;
 * - once reported, the error sticks: every later poll returns it, and the
 *   worker takes no more frames and never moves the tail again.
 *
 * Build (tests/test_ring_fuzz.py does this, with -Wall -Wextra -Werror):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icsrc \
 *         tests/fuzz/fuzz_ring.c csrc/ *.c -o fuzz_ring -lpthread
 */
#include <errno.h>
#include <sanitizer/asan_interface.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "counters.h"
#include "ring.h"
#include "shm.h"
#include "worker.h"

#include "fuzz_common.h"

#define RING		(512u * 1024u)
#define MASK		(RING - 1u)
#define ALIGN16(x)	(((x) + 15u) & ~15u)

enum { OP_FRAME, OP_HDR, OP_RAW, OP_PUBLISH, OP_HEAD, OP_POLL, OP_NS_TAIL, OP_PAD, OP_COUNT };

static struct rn_worker_params params;
static uint8_t *mem;
static int ev_worker, ev_ns;

/**
 * struct input - the rest of the fuzzer's input, read front to back
 * @p:		next byte
 * @n:		bytes left
 */
struct input {
	const uint8_t *p;
	size_t n;
};

static uint32_t get(struct input *in, unsigned int bytes)
{
	uint32_t v = 0;
	unsigned int i;

	for (i = 0; i < bytes && in->n; i++, in->n--)
		v |= (uint32_t)*in->p++ << (8 * i);
	return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	rn_fuzz_params(&params, RING, 8);
	mem = aligned_alloc(4096, rn_shm_size(RING));
	ev_worker = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ev_ns = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!mem || ev_worker < 0 || ev_ns < 0)
		abort();
	return 0;
}

/* The rest of each ring's mapping after its data area: nobody may touch it */
static void poison(int on)
{
	size_t slack = rn_ring_mem_size(RING) - RN_RING_CTRL_SIZE - RING;
	uint8_t *a = (uint8_t *)rn_shm_to_worker(mem, RING) + RN_RING_CTRL_SIZE + RING;
	uint8_t *b = (uint8_t *)rn_shm_to_ns(mem, RING) + RN_RING_CTRL_SIZE + RING;

	if (on) {
		ASAN_POISON_MEMORY_REGION(a, slack);
		ASAN_POISON_MEMORY_REGION(b, slack);
	} else {
		ASAN_UNPOISON_MEMORY_REGION(a, slack);
		ASAN_UNPOISON_MEMORY_REGION(b, slack);
	}
}

static void fail(const char *what, uint32_t a, uint32_t b)
{
	fprintf(stderr, "fuzz_ring: %s (%#x, %#x)\n", what, a, b);
	abort();
}

/**
 * struct prod - the hostile producer's state
 * @ctrl:	to_worker's control block
 * @data:	to_worker's data area
 * @ns:		to_ns's control block (the namespace consumes it)
 * @head:	bytes written so far, ahead of ctrl->head until published
 */
struct prod {
	struct rn_ring_ctrl *ctrl;
	uint8_t *data;
	struct rn_ring_ctrl *ns;
	uint32_t head;
};

/* A record header at @pos (4-byte aligned), its halves wrapping like the indices */
static void put_hdr(struct prod *pr, uint32_t pos, uint32_t len, uint32_t flags)
{
	memcpy(pr->data + (pos & MASK), &len, 4);
	memcpy(pr->data + ((pos + 4) & MASK), &flags, 4);
}

/* An honest frame: a PAD record first if it does not fit before the end */
static void op_frame(struct prod *pr, struct input *in)
{
	uint32_t len = get(in, 2), pos = pr->head & MASK & ~3u, need, take;

	if (len > RN_FRAME_MAX)
		len = RN_FRAME_MAX;
	need = ALIGN16(RN_RING_REC_HDR + len);
	if (RING - pos < need) {
		put_hdr(pr, pos, RING - pos - RN_RING_REC_HDR, RN_RING_F_PAD);
		pr->head += RING - pos;
		pos = 0;
	}
	put_hdr(pr, pos, len, 0);
	take = len < in->n ? len : (uint32_t)in->n;
	memcpy(pr->data + pos + RN_RING_REC_HDR, in->p, take);
	in->p += take;
	in->n -= take;
	pr->head += need;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct rn_shm_hdr *hdr = (struct rn_shm_hdr *)mem;
	uint64_t ctr[RN_CTR_SLOTS] = { 0 }, frames_err = 0;
	struct prod pr;
	struct rn_worker *w;
	uint32_t start, tail_err = 0, t0, h, v, pos;
	int rc, err = 0, saw_err = 0;
	uint8_t op;

	poison(0);
	memset(mem, 0, rn_shm_size(RING));
	hdr->magic = RN_SHM_MAGIC;
	hdr->version = RN_SHM_VERSION;
	pr.ctrl = rn_shm_to_worker(mem, RING);
	pr.data = (uint8_t *)pr.ctrl + RN_RING_CTRL_SIZE;
	pr.ns = rn_shm_to_ns(mem, RING);

	/* Where the free-running indices start: anywhere, so that their 32-bit
	 * wrap is reached; an odd start is a hostile, inconsistent control block */
	start = get(&in, 4);
	if (start & 1) {
		pr.ctrl->head = start;
		pr.ctrl->tail = get(&in, 4);
	} else {
		pr.ctrl->head = pr.ctrl->tail = start & ~15u;
	}
	/* to_ns starts with this many bytes the namespace has not consumed yet,
	 * so that the worker finds it full and reads the namespace's tail */
	pr.ns->head = start & ~15u;
	pr.ns->tail = pr.ns->head - get(&in, 4);
	pr.head = pr.ctrl->head;
	rc = rn_worker_new(&w, &params, mem, rn_shm_size(RING), ctr, ev_worker, ev_ns);
	if (rc) {
		h = pr.ctrl->head;
		if (rc != -EPROTO || (!(h & 15) && !(pr.ctrl->tail & 15) &&
				      h - pr.ctrl->tail <= RING && !(pr.ns->tail & 15) &&
				      pr.ns->head - pr.ns->tail <= RING))
			fail("rn_worker_new", (uint32_t)rc, h);
		return 0;
	}
	poison(1);

	for (;;) {
		op = in.n ? (uint8_t)(get(&in, 1) % OP_COUNT) : OP_POLL;
		switch (op) {
		case OP_FRAME:
			op_frame(&pr, &in);
			break;
		case OP_HDR:	/* a record header with anything in it */
			pos = pr.head & MASK & ~3u;
			v = get(&in, 4);
			put_hdr(&pr, pos, v, get(&in, 1) % 4 ? get(&in, 1) & 3 : get(&in, 4));
			pr.head += get(&in, 2) * 4u;
			break;
		case OP_RAW:
			pos = get(&in, 4) & MASK & ~3u;
			v = get(&in, 4);
			memcpy(pr.data + pos, &v, 4);
			break;
		case OP_PUBLISH:	/* all, or all but the last 16-byte units */
			__atomic_store_n(&pr.ctrl->head, pr.head - 16u * (get(&in, 1) & 7),
					 __ATOMIC_RELEASE);
			break;
		case OP_HEAD:
			pr.head = get(&in, 4);
			__atomic_store_n(&pr.ctrl->head, pr.head, __ATOMIC_RELEASE);
			break;
		case OP_NS_TAIL:	/* the namespace consumes all but this many bytes */
			v = __atomic_load_n(&pr.ns->head, __ATOMIC_ACQUIRE) - get(&in, 4);
			__atomic_store_n(&pr.ns->tail, v, __ATOMIC_RELEASE);
			break;
		case OP_PAD:	/* a PAD record to the end, its length off by a little */
			pos = pr.head & MASK & ~3u;
			put_hdr(&pr, pos, RING - pos - RN_RING_REC_HDR + (int8_t)get(&in, 1) / 64,
				RN_RING_F_PAD);
			pr.head += RING - pos;
			break;
		case OP_POLL:
			t0 = __atomic_load_n(&pr.ctrl->tail, __ATOMIC_ACQUIRE);
			h = __atomic_load_n(&pr.ctrl->head, __ATOMIC_ACQUIRE);
			rc = rn_worker_poll(w);
			v = __atomic_load_n(&pr.ctrl->tail, __ATOMIC_ACQUIRE);
			if (saw_err) {
				if (rc != err || v != tail_err || ctr[RN_WCTR_frames_in] != frames_err)
					fail("worker went on after reporting a corrupted ring",
					     (uint32_t)rc, v);
			} else if (rc < 0) {
				if (rc != -EPROTO)
					fail("corruption reported as something else", (uint32_t)rc, v);
				saw_err = 1;
				err = rc;
				tail_err = v;
				frames_err = ctr[RN_WCTR_frames_in];
			} else {
				if ((h & 15) || h - t0 > RING)
					fail("impossible head not reported", h, t0);
				if (v != h)
					fail("poll left the tail short of or past the head", v, h);
			}
			break;
		}
		if (op == OP_POLL && !in.n)
			break;
	}
	if (getenv("RINGNET_FUZZ_DEBUG"))
		fprintf(stderr, "fuzz_ring: frames_in=%llu frames_out=%llu err=%d\n",
			(unsigned long long)ctr[RN_WCTR_frames_in],
			(unsigned long long)ctr[RN_WCTR_frames_out], err);
	poison(0);
	rn_worker_free(w);
	return 0;
}
