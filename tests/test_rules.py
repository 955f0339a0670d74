"""Egress rules (csrc/rules.c, csrc/names.c, ringnet/_rules.py).

Three layers:
- the spec parser: every form, and bad specs that name themselves;
- the C matcher and the name table through cffi: seeded random rule sets checked against a
  plain first-match reference (overlapping prefixes, port ranges, both families, names),
  DNS answers parsed into the table, expiry and eviction with made-up clocks;
- end to end through a real namespace: TCP and UDP servers on host loopback reached
  through the gateway (allow_host_loopback), names served by a real DNS server on
  loopback (tests/localdns.py) whose answers are the gateway addresses, so that the
  connections they lead to stay on this machine. Denied TCP connects fail with
  ECONNREFUSED (a RST), denied UDP with EHOSTUNREACH (ICMP administratively prohibited).

How a name rule meets the gateway mapping: rules judge the destination as the namespace
names it, before the gateway's translation to host loopback. A DNS answer of 127.0.0.x
would be useless inside (the namespace's own loopback), so the test server answers the
gateway address (10.0.2.2, fd00::2), and "allow good.test" matches a connection to
10.0.2.2 once good.test resolved to it through ringnet's DNS.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import ringnet
from ringnet._rules import RULES_MAX, Rule, encode, parse_rule, parse_target
from ringnet._ringnet_c import ffi, lib
from ringnet.errors import ConfigError

from conftest import (HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user,
                      wait_until, worker_counter)
from localdns import LocalDns
import frames as F
from test_udp_worker import UdpHarness, icmp_error, udp4, udp6
from test_worker_input import DNS4, GUEST4, GW4, GW6

KEY = bytes(range(16))


# --- the spec parser ----------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [
    ("allow 10.0.0.0/8", "allow 10.0.0.0/8"),
    ("deny tcp:10.1.2.3", "deny tcp:10.1.2.3/32"),
    ("allow tcp:10.0.0.0/8:443", "allow tcp:10.0.0.0/8:443"),
    ("allow udp:0.0.0.0/0:1000-2000", "allow udp:0.0.0.0/0:1000-2000"),
    ("deny icmp:192.0.2.0/24", "deny icmp:192.0.2.0/24"),
    ("allow 2001:db8::/32", "allow 2001:db8::/32"),
    ("allow tcp:[::1]/128:80", "allow tcp:[::1]/128:80"),
    ("allow tcp:[2001:db8::/32]:443", "allow tcp:[2001:db8::]/32:443"),
    ("allow [2001:db8::1]", "allow 2001:db8::1/128"),
    ("allow PyPI.org", "allow pypi.org"),
    ("allow tcp:pypi.org:443", "allow tcp:pypi.org:443"),
    ("deny *.Example.org.", "deny *.example.org"),
    ("allow localhost:80", "allow localhost:80"),
    ("DENY udp:dns_srv.test:53", "deny udp:dns_srv.test:53"),
])
def test_spec_forms(text, want):
    r = parse_rule(text)
    assert str(r) == want
    assert parse_rule(str(r)) == r  # the canonical text reads back as the same rule


@pytest.mark.parametrize("text, words", [
    ("permit 10.0.0.0/8", ["allow or deny"]),
    ("allow", ["empty"]),
    ("allow tcp:10.0.0.1/8:80", ["10.0.0.1/8", "10.0.0.0/8"]),
    ("allow tcp:10.0.0.0/8:0", ["'0'", "1..65535"]),
    ("allow tcp:10.0.0.0/8:70000", ["'70000'", "1..65535"]),
    ("allow tcp:10.0.0.0/8:90-80", ["90-80", "ends before"]),
    ("allow icmp:10.0.0.0/8:80", ["icmp has no ports"]),
    ("allow 10.0.0.300", ["10.0.0.300"]),
    ("allow 10.0.0.0/33", ["10.0.0.0/33"]),
    ("allow bad..name", ["bad label"]),
    ("allow ex*ample.org", ["bad label"]),
    ("allow [::1:80", ["'['"]),
    ("allow [10.0.0.1]:80", ["IPv6"]),
    ("allow tcp:[::1]x", ["':PORT'"]),
])
def test_bad_spec_names_itself(text, words):
    with pytest.raises(ConfigError) as e:
        parse_rule(text)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    if text.partition(" ")[2]:
        assert repr(text.partition(" ")[2].strip()) in msg or text in msg, msg


def test_config_keeps_canonical_rules_and_refuses_duplicates():
    cfg = ringnet.NetworkConfig(rules=["allow TCP:10.0.0.0/8:443", "deny *.Example.org"])
    assert cfg.rules == ("allow tcp:10.0.0.0/8:443", "deny *.example.org")
    with pytest.raises(ConfigError, match="twice"):
        ringnet.NetworkConfig(rules=["deny 10.0.0.0/8", "deny 10.0.0.0/8"])
    with pytest.raises(ConfigError, match="default_deny"):
        ringnet.NetworkConfig(default_deny="yes")
    assert lib.RN_RULES_MAX == RULES_MAX


def test_cli_bad_spec_names_itself():
    r = subprocess.run(ringnet_cmd("run", "--allow", "tcp:10.0.0.0/8:99999", "--", "true"),
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S)
    assert r.returncode != 0
    assert "tcp:10.0.0.0/8:99999" in r.stderr and "1..65535" in r.stderr, r.stderr


# --- the C matcher ---------------------------------------------------------------------------


class Compiled:
    """A rule set compiled by rn_rules_build(), for lookups."""

    def __init__(self, rules, default_deny=False):
        self.rules = [parse_rule(r) for r in rules]
        blob = encode([(r, 1000 + i) for i, r in enumerate(self.rules)], default_deny)
        self._blob = ffi.from_buffer(blob)
        out = ffi.new("struct rn_rules **")
        assert lib.rn_rules_build(self._blob, len(blob), out) == 0
        self.ptr = ffi.gc(out[0], lib.rn_rules_destroy)

    def lookup(self, daddr, dport=80, proto=6, names=()):
        k = flow_key(daddr, dport, proto)
        hits = ffi.new("struct rn_name_hit[]", max(1, len(names)))
        for h, n in zip(hits, names):
            h.len = len(n)
            ffi.memmove(h.name, n.encode(), len(n))
        idx = lib.rn_rules_lookup(self.ptr, k, hits, len(names))
        if idx >= 0:
            assert lib.rn_rules_slot(self.ptr, idx) == 1000 + idx
        return idx


def flow_key(daddr, dport=80, proto=6):
    a = ipaddress.ip_address(daddr)
    k = ffi.new("struct rn_flow_key *")
    k.family = a.version
    k.proto = proto
    ffi.memmove(k.daddr, a.packed, len(a.packed))
    k.sport, k.dport = 40000, dport
    return k


def reference(rules, daddr, dport, proto, names=()):
    """First-match semantics written plainly: the index of the deciding rule, or -1."""
    a = ipaddress.ip_address(daddr)
    for i, r in enumerate(rules):
        if r.proto == "icmp" and proto not in (1, 58):
            continue
        if r.proto in ("tcp", "udp") and {"tcp": 6, "udp": 17}[r.proto] != proto:
            continue
        if r.ports and (proto not in (6, 17) or not r.ports[0] <= dport <= r.ports[1]):
            continue
        if isinstance(r.target, str):
            if r.target.startswith("*."):
                if not any(n.endswith(r.target[1:]) for n in names):
                    continue
            elif r.target not in names:
                continue
        elif a.version != r.target.version or a not in r.target:
            continue
        return i
    return -1


def test_first_match_wins_over_longer_prefixes():
    c = Compiled(["deny 10.0.0.0/8", "allow 10.1.0.0/16", "allow tcp:10.0.0.0/8:443"])
    assert c.lookup("10.1.2.3") == 0
    assert c.lookup("10.1.2.3", 443) == 0
    assert c.lookup("11.0.0.1") == -1
    c = Compiled(["allow tcp:10.1.2.3:443", "deny 10.0.0.0/8"])
    assert c.lookup("10.1.2.3", 443) == 0
    assert c.lookup("10.1.2.3", 444) == 1
    assert c.lookup("10.1.2.3", 443, proto=17) == 1


def test_protocols_and_ports():
    c = Compiled(["allow udp:0.0.0.0/0:53", "deny icmp:0.0.0.0/0", "deny tcp:0.0.0.0/0:1-1023",
                  "allow ::/0"])
    assert c.lookup("192.0.2.1", 53, 17) == 0
    assert c.lookup("192.0.2.1", 53, 6) == 2
    assert c.lookup("192.0.2.1", 7, 1) == 1
    assert c.lookup("192.0.2.1", 1024, 6) == -1
    assert c.lookup("2001:db8::1", 7, 58) == 3  # icmp rule is IPv4 only here
    # a rule with ports never matches ICMP, whose "port" is the echo identifier
    assert Compiled(["deny 0.0.0.0/0:1-65535"]).lookup("192.0.2.1", 80, 1) == -1


def test_zero_length_prefixes_and_host_routes_of_both_families():
    c = Compiled(["deny 192.0.2.7/32", "deny 2001:db8::7/128", "allow 0.0.0.0/0", "deny ::/0"])
    assert c.lookup("192.0.2.7") == 0
    assert c.lookup("192.0.2.8") == 2
    assert c.lookup("2001:db8::7") == 1
    assert c.lookup("2001:db8::8") == 3


def test_names_exact_and_wildcard():
    c = Compiled(["deny tcp:bad.example.org", "allow *.example.org", "allow pypi.org:443"])
    assert c.lookup("192.0.2.1", names=["bad.example.org"]) == 0
    assert c.lookup("192.0.2.1", names=["a.b.example.org"]) == 1
    assert c.lookup("192.0.2.1", names=["example.org"]) == -1  # *.x is strictly below x
    assert c.lookup("192.0.2.1", names=["notexample.org"]) == -1
    assert c.lookup("192.0.2.1", 443, names=["pypi.org"]) == 2
    assert c.lookup("192.0.2.1", 80, names=["pypi.org"]) == -1
    assert c.lookup("192.0.2.1") == -1  # no name resolved to it
    # several names for one address: the best rule of any of them
    assert c.lookup("192.0.2.1", 443, names=["pypi.org", "x.example.org"]) == 1


def random_rules(rng, n):
    """n distinct rules: overlapping prefixes (drawn from a few bases), both families,
    ports, protocols, names."""
    bases4 = [ipaddress.ip_network(b) for b in ("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24")]
    bases6 = [ipaddress.ip_network(b) for b in ("2001:db8::/32", "2001:db8:1::/48")]
    names = ["a.test", "b.a.test", "c.test", "x.y.c.test"]
    out, seen = [], set()
    while len(out) < n:
        kind = rng.random()
        if kind < 0.15:
            target = rng.choice(["", "*."]) + rng.choice(names)
        else:
            base = rng.choice(bases4 if kind < 0.6 else bases6)
            plen = rng.randint(base.prefixlen, base.max_prefixlen)
            addr = int(base.network_address) + rng.getrandbits(base.max_prefixlen - base.prefixlen)
            net = ipaddress.ip_network((addr, plen), strict=False)
            target = f"[{net.network_address}]/{plen}" if net.version == 6 else str(net)
        proto = rng.choice(["", "", "tcp:", "udp:", "icmp:"])
        ports = ""
        if proto != "icmp:" and rng.random() < 0.4:
            lo = rng.randint(1, 2000)
            ports = f":{lo}-{lo + rng.randint(0, 500)}"
        if ports and target[0] != "[" and ":" in target:
            continue
        text = f"{rng.choice(['allow', 'deny'])} {proto}{target}{ports}"
        r = parse_rule(text)
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def random_dest(rng):
    if rng.random() < 0.5:
        base = ipaddress.ip_network(rng.choice(["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24",
                                                "0.0.0.0/0"]))
    else:
        base = ipaddress.ip_network(rng.choice(["2001:db8::/32", "2001:db8:1::/48", "::/0"]))
    addr = base.network_address + rng.getrandbits(base.max_prefixlen - base.prefixlen)
    names = rng.sample(["a.test", "b.a.test", "c.test", "x.y.c.test", "z.test"], rng.randint(0, 2))
    proto = rng.choice([6, 17, 1 if addr.version == 4 else 58])
    return str(addr), rng.randint(1, 2600), proto, names


@pytest.mark.parametrize("seed", range(6))
def test_random_sets_agree_with_first_match(seed):
    rng = random.Random(seed)
    rules = random_rules(rng, rng.choice([5, 50, 400]))
    c = Compiled([str(r) for r in rules])
    for _ in range(1500):
        d, port, proto, names = random_dest(rng)
        # destinations inside rules' own networks too, so that deep prefixes are hit
        if rng.random() < 0.5:
            r = rng.choice(rules)
            if not isinstance(r.target, str):
                d = str(r.target.network_address + rng.getrandbits(
                    r.target.max_prefixlen - r.target.prefixlen))
                proto = proto if r.target.version == 4 or proto != 1 else 58
                proto = 1 if r.target.version == 4 and proto == 58 else proto
        assert c.lookup(d, port, proto, names) == reference(rules, d, port, proto, names), \
            (d, port, proto, names)


def test_ten_thousand_rules_build_and_match():
    rules = [f"deny tcp:10.{i >> 8}.{i & 255}.0/24:{1 + i % 60000}" for i in range(10000)]
    c = Compiled(rules + ["allow 10.0.0.0/8"])
    assert c.lookup("10.3.4.5", 1 + (3 * 256 + 4) % 60000) == 3 * 256 + 4
    assert c.lookup("10.3.4.5", 1) == 10000
    assert c.lookup("11.0.0.1") == -1


def test_malformed_sets_are_refused():
    good = encode([(parse_rule("allow 10.0.0.0/8"), 0)], False)
    out = ffi.new("struct rn_rules **")
    assert lib.rn_rules_build(good, len(good), out) == 0
    lib.rn_rules_destroy(out[0])
    assert lib.rn_rules_build(good, len(good) - 1, out) != 0  # length disagrees
    bad = bytearray(good)
    bad[0] ^= 1  # magic
    assert lib.rn_rules_build(bytes(bad), len(bad), out) != 0
    # host bits past the prefix, a slot out of range, an unknown action
    spec_off = ffi.sizeof("struct rn_rules_blob")
    for field, value in (("addr", 3), ("slot", RULES_MAX), ("action", 7)):
        arr = ffi.new("struct rn_rule_spec *")
        ffi.memmove(arr, good[spec_off:], ffi.sizeof("struct rn_rule_spec"))
        if field == "addr":
            arr.addr[3] = value
        else:
            setattr(arr, field, value)
        blob = good[:spec_off] + bytes(ffi.buffer(arr))
        assert lib.rn_rules_build(blob, len(blob), out) != 0, field


# --- refusals, in a worker driven in-process ----------------------------------------------


def load(h, rules, default_deny=False):
    blob = encode([(parse_rule(r), i) for i, r in enumerate(rules)], default_deny)
    assert lib.rn_rules_load(h.w, blob, len(blob)) == 0


@pytest.mark.parametrize("frm, want", [
    (udp4(40000, 9, b"x", dst=GW4), (3, 13)),
    (udp6(40000, 9, b"x", dst=GW6), (1, 1)),
])
def test_denied_udp_gets_administratively_prohibited(frm, want):
    """Before any socket: the worker answers with ICMP type 3 code 13 (ICMPv6 1/1)."""
    with UdpHarness(allow=True) as h:
        load(h, ["deny udp:10.0.2.2:9", "deny udp:[fd00::2]:9"])
        [err] = h.exchange(frm)
        assert icmp_error(err)[:2] == want
        c = h.counters()
        assert c["policy_refused"] == 1 and c["policy_rule"] == 1
        assert c["flows_open_udp"] == 0


def test_denied_syn_gets_a_rst_and_default_deny_spares_dns():
    with UdpHarness(allow=True, dns=[("127.0.0.1", 9)]) as h:
        load(h, [], default_deny=True)
        [rst] = h.exchange(F.frame(F.ipv4(GUEST4, GW4, F.PROTO_TCP,
                                          F.tcp(GUEST4, GW4, 40001, 80, flags=0x02, seq=1))))
        p = F.parse(rst)
        assert p.proto == F.PROTO_TCP and p.payload[13] & 0x04
        # the DNS forwarder is not refused by the default: a UDP flow opens
        h.send(udp4(40002, 53, bytes(12), dst=DNS4))
        c = h.counters()
        assert c["policy_rule"] == 1 and c["rules_default"] == 2 and c["flows_open_udp"] == 1


# --- the name table --------------------------------------------------------------------------


def name_table():
    return ffi.new("struct rn_name_slot[]", lib.RN_NAMES_SLOTS)


def qname(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def answer(q, records, rcode=0, qtype=1):
    """A DNS response to ``q`` with records (owner, type, ttl, rdata bytes); owner None:
    a compression pointer to the question's name."""
    msg = struct.pack("!HHHHHH", 0x1234, 0x8180 | rcode, 1, len(records), 0, 0)
    msg += qname(q) + struct.pack("!HH", qtype, 1)
    for owner, rtype, ttl, rdata in records:
        msg += b"\xc0\x0c" if owner is None else qname(owner)
        msg += struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return msg


