"""Network emulation (csrc/netem.c, ringnet/_netem.py): the spec parser and its errors,
then end to end in a real namespace, checked against what the user set.

The end-to-end checks assert only what the emulation guarantees whatever the load of
the machine: a delay can only make a round trip longer (the minimum RTT over several
pings is at least the delay set), a rate can only make a transfer slower (it takes at
least its bytes over the rate, minus one frame), the number of frames lost lies within
a binomial bound whose false-failure probability is below 1e-9, duplicates and
reordering are seen at all. Upper bounds are wide hang detectors. The tight figures
(RTT within 1 ms, rate within 5%) are perf/netem_check.py's.

Pings go to the gateway address, which the worker answers itself: no ping socket or
host configuration is involved, and both directions cross the emulation.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

import ringnet
from ringnet import _netem
from ringnet.errors import ConfigError

from conftest import (as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user, wait_until,
                      worker_counter)

GW = "10.0.2.2"


# The spec parser --------------------------------------------------------------------------


def test_spec_round_trips():
    s = _netem.parse("delay=20ms jitter=5ms loss=1% dup=0.1% reorder=1% rate=100mbit")
    assert (s.delay_ns, s.jitter_ns, s.loss_ppm, s.dup_ppm, s.reorder_ppm, s.rate_bps, s.limit) == \
        (20_000_000, 5_000_000, 10_000, 1_000, 10_000, 100_000_000, 1000)
    assert _netem.parse(str(s)) == s
    assert _netem.parse("delay=1.5ms,loss=50%,limit=10,seed=3,rate=2gbit") == _netem.NetemSpec(
        delay_ns=1_500_000, loss_ppm=500_000, limit=10, seed=3, rate_bps=2_000_000_000)
    assert _netem.parse("duplicate=1%").dup_ppm == 10_000   # Linux netem's word
    for off in ("off", "", "none", "  ", "delay=0"):
        assert _netem.parse(off).off
    assert str(_netem.parse("off")) == "off"


@pytest.mark.parametrize("text,words", [
    ("delay=20", ["delay=20", "unit", "60s"]),
    ("delay=61s", ["delay=61s", "0 to 60s"]),
    ("jitter=-1ms", ["jitter=-1ms", "60s"]),
    ("loss=1", ["loss=1", "0% to 100%"]),
    ("loss=101%", ["loss=101%", "0% to 100%"]),
    ("dup=abc%", ["dup=abc%", "0% to 100%"]),
    ("reorder=200%", ["reorder=200%", "0% to 100%"]),
    ("rate=100mbps", ["rate=100mbps", "1kbit to 100gbit"]),
    ("rate=200gbit", ["rate=200gbit", "1kbit to 100gbit"]),
    ("limit=0", ["limit=0", "1 to 100000"]),
    ("limit=x", ["limit=x", "1 to 100000"]),
    ("seed=-4", ["seed=-4", "0 to"]),
    ("latency=3ms", ["'latency'", "delay, jitter, loss"]),
    ("delay", ["'delay'", "key=value"]),
    ("delay=1ms delay=2ms", ["delay given twice"]),
])
def test_bad_spec_names_key_and_range(text, words):
    with pytest.raises(ConfigError) as e:
        _netem.parse(text, "netem_up")
    msg = str(e.value)
    assert msg.startswith("netem_up: ")
    for w in words:
        assert w in msg


def test_config_directions_and_errors():
    cfg = ringnet.NetworkConfig(netem="delay=10ms", netem_down="loss=5%")
    d = _netem.directions(cfg)
    assert str(d["up"]) == "delay=10ms" and str(d["down"]) == "loss=5%"
    with pytest.raises(ConfigError, match="netem_down: loss=5 "):
        ringnet.NetworkConfig(netem_down="loss=5")
    with pytest.raises(ConfigError, match="faults and netem"):
        ringnet.NetworkConfig(netem="loss=1%", faults="drop=0.1")


def test_cli_error_names_the_option():
    r = subprocess.run(ringnet_cmd("run", "--netem-up", "loss=2", "--", "true"),
                       capture_output=True, text=True, env=child_env(), timeout=120)
    assert r.returncode == 125
    assert "--netem-up: loss=2 must be a percentage from 0% to 100%" in r.stderr


# End to end ----------------------------------------------------------------------------


def _ping(net, count: int, interval: str = "0.05", size: int = 56) -> tuple[list[int], list[float], str]:
    """Ping the gateway ``count`` times; (icmp_seq of each reply in arrival order, RTTs in
    ms, the whole output). -W and -w only bound a hang."""
    r = net.run(["ping", "-n", "-c", str(count), "-i", interval, "-s", str(size), "-W", "5",
                 "-w", str(60 + count), GW], capture_output=True, timeout=180 + count)
    out = r.stdout.decode() + r.stderr.decode()
    seqs = [int(m) for m in re.findall(r"icmp_seq=(\d+)", out)]
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]
    return seqs, rtts, out


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


@needs_userns
def test_delay_both_directions(no_leaks):
    # 30 ms each way: no round trip can take less than 60 ms
    with ringnet.Network(workers=1, netem="delay=30ms") as net:
        _, rtts, out = _ping(net, 10)
        assert len(rtts) == 10, out
        assert min(rtts) >= 60.0, out
        assert _median(rtts) < 60.0 + 1000.0, out      # a hang detector, not a figure
        assert net.netem() == {"up": "delay=30ms", "down": "delay=30ms"}


@needs_userns
def test_delay_one_direction_with_jitter(no_leaks):
    # up 40 +- 10 ms, down none: at least 30 ms
    with ringnet.Network(workers=1, netem_up="delay=40ms jitter=10ms") as net:
        _, rtts, out = _ping(net, 10)
        assert len(rtts) == 10, out
        assert min(rtts) >= 30.0, out
        assert _median(rtts) < 40.0 + 1000.0, out


def _binomial_bounds(n: int, p: float, z: float = 6.5) -> tuple[float, float]:
    """Bounds a Binomial(n, p) count leaves with probability below ~1e-10 (z sigmas; the
    normal approximation is fine for n*p >= 50)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


