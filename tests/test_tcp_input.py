"""The TCP core driven segment by segment, in-process (smoltcp style: test_<state>_<event>).

The test plays the namespace's TCP: it writes segments into ring to_worker, runs the
worker (rn_worker_poll() for frames, rn_worker_run() to let host socket events and
timers happen) and parses what comes out of ring to_ns. The host side is a real
listening socket on 127.0.0.1, reached through the gateway address (host loopback
allowed, and the worker confined to loopback whatever a frame asks for).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

import pytest

from ringnet._ringnet_c import lib

import frames as F
from test_worker_input import DNS4, GUEST4, GUEST6, GW4, GW6, NAMES, Harness, params

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
DATA_OUTCOMES = {n for n in NAMES if n.startswith("drop_")} | {
    "tcp_segments_in", "policy_refused", "flows_refused_cap", "flows_refused_fd"}


@dataclass
class Seg:
    """A segment the worker sent, parsed (checksum completed and verified)."""

    vnet: bytes
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    wnd: int
    opts: bytes
    payload: bytes
    gso_type: int
    gso_size: int


def parse_seg(frm: bytes) -> Seg:
    p = F.parse(F.complete_csum(frm))
    assert p.proto == F.PROTO_TCP
    assert F.l4_csum_ok(p)
    t = p.payload
    sport, dport, seq, ack, off, flags, wnd = struct.unpack("!HHIIBBH", t[:16])
    hl = (off >> 4) * 4
    _, gso_type, _, gso_size, _, _, _ = struct.unpack("<BBHHHHH", frm[:12])
    return Seg(frm[:12], p.src, p.dst, sport, dport, seq, ack, flags, wnd, t[20:hl], t[hl:],
               gso_type, gso_size)


def tcp_options(opts: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(opts):
        if opts[i] == 0:
            break
        if opts[i] == 1:
            i += 1
            continue
        out[opts[i]] = opts[i + 2:i + opts[i + 1]]
        i += opts[i + 1]
    return out


def ts_opt(tsval: int, tsecr: int) -> bytes:
    """NOP, NOP, timestamps: the 12 bytes Linux puts in every segment (RFC 7323, 3.2)."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF)


def ts_of(seg: "Seg") -> tuple[int, int]:
    """(TSval, TSecr) of a segment the worker sent, which must carry them."""
    return struct.unpack("!II", tcp_options(seg.opts)[8])


class TcpHarness(Harness):
    """One worker on its own mapping, host loopback allowed, driven from the namespace."""

    def __init__(self, max_flows: int = 64, idle_ms: int = 7_200_000, fin_ms: int = 60_000,
                 allow: bool = True, mtu: int = 65520, confined: bool = True, dns=None,
                 delack_ms: int = 0):
        """confined=False lets the worker connect beyond loopback: only in a network
        namespace of the test's own. dns: (address, port) of the upstream resolver, or a
        list of them. delack_ms: our delayed ACK (tcp_delack.c; off unless asked, so that
        a cell's ACK comes at once)."""
        p = params(mtu=mtu)
        p.tcp_delack_ms = delack_ms
        p.allow_host_loopback = int(allow)
        p.loopback_only = int(confined)
        if dns:
            ups = dns if isinstance(dns, list) else [dns]
            p.ndns = len(ups)
            for i, (addr, port) in enumerate(ups):
                a = F.addr(addr)
                p.dns[i].family = 4 if len(a) == 4 else 6
                p.dns[i].addr = list(a) + [0] * (16 - len(a))
                p.dns[i].port = port
        p.prefix4, p.prefix6 = 24, 64
        p.max_flows = max_flows
        p.tcp_idle_timeout_ms, p.tcp_fin_timeout_ms = idle_ms, fin_ms
        super().__init__(p=p)

    def run(self, ms: int = 30) -> None:
        """Let host socket events and timers happen for about ms milliseconds."""
        assert lib.rn_worker_run(self.w, ms) >= 0

    def c(self, name: str) -> int:
        return self.ctr[NAMES.index(name)]


@pytest.fixture
def h():
    harness = TcpHarness()
    yield harness
    harness.close()


