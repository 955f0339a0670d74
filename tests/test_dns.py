"""Name resolution inside the namespace, end to end, with real resolver clients
(getent through glibc, dig) against a real DNS server (dnsmasq) on host loopback.

The namespace reaches the DNS server only through the DNS forwarder (10.0.2.3,
fd00::3) while host loopback is otherwise denied. Per the network rule of these
tests, the upstream is always our own server on loopback, never this machine's
resolver.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time

import pytest

import ringnet
from ringnet import _resolv

from conftest import needs_userns
from localdns import LocalDns, build_query, dns_query, free_port

pytestmark = [needs_userns,
              pytest.mark.skipif(not shutil.which("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"),
                                 reason="dnsmasq (Debian dnsmasq-base) is not installed")]

needs_dig = pytest.mark.skipif(not shutil.which("dig"), reason="dig (Debian bind9-dnsutils) "
                               "is not installed")
A, AAAA = "192.0.2.10", "2001:db8::10"


@pytest.fixture(scope="module")
def dns():
    with LocalDns() as server:
        yield server


@pytest.fixture(scope="module")
def net(dns):
    with ringnet.Network(workers=2, allow_host_loopback=False, dns_upstream=dns.upstream) as n:
        yield n


def run(net, *argv, env=None, timeout=30):
    r = net.run(list(argv), capture_output=True, timeout=timeout, env=env)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def dig(net, server, qtype, *opts):
    rc, out, err = run(net, "dig", f"@{server}", "+short", "+time=2", "+tries=2", *opts,
                       "example.test", qtype)
    assert rc == 0, out + err
    return out.split()


def test_getent_resolves_a_and_aaaa(net):
    rc, out, err = run(net, "getent", "ahostsv4", "example.test")
    assert rc == 0, err
    assert {line.split()[0] for line in out.splitlines()} == {A}
    rc, out, err = run(net, "getent", "ahostsv6", "example.test")
    assert rc == 0, err
    assert {line.split()[0] for line in out.splitlines()} == {AAAA}
    rc, out, _ = run(net, "getent", "hosts", "example.test")
    assert rc == 0 and out.split()[0] in (A, AAAA)
    rc, _, _ = run(net, "getent", "hosts", "missing.invalid")
    assert rc == 2  # not found, answered (not a timeout)


def test_getent_over_tcp(net):
    env = dict(os.environ, RES_OPTIONS="use-vc")  # glibc: queries over TCP only
    rc, out, err = run(net, "getent", "ahostsv4", "example.test", env=env)
    assert rc == 0, err
    assert out.split()[0] == A


@needs_dig
@pytest.mark.parametrize("server", ["10.0.2.3", "fd00::3"])
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dig_a_and_aaaa(net, server, transport):
    assert dig(net, server, "A", transport) == [A]
    assert dig(net, server, "AAAA", transport) == [AAAA]


def test_dns_went_through_the_forwarder(net):
    c = net.counters()
    assert sum(w["dns_flows"] for w in c["workers"]) > 0


@needs_dig
def test_host_loopback_stays_denied_except_the_forwarder(net, dns):
    """The DNS server's own port is not reachable through the gateway, nor is the DNS
    address on another port: only address:53 is translated."""
    rc, out, _ = run(net, "dig", "@10.0.2.2", "-p", str(dns.port), "+time=1", "+tries=1",
                     "example.test")
    assert rc != 0 and A not in out
    rc, out, _ = run(net, "dig", "@10.0.2.3", "-p", str(dns.port), "+time=1", "+tries=1",
                     "example.test")
    assert rc != 0 and A not in out
    probe = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.connect(('10.0.2.2', %d))\ns.send(b'x')\ns.settimeout(3)\n"
             "try:\n    s.recv(10)\nexcept OSError as e:\n    print(type(e).__name__, e.errno)\n"
             % dns.port)
    rc, out, _ = run(net, sys.executable, "-c", probe)
    assert out.strip() == "OSError 113"  # EHOSTUNREACH: administratively prohibited


@needs_dig
def test_ipv6_upstream_serves_both_families():
    with LocalDns(host="::1") as dns6, \
            ringnet.Network(workers=1, dns_upstream=dns6.upstream) as net:
        assert dig(net, "10.0.2.3", "A") == [A]
        assert dig(net, "fd00::3", "AAAA", "+tcp") == [AAAA]


@needs_dig
def test_no_upstream_means_a_quick_refusal(tmp_path, monkeypatch):
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver\n")
    monkeypatch.setattr(_resolv, "RESOLV_CONF", str(empty))
    with ringnet.Network(workers=1) as net:
        t0 = time.monotonic()
        rc, out, err = run(net, "dig", "@10.0.2.3", "+time=3", "+tries=1", "example.test")
        assert rc != 0 and A not in out
        assert time.monotonic() - t0 < 3  # refused, not timed out
        assert sum(w["policy_refused"] for w in net.counters()["workers"]) >= 1


@needs_dig
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: resolv.conf names port 53, and "
                    "only root binds it")
def test_upstreams_follow_the_host_resolv_conf(tmp_path, monkeypatch):
    """Two servers on loopback port 53 answer differently; the namespace follows a
    resolv.conf symlink as it is pointed from one to the other."""
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text("nameserver 127.83.0.1\n")
    b.write_text("nameserver 127.83.0.2\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(a)
    monkeypatch.setattr(_resolv, "RESOLV_CONF", str(link))
    with LocalDns({"example.test": ("192.0.2.1",)}, host="127.83.0.1", port=53), \
            LocalDns({"example.test": ("192.0.2.2",)}, host="127.83.0.2", port=53), \
            ringnet.Network(workers=2) as net:
        assert dig(net, "10.0.2.3", "A") == ["192.0.2.1"]
        link.unlink()
        link.symlink_to(b)
        deadline = time.monotonic() + 15
        while dig(net, "10.0.2.3", "A") != ["192.0.2.2"]:
            assert time.monotonic() < deadline, "the new upstream was not used"
            time.sleep(0.5)
        assert not net.failed_children()


def test_many_queries_keep_few_flows(dns):
    """A client that reuses one socket is one flow; queries from fresh ports are one flow
    each and expire after the short DNS timeout, not udp_timeout."""
    script = (
        "import socket, struct, sys\n"
        "sys.path.insert(0, %r)\n"
        "from localdns import build_query, dns_answers\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(3)\n"
        "ok = 0\n"
        "for i in range(300):\n"
        "    s.sendto(build_query('example.test', 1, i), ('10.0.2.3', 53))\n"
        "    qid, rcode, ans = dns_answers(s.recv(4096))\n"
        "    ok += qid == i and rcode == 0 and ans == [(1, bytes([192, 0, 2, 10]))]\n"
        "print(ok)\n" % os.path.dirname(os.path.abspath(__file__)))
    with ringnet.Network(workers=1, dns_upstream=dns.upstream) as net:
        rc, out, err = run(net, sys.executable, "-c", script, timeout=60)
        assert rc == 0, err
        assert out.strip() == "300"
        w = net.counters()["workers"][0]
        assert w["dns_flows"] == 1 and w["flows_open_udp"] == 1


def test_local_dns_helper_answers(dns):
    assert dns_query(dns.host, dns.port, "example.test") == [A]
    assert dns_query(dns.host, dns.port, "example.test", 28, tcp=True) == [AAAA]


# Upstream failover: the first upstream fails, the next one answers (dns.c).

def wsum(net, name):
    return sum(w[name] for w in net.counters()["workers"])


class BlackHole:
    """A loopback UDP port that reads queries and never answers; counts what it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.upstream = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.sock.recv(65535)
                self.received += 1
            except socket.timeout:
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def dead_upstream():
    """A loopback port where nothing listens (UDP: port unreachable; TCP: refused)."""
    return "127.0.0.1:%d" % free_port()


