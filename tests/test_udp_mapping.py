"""UDP endpoint-independent mapping (RFC 4787) and the host port budget (csrc/udp.c).

One host socket per namespace source address and port, whatever the destinations, and
at most a budget of them across all workers, so that a namespace cannot exhaust the
host's ephemeral ports. Unit tests drive a worker in-process (test_udp_worker's
harness); the end-to-end test opens 30,000 flows from inside over 2 workers. Every
peer is on host loopback (network rule).
"""

from __future__ import annotations

import os
import subprocess
import socket
import sys
import time

import pytest

import ringnet

import frames as F
from conftest import HANG_S, counter_reaches, needs_userns, wait_until
from tunpace import TUN_PACE
from test_udp_worker import UdpHarness, complete, icmp_error, server, udp4, udp6, udp_fields
from test_worker_input import GW4, Harness, params


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class BudgetHarness(UdpHarness):
    """test_udp_worker's harness (gateway mapped to loopback) with a port budget."""

    def __init__(self, udp_ports: int):  # noqa: super().__init__ would build other params
        p = params()
        p.allow_host_loopback = 1
        p.max_flows = 64
        p.udp_timeout_ms = 30000
        p.prefix4, p.prefix6 = 24, 64
        p.udp_ports = udp_ports
        Harness.__init__(self, p=p)


@pytest.fixture
def h():
    with UdpHarness() as harness:
        yield harness


@pytest.mark.parametrize("family", [4, 6])
def test_one_source_uses_one_host_port_for_every_destination(h, family):
    frame = udp6 if family == 6 else udp4
    with server(family) as a, server(family) as b:
        h.send(frame(40000, a.getsockname()[1], b"to a"), frame(40000, b.getsockname()[1], b"to b"))
        da, pa = a.recvfrom(10)
        db, pb = b.recvfrom(10)
        assert (da, db) == (b"to a", b"to b")
        assert pa[1] == pb[1]  # the same host port towards both: endpoint independent
        c = h.counters()
        assert (c["flows_open_udp"], c["udp_ports_open"]) == (2, 1)
        # Both reply; each answer comes back from its own server's port
        a.sendto(b"from a", pa)
        b.sendto(b"from b", pb)
        got = sorted(udp_fields(complete(f))[0:2] + (udp_fields(complete(f))[3],)
                     for f in h.frames(2))
        assert got == sorted([(a.getsockname()[1], 40000, b"from a"),
                              (b.getsockname()[1], 40000, b"from b")])
        # Another namespace source: a port of its own
        h.send(frame(40001, a.getsockname()[1], b"other"))
        _, po = a.recvfrom(10)
        assert po[1] != pa[1] and h.counters()["udp_ports_open"] == 2


def test_filtering_is_address_dependent(h):
    """A host the source sent to may answer from any of its ports (shown as that port);
    a host it never sent to is dropped, though it knows the host port."""
    with server(4) as a, server(4) as other_port:
        h.send(udp4(40002, a.getsockname()[1], b"hi"))
        _, peer = a.recvfrom(10)
        other_port.sendto(b"same host", peer)
        [f] = h.frames(1)
        p = complete(f)
        assert p.src == F.addr(GW4)
        assert udp_fields(p)[0] == other_port.getsockname()[1]
        assert udp_fields(p)[3] == b"same host"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.2", 0))  # another address of loopback: another host
            stranger.sendto(b"let me in", peer)
            h.run_until(lambda: h.counters()["host_drops"] > 0, "the stranger's datagram")
        assert h.pop() == [] and h.counters()["host_drops"] == 1


def test_icmp_error_on_a_shared_port_reaches_the_right_flow(h):
    """Two flows share a port; the one whose destination is closed gets the port
    unreachable, quoting its own datagram."""
    with server(4) as probe:
        closed = probe.getsockname()[1]
    with server(4) as live:
        h.send(udp4(40003, live.getsockname()[1], b"ok"), udp4(40003, closed, b"nobody"))
        assert live.recv(10) == b"ok"
        [err] = h.frames(1)
        t, c, _, quote, _ = icmp_error(err)
        assert (t, c) == (3, 3)
        q = F.parse(bytes(12) + quote)
        assert udp_fields(q)[:2] == (40003, closed)


