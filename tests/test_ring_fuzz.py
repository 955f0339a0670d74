"""Fuzzing ring to_worker itself: a hostile producer against the worker's consumer path.

tests/fuzz/fuzz_ring.c lets libFuzzer play the namespace side of a worker's shared
memory: it writes records, record headers with any length and flags, raw words, PAD
records and head values straight into ring to_worker (and tail values into to_ns,
which may start nearly full), and runs rn_worker_poll() between them. It is built like tests/test_tcp_fuzz.py's
harness (clang, ASan + UBSan + libFuzzer, the shipped csrc/*.c, warnings as errors),
seeded with valid ring images (frames that wrap the data area, indices that wrap
2**32), and run for a fixed number of inputs from a fixed seed (RINGNET_RING_FUZZ_RUNS,
150,000 by default, about half a minute here; RINGNET_FUZZ_SEED, 1). A crash, a
sanitizer report, a hang, or a corrupted ring the worker fails to report with -EPROTO
(or keeps consuming after) fails the test with libFuzzer's report.
"""

from __future__ import annotations

import os
import struct

import frames as F
from test_tcp_fuzz import ACK, PSH, SYN, build_fuzzer, run_fuzzer, tcp

FUZZ_RUNS = int(os.environ.get("RINGNET_RING_FUZZ_RUNS", "150000"))
RING = 512 * 1024

# Operation codes of fuzz_ring.c's script
OP_FRAME, OP_HDR, OP_RAW, OP_PUBLISH, OP_HEAD, OP_POLL, OP_NS_TAIL, OP_PAD = range(8)


def op_frame(frame: bytes) -> bytes:
    return struct.pack("<BH", OP_FRAME, len(frame)) + frame


def publish() -> bytes:
    return bytes([OP_PUBLISH, 0])


def poll() -> bytes:
    return bytes([OP_POLL])


def ns_tail(unconsumed: int) -> bytes:
    return struct.pack("<BI", OP_NS_TAIL, unconsumed)


def ping(v6: bool = False) -> bytes:
    if v6:
        return F.echo6_frame("fd00::100", "fd00::2", 7, 1, b"ring")
    return F.echo4_frame("10.0.2.100", "10.0.2.2", 7, 1, b"ring")


def seeds() -> list[bytes]:
    """Valid ring images: start index, frames, publication, polls."""
    frames = [ping(), ping(True), tcp(SYN, opts=b"\x02\x04\x05\xb4"), tcp(ACK | PSH, b"x" * 1500, v6=True)]
    body = b"".join(op_frame(f) for f in frames)
    out = []
    # from index 0; near the end of the data area (frames wrap behind a PAD record);
    # near 2**32 (the free-running indices wrap)
    # to_ns drained by the namespace after each poll
    for start in (0, RING - 256, 2**32 - 512 & ~15):
        out.append(struct.pack("<II", start, 0) + body + publish() + poll() + ns_tail(0) +
                   body + publish() + poll() + ns_tail(0))
    # published in two steps, the second frame first withheld; to_ns starts nearly
    # full, so the worker reads the namespace's tail to find room for the replies
    out.append(struct.pack("<II", RING - 64, RING - 96) + op_frame(ping()) + op_frame(ping(True)) +
               bytes([OP_PUBLISH, 5]) + poll() + ns_tail(0) + publish() + poll())
    return out


def test_fuzz_ring_hostile_producer(tmp_path):
    binary = build_fuzzer("fuzz_ring", tmp_path)
    report = run_fuzzer(binary, seeds(), tmp_path, FUZZ_RUNS, max_len=8192, timeout_s=30)
    assert f"stat::number_of_executed_units: {FUZZ_RUNS}" in report
