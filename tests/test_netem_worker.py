"""Network emulation inside one worker, driven in-process (the harness of
test_worker_input.py): frames go into ring to_worker, rn_worker_poll()/rn_worker_run()
process them, echo replies come out of ring to_ns. Runs again under ASan and UBSan
(scripts/test.sh's harness list): the queue's records, its wrap at the end of the
buffer, the drain and the timerfd path are all exercised here.

No assertion depends on timing: delays that must hold frames are 60 s (far beyond any
test), delays that must let them through are waited for with conditions, and the one
timer test only checks the lower bound a delay guarantees.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

import pytest

from ringnet._ringnet_c import ffi, lib

import frames as F
from conftest import HANG_S, wait_until
from test_worker_input import GUEST4, GW4, Harness, check_echo_reply, params

UP, DOWN = lib.RN_NETEM_UP, lib.RN_NETEM_DOWN
HOLD = 60 * 10**9      # ns: holds a frame for the whole test


def netem(h: Harness, direction: int, **kw) -> int:
    """rn_netem_set() with these fields (limit defaults to 1000); returns its code."""
    p = ffi.new("struct rn_netem_params *")
    p.limit = 1000
    for k, v in kw.items():
        setattr(p, k, v)
    return lib.rn_netem_set(h.w, direction, p)


def off(h: Harness, direction: int) -> None:
    assert lib.rn_netem_set(h.w, direction, ffi.NULL) == 0


def echo(seq: int, size: int = 16) -> bytes:
    return F.echo4_frame(GUEST4, GW4, icmp_id=7, seq=seq, data=bytes([seq & 0xFF]) * size)


def seq_of(reply: bytes) -> int:
    return struct.unpack("!H", F.parse(reply).payload[6:8])[0]


def drain(h: Harness, want: int) -> list[bytes]:
    """Poll until ``want`` frames came out of to_ns; return them in order."""
    got: list[bytes] = []

    def more() -> bool:
        h.poll()
        got.extend(h.pop())
        return len(got) >= want

    wait_until(more, f"{want} frames from the worker")
    return got


@pytest.fixture
def h():
    with Harness() as harness:
        yield harness


def test_set_checks_its_parameters(h):
    assert netem(h, UP, loss_ppm=lib.RN_NETEM_PPM + 1) == -errno.EINVAL
    assert netem(h, UP, delay_ns=lib.RN_NETEM_DELAY_MAX + 1) == -errno.EINVAL
    assert netem(h, UP, delay_ns=1, limit=0) == -errno.EINVAL
    assert netem(h, UP, delay_ns=1, limit=lib.RN_NETEM_LIMIT_MAX + 1) == -errno.EINVAL
    assert netem(h, 2, delay_ns=1) == -errno.EINVAL
    assert netem(h, DOWN, delay_ns=1) == 0
    off(h, DOWN)


def test_faults_and_netem_are_exclusive():
    p = params()
    p.faults.drop_ppm = 1000
    with Harness(p=p) as hw:
        assert netem(hw, UP, delay_ns=1) == -errno.EBUSY
        assert netem(hw, DOWN, delay_ns=1) == -errno.EBUSY


def test_delay_holds_frames_and_off_drains_them_in_order(h):
    assert netem(h, UP, delay_ns=HOLD) == 0
    n = 40
    assert h.push(*[echo(i) for i in range(n)]) == n
    assert h.poll() == n
    assert h.pop() == []
    c = h.counters()
    assert c["netem_queued_up"] == n and c["frames_in"] == 0   # counted when they leave
    assert lib.rn_netem_queued(h.w, UP) == n
    off(h, UP)
    replies = drain(h, n)
    assert [seq_of(r) for r in replies] == list(range(n))
    for i, r in enumerate(replies):
        check_echo_reply(r, echo(i))
    c = h.counters()
    assert c["netem_queued_up"] == 0 and c["frames_in"] == n and c["icmp_echo_replies"] == n
    # back on the direct path: an echo is answered in the same poll
    assert h.exchange(echo(99)) != []


def test_down_delay_holds_replies(h):
    assert netem(h, DOWN, delay_ns=HOLD) == 0
    n = 10
    assert h.push(*[echo(i) for i in range(n)]) == n
    assert h.poll() == n
    assert h.pop() == []
    c = h.counters()
    assert c["icmp_echo_replies"] == n and c["netem_queued_down"] == n and c["frames_out"] == 0
    off(h, DOWN)
    replies = drain(h, n)
    assert [seq_of(r) for r in replies] == list(range(n))
    assert h.counters()["frames_out"] == n


def test_loss_all_accounts_every_frame(h):
    assert netem(h, UP, loss_ppm=lib.RN_NETEM_PPM) == 0
    n = 30
    assert h.push(*[echo(i) for i in range(n)]) == n
    assert h.poll() == n
    assert h.pop() == []
    c = h.counters()
    assert c["frames_in"] == c["netem_loss_up"] == n
    assert c["icmp_echo_replies"] == 0


@pytest.mark.parametrize("direction", [UP, DOWN])
def test_dup_all_doubles_every_frame(h, direction):
    assert netem(h, direction, dup_ppm=lib.RN_NETEM_PPM) == 0
    n = 12
    assert h.push(*[echo(i) for i in range(n)]) == n
    h.poll()
    replies = drain(h, 2 * n)
    assert [seq_of(r) for r in replies] == [i for i in range(n) for _ in (0, 1)]
    name = "netem_dup_up" if direction == UP else "netem_dup_down"
    assert h.counters()[name] == n


def test_reorder_all_skips_the_queue(h):
    assert netem(h, UP, delay_ns=HOLD, reorder_ppm=lib.RN_NETEM_PPM) == 0
    assert h.exchange(echo(1)) != []
    assert h.counters()["netem_reorder_up"] == 1


def test_full_up_queue_drops_and_counts(h):
    assert netem(h, UP, delay_ns=HOLD, limit=5) == 0
    assert h.push(*[echo(i) for i in range(9)]) == 9
    assert h.poll() == 9
    c = h.counters()
    assert c["netem_queued_up"] == 5 and c["netem_full_up"] == 4 and c["frames_in"] == 4
    off(h, UP)
    assert [seq_of(r) for r in drain(h, 5)] == list(range(5))


def test_full_down_queue_refuses_replies(h):
    assert netem(h, DOWN, delay_ns=HOLD, limit=3) == 0
    assert h.push(*[echo(i) for i in range(5)]) == 5
    assert h.poll() == 5
    c = h.counters()
    # an echo reply that finds no room is lost, as with a full ring
    assert c["netem_queued_down"] == 3 and c["netem_full_down"] == 2 and c["ring_full"] == 2
    off(h, DOWN)
    assert [seq_of(r) for r in drain(h, 3)] == [0, 1, 2]


def test_large_frames_wrap_the_queue_both_ways(h):
    """More than the queue's bytes (8 MiB) of 60 KB frames through both queues, a few at a
    time (to_worker holds 8): records wrap at the end of the buffer, behind PAD records."""
    assert netem(h, UP, delay_ns=1000) == 0
    assert netem(h, DOWN, delay_ns=1000) == 0
    size, total = 60000, (3 * lib.RN_NETEM_QUEUE_BYTES) // 60000
    seq = 0
    while seq < total:
        batch = [echo(seq + i, size) for i in range(4)]
        assert h.push(*batch) == 4
        got = drain(h, 4)
        assert [seq_of(r) for r in got] == [seq + i for i in range(4)]
        for r, q in zip(got, batch):
            check_echo_reply(r, q)
        seq += 4
    c = h.counters()
    assert c["icmp_echo_replies"] == seq and c["netem_queued_up"] == c["netem_queued_down"] == 0


def test_timer_wakes_the_blocked_loop(h):
    """rn_worker_run() blocks in epoll; the emulation's timerfd wakes it when the delayed
    frame is due, and the reply comes no earlier than the delay."""
    delay_s = 0.05
    assert netem(h, UP, delay_ns=int(delay_s * 1e9)) == 0
    a, b = socket.socketpair()
    result = {}

    def namespace_side():
        try:
            wait_until(lambda: h.shm.tw_ctrl.need_wakeup == 1, "the worker to sleep")
            result["t0"] = time.monotonic()
            h.push(echo(5))
            wait_until(lambda: lib.rn_ring_used(h.shm.to_ns) > 0, "the delayed reply")
            result["t1"] = time.monotonic()
        finally:
            b.send(b"stop")

    with a, b:
        assert lib.rn_worker_watch_fd(h.w, a.fileno()) == 0
        t = threading.Thread(target=namespace_side)
        t.start()
        rc = lib.rn_worker_run(h.w, int(2 * HANG_S * 1000))
        t.join()
    assert rc == 1 and "t1" in result
    assert result["t1"] - result["t0"] >= delay_s
    [rep] = h.pop()
    check_echo_reply(rep, echo(5))
    assert h.counters()["netem_timers"] >= 1
