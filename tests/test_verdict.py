"""The worker's side of the on_connect hook (csrc/verdict.c), driven in-process: the test
plays the namespace (frames into ring to_worker, out of ring to_ns), the orchestrator
(rn_verdict_take() / rn_verdict_apply()) and the host (sockets on 127.0.0.1 and ::1).

Holding, absorbing, replaying, refusing, redirecting under the policy, the cache, the
bound on held flows and the worker's own deadline, each seen in counters, frames and host
sockets. Only host loopback is ever reached (the gateway maps to it).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ringnet._ringnet_c import ffi, lib

from test_udp_worker import UdpHarness, icmp_error, server, udp4, udp6
from test_worker_input import GUEST4, GW4, GW6

ALLOW, DENY, REDIRECT = lib.RN_VERDICT_ALLOW, lib.RN_VERDICT_DENY, lib.RN_VERDICT_REDIRECT


class HookHarness(UdpHarness):
    """A UDP harness whose worker asks a hook (played by the test)."""

    def __init__(self, cache_ms: int = 0, pending_max: int = 4, timeout_ms: int = 600_000,
                 fail_open: bool = False) -> None:
        super().__init__()
        assert lib.rn_verdict_setup(self.w, cache_ms, pending_max, timeout_ms, int(fail_open)) == 0

    def asks(self) -> list[tuple]:
        """The asks due: (id, proto, family, src, sport, dst, dport)."""
        buf = ffi.new("struct rn_verdict_ask[]", 16)
        n = lib.rn_verdict_take(self.w, buf, 16)
        out = []
        for a in buf[0:n]:
            alen = 16 if a.family == 6 else 4
            out.append((a.id, a.proto, a.family, str(ipaddress.ip_address(bytes(a.saddr)[:alen])),
                        a.sport, str(ipaddress.ip_address(bytes(a.daddr)[:alen])), a.dport))
        return out

    def apply(self, id_: int, kind: int, addr: str = None, port: int = 0) -> int:
        """Apply a verdict, then run a pass of the loop (publishes what it sent), as the
        worker does; returns rn_verdict_apply()'s result."""
        packed = ipaddress.ip_address(addr).packed if addr else b""
        rc = lib.rn_verdict_apply(self.w, id_, kind, 6 if len(packed) == 16 else 4,
                                  packed or ffi.NULL, port)
        assert lib.rn_worker_poll(self.w) >= 0
        return rc


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
        assert lib.rn_verdict_due(h.w)
        c = h.counters()
        assert (c["hook_held"], c["hook_asks"], c["flows_open_udp"], c["udp_in"]) == (1, 1, 0, 0)
        h.send(udp4(4000, port, b"second"))          # same flow, still waiting
        assert h.counters()["hook_absorbed"] == 1
        [ask] = h.asks()
        assert ask[1:] == (17, 4, GUEST4, 4000, GW4, port)
        assert not lib.rn_verdict_due(h.w) and h.asks() == []
        assert nothing_waiting(srv)
        assert h.apply(ask[0], ALLOW) == 1
        assert srv.recv(100) == b"first"             # the held datagram, replayed
        assert h.counters()["flows_open_udp"] == 1
        assert h.apply(ask[0], ALLOW) == 0           # answered already: ignored
        h.send(udp4(4000, port, b"third"))           # the flow exists now: no ask
        assert srv.recv(100) == b"third" and h.asks() == []


@pytest.mark.parametrize("family", [4, 6])
def test_deny_answers_administratively_prohibited(family):
    with HookHarness() as h:
        frm = udp4(4000, 9, b"x") if family == 4 else udp6(4000, 9, b"x")
        h.send(frm)
        [ask] = h.asks()
        assert h.apply(ask[0], DENY) == 1
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
        assert h.apply(ask[0], REDIRECT, GW4, port) == 1
        assert srv.recv(100) == b"moved"
        # a target in the namespace's own subnet: the policy refuses it
        h.send(udp4(4001, 9, b"x"))
        [ask] = h.asks()
        assert h.apply(ask[0], REDIRECT, "10.0.2.77", port) == 1
        [err] = h.pop()
        assert icmp_error(err)[:2] == (3, 13)
        # a target of the other family is refused too
        h.send(udp4(4002, 9, b"x"))
        [ask] = h.asks()
        assert h.apply(ask[0], REDIRECT, GW6, port) == 1
        assert icmp_error(h.pop()[0])[:2] == (3, 13)
        c = h.counters()
        assert (c["hook_verdicts_redirect"], c["hook_redirect_refused"]) == (3, 2)
        assert nothing_waiting(srv)


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


def test_bad_arguments_are_refused():
    with HookHarness() as h:
        assert h.apply(1, 7) < 0
        assert lib.rn_verdict_apply(h.w, 1, REDIRECT, 5, ffi.NULL, 80) < 0
        assert h.apply(12345, ALLOW) == 0            # unknown id: nothing to do
        assert lib.rn_verdict_setup(h.w, 0, 4, 1000, 0) < 0   # once only
    with UdpHarness() as h:
        assert lib.rn_verdict_setup(h.w, 0, 0, 1000, 0) < 0
        assert lib.rn_verdict_setup(h.w, 0, 4, 0, 0) < 0
        assert not lib.rn_verdict_due(h.w)
