"""UDP forwards in the worker's C data path (csrc/udp_fwd.c), driven in-process.

The test plays the namespace side of one worker (test_udp_worker.UdpHarness) and a
forward's bound UDP socket on host loopback: each sender's datagrams become frames from the
gateway address on a port of their own (one flow per sender), the namespace's replies
leave through the forward's socket to that sender only, flows expire after the idle
timeout while the forward's socket stays, and removing the forward ends its flows. Runs
under ASan+UBSan too (scripts/test.sh --sanitize tests/test_udp_fwd_worker.py).
"""

from __future__ import annotations

import socket

from ringnet._ringnet_c import ffi, lib

import frames as F
from test_udp_worker import GUEST4, GW4, UdpHarness, complete, udp4, udp_fields

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