@needs_userns
def test_loss_within_binomial_bounds(no_leaks):
    with ringnet.Network(workers=1, ipv6=False, netem_up="loss=10% seed=11") as net:
        before_in = worker_counter(net, "frames_in")
        before_lost = worker_counter(net, "netem_loss_up")
        seqs, _, out = _ping(net, 800, interval="0.002")
        taken = worker_counter(net, "frames_in") - before_in
        lost = worker_counter(net, "netem_loss_up") - before_lost
        lo, hi = _binomial_bounds(taken, 0.10)
        assert lo <= lost <= hi, (taken, lost)
        # ping's own view (it sends until 800 are answered): every request it lost is one
        # the worker counted; the rest of the count are frames that were not pings
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        sent, answered = int(m.group(1)), int(m.group(2))
        assert answered == len(set(seqs)), out
        assert 0 <= lost - (sent - answered) <= taken - sent, (sent, answered, lost, taken)
        assert worker_counter(net, "netem_loss_down") == 0


@needs_userns
def test_duplicates_seen(no_leaks):
    with ringnet.Network(workers=1, netem_down="dup=50%") as net:
        seqs, _, out = _ping(net, 40, interval="0.02")
        dups = worker_counter(net, "netem_dup_down")
        assert dups > 0                          # P(none of 40) = 1e-12
        assert len(seqs) - len(set(seqs)) > 0, out   # ping saw (DUP!) replies
        assert "duplicates" in out


@needs_userns
def test_reorder_overtakes(no_leaks):
    # requests wait 200 ms unless reordered: those overtake the ones queued
    with ringnet.Network(workers=1, netem_up="delay=200ms reorder=30%") as net:
        seqs, _, out = _ping(net, 60, interval="0.01")
        assert worker_counter(net, "netem_reorder_up") > 0
        assert seqs != sorted(seqs), out


class _Sink:
    """A TCP server on host loopback that either reads everything (and notes when the
    first and last byte came) or writes ``nbytes``, for one connection."""

    def __init__(self, nbytes: int, send: bool) -> None:
        self.nbytes, self.send = nbytes, send
        self.lst = socket.create_server(("127.0.0.1", 0))
        self.port = self.lst.getsockname()[1]
        self.got = 0
        self.first = self.last = 0.0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.lst.settimeout(120)
        conn, _ = self.lst.accept()
        with conn:
            if self.send:
                conn.sendall(b"x" * self.nbytes)
                return
            while True:
                b = conn.recv(1 << 16)
                if not b:
                    break
                if not self.got:
                    self.first = time.monotonic()
                self.got += len(b)
                self.last = time.monotonic()

    def close(self) -> None:
        self.thread.join(120)
        self.lst.close()


_CLIENT = r"""
import socket, sys, time
port, n, send = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "send"
s = socket.create_connection(("10.0.2.2", port), timeout=120)
if send:
    s.sendall(b"y" * n)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
else:
    got, first = 0, 0.0
    while got < n:
        b = s.recv(1 << 16)
        if not b:
            break
        if not got:
            first = time.monotonic()
        got += len(b)
    print(got, time.monotonic() - first)
"""


