"""The destination policy (csrc/policy.c) and the host's own addresses (ringnet/_hostaddrs.py).

Link-local and cloud metadata destinations are judged at the unit level only: the
decisions come from rn_policy_decide(), or from a worker driven in-process whose policy
refuses the frame before any socket exists. Nothing is ever sent there (network rule).
The host's own address is tested end to end: it is a local address of this machine, and
traffic to it never leaves the machine.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ringnet
from ringnet._hostaddrs import HOST_ADDR_MAX, HostAddrs, HostAddrWatcher, read_host_addrs
from ringnet._ringnet_c import ffi, lib

import frames as F
from conftest import HANG_S, counter_reaches, needs_userns
from test_udp_worker import UdpHarness, icmp_error, udp4, udp6
from test_worker_input import DNS4, DNS6, GUEST4, GUEST6, GW4, GW6, params

METADATA = "169.254.169.254"
# Stand-ins for "an address of the host" in unit tests: documentation ranges, only
# ever refused (a decision allowing them is looked at, never acted on)
FAKE_HOST4 = "198.51.100.7"
FAKE_HOST6 = "2001:db8::7"


def key(daddr: str, dport: int = 80, proto: int = 6):
    a = ipaddress.ip_address(daddr)
    k = ffi.new("struct rn_flow_key *")
    k.family = a.version
    k.proto = proto
    src = GUEST4 if a.version == 4 else GUEST6
    ffi.memmove(k.saddr, F.addr(src), len(a.packed))
    ffi.memmove(k.daddr, a.packed, len(a.packed))
    k.sport, k.dport = 40000, dport
    return k


def set_hosts(p, v4=(), v6=()) -> None:
    """Fill the host address sets of raw parameters, sorted as rn_policy_host_set() keeps them."""
    a4 = sorted(F.addr(a) for a in v4)
    a6 = sorted(F.addr(a) for a in v6)
    for i, a in enumerate(a4):
        ffi.memmove(p.host4[i], a, 4)
    for i, a in enumerate(a6):
        ffi.memmove(p.host6[i], a, 16)
    p.nhost4, p.nhost6 = len(a4), len(a6)


def decide(p, daddr: str, dport: int = 80, proto: int = 6, dns_up: int = -1):
    """(reason name, destination address or None, port) as the policy decides."""
    d = ffi.new("struct rn_policy_dest *")
    reason = lib.rn_policy_decide(p, dns_up, key(daddr, dport, proto), d)
    name = ffi.string(lib.rn_policy_reason_name(reason)).decode()
    if reason:
        return name, None, None
    raw = bytes(ffi.buffer(d))[: d.salen]
    fam = struct.unpack("=H", raw[:2])[0]
    port = struct.unpack("!H", raw[2:4])[0]
    addr = raw[4:8] if fam == socket.AF_INET else raw[8:24]
    return name, str(ipaddress.ip_address(addr)), port


def base_params(**kw):
    p = params()
    p.loopback_only = 0  # decisions only: nothing is sent in the tests using these
    p.prefix4, p.prefix6 = 24, 64
    for k, v in kw.items():
        setattr(p, k, v)
    return p


# --- link-local and metadata: decisions only ------------------------------------------------


@pytest.mark.parametrize("addr", [METADATA, "169.254.0.0", "169.254.0.1", "169.254.255.255",
                                  "fe80::1", "fe80::a9fe:a9fe", "febf:ffff::1"])
@pytest.mark.parametrize("proto", [6, 17])
def test_link_local_and_metadata_are_refused_by_default(addr, proto):
    assert decide(base_params(), addr, 80, proto)[0] == "link_local"


@pytest.mark.parametrize("addr", [METADATA, "fe80::1"])
def test_allow_link_local_opens_them_unchanged(addr):
    p = base_params(allow_link_local=1)
    assert decide(p, addr, 80) == ("allow", str(ipaddress.ip_address(addr)), 80)


@pytest.mark.parametrize("addr", ["169.253.255.255", "169.255.0.0", "fec0::1", "fe7f::1"])
def test_neighbours_of_link_local_are_not_link_local(addr):
    assert decide(base_params(), addr)[0] == "allow"


def test_metadata_frame_is_refused_before_any_socket():
    """Through a worker: the UDP datagram, the TCP SYN and the echo request to the metadata
    address get an administratively-prohibited ICMP error or a RST, counted with their
    reason, and no flow or socket is made."""
    with UdpHarness(allow=False) as h:
        [err] = h.exchange(udp4(40000, 80, b"GET /", dst=METADATA))
        t, c, _, _, _ = icmp_error(err)
        assert (t, c) == (3, 13)
        [rst] = h.exchange(F.frame(F.ipv4(GUEST4, METADATA, F.PROTO_TCP,
                                          F.tcp(GUEST4, METADATA, 40001, 80, flags=0x02,
                                                seq=1))))
        p = F.parse(rst)
        assert p.proto == F.PROTO_TCP and p.payload[13] & 0x04  # RST
        [err6] = h.exchange(udp6(40002, 80, b"x", dst="fe80::a9fe:a9fe"))
        assert icmp_error(err6)[:2] == (1, 1)  # ICMPv6 administratively prohibited
        [err_ping] = h.exchange(F.echo4_frame(GUEST4, METADATA, 7, 1, b"ping"))
        assert icmp_error(err_ping)[:2] == (3, 13)
        c = h.counters()
        assert c["policy_refused"] == 4 and c["policy_link_local"] == 4
        assert c["flows_open_udp"] == c["flows_open_tcp"] == c["flows_open_icmp"] == 0
        assert c["udp_ports_open"] == 0


# --- loopback and the gateway ---------------------------------------------------------------


@pytest.mark.parametrize("allow", [0, 1])
@pytest.mark.parametrize("addr", ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1"])
def test_host_loopback_is_refused_even_with_allow_host_loopback(addr, allow):
    assert decide(base_params(allow_host_loopback=allow), addr)[0] == "loopback"


def test_allow_host_loopback_maps_only_the_gateways():
    p = base_params(allow_host_loopback=1)
    assert decide(p, GW4, 8080) == ("allow", "127.0.0.1", 8080)
    assert decide(p, GW6, 8080) == ("allow", "::1", 8080)
    assert decide(base_params(), GW4)[0] == "loopback"


def test_crafted_loopback_frame_is_refused_and_counted():
    with UdpHarness(allow=True) as h:
        [err] = h.exchange(udp4(40000, 9, b"x", dst="127.0.0.1"))
        assert icmp_error(err)[:2] == (3, 13)
        c = h.counters()
        assert (c["policy_refused"], c["policy_loopback"], c["udp_ports_open"]) == (1, 1, 0)


# --- the host's own addresses: decisions ----------------------------------------------------


def test_host_addresses_are_refused_unless_allow_host():
    p = base_params()
    set_hosts(p, [FAKE_HOST4, "192.0.2.200"], [FAKE_HOST6])
    assert decide(p, FAKE_HOST4)[0] == "host"
    assert decide(p, "192.0.2.200", 22)[0] == "host"
    assert decide(p, FAKE_HOST6)[0] == "host"
    assert decide(p, "198.51.100.8")[0] == "allow"  # a neighbour is not the host
    p.allow_host = 1
    assert decide(p, FAKE_HOST4, 5000) == ("allow", FAKE_HOST4, 5000)


def test_loopback_only_lets_allowed_host_addresses_through():
    """Tests confine workers with loopback_only; the host's own addresses stay on the
    machine, so allow_host opens them there too, and nothing else."""
    p = base_params(loopback_only=1, allow_host=1)
    set_hosts(p, [FAKE_HOST4])
    assert decide(p, FAKE_HOST4)[0] == "allow"
    assert decide(p, "198.51.100.8")[0] == "invalid"


def test_dns_upstream_on_a_host_address_still_works():
    p = base_params()
    set_hosts(p, [FAKE_HOST4])
    p.ndns = 1
    p.dns[0].family = 4
    ffi.memmove(p.dns[0].addr, F.addr(FAKE_HOST4), 4)
    p.dns[0].port = 53
    assert decide(p, DNS4, 53, 17, dns_up=0) == ("allow", FAKE_HOST4, 53)


v4addrs = st.binary(min_size=4, max_size=4)
v6addrs = st.binary(min_size=16, max_size=16)


@settings(max_examples=200, deadline=None)
@given(st.lists(v4addrs, max_size=HOST_ADDR_MAX, unique=True), st.lists(v4addrs, max_size=20),
       st.lists(v6addrs, max_size=HOST_ADDR_MAX, unique=True), st.lists(v6addrs, max_size=20))
def test_host_set_lookup_is_membership(set4, probe4, set6, probe6):
    p = base_params()
    for i, a in enumerate(sorted(set4)):
        ffi.memmove(p.host4[i], a, 4)
    for i, a in enumerate(sorted(set6)):
        ffi.memmove(p.host6[i], a, 16)
    p.nhost4, p.nhost6 = len(set4), len(set6)
    for a in set4 + probe4:
        assert bool(lib.rn_policy_is_host(p, 4, a)) == (a in set4)
    for a in set6 + probe6:
        assert bool(lib.rn_policy_is_host(p, 6, a)) == (a in set6)


def test_host_set_update_sorts_deduplicates_and_applies_to_new_flows():
    """rn_policy_host_set() takes any order and duplicates; the worker then refuses
    frames to those addresses (counted policy_host) and no others are affected."""
    with UdpHarness(allow=False) as h:
        hosts4 = ["203.0.113.9", FAKE_HOST4, "192.0.2.77", FAKE_HOST4]
        v4 = b"".join(F.addr(a) for a in hosts4)
        v6 = F.addr(FAKE_HOST6) * 2
        assert lib.rn_policy_host_set(h.w, v4, len(hosts4), v6, 2) == 0
        for i, dst in enumerate(["192.0.2.77", FAKE_HOST4, "203.0.113.9"]):
            [err] = h.exchange(udp4(41000 + i, 7, b"x", dst=dst))
            assert icmp_error(err)[:2] == (3, 13)
        [err] = h.exchange(udp6(41010, 7, b"x", dst=FAKE_HOST6))
        assert icmp_error(err)[:2] == (1, 1)
        c = h.counters()
        assert (c["policy_host"], c["policy_refused"]) == (4, 4)
        # The set is replaced whole: an address no longer in it is no longer "host"
        assert lib.rn_policy_host_set(h.w, F.addr("192.0.2.77"), 1, ffi.NULL, 0) == 0
        [err] = h.exchange(udp4(41020, 7, b"x", dst=FAKE_HOST4))  # loopback_only: invalid
        assert icmp_error(err)[:2] == (3, 0)
        assert h.counters()["policy_host"] == 4
        too_many = bytes(4) * (HOST_ADDR_MAX + 1)
        assert lib.rn_policy_host_set(h.w, too_many, HOST_ADDR_MAX + 1, ffi.NULL, 0) \
            == -22  # -EINVAL, nothing changed
        [err] = h.exchange(udp4(41021, 7, b"x", dst="192.0.2.77"))
        assert icmp_error(err)[:2] == (3, 13)


# --- reading the host's addresses -----------------------------------------------------------


def test_read_host_addrs_matches_the_kernels_view():
    """Every address the kernel reports for this machine's interfaces (but loopback) is in
    the set, and the set holds nothing else but local routes."""
    addrs = read_host_addrs()
    got = set(addrs.v4 + addrs.v6)
    assert not any(a.is_loopback for a in got)
    assert list(addrs.v4) == sorted(addrs.v4) and list(addrs.v6) == sorted(addrs.v6)
    for a in got:  # each is local: binding to it works (no traffic)
        fam = socket.AF_INET if a.version == 4 else socket.AF_INET6
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            if a.version == 6 and a.is_link_local:
                continue  # needs a scope to bind
            s.bind((str(a), 0))
    assert HostAddrs.from_body(addrs.to_body()) == addrs


WATCH_CHILD = r'''
import sys, threading
from pyroute2 import IPRoute
from ringnet._hostaddrs import HostAddrWatcher, read_host_addrs
seen = []
changed = threading.Event()
checked = threading.Event()
def on_change(a):
    seen.append(a)
    changed.set()
class Watcher(HostAddrWatcher):
    def check(self):  # its first call follows the subscription to notifications
        r = super().check()
        checked.set()
        return r
with IPRoute() as ipr:
    lo = ipr.link_lookup(ifname="lo")[0]
    ipr.link("set", index=lo, state="up")
    before = read_host_addrs()
    w = Watcher(before, on_change, interval=3600).start()
    # subscribed, and the first read done: from here only a notification reports a change
    subscribed = checked.wait(60) and not seen
    ipr.addr("add", index=lo, address="10.99.0.1", prefixlen=32)
    ok = changed.wait(60)  # 60 s: only a hang detector
    w.stop()
print(before.v4, seen[-1].v4 if seen else None, subscribed, ok)
sys.exit(0 if subscribed and ok and [str(a) for a in seen[-1].v4] == ["10.99.0.1"] and not before.v4
         else 1)
'''


@needs_userns
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_watcher_sees_an_address_added():
    """In a network namespace of the test's own (unshare -rn), adding an address calls
    on_change with the new set, long before the periodic re-read (1 h here)."""
    out = subprocess.run(["unshare", "-rn", sys.executable, "-c", WATCH_CHILD],
                         capture_output=True, text=True, timeout=3 * HANG_S)
    assert out.returncode == 0, out.stdout + out.stderr


# --- end to end: the host's own address ----------------------------------------------------


def host_address() -> str | None:
    addrs = read_host_addrs()
    for a in addrs.v4:
        if not a.is_link_local:
            return str(a)
    return None


CONNECT = r'''
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.settimeout(60)  # only a hang detector
try:
    s.connect((addr, port))
except ConnectionRefusedError:
    print("refused"); sys.exit(0)
except OSError as e:
    print("error", e.errno); sys.exit(0)
s.sendall(b"ping")
print("connected", s.recv(10).decode())
'''


class TcpServer:
    """A TCP server on 0.0.0.0 of the host that answers "pong" once per connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with c:
                c.settimeout(HANG_S)
                if c.recv(10):
                    c.sendall(b"pong")

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(HANG_S)
        assert not self.thread.is_alive()


