"""UDP forwards (csrc/udp_fwd.c), end to end through a real namespace.

A UDP echo server inside answers each datagram with its payload and the address and port it
came from. Through a forward from host loopback (IPv4 and IPv6), two clients talking at the
same time each get only their own replies (one flow per client), seen inside as two
different gateway ports; a client on a non-loopback address is seen with its real address
(in a user+net namespace of the test's own, where an address on its loopback stands in for
one of this machine's); flows end after the idle timeout; removing the forward frees the
host port.
"""

from __future__ import annotations

import socket
import sys
import textwrap

import pytest

import ringnet
from conftest import needs_userns, wait_until, worker_counter
from forwards import OUTER_ADDR, in_outer_namespace
from localdns import free_port

ECHO_PORT = 5353
ECHO = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(sys.argv[1])))
    while True:
        data, a = s.recvfrom(65535)
        host = a[0][7:] if a[0].startswith("::ffff:") else a[0]
        s.sendto(data + f" {host} {a[1]}".encode(), a)
""")


@pytest.fixture(scope="module")
def net():
    with ringnet.Network(workers=2, control_socket=False, udp_timeout=2) as n:
        n.spawn([sys.executable, "-c", ECHO, str(ECHO_PORT)])
        yield n


def _client(addr: str, bind: str | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind or addr, 0))
    s.settimeout(0.2)
    return s


def _exchange(s: socket.socket, dest: tuple, tag: str, seen: list) -> tuple[str, int] | None:
    """Send ``tag`` and take what comes back (every reply is appended to ``seen``); the
    (address, port) the server saw once the reply to ``tag`` is there, else None."""
    s.sendto(tag.encode(), dest)
    try:
        while True:
            data = s.recv(65535).decode()
            seen.append(data)
            payload, host, port = data.rsplit(" ", 2)
            if payload == tag:
                return host, int(port)
    except socket.timeout:
        return None


def _until(s, dest, tag, seen):
    got: list = []
    wait_until(lambda: got.append(_exchange(s, dest, tag, seen)) or got[-1] is not None,
               f"the echo of {tag}", interval=0)
    return got[-1]


@needs_userns
@pytest.mark.parametrize("lo, gw", [("127.0.0.1", "10.0.2.2"), ("::1", "fd00::2")])
def test_two_concurrent_clients_get_only_their_own_replies(net, lo, gw):
    port = free_port(lo)
    spec = f"[{lo}]:{port}:{ECHO_PORT}/udp" if ":" in lo else f"{lo}:{port}:{ECHO_PORT}/udp"
    flows = worker_counter(net, "fwd_udp_flows")
    with net.publish(spec):
        a, b = _client(lo), _client(lo)
        seen_a: list = []
        seen_b: list = []
        try:
            view_a = _until(a, (lo, port), "a-0", seen_a)
            view_b = _until(b, (lo, port), "b-0", seen_b)
            for i in range(1, 50):  # interleaved: both clients at once
                a.sendto(f"a-{i}".encode(), (lo, port))
                b.sendto(f"b-{i}".encode(), (lo, port))
            for i in range(50, 60):
                assert _until(a, (lo, port), f"a-{i}", seen_a) == view_a
                assert _until(b, (lo, port), f"b-{i}", seen_b) == view_b
        finally:
            a.close()
            b.close()
    assert view_a[0] == view_b[0] == gw
    assert view_a[1] != view_b[1]
    assert seen_a and all(d.startswith("a-") for d in seen_a)
    assert seen_b and all(d.startswith("b-") for d in seen_b)
    assert worker_counter(net, "fwd_udp_flows") - flows == 2


@needs_userns
def test_flows_end_after_the_idle_timeout(net):
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{ECHO_PORT}/udp"):
        c = _client("127.0.0.1")
        try:
            _until(c, ("127.0.0.1", port), "hello", [])

            def udp_flows():
                f = net.flows()
                return int(((f["proto"] == "udp") & (f["guest_port"] == ECHO_PORT)).sum())
            assert udp_flows() >= 1
            wait_until(lambda: udp_flows() == 0, "the forward's flows to expire")
            # a new datagram after expiry opens a new flow and is answered
            assert _until(c, ("127.0.0.1", port), "again", [])[0] == "10.0.2.2"
        finally:
            c.close()


# In a namespace of its own (forwards.in_outer_namespace): one worker, the echo server, a
# sender on the outer address (which stands in for a non-loopback address of this machine)
NON_LOOPBACK_SENDER = textwrap.dedent("""
    import sys
    import ringnet
    from localdns import free_port
    from test_publish_udp import ECHO, ECHO_PORT, _client, _until

    def main(addr):
        with ringnet.Network(workers=1, control_socket=False) as n:
            n.spawn([sys.executable, "-c", ECHO, str(ECHO_PORT)])
            port = free_port(addr)
            with n.publish(f"{addr}:{port}:{ECHO_PORT}/udp"):
                c = _client(addr)
                try:
                    return {"seen": _until(c, (addr, port), "who", []),
                            "own_port": c.getsockname()[1]}
                finally:
                    c.close()
""")


@needs_userns
def test_non_loopback_sender_keeps_its_address_with_one_worker():
    got = in_outer_namespace(NON_LOOPBACK_SENDER)
    assert tuple(got["seen"]) == (OUTER_ADDR, got["own_port"])


@needs_userns
def test_removed_udp_forward_frees_the_port(net):
    port = free_port()
    fwd = net.publish(f"127.0.0.1:{port}:{ECHO_PORT}/udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(OSError):
            s.bind(("127.0.0.1", port))  # the worker holds it
    fwd.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the worker closed its socket
