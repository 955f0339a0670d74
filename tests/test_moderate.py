"""The rules of wake-up moderation (csrc/moderate.c), driven with made-up clocks.

rn_mod_decide() is the whole decision of an idle point, with the time passed in:
these tests feed it packet counts (rn_mod_up(), rn_mod_down()) and timestamps that
they choose, and assert when a thread naps, when it stops napping, and how its
cooling period grows, without any real time passing. Only the last test calls
rn_mod_idle(), which reads the clock and really naps, for its outcome alone.

The module is internal to the C core; the test extension exposes it
(ringnet/_build.py, TEST_API).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringnet._ringnet_test import ffi, lib  # type: ignore[import-not-found]

MS = 1_000_000  # nanoseconds
COOL_MIN, COOL_MAX = lib.RN_MOD_COOL_MIN_NS, lib.RN_MOD_COOL_MAX_NS


class Mod:
    """One thread's struct rn_mod and a made-up CLOCK_MONOTONIC."""

    def __init__(self, nap_us: int = 50, now: int = 10**12):
        self.m = ffi.new("struct rn_mod *")
        lib.rn_mod_init(self.m, nap_us)
        self.now = now

    def idle(self, up: int = 0, down: int = 0) -> bool:
        """The thread moved ``up`` and ``down`` small packets and is idle now: does it
        nap? A nap takes its length of made-up time."""
        lib.rn_mod_up(self.m, up)
        lib.rn_mod_down(self.m, down)
        nap = lib.rn_mod_decide(self.m, self.now)
        assert nap in (0, 1)
        assert (self.m.up, self.m.down) == (0, 0)  # a new count starts at every idle point
        if nap:
            self.now += self.m.nap_ns
        return bool(nap)

    def fail_until_cooling(self) -> int:
        """Nap on bursts whose naps bring nothing until the thread cools down; return
        how many naps it took."""
        for naps in range(100):
            if not self.idle(up=lib.RN_MOD_BURST):
                return naps
            assert not self.idle()  # judged: the nap brought nothing
        raise AssertionError("100 failed naps and no cooling")


def test_init_limits_the_nap_and_derives_the_yield():
    m = Mod(50).m
    assert m.nap_ns == 50_000
    # 40,000 packets/s for 50 us is 2 packets: the minimum of RN_MOD_YIELD holds
    assert getattr(m, "yield") == lib.RN_MOD_YIELD == 4
    m = Mod(5000).m  # cut to the maximum
    assert m.nap_ns == lib.RN_MOD_NAP_MAX_US * 1000 == 1_000_000
    assert getattr(m, "yield") == lib.RN_MOD_RATE * lib.RN_MOD_NAP_MAX_US // 1_000_000 == 40
    m = Mod(0).m
    assert (m.nap_ns, m.napped, m.fails, m.cool_ns, m.cool_until) == (0, 0, 0, COOL_MIN, 0)


def test_off_never_naps():
    mod = Mod(0)
    for up in (lib.RN_MOD_BURST, 100, 10**6):
        lib.rn_mod_up(mod.m, up)
        assert not lib.rn_mod_may_nap(mod.m)  # nap_us 0: whatever the work
        assert not mod.idle()


def test_a_one_way_burst_naps_and_a_smaller_one_does_not():
    mod = Mod()
    lib.rn_mod_up(mod.m, lib.RN_MOD_BURST - 1)
    assert not lib.rn_mod_may_nap(mod.m)  # the caller need not look further
    assert not mod.idle()
    for up, down in ((lib.RN_MOD_BURST, 0), (0, lib.RN_MOD_BURST), (7, 7 + lib.RN_MOD_BURST)):
        mod = Mod()
        lib.rn_mod_up(mod.m, up)
        lib.rn_mod_down(mod.m, down)
        assert lib.rn_mod_work(mod.m) == lib.RN_MOD_BURST
        assert lib.rn_mod_may_nap(mod.m)
        t0 = mod.now
        assert mod.idle()
        assert mod.m.napped == 1 and mod.now == t0 + mod.m.nap_ns


def test_requests_and_answers_never_nap():
    """Traffic that goes both ways in equal numbers (queries and their answers, TCP's
    ACKs) is no stream, however much of it there is."""
    mod = Mod()
    for n in (1, 2, 100, 10**6):
        lib.rn_mod_up(mod.m, n)
        lib.rn_mod_down(mod.m, n)
        assert lib.rn_mod_work(mod.m) == 0 and not lib.rn_mod_may_nap(mod.m)
        assert not mod.idle()
    assert (mod.m.fails, mod.m.cool_until) == (0, 0)


@pytest.mark.parametrize("nap_us", [50, 200, 1000])
def test_a_stream_keeps_the_thread_napping(nap_us):
    """UDP at 1 Gbit/s in 1400-byte datagrams, 89,000 a second: every nap brings in
    more than the yield (a 40,000-a-second stream's worth), so every idle point is a
    nap and none fails."""
    mod = Mod(nap_us)
    rate = 89_000  # datagrams a second
    last, naps = mod.now, 0
    assert mod.idle(up=lib.RN_MOD_BURST)  # the stream starts with a burst
    for _ in range(10_000):
        arrived = rate * (mod.now - last) // 10**9
        last = mod.now
        assert arrived >= getattr(mod.m, "yield")
        assert mod.idle(up=arrived)
        naps += 1
        assert (mod.m.fails, mod.m.cool_ns, mod.m.cool_until) == (0, COOL_MIN, 0)
    assert naps == 10_000