@needs_userns
@pytest.mark.parametrize("allow", [False, True])
def test_host_address_end_to_end(no_leaks, allow):
    addr = host_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address to test with")
    srv = TcpServer()
    try:
        with ringnet.Network(workers=2, allow_host=allow) as net:
            out = net.run([sys.executable, "-c", CONNECT, addr, str(srv.port)],
                          capture_output=True, text=True, timeout=2 * HANG_S)
            assert out.returncode == 0, out.stderr
            if not allow:  # a worker counts a refusal after sending it
                counter_reaches(net, "policy_host", 1)
                counter_reaches(net, "policy_refused", 1)
            c = net.counters()["workers"]
            host_refusals = sum(w["policy_host"] for w in c)
            refused = sum(w["policy_refused"] for w in c)
        if allow:
            assert out.stdout.split() == ["connected", "pong"]
            assert srv.accepted == 1 and host_refusals == 0
        else:
            assert out.stdout.split() == ["refused"]
            assert srv.accepted == 0 and host_refusals == 1 and refused == 1
    finally:
        srv.close()


UDP_PROBE = r'''
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(60)  # only a hang detector: the refusal arrives at once
s.connect((addr, port))
s.send(b"ping")
try:
    print("answer", s.recv(10).decode())
except OSError as e:
    print("error", e.errno)
'''