def learn(tab, msg, now=1000):
    ev = ffi.new("uint32_t *")
    return lib.rn_names_learn(tab, now, KEY, msg, len(msg), ev)


def names_of(tab, addr, now=1000):
    a = ipaddress.ip_address(addr)
    out = ffi.new("struct rn_name_hit[]", 16)
    n = lib.rn_names_lookup(tab, now, KEY, a.version, a.packed, out, 16)
    return sorted(ffi.string(out[i].name).decode() for i in range(n))


def test_answers_teach_the_question_name():
    tab = name_table()
    a4 = socket.inet_aton("192.0.2.1")
    a6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert learn(tab, answer("WWW.Example.org", [(None, 1, 60, a4)])) == 1
    assert learn(tab, answer("www.example.org", [(None, 28, 60, a6)], qtype=28)) == 1
    assert names_of(tab, "192.0.2.1") == ["www.example.org"]
    assert names_of(tab, "2001:db8::1") == ["www.example.org"]
    # a CNAME chain: the address goes under the name asked for
    cname = qname("edge.cdn.test")
    msg = answer("files.example.org", [(None, 5, 60, cname), ("edge.cdn.test", 1, 60,
                                                                socket.inet_aton("192.0.2.9"))])
    assert learn(tab, msg) == 1
    assert names_of(tab, "192.0.2.9") == ["files.example.org"]
    # records of names the question does not lead to teach nothing
    msg = answer("x.test", [("pypi.org", 1, 60, socket.inet_aton("192.0.2.66"))])
    assert learn(tab, msg) == 0 and names_of(tab, "192.0.2.66") == []
    # errors, malformed answers, labels with odd bytes
    assert learn(tab, answer("y.test", [(None, 1, 60, a4)], rcode=3)) == 0
    assert learn(tab, answer("y.test", [(None, 1, 60, a4)])[:-2]) < 0
    assert learn(tab, answer("pypi.org.evil", [(None, 1, 60, a4)]).replace(b"\x04pypi", b"\x04py.i")) < 0
    loop = bytearray(answer("z.test", [(None, 1, 60, a4)]))
    loop[12:14] = b"\xc0\x0c"  # the question's name points at itself
    assert learn(tab, bytes(loop)) < 0


