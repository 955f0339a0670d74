"""Flow ownership (csrc/flow.c): SipHash-2-4, the symmetric flow hash, owner
selection (UDP by the namespace source, everything else by the symmetric 5-tuple hash)
and port picking."""

from __future__ import annotations

import errno
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringnet._ringnet_c import ffi, lib

import frames as F

KEY = bytes(range(16))


def key_of(family: int, proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int):
    k = ffi.new("struct rn_flow_key *")
    k.family, k.proto, k.sport, k.dport = family, proto, sport, dport
    k.saddr = list(saddr.ljust(16, b"\0"))
    k.daddr = list(daddr.ljust(16, b"\0"))
    return k


def reversed_key(k):
    n = 16 if k.family == 6 else 4
    return key_of(k.family, k.proto, bytes(list(k.daddr))[:n], bytes(list(k.saddr))[:n],
                  k.dport, k.sport)


def random_key(rng: random.Random, family: int = 4, proto: int = 6):
    n = 4 if family == 4 else 16
    return key_of(family, proto, rng.randbytes(n), rng.randbytes(n),
                  rng.randrange(65536), rng.randrange(65536))


def test_siphash_reference_vectors():
    msg = bytes(range(15))
    assert lib.rn_siphash(KEY, msg, 0) == 0x726FDB47DD0E0E31
    assert lib.rn_siphash(KEY, msg, 15) == 0xA129CA6149BE45E5


def test_siphash_depends_on_every_byte_and_the_key():
    msg = bytes(range(15))
    base = lib.rn_siphash(KEY, msg, 15)
    for i in range(15):
        changed = msg[:i] + bytes([msg[i] ^ 1]) + msg[i + 1:]
        assert lib.rn_siphash(KEY, changed, 15) != base
    assert lib.rn_siphash(bytes(16), msg, 15) != base


families = st.sampled_from([4, 6])
ports = st.integers(0, 65535)


@settings(max_examples=300, deadline=None)
@given(families, st.sampled_from([1, 6, 17, 58, 132]), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16), ports, ports, st.binary(min_size=16, max_size=16))
def test_hash_is_symmetric(family, proto, sa, da, sp, dp, key):
    n = 4 if family == 4 else 16
    k = key_of(family, proto, sa[:n], da[:n], sp, dp)
    assert lib.rn_flow_hash(key, k) == lib.rn_flow_hash(key, reversed_key(k))
    if proto == 17 and (sp or dp):
        return  # owned by the source endpoint: test_udp_owner_is_the_source_endpoints
    for nw in (2, 3, 8):
        assert lib.rn_flow_owner_key(key, nw, k) == lib.rn_flow_owner_key(key, nw, reversed_key(k))


@settings(max_examples=300, deadline=None)
@given(families, st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16), st.integers(1, 65535), ports, ports,
       st.binary(min_size=16, max_size=16))
def test_udp_owner_is_the_source_endpoints(family, sa, da, da2, sp, dp, dp2, key):
    """Every UDP flow of one namespace source (address, port) has one owner, whatever its
    destination: one host port for the source (csrc/udp.c, endpoint-independent mapping)."""
    n = 4 if family == 4 else 16
    k = key_of(family, 17, sa[:n], da[:n], sp, dp)
    other = key_of(family, 17, sa[:n], da2[:n], sp, dp2)
    for nw in (2, 3, 8):
        assert lib.rn_flow_owner_key(key, nw, k) == lib.rn_flow_owner_key(key, nw, other)


def test_udp_sources_are_spread_and_tcp_is_not_by_source():
    """Sources of one address spread over the workers by port; a TCP flow's owner still
    depends on its destination."""
    rng = random.Random(11)
    a = F.addr("10.0.2.100")
    udp = Counter(lib.rn_flow_owner_key(KEY, 4, key_of(4, 17, a, rng.randbytes(4), p, 53))
                  for p in range(20000, 24000))
    assert set(udp) == {0, 1, 2, 3} and min(udp.values()) > 850, udp
    tcp = {lib.rn_flow_owner_key(KEY, 4, key_of(4, 6, a, rng.randbytes(4), 40000, 443))
           for _ in range(200)}
    assert tcp == {0, 1, 2, 3}


