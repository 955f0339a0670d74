"""ICMP end to end: ping and ping -6 from inside, answered by the gateway itself or
forwarded through ping sockets to host loopback (the gateway mapping), and what
happens when net.ipv4.ping_group_range forbids ping sockets (the gateway is still
answered, the log says why once). Only loopback and the namespace's own addresses
are pinged, so the "administratively prohibited" answer for other hosts is left to
the code (reaching it needs a destination off this machine).

Changing ping_group_range needs root; those tests restore it afterwards and skip
without root.
"""

from __future__ import annotations

import os
import sys

import pytest

import ringnet

from conftest import counter_reaches, needs_userns

pytestmark = needs_userns

RANGE = "/proc/sys/net/ipv4/ping_group_range"
ALLOW, DENY = "0\t2147483647", "1\t0"


@pytest.fixture
def ping_range():
    """Set net.ipv4.ping_group_range for the test (root only), restored afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change net.ipv4.ping_group_range")
    with open(RANGE) as f:
        saved = f.read().strip()

    def set_range(value: str) -> None:
        with open(RANGE, "w") as f:
            f.write(value)

    yield set_range
    set_range(saved)


def counter(net, name):
    return sum(w[name] for w in net.counters()["workers"])


def ping(net, *args, count=3):
    # -W only bounds the wait for an answer that never comes (ping exits once it has
    # them all): a hang detector, long enough for any busy machine
    r = net.run(["ping", "-c", str(count), "-i", "0.2", "-W", "60", *args],
                capture_output=True, timeout=count * 60 + 60)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


@pytest.mark.parametrize("v6", [False, True])
def test_ping_gateway_mapping_through_ping_sockets(ping_range, v6, no_leaks):
    ping_range(ALLOW)
    with ringnet.Network(workers=2, allow_host_loopback=True) as net:
        rc, out = ping(net, *(["-6", "fd00::2"] if v6 else ["10.0.2.2"]), "-s", "1000")
        assert rc == 0, out
        assert "3 received" in out
        fwd, local = ("icmp6_echo_fwd", "icmp6_echo_replies") if v6 else \
            ("icmp_echo_fwd", "icmp_echo_replies")
        assert counter(net, fwd) == 3 and counter(net, local) == 0
        assert counter_reaches(net, "icmp_echo_in", 3) == 3
        assert counter(net, "flows_open_icmp") == 1


def test_ping_large_and_many_ids_through_ping_sockets(ping_range, no_leaks):
    ping_range(ALLOW)
    script = ("import subprocess\n"
              "ps = [subprocess.Popen(['ping', '-c', '2', '-i', '0.2', '-W', '60', '-s', s, a],\n"
              "                       stdout=subprocess.DEVNULL)\n"
              "      for s in ('56', '20000', '65000') for a in ('10.0.2.2',)]\n"
              "ps += [subprocess.Popen(['ping', '-6', '-c', '2', '-i', '0.2', '-W', '60', '-s', '60000',"
              " 'fd00::2'], stdout=subprocess.DEVNULL)]\n"
              "print(sum(p.wait() for p in ps))\n")
    with ringnet.Network(workers=2, allow_host_loopback=True) as net:
        r = net.run([sys.executable, "-c", script], capture_output=True, timeout=300)
        assert r.stdout.strip() == b"0", r.stderr
        assert counter(net, "flows_open_icmp") == 4


@pytest.mark.parametrize("v6", [False, True])
def test_ping_sockets_denied_gateway_still_answers_and_one_log_line(ping_range, capfd, v6, no_leaks):
    """Without ping sockets the gateway mapped to host loopback is answered by the worker
    (loopback would answer), and the worker says once why other hosts are prohibited."""
    ping_range(DENY)
    with ringnet.Network(workers=1, allow_host_loopback=True) as net:
        rc, out = ping(net, *(["-6", "fd00::2"] if v6 else ["10.0.2.2"]), count=3)
        assert rc == 0, out
        assert counter_reaches(net, "icmp6_echo_replies" if v6 else "icmp_echo_replies", 3) == 3
        assert counter(net, "icmp_ping_denied") == 0
        assert counter(net, "flows_open_icmp") == 0
    err = capfd.readouterr().err
    assert err.count("ping sockets are not permitted") == 1, err
    assert "net.ipv4.ping_group_range" in err and "other than the gateway" in err


def test_gateway_answers_itself_without_host_loopback(ping_range, no_leaks):
    """Denied ping sockets do not matter while the gateway answers for itself."""
    ping_range(DENY)
    with ringnet.Network(workers=1) as net:
        for args in (["10.0.2.2"], ["-6", "fd00::2"], ["10.0.2.3"], ["-6", "fd00::3"]):
            rc, out = ping(net, *args, count=2)
            assert rc == 0, out
        assert counter_reaches(net, "icmp_echo_replies", 4) == 4
        assert counter_reaches(net, "icmp6_echo_replies", 4) == 4
        assert counter(net, "icmp_ping_denied") == 0


@pytest.mark.parametrize("v6", [False, True])
def test_ping_into_the_own_subnet_is_unreachable(v6, no_leaks):
    with ringnet.Network(workers=1) as net:
        rc, out = ping(net, *(["-6", "fd00::77"] if v6 else ["10.0.2.77"]), count=1)
        assert rc != 0
        assert ("Address unreachable" if v6 else "Destination Host Unreachable") in out, out
        assert counter_reaches(net, "policy_refused", 1) == 1
