"""The worker's C data path, driven in-process: frames go into ring to_worker,
rn_worker_poll()/rn_worker_run() process them, replies come out of ring to_ns.

The test plays the namespace side: it creates the shared mapping, attaches the
producer of to_worker and the consumer of to_ns, and reads the worker's
counters after each step.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringnet._ringnet_c import ffi, lib

import frames as F
from conftest import HANG_S, wait_until

RING = 512 * 1024  # smallest ring that holds two RN_FRAME_MAX records
GUEST4, GW4, DNS4 = "10.0.2.100", "10.0.2.2", "10.0.2.3"
GUEST6, GW6, DNS6 = "fd00::100", "fd00::2", "fd00::3"
LLADDR6 = "fe80::1234"
KEY = bytes(range(16))


def counter_names() -> list[str]:
    return [ffi.string(lib.rn_worker_counter_name(i)).decode()
            for i in range(lib.rn_worker_counter_count())]


NAMES = counter_names()
DROPS = [n for n in NAMES if n.startswith("drop_")]
OUTCOMES = DROPS + ["icmp_echo_replies", "icmp6_echo_replies", "ring_full", "policy_refused",
                    "flows_refused_cap", "flows_refused_fd", "tcp_segments_in", "udp_in",
                    "icmp_echo_fwd", "icmp6_echo_fwd", "icmp_ping_denied", "frag_held"]


def params(index: int = 0, nworkers: int = 1, ring_size: int = RING, mtu: int = 65520,
           key: bytes = KEY):
    p = ffi.new("struct rn_worker_params *")
    p.index, p.nworkers, p.ring_size, p.mtu = index, nworkers, ring_size, mtu
    p.hash_key = list(key)
    p.guest4, p.gw4, p.dns4 = (list(F.addr(a)) for a in (GUEST4, GW4, DNS4))
    p.guest6, p.gw6, p.dns6 = (list(F.addr(a)) for a in (GUEST6, GW6, DNS6))
    p.loopback_only = 1  # whatever a (fuzzed) frame asks for, nothing leaves the machine
    return p


class Shm:
    """A worker mapping as the namespace child lays it out, with its two ring ends."""

    def __init__(self, ring_size: int = RING, magic: int = None, version: int = None):
        self.ring_size = ring_size
        self.size = lib.rn_shm_size(ring_size)
        self.mm = mmap.mmap(-1, self.size)
        self.base = ffi.from_buffer(self.mm)
        hdr = ffi.cast("struct rn_shm_hdr *", self.base)
        hdr.magic = lib.RN_SHM_MAGIC if magic is None else magic
        hdr.version = lib.RN_SHM_VERSION if version is None else version
        hdr.ring_size = ring_size
        hdr.frame_max = lib.RN_FRAME_MAX
        self.tw_mem = lib.rn_shm_to_worker(self.base, ring_size)
        self.tn_mem = lib.rn_shm_to_ns(self.base, ring_size)
        self.to_worker = ffi.new("struct rn_ring *")  # we produce
        self.to_ns = ffi.new("struct rn_ring *")  # we consume
        for r, mem in ((self.to_worker, self.tw_mem), (self.to_ns, self.tn_mem)):
            assert lib.rn_ring_attach(r, mem, ring_size, lib.RN_FRAME_MAX, 1) == 0
        self.tw_ctrl = ffi.cast("struct rn_ring_ctrl *", self.tw_mem)
        self.tn_ctrl = ffi.cast("struct rn_ring_ctrl *", self.tn_mem)

    def close(self) -> None:
        ffi.release(self.base)
        self.mm.close()


class Harness:
    """One worker on its own mapping, driven from the namespace side."""

    def __init__(self, index: int = 0, nworkers: int = 1, key: bytes = KEY,
                 ring_size: int = RING, p=None):
        """p: parameters (params() with changes), instead of index, nworkers and key."""
        self.shm = Shm(ring_size)
        self.ev_worker = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ev_ns = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ctr = ffi.new("uint64_t[]", lib.RN_CTR_SLOTS)
        wp = ffi.new("struct rn_worker **")
        if p is None:
            p = params(index, nworkers, ring_size, key=key)
        rc = lib.rn_worker_new(wp, p, self.shm.base, self.shm.size, self.ctr, self.ev_worker,
                               self.ev_ns)
        assert rc == 0, os.strerror(-rc)
        self.w = wp[0]
        self.err = ffi.new("int *")

    def close(self) -> None:
        lib.rn_worker_free(self.w)
        os.close(self.ev_worker)
        os.close(self.ev_ns)
        self.shm.close()

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def push(self, *frms: bytes, publish: bool = True) -> int:
        """Append frames to to_worker; returns how many fitted."""
        n = 0
        for frm in frms:
            p = lib.rn_ring_reserve(self.shm.to_worker, len(frm), self.err)
            assert self.err[0] == 0, self.err[0]
            if p == ffi.NULL:
                break
            ffi.memmove(p, frm, len(frm))
            lib.rn_ring_commit(self.shm.to_worker, len(frm))
            n += 1
        if publish and lib.rn_ring_publish(self.shm.to_worker):
            os.eventfd_write(self.ev_worker, 1)
        return n

    def poll(self) -> int:
        return lib.rn_worker_poll(self.w)

    def pop(self) -> list[bytes]:
        """Take every frame out of to_ns."""
        out = []
        fp, lp = ffi.new("const uint8_t **"), ffi.new("uint32_t *")
        while True:
            rc = lib.rn_ring_peek(self.shm.to_ns, fp, lp)
            assert rc >= 0
            if rc == 0:
                break
            out.append(bytes(ffi.buffer(fp[0], lp[0])))
            lib.rn_ring_consume(self.shm.to_ns)
        lib.rn_ring_release(self.shm.to_ns)
        return out

    def counters(self) -> dict[str, int]:
        return {n: self.ctr[i] for i, n in enumerate(NAMES)}

    def exchange(self, frm: bytes) -> list[bytes]:
        """Push one frame, process it, return the replies."""
        assert self.push(frm) == 1
        assert self.poll() == 1
        return self.pop()


def only(h: Harness, name: str, value: int = 1) -> None:
    """Assert that, of the outcome counters, exactly `name` moved, by `value`."""
    c = h.counters()
    moved = {n: c[n] for n in OUTCOMES if c[n]}
    assert moved == {name: value}


@pytest.fixture
def h():
    with Harness() as harness:
        yield harness


def check_echo_reply(reply: bytes, request: bytes) -> F.Packet:
    """Assert that reply is a byte-correct echo reply to request; return it parsed."""
    req, rep = F.parse(request), F.parse(reply)
    assert rep.vnet == bytes(12)
    assert rep.version == req.version
    assert (rep.src, rep.dst) == (req.dst, req.src)
    assert rep.ttl == 64
    assert F.l4_csum_ok(rep)
    if rep.version == 4:
        assert len(rep.header) == 20
        assert F.csum(rep.header) == 0
        assert rep.proto == F.PROTO_ICMP
        assert rep.payload[0] == F.ICMP_ECHO_REPLY
        assert rep.header[4:6] == req.header[4:6]  # identification copied
        assert struct.unpack("!H", rep.header[6:8])[0] == \
            struct.unpack("!H", req.header[6:8])[0] & 0x4000  # DF as requested
    else:
        assert rep.header[:4] == b"\x60\0\0\0"
        assert rep.proto == F.PROTO_ICMPV6
        assert rep.payload[0] == F.ICMP6_ECHO_REPLY
    assert rep.payload[1] == 0
    assert rep.payload[4:] == req.payload[4:]  # id, seq, data
    return rep


# --- creation -----------------------------------------------------------------

def new_worker(shm: Shm, p=None, shm_len=None, bad_fd=False):
    """rn_worker_new()'s return code for these arguments; frees a created worker."""
    wp = ffi.new("struct rn_worker **")
    ctr = ffi.new("uint64_t[]", lib.RN_CTR_SLOTS)
    ev_w, ev_n = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    try:
        rc = lib.rn_worker_new(wp, p if p is not None else params(ring_size=shm.ring_size),
                               shm.base, shm.size if shm_len is None else shm_len, ctr,
                               -1 if bad_fd else ev_w, ev_n)
    finally:
        os.close(ev_w)
        os.close(ev_n)
    if rc == 0:
        lib.rn_worker_free(wp[0])
    else:
        assert wp[0] == ffi.NULL
    return rc


