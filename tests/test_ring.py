"""The SPSC frame ring (csrc/ring.c) through cffi: geometry, wakeup flags, validation.

Both views of a ring live in this process over one anonymous mapping; the
property test drives them with random operation sequences against a small
Python model of the byte layout.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringnet._ringnet_c import ffi, lib  # type: ignore[import-not-found]

CTRL = lib.RN_RING_CTRL_SIZE
HDR = lib.RN_RING_REC_HDR
F_PAD = 1
EPROTO = -errno.EPROTO
EINVAL = -errno.EINVAL


def rec_size(n: int) -> int:
    return (HDR + n + 15) & ~15


def payload(seq: int, n: int) -> bytes:
    """Content of frame ``seq``: its number, then a pattern that shifts with it."""
    base = seq.to_bytes(8, "little") + bytes((seq * 7 + i) & 0xFF for i in range(256))
    reps = n // len(base) + 1
    return (base * reps)[:n]


class Ring:
    """A producer view and a consumer view of one ring in anonymous memory."""

    def __init__(self, size: int = 64 * 1024, frame_max: int = 1024, start: int = 0):
        self.size = size
        self.frame_max = frame_max
        self.mm = mmap.mmap(-1, lib.rn_ring_mem_size(size))
        self.mem = ffi.from_buffer(self.mm)
        self.ctrl = ffi.cast("struct rn_ring_ctrl *", self.mem)
        self.data = ffi.cast("uint8_t *", self.mem) + CTRL
        self.p = ffi.new("struct rn_ring *")
        self.c = ffi.new("struct rn_ring *")
        self.err = ffi.new("int *")
        assert lib.rn_ring_attach(self.p, self.mem, size, frame_max, 1) == 0
        if start:
            self.ctrl.head = self.ctrl.tail = start
            assert lib.rn_ring_attach(self.p, self.mem, size, frame_max, 0) == 0
        assert lib.rn_ring_attach(self.c, self.mem, size, frame_max, 0) == 0

    def offset(self, ptr) -> int:
        return int(ffi.cast("uintptr_t", ptr)) - int(ffi.cast("uintptr_t", self.data))

    def reserve(self, maxlen: int):
        p = lib.rn_ring_reserve(self.p, maxlen, self.err)
        return p, self.err[0]

    def push(self, data: bytes, maxlen: int | None = None, publish: bool = True) -> bool:
        p, err = self.reserve(len(data) if maxlen is None else maxlen)
        assert err == 0
        if p == ffi.NULL:
            return False
        ffi.memmove(p, data, len(data))
        lib.rn_ring_commit(self.p, len(data))
        if publish:
            lib.rn_ring_publish(self.p)
        return True

    def peek(self):
        fp = ffi.new("uint8_t **")
        ln = ffi.new("uint32_t *")
        rc = lib.rn_ring_peek(self.c, ffi.cast("const uint8_t **", fp), ln)
        if rc == 1:
            return rc, bytes(ffi.buffer(fp[0], ln[0])), self.offset(fp[0])
        return rc, None, None

    def pop(self, release: bool = True) -> bytes | None:
        rc, data, _ = self.peek()
        assert rc >= 0
        if rc == 0:
            return None
        lib.rn_ring_consume(self.c)
        if release:
            lib.rn_ring_release(self.c)
        return data

    def poke_rec(self, off: int, length: int, flags: int) -> None:
        ffi.memmove(self.data + off, struct.pack("<II", length, flags), 8)

    def rec_at(self, off: int) -> tuple[int, int]:
        return struct.unpack("<II", bytes(ffi.buffer(self.data + off, 8)))


# --- attach -----------------------------------------------------------------


def test_attach_rejects_bad_parameters():
    mm = mmap.mmap(-1, lib.rn_ring_mem_size(1 << 20))
    mem = ffi.from_buffer(mm)
    r = ffi.new("struct rn_ring *")
    good = 64 * 1024
    assert lib.rn_ring_attach(r, mem, good, 1024, 1) == 0
    assert lib.rn_ring_attach(r, ffi.NULL, good, 1024, 1) == EINVAL
    assert lib.rn_ring_attach(r, mem + 16, good, 1024, 1) == EINVAL  # not 64-byte aligned
    assert lib.rn_ring_attach(r, mem + 32, good, 1024, 0) == EINVAL
    assert lib.rn_ring_attach(r, mem, good + 4096, 1024, 1) == EINVAL  # not a power of two
    assert lib.rn_ring_attach(r, mem, lib.RN_RING_MIN_SIZE // 2, 1024, 1) == EINVAL
    assert lib.rn_ring_attach(r, mem, lib.RN_RING_MAX_SIZE * 2, 1024, 1) == EINVAL
    assert lib.rn_ring_attach(r, mem, good, 0, 1) == EINVAL
    assert lib.rn_ring_attach(r, mem, good, good // 4 + 1, 1) == EINVAL
    assert lib.rn_ring_attach(r, mem, good, good // 4, 1) == 0
    assert lib.rn_ring_attach(r, mem, 1 << 20, lib.RN_FRAME_MAX, 1) == 0
    assert lib.rn_ring_attach(r, mem, 1 << 18, lib.RN_FRAME_MAX, 1) == EINVAL


@pytest.mark.parametrize("head,tail", [
    (16, 32),                # tail ahead of head
    (64 * 1024 + 16, 0),     # more than size in use
    (8, 0),                  # misaligned head
    (32, 4),                 # misaligned tail
])
def test_attach_adopt_rejects_inconsistent_ctrl(head, tail):
    ring = Ring()
    ring.ctrl.head = head
    ring.ctrl.tail = tail
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, ring.mem, ring.size, ring.frame_max, 0) == EPROTO


def test_attach_reset_clears_ctrl_and_adopt_keeps_it():
    ring = Ring()
    assert ring.push(b"x" * 100)
    r = ffi.new("struct rn_ring *")
    assert lib.rn_ring_attach(r, ring.mem, ring.size, ring.frame_max, 0) == 0
    assert (r.head, r.tail) == (rec_size(100), 0)
    assert lib.rn_ring_attach(r, ring.mem, ring.size, ring.frame_max, 1) == 0
    assert (ring.ctrl.head, ring.ctrl.tail, ring.ctrl.need_space, ring.ctrl.need_wakeup) == (0,) * 4


# --- basic behaviour ----------------------------------------------------------


def test_empty_ring_peeks_nothing():
    ring = Ring()
    assert ring.peek() == (0, None, None)
    assert lib.rn_ring_used(ring.c) == 0
    # committed but not published: still nothing for the consumer
    p, err = ring.reserve(10)
    assert err == 0 and p != ffi.NULL
    lib.rn_ring_commit(ring.p, 10)
    assert ring.peek()[0] == 0
    assert lib.rn_ring_publish(ring.p) == 0
    assert ring.peek()[0] == 1


def test_reserve_rejects_oversized_maxlen():
    ring = Ring(frame_max=1000)
    p, err = ring.reserve(1001)
    assert p == ffi.NULL and err == EINVAL
    p, err = ring.reserve(1000)
    assert p != ffi.NULL and err == 0


def test_uncommitted_reservation_is_dropped():
    ring = Ring()
    p, _ = ring.reserve(500)
    ffi.memmove(p, b"z" * 500, 500)
    assert lib.rn_ring_publish(ring.p) == 0
    assert ring.peek()[0] == 0
    assert ring.push(b"abc")
    assert ring.pop() == b"abc"
    assert ring.pop() is None


def test_wraparound_many_laps():
    ring = Ring(size=64 * 1024, frame_max=3000)
    total = 0
    seq = 0
    pending = deque()
    while total < 100 * ring.size:
        for _ in range(seq % 5 + 1):
            n = (seq * 397) % 3001
            data = payload(seq, n)
            if not ring.push(data, publish=seq % 3 == 0):
                lib.rn_ring_publish(ring.p)
                break
            pending.append(data)
            total += rec_size(n)
            seq += 1
        lib.rn_ring_publish(ring.p)
        for _ in range(seq % 4 + 1):
            got = ring.pop(release=seq % 2 == 0)
            if got is None:
                break
            assert got == pending.popleft()
        lib.rn_ring_release(ring.c)
    while pending:
        assert ring.pop() == pending.popleft()
    assert ring.pop() is None
    assert ring.ctrl.head == ring.ctrl.tail
    assert ring.ctrl.head > 100 * ring.size


def test_free_running_counters_wrap_at_32_bits():
    start = (1 << 32) - 16 * 1024
    ring = Ring(size=64 * 1024, frame_max=1000, start=start)
    seq = 0
    for _ in range(400):
        data = payload(seq, (seq * 131) % 1001)
        assert ring.push(data)
        assert ring.pop() == data
        seq += 1
    assert ring.ctrl.head == ring.ctrl.tail
    assert ring.ctrl.head < start  # wrapped


def test_full_ring_and_space_wakeup():
    ring = Ring(size=64 * 1024, frame_max=1000)
    n = 1000 - 8  # records of exactly 1008 bytes: 65 fit in 65536
    count = 0
    while ring.push(payload(count, n)):
        count += 1
    assert count == ring.size // rec_size(n)
    p, err = ring.reserve(n)
    assert p == ffi.NULL and err == 0
    # a smaller frame still fits in the leftover bytes
    left = ring.size - count * rec_size(n)
    assert left == 64 * 1024 - 65 * 1008
    assert ring.reserve(left - HDR)[0] != ffi.NULL
    assert ring.reserve(left - HDR + 1)[0] == ffi.NULL
    # producer announces it waits; the ring is still full
    assert lib.rn_ring_producer_sleep(ring.p, n) == 1
    assert ring.ctrl.need_space == 1
    # consumer takes one frame: nothing returned to the producer until release
    assert ring.pop(release=False) == payload(0, n)
    assert ring.reserve(n)[0] == ffi.NULL
    assert lib.rn_ring_release(ring.c) == 1      # producer waits: kick it
    assert lib.rn_ring_release(ring.c) == 0      # nothing new to release
    # 16 bytes at the end (PAD) plus one freed record: exactly enough
    assert lib.rn_ring_producer_sleep(ring.p, n) == 0   # space appeared
    assert ring.ctrl.need_space == 0
    assert ring.push(payload(count, n))
    assert ring.reserve(n)[0] == ffi.NULL
    assert lib.rn_ring_producer_sleep(ring.p, n) == 1
    lib.rn_ring_producer_awake(ring.p)
    assert ring.ctrl.need_space == 0
    assert ring.pop(release=False) == payload(1, n)
    assert lib.rn_ring_release(ring.c) == 0      # producer no longer waits


def test_consumer_sleep_and_publish_kick():
    ring = Ring()
    assert lib.rn_ring_consumer_sleep(ring.c) == 1
    assert ring.ctrl.need_wakeup == 1
    assert lib.rn_ring_publish(ring.p) == 0          # nothing new: no kick
    assert ring.push(b"a" * 20, publish=False)
    assert lib.rn_ring_publish(ring.p) == 1          # consumer sleeps: kick
    assert lib.rn_ring_publish(ring.p) == 0          # already published
    assert lib.rn_ring_consumer_sleep(ring.c) == 0   # frames arrived: do not sleep
    assert ring.ctrl.need_wakeup == 0
    assert ring.push(b"b", publish=False)
    assert lib.rn_ring_publish(ring.p) == 0          # consumer awake: no kick
    assert ring.pop() == b"a" * 20
    assert ring.pop() == b"b"
    assert lib.rn_ring_consumer_sleep(ring.c) == 1
    lib.rn_ring_consumer_awake(ring.c)
    assert ring.ctrl.need_wakeup == 0
    assert ring.push(b"c", publish=False)
    assert lib.rn_ring_publish(ring.p) == 0


def test_used_counts_published_unreleased_bytes():
    ring = Ring()
    assert ring.push(b"q" * 30, publish=False)
    assert lib.rn_ring_used(ring.p) == 0
    lib.rn_ring_publish(ring.p)
    assert lib.rn_ring_used(ring.p) == rec_size(30)
    ring.pop(release=False)
    assert lib.rn_ring_used(ring.c) == rec_size(30)
    lib.rn_ring_release(ring.c)
    assert lib.rn_ring_used(ring.c) == 0


@pytest.mark.parametrize("size,frame_max,step", [
    (64 * 1024, 16 * 1024, 1),
    (256 * 1024, 64 * 1024, 3),
    (1 << 20, lib.RN_FRAME_MAX, 5),
])
def test_every_frame_size_across_positions(size, frame_max, step):
    ring = Ring(size=size, frame_max=frame_max)
    big = payload(12345, frame_max + 256)
    for n in list(range(0, frame_max + 1, step)) + [frame_max]:
        data = big[n % 256:n % 256 + n]
        if not ring.push(data):
            lib.rn_ring_release(ring.c)
            assert ring.push(data)
        rc, got, off = ring.peek()
        assert rc == 1 and got == data
        assert off % 16 == HDR and off + n <= size
        lib.rn_ring_consume(ring.c)
        if n % 7 == 0:
            lib.rn_ring_release(ring.c)
    lib.rn_ring_release(ring.c)
    assert ring.pop() is None
    assert ring.ctrl.head == ring.ctrl.tail


# --- PAD records ----------------------------------------------------------------


def _advance_to(ring: Ring, pos: int) -> None:
    """Push and pop filler frames until the producer's head sits at ``pos``."""
    while ring.ctrl.head % ring.size != pos:
        gap = (pos - ring.ctrl.head) % ring.size
        n = min(gap, ring.frame_max + HDR) - HDR if gap >= 2 * HDR else 0
        assert ring.push(b"f" * n)
        assert ring.pop() is not None


