"""The UDP core and the ICMP errors it sends, driven in-process: the test plays the
namespace (frames into ring to_worker, out of ring to_ns) and the host (sockets on
127.0.0.1 and ::1).

Every destination here is host loopback: the worker's policy maps the gateway
addresses to 127.0.0.1 and ::1 (allow_host_loopback), and the DNS address to an
upstream on loopback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time

import pytest

from ringnet._ringnet_c import ffi, lib

import frames as F
from conftest import HANG_S, wait_until
from localdns import build_query
from test_worker_input import (DNS4, DNS6, GUEST4, GUEST6, GW4, GW6, NAMES, Harness, Shm,
                               params)

MAX4, MAX6 = 65507, 65527


class UdpHarness(Harness):
    """One worker whose gateway maps to host loopback, with a small flow cap."""

    def __init__(self, allow: bool = True, max_flows: int = 64, udp_timeout_ms: int = 30000,
                 dns=(), ring_size: int = 512 * 1024):
        p = params(ring_size=ring_size)
        p.allow_host_loopback = int(allow)
        p.max_flows = max_flows
        p.udp_timeout_ms = udp_timeout_ms
        p.prefix4, p.prefix6 = 24, 64
        p.ndns = len(dns)
        for i, (host, port) in enumerate(dns):
            a = F.addr(host)
            p.dns[i].family = 4 if len(a) == 4 else 6
            ffi.memmove(p.dns[i].addr, a, len(a))
            p.dns[i].port = port
        self.shm = Shm(ring_size)
        self.ev_worker = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ev_ns = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ctr = ffi.new("uint64_t[]", lib.RN_CTR_SLOTS)
        wp = ffi.new("struct rn_worker **")
        rc = lib.rn_worker_new(wp, p, self.shm.base, self.shm.size, self.ctr, self.ev_worker,
                               self.ev_ns)
        assert rc == 0, os.strerror(-rc)
        self.w = wp[0]
        self.err = ffi.new("int *")

    def counters(self) -> dict[str, int]:
        return {n: self.ctr[i] for i, n in enumerate(NAMES)}

    def send(self, *frms: bytes) -> None:
        """Push frames and process them (one intake batch if they fit)."""
        assert self.push(*frms) == len(frms)
        assert self.poll() >= len(frms)

    def serve(self) -> None:
        """One pass of the event loop that does not block: it serves what is pending
        now (host socket events, due timers)."""
        rc = lib.rn_worker_run(self.w, 0)
        assert rc >= 0, os.strerror(-rc)

    def run_until(self, cond, what: str) -> None:
        """Run the event loop until ``cond()``; HANG_S only turns a hang into a failure."""
        def served() -> bool:
            rc = lib.rn_worker_run(self.w, 5)
            assert rc >= 0, os.strerror(-rc)
            return cond()
        if not cond():
            wait_until(served, what, interval=0)

    def frames(self, n: int) -> list[bytes]:
        """Run the loop until n frames came out of to_ns; return them."""
        out: list[bytes] = []

        def got() -> bool:
            out.extend(self.pop())
            return len(out) >= n
        self.run_until(got, f"{n} frames")
        assert len(out) == n, f"{len(out)} frames, expected {n}"
        return out


@pytest.fixture
def h():
    with UdpHarness() as harness:
        yield harness


def server(family: int = 4, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("::1" if family == 6 else "127.0.0.1", port))
    s.settimeout(HANG_S)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


@contextlib.contextmanager
def one_cpu():
    """Keep this thread on one CPU: loopback then delivers what it sends in order,
    through that CPU's backlog, whatever the destination socket."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def delivered(family: int = 4, reactions: int = 0) -> None:
    """Return once everything this thread sent on loopback before (on one_cpu()) sits in
    its destination socket: a marker sent after it to a socket of ours has arrived.
    Loopback delivery normally completes within sendto(), but a busy CPU may leave it to
    ksoftirqd; the marker waits for that, where a sleep would only hope.

    ``reactions``: what the kernel sends in answer to those packets (an ICMP error for
    a datagram to a closed port) joins the queue behind the marker; one more marker per
    round of answers waits for them too."""
    with server(family) as probe:
        for _ in range(1 + reactions):
            probe.sendto(b"marker", probe.getsockname())
            assert probe.recv(10) == b"marker"