@pytest.mark.parametrize("change", [
    dict(nworkers=0), dict(index=2, nworkers=2), dict(mtu=1279), dict(mtu=65521),
    dict(ring_size=256 * 1024),
])
def test_new_rejects_bad_params(change):
    with_size = change.get("ring_size", RING)
    shm = Shm(RING)
    try:
        p = params(**{"ring_size": RING, **change})
        rc = new_worker(shm, p, shm_len=lib.rn_shm_size(with_size))
        assert rc == -errno.EINVAL
    finally:
        shm.close()


def test_new_rejects_wrong_length_and_fds():
    shm = Shm()
    try:
        assert new_worker(shm, shm_len=shm.size - 4096) == -errno.EINVAL
        assert new_worker(shm, bad_fd=True) == -errno.EINVAL
        assert new_worker(shm) == 0
    finally:
        shm.close()


@pytest.mark.parametrize("hdr", [dict(magic=0x12345678), dict(version=2)])
def test_new_rejects_bad_shared_header(hdr):
    shm = Shm(**hdr)
    try:
        assert new_worker(shm) == -errno.EPROTO
    finally:
        shm.close()


def test_new_rejects_corrupted_ring_control():
    shm = Shm()
    try:
        shm.tw_ctrl.head = RING + 16  # head - tail > size
        assert new_worker(shm) == -errno.EPROTO
        shm.tw_ctrl.head = 0
        shm.tn_ctrl.tail = 8  # misaligned
        assert new_worker(shm) == -errno.EPROTO
        shm.tn_ctrl.tail = 0
        assert new_worker(shm) == 0
    finally:
        shm.close()