@needs_userns
def test_host_address_udp_is_refused_with_an_icmp_error(no_leaks):
    """A connected UDP socket inside learns of the refusal at once (ICMP administratively
    prohibited: EHOSTUNREACH), and the host's server never sees the datagram."""
    addr = host_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address to test with")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("0.0.0.0", 0))
        srv.setblocking(False)
        with ringnet.Network(workers=1) as net:
            out = net.run([sys.executable, "-c", UDP_PROBE, addr, str(srv.getsockname()[1])],
                          capture_output=True, text=True, timeout=2 * HANG_S)
            counter_reaches(net, "policy_host", 1)  # counted after the ICMP error is sent
            c = net.counters()["workers"][0]
        assert out.stdout.split() == ["error", str(113)], out.stdout + out.stderr  # EHOSTUNREACH
        assert c["policy_host"] == 1 and c["udp_ports_open"] == 0
        with pytest.raises(BlockingIOError):
            srv.recv(10)


REFRESH_CHILD = r'''
import socket, subprocess, sys, threading, time
from pyroute2 import IPRoute
import ringnet

CONNECT = sys.argv[1]
with IPRoute() as ipr:
    lo = ipr.link_lookup(ifname="lo")[0]
    ipr.link("set", index=lo, state="up")
srv = socket.socket()
srv.bind(("0.0.0.0", 0))
srv.listen(64)
port = srv.getsockname()[1]

def serve():
    while True:
        c, _ = srv.accept()
        with c:
            if c.recv(10):
                c.sendall(b"pong")

threading.Thread(target=serve, daemon=True).start()
with ringnet.Network(workers=2) as net:
    def probe():
        out = net.run([sys.executable, "-c", CONNECT, "10.99.0.1", str(port)],
                      capture_output=True, text=True, timeout=120)
        return out.stdout.split()
    # Not yet an address of this "host": the policy does not know it, nothing answers there
    first = probe()
    with IPRoute() as ipr:
        ipr.addr("add", index=lo, address="10.99.0.1", prefixlen=32)
    # Now it is; the orchestrator's watcher tells the workers (60 s: only a hang detector)
    hang = time.monotonic() + 60
    while True:
        now = probe()
        if now == ["refused"] or time.monotonic() > hang:
            break
        time.sleep(0.2)  # pacing between probes, not synchronisation
    # a worker counts the refusal after sending it
    while sum(w["policy_host"] for w in net.counters()["workers"]) < 1 and time.monotonic() < hang:
        time.sleep(0.005)
    refusals = sum(w["policy_host"] for w in net.counters()["workers"])
print(first, now, refusals)
sys.exit(0 if first != ["refused"] and now == ["refused"] and refusals >= 1 else 1)
'''


@needs_userns
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_address_added_to_the_host_is_refused_once_known():
    """The whole network runs in a network namespace of the test's own (unshare -rn), its
    "host". An address added there after start is refused to the namespace once the
    orchestrator has told the workers (before, the connection is not refused by policy:
    10.99.0.1 is nobody's, so it times out or fails otherwise)."""
    out = subprocess.run(["unshare", "-rn", sys.executable, "-c", REFRESH_CHILD, CONNECT],
                         capture_output=True, text=True, timeout=6 * HANG_S)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]


def test_cli_flags_and_config_validation():
    from ringnet import cli

    args = cli._parser().parse_args(["run", "--allow-host", "--allow-link-local",
                                     "--udp-ports", "1000", "--", "true"])
    cfg = cli._config(args)
    assert (cfg.allow_host, cfg.allow_link_local, cfg.udp_ports) == (True, True, 1000)
    default = cli._config(cli._parser().parse_args(["run", "--", "true"]))
    assert (default.allow_host, default.allow_link_local) == (False, False)
    with pytest.raises(ringnet.ConfigError):
        ringnet.NetworkConfig(allow_host=1)
    with pytest.raises(ringnet.ConfigError):
        ringnet.NetworkConfig(udp_ports=30000)  # not above the ephemeral range
