"""The namespace pump (csrc/pump.c) without a tun device.

Each tun queue is stood in for by a SOCK_SEQPACKET socketpair: the pump gets
one end (non-blocking; one read() is one frame, like tun), the test reads and
writes frames on the other. The test plays the workers with the ring API from
Python: it consumes to_worker, produces to_ns, and follows the NEED_WAKEUP
protocol with the same eventfds the real worker uses.

Nothing here waits for time to pass: the test waits for conditions (a counter, a
ring flag such as the pump's need_wakeup, which it sets just before it blocks),
with a deadline that only turns a hang into a failure. The few fixed windows left
(CPU ticks of an idle pump, a frame that must not arrive) can only miss a bug on a
starved machine, never fail a correct pump.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
import threading
import time

import pytest

from conftest import HANG_S, wait_until
from ringnet._ringnet_c import ffi, lib  # type: ignore[import-not-found]

RING_SIZE = 512 * 1024
KEY = bytes(range(16))
VNET = bytes(12)
PCTR = {ffi.string(lib.rn_pump_counter_name(i)).decode(): i
        for i in range(lib.rn_pump_counter_count())}


def udp4(sport: int, seq: int, size: int = 0, dport: int = 53) -> bytes:
    """A frame: zero virtio-net header, IPv4/UDP 10.0.2.100:sport -> 10.0.2.2:dport."""
    payload = struct.pack("<Q", seq) + bytes((seq + i) & 0xFF for i in range(max(0, size - 8)))
    # lengths wrap for frames beyond what IPv4 can say: the pump does not care
    udp = struct.pack("!HHHH", sport, dport, (8 + len(payload)) & 0xFFFF, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, (28 + len(payload)) & 0xFFFF, 0, 0, 64, 17, 0,
                     bytes([10, 0, 2, 100]), bytes([10, 0, 2, 2]))
    return VNET + ip + udp + payload


def owner(frame: bytes, n: int) -> int:
    return lib.rn_flow_owner(KEY, n, frame, len(frame))


def port_for(want: int, n: int, start: int = 1000) -> int:
    """A source port whose flow belongs to worker ``want``."""
    port = start
    while owner(udp4(port, 0), n) != want:
        port += 1
    return port


def wait_for(cond, timeout: float = HANG_S, what: str = "condition") -> None:
    wait_until(cond, what, timeout, interval=0.001)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def pump_cpu_ticks() -> int:
    """utime + stime of this process's pump threads, in clock ticks."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("rn-pump"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total


class FakeWorker:
    """Worker i's side of the shared mapping: consumes to_worker, produces to_ns."""

    def __init__(self, idx: int, size: int):
        self.idx = idx
        self.size = size
        self.memfd = os.memfd_create(f"rn-test-{idx}", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, lib.rn_shm_size(size))
        self.mm = mmap.mmap(self.memfd, lib.rn_shm_size(size))
        self.base = ffi.from_buffer(self.mm)
        hdr = ffi.cast("struct rn_shm_hdr *", self.base)
        hdr.magic, hdr.version = lib.RN_SHM_MAGIC, lib.RN_SHM_VERSION
        hdr.ring_size, hdr.frame_max, hdr.worker = size, lib.RN_FRAME_MAX, idx
        self.tw_mem = lib.rn_shm_to_worker(self.base, size)
        self.tn_mem = lib.rn_shm_to_ns(self.base, size)
        self.tw = ffi.new("struct rn_ring *")     # consumer
        self.tn = ffi.new("struct rn_ring *")     # producer
        assert lib.rn_ring_attach(self.tw, self.tw_mem, size, lib.RN_FRAME_MAX, 1) == 0
        assert lib.rn_ring_attach(self.tn, self.tn_mem, size, lib.RN_FRAME_MAX, 1) == 0
        self.ev_worker = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ev_ns = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.tw_ctrl = ffi.cast("struct rn_ring_ctrl *", self.tw_mem)
        self.tn_ctrl = ffi.cast("struct rn_ring_ctrl *", self.tn_mem)
        self._fp = ffi.new("const uint8_t **")
        self._ln = ffi.new("uint32_t *")
        self._err = ffi.new("int *")

    def take(self, release: bool = True) -> list[bytes]:
        """Every frame published in to_worker; release (and kick as a worker does)."""
        out = []
        while True:
            rc = lib.rn_ring_peek(self.tw, self._fp, self._ln)
            assert rc >= 0
            if rc == 0:
                break
            out.append(bytes(ffi.buffer(self._fp[0], self._ln[0])))
            lib.rn_ring_consume(self.tw)
        if release:
            self.release()
        return out

    def release(self) -> None:
        if lib.rn_ring_release(self.tw):
            os.eventfd_write(self.ev_ns, 1)

    def put(self, frames: list[bytes]) -> None:
        """Write frames into to_ns, publish, kick the pump if it sleeps."""
        for fr in frames:
            p = lib.rn_ring_reserve(self.tn, len(fr), self._err)
            assert p != ffi.NULL, "to_ns full"
            ffi.memmove(p, fr, len(fr))
            lib.rn_ring_commit(self.tn, len(fr))
        if lib.rn_ring_publish(self.tn):
            os.eventfd_write(self.ev_ns, 1)

    def kicked(self, timeout: float) -> bool:
        r, _, _ = select.select([self.ev_worker], [], [], timeout)
        if r:
            os.eventfd_read(self.ev_worker)
        return bool(r)

    def close(self) -> None:
        os.close(self.ev_worker)
        os.close(self.ev_ns)
        os.close(self.memfd)
        ffi.release(self.base)
        self.mm.close()                # mmap holds a dup of the memfd