# --- echo replies -------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 7, 56, 1472, 9000, 65507 - 1, 65507])
def test_echo4_reply_is_byte_correct(h, size):
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    req = F.echo4_frame(GUEST4, GW4, icmp_id=0xBEEF, seq=size & 0xFFFF, data=data,
                        ident=0x4242, df=size % 2 == 1)
    [rep] = h.exchange(req)
    check_echo_reply(rep, req)
    only(h, "icmp_echo_replies")
    c = h.counters()
    assert (c["frames_in"], c["bytes_in"]) == (1, len(req))
    assert (c["frames_out"], c["bytes_out"]) == (1, len(rep))
    assert len(rep) == len(req)


@pytest.mark.parametrize("size", [0, 1, 7, 56, 1452, 9000, 65507, 65527])
def test_echo6_reply_is_byte_correct(h, size):
    data = bytes((i * 13 + 1) & 0xFF for i in range(size))
    req = F.echo6_frame(GUEST6, GW6, icmp_id=0x1234, seq=7, data=data)
    [rep] = h.exchange(req)
    check_echo_reply(rep, req)
    only(h, "icmp6_echo_replies")
    assert len(rep) == len(req)


@pytest.mark.parametrize("icmp_id,seq,data", [(0, 0, b""), (0, 0, bytes(64)), (0xFFFF, 0xFFFF, b""),
                                           (0xF7FF, 0, b"")])
def test_echo4_reply_checksum_corner_cases(h, icmp_id, seq, data):
    """All-zero replies need checksum 0xffff: an incremental update must not give 0."""
    req = F.echo4_frame(GUEST4, GW4, icmp_id, seq, data)
    [rep] = h.exchange(req)
    check_echo_reply(rep, req)


def test_echo4_options_df_and_trailing_bytes(h):
    """Options are not echoed, DF is, and bytes past the total length are ignored."""
    icmp = F.icmp4_echo(9, 10, b"hello")
    pkt = F.ipv4(GUEST4, GW4, F.PROTO_ICMP, icmp, options=b"\x01\x01\x01\x00", df=True,
                 ident=777, tos=0x10)
    req = F.frame(pkt + b"TRAILING")
    [rep] = h.exchange(req)
    p = check_echo_reply(rep, F.frame(pkt))
    assert p.header[1] == 0x10
    assert struct.unpack("!H", p.header[6:8])[0] == 0x4000
    assert p.payload == F.icmp4_echo(9, 10, b"hello", type_=F.ICMP_ECHO_REPLY)


def test_echo6_trailing_bytes_ignored(h):
    req = F.echo6_frame(GUEST6, GW6, 5, 6, b"abc")
    [rep] = h.exchange(req + b"\0" * 13)
    check_echo_reply(rep, req)