def udp4(sport, dport, payload=b"", dst=GW4, **ip):
    return F.frame(F.ipv4(GUEST4, dst, F.PROTO_UDP, F.udp(GUEST4, dst, sport, dport, payload),
                          **ip))


def udp6(sport, dport, payload=b"", dst=GW6):
    return F.frame(F.ipv6(GUEST6, dst, F.PROTO_UDP, F.udp(GUEST6, dst, sport, dport, payload)))


def udp_frame(family, sport, dport, payload=b"", dst=None):
    if family == 6:
        return udp6(sport, dport, payload, dst or GW6)
    return udp4(sport, dport, payload, dst or GW4)


def complete(frm: bytes) -> F.Packet:
    """Parse a UDP frame from the worker; check its NEEDS_CSUM header and fill in the
    checksum the way the namespace's kernel would, then verify it."""
    p = F.parse(frm)
    flags, _, _, _, start, offset, _ = struct.unpack("<BBHHHHH", p.vnet)
    assert (flags, start, offset) == (F.VNET_F_NEEDS_CSUM, len(p.header), 6)
    seed = struct.unpack("!H", p.payload[6:8])[0]
    assert seed == F.csum_partial(b"", F._l4_pseudo(p.src, p.dst, F.PROTO_UDP, len(p.payload)))
    full = p.payload[:6] + struct.pack("!H", F.csum(p.payload)) + p.payload[8:]
    p.payload = full
    assert F.l4_csum_ok(p)
    return p


def udp_fields(p: F.Packet) -> tuple[int, int, int, bytes]:
    sport, dport, length, _ = struct.unpack("!HHHH", p.payload[:8])
    return sport, dport, length, p.payload[8:]


# --- namespace -> host --------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_datagram_reaches_host_and_reply_comes_back(h, family):
    with server(family) as srv:
        port = srv.getsockname()[1]
        h.send(udp_frame(family, 40000, port, b"hello"))
        data, peer = srv.recvfrom(100)
        assert data == b"hello"
        assert peer[0] == ("::1" if family == 6 else "127.0.0.1")
        c = h.counters()
        assert (c["udp_in"], c["flows_open_udp"]) == (1, 1)
        srv.sendto(b"world", peer)
        [frm] = h.frames(1)
    p = complete(frm)
    gw, guest = (GW6, GUEST6) if family == 6 else (GW4, GUEST4)
    assert (p.src, p.dst, p.proto, p.ttl) == (F.addr(gw), F.addr(guest), F.PROTO_UDP, 64)
    assert udp_fields(p) == (port, 40000, 13, b"world")
    if family == 4:
        assert F.csum(p.header) == 0 and p.header[6] & 0x40  # DF, checksum right
    assert h.counters()["udp_out"] == 1


def test_one_flow_per_source_destination_pair(h):
    with server() as a, server() as b:
        pa, pb = a.getsockname()[1], b.getsockname()[1]
        h.send(udp4(1000, pa, b"1"), udp4(1000, pa, b"2"), udp4(1001, pa, b"3"),
               udp4(1000, pb, b"4"))
        got_a = [a.recvfrom(10) for _ in range(3)]
        assert [d for d, _ in got_a] == [b"1", b"2", b"3"]
        assert got_a[0][1] == got_a[1][1] != got_a[2][1]  # same flow, same host port
        assert b.recv(10) == b"4"
        assert h.counters()["flows_open_udp"] == 3


def test_replies_from_another_port_of_the_host(h):
    with server() as srv, server() as other:
        port, oport = srv.getsockname()[1], other.getsockname()[1]
        h.send(udp4(40001, port, b"q"))
        _, peer = srv.recvfrom(10)
        other.sendto(b"from another port", peer)
        srv.sendto(b"from the port", peer)
        frms = h.frames(2)
    got = sorted(udp_fields(complete(f))[:2] + (udp_fields(complete(f))[3],) for f in frms)
    assert got == sorted([(oport, 40001, b"from another port"), (port, 40001, b"from the port")])


def test_datagrams_from_another_host_are_dropped(h):
    with server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(40002, port, b"q"))
        _, peer = srv.recvfrom(10)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.2", 0))
            stranger.sendto(b"spoof", peer)
        h.run_until(lambda: h.counters()["host_drops"] >= 1, "the stranger's datagram")
        assert h.pop() == []
        assert h.counters()["host_drops"] == 1


