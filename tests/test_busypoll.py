"""The rules of adaptive busy polling (csrc/busypoll.c), driven with made-up clocks.

rn_bpoll_idle() decides at an idle point whether a thread spins (looks again) or
blocks; rn_bpoll_work() ends the idle period and adapts the window. Both take the time
as an argument: these tests choose the timestamps and byte counts and assert when a
thread spins, how its window grows, shrinks and dies away, and that streams never
spin, without any real time passing. The last test runs the real thing: a network
whose threads busy poll serves request/response traffic, and one with busy polling
off never polls.

The module is internal to the C core; the test extension exposes it
(ringnet/_build.py, TEST_API).
"""

from __future__ import annotations

import socket
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ringnet
from ringnet._ringnet_test import ffi, lib  # type: ignore[import-not-found]

US = 1_000  # nanoseconds
BULK, HOLD = lib.RN_BPOLL_BULK, lib.RN_BPOLL_BULK_HOLD_NS


class Poll:
    """One thread's struct rn_bpoll, a made-up CLOCK_MONOTONIC and a byte count."""

    def __init__(self, max_us: int = 200, now: int = 10**12):
        self.b = ffi.new("struct rn_bpoll *")
        lib.rn_bpoll_init(self.b, max_us)
        self.now = now
        self.moved = 0

    def idle_period(self, gap_us: float, moved: int = 100) -> tuple[int, int]:
        """The thread moved ``moved`` bytes, then found nothing to do; work turns up
        ``gap_us`` later. It looks again every microsecond while it spins. Returns
        (looks spent spinning, whether the work ended a spin)."""
        self.moved += moved
        end = self.now + int(gap_us * US)
        spins = 0
        while self.now < end and lib.rn_bpoll_idle(self.b, self.now, self.moved):
            spins += 1
            self.now += US
        self.now = end  # blocked until the work came, if the spin ran out
        return spins, lib.rn_bpoll_work(self.b, self.now)

    @property
    def win_us(self) -> float:
        return self.b.win_ns / US


def test_starts_blocking_then_learns_short_gaps():
    p = Poll(max_us=200)
    assert p.idle_period(50) == (0, 0)  # nothing learnt yet: blocks at once
    assert p.win_us == 200 / lib.RN_BPOLL_START_DIV
    spins, hit = p.idle_period(30)  # inside the window: the spin catches it
    assert hit == 1 and 25 <= spins <= 31
    assert p.win_us == 50  # a hit keeps the window


def test_window_doubles_up_to_the_limit_while_gaps_fit_it():
    p = Poll(max_us=200)
    wins = []
    for _ in range(6):
        p.idle_period(180)  # longer than the window, shorter than the limit
        wins.append(p.win_us)
    assert wins == [50, 100, 200, 200, 200, 200]
    spins, hit = p.idle_period(180)
    assert hit == 1 and spins >= 170


def test_pauses_halve_the_window_down_to_zero():
    p = Poll(max_us=200)
    for _ in range(3):
        p.idle_period(150)
    assert p.win_us == 200
    wins = []
    for _ in range(4):
        spins, hit = p.idle_period(5000)  # a pause: the whole window is wasted
        assert hit == 0
        assert spins == pytest.approx(wins[-1] if wins else 200, abs=1)
        wins.append(p.win_us)
    assert wins == [100, 50, 0, 0]
    assert p.idle_period(5000) == (0, 0)  # an idle network never spins again


def test_a_stream_does_not_spin_for_the_hold_time():
    p = Poll(max_us=200)
    for _ in range(3):
        p.idle_period(150)
    assert p.win_us == 200
    # a 64 KiB frame between two idle points: this idle point blocks at once
    stream_at = p.now
    assert p.idle_period(50, moved=BULK) == (0, 0)
    # its ACK-only batches right after do not spin either, until the hold ends
    held = 0
    while p.now + 20 * US < stream_at + HOLD:
        assert p.idle_period(20, moved=60) == (0, 0)
        held += 1
    p.now = stream_at + HOLD
    assert held > 10
    spins, hit = p.idle_period(20, moved=60)  # request/response again: spins
    assert hit == 1 and spins > 0


def test_off_never_spins():
    p = Poll(max_us=0)
    for gap in (1, 10, 100, 1000, 1, 1):
        assert p.idle_period(gap) == (0, 0)
    assert p.win_us == 0


def test_limit_is_capped():
    p = Poll(max_us=lib.RN_BPOLL_MAX_US * 10)
    assert p.b.max_ns == lib.RN_BPOLL_MAX_US * US


@settings(max_examples=200, deadline=None)
@given(max_us=st.integers(0, 1000),
       gaps=st.lists(st.tuples(st.floats(0, 3000), st.integers(0, 200_000)), max_size=60))
def test_window_stays_within_limit_and_spins_never_outlast_it(max_us, gaps):
    p = Poll(max_us=max_us)
    for gap, moved in gaps:
        spins, hit = p.idle_period(gap, moved)
        assert 0 <= p.b.win_ns <= p.b.max_ns
        assert spins <= max_us + 1
        assert hit in (0, 1)
        assert not lib.rn_bpoll_active(p.b)


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


GATEWAY = "10.0.2.2"  # host loopback, as the namespace sees it (allow_host_loopback)
ROUNDS = 300
CLIENT = f"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for i in range({ROUNDS}):
    s.sendall(b"x")
    assert s.recv(1) == b"x"
s.close()
print("ok")
"""


@pytest.mark.parametrize("busy_poll_us", [0, 1000])
def test_request_response_busy_polls_only_when_on(busy_poll_us):
    """Real traffic: a client in the namespace does 300 one-byte round trips with an
    echo server on host loopback. With busy polling on, the data path's threads look
    again instead of sleeping (every idle period of a round trip is far shorter than
    1 ms, so the window opens after the first); with it off they never do."""
    srv, t = _echo_server()
    port = srv.getsockname()[1]
    with srv, ringnet.Network(workers=1, allow_host_loopback=True,
                              busy_poll_us=busy_poll_us) as net:
        out = net.run([sys.executable, "-c", CLIENT, GATEWAY, str(port)],
                      capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == b"ok"
        s = net.stats()
    t.join(timeout=10)
    polls = s.total("polls") + s.pump["polls"]
    hits = s.total("poll_hits") + s.pump["poll_hits"]
    if busy_poll_us:
        assert polls > 0 and hits > 0
    else:
        assert polls == 0 and hits == 0
