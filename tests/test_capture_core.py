"""The capture's C side driven in-process (csrc/capture.c): a worker on test rings with a
capture mapping attached, frames pushed as the namespace would, the capture drained as
the orchestrator does. Runs under ASan and UBSan in scripts/test.sh's sanitized run.
"""

from __future__ import annotations

import mmap
import socket
import struct

import pytest

from ringnet._ringnet_c import ffi, lib

import frames as F
from test_worker_input import GUEST4, GW4, Harness, params

BUF = 1 << 20


def blocks(data: bytes) -> list[dict]:
    """The Enhanced Packet Blocks (interface 7) in ``data``, checked, as dicts."""
    out, off = [], 0
    while off < len(data):
        btype, total, ifid, hi, lo, caplen, orig = struct.unpack_from("=7I", data, off)
        assert (btype, ifid) == (6, 7) and total % 4 == 0
        pad = (caplen + 3) // 4 * 4
        assert data[off + 28 + caplen: off + 28 + pad] == bytes(pad - caplen)
        code, olen, flags, end, total2 = struct.unpack_from("=HHIII", data, off + 28 + pad)
        assert (code, olen, end, total2) == (2, 4, 0, total)
        out.append({"dir": flags, "caplen": caplen, "orig": orig, "ts": hi << 32 | lo,
                    "data": data[off + 28: off + 28 + caplen]})
        off += total
    assert off == len(data)
    return out


class CapMap:
    """A capture mapping as the orchestrator sets it up, with its reader."""

    def __init__(self) -> None:
        self.size = lib.rn_capture_shm_size()
        self.mm = mmap.mmap(-1, self.size)
        self.base = ffi.from_buffer(self.mm)
        assert lib.rn_capture_shm_init(self.base, self.size) == 0
        self.reader = ffi.new("struct rn_cap_reader *")
        assert lib.rn_capture_reader_init(self.reader, self.base, self.size) == 0
        self.buf = ffi.new("uint8_t[]", BUF)
        self.nframes = ffi.new("uint64_t *")

    def packets(self) -> list[dict]:
        """Drain the packet ring into a buffer: each Enhanced Packet Block's fields."""
        out = []
        while True:
            n = lib.rn_capture_drain_pcapng(self.reader, self.buf, BUF, 7, self.nframes)
            assert n >= 0
            if not n:
                return out
            got = blocks(bytes(ffi.buffer(self.buf, n)))
            assert len(got) == self.nframes[0]
            out += got

    def packets_fd(self, tmp_path) -> list[dict]:
        """Drain the packet ring into a file with writev(), as the writer does."""
        nbytes = ffi.new("uint64_t *")
        with open(tmp_path / "drain", "w+b") as f:
            assert lib.rn_capture_drain_fd(self.reader, f.fileno(), 7, self.nframes, nbytes) == 0
            f.seek(0)
            data = f.read()
        assert len(data) == nbytes[0]
        got = blocks(data)
        assert len(got) == self.nframes[0]
        return got

    def events(self) -> list:
        evs = ffi.new("struct rn_cap_event[]", 64)
        n = lib.rn_capture_drain_events(self.reader, evs, 64)
        assert n >= 0
        return [ffi.new("struct rn_cap_event *", evs[i]) for i in range(n)]   # copies

    def close(self) -> None:
        ffi.release(self.base)
        self.mm.close()


@pytest.fixture
def hc():
    cap = CapMap()
    with Harness() as h:
        assert lib.rn_capture_attach(h.w, cap.base, cap.size) == 0
        yield h, cap
    cap.close()


def test_both_directions_at_most_snaplen(hc):
    h, cap = hc
    assert lib.rn_capture_set(h.w, 64, 0) == 0
    req = F.echo4_frame(GUEST4, GW4, data=b"p" * 200)
    (reply,) = h.exchange(req)
    out, back = cap.packets()
    assert (out["dir"], back["dir"]) == (2, 1)   # epb_flags: outbound, then inbound
    assert out["orig"] == len(req) - 12 and back["orig"] == len(reply) - 12
    assert out["caplen"] == back["caplen"] == 64
    assert out["data"] == req[12:76] and back["data"] == reply[12:76]
    assert 0 < out["ts"] <= back["ts"]
    c = h.counters()
    assert (c["capture_frames"], c["capture_bytes"], c["capture_drops"]) == (2, 128, 0)