def test_mangled_answers_never_read_out_of_bounds():
    """Seeded random damage to real-looking answers (CNAME chains, compression, both
    families): the parser returns a count or an error and only records names that are
    valid text. Run under ASan by scripts/test.sh --sanitize."""
    rng = random.Random(7)
    tab = name_table()
    base = [answer("a.b.test", [(None, 5, 60, qname("c.test")), ("c.test", 1, 60, b"\xc0\x00\x02\x01")]),
            answer("v6.test", [(None, 28, 60, bytes(16))], qtype=28),
            answer("x.test", [(None, 1, 60, b"\x0a\x00\x02\x02")] * 3)]
    for i in range(3000):
        msg = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(msg))
            if op < 0.6:
                msg[pos] = rng.randrange(256)
            elif op < 0.8:
                del msg[pos:]
                if not msg:
                    msg = bytearray(b"\0")
            else:
                msg[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        data = bytes(msg)
        assert learn(tab, data, now=1000 + i) >= -lib_ebadmsg()
    for e in (ffi.string(s.name) for s in tab[0:lib.RN_NAMES_SLOTS] if s.expires):
        assert all(c in b"abcdefghijklmnopqrstuvwxyz0123456789-_." for c in e), e


def lib_ebadmsg():
    import errno
    return errno.EBADMSG


def test_names_expire_after_ttl_and_grace():
    tab = name_table()
    learn(tab, answer("t.test", [(None, 1, 5, socket.inet_aton("192.0.2.5"))]), now=1000)
    assert names_of(tab, "192.0.2.5", now=1000 + 5000 + lib.RN_NAMES_GRACE_MS - 1) == ["t.test"]
    assert names_of(tab, "192.0.2.5", now=1000 + 5000 + lib.RN_NAMES_GRACE_MS) == []


def test_a_full_window_evicts_the_entry_expiring_first():
    tab = name_table()
    a = socket.inet_aton("192.0.2.7")
    w = lib.RN_NAMES_WINDOW
    for i in range(w):
        assert lib.rn_names_put(tab, 1000, KEY, 4, a, f"n{i}.test".encode(), len(f"n{i}.test"), 100 + i) == 0
    assert len(names_of(tab, "192.0.2.7")) == w
    assert lib.rn_names_put(tab, 1000, KEY, 4, a, b"new.test", 8, 500) == 1  # evicted one alive
    got = names_of(tab, "192.0.2.7")
    assert "new.test" in got and "n0.test" not in got and len(got) == w
    # the same pair again refreshes its entry instead of taking another
    assert lib.rn_names_put(tab, 1000, KEY, 4, a, b"new.test", 8, 900) == 0
    assert names_of(tab, "192.0.2.7").count("new.test") == 1


# --- end to end --------------------------------------------------------------------------------


class Servers:
    """A TCP server (accepts, answers "hi") and a UDP echo server on 127.0.0.1 and ::1,
    each on its own port, for the namespace to reach through the gateway."""

    def __init__(self):
        self.socks = []
        self.tcp4, self.tcp4b = self._tcp("127.0.0.1"), self._tcp("127.0.0.1")
        self.tcp6 = self._tcp("::1")
        self.udp4 = self._udp("127.0.0.1")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        for t in self._threads:
            t.start()

    def _tcp(self, host):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(64)
        s.settimeout(0.1)
        self.socks.append(s)
        return s.getsockname()[1]

    def _udp(self, host):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.settimeout(0.1)
        self.socks.append(s)
        return s.getsockname()[1]

    def _serve(self):
        while not self._stop.is_set():
            for s in self.socks:
                try:
                    if s.type == socket.SOCK_STREAM:
                        c, _ = s.accept()
                        c.sendall(b"hi")
                        c.close()
                    else:
                        data, peer = s.recvfrom(2048)
                        s.sendto(data, peer)
                except (socket.timeout, BlockingIOError):
                    continue
                except OSError:
                    if self._stop.is_set():
                        return

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for s in self.socks:
            s.close()


PROBE = r"""
import errno, socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    fam, kind, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)[0]
    s = socket.socket(fam, kind)
    s.settimeout(%(hang)s)
    s.connect(addr)
    if proto == "tcp":
        print("ok" if s.recv(2) == b"hi" else "bad")
    else:
        s.send(b"ping")
        print("ok" if s.recv(64) == b"ping" else "bad")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__)
""" % {"hang": HANG_S}


def probe(net, proto, host, port):
    """What a program inside gets connecting to host:port: "ok" (TCP: the server's
    greeting; UDP: its echo), or the errno name (ECONNREFUSED, EHOSTUNREACH, ...)."""
    r = net.run([sys.executable, "-c", PROBE, proto, host, str(port)], capture_output=True,
                timeout=2 * HANG_S)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def dns():
    records = {"good.test": ("10.0.2.2",), "bad.test": ("fd00::2",),
               "api.svc.test": ("10.0.2.2",), "short.test": ("10.0.2.2",)}
    with LocalDns(records, ttl=300) as server:
        yield server


def net_with(dns, rules=(), default_deny=False, **kw):
    return ringnet.Network(workers=2, allow_host_loopback=True, dns_upstream=dns.upstream,
                           rules=list(rules), default_deny=default_deny, **kw)


def hits(net):
    return {r["rule"]: r["hits"] for r in net.rules.list()}


@needs_userns
def test_rules_by_cidr_port_and_protocol(servers, dns):
    rules = [f"deny tcp:10.0.2.2:{servers.tcp4b}", "deny udp:10.0.2.0/24", "allow fd00::/64",
             "deny icmp:10.0.2.2"]
    with net_with(dns, rules) as net:
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4b) == "ECONNREFUSED"  # a RST
        assert probe(net, "udp", "10.0.2.2", servers.udp4) == "EHOSTUNREACH"   # ICMP 3/13
        assert probe(net, "tcp", "fd00::2", servers.tcp6) == "ok"
        h = hits(net)
        assert h[f"deny tcp:10.0.2.2/32:{servers.tcp4b}"] == 1
        assert h["deny udp:10.0.2.0/24"] >= 1
        assert h["allow fd00::/64"] == 1
        assert worker_counter(net, "policy_rule") >= 2