@pytest.mark.parametrize("family,size", [(4, 0), (4, 1), (4, 1472), (4, 9000), (4, MAX4),
                                         (6, 0), (6, 1452), (6, 65000), (6, MAX6)])
def test_sizes_byte_exact_both_ways(family, size):
    payload = os.urandom(size)
    with UdpHarness(ring_size=1 << 20) as h, server(family) as srv:
        port = srv.getsockname()[1]
        h.send(udp_frame(family, 40003, port, payload))
        data, peer = srv.recvfrom(70000)
        assert data == payload
        srv.sendto(payload[::-1], peer)
        [frm] = h.frames(1)
        assert udp_fields(complete(frm)) == (port, 40003, 8 + size, payload[::-1])


def test_batch_of_equal_datagrams_is_one_segmented_send(h):
    with server() as srv:
        port = srv.getsockname()[1]
        msgs = [bytes([i]) * 1400 for i in range(20)] + [b"tail"]
        h.send(*[udp4(40004, port, m) for m in msgs])
        assert [srv.recv(2000) for _ in msgs] == msgs
        c = h.counters()
        assert c["udp_in"] == len(msgs) and c["udp_gso_sends"] >= 1
        assert c["host_send_errors"] == 0


def test_uso_frame_is_sent_as_segments(h):
    with server() as srv:
        port = srv.getsockname()[1]
        payload = os.urandom(3500)
        dgram = F.udp(GUEST4, GW4, 40005, port, payload)
        pkt = F.ipv4(GUEST4, GW4, F.PROTO_UDP, dgram)
        h.send(F.frame(pkt, flags=F.VNET_F_NEEDS_CSUM, gso_type=F.GSO_UDP_L4, gso_size=1000,
                       hdr_len=28, csum_start=20, csum_offset=6))
        got = [srv.recv(2000) for _ in range(4)]
        assert got == [payload[:1000], payload[1000:2000], payload[2000:3000], payload[3000:]]
        assert h.counters()["udp_gso_sends"] == 1


@pytest.mark.parametrize("segs", [128, 129])
def test_uso_segment_count_is_bounded(h, segs):
    """A USO frame of at most 128 segments goes out datagram by datagram; one of more
    is dropped as implausible (gso_size 1 would otherwise cost a sendto() per byte
    whenever the host refuses UDP_SEGMENT)."""
    with server() as srv:
        port = srv.getsockname()[1]
        payload = os.urandom(10 * segs)
        dgram = F.udp(GUEST4, GW4, 40006, port, payload)
        pkt = F.ipv4(GUEST4, GW4, F.PROTO_UDP, dgram)
        h.send(F.frame(pkt, flags=F.VNET_F_NEEDS_CSUM, gso_type=F.GSO_UDP_L4, gso_size=10,
                       hdr_len=28, csum_start=20, csum_offset=6))
        c = h.counters()
        if segs > 128:
            assert (c["drop_gso_size"], c["udp_in"], c["flows_open_udp"]) == (1, 0, 0)
            srv.settimeout(0)
            with pytest.raises(BlockingIOError):
                srv.recv(2000)
            return
        assert (c["drop_gso_size"], c["udp_in"]) == (0, 1)
        got = [srv.recv(2000) for _ in range(segs)]
        assert got == [payload[i:i + 10] for i in range(0, len(payload), 10)]


# --- DNS forwarder ------------------------------------------------------------------


@pytest.mark.parametrize("ns_family,up_family", [(4, 4), (6, 6), (4, 6), (6, 4)])
def test_dns_address_forwards_to_the_upstream(ns_family, up_family):
    with server(up_family) as up:
        port = up.getsockname()[1]
        host = "::1" if up_family == 6 else "127.0.0.1"
        with UdpHarness(allow=False, dns=[(host, port)]) as h:
            dns = DNS6 if ns_family == 6 else DNS4
            h.send(udp_frame(ns_family, 5353, 53, b"query", dst=dns))
            data, peer = up.recvfrom(100)
            assert data == b"query"
            up.sendto(b"answer", peer)
            [frm] = h.frames(1)
            p = complete(frm)
            assert p.src == F.addr(dns)
            assert udp_fields(p) == (53, 5353, 14, b"answer")
            assert h.counters()["dns_flows"] == 1