def test_echo_with_partial_checksum(h):
    """NEEDS_CSUM: the checksum field holds the pseudo-header sum; the worker completes it."""
    msg = F.icmp6_echo(GUEST6, GW6, 3, 4, b"partial", cksum=0)
    partial = F.pseudo6(GUEST6, GW6, F.PROTO_ICMPV6, len(msg))
    msg = msg[:2] + struct.pack("!H", partial) + msg[4:]
    req = F.frame(F.ipv6(GUEST6, GW6, F.PROTO_ICMPV6, msg),
                  flags=F.VNET_F_NEEDS_CSUM, csum_start=40, csum_offset=2)
    [rep] = h.exchange(req)
    p = F.parse(rep)
    assert F.l4_csum_ok(p) and p.payload[0] == F.ICMP6_ECHO_REPLY
    assert p.payload[4:] == msg[4:]

    # The same without the flag has a wrong checksum
    h.exchange(F.frame(F.ipv6(GUEST6, GW6, F.PROTO_ICMPV6, msg)))
    assert h.counters()["drop_icmp_csum"] == 1

    # A partial checksum anywhere but the ICMP checksum field is refused
    bad = F.frame(F.ipv6(GUEST6, GW6, F.PROTO_ICMPV6, msg),
                  flags=F.VNET_F_NEEDS_CSUM, csum_start=40, csum_offset=6)
    assert h.exchange(bad) == []
    assert h.counters()["drop_icmp_csum"] == 2


def test_echo4_data_valid_flag_accepted(h):
    req = F.echo4_frame(GUEST4, GW4, 1, 2, b"x")
    [rep] = h.exchange(F.vnet(flags=F.VNET_F_DATA_VALID) + req[12:])
    check_echo_reply(rep, req)


# --- drop reasons ---------------------------------------------------------------

def v4(proto=F.PROTO_ICMP, payload=None, src=GUEST4, dst=GW4, **kw):
    if payload is None:
        payload = F.icmp4_echo(1, 1, b"data")
    return F.frame(F.ipv4(src, dst, proto, payload, **kw))


def v6(nh=F.PROTO_ICMPV6, payload=None, src=GUEST6, dst=GW6, vnet=None, **kw):
    if payload is None:
        payload = F.icmp6_echo(src, dst, 1, 1, b"data")
    return (vnet or F.vnet()) + F.ipv6(src, dst, nh, payload, **kw)


def with_vnet(frm: bytes, **fields) -> bytes:
    return F.vnet(**fields) + frm[12:]


def with_byte(frm: bytes, off: int, value: int) -> bytes:
    return frm[:off] + bytes([value]) + frm[off + 1:]