class Rig:
    """n fake workers, n socketpair tun queues, a pump."""

    def __init__(self, n: int, size: int = RING_SIZE, start: bool = True):
        self.n = n
        self.size = size
        self.workers = [FakeWorker(i, size) for i in range(n)]
        self.pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
        for inner, outer in self.pairs:
            inner.setblocking(False)
            outer.settimeout(HANG_S)
        self.counters = ffi.new("uint64_t[]", lib.RN_CTR_SLOTS)
        self.pump = ffi.NULL
        if start:
            assert self.start() == 0

    @property
    def tun(self) -> list[socket.socket]:
        """The test's ends of the tun queues."""
        return [outer for _, outer in self.pairs]

    def start(self, nqueues: int | None = None, ring_size: int | None = None,
              tun_fds: list[int] | None = None) -> int:
        params = ffi.new("struct rn_pump_params *")
        params.nqueues = self.n if nqueues is None else nqueues
        ffi.memmove(params.hash_key, KEY, 16)
        params.ring_size = self.size if ring_size is None else ring_size
        out = ffi.new("struct rn_pump **")
        fds = tun_fds if tun_fds is not None else [inner.fileno() for inner, _ in self.pairs]
        self._keep = (ffi.new("int[]", fds),
                      ffi.new("void *[]", [w.base for w in self.workers]),
                      ffi.new("int[]", [w.ev_worker for w in self.workers]),
                      ffi.new("int[]", [w.ev_ns for w in self.workers]))
        rc = lib.rn_pump_start(out, params, *self._keep, self.counters)
        if rc == 0:
            self.pump = out[0]
        else:
            assert out[0] == ffi.NULL
        return rc

    def ctr(self, name: str) -> int:
        return self.counters[PCTR[name]]

    def stop(self) -> int:
        rc = lib.rn_pump_stop(self.pump) if self.pump != ffi.NULL else 0
        self.pump = ffi.NULL
        return rc

    def close(self) -> None:
        self.stop()
        for a, b in self.pairs:
            a.close()
            b.close()
        for w in self.workers:
            w.close()


@pytest.fixture
def rig2():
    r = Rig(2)
    yield r
    r.close()


def collect(worker: FakeWorker, want: int, timeout: float = HANG_S) -> list[bytes]:
    got: list[bytes] = []
    wait_for(lambda: got.extend(worker.take()) or len(got) >= want, timeout,
             f"{want} frames for worker {worker.idx}")
    return got


# --- tun -> workers -----------------------------------------------------------------------


def test_frames_land_in_their_owners_ring(rig2):
    p0, p1 = port_for(0, 2), port_for(1, 2)
    sent = {0: [], 1: []}
    for seq in range(40):
        for q in (0, 1):
            w = (seq + q) % 2
            fr = udp4(p0 if w == 0 else p1, seq * 2 + q, size=seq)
            assert owner(fr, 2) == w
            rig2.tun[q].send(fr)
            sent[w].append(fr)
    got0 = collect(rig2.workers[0], 40)
    got1 = collect(rig2.workers[1], 40)
    # per queue order is kept; across queues frames interleave
    assert sorted(got0) == sorted(sent[0]) and sorted(got1) == sorted(sent[1])
    for q in (0, 1):
        for w, got in ((0, got0), (1, got1)):
            from_q = [f for f in sent[w] if struct.unpack_from("<Q", f, 40)[0] % 2 == q]
            assert [f for f in got if f in from_q] == from_q
    assert rig2.ctr("tun_frames_in") == 80
    assert rig2.ctr("tun_bytes_in") == sum(map(len, sent[0] + sent[1]))
    # queue 0 read 20 frames of worker 1, queue 1 read 20 of worker 0
    assert rig2.ctr("handoffs") == 40
    assert rig2.ctr("ring_full") == 0