def test_dns_upstreams_can_be_replaced():
    with server() as a, server() as b:
        with UdpHarness(allow=False, dns=[("127.0.0.1", a.getsockname()[1])]) as h:
            h.send(udp4(5000, 53, b"one", dst=DNS4))
            assert a.recv(10) == b"one"
            ups = ffi.new("struct rn_dns_upstream[1]")
            ups[0].family, ups[0].port = 4, b.getsockname()[1]
            ffi.memmove(ups[0].addr, F.addr("127.0.0.1"), 4)
            assert lib.rn_dns_set_upstreams(h.w, ups, 1) == 0
            h.send(udp4(5001, 53, b"two", dst=DNS4))  # a new flow: the new upstream
            assert b.recv(10) == b"two"
            assert lib.rn_dns_set_upstreams(h.w, ups, 4) < 0
            ups[0].port = 0
            assert lib.rn_dns_set_upstreams(h.w, ups, 1) < 0
            assert lib.rn_dns_set_upstreams(h.w, ffi.NULL, 0) == 0
            [err] = h.exchange(udp4(5002, 53, b"three", dst=DNS4))
            assert icmp_error(err)[:2] == (3, 3)  # no upstream: port unreachable


def closed_port() -> int:
    """A loopback UDP port where nothing listens (the kernel answers port unreachable)."""
    with server() as probe:
        return probe.getsockname()[1]


def test_dns_port_unreachable_fails_over_before_the_timer():
    """The first upstream answers a query with ICMP port unreachable: the worker resends
    it to the second within the same pass of its loop that reads the error, without
    waiting for the failover timer (RN_DNS_FAILOVER_MS, 1 s), and the namespace never
    sees the error.

    The timer could only have fired in a pass a full second after the query: the time
    around the attempt bounds the worker's clock, and an attempt that a stalled machine
    made that slow proves nothing and is made again, with a new worker."""
    query = build_query("example.test", qid=0x5151)
    t_end = time.monotonic() + HANG_S
    while time.monotonic() < t_end:
        with server() as good, \
                UdpHarness(allow=False, dns=[("127.0.0.1", closed_port()),
                                             ("127.0.0.1", good.getsockname()[1])]) as h:
            with one_cpu():
                t0 = time.monotonic()
                h.send(udp4(5300, 53, query, dst=DNS4))  # to the first upstream
                delivered(reactions=1)  # its port unreachable is queued on the flow's socket
                h.serve()  # one pass: the worker reads the error
                t1 = time.monotonic()
            if t1 - t0 >= 0.99:
                continue
            good.settimeout(0)
            data, peer = good.recvfrom(100)  # already there: resent in that pass
            assert data == query
            c = h.counters()
            assert (c["dns_failovers"], c["dns_resends"], c["icmp_errors_out"]) == (1, 1, 0)
            assert h.pop() == []
            # the answer comes back from the second upstream, as if from the DNS address
            good.sendto(b"answer", peer)
            [frm] = h.frames(1)
            p = complete(frm)
            assert p.src == F.addr(DNS4) and udp_fields(p) == (53, 5300, 14, b"answer")
            return
    raise AssertionError("every attempt stalled for a second")


# --- refusals and ICMP errors -------------------------------------------------------


def icmp_error(frm: bytes):
    """(type, code, rest, quoted packet) of an ICMP/ICMPv6 error frame, checked."""
    p = F.parse(frm)
    assert p.vnet == bytes(12) and F.l4_csum_ok(p)
    assert len(p.payload) <= (576 - 20 if p.version == 4 else 1280 - 40)
    t, c, _, rest = struct.unpack("!BBHI", p.payload[:8])
    return t, c, rest, p.payload[8:], p