def test_hash_separates_directions_of_different_flows():
    """Symmetry must not come from ignoring the ports' pairing with the addresses."""
    a, b = F.addr("10.0.0.1"), F.addr("10.0.0.2")
    h1 = lib.rn_flow_hash(KEY, key_of(4, 6, a, b, 1000, 2000))
    h2 = lib.rn_flow_hash(KEY, key_of(4, 6, a, b, 2000, 1000))
    assert h1 != h2


@pytest.mark.parametrize("make", [
    lambda: (F.frame(F.ipv4("10.0.2.100", "93.184.216.34", F.PROTO_TCP,
                            F.tcp("10.0.2.100", "93.184.216.34", 40000, 443))),
             F.frame(F.ipv4("93.184.216.34", "10.0.2.100", F.PROTO_TCP,
                            F.tcp("93.184.216.34", "10.0.2.100", 443, 40000)))),
    lambda: (F.echo4_frame("10.0.2.100", "10.0.2.2", 0x1234, 1),
             F.frame(F.ipv4("10.0.2.2", "10.0.2.100", F.PROTO_ICMP,
                            F.icmp4_echo(0x1234, 1, type_=F.ICMP_ECHO_REPLY)))),
    lambda: (F.echo6_frame("fd00::100", "fd00::2", 0x4321, 9),
             F.frame(F.ipv6("fd00::2", "fd00::100", F.PROTO_ICMPV6,
                            F.icmp6_echo("fd00::2", "fd00::100", 0x4321, 9,
                                         type_=F.ICMP6_ECHO_REPLY)))),
])
def test_frame_and_its_reply_have_one_owner(make):
    fwd, rev = make()
    owners = {(lib.rn_flow_owner(KEY, n, fwd, len(fwd)), lib.rn_flow_owner(KEY, n, rev, len(rev)))
              for n in range(2, 9)}
    assert all(a == b for a, b in owners)
    fk, rk = ffi.new("struct rn_flow_key *"), ffi.new("struct rn_flow_key *")
    assert lib.rn_flow_key_parse(fwd[12:], len(fwd) - 12, fk) == 0
    assert lib.rn_flow_key_parse(rev[12:], len(rev) - 12, rk) == 0
    assert (fk.sport, fk.dport) == (rk.dport, rk.sport) != (0, 0)


@pytest.mark.parametrize("family", [4, 6])
def test_udp_frames_of_one_source_have_one_owner(family):
    """Frames from the namespace: one UDP source to many destinations, one owner."""
    src, dsts = ("10.0.2.100", ["93.184.216.%d" % i for i in range(1, 40)]) if family == 4 else \
        ("fd00::100", ["2001:db8::%x" % i for i in range(1, 40)])
    ip = F.ipv4 if family == 4 else F.ipv6
    frames = [F.frame(ip(src, d, F.PROTO_UDP, F.udp(src, d, 5353, 1000 + i, b"q")))
              for i, d in enumerate(dsts)]
    for n in range(2, 9):
        assert len({lib.rn_flow_owner(KEY, n, f, len(f)) for f in frames}) == 1
    k = ffi.new("struct rn_flow_key *")
    assert lib.rn_flow_key_parse(frames[0][12:], len(frames[0]) - 12, k) == 0
    assert lib.rn_flow_owner(KEY, 5, frames[0], len(frames[0])) == lib.rn_flow_owner_key(KEY, 5, k)


def test_icmp_echo_identifier_is_both_ports():
    frm = F.echo4_frame("10.0.2.100", "10.0.2.2", 0xABCD, 1)
    k = ffi.new("struct rn_flow_key *")
    assert lib.rn_flow_key_parse(frm[12:], len(frm) - 12, k) == 0
    assert (k.family, k.proto, k.sport, k.dport) == (4, 1, 0xABCD, 0xABCD)


def test_fragments_hash_on_addresses_only():
    """Every fragment of a datagram, first or not, goes to the same worker."""
    src, dst = "10.0.2.100", "198.51.100.7"
    first = F.frame(F.ipv4(src, dst, F.PROTO_UDP, F.udp(src, dst, 1111, 2222, bytes(32)),
                           mf=True, ident=5))
    rest = [F.frame(F.ipv4(src, dst, F.PROTO_UDP, bytes([i]) * 40, frag_offset=5 * i,
                           ident=5)) for i in range(1, 30)]
    k = ffi.new("struct rn_flow_key *")
    assert lib.rn_flow_key_parse(first[12:], len(first) - 12, k) == 0
    assert (k.sport, k.dport) == (0, 0)
    for n in (2, 5, 8):
        owners = {lib.rn_flow_owner(KEY, n, f, len(f)) for f in [first] + rest}
        assert len(owners) == 1