DROP_CASES = {
    "drop_short": [
        b"", bytes(12), v4()[:31], v6()[:51], v6()[:32],
    ],
    "drop_vnet": [
        with_vnet(v4(), flags=4),
        with_vnet(v4(), flags=0x80),
        with_vnet(v4(), gso_type=F.GSO_UDP, gso_size=1000),  # legacy UFO
        with_vnet(v4(), gso_type=2, gso_size=1000),
        with_vnet(v4(), gso_type=F.GSO_ECN),  # ECN without a GSO type
        with_vnet(v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 1, 2)), gso_type=F.GSO_TCPV4),
        with_vnet(v4(), gso_type=F.GSO_TCPV4, gso_size=1000),  # GSO on ICMP
        with_vnet(v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 1, 2)), gso_type=F.GSO_TCPV6,
                  gso_size=1000),
        with_vnet(v4(), flags=1, csum_start=20, csum_offset=11),  # 20+11+2 > 32
        with_vnet(v4(), flags=1, csum_start=10, csum_offset=0),  # in the IP header
        with_vnet(v4(), flags=1, csum_start=0xFFFF, csum_offset=0xFFFF),
        with_vnet(v4(total_length=20 + 8), flags=1, csum_start=20, csum_offset=8),
    ],
    "drop_gso_size": [
        # 200 one-byte segments: more than the 128 a Linux sender ever cuts
        F.frame(F.ipv4(GUEST4, GW4, F.PROTO_UDP, F.udp(GUEST4, GW4, 40000, 9, bytes(200))),
                gso_type=F.GSO_UDP_L4, gso_size=1),
        v6(F.PROTO_UDP, F.udp(GUEST6, GW6, 40000, 9, bytes(1290)),
           vnet=F.vnet(gso_type=F.GSO_UDP_L4, gso_size=10)),
    ],
    "drop_ip_version": [
        with_byte(v4(), 12, 0x55), with_byte(v4(), 12, 0x05), with_byte(v6(), 12, 0x70),
    ],
    "drop_ipv4_header": [
        v4(ihl=4), v4(ihl=15), v4(total_length=19), v4(total_length=20 + 12 + 1),
        v4(total_length=0xFFFF),
    ],
    "drop_ipv4_csum": [
        v4(hdr_csum=0x1234), with_byte(v4(), 12 + 8, 63),
    ],
    "drop_fragment": [
        v4(mf=True), v4(frag_offset=8190), v4(frag_offset=1, mf=True),
        v6(nh=44, payload=bytes(16)),
    ],
    "drop_ipv6_header": [
        v6(plen=19 + 1), v6(plen=0xFFFF),
        v6(plen=0, payload=b"", vnet=F.vnet(gso_type=F.GSO_TCPV6, gso_size=1000)),
        v6(nh=0, plen=0, payload=bytes(8)),
    ],
    "drop_src_addr": [
        v4(src="10.0.2.101"), v4(src="0.0.0.0"), v6(src="fd00::101"), v6(src="::"),
        v6(src="fec0::1"),
    ],
    "drop_multicast": [
        v4(dst="224.0.0.1"), v4(dst="239.255.255.250"), v4(dst="255.255.255.255"),
        v6(dst="ff02::1"), v6(src=LLADDR6, dst="ff02::2"),
    ],
    "drop_ext_header": [
        v6(nh=0, payload=bytes(8)), v6(nh=43, payload=bytes(8)), v6(nh=60, payload=bytes(8)),
        v6(nh=51, payload=bytes(16)),
    ],
    "drop_icmp_header": [
        v4(payload=F.icmp4_echo(1, 1)[:4]), v4(payload=b""),
        v6(payload=F.icmp6_echo(GUEST6, GW6, 1, 1)[:7]),
    ],
    "drop_icmp_csum": [
        v4(payload=F.icmp4_echo(1, 1, b"abc", cksum=0x1111)),
        v6(payload=F.icmp6_echo("fd00::9", GW6, 1, 1, b"abc")),  # wrong pseudo-header
        with_byte(v4(), len(v4()) - 1, 0),
    ],
    "drop_icmp_type": [
        v4(payload=F.icmp4(13, 0, bytes(4), bytes(12))),  # timestamp
        v4(payload=F.icmp4_echo(1, 1, type_=F.ICMP_ECHO_REPLY)),
        v4(payload=F.icmp4_echo(1, 1, code=1)),
        v6(payload=F.icmp6(GUEST6, GW6, 135, 0, bytes(4), F.addr(GW6))),
        v6(payload=F.icmp6_echo(GUEST6, GW6, 1, 1, type_=F.ICMP6_ECHO_REPLY)),
    ],
    "drop_unhandled_proto": [
        v4(255, b"x"),
        v6(F.PROTO_ICMP, F.icmp4_echo(1, 1)),  # ICMP (v4) inside IPv6
        v6(src=LLADDR6),  # link-local source: echo to the gateway, not handled
        v6(59, b""),  # no next header
    ],
    # UDP header checks (the rest: tests/test_udp_worker.py)
    "drop_udp_header": [v4(F.PROTO_UDP, F.udp(GUEST4, GW4, 40000, 53, b"q")[:7])],
    "drop_udp_port": [v4(F.PROTO_UDP, F.udp(GUEST4, GW4, 40000, 0, b"q"))],
    "drop_udp_csum": [v4(F.PROTO_UDP, with_byte(F.udp(GUEST4, GW4, 40000, 53, b"q"), 8, 0))],
    # TCP header checks that need no connection (the rest: tests/test_tcp_input.py)
    "drop_tcp_header": [
        v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 40000, 80)[:19]),
        v6(F.PROTO_TCP, F.tcp(GUEST6, GW6, 40000, 80)[:12] + b"\x40" + bytes(7)),
    ],
    "drop_tcp_port": [v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 0, 80))],
    "drop_tcp_flags": [v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 40000, 80, flags=0x03))],
    "drop_tcp_options": [
        v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, 40000, 80)[:12] + b"\x60" +
           F.tcp(GUEST4, GW4, 40000, 80)[13:] + b"\x02\x08\x05\xb4"),
    ],
    "drop_tcp_csum": [v4(F.PROTO_TCP, with_byte(F.tcp(GUEST4, GW4, 40000, 80), 16, 0))],
}


