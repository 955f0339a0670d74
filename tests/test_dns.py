"""Name resolution inside the namespace, end to end, with real resolver clients
(getent through glibc, dig) against a real DNS server (dnsmasq) on host loopback.

The namespace reaches the DNS server only through the DNS forwarder (10.0.2.3,
fd00::3) while host loopback is otherwise denied. Per the network rule of these
tests, the upstream is always our own server on loopback, never this machine's
resolver.

No test measures time. Clients make a single attempt (dig +tries=1, glibc
attempts:1) with a timeout that only detects a hang, so an answer cannot come from a
retry of the client's, and a refusal is told from a timeout by its error message.
Upstream failover is asserted by where the query went: which server answered, how
many queries each upstream received (the silent one counts them, dnsmasq logs them),
and the counters dns_failovers, dns_resends and those of the TCP connects.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

import pytest

import ringnet
from ringnet import _resolv

from conftest import HANG_S, counter_reaches, needs_userns, wait_until, worker_counter
from localdns import LocalDns, build_query, dns_query, free_port

pytestmark = [needs_userns,
              pytest.mark.skipif(not shutil.which("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"),
                                 reason="dnsmasq (Debian dnsmasq-base) is not installed")]

needs_dig = pytest.mark.skipif(not shutil.which("dig"), reason="dig (Debian bind9-dnsutils) "
                               "is not installed")
A, AAAA = "192.0.2.10", "2001:db8::10"
HANG = int(HANG_S)  # client timeouts, in whole seconds: hang detectors only
# glibc's resolver, one attempt per server, with its longest timeout (30 s)
ONE_ATTEMPT = dict(os.environ, RES_OPTIONS="attempts:1 timeout:30")


@pytest.fixture(scope="module")
def dns():
    with LocalDns() as server:
        yield server


@pytest.fixture(scope="module")
def net(dns):
    with ringnet.Network(workers=2, allow_host_loopback=False, dns_upstream=dns.upstream) as n:
        yield n


def run(net, *argv, env=None, timeout=2 * HANG_S):
    r = net.run(list(argv), capture_output=True, timeout=timeout, env=env)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def dig_run(net, server, *args):
    """dig, one query attempt, waiting for its answer as long as HANG: (rc, out, err)."""
    return run(net, "dig", f"@{server}", "+tries=1", f"+timeout={HANG}", *args)


def dig(net, server, qtype, *opts):
    """The addresses dig got for example.test, from a single query attempt."""
    rc, out, err = dig_run(net, server, "+short", *opts, "example.test", qtype)
    assert rc == 0, out + err
    return out.split()


def dig_refused(net, server, *opts):
    """dig's single attempt fails because it is refused (ICMP port unreachable, or an
    RST), neither answered nor timed out."""
    rc, out, err = dig_run(net, server, *opts, "example.test")
    assert rc == 9, out + err  # no reply
    assert "connection refused" in out and "timed out" not in out, out
    assert A not in out


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
    assert worker_counter(net, "dns_flows") > 0


ICMP_PROBE = """
import select, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR: every ICMP error, with type and code
s.connect((%r, %d))
s.send(b"x")
p = select.poll()
p.register(s, select.POLLIN)
if not p.poll(%d):
    print("timeout")
else:
    _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    ee_errno, _, ee_type, ee_code = struct.unpack("=IBBB", anc[0][2][:7])
    print(ee_errno, ee_type, ee_code)