def test_port_closes_with_its_last_flow():
    with server(4) as a, server(4) as b, UdpHarness(udp_timeout_ms=200) as h:
        fds = open_fds()
        # one intake pass: the flows open together, and the worker does not run (nothing
        # can expire) until run_until() below
        h.send(udp4(40004, a.getsockname()[1], b"1"), udp4(40004, b.getsockname()[1], b"2"))
        assert (a.recv(10), b.recv(10)) == (b"1", b"2")
        assert open_fds() == fds + 1  # one socket for both flows
        c = h.counters()
        assert (c["flows_open_udp"], c["udp_ports_open"]) == (2, 1)
        h.run_until(lambda: h.counters()["flows_open_udp"] == 0, "the flows to expire")
        c = h.counters()
        assert (c["flows_open_udp"], c["udp_ports_open"]) == (0, 0)
        assert open_fds() == fds
        h.send(udp4(40004, a.getsockname()[1], b"3"))  # a new port for the source
        assert a.recv(10) == b"3"
        assert h.counters()["udp_ports_open"] == 1


def test_budget_refuses_new_sources_but_not_new_destinations():
    with server(4) as a, server(4) as b, BudgetHarness(4) as h:
        fds = open_fds()
        h.send(*[udp4(41000 + i, a.getsockname()[1], b"x") for i in range(10)])
        c = h.counters()
        assert (c["udp_in"], c["flows_refused_ports"], c["udp_ports_open"]) == (4, 6, 4)
        assert open_fds() == fds + 4
        # A source that holds a port may talk to anyone
        h.send(udp4(41000, b.getsockname()[1], b"new destination"))
        assert b.recv(100) == b"new destination"
        c = h.counters()
        assert (c["udp_in"], c["udp_ports_open"], c["flows_open_udp"]) == (5, 4, 5)
        # IPv6 sources count against the same budget
        h.send(udp6(41100, a.getsockname()[1], b"six"))
        assert h.counters()["flows_refused_ports"] == 7


# --- end to end: 30,000 flows over 2 workers ------------------------------------------------

SENDER = r'''
import socket, sys, time
dst, port, n, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
''' + TUN_PACE + r'''
for i in range(n):
    pace(i)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", first + i))
    s.sendto(b"x", (dst, port))
    s.close()
print("sent", n, "dropped", tun_tx()[1] - drops0)
'''

FLOWS = 30000