def test_dead_first_upstream_fails_over_at_once(dns):
    """The kernel answers the first upstream with port unreachable: the query goes to
    the second at once, the namespace sees no error, and later flows start there."""
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns.upstream)) as net:
        t0 = time.monotonic()
        rc, out, err = run(net, "getent", "hosts", "example.test")
        took = time.monotonic() - t0
        assert rc == 0, err
        assert out.split()[0] in (A, AAAA)
        assert took < 2, took  # glibc alone would wait 5 s, or fail on the ICMP error
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") >= 1
        assert wsum(net, "icmp_errors_out") == 0
        # The second upstream is the current one now: no failover for the next queries
        resends = wsum(net, "dns_resends")
        rc, out, err = run(net, "getent", "ahostsv4", "example.test")
        assert rc == 0 and out.split()[0] == A, err
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") == resends


def test_silent_first_upstream_fails_over_after_the_timeout(dns):
    """A first upstream that swallows queries: after the failover timeout (1 s) the kept
    query is resent to the second one, long before the client's own 5 s timeout."""
    with BlackHole() as hole, \
            ringnet.Network(workers=1, dns_upstream=(hole.upstream, dns.upstream)) as net:
        t0 = time.monotonic()
        rc, out, err = run(net, "dig", "@10.0.2.3", "+short", "+time=5", "+tries=1",
                           "example.test", "A")
        took = time.monotonic() - t0
        assert rc == 0, out + err
        assert out.split() == [A]
        assert 0.9 < took < 4, took
        assert hole.received >= 1  # it was asked first
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") >= 1