def test_frames_without_flow_key_go_to_worker_zero(rig2):
    junk = [VNET + b"\x60" + bytes(10), VNET, b"short", VNET + bytes(100)]
    for fr in junk:
        rig2.tun[1].send(fr)
    assert collect(rig2.workers[0], len(junk)) == junk
    assert rig2.workers[1].take() == []
    assert rig2.ctr("handoffs") == len(junk)


def test_single_queue_takes_everything():
    rig = Rig(1)
    try:
        frames = [udp4(1000 + i, i, size=i * 13) for i in range(200)]
        for fr in frames:
            rig.tun[0].send(fr)
        assert collect(rig.workers[0], 200) == frames
        assert rig.ctr("handoffs") == 0
    finally:
        rig.close()


def test_large_frames_up_to_frame_max():
    rig = Rig(1, size=1 << 20)
    try:
        rig.tun[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        top = lib.RN_FRAME_MAX - 12 - 20 - 8
        frames = [udp4(1000, i, size=s) for i, s in enumerate([top, 30000, top, 1, top])]
        assert max(map(len, frames)) == lib.RN_FRAME_MAX
        got = []
        for fr in frames:
            rig.tun[0].send(fr)
            got += collect(rig.workers[0], 1)
        assert got == frames
    finally:
        rig.close()


# --- workers -> tun -------------------------------------------------------------------------


def test_to_ns_frames_reach_their_tun_queue(rig2):
    frames = {q: [udp4(2000 + q, i, size=i * 7 + q) for i in range(100)] for q in (0, 1)}
    # both threads announce that they sleep: the put must kick them
    wait_for(lambda: all(w.tn_ctrl.need_wakeup for w in rig2.workers), what="pump asleep")
    for q in (0, 1):
        rig2.workers[q].put(frames[q])
    for q in (0, 1):
        got = [rig2.tun[q].recv(70000) for _ in range(100)]
        assert got == frames[q]
    wait_for(lambda: rig2.ctr("tun_frames_out") == 200, what="counters")
    assert rig2.ctr("tun_bytes_out") == sum(map(len, frames[0] + frames[1]))
    assert rig2.ctr("tun_write_errors") == 0
    # everything consumed was released
    wait_for(lambda: all(lib.rn_ring_used(w.tn) == 0 for w in rig2.workers), what="release")


def test_tun_write_errors_drop_and_count():
    rig = Rig(1)
    try:
        rig.tun[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rig.pairs[0][0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        frames = [udp4(3000, i, size=1000) for i in range(300)]
        for i in range(0, 300, 50):
            rig.workers[0].put(frames[i:i + 50])
            wait_for(lambda: lib.rn_ring_used(rig.workers[0].tn) == 0, what="ring drained")
        out, errs = rig.ctr("tun_frames_out"), rig.ctr("tun_write_errors")
        assert out + errs == 300 and errs > 0 and out > 0
        got = []
        rig.tun[0].settimeout(0.2)
        try:
            while True:
                got.append(rig.tun[0].recv(70000))
        except (socket.timeout, BlockingIOError):
            pass
        assert len(got) == out
        assert rig.pump != ffi.NULL and lib.rn_pump_error(rig.pump) == 0
    finally:
        rig.close()


# --- wakeups ----------------------------------------------------------------------------------


def test_sleeping_worker_is_kicked_and_awake_one_is_not(rig2):
    """Queue 0's thread handles one batch at a time: read, publish, kick (if the worker
    sleeps), add its counts to the shared counters, then read again. So once a frame
    sent after a published batch is published too, whatever that batch did is counted:
    the test checks kicks at such points instead of waiting for one to (not) come."""
    w = rig2.workers[0]
    p0 = port_for(0, 2)

    def sentinel(seq: int) -> None:
        rig2.tun[0].send(udp4(p0, seq))
        assert [struct.unpack_from("<Q", f, 40)[0] for f in collect(w, 1)] == [seq]

    # awake worker (need_wakeup clear): frames arrive without a kick
    for i in range(10):
        rig2.tun[0].send(udp4(p0, i))
    assert len(collect(w, 10)) == 10
    sentinel(10)
    assert not w.kicked(0)
    assert rig2.ctr("kicks") == 0
    # sleeping worker: one kick
    assert lib.rn_ring_consumer_sleep(w.tw) == 1
    rig2.tun[0].send(udp4(p0, 99))
    assert w.kicked(HANG_S)
    lib.rn_ring_consumer_awake(w.tw)
    assert [struct.unpack_from("<Q", f, 40)[0] for f in collect(w, 1)] == [99]
    sentinel(100)                                # awake again: no second kick
    assert not w.kicked(0)
    assert rig2.ctr("kicks") == 1


def test_pump_sleeps_when_idle_and_wakes_on_each_doorbell(rig2):
    wait_for(lambda: all(w.tn_ctrl.need_wakeup for w in rig2.workers), what="pump asleep")
    wake0 = rig2.ctr("wakeups")
    t0 = pump_cpu_ticks()
    time.sleep(0.3)
    assert pump_cpu_ticks() - t0 <= 2           # idle: blocked in poll()
    assert rig2.ctr("wakeups") == wake0
    rig2.tun[1].send(udp4(port_for(1, 2), 1))   # tun POLLIN
    collect(rig2.workers[1], 1)
    rig2.workers[0].put([udp4(5, 5)])            # ev_ns doorbell
    assert rig2.tun[0].recv(70000) == udp4(5, 5)
    wait_for(lambda: rig2.ctr("wakeups") >= wake0 + 2, what="wakeups")


def test_worker_waiting_for_to_ns_space_is_kicked():
    rig = Rig(1, start=False)
    try:
        w = rig.workers[0]
        big = udp4(7, 0, size=60000)
        n = 0
        while lib.rn_ring_reserve(w.tn, len(big), w._err) != ffi.NULL:
            w.put([big])
            n += 1
        assert n >= 7
        # the worker announces it waits for space, then the pump drains the ring
        assert lib.rn_ring_producer_sleep(w.tn, len(big)) == 1
        rig.tun[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        assert rig.start() == 0
        assert w.kicked(HANG_S)
        wait_for(lambda: rig.ctr("tun_frames_out") + rig.ctr("tun_write_errors") == n)
        assert rig.ctr("kicks") >= 1
        assert lib.rn_ring_used(w.tn) == 0
    finally:
        rig.close()


# --- full rings ---------------------------------------------------------------------------------


def _fill_until_refused(rig: Rig, q: int, frames, quiet: float = 0.2, until=None) -> int:
    """Send frames on queue q until the pump stops reading; return how many went.

    Stops once sends have failed for ``quiet`` seconds and ``until()`` holds.
    """
    sock = rig.tun[q]
    sock.setblocking(False)
    sent = 0
    last = time.monotonic()
    deadline = last + HANG_S
    while sent < len(frames):
        try:
            sock.send(frames[sent])
            sent += 1
            last = time.monotonic()
        except BlockingIOError:
            now = time.monotonic()
            if now - last >= quiet and (until is None or until()):
                break
            assert now < deadline, "the pump neither reads nor reports a full ring"
            time.sleep(0.002)
    sock.settimeout(HANG_S)
    return sent


def test_full_ring_stops_reading_and_resumes(rig2):
    w = rig2.workers[0]
    p0 = port_for(0, 2)
    frames = [udp4(p0, i, size=1500) for i in range(2000)]
    sent = _fill_until_refused(rig2, 0, frames, until=lambda: rig2.ctr("ring_full") >= 1)
    assert sent < len(frames)                    # the pump stopped reading
    assert rig2.ctr("ring_full") == 1
    n_in = rig2.ctr("tun_frames_in")
    free = RING_SIZE - lib.rn_ring_used(w.tw)
    assert free < 2 * (lib.RN_FRAME_MAX + 16)    # stopped because the ring was full
    # and waits without spinning or reading
    t0 = pump_cpu_ticks()
    time.sleep(0.3)
    assert pump_cpu_ticks() - t0 <= 2
    assert rig2.ctr("tun_frames_in") == n_in
    # the worker drains and releases (kicking ev_ns: need_space is set)
    assert w.tw_ctrl.need_space == 1
    got = w.take()
    assert len(got) == n_in and got == frames[:n_in]
    # the pump resumes; send the rest while draining
    rest = frames[sent:]
    while rest or len(got) < len(frames):
        k = _fill_until_refused(rig2, 0, rest, quiet=0.02)
        rest = rest[k:]
        got += w.take()
    assert got == frames
    assert rig2.ctr("ring_full") >= 1
    assert lib.rn_pump_error(rig2.pump) == 0


def test_handoff_to_full_ring_waits_and_keeps_order(rig2):
    w0, w1 = rig2.workers
    p0, p1 = port_for(0, 2), port_for(1, 2)
    # fill worker 1's ring through queue 1
    filler = [udp4(p1, i, size=1500) for i in range(2000)]
    sent = _fill_until_refused(rig2, 1, filler, until=lambda: rig2.ctr("ring_full") >= 1)
    assert sent < len(filler)
    # queue 0: a frame for worker 1 (must wait), then one for worker 0 (must wait behind it);
    # the held frame is as large as the frame thread 1 could not reserve: it cannot fit either
    held = udp4(p1, 10_000, size=lib.RN_FRAME_MAX - 40)
    assert len(held) == lib.RN_FRAME_MAX
    after = udp4(p0, 10_001, size=100)
    rig2.tun[0].send(held)
    wait_for(lambda: rig2.ctr("ring_full") == 2, what="queue 0 to wait")
    n_in = rig2.ctr("tun_frames_in")
    rig2.tun[0].send(after)
    time.sleep(0.2)
    assert w0.take() == []                     # queue 0 stopped behind the held frame
    assert rig2.ctr("ring_full") == 2 and rig2.ctr("tun_frames_in") == n_in
    t0 = pump_cpu_ticks()
    time.sleep(0.2)
    assert pump_cpu_ticks() - t0 <= 2
    # worker 1 drains: thread 1 is kicked, wakes thread 0, which delivers
    got1 = w1.take()
    assert got1 == filler[:len(got1)]
    wait_for(lambda: got1.extend(w1.take()) or held in got1, what="the held frame")
    assert collect(w0, 1) == [after]
    rest = filler[sent:]
    while rest:
        k = _fill_until_refused(rig2, 1, rest, quiet=0.02)
        rest = rest[k:]
        got1 += w1.take()
    # the last frames sent may still be on their way through the pump
    missing = len(filler) + 1 - len(got1)
    if missing > 0:
        got1 += collect(w1, missing)
    assert [f for f in got1 if f != held] == filler
    assert rig2.ctr("handoffs") == 1


# --- lifecycle and errors ------------------------------------------------------------------------


def test_stop_joins_and_leaks_nothing():
    before = fd_count()
    threads = len(os.listdir("/proc/self/task"))
    for _ in range(3):
        rig = Rig(2)
        assert len(os.listdir("/proc/self/task")) == threads + 2
        rig.tun[0].send(udp4(1, 1))
        collect(rig.workers[owner(udp4(1, 1), 2)], 1)
        assert rig.stop() == 0
        # pthread_join() returns when the thread has exited; the kernel removes its task
        # entry a moment later: a thread left running stays and still fails this
        wait_for(lambda: len(os.listdir("/proc/self/task")) == threads, what="threads gone")
        rig.close()
    assert fd_count() == before


def test_stop_is_prompt_while_a_ring_is_full(rig2):
    """A thread blocked on a full ring still sees the stop: stop() returns (the deadline
    only turns a hang into a failure) with no error."""
    _fill_until_refused(rig2, 0, [udp4(port_for(0, 2), i, size=1500) for i in range(2000)],
                        until=lambda: rig2.ctr("ring_full") >= 1)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(rig2.stop()), daemon=True)
    t.start()
    t.join(HANG_S)
    assert not t.is_alive(), "stop() hangs while a ring is full"
    assert rc == [0]


@pytest.mark.parametrize("what,expect", [
    ("nqueues0", -errno.EINVAL),
    ("nqueues65", -errno.EINVAL),
    ("ring_size", -errno.EINVAL),
    ("small_ring", -errno.EINVAL),
    ("blocking_tun", -errno.EINVAL),
    ("bad_fd", -errno.EBADF),
    ("bad_ring", -errno.EPROTO),
])
def test_start_rejects_bad_setup(what, expect):
    rig = Rig(2, start=False)
    try:
        before = fd_count()
        threads = len(os.listdir("/proc/self/task"))
        kw = {}
        if what == "nqueues0":
            kw["nqueues"] = 0
        elif what == "nqueues65":
            kw["nqueues"] = 65
        elif what == "ring_size":
            kw["ring_size"] = RING_SIZE + 4096
        elif what == "small_ring":
            kw["ring_size"] = 256 * 1024        # RN_FRAME_MAX needs 4 x frame_max
        elif what == "blocking_tun":
            rig.pairs[1][0].setblocking(True)
        elif what == "bad_fd":
            kw["tun_fds"] = [rig.pairs[0][0].fileno(), 999_999]
        elif what == "bad_ring":
            rig.workers[1].tn_ctrl.head = 8
        assert rig.start(**kw) == expect
        assert fd_count() == before
        assert len(os.listdir("/proc/self/task")) == threads
    finally:
        rig.close()


def test_corrupt_ring_records_eproto_and_thread_exits(rig2):
    w = rig2.workers[1]
    p = lib.rn_ring_reserve(w.tn, 10, w._err)
    lib.rn_ring_commit(w.tn, 10)
    rec = ffi.cast("uint32_t *", p - lib.RN_RING_REC_HDR)
    rec[1] = 2                                  # unknown flags
    lib.rn_ring_publish(w.tn)
    os.eventfd_write(w.ev_ns, 1)
    wait_for(lambda: lib.rn_pump_error(rig2.pump) != 0, what="the pump error")
    assert lib.rn_pump_error(rig2.pump) == -errno.EPROTO
    # the other queue still works
    fr = udp4(port_for(0, 2), 1)
    rig2.tun[0].send(fr)
    assert collect(rig2.workers[0], 1) == [fr]
    assert rig2.stop() == -errno.EPROTO


def test_closed_tun_queue_is_an_error(rig2):
    rig2.pairs[0][1].close()
    wait_for(lambda: lib.rn_pump_error(rig2.pump) != 0, what="the pump error")
    assert lib.rn_pump_error(rig2.pump) == -errno.EPIPE
    assert rig2.stop() == -errno.EPIPE


# --- both directions, many frames --------------------------------------------------------------


def test_many_frames_both_directions(rig2):
    n = 3000
    ports = [port_for(0, 2), port_for(1, 2)]
    down = {q: [udp4(9000 + q, i, size=(i * 37) % 1400) for i in range(n)] for q in (0, 1)}
    # frame i goes in on queue i % 2 and belongs to worker (i // 3) % 2
    up = [udp4(ports[(i // 3) % 2], i, size=(i * 53) % 1400) for i in range(n)]
    got_up: dict[int, list[bytes]] = {0: [], 1: []}
    got_down: dict[int, list[bytes]] = {0: [], 1: []}
    sent_up = 0
    put = {0: 0, 1: 0}
    for s in rig2.tun:
        s.setblocking(False)
    deadline = time.monotonic() + HANG_S
    while (sent_up < n or any(len(got_down[q]) < n for q in (0, 1))
           or sum(map(len, got_up.values())) < n):
        assert time.monotonic() < deadline, (
            f"stalled: sent {sent_up} put {put} got_up {[len(v) for v in got_up.values()]} "
            f"got_down {[len(v) for v in got_down.values()]} "
            f"{ {k: rig2.ctr(k) for k in PCTR} } "
            f"used tw {[lib.rn_ring_used(w.tw) for w in rig2.workers]} "
            f"tn {[lib.rn_ring_used(w.tn) for w in rig2.workers]} "
            f"need_space {[w.tw_ctrl.need_space for w in rig2.workers]}")
        for q in (0, 1):
            # keep what is in flight below the socket's buffer: the pump drops
            # what the "tun" refuses, and this test wants every frame
            if put[q] < n and put[q] - len(got_down[q]) < 40:
                batch = down[q][put[q]:put[q] + 20]
                rig2.workers[q].put(batch)
                put[q] += len(batch)
            try:
                while True:
                    got_down[q].append(rig2.tun[q].recv(70000))
            except BlockingIOError:
                pass
            got_up[q] += rig2.workers[q].take()
        while sent_up < n:
            try:
                rig2.tun[sent_up % 2].send(up[sent_up])
                sent_up += 1
            except BlockingIOError:
                break
    for q in (0, 1):
        assert got_down[q] == down[q]
        assert sorted(got_up[q]) == sorted(f for f in up if owner(f, 2) == q)
    assert rig2.ctr("tun_write_errors") == 0
    assert rig2.ctr("handoffs") > n // 4
    assert lib.rn_pump_error(rig2.pump) == 0