def test_pad_record_fills_the_end():
    ring = Ring(size=64 * 1024, frame_max=1000)
    _advance_to(ring, ring.size - 32)
    data = payload(1, 100)
    p, err = ring.reserve(100)
    assert err == 0 and ring.offset(p) == HDR          # record goes to offset 0
    assert ring.rec_at(ring.size - 32) == (32 - HDR, F_PAD)
    ffi.memmove(p, data, 100)
    lib.rn_ring_commit(ring.p, 100)
    lib.rn_ring_publish(ring.p)
    assert ring.ctrl.head % ring.size == rec_size(100)
    rc, got, off = ring.peek()
    assert rc == 1 and got == data and off == HDR
    lib.rn_ring_consume(ring.c)
    lib.rn_ring_release(ring.c)
    assert ring.ctrl.tail == ring.ctrl.head


def test_exact_fit_at_the_end_needs_no_pad():
    ring = Ring(size=64 * 1024, frame_max=1000)
    _advance_to(ring, ring.size - 128)
    data = payload(2, 128 - HDR)
    p, _ = ring.reserve(len(data))
    assert ring.offset(p) == ring.size - 128 + HDR
    ffi.memmove(p, data, len(data))
    lib.rn_ring_commit(ring.p, len(data))
    lib.rn_ring_publish(ring.p)
    assert ring.ctrl.head % ring.size == 0
    assert ring.pop() == data