@pytest.mark.parametrize("frm,dst,want", [
    (udp4(1, 9, b"x", dst=GW4), GW4, (3, 13)),           # host loopback not allowed
    (udp4(1, 9, b"x", dst="10.0.2.77"), GW4, (3, 1)),    # own subnet: host unreachable
    (udp4(1, 53, b"x", dst=DNS4), DNS4, (3, 3)),         # no DNS upstream
    (udp6(1, 9, b"x", dst=GW6), GW6, (1, 1)),
    (udp6(1, 9, b"x", dst="fd00::77"), GW6, (1, 3)),
    (udp6(1, 53, b"x", dst=DNS6), DNS6, (1, 4)),
])
def test_policy_refusals_answer_with_icmp(frm, dst, want):
    with UdpHarness(allow=False) as h:
        [err] = h.exchange(frm)
        t, c, _, quote, p = icmp_error(err)
        assert (t, c) == want
        assert p.src == F.addr(dst)
        assert quote == frm[12:]  # the whole datagram fits in the quote
        c = h.counters()
        assert (c["policy_refused"], c["flows_open_udp"], c["icmp_errors_out"]) == (1, 0, 1)


@pytest.mark.parametrize("family", [4, 6])
def test_closed_host_port_gives_port_unreachable(h, family):
    with server(family) as probe:
        port = probe.getsockname()[1]
    frm = udp_frame(family, 40006, port, b"anyone?")
    h.send(frm)
    [err] = h.frames(1)
    t, c, _, quote, p = icmp_error(err)
    assert (t, c) == ((1, 4) if family == 6 else (3, 3))
    q = F.parse(bytes(12) + quote)
    assert (q.src, q.dst, q.proto) == (F.addr(GUEST6 if family == 6 else GUEST4),
                                       F.addr(GW6 if family == 6 else GW4), F.PROTO_UDP)
    assert q.payload[:4] == struct.pack("!HH", 40006, port)
    assert q.payload[8:] == b"anyone?"
    # The socket's error was consumed: further passes of the loop find no event on it
    events = h.counters()["host_events"]
    for _ in range(20):
        h.serve()
    assert h.pop() == []
    assert h.counters()["host_events"] == events


# --- bad input ------------------------------------------------------------------------


def raw_udp4(udp_bytes: bytes) -> bytes:
    return F.frame(F.ipv4(GUEST4, GW4, F.PROTO_UDP, udp_bytes))


def bad_csum4() -> bytes:
    d = bytearray(F.udp(GUEST4, GW4, 1000, 2000, b"data"))
    d[6] ^= 0x55
    return raw_udp4(bytes(d))


BAD = {
    "drop_udp_header": [
        raw_udp4(b"\x03\xe8\x07\xd0\x00"),  # 5 bytes
        raw_udp4(b""),
        raw_udp4(struct.pack("!HHHH", 1000, 2000, 20, 0) + b"abc"),  # length too long
        raw_udp4(struct.pack("!HHHH", 1000, 2000, 9, 0) + b"abcd"),  # length too short
        raw_udp4(struct.pack("!HHHH", 1000, 2000, 0, 0) + b"abcd"),
    ],
    "drop_udp_port": [
        udp4(0, 2000, b"x"), udp4(1000, 0, b"x"), udp6(0, 53, b"x", dst=DNS6),
    ],
    "drop_udp_csum": [
        bad_csum4(),
        F.frame(F.ipv6(GUEST6, GW6, F.PROTO_UDP, struct.pack("!HHHH", 1, 2, 9, 0) + b"z")),
        F.frame(F.ipv6(GUEST6, GW6, F.PROTO_UDP, F.udp("fd00::99", GW6, 1, 2, b"z"))),
    ],
}


@pytest.mark.parametrize("name,idx", [(n, i) for n, c in BAD.items() for i in range(len(c))])
def test_malformed_datagrams_are_counted(h, name, idx):
    frm = BAD[name][idx]
    assert h.exchange(frm) == []
    c = h.counters()
    assert c[name] == 1 and c["frames_in"] == 1
    assert c["flows_open_udp"] == 0 and c["udp_in"] == 0


def test_ipv4_datagram_without_checksum_is_accepted(h):
    with server() as srv:
        port = srv.getsockname()[1]
        h.send(raw_udp4(struct.pack("!HHHH", 40007, port, 12, 0) + b"none"))
        assert srv.recv(10) == b"none"