@pytest.mark.parametrize("name,idx", [(n, i) for n, cases in DROP_CASES.items()
                                      for i in range(len(cases))])
def test_drop_reason(h, name, idx):
    frm = DROP_CASES[name][idx]
    assert h.exchange(frm) == []
    only(h, name)
    c = h.counters()
    assert (c["frames_in"], c["bytes_in"]) == (1, len(frm))
    assert c["frames_out"] == 0


def test_every_drop_counter_has_a_case():
    in_test_tcp_input = {"drop_tcp_no_flow", "drop_tcp_ack", "drop_tcp_rst", "drop_tcp_syn",
                         "drop_tcp_window", "drop_tcp_ooo", "drop_tcp_old", "drop_tcp_paws"}
    untested = set(DROPS) - set(DROP_CASES) - {"drop_wrong_owner"} - in_test_tcp_input
    assert not untested


def test_worker_continues_after_drops(h):
    """Bad frames in the middle of a batch do not disturb the good ones."""
    good = F.echo4_frame(GUEST4, GW4, 1, 1, b"ok")
    batch = [good] + [c for cases in DROP_CASES.values() for c in cases] + [good]
    assert h.push(*batch) == len(batch)
    assert h.poll() == len(batch)
    replies = h.pop()
    assert len(replies) == 2
    for rep in replies:
        check_echo_reply(rep, good)
    c = h.counters()
    assert sum(c[n] for n in OUTCOMES) == c["frames_in"] == len(batch)


# --- ownership ------------------------------------------------------------------

def test_wrong_owner_dropped_with_two_workers():
    reqs = [F.echo4_frame(GUEST4, GW4, icmp_id=i, seq=1) for i in range(40)]
    reqs += [F.echo6_frame(GUEST6, GW6, icmp_id=i, seq=1) for i in range(40)]
    owner = [lib.rn_flow_owner(KEY, 2, r, len(r)) for r in reqs]
    assert 0 < sum(owner) < len(reqs)  # both workers own some
    for index in (0, 1):
        with Harness(index=index, nworkers=2) as hw:
            assert hw.push(*reqs) == len(reqs)
            assert hw.poll() == len(reqs)
            replies = hw.pop()
            mine = [r for r, o in zip(reqs, owner) if o == index]
            assert len(replies) == len(mine)
            for rep, req in zip(replies, mine):
                check_echo_reply(rep, req)
            c = hw.counters()
            assert c["drop_wrong_owner"] == len(reqs) - len(mine)


# --- ring full, wakeups, batching -------------------------------------------------

def test_ring_full_drops_reply_and_recovers(h):
    req = F.echo4_frame(GUEST4, GW4, 1, 1, bytes(30000))
    sent = 0
    for _ in range(5):  # 5 x 8 requests: far more than to_ns holds
        assert h.push(*[req] * 8) == 8
        assert h.poll() == 8
        sent += 8
    c = h.counters()
    assert c["ring_full"] > 0
    assert c["icmp_echo_replies"] + c["ring_full"] == sent
    replies = h.pop()
    assert len(replies) == c["icmp_echo_replies"] == c["frames_out"]
    for rep in replies:
        check_echo_reply(rep, req)
    # Space again: replies flow
    assert h.exchange(req) != []


def test_kicks_once_per_batch_only_when_asked(h):
    req = F.echo4_frame(GUEST4, GW4, 1, 1, b"k")
    n = 3 * 64 + 8
    assert h.push(*[req] * n) == n
    assert h.poll() == n
    assert h.counters()["kicks"] == 0  # namespace side not sleeping: no syscall
    assert len(h.pop()) == n
    with pytest.raises(BlockingIOError):
        os.eventfd_read(h.ev_ns)

    assert lib.rn_ring_consumer_sleep(h.shm.to_ns) == 1  # namespace side sleeps
    assert h.push(*[req] * n) == n
    assert h.poll() == n
    assert h.counters()["kicks"] == 4  # one per batch of 64, not one per frame
    assert os.eventfd_read(h.ev_ns) == 4
    assert len(h.pop()) == n