def test_pad_decided_by_maxlen_then_short_commit():
    ring = Ring(size=64 * 1024, frame_max=1000)
    _advance_to(ring, ring.size - 64)
    p, _ = ring.reserve(1000)             # does not fit in 64 bytes: PAD
    assert ring.offset(p) == HDR
    ffi.memmove(p, b"short", 5)
    lib.rn_ring_commit(ring.p, 5)
    lib.rn_ring_publish(ring.p)
    assert ring.pop() == b"short"
    assert ring.ctrl.tail % ring.size == 16


def test_cancelled_pad_reservation_leaves_no_trace():
    ring = Ring(size=64 * 1024, frame_max=1000)
    _advance_to(ring, ring.size - 64)
    p, _ = ring.reserve(1000)
    assert ring.offset(p) == HDR          # PAD written, not committed
    p, _ = ring.reserve(20)
    assert ring.offset(p) == ring.size - 64 + HDR
    ffi.memmove(p, b"y" * 20, 20)
    lib.rn_ring_commit(ring.p, 20)
    lib.rn_ring_publish(ring.p)
    assert ring.pop() == b"y" * 20
    assert ring.pop() is None


def _producer_at(ring: Ring, head: int, tail: int) -> None:
    ring.ctrl.head = head
    ring.ctrl.tail = tail
    assert lib.rn_ring_attach(ring.p, ring.mem, ring.size, ring.frame_max, 0) == 0