@needs_userns
@pytest.mark.parametrize("direction", ["up", "down"])
def test_rate_is_never_exceeded(direction, no_leaks):
    # 16 Mbit/s, 3 MB: at least (3 MB - one 64 KiB frame - a window's first frame) / rate
    rate, n = 16_000_000, 3_000_000
    floor_s = (n - 2 * 65536) * 8 / rate
    sink = _Sink(n, send=direction == "down")
    try:
        with ringnet.Network(workers=1, allow_host_loopback=True,
                             **{f"netem_{direction}": "rate=16mbit"}) as net:
            r = net.run([sys.executable, "-c", _CLIENT, str(sink.port), str(n),
                         "send" if direction == "up" else "recv"],
                        capture_output=True, timeout=300)
            assert r.returncode == 0, r.stderr.decode()
            if direction == "up":
                wait_until(lambda: not sink.thread.is_alive(), "the sink to finish")
                assert sink.got == n
                elapsed = sink.last - sink.first
            else:
                got, elapsed = r.stdout.split()
                assert int(got) == n
                elapsed = float(elapsed)
            assert elapsed >= floor_s, (elapsed, floor_s)
            assert elapsed < floor_s * 2 + 120       # a hang detector
            wait_until(lambda: worker_counter(net, f"netem_queued_{direction}") == 0,
                       "the emulation queue to drain")
    finally:
        sink.close()


@needs_userns
def test_runtime_change_through_api_socket_and_cli(no_leaks):
    with ringnet.Network(workers=2) as net:
        assert net.netem() == {"up": "off", "down": "off"}
        # on, one direction, through the Python API: 1 s is far above any base RTT
        assert net.netem("delay=1s", "up") == {"up": "delay=1s", "down": "off"}
        _, rtts, out = _ping(net, 4, interval="0.2")
        assert len(rtts) == 4 and min(rtts) >= 1000.0, out
        # changed through the CLI (the control socket's netem command)
        r = subprocess.run(ringnet_cmd("netem", net.id, "--down", "dup=100%"), capture_output=True,
                           text=True, env=child_env(), timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == ["up: delay=1s", "down: dup=100%"]
        r = subprocess.run(ringnet_cmd("netem", net.id, "--up", "loss=300%"), capture_output=True,
                           text=True, env=child_env(), timeout=60)
        assert r.returncode == 1 and "loss=300%" in r.stderr and "0% to 100%" in r.stderr
        seqs, _, out = _ping(net, 4, interval="0.2")
        assert len(seqs) == 8, out       # every reply twice
        # off again: no round trip takes a second any more
        assert net.netem("off") == {"up": "off", "down": "off"}
        _, rtts, out = _ping(net, 4, interval="0.2")
        assert len(rtts) == 4 and min(rtts) < 1000.0, out
        wait_until(lambda: worker_counter(net, "netem_queued_up") == 0, "the queue to drain")
        with pytest.raises(ConfigError, match="direction"):
            net.netem("delay=1ms", "sideways")


@needs_userns
@pytest.mark.unpriv
def test_cli_netem_as_unprivileged_user():
    """The whole path rootless: the CLI's --netem-up through a sandboxed worker (timerfd
    armed under its seccomp list) as the unprivileged test user."""
    unpriv_user()   # skips when there is no such user
    r = subprocess.run(as_user_argv([sys.executable, "-m", "ringnet", "run", "--workers", "1",
                                     "--netem-up", "delay=30ms", "--", "ping", "-n", "-c", "3",
                                     "-i", "0.2", "-W", "60", GW]),
                       capture_output=True, text=True, timeout=180, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", r.stdout)]
    assert len(rtts) == 3 and min(rtts) >= 30.0, r.stdout


@needs_userns
@pytest.mark.parametrize("direction", ["up", "down"])
def test_tcp_intact_through_a_bad_link(direction, no_leaks):
    """Both TCP ends (the namespace's kernel, the worker's TCP) recover from losses,
    duplicates and reordering in both directions: every byte arrives."""
    n = 2_000_000
    sink = _Sink(n, send=direction == "down")
    try:
        with ringnet.Network(workers=1, allow_host_loopback=True,
                             netem="delay=2ms loss=5% dup=5% reorder=10% seed=5") as net:
            r = net.run([sys.executable, "-c", _CLIENT, str(sink.port), str(n),
                         "send" if direction == "up" else "recv"],
                        capture_output=True, timeout=300)
            assert r.returncode == 0, r.stderr.decode()
            if direction == "up":
                wait_until(lambda: not sink.thread.is_alive(), "the sink to finish")
                assert sink.got == n
            else:
                assert int(r.stdout.split()[0]) == n
            # the link did its damage: with some 20% of frames touched, none touched among
            # the hundreds of frames (data and ACKs) has a probability far below 1e-9
            c = net.counters()["workers"][0]
            assert sum(c[f"netem_{k}_{d}"] for k in ("loss", "dup", "reorder")
                       for d in ("up", "down")) > 0
    finally:
        sink.close()