@needs_userns
def test_default_deny_allows_only_listed(servers, dns):
    with net_with(dns, [f"allow tcp:10.0.2.2:{servers.tcp4}"], default_deny=True) as net:
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4b) == "ECONNREFUSED"
        assert probe(net, "udp", "10.0.2.2", servers.udp4) == "EHOSTUNREACH"
        assert probe(net, "tcp", "fd00::2", servers.tcp6) == "ECONNREFUSED"
        assert hits(net) == {f"allow tcp:10.0.2.2/32:{servers.tcp4}": 1}
        assert worker_counter(net, "rules_default") >= 3


@needs_userns
def test_name_rules_match_only_names_resolved_through_ringnet(servers, dns):
    rules = ["allow good.test", "allow *.svc.test"]
    with net_with(dns, rules, default_deny=True) as net:
        # the gateway before any name led there: no name rule covers it
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        assert probe(net, "tcp", "good.test", servers.tcp4) == "ok"
        # now good.test resolved to 10.0.2.2: the address itself is covered too
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        assert probe(net, "tcp", "bad.test", servers.tcp6) == "ECONNREFUSED"
        assert probe(net, "tcp", "fd00::2", servers.tcp6) == "ECONNREFUSED"
        h = hits(net)
        assert h == {"allow good.test": 2, "allow *.svc.test": 0}, h
        assert {"name": "good.test", "address": "10.0.2.2"}.items() <= \
            next(e for e in net.rules.names() if e["name"] == "good.test").items()
        assert worker_counter(net, "names_learned") >= 2