@pytest.mark.parametrize("to_end", [16, 1024, 8192])
def test_pad_needs_room_for_pad_plus_record(to_end):
    ring = Ring(size=64 * 1024, frame_max=16 * 1024)
    n = 16 * 1024 - 100
    need = rec_size(n)
    head = 3 * ring.size - to_end
    _producer_at(ring, head, head - (ring.size - (to_end + need - 16)))
    assert ring.reserve(n)[0] == ffi.NULL
    _producer_at(ring, head, head - (ring.size - (to_end + need)))
    p, err = ring.reserve(n)
    assert err == 0 and ring.offset(p) == HDR
    # a frame that fits before the end needs no PAD and less room
    small = to_end - HDR
    _producer_at(ring, head, head - (ring.size - to_end))
    p, _ = ring.reserve(small)
    assert ring.offset(p) == ring.size - to_end + HDR


# --- consumer validation -----------------------------------------------------------


def _consumer_at(ring: Ring, pos: int) -> Ring:
    """Put both counters at ``pos`` and re-attach the consumer there."""
    ring.ctrl.head = ring.ctrl.tail = pos
    assert lib.rn_ring_attach(ring.c, ring.mem, ring.size, ring.frame_max, 0) == 0
    return ring


def test_peek_rejects_head_beyond_tail_plus_size():
    ring = Ring()
    ring.ctrl.head = ring.size + 16
    assert ring.peek()[0] == EPROTO