"""


def icmp_error_for(net, host: str, port: int) -> str:
    """The ICMP error (errno, type, code) a UDP datagram to ``host``:``port`` from inside
    draws."""
    rc, out, err = run(net, sys.executable, "-c", ICMP_PROBE % (host, port, HANG * 1000))
    assert rc == 0, err
    return out.strip()


@needs_dig
def test_host_loopback_stays_denied_except_the_forwarder(net, dns):
    """The DNS server's own port is not reachable through the gateway, nor is the DNS
    address on another port: only address:53 is translated."""
    refused = worker_counter(net, "policy_refused")
    rc, out, err = dig_run(net, "10.0.2.2", "-p", str(dns.port), "example.test")
    assert rc == 9 and A not in out, out + err
    assert "host unreachable" in out and "timed out" not in out, out  # refused at once
    # EHOSTUNREACH: through the gateway, administratively prohibited; the DNS address
    # on another port is nothing in the namespace's subnet, host unreachable
    assert icmp_error_for(net, "10.0.2.2", dns.port) == "113 3 13"
    assert icmp_error_for(net, "10.0.2.3", dns.port) == "113 3 1"
    assert counter_reaches(net, "policy_refused", refused + 3) == refused + 3


@needs_dig
def test_ipv6_upstream_serves_both_families():
    with LocalDns(host="::1") as dns6, \
            ringnet.Network(workers=1, dns_upstream=dns6.upstream) as net:
        assert dig(net, "10.0.2.3", "A") == [A]
        assert dig(net, "fd00::3", "AAAA", "+tcp") == [AAAA]


@needs_dig
def test_no_upstream_means_a_quick_refusal(tmp_path, monkeypatch):
    """No upstream at all: the query is refused (ICMP port unreachable), not left to
    time out."""
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver\n")
    monkeypatch.setattr(_resolv, "RESOLV_CONF", str(empty))
    with ringnet.Network(workers=1) as net:
        dig_refused(net, "10.0.2.3")
        assert counter_reaches(net, "policy_refused", 1) == 1
        assert counter_reaches(net, "icmp_errors_out", 1) == 1


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
        wait_until(lambda: dig(net, "10.0.2.3", "A") == ["192.0.2.2"], "the new upstream",
                   interval=0.1)
        assert not net.failed_children()


def test_many_queries_keep_few_flows(dns):
    """A client that reuses one socket is one flow; queries from fresh ports are one flow
    each and expire after the short DNS timeout, not udp_timeout."""
    script = (
        "import socket, struct, sys\n"
        "sys.path.insert(0, %r)\n"
        "from localdns import build_query, dns_answers\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(%d)\n"
        "ok = 0\n"
        "for i in range(300):\n"
        "    s.sendto(build_query('example.test', 1, i), ('10.0.2.3', 53))\n"
        "    qid, rcode, ans = dns_answers(s.recv(4096))\n"
        "    ok += qid == i and rcode == 0 and ans == [(1, bytes([192, 0, 2, 10]))]\n"
        "print(ok)\n" % (os.path.dirname(os.path.abspath(__file__)), HANG))
    with ringnet.Network(workers=1, dns_upstream=dns.upstream) as net:
        rc, out, err = run(net, sys.executable, "-c", script)
        assert rc == 0, err
        assert out.strip() == "300"
        w = net.counters()["workers"][0]
        assert w["dns_flows"] == 1 and w["flows_open_udp"] == 1


def test_local_dns_helper_answers(dns):
    assert dns_query(dns.host, dns.port, "example.test") == [A]
    assert dns_query(dns.host, dns.port, "example.test", 28, tcp=True) == [AAAA]


# Upstream failover: the first upstream fails, the next one answers (dns.c).

@pytest.fixture
def logged():
    """dnsmasq counting the queries it receives."""
    with LocalDns(log_queries=True) as server:
        yield server


def asked(server: LocalDns, before: int, want: int) -> list[tuple[str, str, str]]:
    """The queries ``server`` received since it had ``before``, once there are ``want``
    (it logs a query before answering it, so normally at once)."""
    wait_until(lambda: len(server.queries()) >= before + want, f"{want} queries")
    got = server.queries()[before:]
    assert len(got) == want, got
    return got


class BlackHole:
    """A loopback UDP port that never answers; counts the datagrams it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.upstream = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.count = 0

    def received(self) -> int:
        """Datagrams received so far: everything now queued on the socket is read."""
        while True:
            try:
                self.sock.recv(65535, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return self.count
            self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def dead_upstream():
    """A loopback port where nothing listens (UDP: port unreachable; TCP: refused)."""
    return "127.0.0.1:%d" % free_port()


@needs_dig
def test_dead_first_upstream_fails_over_at_once(logged):
    """The kernel answers the first upstream with port unreachable: ringnet keeps that
    error from the namespace and resends the query to the second, so a client making
    a single attempt gets its answer; later flows start at the second upstream."""
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), logged.upstream)) as net:
        n = len(logged.queries())
        assert dig(net, "10.0.2.3", "A") == [A]
        assert asked(logged, n, 1) == [("A", "example.test", "127.0.0.1")]
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert counter_reaches(net, "dns_resends", 1) == 1
        assert worker_counter(net, "icmp_errors_out") == 0  # the error stayed outside
        # The second upstream is the current one now: the next flow goes there directly
        assert dig(net, "fd00::3", "AAAA") == [AAAA]
        assert asked(logged, n + 1, 1) == [("AAAA", "example.test", "127.0.0.1")]
        assert worker_counter(net, "dns_failovers") == 1
        assert worker_counter(net, "dns_resends") == 1


@needs_dig
def test_silent_first_upstream_fails_over_after_the_timeout(logged):
    """A first upstream that swallows queries: the only way on is the failover timer
    (1 s), after which the kept query is resent to the second upstream, within the
    client's single attempt."""
    with BlackHole() as hole, \
            ringnet.Network(workers=1, dns_upstream=(hole.upstream, logged.upstream)) as net:
        n = len(logged.queries())
        assert dig(net, "10.0.2.3", "A") == [A]
        assert hole.received() == 1  # it was asked first, once
        assert asked(logged, n, 1) == [("A", "example.test", "127.0.0.1")]
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert counter_reaches(net, "dns_resends", 1) == 1
        assert worker_counter(net, "timer_runs") >= 1  # the flow's timer moved it
        assert worker_counter(net, "icmp_errors_out") == 0