@needs_userns
def test_name_deny_rule_and_wildcard(servers, dns):
    with net_with(dns, ["deny bad.test", "deny *.svc.test"]) as net:
        assert probe(net, "tcp", "fd00::2", servers.tcp6) == "ok"
        assert probe(net, "tcp", "bad.test", servers.tcp6) == "ECONNREFUSED"
        assert probe(net, "tcp", "api.svc.test", servers.tcp4) == "ECONNREFUSED"
        assert hits(net) == {"deny bad.test": 1, "deny *.svc.test": 1}


@needs_userns
def test_runtime_add_and_remove(servers, dns):
    with net_with(dns) as net:
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        net.rules.add(f"deny tcp:10.0.2.2:{servers.tcp4}")
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        net.rules.add(f"allow tcp:10.0.2.2:{servers.tcp4}", index=0)  # before the deny
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        assert [r["rule"] for r in net.rules.list()] == [
            f"allow tcp:10.0.2.2/32:{servers.tcp4}", f"deny tcp:10.0.2.2/32:{servers.tcp4}"]
        net.rules.remove(0)
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        net.rules.remove(f"deny tcp:10.0.2.2:{servers.tcp4}")
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        assert net.rules.list() == []
        # a slot reused by a new rule starts from zero hits
        net.rules.add("deny udp:10.0.2.2")
        assert hits(net) == {"deny udp:10.0.2.2/32": 0}
        net.rules.set_default(True)
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        with pytest.raises(ConfigError, match="no rule"):
            net.rules.remove("deny 192.0.2.0/24")
        with pytest.raises(ConfigError, match="already present"):
            net.rules.add("deny udp:10.0.2.2/32")
        with pytest.raises(ConfigError, match="99999"):
            net.rules.add("deny tcp:10.0.2.2:99999")