def test_peek_rejects_head_behind_tail():
    ring = _consumer_at(Ring(), 4096)
    ring.ctrl.head = 4096 - 16
    assert ring.peek()[0] == EPROTO


@pytest.mark.parametrize("extra", [1, 4, 8, 24, 40])
def test_peek_rejects_misaligned_head(extra):
    ring = Ring()
    ring.poke_rec(0, 0, 0)    # a valid empty record first
    ring.poke_rec(16, 0, 0)
    ring.ctrl.head = 16 + extra
    assert ring.peek()[0] == EPROTO


def test_peek_rejects_length_above_frame_max():
    ring = Ring(frame_max=1000)
    ring.poke_rec(0, 1001, 0)
    ring.ctrl.head = 4096
    assert ring.peek()[0] == EPROTO
    ring.poke_rec(0, 1000, 0)
    assert ring.peek()[0] == 1


def test_peek_rejects_length_beyond_published_bytes():
    ring = Ring(frame_max=1000)
    ring.poke_rec(0, 100, 0)
    ring.ctrl.head = 64       # record needs 112
    assert ring.peek()[0] == EPROTO
    ring.ctrl.head = 112
    _consumer_at(ring, 0)     # a ring that failed stays failed: attach anew
    ring.ctrl.head = 112
    assert ring.peek()[0] == 1


