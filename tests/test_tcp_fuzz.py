"""Fuzzing the worker's frame intake and TCP input path with libFuzzer, under ASan and UBSan.

tests/fuzz/fuzz_worker.c is built with clang (Debian packages clang and
libclang-rt-14-dev, which scripts/setup-test-env.sh installs) together with every
csrc/*.c file of the shipped core, with the warnings of the test build as errors, seeded
with a few valid TCP conversations (with and without timestamps), and run for a fixed
number of inputs from a fixed random seed (RINGNET_FUZZ_RUNS, 500,000 by default, under a
minute here; RINGNET_FUZZ_SEED, 1), not for a time: a run does the same work on any
machine and a failure can be replayed. Any crash, sanitizer report, accounting error or
malformed output frame fails the test, with libFuzzer's report and the crashing input's
path in the message.
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess

import pytest

import frames as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_RUNS = int(os.environ.get("RINGNET_FUZZ_RUNS", "500000"))
FUZZ_SEED = int(os.environ.get("RINGNET_FUZZ_SEED", "1"))
# only turns a hung fuzzer into a failure
FUZZ_HANG_S = 3600

FIX, POLL, HOST, RELACK, PARTIAL, TSO = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def clang_fuzzer() -> str:
    """Path of clang if it can build libFuzzer targets, else skip with the reason."""
    clang = shutil.which("clang")
    if not clang:
        pytest.skip("clang is not installed (scripts/setup-test-env.sh installs it)")
    r = subprocess.run([clang, "-print-file-name=libclang_rt.fuzzer-x86_64.a"],
                       capture_output=True, text=True)
    lib = r.stdout.strip()
    found = os.path.isabs(lib) and os.path.exists(lib)
    if not found and not glob.glob("/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a"):
        pytest.skip("the libFuzzer runtime is missing (Debian: libclang-rt-14-dev)")
    return clang


def record(mode: int, frame: bytes) -> bytes:
    return struct.pack("<BH", mode, len(frame)) + frame


def tcp(flags: int, payload: bytes = b"", seq: int = 1000, ack: int = 0, opts: bytes = b"",
        v6: bool = False) -> bytes:
    src, dst = ("fd00::100", "fd00::2") if v6 else ("10.0.2.100", "10.0.2.2")
    t = struct.pack("!HHIIBBHHH", 40000, 80, seq, ack, (20 + len(opts)) // 4 << 4, flags,
                    65535, 0, 0) + opts + payload
    pkt = F.ipv6(src, dst, 6, t) if v6 else F.ipv4(src, dst, 6, t)
    return F.frame(pkt)


def ts(val: int) -> bytes:
    """NOP, NOP, timestamps option (RFC 7323) with TSval ``val`` and TSecr 0."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", val, 0)


def seeds() -> list[bytes]:
    out = []
    for v6 in (False, True):
        syn = tcp(SYN, opts=b"\x02\x04\x05\xb4\x01\x03\x03\x07", v6=v6)
        conv = [record(FIX | POLL | HOST, syn), record(FIX | POLL | RELACK, tcp(ACK, seq=1001, v6=v6))]
        conv += [record(FIX | POLL | RELACK, tcp(ACK | PSH, b"hello", seq=1001, v6=v6))]
        conv += [record(FIX | POLL | HOST | RELACK, tcp(ACK, b"x" * 3000, seq=1006, v6=v6))]
        conv += [record(FIX | POLL | PARTIAL | RELACK, tcp(ACK, b"y" * 100, seq=4006, v6=v6))]
        conv += [record(FIX | POLL | TSO | RELACK, tcp(ACK, b"z" * 4000, seq=4106, v6=v6))]
        conv += [record(FIX | POLL | HOST | RELACK | 0x40, tcp(ACK | FIN, seq=8106, v6=v6))]
        conv += [record(FIX | POLL | RELACK, tcp(RST, seq=8107, v6=v6))]
        out.append(b"".join(conv))
        out.append(record(FIX | POLL, syn) + record(POLL, tcp(ACK, seq=5, ack=7, v6=v6)))
        # timestamps (RFC 7323) offered with SACK-permitted, then on every segment: rising
        # TSvals, one old one (PAWS), one segment without them
        syn_ts = tcp(SYN, opts=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + struct.pack("!II", 100, 0) +
                     b"\x01\x03\x03\x07", v6=v6)
        conv = [record(FIX | POLL | HOST, syn_ts),
                record(FIX | POLL | RELACK, tcp(ACK, seq=1001, opts=ts(101), v6=v6)),
                record(FIX | POLL | RELACK, tcp(ACK | PSH, b"hello", seq=1001, opts=ts(102), v6=v6)),
                record(FIX | POLL | RELACK, tcp(ACK | PSH, b"old", seq=1006, opts=ts(50), v6=v6)),
                record(FIX | POLL | TSO | RELACK, tcp(ACK, b"z" * 4000, seq=1006, opts=ts(103), v6=v6)),
                record(FIX | POLL | RELACK, tcp(ACK, b"w" * 10, seq=5006, v6=v6)),
                record(FIX | POLL | HOST | RELACK | 0x40, tcp(ACK | FIN, seq=5016, opts=ts(104), v6=v6))]
        out.append(b"".join(conv))
    return out


def build_fuzzer(harness: str, tmp_path) -> str:
    """Build tests/fuzz/``harness``.c with every shipped csrc/*.c file as a libFuzzer
    target (clang, ASan + UBSan, the test build's warnings as errors); returns its path."""
    clang = clang_fuzzer()
    binary = str(tmp_path / harness)
    srcs = sorted(p for p in glob.glob(os.path.join(ROOT, "csrc", "*.c"))
                  if os.path.basename(p) != "ringtest.c")      # test-only, not fuzzed
    r = subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                        "-fno-sanitize-recover=undefined", "-D_GNU_SOURCE", "-std=gnu11",
                        "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Werror", "-I", os.path.join(ROOT, "csrc"),
                        os.path.join(ROOT, "tests", "fuzz", f"{harness}.c"), *srcs,
                        "-o", binary, "-lpthread"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return binary


def run_fuzzer(binary: str, seeds: list[bytes], tmp_path, runs: int, max_len: int,
               timeout_s: int) -> str:
    """Run ``binary`` for ``runs`` inputs from FUZZ_SEED over a corpus of ``seeds``; fail
    on any crash, sanitizer report or input slower than ``timeout_s``. Returns
    libFuzzer's report (stderr)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, s in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(s)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    r = subprocess.run([binary, f"-runs={runs}", f"-seed={FUZZ_SEED}",
                        f"-max_len={max_len}", "-rss_limit_mb=2048", f"-timeout={timeout_s}",
                        "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus)],
                       capture_output=True, text=True, env=env, timeout=FUZZ_HANG_S)
    crashes = os.listdir(artifacts)
    assert r.returncode == 0 and not crashes, (crashes, r.stderr[-6000:])
    return r.stderr


def test_fuzz_worker_tcp_input(tmp_path):
    binary = build_fuzzer("fuzz_worker", tmp_path)
    report = run_fuzzer(binary, seeds(), tmp_path, FUZZ_RUNS, max_len=70000, timeout_s=60)
    assert "stat::number_of_executed_units" in report