def test_written_with_writev_as_in_a_buffer(hc, tmp_path):
    h, cap = hc
    assert lib.rn_capture_set(h.w, 65, 0) == 0   # odd: each block's data is padded
    reqs = [F.echo4_frame(GUEST4, GW4, seq=i, data=b"w" * (i * 7)) for i in range(300)]
    replies = []
    for i in range(0, len(reqs), 25):
        assert h.push(*reqs[i:i + 25]) == 25 and h.poll() == 25
        replies += h.pop()
    got = cap.packets_fd(tmp_path)   # 600 frames: several writev() batches
    assert [p["data"] for p in got[0::2]] == [r[12:12 + 65] for r in reqs]
    assert [p["data"] for p in got[1::2]] == [r[12:12 + 65] for r in replies]
    assert [p["dir"] for p in got] == [2, 1] * 300
    assert all(p["orig"] == len(f) - 12 for p, f in zip(got[0::2], reqs))
    assert cap.packets_fd(tmp_path) == []


def test_off_captures_nothing_and_bad_snaplens_are_refused(hc):
    h, cap = hc
    h.exchange(F.echo4_frame(GUEST4, GW4))
    assert cap.packets() == [] and h.counters()["capture_frames"] == 0
    for bad in (1, lib.RN_CAP_SNAPLEN_MIN - 1, lib.RN_CAP_SNAPLEN_MAX + 1):
        assert lib.rn_capture_set(h.w, bad, 0) == -22
    assert lib.rn_capture_attach(h.w, cap.base, cap.size) == -22   # one mapping per worker


def test_malformed_frames_are_captured_as_they_came(hc):
    h, cap = hc
    assert lib.rn_capture_set(h.w, lib.RN_CAP_SNAPLEN_MAX, 0) == 0
    junk = bytes(12) + b"\x45junk!!"
    h.exchange(junk)
    h.exchange(bytes(12))   # nothing behind the vnet header: nothing to capture
    (p,) = cap.packets()
    assert p["data"] == junk[12:] and p["orig"] == len(junk) - 12
    assert h.counters()["drop_short"] == 2


def test_a_full_ring_drops_and_counts(hc):
    h, cap = hc
    assert lib.rn_capture_set(h.w, lib.RN_CAP_SNAPLEN_MAX, 0) == 0
    req = F.echo4_frame(GUEST4, GW4, data=b"f" * 1400)
    sent = 0
    while h.counters()["capture_drops"] == 0:
        assert sent < 100_000, "the capture ring never filled"
        n = h.push(*[req] * 64)
        assert h.poll() == n
        h.pop()
        sent += n
    c = h.counters()
    assert c["icmp_echo_replies"] == sent   # the traffic went on: every request answered
    got = cap.packets()
    assert len(got) == c["capture_frames"] and c["capture_frames"] + c["capture_drops"] == 2 * sent
    assert lib.rn_capture_set(h.w, 0, 0) == 0


def test_flow_events_open_and_close():
    cap = CapMap()
    p = params()
    p.allow_host_loopback = 1   # the gateway is host loopback: a real flow
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    try:
        with Harness(p=p) as h:
            assert lib.rn_capture_attach(h.w, cap.base, cap.size) == 0
            assert lib.rn_capture_set(h.w, 0, 1) == 0
            h.exchange(F.frame(F.ipv4(GUEST4, GW4, F.PROTO_UDP,
                                      F.udp(GUEST4, GW4, 40000, port, b"d" * 33))))
            assert srv.recv(100) == b"d" * 33
            opens = cap.events()
            lib.rn_worker_free(h.w)   # closes the flow: reason "shutdown"
            h.w = ffi.NULL
            closes = cap.events()
            assert (h.counters()["flowlog_events"], h.counters()["flowlog_drops"]) == (2, 0)
    finally:
        srv.close()
        cap.close()
    (o,), (c,) = opens, closes
    assert (o.kind, c.kind) == (lib.RN_CAP_EV_OPEN, lib.RN_CAP_EV_CLOSE)
    for e in (o, c):
        assert (e.family, e.proto, e.sport, e.dport) == (4, 17, 40000, port)
        assert bytes(e.saddr)[:4] == F.addr(GUEST4) and bytes(e.daddr)[:4] == F.addr(GW4)
        assert e.rule == lib.RN_CAP_NO_RULE
    assert (c.bytes_up, c.pkts_up, c.bytes_down, c.pkts_down) == (33, 1, 0, 0)
    assert ffi.string(lib.rn_flow_end_name(c.end)) == b"shutdown"
    assert c.opened_ns <= c.ts_ns and o.ts_ns <= c.ts_ns