@pytest.mark.parametrize("frm", [b"", bytes(12), bytes(12) + b"\x45" + bytes(10),
                                 bytes(12) + b"\x60" + bytes(30), bytes(12) + b"\x75" + bytes(40)])
def test_frames_without_a_key_belong_to_worker_0(frm):
    for n in (1, 2, 7):
        assert lib.rn_flow_owner(KEY, n, frm, len(frm)) == 0


@pytest.mark.parametrize("nworkers", range(2, 9))
def test_owners_are_spread_evenly(nworkers):
    rng = random.Random(nworkers)
    n = 800 * nworkers
    counts = Counter(lib.rn_flow_owner_key(KEY, nworkers, random_key(rng, rng.choice((4, 6))))
                     for _ in range(n))
    assert set(counts) == set(range(nworkers))
    for c in counts.values():  # +-15% of 800 is more than 4 standard deviations
        assert 680 <= c <= 920, counts


def test_key_changes_the_mapping():
    rng = random.Random(1)
    keys = [random_key(rng) for _ in range(2000)]
    other = bytes(range(1, 17))
    moved = sum(lib.rn_flow_owner_key(KEY, 4, k) != lib.rn_flow_owner_key(other, 4, k)
                for k in keys)
    assert 0.65 < moved / len(keys) < 0.85  # 3/4 expected for independent mappings


@pytest.mark.parametrize("nworkers", [1, 2, 3, 8])
def test_pick_port_gives_a_port_the_wanted_worker_owns(nworkers):
    rng = random.Random(7)
    for _ in range(20):
        k = random_key(rng, rng.choice((4, 6)))
        for want in range(nworkers):
            start = rng.randrange(32768, 61000)
            port = lib.rn_flow_pick_port(KEY, nworkers, want, k, 32768, 60999, start)
            assert 32768 <= port <= 60999
            assert k.dport == port
            assert lib.rn_flow_owner_key(KEY, nworkers, k) == want
            assert lib.rn_flow_owner_key(KEY, nworkers, reversed_key(k)) == want


def test_pick_port_search_starts_at_start_and_wraps():
    k = random_key(random.Random(3))
    owners = {p: None for p in range(1000, 1021)}
    for p in owners:
        k.dport = p
        owners[p] = lib.rn_flow_owner_key(KEY, 4, k)
    for start in owners:
        want = owners[start]
        assert lib.rn_flow_pick_port(KEY, 4, want, k, 1000, 1020, start) == start
    # from 1020, the next port owned by the owner of 1000 wraps around to 1000
    want = owners[1000]
    if owners[1020] != want:
        assert lib.rn_flow_pick_port(KEY, 4, want, k, 1000, 1020, 1020) == 1000


def test_pick_port_fails_cleanly():
    k = random_key(random.Random(5))
    k.dport = 5000
    only_owner = lib.rn_flow_owner_key(KEY, 8, k)
    other = (only_owner + 1) % 8
    assert lib.rn_flow_pick_port(KEY, 8, other, k, 5000, 5000, 5000) == -errno.EADDRNOTAVAIL
    assert lib.rn_flow_pick_port(KEY, 8, 8, k, 1, 65535, 1) == -errno.EADDRNOTAVAIL
    assert lib.rn_flow_pick_port(KEY, 8, 0, k, 10, 9, 10) == -errno.EADDRNOTAVAIL


def test_pick_port_for_udp_needs_the_source_owner():
    """A UDP flow's owner does not depend on the far end's port: the start port if the
    wanted worker owns the namespace source, else none, at once."""
    k = random_key(random.Random(9), proto=17)
    k.sport = 5353
    owner = lib.rn_flow_owner_key(KEY, 4, k)
    assert lib.rn_flow_pick_port(KEY, 4, owner, k, 1024, 65535, 40000) == 40000 == k.dport
    assert lib.rn_flow_pick_port(KEY, 4, owner, k, 1024, 65535, 10) == 1024 == k.dport
    for want in set(range(4)) - {owner}:
        assert lib.rn_flow_pick_port(KEY, 4, want, k, 1024, 65535, 40000) == -errno.EADDRNOTAVAIL