def test_failed_naps_in_a_row_start_cooling():
    mod = Mod()
    for i in range(lib.RN_MOD_FAILS - 1):  # fails short of the limit: no cooling
        assert mod.idle(up=2)
        assert not mod.idle(up=getattr(mod.m, "yield") - 1)
        assert mod.m.fails == i + 1 and mod.m.cool_until == 0
    assert mod.idle(up=2)
    t = mod.now
    assert not mod.idle()  # the last failure in a row
    assert mod.m.fails == 0
    assert mod.m.cool_until == t + COOL_MIN and mod.m.cool_ns == 2 * COOL_MIN
    # cooling: bursts do not make it nap, up to the last nanosecond of the period
    for now in (t, t + COOL_MIN // 2, t + COOL_MIN - 1):
        mod.now = now
        assert not mod.idle(up=10**6)
    mod.now = t + COOL_MIN
    assert mod.idle(up=2)  # cooled down


def test_a_success_resets_the_failure_count():
    mod = Mod()
    assert mod.idle(up=2)
    for _ in range(3 * lib.RN_MOD_FAILS):  # fails, but never RN_MOD_FAILS in a row
        for i in range(lib.RN_MOD_FAILS - 1):
            assert not mod.idle(up=getattr(mod.m, "yield") - 1)  # judged: failed
            assert mod.m.fails == i + 1
            assert mod.idle(up=2)  # a new burst, a new nap
        assert mod.idle(up=getattr(mod.m, "yield"))  # that nap paid off: napping on
        assert mod.m.fails == 0
    assert mod.m.cool_until == 0


def test_cooling_doubles_up_to_a_second_and_a_good_nap_resets_it():
    mod = Mod()
    periods = []
    for _ in range(9):
        assert mod.fail_until_cooling() == lib.RN_MOD_FAILS
        start = mod.now
        periods.append(mod.m.cool_until - start)
        mod.now = mod.m.cool_until - 1
        assert not mod.idle(up=2)  # still cooling
        mod.now += 1
    assert periods == [20 * MS, 40 * MS, 80 * MS, 160 * MS, 320 * MS, 640 * MS,
                       1000 * MS, 1000 * MS, 1000 * MS]
    assert periods[0] == COOL_MIN and periods[-1] == COOL_MAX
    # a nap that pays off: the next cooling period is the shortest again
    assert mod.idle(up=2)
    assert mod.idle(up=getattr(mod.m, "yield"))
    assert mod.m.cool_ns == COOL_MIN
    assert not mod.idle()  # judged: failed; 3 more make a cooling period of 20 ms
    assert mod.fail_until_cooling() == lib.RN_MOD_FAILS - 1
    assert mod.m.cool_until - mod.now == COOL_MIN


def test_paced_bursts_cool_down_and_keep_napping_between():
    """A stream paced in bursts with long gaps (each nap after a burst brings nothing)
    naps RN_MOD_FAILS times, then cools; the periods of cooling grow, so the naps it
    wastes get rarer."""
    mod = Mod()
    start, wasted = mod.now, 0
    while mod.now < start + 10_000 * MS:
        if mod.idle(up=32):  # a burst
            wasted += 1
            mod.idle()  # the nap brought nothing: the gap
        mod.now += MS
    # Periods of 20, 40, ... 640 ms (1.26 s in all, plus 5 ms of bursts and naps
    # before each), then of 1 s: 15 begin within 10 s, each after 4 wasted naps
    assert wasted == 15 * lib.RN_MOD_FAILS == 60


@settings(max_examples=300, deadline=None)
@given(nap_us=st.integers(0, 2000),
       steps=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100),
                                st.integers(0, 3 * 10**9)), max_size=60))
def test_invariants_under_any_traffic(nap_us, steps):
    """Whatever the traffic and however time moves: no nap without a one-way burst,
    no nap while cooling, the cooling period within its bounds."""
    mod = Mod(nap_us)
    for up, down, dt in steps:
        mod.now += dt
        judged, cool_until = mod.m.napped, mod.m.cool_until
        nap = mod.idle(up, down)
        if nap:
            assert nap_us and abs(up - down) >= lib.RN_MOD_BURST
            assert not (mod.now - mod.m.nap_ns < cool_until)
        if not judged and not nap:
            assert mod.m.cool_until == cool_until  # only a judgement starts cooling
        assert mod.m.napped == nap
        assert COOL_MIN <= mod.m.cool_ns <= COOL_MAX
        assert mod.m.fails < lib.RN_MOD_FAILS


def test_idle_naps_for_real():
    """rn_mod_idle(): the same rules at the real time, with a real nap (1 us)."""
    m = ffi.new("struct rn_mod *")
    lib.rn_mod_init(m, 1)
    assert lib.rn_mod_idle(m) == 0  # no work: block
    lib.rn_mod_up(m, lib.RN_MOD_BURST)
    assert lib.rn_mod_idle(m) == 1 and m.napped == 1
    assert lib.rn_mod_idle(m) == 0 and m.fails == 1  # judged: the nap brought nothing