@needs_userns
def test_thirty_thousand_flows_stay_within_the_port_budget(no_leaks):
    """30,000 namespace sources each send one datagram to a sink on host loopback over 2
    workers. The workers hold at most the budget (8,192 by default) of host ports, refuse
    the rest (flows_refused_ports), and a host process can still send from an unbound
    socket (an ephemeral port is still free) while they are held."""
    budget = ringnet.NetworkConfig().udp_ports
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert budget < (hi - lo + 1) // 2  # well below the ephemeral range
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            ringnet.Network(workers=2, allow_host_loopback=True, udp_timeout=600) as net:
        sink.bind(("127.0.0.1", 0))
        out = net.run([sys.executable, "-c", SENDER, "10.0.2.2", str(sink.getsockname()[1]),
                       str(FLOWS), "20000"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["sent", str(FLOWS), "dropped", "0"]
        wait_until(lambda: sum(w["udp_in"] + w["flows_refused_ports"]
                               for w in net.counters()["workers"]) >= FLOWS,
                   f"the workers to take all {FLOWS} datagrams")
        c = net.counters()["workers"]
        held = [w["udp_ports_open"] for w in c]
        assert sum(w["udp_in"] + w["flows_refused_ports"] for w in c) == FLOWS
        assert all(x == budget // 2 for x in held), held  # each worker's share, used up
        assert sum(w["flows_refused_ports"] for w in c) == FLOWS - budget
        assert sum(w["flows_open_udp"] for w in c) == budget
        # While those ports are held, the host still has ephemeral ports for everyone
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"host", sink.getsockname())
            assert s.getsockname()[1] != 0
        assert not net.failed_children()


def test_paused_port_resumes_after_its_waiting_flow_expires():
    """Ring to_ns fills: the port stops reading and one of its flows waits for room on
    its behalf. That flow expires meanwhile; the wait passes to the port's other flow,
    and once the namespace drains the ring every datagram still arrives.

    The worker's clock is the real one: a machine that stalls this test for the UDP
    timeout may rightly expire the other flow too (or the waiter before it waits), and
    the attempt then proves nothing. The clock around each datagram bounds the worker's
    view of the gaps, so such an attempt is recognised and made again."""
    t_end = time.monotonic() + HANG_S
    while not _paused_port_attempt(0.3):
        assert time.monotonic() < t_end, "every attempt stalled for the timeout"


def _paused_port_attempt(timeout: float) -> bool:
    """One attempt of the test above; False if it stalled for ``timeout`` (seconds)."""
    margin = 0.002  # the worker's clock is in ms
    with server(4) as a, server(4) as b, UdpHarness(udp_timeout_ms=int(timeout * 1000)) as h:
        to_a, to_b = a.getsockname()[1], b.getsockname()[1]
        t_open = time.monotonic()
        h.send(udp4(40005, to_b, b"b"), udp4(40005, to_a, b"a"))
        _, peer = a.recvfrom(10)
        b.recvfrom(10)
        big = b"z" * 60000
        n = 30  # far more than a 512 KiB ring holds
        for _ in range(n):
            a.sendto(big, peer)
        last_b = t_open  # before the worker last saw traffic on the flow to b
        stalled = False

        def alive_until(cond, what: str) -> None:
            """Run the worker until cond(), sending the flow to b a datagram every quarter
            timeout; note a stall if the worker may have seen b idle for the timeout."""
            def step() -> bool:
                nonlocal last_b, stalled
                if time.monotonic() - last_b >= timeout / 4:
                    t = time.monotonic()
                    h.send(udp4(40005, to_b, b"keep"))
                    stalled |= time.monotonic() - last_b >= timeout - margin
                    last_b = t
                stalled |= time.monotonic() - last_b >= timeout - margin
                return stalled or cond()
            h.run_until(step, what)

        alive_until(lambda: h.counters()["room_waits"] >= 1, "a flow to wait for room")
        if stalled or time.monotonic() - t_open >= timeout - margin:
            return False  # the flow to a may have expired before it waited
        # The flow to b kept alive, the one to a (the waiter) expires
        alive_until(lambda: h.counters()["flows_open_udp"] < 2, "the waiting flow to expire")
        if stalled:
            return False
        c = h.counters()
        assert (c["flows_open_udp"], c["udp_ports_open"]) == (1, 1)
        got: list[bytes] = []
        alive_until(lambda: len(got.extend(h.pop()) or got) >= n, f"{n} datagrams")
        if stalled and len(got) < n:
            return False
        assert len(got) == n  # from a's server, let in through the flow to the same host
        assert all(udp_fields(complete(f))[3] == big for f in got)
        assert h.counters()["host_drops"] == 0
        return True


EIM = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(60)  # only a hang detector
for port in sys.argv[1:]:
    s.sendto(b"hello " + port.encode(), ("10.0.2.2", int(port)))
for _ in sys.argv[1:]:
    data, peer = s.recvfrom(100)
    print(peer[1], data.decode())
'''


def _one_socket_to_servers(workers: int, n: int) -> tuple[list, list[str], list[dict]]:
    """One socket inside a network of ``workers`` sends to ``n`` UDP servers on host
    loopback, each of which answers; returns the address each server saw it from, its
    sorted answers and each server's expected one, and the workers' counters after."""
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in sinks:
            s.bind(("127.0.0.1", 0))
            s.settimeout(HANG_S)
        with ringnet.Network(workers=workers, allow_host_loopback=True) as net:
            proc = net.spawn([sys.executable, "-c", EIM] +
                             [str(s.getsockname()[1]) for s in sinks],
                             stdout=subprocess.PIPE, text=True)
            peers = []
            for s in sinks:
                data, peer = s.recvfrom(100)
                peers.append(peer)
                s.sendto(b"re " + data, peer)
            out, _ = proc.communicate(timeout=HANG_S)
            counter_reaches(net, "udp_out", n)  # counted once the answer is in the ring
            counters = net.counters()["workers"]
        answers = (sorted(out.split("\n")[:-1]),
                   sorted(f"{s.getsockname()[1]} re hello {s.getsockname()[1]}" for s in sinks))
        return peers, answers, counters
    finally:
        for s in sinks:
            s.close()


@needs_userns
def test_one_inside_socket_keeps_one_host_port_end_to_end(no_leaks):
    """Through a whole network (one worker): one socket inside sends to three servers on
    host loopback; all three see it from the same host port, and all answers come back."""
    peers, (got, want), [c] = _one_socket_to_servers(1, 3)
    assert len({p[1] for p in peers}) == 1
    assert got == want
    assert (c["udp_in"], c["udp_out"], c["flows_open_udp"], c["udp_ports_open"]) == (3, 3, 3, 1)


@needs_userns
def test_one_inside_socket_keeps_one_host_port_across_workers(no_leaks):
    """Through a network of 4 workers: one socket inside sends to 12 servers on host
    loopback. A UDP flow belongs to the worker that owns its namespace source (flow.c), so
    all 12 flows are in one worker, share one host port, and every server sees that port.
    (Were flows owned by their 5-tuple, 12 of them would all land on one of 4 workers with
    probability 4**-11: the source would show up to 4 host ports.)"""
    n = 12
    peers, (got, want), c = _one_socket_to_servers(4, n)
    assert len({p[1] for p in peers}) == 1, sorted(p[1] for p in peers)
    assert got == want
    assert sorted(w["udp_ports_open"] for w in c) == [0, 0, 0, 1]
    assert sorted(w["flows_open_udp"] for w in c) == [0, 0, 0, n]
