"""The ring between two processes: millions of frames, order and content checked.

A memfd holds the ring; a forked child runs the C producer loop
(rn_ringtest_produce) while this process runs the C consumer loop
(rn_ringtest_consume), both with the NEED_WAKEUP protocol over two eventfds,
so the test measures the ring and not Python. The loops come from the test
extension (ringnet._ringnet_test, see ringnet/_ringtest.py).

Full and empty rings are not left to the scheduler: a consumer pause waits
until the producer has found the ring full and committed to block, a producer
pause until the consumer has found it empty (csrc/ringtest.c, "Pauses"). So
every count asserted here is an exact consequence of the pauses.
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from ringnet._ringtest import Side, ffi, lib, run_pair as _run_pair

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd_create")

SMALL_RING = 64 * 1024


def run_pair(size: int, frame_max: int, **kw) -> tuple[Side, Side, float]:
    """Move frames from a forked producer to this process; return both sides' reports."""
    prod, cons, elapsed = _run_pair(size, frame_max, **kw)
    assert prod.rc != -1, "the producer process failed"
    return prod, cons, elapsed


def assert_consumer_pauses(prod: Side, cons: Side, pauses: int) -> None:
    """Each acknowledged consumer pause is a full ring the producer blocked on, and each
    producer block ended with a kick of the consumer's."""
    assert cons.pauses >= pauses, cons
    assert prod.full >= cons.pauses and prod.sleeps >= cons.pauses, (prod, cons)
    assert cons.kicks >= prod.sleeps, (prod, cons)


def test_ten_million_small_frames_in_order():
    n = 10_000_000
    prod, cons, elapsed = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128,
                                   seed=1, verify=1, cpause_every=1_000_000)
    assert cons.rc == 0, cons
    assert prod.rc == 0, prod
    assert cons.frames == prod.frames == n
    assert cons.bytes == prod.bytes and 16 * n < cons.bytes < 128 * n
    # pauses at 1M .. 9M frames, each with far more than a ring's worth still to come
    assert cons.pauses == 9
    assert_consumer_pauses(prod, cons, 9)
    print(f"\n{n / elapsed / 1e6:.1f} M frames/s verified, {elapsed:.2f} s")


def test_consumer_pauses_fill_ring_often():
    n = 300_000
    prod, cons, _ = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128, seed=2,
                             verify=1, cpause_every=1000)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    # 299 pauses; only the last may find the producer done (1000 frames of 16..128
    # bytes could, in principle, fit the ring)
    assert_consumer_pauses(prod, cons, n // 1000 - 2)


def test_producer_pauses_make_consumer_sleep():
    n = 300_000
    prod, cons, _ = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128, seed=3,
                             verify=1, ppause_every=1000)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    # every producer pause (after 1000 .. 299000 frames) ends with the consumer asleep
    # on an empty ring, and each of its sleeps ended with a kick of the producer's
    assert prod.pauses == n // 1000 - 1
    assert cons.sleeps >= prod.pauses and prod.kicks >= cons.sleeps, (prod, cons)


def test_batch_of_one_and_tiny_frames():
    n = 500_000
    prod, cons, _ = run_pair(SMALL_RING, 64, nframes=n, minlen=0, maxlen=9, seed=4,
                             verify=1, batch=1)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n


def test_large_frames_up_to_frame_max():
    n = 20_000
    size = 1 << 20
    prod, cons, _ = run_pair(size, lib.RN_FRAME_MAX, nframes=n, minlen=0,
                             maxlen=lib.RN_FRAME_MAX, seed=5, verify=1, batch=4,
                             cpause_every=1000)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    assert cons.bytes > n * lib.RN_FRAME_MAX // 3
    # pauses at 1000 .. 19000 frames, each with ~32 MB still to come through a 1 MB ring
    assert cons.pauses == 19
    assert_consumer_pauses(prod, cons, 19)


# --- the checker itself must be able to fail -------------------------------------------


def _in_process_ring(size: int, frame_max: int, n: int, **kw):
    mm = mmap.mmap(-1, lib.rn_ringtest_mem_size(size))
    mem = ffi.from_buffer(mm)
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, mem, size, frame_max, 1) == 0
    p = _params(size, frame_max, n, **kw)
    st = ffi.new("struct rn_ringtest_stats *")
    assert lib.rn_ringtest_produce(mem, p, st) == 0
    return mm, mem, p


def _params(size: int, frame_max: int, n: int, **kw):
    p = ffi.new("struct rn_ringtest_params *")
    p.size, p.frame_max, p.nframes = size, frame_max, n
    p.minlen, p.maxlen, p.seed, p.batch, p.verify = 16, 128, 9, 8, 1
    p.ev_consumer = p.ev_producer = -1
    p.timeout_ms = 100
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("what", ["content", "seq", "length"])
def test_consumer_detects_a_bad_frame(what):
    mm, mem, p = _in_process_ring(SMALL_RING, 1024, 200)
    # walk to frame 37 and damage it
    c = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(c, mem, p.size, p.frame_max, 0) == 0
    fp = ffi.new("const uint8_t **")
    ln = ffi.new("uint32_t *")
    for _ in range(37):
        assert lib.rn_ring_peek(c, fp, ln) == 1
        lib.rn_ring_consume(c)
    assert lib.rn_ring_peek(c, fp, ln) == 1
    frame = ffi.cast("uint8_t *", fp[0])
    if what == "content":
        frame[ln[0] - 1] ^= 1
    elif what == "seq":
        frame[0] ^= 1
    else:
        hdr = ffi.cast("uint32_t *", frame - lib.RN_RING_REC_HDR)
        hdr[0] -= 1
    st = ffi.new("struct rn_ringtest_stats *")
    assert lib.rn_ringtest_consume(mem, p, st) == lib.RN_RINGTEST_BAD
    assert st.bad_seq == 37 and st.frames == 37


def test_consumer_gives_up_when_producer_is_gone():
    ev = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        mm, mem, p = _in_process_ring(SMALL_RING, 1024, 10, ev_consumer=ev, ev_producer=ev)
        p.nframes = 11
        st = ffi.new("struct rn_ringtest_stats *")
        assert lib.rn_ringtest_consume(mem, p, st) == -errno.ETIMEDOUT
        assert st.frames == 10 and st.sleeps == 1
    finally:
        os.close(ev)


def test_unacknowledged_pause_times_out():
    """A producer pause really waits for the consumer: with none, it gives up."""
    mm = mmap.mmap(-1, lib.rn_ringtest_mem_size(SMALL_RING))
    mem = ffi.from_buffer(mm)
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, mem, SMALL_RING, 1024, 1) == 0
    ev = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        p = _params(SMALL_RING, 1024, 200, ppause_every=50, ev_consumer=ev, ev_producer=ev)
        st = ffi.new("struct rn_ringtest_stats *")
        assert lib.rn_ringtest_produce(mem, p, st) == -errno.ETIMEDOUT
        assert st.frames == 50 and st.pauses == 0
    finally:
        os.close(ev)


def test_pauses_on_both_sides_are_refused():
    mm = mmap.mmap(-1, lib.rn_ringtest_mem_size(SMALL_RING))
    mem = ffi.from_buffer(mm)
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, mem, SMALL_RING, 1024, 1) == 0
    p = _params(SMALL_RING, 1024, 10, cpause_every=5, ppause_every=5)
    st = ffi.new("struct rn_ringtest_stats *")
    assert lib.rn_ringtest_produce(mem, p, st) == -errno.EINVAL
    assert lib.rn_ringtest_consume(mem, p, st) == -errno.EINVAL