def test_silent_first_upstream_with_parallel_queries(logged):
    """getaddrinfo sends A and AAAA together from one socket: both are kept and
    resent, within glibc's single attempt."""
    with BlackHole() as hole, \
            ringnet.Network(workers=1, dns_upstream=(hole.upstream, logged.upstream)) as net:
        n = len(logged.queries())
        rc, out, err = run(net, "getent", "ahosts", "example.test", env=ONE_ATTEMPT)
        assert rc == 0, err
        assert {line.split()[0] for line in out.splitlines()} == {A, AAAA}
        assert hole.received() == 2
        assert sorted(asked(logged, n, 2)) == [("A", "example.test", "127.0.0.1"),
                                               ("AAAA", "example.test", "127.0.0.1")]
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert counter_reaches(net, "dns_resends", 2) == 2


@needs_dig
def test_failover_to_an_upstream_of_the_other_family():
    """A dead IPv4 upstream, then an IPv6 one: the flow gets an IPv6 socket."""
    with LocalDns(host="::1", log_queries=True) as dns6, \
            ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns6.upstream)) as net:
        n = len(dns6.queries())
        assert dig(net, "10.0.2.3", "A") == [A]
        assert asked(dns6, n, 1) == [("A", "example.test", "::1")]
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert counter_reaches(net, "dns_resends", 1) == 1


@needs_dig
def test_tcp_connect_fails_over(logged):
    """dig +tcp: the connect to the first upstream is refused, the second one answers."""
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), logged.upstream)) as net:
        n = len(logged.queries())
        assert dig(net, "10.0.2.3", "A", "+tcp") == [A]
        assert asked(logged, n, 1) == [("A", "example.test", "127.0.0.1")]
        assert counter_reaches(net, "tcp_connect_refused", 1) == 1  # refused, at once
        assert worker_counter(net, "tcp_connect_failed") == 0  # no connect timed out
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert counter_reaches(net, "dns_resends", 1) == 1
        assert worker_counter(net, "tcp_rst_sent") == 0
        # The next connection goes to the second upstream directly
        assert dig(net, "fd00::3", "AAAA", "+tcp") == [AAAA]
        assert asked(logged, n + 1, 1) == [("AAAA", "example.test", "127.0.0.1")]
        assert worker_counter(net, "tcp_connect_refused") == 1
        assert worker_counter(net, "dns_resends") == 1


@needs_dig
def test_tcp_connect_to_a_silent_upstream_fails_over(logged):
    """A first upstream that drops SYNs (a listener whose accept queue is full): the
    failover timer gives the connect up and the flow connects to the second one,
    instead of waiting for the kernel's connect timeout (minutes)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # fills the queue: later SYNs are dropped
        silent = "127.0.0.1:%d" % listener.getsockname()[1]
        with ringnet.Network(workers=1, dns_upstream=(silent, logged.upstream)) as net:
            n = len(logged.queries())
            assert dig(net, "10.0.2.3", "A", "+tcp") == [A]
            assert asked(logged, n, 1) == [("A", "example.test", "127.0.0.1")]
            assert counter_reaches(net, "tcp_connect_failed", 1) == 1  # given up on
            assert worker_counter(net, "tcp_connect_refused") == 0
            assert counter_reaches(net, "dns_failovers", 1) == 1
            assert counter_reaches(net, "dns_resends", 1) == 1


@needs_dig
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_single_dead_upstream_fails_quickly(transport):
    """With nowhere to fail over to, the client sees the refusal at once, as before:
    its single attempt is refused, not left to time out."""
    with ringnet.Network(workers=1, dns_upstream=dead_upstream()) as net:
        dig_refused(net, "10.0.2.3", transport)
        if transport == "+tcp":
            assert counter_reaches(net, "tcp_connect_refused", 1) == 1
        else:
            assert counter_reaches(net, "icmp_errors_out", 1) >= 1
        assert worker_counter(net, "dns_failovers") == 0
        assert worker_counter(net, "dns_resends") == 0


@pytest.mark.parametrize("payload", [b"xy", build_query("example.test") + b"\0" * 1300],
                         ids=["malformed", "oversized"])
def test_unkept_queries_are_not_resent(dns, payload):
    """A datagram too short to be a query, or longer than the copy kept, is passed on
    but never resent: the first upstream's error reaches the client (ECONNREFUSED),
    that upstream still stops being the current one, and resolution keeps working."""
    probe = ("import socket, sys\nsys.path.insert(0, %r)\n"
             "from localdns import build_query, dns_answers\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.connect(('10.0.2.3', 53))\ns.settimeout(%d)\ns.send(%r)\n"
             "try:\n    s.recv(4096)\n    print('answer')\n"
             "except OSError as e:\n    print(type(e).__name__)\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(%d)\n"
             "s.sendto(build_query('example.test', 1, 7), ('10.0.2.3', 53))\n"
             "print(dns_answers(s.recv(4096)))\n"
             % (os.path.dirname(os.path.abspath(__file__)), HANG, payload, HANG))
    with ringnet.Network(workers=1, dns_upstream=(dead_upstream(), dns.upstream)) as net:
        rc, out, err = run(net, sys.executable, "-c", probe)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == "ConnectionRefusedError"
        assert lines[1] == str((7, 0, [(1, bytes([192, 0, 2, 10]))]))
        assert counter_reaches(net, "dns_failovers", 1) == 1
        assert worker_counter(net, "dns_resends") == 0
        assert not net.failed_children()
