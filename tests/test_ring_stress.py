"""The ring between two processes: millions of frames, order and content checked.

A memfd holds the ring; a forked child runs the C producer loop
(rn_ringtest_produce) while this process runs the C consumer loop
(rn_ringtest_consume), both with the NEED_WAKEUP protocol over two eventfds,
so the test measures the ring and not Python.
"""

from __future__ import annotations

import mmap
import os

import pytest

from ringnet._ringnet_c import ffi, lib  # type: ignore[import-not-found]
from ringnet._ringtest import Side, run_pair as _run_pair

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd_create")

SMALL_RING = 64 * 1024


def run_pair(size: int, frame_max: int, **kw) -> tuple[Side, Side, float]:
    """Move frames from a forked producer to this process; return both sides' reports."""
    prod, cons, elapsed = _run_pair(size, frame_max, **kw)
    assert prod.rc != -1, "the producer process failed"
    return prod, cons, elapsed


def test_ten_million_small_frames_in_order():
    n = 10_000_000
    prod, cons, elapsed = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128,
                                   seed=1, verify=1, csleep_every=1_000_000, csleep_us=2000)
    assert cons.rc == 0, cons
    assert prod.rc == 0, prod
    assert cons.frames == prod.frames == n
    assert cons.bytes == prod.bytes and 16 * n < cons.bytes < 128 * n
    # the consumer's pauses filled the ring: the producer slept and was woken
    assert prod.full > 0 and prod.sleeps > 0 and cons.kicks > 0
    print(f"\n{n / elapsed / 1e6:.1f} M frames/s verified, {elapsed:.2f} s")


def test_sleepy_consumer_fills_ring_often():
    n = 300_000
    prod, cons, _ = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128, seed=2,
                             verify=1, csleep_every=1000, csleep_us=100)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    # ~800 small frames fit: nearly every pause fills the ring
    assert prod.full >= 100 and prod.sleeps >= 100
    assert cons.kicks >= 100


def test_sleepy_producer_makes_consumer_sleep():
    n = 300_000
    prod, cons, _ = run_pair(SMALL_RING, 1024, nframes=n, minlen=16, maxlen=128, seed=3,
                             verify=1, psleep_every=1000, psleep_us=100)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    assert cons.sleeps >= 100 and prod.kicks >= 100


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
                             maxlen=lib.RN_FRAME_MAX, seed=5, verify=1, batch=4)
    assert (cons.rc, prod.rc) == (0, 0)
    assert cons.frames == n
    assert cons.bytes > n * lib.RN_FRAME_MAX // 3
    assert prod.full > 0


# --- the checker itself must be able to fail -------------------------------------------


def _in_process_ring(size: int, frame_max: int, n: int, **kw):
    mm = mmap.mmap(-1, lib.rn_ring_mem_size(size))
    mem = ffi.from_buffer(mm)
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, mem, size, frame_max, 1) == 0
    p = ffi.new("struct rn_ringtest_params *")
    p.size, p.frame_max, p.nframes = size, frame_max, n
    p.minlen, p.maxlen, p.seed, p.batch, p.verify = 16, 128, 9, 8, 1
    p.ev_consumer = p.ev_producer = -1
    p.timeout_ms = 100
    for k, v in kw.items():
        setattr(p, k, v)
    st = ffi.new("struct rn_ringtest_stats *")
    assert lib.rn_ringtest_produce(mem, p, st) == 0
    return mm, mem, p


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
        assert lib.rn_ringtest_consume(mem, p, st) == -110   # -ETIMEDOUT
        assert st.frames == 10 and st.sleeps == 1
    finally:
        os.close(ev)