def test_silent_first_upstream_with_parallel_queries(dns):
    """getaddrinfo sends A and AAAA together from one socket: both are kept and
    resent, so neither waits for glibc's own 5 s timeout."""
    with BlackHole() as hole, \
            ringnet.Network(workers=1, dns_upstream=(hole.upstream, dns.upstream)) as net:
        t0 = time.monotonic()
        rc, out, err = run(net, "getent", "ahosts", "example.test")
        took = time.monotonic() - t0
        assert rc == 0, err
        assert {line.split()[0] for line in out.splitlines()} == {A, AAAA}
        assert took < 4, took
        assert hole.received >= 2
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") == 2


@needs_dig
def test_failover_to_an_upstream_of_the_other_family():
    """A dead IPv4 upstream, then an IPv6 one: the flow gets an IPv6 socket."""
    with LocalDns(host="::1") as dns6, \
            ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns6.upstream)) as net:
        assert dig(net, "10.0.2.3", "A") == [A]
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") >= 1


@needs_dig
def test_tcp_connect_fails_over(dns):
    """dig +tcp: the connect to the first upstream is refused, the second one answers."""
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns.upstream)) as net:
        t0 = time.monotonic()
        assert dig(net, "10.0.2.3", "A", "+tcp") == [A]
        assert time.monotonic() - t0 < 2
        assert wsum(net, "tcp_connect_refused") == 1
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") == 1
        assert wsum(net, "tcp_rst_sent") == 0
        # The next connection goes to the second upstream directly
        assert dig(net, "fd00::3", "AAAA", "+tcp") == [AAAA]
        assert wsum(net, "tcp_connect_refused") == 1


@needs_dig
def test_tcp_connect_to_a_silent_upstream_fails_over(dns):
    """A first upstream that drops SYNs (a listener whose accept queue is full): after
    the failover timeout the flow connects to the second one instead of waiting for the
    kernel's connect timeout."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # fills the queue: later SYNs are dropped
        silent = "127.0.0.1:%d" % listener.getsockname()[1]
        with ringnet.Network(workers=1, dns_upstream=(silent, dns.upstream)) as net:
            t0 = time.monotonic()
            assert dig(net, "10.0.2.3", "A", "+tcp") == [A]
            took = time.monotonic() - t0
            assert 0.9 < took < 4, took
            assert wsum(net, "tcp_connect_failed") == 1
            assert wsum(net, "dns_failovers") == 1
            assert wsum(net, "dns_resends") == 1


@needs_dig
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_single_dead_upstream_fails_quickly(transport):
    """With nowhere to fail over to, the client sees the failure at once, as before."""
    with ringnet.Network(workers=1, dns_upstream=dead_upstream()) as net:
        t0 = time.monotonic()
        rc, out, err = run(net, "dig", "@10.0.2.3", "+time=3", "+tries=1", transport,
                           "example.test")
        assert rc != 0 and A not in out
        assert time.monotonic() - t0 < 2.5
        assert wsum(net, "dns_failovers") == 0 and wsum(net, "dns_resends") == 0
        if transport == "+tcp":
            assert wsum(net, "tcp_connect_refused") == 1
        else:
            assert wsum(net, "icmp_errors_out") >= 1


@pytest.mark.parametrize("payload", [b"xy", build_query("example.test") + b"\0" * 1300],
                         ids=["malformed", "oversized"])
def test_unkept_queries_are_not_resent(dns, payload):
    """A datagram too short to be a query, or longer than the copy kept, is passed on
    but never resent: the first upstream's error reaches the client (ECONNREFUSED),
    that upstream still stops being the current one, and resolution keeps working."""
    probe = ("import socket, sys\nsys.path.insert(0, %r)\n"
             "from localdns import build_query, dns_answers\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.connect(('10.0.2.3', 53))\ns.settimeout(3)\ns.send(%r)\n"
             "try:\n    s.recv(4096)\n    print('answer')\n"
             "except OSError as e:\n    print(type(e).__name__)\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n"
             "s.sendto(build_query('example.test', 1, 7), ('10.0.2.3', 53))\n"
             "print(dns_answers(s.recv(4096)))\n"
             % (os.path.dirname(os.path.abspath(__file__)), payload))
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns.upstream)) as net:
        rc, out, err = run(net, sys.executable, "-c", probe)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == "ConnectionRefusedError"
        assert lines[1] == str((7, 0, [(1, bytes([192, 0, 2, 10]))]))
        assert wsum(net, "dns_failovers") == 1
        assert wsum(net, "dns_resends") == 0
        assert not net.failed_children()