def test_releasing_space_kicks_a_waiting_producer(h):
    req = F.echo4_frame(GUEST4, GW4, 1, 1, b"k")
    h.push(req)
    h.shm.tw_ctrl.need_space = 1  # namespace side waits for room in to_worker
    assert h.poll() == 1
    assert os.eventfd_read(h.ev_ns) == 1
    assert h.counters()["kicks"] == 1


# --- corrupted rings ----------------------------------------------------------------

def test_corrupted_head_is_fatal(h):
    h.shm.tw_ctrl.head = RING + 16  # more published than the ring holds
    assert h.poll() == -errno.EPROTO
    h.shm.tw_ctrl.head = 0
    assert h.poll() == -errno.EPROTO  # sticky: the worker is finished
    assert lib.rn_worker_run(h.w, 0) == -errno.EPROTO


@pytest.mark.parametrize("rec", [
    (lib.RN_FRAME_MAX + 1, 0), (0x7FFFFFFF, 0), (64, 2), (64, 0x80000000),
    (RING - 8, 1),  # PAD record not reaching the end
])
def test_corrupted_record_is_fatal(h, rec):
    first = F.echo4_frame(GUEST4, GW4, 1, 1, b"first")
    h.push(first, F.echo4_frame(GUEST4, GW4, 1, 2, bytes(100)))
    second = (lib.RN_RING_REC_HDR + len(first) + 15) & ~15  # offset of the second record
    data = ffi.cast("uint32_t *", ffi.cast("uint8_t *", h.shm.tw_mem) + lib.RN_RING_CTRL_SIZE
                    + second)
    data[0], data[1] = rec
    assert h.poll() == -errno.EPROTO
    assert h.counters()["icmp_echo_replies"] == 1  # the good frame before it was served


def test_corrupted_to_ns_tail_is_fatal(h):
    req = F.echo4_frame(GUEST4, GW4, 1, 1, bytes(30000))
    while h.counters()["ring_full"] == 0:
        h.push(*[req] * 4)
        assert h.poll() == 4
    h.shm.tn_ctrl.tail = h.shm.tn_ctrl.tail + 8  # misaligned: impossible
    h.push(req)
    assert h.poll() == -errno.EPROTO


# --- event loop -------------------------------------------------------------------

def test_run_times_out(h):
    """With nothing to do, the loop blocks (announcing its sleep) until the timeout;
    with timeout 0 it makes one pass and does not block."""
    assert lib.rn_worker_run(h.w, 60) == 0
    assert h.counters()["wakeups"] >= 1  # it slept in epoll_wait() and woke
    assert h.shm.tw_ctrl.need_wakeup == 0  # and is awake again
    wakeups = h.counters()["wakeups"]
    assert lib.rn_worker_run(h.w, 0) == 0
    assert h.counters()["wakeups"] == wakeups


def test_run_returns_when_watched_fd_readable(h):
    a, b = socket.socketpair()
    with a, b:
        assert lib.rn_worker_watch_fd(h.w, a.fileno()) == 0
        assert lib.rn_worker_watch_fd(h.w, a.fileno()) == -errno.EEXIST
        assert lib.rn_worker_watch_fd(h.w, h.ev_worker) == -errno.EINVAL
        assert lib.rn_worker_run(h.w, 20) == 0
        b.send(b"x")
        assert lib.rn_worker_run(h.w, 5000) == 1
        assert lib.rn_worker_run(h.w, 5000) == 1  # still readable
        assert a.recv(1) == b"x"
        assert lib.rn_worker_run(h.w, 10) == 0
        b.close()
        assert lib.rn_worker_run(h.w, 5000) == 1  # hang-up