def test_peek_rejects_record_beyond_data_area():
    ring = _consumer_at(Ring(frame_max=1000), 64 * 1024 - 32)
    ring.poke_rec(ring.size - 32, 100, 0)
    ring.ctrl.head = ring.ctrl.tail + 512
    assert ring.peek()[0] == EPROTO
    ring.poke_rec(ring.size - 32, 32 - HDR, 0)   # exactly to the end is fine
    assert ring.peek()[0] == 1


@pytest.mark.parametrize("flags", [2, 3, 0x80000000, 0xFFFFFFFF])
def test_peek_rejects_unknown_flags(flags):
    ring = Ring()
    ring.poke_rec(0, 10, flags)
    ring.ctrl.head = 32
    assert ring.peek()[0] == EPROTO


@pytest.mark.parametrize("length", [0, 32 - HDR - 16, 32 - HDR + 16, 1 << 31])
def test_peek_rejects_bad_pad_length(length):
    ring = _consumer_at(Ring(), 64 * 1024 - 32)
    ring.poke_rec(ring.size - 32, length, F_PAD)
    ring.poke_rec(0, 0, 0)
    ring.ctrl.head = ring.ctrl.tail + 32 + 16
    assert ring.peek()[0] == EPROTO


def test_peek_accepts_good_pad_and_rejects_pad_beyond_published():
    ring = _consumer_at(Ring(), 64 * 1024 - 32)
    ring.poke_rec(ring.size - 32, 32 - HDR, F_PAD)
    ring.poke_rec(0, 3, 0)
    ffi.memmove(ring.data + HDR, b"xyz", 3)
    ring.ctrl.head = ring.ctrl.tail + 16      # PAD not wholly published
    assert ring.peek()[0] == EPROTO
    _consumer_at(ring, 64 * 1024 - 32)
    ring.ctrl.head = ring.ctrl.tail + 32 + 16
    assert ring.peek()[1] == b"xyz"


# --- producer validation -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ahead", "misaligned", "overfull"])
def test_reserve_rejects_impossible_tail(kind):
    ring = Ring(frame_max=16 * 1024)
    # fill the ring so that the producer must load a fresh tail
    while ring.push(b"p" * 16000):
        pass
    head = ring.ctrl.head
    ring.ctrl.tail = {"ahead": head + 16, "misaligned": 8,
                      "overfull": (head - ring.size - 16) & 0xFFFFFFFF}[kind]
    p, err = ring.reserve(16000)
    assert p == ffi.NULL and err == EPROTO
    assert lib.rn_ring_producer_sleep(ring.p, 16000) == EPROTO


# --- property test against a model ------------------------------------------------------


class Model:
    """Byte-level model: the producer's head, what is published, consumed, released."""

    def __init__(self, size: int, frame_max: int):
        self.size = size
        self.frame_max = frame_max
        self.head = self.pub = self.tail = self.rel = 0
        self.frames: deque[tuple[int, bytes]] = deque()   # (end position, data)
        self.need_wakeup = self.need_space = 0

    def fits(self, maxlen: int) -> tuple[bool, int]:
        need = rec_size(maxlen)
        to_end = self.size - self.head % self.size
        pad = to_end if to_end < need else 0
        return self.size - ((self.head - self.rel) & 0xFFFFFFFF) >= pad + need, pad


ops = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 100), st.integers(0, 100), st.booleans()),
    st.tuples(st.just("pop")),
    st.tuples(st.just("fill")),
    st.tuples(st.just("publish")),
    st.tuples(st.just("release")),
    st.tuples(st.just("csleep")),
    st.tuples(st.just("cawake")),
    st.tuples(st.just("psleep"), st.integers(0, 100)),
    st.tuples(st.just("pawake")),
)


