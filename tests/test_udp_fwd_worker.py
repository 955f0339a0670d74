"""UDP forwards in the worker's C data path (csrc/udp_fwd.c), driven in-process.

The test plays the namespace side of one worker (test_udp_worker.UdpHarness) and a
forward's bound UDP socket on host loopback: each sender's datagrams become frames from the
gateway address on a port of their own (one flow per sender), the namespace's replies
leave through the forward's socket to that sender only, flows expire after the idle
timeout while the forward's socket stays, and removing the forward ends its flows. Runs
under ASan+UBSan too (scripts/test.sh --sanitize tests/test_udp_fwd_worker.py).
"""

from __future__ import annotations

import errno
import socket

from ringnet._ringnet_c import ffi, lib

import frames as F
from test_udp_worker import GUEST4, GW4, UdpHarness, complete, udp4, udp_fields
from test_worker_input import KEY, Harness, params

NS_PORT = 5353


def _forward(h: UdpHarness, fid: int = 1) -> int:
    """A forward of a fresh UDP port on 127.0.0.1 to GUEST4:NS_PORT (the worker owns the
    bound socket); returns the port."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lst.bind(("127.0.0.1", 0))
    lst.setblocking(False)
    port = lst.getsockname()[1]
    nsaddr = ffi.new("uint8_t[16]", list(F.addr(GUEST4)) + [0] * 12)
    assert lib.rn_worker_forward_add_udp(h.w, fid, lst.detach(), 4, nsaddr, NS_PORT) == 0
    return port


def _client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(30)
    return s


def test_one_flow_per_sender_and_replies_to_that_sender_only():
    with UdpHarness() as h, _client() as a, _client() as b:
        port = _forward(h)
        a.sendto(b"from-a", ("127.0.0.1", port))
        b.sendto(b"from-b", ("127.0.0.1", port))
        a.sendto(b"again-a", ("127.0.0.1", port))
        view = {}
        for frm in h.frames(3):
            p = complete(frm)
            sport, dport, _, payload = udp_fields(p)
            assert (p.src, p.dst, dport) == (F.addr(GW4), F.addr(GUEST4), NS_PORT)
            view[payload] = sport
        va, vb = view[b"from-a"], view[b"from-b"]
        assert view[b"again-a"] == va != vb
        c = h.counters()
        assert (c["fwd_udp_flows"], c["flows_open_udp"]) == (2, 2)
        # the namespace answers each view: each client gets only its own answer
        h.send(udp4(NS_PORT, vb, b"to-b", dst=GW4), udp4(NS_PORT, va, b"to-a", dst=GW4))
        assert a.recvfrom(100) == (b"to-a", ("127.0.0.1", port))
        assert b.recvfrom(100) == (b"to-b", ("127.0.0.1", port))
        # removing the forward ends its flows and frees the port
        assert lib.rn_worker_forward_del(h.w, 1) == 0
        assert h.counters()["flows_open_udp"] == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))


def test_flows_expire_and_the_forward_stays():
    with UdpHarness(udp_timeout_ms=50) as h, _client() as a:
        port = _forward(h)
        a.sendto(b"one", ("127.0.0.1", port))
        h.frames(1)
        assert h.counters()["flows_open_udp"] == 1
        h.run_until(lambda: h.counters()["flows_open_udp"] == 0, "the flow to expire")
        a.sendto(b"two", ("127.0.0.1", port))
        [frm] = h.frames(1)
        assert udp_fields(complete(frm))[3] == b"two"
        assert h.counters()["fwd_udp_flows"] == 2


class WorkerOf(UdpHarness):
    """Worker ``index`` of ``nworkers`` (test_udp_worker's harness otherwise)."""

    def __init__(self, index: int, nworkers: int):  # noqa: super().__init__ would build other params
        p = params(index, nworkers)
        p.allow_host_loopback = 1
        p.max_flows = 64
        p.udp_timeout_ms = 30000
        p.prefix4, p.prefix6 = 24, 64
        Harness.__init__(self, p=p)


def test_forward_is_served_by_the_owner_of_its_namespace_endpoint():
    """A UDP flow belongs to the worker of its namespace endpoint (csrc/flow.h): only that
    worker takes a forward to it (the others refuse, -EXDEV, and leave the socket to the
    caller), and the namespace's replies to its clients are routed to that worker."""
    n = 4
    k = ffi.new("struct rn_flow_key *")
    k.family, k.proto, k.sport = 4, 17, NS_PORT
    k.saddr = list(F.addr(GUEST4).ljust(16, b"\0"))
    owner = lib.rn_flow_owner_key(KEY, n, k)
    nsaddr = ffi.new("uint8_t[16]", list(F.addr(GUEST4)) + [0] * 12)
    for index in range(n):
        with WorkerOf(index, n) as h, _client() as a:
            lst = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            lst.bind(("127.0.0.1", 0))
            lst.setblocking(False)
            port = lst.getsockname()[1]
            rc = lib.rn_worker_forward_add_udp(h.w, 1, lst.fileno(), 4, nsaddr, NS_PORT)
            if index != owner:
                assert rc == -errno.EXDEV
                lst.close()  # still ours
                continue
            assert rc == 0
            lst.detach()
            a.sendto(b"hello", ("127.0.0.1", port))
            [frm] = h.frames(1)
            view = udp_fields(complete(frm))[0]
            reply = udp4(NS_PORT, view, b"re", dst=GW4)
            assert lib.rn_flow_owner(KEY, n, reply, len(reply)) == index
            h.send(reply)
            assert a.recvfrom(100) == (b"re", ("127.0.0.1", port))
            assert h.counters()["drop_wrong_owner"] == 0