def test_run_wakes_for_frames_and_serves_them(h):
    """The worker sleeps in epoll; a frame published with a kick wakes it."""
    a, b = socket.socketpair()
    req = F.echo6_frame(GUEST6, GW6, 1, 1, b"wake")
    result = {}

    def namespace_side():
        try:
            # the worker announces its sleep before it blocks
            wait_until(lambda: h.shm.tw_ctrl.need_wakeup == 1, "the worker to announce its sleep")
            assert h.counters()["wakeups"] == 0
            h.push(req)  # publishes and kicks ev_worker since need_wakeup is set
            wait_until(lambda: lib.rn_ring_used(h.shm.to_ns) > 0, "the reply")
            result["served"] = True
        finally:
            b.send(b"stop")

    with a, b:
        assert lib.rn_worker_watch_fd(h.w, a.fileno()) == 0
        t = threading.Thread(target=namespace_side)
        t.start()
        rc = lib.rn_worker_run(h.w, int(2 * HANG_S * 1000))
        t.join()
    assert rc == 1
    assert result.get("served")
    [rep] = h.pop()
    check_echo_reply(rep, req)
    c = h.counters()
    assert c["wakeups"] >= 2 and c["icmp6_echo_replies"] == 1
    assert h.shm.tw_ctrl.need_wakeup == 0  # awake again after returning
    with pytest.raises(BlockingIOError):
        os.eventfd_read(h.ev_worker)  # the doorbell was reset


def test_run_serves_pending_frames_with_zero_timeout(h):
    req = F.echo4_frame(GUEST4, GW4, 2, 3, b"zero")
    h.push(req)
    assert lib.rn_worker_run(h.w, 0) == 0
    [rep] = h.pop()
    check_echo_reply(rep, req)
    r, _, _ = select.select([h.ev_worker], [], [], 0)
    assert not r  # the worker reset its doorbell


# --- fuzzing --------------------------------------------------------------------------

def valid_frames():
    data = st.binary(max_size=64)
    ids = st.integers(0, 0xFFFF)
    return st.one_of(
        st.builds(lambda i, s, d: F.echo4_frame(GUEST4, GW4, i, s, d), ids, ids, data),
        st.builds(lambda i, s, d: F.echo6_frame(GUEST6, GW6, i, s, d), ids, ids, data),
        st.builds(lambda p, d: v4(F.PROTO_TCP, F.tcp(GUEST4, GW4, p, 80, d)), ids, data),
        st.builds(lambda p, d: v6(F.PROTO_UDP, F.udp(GUEST6, DNS6, p, 53, d)), ids, data),
        st.builds(lambda d: v6(payload=F.icmp6_echo(GUEST6, GW6, 1, 1, d),
                               vnet=F.vnet(flags=1, csum_start=40, csum_offset=2)), data),
    )


@st.composite
def mutated(draw):
    frm = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["set", "truncate", "extend", "vnet", "ipfield"]))
        if kind == "set" and frm:
            frm[draw(st.integers(0, len(frm) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del frm[draw(st.integers(0, len(frm))):]
        elif kind == "extend":
            frm += draw(st.binary(max_size=32))
        elif kind == "vnet" and len(frm) >= 12:
            frm[:12] = F.vnet(draw(st.integers(0, 3)),
                              draw(st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x85, 0xFF])),
                              *(draw(st.integers(0, 0xFFFF)) for _ in range(5)))
        elif kind == "ipfield" and len(frm) >= 12 + 8:
            off = draw(st.integers(12, min(len(frm), 12 + 60) - 2))
            frm[off:off + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    return bytes(frm)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), min_size=1, max_size=20),
       st.integers(1, 3))
def test_fuzz_never_crashes_and_accounts_every_frame(frms, nworkers):
    with Harness(index=nworkers - 1, nworkers=nworkers) as hw:
        assert hw.push(*frms) == len(frms)
        assert hw.poll() == len(frms)
        c = hw.counters()
        assert c["frames_in"] == len(frms)
        assert c["bytes_in"] == sum(map(len, frms))
        assert sum(c[n] for n in OUTCOMES) == len(frms)
        replies = hw.pop()
        assert len(replies) == c["frames_out"]
        for rep in replies:  # an echo reply, an ICMP error, or a TCP RST refusing a connection
            p = F.parse(F.complete_csum(rep))
            assert F.l4_csum_ok(p)
            assert p.dst == F.addr(GUEST4 if p.version == 4 else GUEST6)
            if p.proto == F.PROTO_TCP:
                assert p.payload[13] & 0x04  # RST
                continue
            assert p.vnet == bytes(12)
            if p.payload[0] in (3, 1) and p.proto in (F.PROTO_ICMP, F.PROTO_ICMPV6):
                assert p.src in (F.addr(a) for a in (GW4, DNS4, GW6, DNS6))  # unreachable
                continue
            assert p.src == F.addr(GW4 if p.version == 4 else GW6)
            assert p.payload[0] in (F.ICMP_ECHO_REPLY, F.ICMP6_ECHO_REPLY)