@pytest.mark.parametrize("frame_max", [16 * 1024, 300])
@settings(max_examples=150, deadline=None)
@given(seq=st.lists(ops, max_size=300), start=st.sampled_from([0, 4096, (1 << 32) - 8192]))
def test_property_matches_model(frame_max, seq, start):
    size = 64 * 1024
    ring = Ring(size=size, frame_max=frame_max, start=start)
    m = Model(size, frame_max)
    m.head = m.pub = m.tail = m.rel = start
    n = 0

    def scale(v: int, snug: bool = False) -> int:
        n = v * frame_max // 100
        # snug lengths fill their record exactly, so the ring fills to the byte
        return max(0, (n + HDR) // 16 * 16 - HDR) if snug else n

    for op in seq:
        kind = op[0]
        if kind == "push":
            length = scale(min(op[1], op[2]), op[3])
            maxlen = scale(max(op[1], op[2]), op[3])
            fits, pad = m.fits(maxlen)
            p, err = ring.reserve(maxlen)
            assert err == 0
            assert (p != ffi.NULL) == fits
            if fits:
                pos = 0 if pad else m.head % size
                assert ring.offset(p) == pos + HDR
                data = payload(n, length)
                n += 1
                ffi.memmove(p, data, length)
                lib.rn_ring_commit(ring.p, length)
                m.head = (m.head + pad + rec_size(length)) & 0xFFFFFFFF
                m.frames.append((m.head, data))
        elif kind == "fill":
            # snug frames that need no PAD until the ring is full to the byte
            while True:
                free = size - ((m.head - m.rel) & 0xFFFFFFFF)
                room = min(free, size - m.head % size, rec_size(frame_max) - 16)
                if room < 16:
                    break
                length = room - HDR
                p, err = ring.reserve(length)
                assert err == 0 and p != ffi.NULL
                assert ring.offset(p) == m.head % size + HDR
                ffi.memmove(p, payload(n, length), length)
                lib.rn_ring_commit(ring.p, length)
                m.head = (m.head + room) & 0xFFFFFFFF
                m.frames.append((m.head, payload(n, length)))
                n += 1
            if free == 0:
                assert ring.reserve(0)[0] == ffi.NULL
        elif kind == "pop":
            rc, got, _ = ring.peek()
            if m.frames and ((m.frames[0][0] - m.tail) & 0xFFFFFFFF
                             <= (m.pub - m.tail) & 0xFFFFFFFF):
                end, data = m.frames.popleft()
                assert rc == 1 and got == data
                lib.rn_ring_consume(ring.c)
                m.tail = end
            else:
                assert rc == 0
        elif kind == "publish":
            expect = int(m.pub != m.head and m.need_wakeup)
            assert lib.rn_ring_publish(ring.p) == expect
            m.pub = m.head
        elif kind == "release":
            expect = int(m.rel != m.tail and m.need_space)
            assert lib.rn_ring_release(ring.c) == expect
            m.rel = m.tail
        elif kind == "csleep":
            expect = int(m.pub == m.tail)
            assert lib.rn_ring_consumer_sleep(ring.c) == expect
            m.need_wakeup = expect
        elif kind == "cawake":
            lib.rn_ring_consumer_awake(ring.c)
            m.need_wakeup = 0
        elif kind == "psleep":
            maxlen = scale(op[1])
            expect = int(not m.fits(maxlen)[0])
            assert lib.rn_ring_producer_sleep(ring.p, maxlen) == expect
            m.need_space = expect
        elif kind == "pawake":
            lib.rn_ring_producer_awake(ring.p)
            m.need_space = 0
        assert ring.ctrl.need_wakeup == m.need_wakeup
        assert ring.ctrl.need_space == m.need_space
        assert ring.ctrl.head == m.pub and ring.ctrl.tail == m.rel
        assert lib.rn_ring_used(ring.p) == (m.pub - m.rel) & 0xFFFFFFFF

    # drain: everything committed and published comes out in order
    lib.rn_ring_publish(ring.p)
    while m.frames:
        assert ring.pop() == m.frames.popleft()[1]
    assert ring.pop() is None
