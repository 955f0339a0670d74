"""The worker's side of the on_connect hook (csrc/verdict.c), driven in-process: the test
plays the namespace (frames into ring to_worker, out of ring to_ns), the orchestrator
(the other end of the hook socket) and the host (sockets on 127.0.0.1 and ::1).

Holding, absorbing, replaying, refusing, redirecting under the policy, the cache, the
bound on held flows and the worker's own deadline, each seen in counters, frames and host
sockets. Only host loopback is ever reached (the gateway maps to it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

import pytest

from ringnet._hook import ASK, REPLY
from ringnet._ringnet_c import lib

import frames as F
from conftest import HANG_S
from test_tcp_input import ACK, RST, SYN, Peer, TcpHarness
from test_udp_worker import UdpHarness, complete, icmp_error, server, udp4, udp6, udp_fields
from test_worker_input import GUEST4, GW4, GW6

ALLOW, DENY, REDIRECT = lib.RN_VERDICT_ALLOW, lib.RN_VERDICT_DENY, lib.RN_VERDICT_REDIRECT


class HookHarness(UdpHarness):
    """A UDP harness whose worker asks a hook, played by the test on the other end of
    the hook socket."""

    def __init__(self, cache_ms: int = 0, pending_max: int = 4, timeout_ms: int = 600_000,
                 fail_open: bool = False) -> None:
        super().__init__()
        self.orch, self.wend = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.wend.setblocking(False)
        self.orch.setblocking(False)
        assert lib.rn_verdict_setup(self.w, self.wend.fileno(), cache_ms, pending_max, timeout_ms,
                                    int(fail_open)) == 0

    def close(self) -> None:
        super().close()
        self.orch.close()
        self.wend.close()

    def asks(self) -> list[tuple]:
        """The asks the worker wrote: (id, proto, family, src, sport, dst, dport)."""
        out = []
        while True:
            try:
                data = self.orch.recv(65536)
            except BlockingIOError:
                return out
            assert len(data) % ASK.size == 0
            for id_, family, proto, sport, dport, saddr, daddr in ASK.iter_unpack(data):
                alen = 16 if family == 6 else 4
                out.append((id_, proto, family, str(ipaddress.ip_address(saddr[:alen])), sport,
                            str(ipaddress.ip_address(daddr[:alen])), dport))

    def apply(self, id_: int, kind: int, addr: str = None, port: int = 0) -> None:
        """Send a verdict, then run a pass of the loop, which reads and applies it."""
        packed = ipaddress.ip_address(addr).packed if addr else b""
        self.orch.send(REPLY.pack(id_, kind, 6 if len(packed) == 16 else 4, port, packed))
        assert lib.rn_worker_poll(self.w) >= 0


def nothing_waiting(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.recv(100)
    except BlockingIOError:
        return True
    finally:
        s.settimeout(30)
    return False


def test_first_datagram_held_more_absorbed_then_replayed_on_allow():
    with HookHarness() as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, port, b"first"))
        c = h.counters()
        assert (c["hook_held"], c["hook_asks"], c["flows_open_udp"], c["udp_in"]) == (1, 1, 0, 0)
        h.send(udp4(4000, port, b"second"))          # same flow, still waiting
        assert h.counters()["hook_absorbed"] == 1
        [ask] = h.asks()                             # one ask, sent once
        assert ask[1:] == (17, 4, GUEST4, 4000, GW4, port)
        assert nothing_waiting(srv)
        h.apply(ask[0], ALLOW)
        assert srv.recv(100) == b"first"             # the held datagram, replayed
        assert h.counters()["flows_open_udp"] == 1
        h.apply(ask[0], ALLOW)                       # answered already: ignored
        assert h.counters()["flows_open_udp"] == 1 and nothing_waiting(srv)
        h.send(udp4(4000, port, b"third"))           # the flow exists now: no ask
        assert srv.recv(100) == b"third" and h.asks() == []


@pytest.mark.parametrize("family", [4, 6])
def test_deny_answers_administratively_prohibited(family):
    with HookHarness() as h:
        frm = udp4(4000, 9, b"x") if family == 4 else udp6(4000, 9, b"x")
        h.send(frm)
        [ask] = h.asks()
        h.apply(ask[0], DENY)
        [err] = h.pop()
        t, c, _, quote, p = icmp_error(err)
        assert (t, c) == ((3, 13) if family == 4 else (1, 1))
        assert quote == frm[12:]
        c = h.counters()
        assert (c["hook_verdicts_deny"], c["flows_open_udp"], c["icmp_errors_out"]) == (1, 0, 1)


def test_redirect_goes_to_the_target_and_the_policy_judges_it():
    with HookHarness() as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, 9, b"moved"))
        [ask] = h.asks()
        h.apply(ask[0], REDIRECT, GW4, port)
        assert srv.recv(100) == b"moved"
        # a target in the namespace's own subnet: the policy refuses it
        h.send(udp4(4001, 9, b"x"))
        [ask] = h.asks()
        h.apply(ask[0], REDIRECT, "10.0.2.77", port)
        [err] = h.pop()
        assert icmp_error(err)[:2] == (3, 13)
        # a target of the other family is refused too
        h.send(udp4(4002, 9, b"x"))
        [ask] = h.asks()
        h.apply(ask[0], REDIRECT, GW6, port)
        assert icmp_error(h.pop()[0])[:2] == (3, 13)
        c = h.counters()
        assert (c["hook_verdicts_redirect"], c["hook_redirect_refused"]) == (3, 2)
        assert nothing_waiting(srv)


def test_udp_redirect_answers_come_from_the_original_destination():
    with HookHarness() as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, 9, b"question"))
        [ask] = h.asks()
        h.apply(ask[0], REDIRECT, GW4, port)
        data, peer = srv.recvfrom(100)
        assert data == b"question"
        srv.sendto(b"answer", peer)
        [frm] = h.frames(1)
        p = complete(frm)
        assert (p.src, p.dst) == (F.addr(GW4), F.addr(GUEST4))
        assert udp_fields(p)[0:2] == (9, 4000) and udp_fields(p)[3] == b"answer"


def test_cache_decides_later_flows_to_the_destination():
    with HookHarness(cache_ms=3_600_000) as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, port, b"a"))
        [ask] = h.asks()
        h.apply(ask[0], ALLOW)
        assert srv.recv(100) == b"a"
        h.send(udp4(4001, port, b"b"))               # another flow, same destination
        assert srv.recv(100) == b"b"
        assert h.asks() == [] and h.counters()["hook_cached"] == 1
        h.send(udp4(4002, port + 1 if port < 65535 else port - 1, b"c"))   # another port: asks
        assert len(h.asks()) == 1


def test_flows_beyond_the_bound_get_the_fail_mode():
    with HookHarness(pending_max=1) as h:
        h.send(udp4(4000, 9, b"x"))
        h.send(udp4(4001, 9, b"y"))
        c = h.counters()
        assert (c["hook_held"], c["hook_overflow"], c["hook_denied"]) == (1, 1, 1)
        assert icmp_error(h.pop()[0])[:2] == (3, 13)
        assert len(h.asks()) == 1


def test_fail_open_beyond_the_bound_lets_the_flow_go():
    with HookHarness(pending_max=1, fail_open=True) as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, port, b"held"))
        h.send(udp4(4001, port, b"open"))
        assert srv.recv(100) == b"open"
        assert h.counters()["hook_overflow"] == 1


def test_no_verdict_by_the_deadline_applies_the_fail_mode():
    with HookHarness(timeout_ms=1) as h:
        h.send(udp4(4000, 9, b"x"))
        assert len(h.asks()) == 1
        h.run_until(lambda: h.counters()["hook_timeouts"] == 1, "the held flow's deadline")
        assert icmp_error(h.pop()[0])[:2] == (3, 13)
        assert h.counters()["hook_verdicts_deny"] == 1


def test_malformed_verdicts_are_dropped_and_counted():
    with HookHarness() as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(4000, port, b"x"))
        [ask] = h.asks()
        h.apply(ask[0], 7)                           # no such kind
        h.orch.send(b"short")                        # not a whole record
        assert lib.rn_worker_poll(h.w) >= 0
        h.apply(12345, ALLOW)                        # unknown id: nothing to do
        assert h.counters()["hook_bad_verdicts"] == 2 and nothing_waiting(srv)
        h.apply(ask[0], ALLOW)                       # the flow still waits for its verdict
        assert srv.recv(100) == b"x"


def test_setup_checks_its_arguments():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b, UdpHarness() as h:
        assert lib.rn_verdict_setup(h.w, -1, 0, 4, 1000, 0) < 0
        assert lib.rn_verdict_setup(h.w, a.fileno(), 0, 0, 1000, 0) < 0
        assert lib.rn_verdict_setup(h.w, a.fileno(), 0, 4, 0, 0) < 0
        assert lib.rn_verdict_setup(h.w, a.fileno(), 0, 4, 1000, 0) == 0
        assert lib.rn_verdict_setup(h.w, a.fileno(), 0, 4, 1000, 0) < 0   # once only


@contextlib.contextmanager
def tcp_hook_harness():
    """A TCP harness whose worker asks a hook; yields (harness, orchestrator's end)."""
    orch, wend = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    orch.setblocking(False)
    wend.setblocking(False)
    h = TcpHarness()
    try:
        assert lib.rn_verdict_setup(h.w, wend.fileno(), 0, 4, 600_000, 0) == 0
        yield h, orch
    finally:
        h.close()
        orch.close()
        wend.close()


def one_ask(orch: socket.socket) -> int:
    data = orch.recv(65536)
    assert len(data) == ASK.size
    return ASK.unpack(data)[0]


def test_tcp_syn_held_retransmit_absorbed_then_handshake_on_allow():
    with tcp_hook_harness() as (h, orch), socket.create_server(("127.0.0.1", 0)) as srv:
        peer = Peer(h, srv.getsockname()[1])
        assert peer.syn() == []                      # held: no SYN-ACK, no host connect
        assert (h.c("hook_held"), h.c("tcp_connects"), h.c("flows_open_tcp")) == (1, 0, 0)
        opts = struct.pack("!BBH", 2, 4, peer.mss)
        assert peer.send(SYN, seq=peer.isn, advance=False, opts=opts) == []   # retransmitted
        assert h.c("hook_absorbed") == 1
        id_ = one_ask(orch)
        orch.send(REPLY.pack(id_, ALLOW, 0, 0, b""))
        segs = peer.wait(lambda s: s.flags & SYN, HANG_S)   # the loop reads the verdict
        srv.settimeout(HANG_S)
        srv.accept()[0].close()
        [sa] = [s for s in segs if s.flags & SYN]
        assert sa.flags == SYN | ACK and sa.ack == peer.isn + 1
        assert h.c("tcp_connects") == 1


def test_tcp_deny_resets_the_held_syn():
    with tcp_hook_harness() as (h, orch):
        peer = Peer(h, 9)
        assert peer.syn() == []
        orch.send(REPLY.pack(one_ask(orch), DENY, 0, 0, b""))
        [rst] = peer.wait(lambda s: s.flags & RST)
        assert rst.flags == RST | ACK and rst.ack == peer.isn + 1
        assert (h.c("hook_verdicts_deny"), h.c("tcp_connects")) == (1, 0)