# --- flow table: cap, expiry, descriptors ---------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_flood_of_new_flows_stays_under_the_cap_and_expires():
    with server() as srv, UdpHarness(max_flows=16, udp_timeout_ms=200) as h:
        port = srv.getsockname()[1]
        fds = open_fds()
        # One intake pass (40 frames, fewer than RN_WORKER_BATCH) reads the clock once:
        # no flow it opens can expire before the cap is reached
        h.send(*[udp4(10000 + j, port, b"f") for j in range(40)])
        c = h.counters()
        assert (c["flows_open_udp"], c["udp_in"], c["flows_refused_cap"]) == (16, 16, 24)
        assert open_fds() == fds + 16
        for i in range(1, 5):
            h.send(*[udp4(10000 + 40 * i + j, port, b"f") for j in range(40)])
            # Flows may expire between two batches if the machine stalls for 200 ms; new
            # ones then take their place, never more than the cap
            c = h.counters()
            assert c["flows_open_udp"] <= 16 and open_fds() == fds + c["flows_open_udp"]
            assert c["udp_in"] + c["flows_refused_cap"] == 40 * (i + 1)
        h.run_until(lambda: h.counters()["flows_open_udp"] == 0, "the flows to expire")
        assert open_fds() == fds
        h.send(udp4(9999, port, b"again"))  # room again after expiry
        assert h.counters()["flows_open_udp"] == 1


def test_traffic_keeps_a_flow_alive():
    """A flow whose datagrams never pause for as long as its timeout outlives that
    timeout (one flow, one host socket, through twice the timeout); once they stop,
    it expires.

    The worker's clock is the real one, so a busy machine may stall this test between
    two datagrams for longer than the timeout; the flow may then rightly expire and the
    attempt proves nothing. The time read before each send bounds the worker's view of
    the gap, so such an attempt is recognised, and made again with a new flow."""
    timeout = 0.3
    with server() as srv, UdpHarness(udp_timeout_ms=int(timeout * 1000)) as h:
        port = srv.getsockname()[1]
        t_end = time.monotonic() + HANG_S
        for sport in range(41000, 42000):
            assert time.monotonic() < t_end, "every attempt stalled for the timeout"
            stalled = False
            t_first = t_prev = time.monotonic()
            h.send(udp4(sport, port, b"0"))
            sent = 1
            while t_prev - t_first < 2 * timeout:
                target = t_prev + timeout / 4
                h.run_until(lambda: time.monotonic() >= target, "time to pass")
                t = time.monotonic()
                h.send(udp4(sport, port, b"%d" % sent))
                sent += 1
                # The flow cannot have expired if the worker read its clock (in ms)
                # less than the timeout after the previous datagram
                if t - t_prev >= timeout - 0.002:
                    stalled = True
                t_prev = t
            got = [srv.recvfrom(10) for _ in range(sent)]
            assert [d for d, _ in got] == [b"%d" % i for i in range(sent)]
            if not stalled:
                break
            h.run_until(lambda: h.counters()["flows_open_udp"] == 0, "the flow to expire")
        assert h.counters()["flows_open_udp"] == 1
        assert len({peer for _, peer in got}) == 1  # one host socket all along
        h.run_until(lambda: h.counters()["flows_open_udp"] == 0, "the flow to expire")


# --- backpressure -----------------------------------------------------------------------


def test_full_namespace_ring_pauses_reading_without_loss():
    with UdpHarness(ring_size=512 * 1024) as h, server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(40009, port, b"open"))
        _, peer = srv.recvfrom(10)
        payloads = [bytes([i]) * 40000 for i in range(12)]
        with one_cpu():
            for i in range(0, len(payloads), 2):
                srv.sendto(payloads[i], peer)
                srv.sendto(payloads[i + 1], peer)
                delivered()
                h.serve()  # reads both if the ring has room
        # 12 datagrams of 40 kB: the ring (512 kB, room kept for a 64 kB frame) fills
        # up, and the worker stops reading
        assert h.counters()["room_waits"] >= 1
        got: list[bytes] = []

        def all_in() -> bool:
            got.extend(udp_fields(complete(f))[3] for f in h.pop())  # makes room
            return len(got) >= len(payloads)
        h.run_until(all_in, "every datagram")
        assert got == payloads
        assert h.counters()["host_drops"] == 0


# --- rn_ring_frames_free(): the promise the receive path relies on -------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, lib.RN_FRAME_MAX), st.booleans()), max_size=40),
       st.integers(1, lib.RN_FRAME_MAX))