@pytest.fixture
def server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(5)
    yield s
    s.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Peer:
    """The namespace's end of one connection."""

    def __init__(self, h: TcpHarness, dport: int, v6: bool = False, sport: int = 40000,
                 isn: int = 0x10000000, wnd: int = 65535, ws: int = 7, mss: int = 1460,
                 sack: bool = False, ts: int | None = None):
        """ts: offer timestamps (RFC 7323) with this first TSval; every later segment
        then carries TSval self.tsval and TSecr self.ts_recent (unless opts are given)."""
        self.h, self.dport, self.v6, self.sport, self.sack = h, dport, v6, sport, sack
        self.ts, self.tsval, self.ts_recent = ts is not None, ts or 0, 0
        self.src, self.dst = (GUEST6, GW6) if v6 else (GUEST4, GW4)
        self.isn, self.snd_nxt, self.wnd, self.ws, self.mss = isn, isn, wnd, ws, mss
        self.rcv_nxt = 0
        self.iss = None

    def frame(self, flags: int, payload: bytes = b"", seq: int = None, ack: int = None,
              wnd: int = None, opts: bytes = b"", doff: int = None) -> bytes:
        seq = self.snd_nxt if seq is None else seq
        ack = (self.rcv_nxt if flags & ACK else 0) if ack is None else ack
        if self.ts and not opts and not flags & SYN:
            opts = ts_opt(self.tsval, self.ts_recent)
        wnd = self.wnd if wnd is None else wnd
        hl = 20 + len(opts)
        off = (doff if doff is not None else hl // 4) << 4
        t = struct.pack("!HHIIBBHHH", self.sport, self.dport, seq & 0xFFFFFFFF,
                        ack & 0xFFFFFFFF, off, flags, wnd, 0, 0) + opts + payload
        c = F.csum(t, F._l4_pseudo(self.src, self.dst, F.PROTO_TCP, len(t)))
        t = t[:16] + struct.pack("!H", c) + t[18:]
        if self.v6:
            return F.frame(F.ipv6(self.src, self.dst, F.PROTO_TCP, t))
        return F.frame(F.ipv4(self.src, self.dst, F.PROTO_TCP, t, df=True))

    def send(self, flags: int, payload: bytes = b"", advance: bool = True, **kw) -> list[Seg]:
        assert self.h.push(self.frame(flags, payload, **kw)) == 1
        assert lib.rn_worker_poll(self.h.w) >= 1
        if advance and "seq" not in kw:
            self.snd_nxt += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return [parse_seg(f) for f in self.h.pop()]

    def recv(self, ms: int = 30) -> list[Seg]:
        self.h.run(ms)
        return [parse_seg(f) for f in self.h.pop()]

    def syn(self) -> list[Seg]:
        opts = struct.pack("!BBH", 2, 4, self.mss)
        if self.ws is not None:
            opts += struct.pack("!BBBB", 1, 3, 3, self.ws)
        if self.sack:
            opts += b"\x01\x01\x04\x02"
        if self.ts:
            opts += ts_opt(self.tsval, 0)
        return self.send(SYN, opts=opts)

    def connect(self, server: socket.socket) -> socket.socket:
        """Handshake through the worker; returns the host side's accepted socket."""
        segs = self.syn()  # on loopback the host connect() may complete at once
        conn, _ = server.accept()
        if not segs:
            segs = self.wait(lambda s: s.flags & SYN)
        [sa] = segs
        assert sa.flags == SYN | ACK and sa.ack == self.isn + 1
        if self.ts:
            self.ts_recent = ts_of(sa)[0]
        self.iss = sa.seq
        self.rcv_nxt = sa.seq + 1
        assert self.send(ACK) == []
        conn.settimeout(5)
        return conn

    def wait(self, pred, timeout: float = 3.0) -> list[Seg]:
        deadline = time.monotonic() + timeout
        got = []
        while time.monotonic() < deadline:
            got += self.recv(20)
            if any(pred(s) for s in got):
                return got
        raise AssertionError(f"no matching segment in {timeout} s; got {got}")

    def take(self, segs: list[Seg]) -> bytes:
        """Accept in-order data from segs (advance rcv_nxt), without acknowledging yet."""
        data = b""
        for s in segs:
            if s.payload and s.seq == self.rcv_nxt:
                data += s.payload
                self.rcv_nxt += len(s.payload)
            if s.flags & FIN and s.seq + len(s.payload) == self.rcv_nxt:
                self.rcv_nxt += 1
        return data


# --- CLOSED: segments for no connection ----------------------------------------------------


def test_closed_syn_refused_port_rst_at_once(h):
    peer = Peer(h, closed_port())
    t0 = time.monotonic()
    segs = peer.syn()  # loopback may refuse the connect() at once, or a moment later
    if not segs:
        segs = peer.wait(lambda s: s.flags & RST, 2)
    assert time.monotonic() - t0 < 0.1
    [rst] = [s for s in segs if s.flags & RST]
    assert rst.flags == RST | ACK and rst.ack == peer.isn + 1
    assert h.c("tcp_connect_refused") == 1 and h.c("flows_open_tcp") == 0


def test_closed_syn_policy_refused_rst(h):
    peer = Peer(h, 80)
    peer.dst = "10.0.2.77"  # own subnet: nothing there
    [rst] = peer.syn()
    assert rst.flags == RST | ACK and rst.ack == peer.isn + 1
    assert rst.src == F.addr("10.0.2.77") and rst.dst == F.addr(GUEST4)
    assert h.c("policy_refused") == 1 and h.c("tcp_connects") == 0


def test_closed_syn_host_loopback_denied_by_default(server):
    h = TcpHarness(allow=False)
    try:
        peer = Peer(h, server.getsockname()[1])
        [rst] = peer.syn()
        assert rst.flags & RST and h.c("policy_refused") == 1
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        h.close()


def test_closed_syn_to_dns_address_reaches_upstream_even_without_loopback(server):
    h = TcpHarness(allow=False, dns=("127.0.0.1", server.getsockname()[1]))
    try:
        peer = Peer(h, 53)
        peer.dst = DNS4
        conn = peer.connect(server)  # DNS over TCP to the namespace's DNS address
        peer.send(ACK | PSH, b"query")
        assert conn.recv(10) == b"query"
        other = Peer(h, server.getsockname()[1], sport=40001)
        assert [s.flags & RST for s in other.syn()] == [RST]  # the gateway stays refused
        assert h.c("policy_refused") == 1
    finally:
        h.close()


def test_closed_ack_gets_rst(h):
    peer = Peer(h, 80)
    [rst] = peer.send(ACK, b"x", ack=1234)
    assert rst.flags == RST and rst.seq == 1234
    assert h.c("drop_tcp_no_flow") == 1


def test_closed_rst_ignored(h):
    assert Peer(h, 80).send(RST) == []
    assert h.c("drop_tcp_no_flow") == 1 and h.c("tcp_rst_sent") == 0


def test_closed_syn_at_cap_rst(server):
    h = TcpHarness(max_flows=2)
    try:
        port = server.getsockname()[1]
        conns = [Peer(h, port, sport=41000 + i).connect(server) for i in range(2)]
        third = Peer(h, port, sport=42000)
        [rst] = third.syn()
        assert rst.flags & RST and h.c("flows_refused_cap") == 1
        assert len(conns) == 2
    finally:
        h.close()


# --- CONNECTING / SYN_RCVD --------------------------------------------------------------------


@pytest.mark.parametrize("v6,ws", [(False, 7), (False, None), (True, 2)])
def test_connecting_host_accepts_synack_options(v6, ws):
    h = TcpHarness()
    srv = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
    srv.bind(("::1" if v6 else "127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5)
    try:
        peer = Peer(h, srv.getsockname()[1], v6=v6, ws=ws)
        segs = peer.syn()
        srv.accept()
        [sa] = segs or peer.wait(lambda s: s.flags & SYN)
        opts = tcp_options(sa.opts)
        assert sa.flags == SYN | ACK and sa.ack == peer.isn + 1
        assert struct.unpack("!H", opts[2])[0] == 65520 - (60 if v6 else 40)  # MSS from MTU
        assert (3 in opts) == (ws is not None)  # window scale only if offered
        assert 4 not in opts and 8 not in opts  # SACK-permitted only if offered; no timestamps
        assert sa.vnet[0] & F.VNET_F_NEEDS_CSUM
    finally:
        srv.close()
        h.close()


def test_connecting_no_synack_until_host_connect_completes(h):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    try:
        for f in fillers:  # fill the accept queue: the next SYN waits for the host's retry
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
        time.sleep(0.1)
        peer = Peer(h, port)
        assert peer.syn() == []
        assert peer.recv(300) == []  # host connect() still in progress: no SYN-ACK
        listener.settimeout(1)
        accepted = []
        deadline = time.monotonic() + 5
        got = []
        while not any(s.flags & SYN for s in got) and time.monotonic() < deadline:
            try:
                accepted.append(listener.accept()[0])
            except socket.timeout:
                pass
            got += peer.recv(20)
        assert [s.flags for s in got] == [SYN | ACK]
        for a in accepted:
            a.close()
    finally:
        for f in fillers:
            f.close()
        listener.close()


def test_syn_rcvd_repeated_syn_repeats_synack(h, server):
    peer = Peer(h, server.getsockname()[1])
    segs = peer.syn()
    server.accept()
    [sa] = segs or peer.wait(lambda s: s.flags & SYN)
    [again] = peer.send(SYN, seq=peer.isn, opts=struct.pack("!BBH", 2, 4, 1460))
    assert again.flags == SYN | ACK and again.seq == sa.seq


def test_syn_rcvd_bad_ack_rst(h, server):
    peer = Peer(h, server.getsockname()[1])
    segs = peer.syn()
    server.accept()
    [sa] = segs or peer.wait(lambda s: s.flags & SYN)
    [rst] = peer.send(ACK, ack=sa.seq + 77)
    assert rst.flags == RST and rst.seq == sa.seq + 77
    assert h.c("drop_tcp_ack") == 1


def test_syn_rcvd_synack_retransmitted(h, server):
    peer = Peer(h, server.getsockname()[1])
    first = peer.syn()
    server.accept()
    first = first or peer.wait(lambda s: s.flags & SYN)
    again = peer.wait(lambda s: s.flags & SYN, timeout=3)  # initial RTO 1 s
    assert [s.seq for s in first + again if s.flags & SYN] == [first[0].seq] * 2
    assert h.c("tcp_retransmits") >= 1


def test_connecting_rst_from_namespace_aborts(h):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    try:
        peer = Peer(h, listener.getsockname()[1])
        peer.syn()
        peer.send(RST, seq=peer.isn + 1)
        assert h.c("tcp_rst_received") == 1 and h.c("flows_open_tcp") == 0
    finally:
        listener.close()


# --- ESTABLISHED -------------------------------------------------------------------------------


def test_established_data_to_host_acked_exactly(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    segs = peer.send(ACK | PSH, b"hello world")
    [ack] = segs
    assert ack.ack == peer.snd_nxt and ack.flags == ACK and ack.wnd > 0
    assert conn.recv(100) == b"hello world"
    assert h.c("tcp_bytes_up") == 11


@pytest.fixture
def hd():
    """A harness with our delayed ACK on, 2 ms as ringnet runs it."""
    harness = TcpHarness(delack_ms=2)
    yield harness
    harness.close()


def test_established_small_data_ack_rides_on_the_answer(hd, server):
    peer = Peer(hd, server.getsockname()[1])
    conn = peer.connect(server)
    # the batch ends without an ACK (the deadline, 2 ms on, is not looked at before
    # the next pass), held back for the host's answer
    assert peer.send(ACK | PSH, b"ping") == [] and hd.c("tcp_acks_delayed") == 1
    assert conn.recv(10) == b"ping"
    conn.sendall(b"pong")
    segs = peer.wait(lambda s: s.payload)
    [data] = [s for s in segs if s.payload]
    assert data.payload == b"pong" and data.ack == peer.snd_nxt  # the answer acknowledges


def test_established_small_data_acked_alone_when_no_answer_comes(hd, server):
    peer = Peer(hd, server.getsockname()[1])
    conn = peer.connect(server)
    assert peer.send(ACK | PSH, b"ping") == []
    segs = peer.wait(lambda s: s.flags == ACK and s.ack == peer.snd_nxt)
    assert all(not s.payload for s in segs) and hd.c("tcp_delack_timeouts") == 1
    assert conn.recv(10) == b"ping"


def test_established_full_segment_acked_at_once_with_delack(hd, server):
    peer = Peer(hd, server.getsockname()[1])
    conn = peer.connect(server)
    [ack] = peer.send(ACK | PSH, b"x" * peer.mss)
    assert ack.flags == ACK and ack.ack == peer.snd_nxt and hd.c("tcp_acks_delayed") == 0
    assert len(conn.recv(peer.mss, socket.MSG_WAITALL)) == peer.mss


def test_established_filled_gap_acked_at_once_with_delack(hd, server):
    peer = Peer(hd, server.getsockname()[1])
    conn = peer.connect(server)
    base = peer.snd_nxt
    [dup] = peer.send(ACK, b"world", seq=base + 6)
    assert dup.ack == base
    [ack] = peer.send(ACK, b"hello ", seq=base)  # fills the gap: never delayed
    assert ack.ack == base + 11 and hd.c("tcp_acks_delayed") == 0
    peer.snd_nxt = base + 11
    assert conn.recv(100) == b"hello world"


def test_established_host_data_to_namespace(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.sendall(b"from the host")
    segs = peer.wait(lambda s: s.payload)
    assert peer.take(segs) == b"from the host"
    seg = [s for s in segs if s.payload][0]
    assert seg.flags & ACK and seg.vnet[0] & F.VNET_F_NEEDS_CSUM
    assert seg.gso_type == F.GSO_NONE


def test_established_large_host_data_tso_frames(server):
    h = TcpHarness(mtu=1500)
    try:
        peer = Peer(h, server.getsockname()[1], wnd=65535, ws=7, mss=1460)
        conn = peer.connect(server)
        data = os.urandom(200_000)
        conn.sendall(data)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < len(data) and time.monotonic() < deadline:
            segs = peer.recv(20)
            got += peer.take(segs)
            for s in segs:
                assert len(s.payload) <= 65535 - 40
                if len(s.payload) > 1460:
                    assert s.gso_type == F.GSO_TCPV4 and s.gso_size == 1460
            if segs:
                peer.send(ACK)
        assert got == data
    finally:
        h.close()


def test_established_ack_discards_host_bytes(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.sendall(b"a" * 1000)
    data = peer.take(peer.wait(lambda s: s.payload))
    assert data == b"a" * 1000
    peer.send(ACK)
    conn.sendall(b"b" * 10)
    assert peer.take(peer.wait(lambda s: s.payload)) == b"b" * 10  # not resent from the start


def test_established_unacked_data_probed_then_rto(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.sendall(b"retransmit me")
    t0 = time.monotonic()
    first = [s for s in peer.wait(lambda s: s.payload) if s.payload]
    probe = [s for s in peer.wait(lambda s: s.payload, timeout=3) if s.payload]
    t_probe = time.monotonic() - t0
    assert probe[0].seq == first[0].seq and probe[0].payload == b"retransmit me"
    assert h.c("tcp_loss_probes") == 1 and h.c("tcp_rto_expired") == 0  # tail loss probe first
    again = [s for s in peer.wait(lambda s: s.payload, timeout=3) if s.payload]
    assert again[0].seq == first[0].seq and h.c("tcp_rto_expired") == 1  # then the RTO
    assert time.monotonic() - t0 > t_probe + 0.1
    peer.take(again)
    peer.send(ACK)
    assert peer.recv(400) == []  # acknowledged: nothing more is resent


def test_established_three_dupacks_fast_retransmit(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.sendall(b"x" * 3000)
    segs = [s for s in peer.wait(lambda s: s.payload) if s.payload]
    start = segs[0].seq
    out = []
    for _ in range(4):  # a window update, then three duplicates
        out += peer.send(ACK, ack=start, wnd=100)
    assert h.c("tcp_fast_retransmits") == 1
    assert any(s.payload and s.seq == start for s in out)


def test_established_zero_window_probe(h, server):
    peer = Peer(h, server.getsockname()[1], wnd=0)
    conn = peer.connect(server)
    conn.sendall(b"blocked")
    segs = peer.wait(lambda s: s.seq == peer.iss, timeout=3)  # probe: seq = snd_una - 1
    assert not any(s.payload for s in segs)
    assert h.c("tcp_window_probes") >= 1
    out = peer.send(ACK, wnd=100)
    out += peer.recv(30)
    assert peer.take(out) == b"blocked"


def test_established_out_of_order_dupack_then_held(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    base = peer.snd_nxt
    [dup] = peer.send(ACK, b"world", seq=base + 6)
    assert dup.ack == base  # duplicate ACK asks for the gap, at once
    assert h.c("tcp_segments_in") >= 3 and h.c("tcp_ooo_held") == 5
    [ack] = peer.send(ACK, b"hello ", seq=base)
    assert ack.ack == base + 11
    peer.snd_nxt = base + 11
    assert conn.recv(100) == b"hello world"


def test_syn_rcvd_sack_permitted_answered(h, server):
    peer = Peer(h, server.getsockname()[1], sack=True)
    segs = peer.syn()
    server.accept()
    [sa] = segs or peer.wait(lambda s: s.flags & SYN)
    assert tcp_options(sa.opts)[4] == b""


def test_established_out_of_order_blocks_reported_with_sack(h, server):
    peer = Peer(h, server.getsockname()[1], sack=True)
    conn = peer.connect(server)
    base = peer.snd_nxt
    [dup] = peer.send(ACK, b"C" * 10, seq=base + 20)
    assert dup.ack == base and tcp_options(dup.opts)[5] == struct.pack("!II", base + 20, base + 30)
    [dup] = peer.send(ACK, b"E" * 10, seq=base + 40)  # a second block, reported first
    assert tcp_options(dup.opts)[5] == struct.pack("!IIII", base + 40, base + 50, base + 20,
                                                   base + 30)
    [dup] = peer.send(ACK, b"B" * 10, seq=base + 10)  # joins the first block
    assert tcp_options(dup.opts)[5] == struct.pack("!IIII", base + 10, base + 30, base + 40,
                                                   base + 50)
    [ack] = peer.send(ACK, b"A" * 10, seq=base)
    assert ack.ack == base + 30 and tcp_options(ack.opts)[5] == struct.pack("!II", base + 40,
                                                                           base + 50)
    [ack] = peer.send(ACK, b"D" * 10, seq=base + 30)
    assert ack.ack == base + 50 and 5 not in tcp_options(ack.opts)
    peer.snd_nxt = base + 50
    got = b""
    while len(got) < 50:
        got += conn.recv(100)
    assert got == b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10 + b"E" * 10


def test_established_duplicate_data_acked_not_resent(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    base = peer.snd_nxt
    peer.send(ACK, b"once")
    [ack] = peer.send(ACK, b"once", seq=base)
    assert ack.ack == base + 4 and h.c("drop_tcp_old") == 1
    conn.settimeout(0.3)
    assert conn.recv(100) == b"once"
    with pytest.raises(socket.timeout):
        conn.recv(100)


def test_established_overlapping_segment_trimmed(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    base = peer.snd_nxt
    peer.send(ACK, b"abc")
    peer.send(ACK, b"bcdef", seq=base + 1)
    peer.snd_nxt = base + 6
    got = b""
    while len(got) < 6:
        got += conn.recv(100)
    assert got == b"abcdef"


def test_established_ack_for_unsent_data_dropped(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)  # noqa: F841 (kept open: closing it would send a FIN)
    [ack] = peer.send(ACK, ack=peer.rcv_nxt + 5000)
    assert ack.ack == peer.snd_nxt and h.c("drop_tcp_ack") == 1
    assert h.c("flows_open_tcp") == 1


def test_established_rst_exact_resets_host(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    assert peer.send(RST) == []
    assert h.c("tcp_rst_received") == 1 and h.c("flows_open_tcp") == 0
    with pytest.raises(ConnectionResetError):
        conn.recv(10)


def test_established_rst_in_window_challenge_ack(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)  # noqa: F841 (kept open: closing it would send a FIN)
    [ack] = peer.send(RST, seq=peer.snd_nxt + 10)
    assert ack.flags == ACK and ack.ack == peer.snd_nxt
    assert h.c("drop_tcp_rst") == 1 and h.c("tcp_challenge_acks") == 1
    assert h.c("flows_open_tcp") == 1


def test_established_rst_outside_window_dropped_silently(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)  # noqa: F841 (kept open: closing it would send a FIN)
    assert peer.send(RST, seq=peer.snd_nxt + 0x40000000) == []
    assert h.c("drop_tcp_rst") == 1 and h.c("flows_open_tcp") == 1


def test_established_syn_challenge_ack(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)  # noqa: F841 (kept open: closing it would send a FIN)
    [ack] = peer.send(SYN, seq=peer.snd_nxt + 1000, advance=False)
    assert ack.flags == ACK and ack.ack == peer.snd_nxt
    assert h.c("drop_tcp_syn") == 1 and h.c("flows_open_tcp") == 1


def test_established_data_beyond_window_acked_and_dropped(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)  # noqa: F841 (kept open: closing it would send a FIN)
    [ack] = peer.send(ACK, b"far", seq=peer.snd_nxt + 0x20000000, advance=False)
    assert ack.ack == peer.snd_nxt and h.c("drop_tcp_window") == 1


def test_established_host_reset_sends_rst(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    segs = peer.wait(lambda s: s.flags & RST)
    [rst] = [s for s in segs if s.flags & RST]
    assert rst.seq == peer.rcv_nxt
    assert h.c("flows_open_tcp") == 0


def test_established_idle_timeout_resets_both(server):
    h = TcpHarness(idle_ms=300)
    try:
        peer = Peer(h, server.getsockname()[1])
        conn = peer.connect(server)
        segs = peer.wait(lambda s: s.flags & RST, timeout=3)
        assert any(s.flags & RST for s in segs)
        assert h.c("tcp_idle_timeouts") == 1 and h.c("flows_open_tcp") == 0
        with pytest.raises(ConnectionResetError):
            conn.recv(10)
    finally:
        h.close()


# --- closing ----------------------------------------------------------------------------------


def test_established_fin_shuts_host_write(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    [ack] = peer.send(ACK | FIN, b"last")
    assert ack.ack == peer.snd_nxt  # data and FIN acknowledged
    assert conn.recv(10) == b"last" and conn.recv(10) == b""  # EOF on the host
    conn.sendall(b"reply after half-close")
    assert peer.take(peer.wait(lambda s: s.payload)) == b"reply after half-close"


def test_close_wait_host_eof_sends_fin_then_closes(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    peer.send(ACK | FIN)
    conn.close()
    segs = peer.wait(lambda s: s.flags & FIN)
    peer.take(segs)
    assert h.c("flows_open_tcp") == 1
    assert peer.send(ACK) == []
    assert h.c("flows_open_tcp") == 0 and h.c("tcp_closed") == 1


def test_established_host_eof_fin_then_namespace_fin_time_wait(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.shutdown(socket.SHUT_WR)
    segs = peer.wait(lambda s: s.flags & FIN)
    peer.take(segs)
    peer.send(ACK)  # our FIN acknowledged
    [ack] = peer.send(ACK | PSH, b"still talking")  # half-close: the namespace may send
    assert conn.recv(100) == b"still talking"
    [ack] = peer.send(ACK | FIN)
    assert ack.ack == peer.snd_nxt and h.c("flows_open_tcp") == 1  # TIME_WAIT, no fd
    assert conn.recv(10) == b""
    [again] = peer.send(ACK | FIN, seq=peer.snd_nxt - 1)  # our ACK was lost
    assert again.ack == peer.snd_nxt
    peer.recv(1200)
    assert h.c("flows_open_tcp") == 0


def test_time_wait_new_syn_reuses_tuple(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    conn.shutdown(socket.SHUT_WR)
    peer.take(peer.wait(lambda s: s.flags & FIN))
    peer.send(ACK)
    peer.send(ACK | FIN)
    again = Peer(h, server.getsockname()[1], isn=0x50000000)
    again.connect(server)
    assert h.c("tcp_established") == 2


def test_fin_timeout_resets(server):
    h = TcpHarness(fin_ms=300)
    try:
        peer = Peer(h, server.getsockname()[1])
        peer.connect(server)
        peer.send(ACK | FIN)
        peer.wait(lambda s: s.flags & RST, timeout=3)
        assert h.c("tcp_fin_timeouts") == 1 and h.c("flows_open_tcp") == 0
    finally:
        h.close()


# --- bad input on a live flow -------------------------------------------------------------------


def test_established_malformed_segments_counted_flow_unaffected(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    bad = {
        "drop_tcp_header": [peer.frame(ACK, doff=4), peer.frame(ACK, b"xy", doff=15)],
        "drop_tcp_options": [peer.frame(ACK, opts=b"\x02\x08\x05\xb4")],
        "drop_tcp_flags": [peer.frame(SYN | FIN), peer.frame(SYN | RST), peer.frame(0),
                           peer.frame(FIN | PSH)],
        "drop_tcp_csum": [peer.frame(ACK, b"data")[:-1] + b"X"],
    }
    for frames in bad.values():
        assert h.push(*frames) == len(frames)
        lib.rn_worker_poll(h.w)
    for name, frames in bad.items():
        assert h.c(name) == len(frames), name
    assert h.pop() == []
    peer.send(ACK | PSH, b"still fine")
    assert conn.recv(100) == b"still fine"


def test_partial_checksum_accepted_unverified(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    frm = bytearray(peer.frame(ACK | PSH, b"offloaded"))
    # NEEDS_CSUM: the field holds only the pseudo-header sum; the payload is not summed
    frm[:12] = F.vnet(flags=F.VNET_F_NEEDS_CSUM, csum_start=20, csum_offset=16)
    frm[12 + 20 + 16:12 + 20 + 18] = struct.pack("!H", F.pseudo4(GUEST4, GW4, 6, 20 + 9))
    h.push(bytes(frm))
    lib.rn_worker_poll(h.w)
    assert conn.recv(100) == b"offloaded"
    frm[:12] = F.vnet(flags=F.VNET_F_NEEDS_CSUM, csum_start=20, csum_offset=6)
    h.push(bytes(frm))
    lib.rn_worker_poll(h.w)
    assert h.c("drop_tcp_csum") == 1


def test_every_frame_has_one_outcome(h, server):
    peer = Peer(h, server.getsockname()[1])
    conn = peer.connect(server)
    for i in range(20):
        peer.send(ACK, b"x" * i)
    peer.send(RST, seq=peer.snd_nxt + 5, advance=False)
    peer.send(ACK, ack=peer.rcv_nxt + 99, advance=False)
    del conn
    total = sum(h.c(n) for n in DATA_OUTCOMES)
    assert total == h.c("frames_in")


def test_free_closes_every_host_socket(server):
    before = len(os.listdir("/proc/self/fd"))
    h = TcpHarness()
    peers = [Peer(h, server.getsockname()[1], sport=43000 + i) for i in range(5)]
    conns = [p.connect(server) for p in peers]
    assert len(os.listdir("/proc/self/fd")) >= before + 10
    h.close()
    for c in conns:
        c.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_time_wait_evicted_at_cap(server):
    h = TcpHarness(max_flows=2)
    try:
        port = server.getsockname()[1]
        first = Peer(h, port, sport=44000)
        conn = first.connect(server)
        conn.shutdown(socket.SHUT_WR)  # the host closes first...
        first.take(first.wait(lambda s: s.flags & FIN))
        first.send(ACK)
        first.send(ACK | FIN)  # ...so the flow lingers in TIME_WAIT, without a socket
        second = Peer(h, port, sport=44001)
        keep = second.connect(server)
        assert h.c("flows_open_tcp") == 2
        third = Peer(h, port, sport=44002)
        keep3 = third.connect(server)  # at the cap: the TIME_WAIT flow makes room
        assert h.c("flows_refused_cap") == 0 and h.c("flows_open_tcp") == 2
        fourth = Peer(h, port, sport=44003)
        assert [s.flags & RST for s in fourth.syn() if s.dport == 44003] == [RST]
        assert h.c("flows_refused_cap") == 1  # nothing left to evict
        del keep, keep3
    finally:
        h.close()


UNREACHABLE = r'''
import struct, sys
sys.path.insert(0, {tests!r})
import frames as F
from test_tcp_input import Peer, TcpHarness, SYN
from ringnet._ringnet_c import lib
h = TcpHarness(confined=False)  # safe: this namespace has nothing but lo
out = []
for v6, dst in ((False, "192.0.2.1"), (True, "2001:db8::1")):
    peer = Peer(h, 80, v6=v6)
    peer.dst = dst
    h.push(peer.frame(SYN, opts=b"\x02\x04\x05\xb4"))
    lib.rn_worker_poll(h.w)
    frames = h.pop()
    p = F.parse(frames[0])
    assert F.l4_csum_ok(p), "ICMP checksum"
    quoted_seq = struct.unpack("!I", p.payload[8 + (40 if v6 else 20) + 4:][:4])[0]
    out.append((p.version, p.proto, p.payload[0], p.payload[1], p.src == F.addr(dst),
                quoted_seq == peer.isn))
print(out, h.c("tcp_icmp_sent"), h.c("flows_open_tcp"))
h.close()
'''


def test_connecting_unreachable_destination_icmp_error():
    """In a network namespace of its own with nothing but lo (so no packet can leave), a
    SYN to a routable address fails to connect at once: ICMP destination unreachable."""
    import subprocess
    import sys as _sys
    code = UNREACHABLE.format(tests=os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(["unshare", "-Urn", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"',
                        _sys.executable, code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(_sys.path)))
    if r.returncode and "unshare" in r.stderr and "Operation not permitted" in r.stderr:
        pytest.skip("no user namespaces here")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("]")[0] + "]" == str([(4, F.PROTO_ICMP, 3, 0, True, True),
                                                  (6, F.PROTO_ICMPV6, 1, 0, True, True)])
    assert r.stdout.split("]")[1].split() == ["2", "0"]


# --- timestamps (RFC 7323) ----------------------------------------------------------------------


def test_syn_rcvd_timestamps_answered_only_if_offered(h, server):
    peer = Peer(h, server.getsockname()[1], sack=True, ts=1000)
    segs = peer.syn()
    server.accept()
    [sa] = segs or peer.wait(lambda s: s.flags & SYN)
    opts = tcp_options(sa.opts)
    assert set(opts) == {2, 3, 4, 8} and len(sa.opts) <= 40
    assert ts_of(sa)[1] == 1000  # TSecr echoes the SYN's TSval
    plain = Peer(h, server.getsockname()[1], sport=40001)
    conn = plain.connect(server)
    conn.sendall(b"no timestamps")
    segs = [s for s in plain.wait(lambda s: s.payload) if s.payload]
    assert segs[0].opts == b""  # a flow without them carries none


def test_established_timestamps_on_every_segment_mss_less_12(server):
    h = TcpHarness(mtu=1500)
    try:
        peer = Peer(h, server.getsockname()[1], wnd=65535, ws=7, mss=1460, ts=5000)
        conn = peer.connect(server)
        peer.tsval += 1
        [ack] = peer.send(ACK | PSH, b"up")  # covers the last ACK sent: its TSval is echoed
        assert ts_of(ack)[1] == 5001 and conn.recv(10) == b"up"
        data = os.urandom(100_000)
        conn.sendall(data)
        got, last = b"", ts_of(ack)[0]
        deadline = time.monotonic() + 5
        while len(got) < len(data) and time.monotonic() < deadline:
            segs = peer.recv(20)
            got += peer.take(segs)
            for s in segs:
                tsval, tsecr = ts_of(s)  # every segment carries them
                assert tsecr == 5001 and (tsval - last) & 0xFFFFFFFF < 1 << 31  # never back
                last = tsval
                assert s.opts[:4] == b"\x01\x01\x08\x0a"
                if len(s.payload) > 1448:
                    assert s.gso_type == F.GSO_TCPV4 and s.gso_size == 1460 - 12
                    assert len(s.payload) <= 65535 - 20 - 20 - 12
                else:
                    assert 20 + 20 + 12 + len(s.payload) <= 1500  # one frame within the MTU
            if segs:
                peer.send(ACK)
        assert got == data
    finally:
        h.close()


def test_established_timestamps_leave_room_for_three_sack_blocks(h, server):
    peer = Peer(h, server.getsockname()[1], sack=True, ts=1)
    conn = peer.connect(server)
    base = peer.snd_nxt
    for i in range(4):  # four blocks held, with gaps between them
        [dup] = peer.send(ACK, b"x" * 10, seq=base + 20 + 20 * i)
    assert len(dup.opts) <= 40 and ts_of(dup)[1] == 1
    blocks = tcp_options(dup.opts)[5]
    assert len(blocks) == 3 * 8  # 12 bytes of timestamps + 4 + 3 * 8 = 40
    assert blocks[:8] == struct.pack("!II", base + 80, base + 90)  # the latest first
    assert h.c("tcp_ooo_held") == 40
    del conn


def test_established_paws_old_timestamp_dropped_and_acked(h, server):
    peer = Peer(h, server.getsockname()[1], ts=0x7FFFFFF0)
    conn = peer.connect(server)
    peer.tsval = 0x80000010  # across the sign boundary: newer
    [ack] = peer.send(ACK | PSH, b"new")
    assert ts_of(ack)[1] == 0x80000010
    peer.tsval = 0x80000000  # older than ts_recent
    [ack] = peer.send(ACK | PSH, b"old", advance=False)
    assert ack.flags == ACK and ack.ack == peer.snd_nxt  # answered, not taken
    assert h.c("drop_tcp_paws") == 1 and ts_of(ack)[1] == 0x80000010
    peer.tsval = 0x80000011
    peer.send(ACK | PSH, b"!")
    conn.settimeout(5)
    got = b""
    while len(got) < 4:
        got += conn.recv(10)
    assert got == b"new!"
    peer.tsval = 0x80000000  # a RST is exempt from PAWS
    peer.send(RST)
    assert h.c("tcp_rst_received") == 1 and h.c("drop_tcp_paws") == 1


def test_established_segment_without_timestamps_accepted(h, server):
    peer = Peer(h, server.getsockname()[1], ts=100)
    conn = peer.connect(server)
    peer.send(ACK | PSH, b"plain", opts=b"\x01\x01\x01\x01")  # no TS option: as Linux, taken
    conn.settimeout(5)
    assert conn.recv(10) == b"plain"


def test_established_malformed_timestamps_option(h, server):
    peer = Peer(h, server.getsockname()[1], ts=100)
    conn = peer.connect(server)
    peer.tsval = 50  # any TSval read from these would be old: PAWS would drop the segment
    short = b"\x08\x08" + struct.pack("!I", 50) + b"\x00\x00"  # length 8: ignored
    long = b"\x08\x0c" + struct.pack("!II", 50, 0) + b"\x00\x00" + b"\x00" * 4  # length 12
    peer.send(ACK | PSH, b"a", opts=short)
    peer.send(ACK | PSH, b"b", opts=long)
    assert h.c("drop_tcp_paws") == 0
    overrun = [peer.frame(ACK, opts=b"\x01\x01\x08\x0a" + struct.pack("!I", 50)),  # 10 > 6 left
               peer.frame(ACK, opts=b"\x01\x01\x01\x08")]  # kind 8 at the header's last byte
    assert h.push(*overrun) == 2
    lib.rn_worker_poll(h.w)
    assert h.c("drop_tcp_options") == 2 and h.c("drop_tcp_paws") == 0
    peer.tsval = 50  # well formed and old: PAWS
    peer.send(ACK | PSH, b"c", advance=False)
    assert h.c("drop_tcp_paws") == 1
    conn.settimeout(5)
    got = b""
    while len(got) < 2:
        got += conn.recv(10)
    assert got == b"ab"