@needs_userns
def test_open_flows_survive_a_new_deny(servers, dns):
    """A rule judges new flows only: a UDP flow opened before a deny keeps working."""
    script = r"""
import socket, sys
s = socket.socket(); s.settimeout(%s)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(%s)
u.connect(("10.0.2.2", int(sys.argv[1]))); u.send(b"a"); assert u.recv(9) == b"a"
print("ready", flush=True); sys.stdin.readline()
u.send(b"b"); print("after", u.recv(9).decode(), flush=True)
""" % (HANG_S, HANG_S)
    with net_with(dns) as net:
        p = net.spawn([sys.executable, "-c", script, str(servers.udp4)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == b"ready"
            net.rules.add("deny udp:10.0.2.2")
            p.stdin.write(b"\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == b"after b"
        finally:
            p.kill()
            p.wait()
        assert probe(net, "udp", "10.0.2.2", servers.udp4) == "EHOSTUNREACH"


@needs_userns
def test_names_expire_with_their_ttl(servers):
    with LocalDns({"brief.test": ("10.0.2.2",)}, ttl=1) as dns, \
            net_with(dns, ["allow brief.test"], default_deny=True) as net:
        assert probe(net, "tcp", "brief.test", servers.tcp4) == "ok"
        # TTL 1 s plus the grace: the name stops covering the address by itself
        wait_until(lambda: probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED",
                   "the learnt name to expire", interval=0.5)


@needs_userns
def test_cli_rules_and_stats(servers, dns, tmp_path):
    with net_with(dns, ["deny udp:10.0.2.2"], control_dir=str(tmp_path)) as net:
        def cli(*args):
            r = subprocess.run(ringnet_cmd("rules", net.id, *args, "--dir", str(tmp_path)),
                               capture_output=True, text=True, env=child_env(), timeout=HANG_S)
            return r.returncode, r.stdout, r.stderr

        rc, out, err = cli("add", "deny", f"tcp:10.0.2.2:{servers.tcp4}")
        assert rc == 0, err
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        rc, out, err = cli("ls")
        assert rc == 0 and f"deny tcp:10.0.2.2/32:{servers.tcp4}" in out and "default: allow" in out
        assert any(line.split()[1] == "1" for line in out.splitlines() if "tcp:10.0.2.2" in line), out
        rc, out, err = cli("add", "deny", "tcp:10.0.2.2:0")
        assert rc != 0 and "tcp:10.0.2.2:0" in err, err
        rc, out, err = cli("rm", "1")
        assert rc == 0, err
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ok"
        rc, out, err = cli("default", "deny")
        assert rc == 0 and out.strip() == "deny", err
        assert probe(net, "tcp", "10.0.2.2", servers.tcp4) == "ECONNREFUSED"
        assert probe(net, "tcp", "good.test", servers.tcp4) == "ECONNREFUSED"  # DNS went through
        rc, out, err = cli("names")
        assert rc == 0 and "good.test" in out and "10.0.2.2" in out, out + err
        r = subprocess.run(ringnet_cmd("stats", net.id, "--dir", str(tmp_path)),
                           capture_output=True, text=True, env=child_env(), timeout=HANG_S)
        assert r.returncode == 0 and "deny udp:10.0.2.2/32" in r.stdout, r.stderr


@needs_userns
def test_run_with_allow_deny_flags(servers, dns):
    argv = ringnet_cmd("run", "--workers", "1", "--allow-host-loopback", "--dns-upstream",
                       dns.upstream, "--allow", f"tcp:10.0.2.2:{servers.tcp4}", "--deny",
                       "tcp:10.0.2.0/24", "--default-deny", "--", sys.executable, "-c",
                       PROBE.replace("sys.argv[1], sys.argv[2], int(sys.argv[3])",
                                     "'tcp', '10.0.2.2', int(sys.argv[1])"), str(servers.tcp4))
    r = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=2 * HANG_S)
    assert r.stdout.strip() == "ok", r.stderr
    argv[-1] = str(servers.tcp4b)
    r = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=2 * HANG_S)
    assert r.stdout.strip() == "ECONNREFUSED", r.stderr


RULES_AS_USER = r'''
import json, os, socket, sys, threading, ringnet
srv = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
def serve(s):
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
for s in srv:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
ok, denied = (s.getsockname()[1] for s in srv)
probe = sys.argv[1]
with ringnet.Network(workers=2, allow_host_loopback=True, default_deny=True,
                     rules=[f"allow tcp:10.0.2.2:{ok}"]) as net:
    out = [net.run([sys.executable, "-c", probe, "tcp", "10.0.2.2", str(p)], capture_output=True,
                   timeout=120).stdout.decode().strip() for p in (ok, denied)]
    net.rules.add(f"allow tcp:10.0.2.2:{denied}")
    out.append(net.run([sys.executable, "-c", probe, "tcp", "10.0.2.2", str(denied)],
                       capture_output=True, timeout=120).stdout.decode().strip())
    hits = [r["hits"] for r in net.rules.list()]
print(json.dumps({"uid": os.getuid(), "out": out, "hits": hits}))
'''


@needs_userns
def test_rules_as_unprivileged_user():
    uid, _ = unpriv_user()
    r = subprocess.run(as_user_argv([sys.executable, "-c", RULES_AS_USER, PROBE]), capture_output=True,
                       text=True, timeout=4 * HANG_S, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == uid
    assert out["out"] == ["ok", "ECONNREFUSED", "ok"]
    assert out["hits"] == [1, 1]