def test_frames_free_reservations_all_succeed(ops, maxlen):
    shm = Shm(512 * 1024)
    try:
        prod, cons = ffi.new("struct rn_ring *"), ffi.new("struct rn_ring *")
        assert lib.rn_ring_attach(prod, shm.tn_mem, shm.ring_size, lib.RN_FRAME_MAX, 0) == 0
        assert lib.rn_ring_attach(cons, shm.tn_mem, shm.ring_size, lib.RN_FRAME_MAX, 0) == 0
        err = ffi.new("int *")
        fp, lp = ffi.new("const uint8_t **"), ffi.new("uint32_t *")
        for size, consume in ops:  # move head and tail around, wrapping the area
            if lib.rn_ring_reserve(prod, size, err) != ffi.NULL:
                lib.rn_ring_commit(prod, size)
                lib.rn_ring_publish(prod)
            if consume and lib.rn_ring_peek(cons, fp, lp) == 1:
                lib.rn_ring_consume(cons)
                lib.rn_ring_release(cons)
        n = lib.rn_ring_frames_free(prod, maxlen)
        for _ in range(n):
            assert lib.rn_ring_reserve(prod, maxlen, err) != ffi.NULL and err[0] == 0
            lib.rn_ring_commit(prod, maxlen)
        assert lib.rn_ring_frames_free(prod, lib.RN_FRAME_MAX + 1) == 0
    finally:
        shm.close()


# --- USO frames towards the namespace ------------------------------------------------


def test_equal_datagrams_become_one_uso_frame():
    with UdpHarness(ring_size=1 << 20) as h, server() as srv:
        assert lib.rn_udp_set_uso(h.w, 1) == 0
        port = srv.getsockname()[1]
        h.send(udp4(40010, port, b"open"))
        _, peer = srv.recvfrom(10)
        msgs = [bytes([i]) * 1000 for i in range(10)] + [b"short", b"other"]
        with one_cpu():
            for m in msgs:
                srv.sendto(m, peer)
            delivered()  # all queued before the worker reads: one recvmmsg
        frms = h.frames(2)
        p = F.parse(frms[0])
        flags, gso_type, hdr_len, gso_size, start, offset, _ = struct.unpack("<BBHHHHH", p.vnet)
        assert (flags, gso_type, hdr_len, gso_size, start, offset) == (1, F.GSO_UDP_L4, 28, 1000,
                                                                      20, 6)
        sport, dport, length, data = struct.unpack("!HHHH", p.payload[:8])[:3] + (p.payload[8:],)
        assert (sport, dport, length) == (port, 40010, 8 + 10 * 1000 + 5)
        assert data == b"".join(msgs[:11])
        # The pseudo-header sum covers the whole frame's length; the kernel adjusts it
        seed = struct.unpack("!H", p.payload[6:8])[0]
        assert seed == F.csum_partial(b"", F.pseudo4(GW4, GUEST4, F.PROTO_UDP, length))
        assert udp_fields(complete(frms[1])) == (port, 40010, 13, b"other")
        c = h.counters()
        assert (c["udp_out"], c["udp_uso_out"]) == (12, 1)


def test_without_uso_every_datagram_is_a_frame(h):
    with server() as srv:
        port = srv.getsockname()[1]
        h.send(udp4(40011, port, b"open"))
        _, peer = srv.recvfrom(10)
        with one_cpu():
            for i in range(5):
                srv.sendto(b"%d" % i * 100, peer)
            delivered()  # all queued: one recvmmsg, and still one frame each
        frms = h.frames(5)
        assert [udp_fields(complete(f))[3] for f in frms] == [b"%d" % i * 100 for i in range(5)]
        assert h.counters()["udp_uso_out"] == 0


def test_gso_sender_is_received_coalesced_and_passed_on():
    UDP_SEGMENT = 103
    with UdpHarness(ring_size=1 << 20) as h, server() as srv:
        assert lib.rn_udp_set_uso(h.w, 1) == 0
        port = srv.getsockname()[1]
        h.send(udp4(40012, port, b"open"))  # the flow's socket has UDP_GRO
        _, peer = srv.recvfrom(10)
        srv.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1200)
        payload = os.urandom(1200 * 20 + 7)
        srv.sendto(payload, peer)
        frms = h.frames(1)
        p = F.parse(frms[0])
        assert struct.unpack("<BBHHHHH", p.vnet)[1:4] == (F.GSO_UDP_L4, 28, 1200)
        assert p.payload[8:] == payload
        assert h.counters()["udp_out"] == 21
