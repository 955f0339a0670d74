"""One ring in a memfd between two processes, driven by the C ring harness (csrc/ringtest.c).

The ring benchmark (perf/ring_bench.py) and the ring stress test (tests/test_ring_stress.py)
share this: a forked child runs the C producer loop (rn_ringtest_produce) while this process
runs the C consumer loop (rn_ringtest_consume), both with the NEED_WAKEUP protocol over two
eventfds, so that what is measured or checked is the ring and not Python.

The loops live in the test extension, ``ringnet._ringnet_test``, which a plain
``pip install .`` does not build: a test install (scripts/setup-test-env.sh, or
``RINGNET_TEST_BUILD=1 pip install .``) or an in-place ``python ringnet/_build.py`` does.
``ffi`` and ``lib`` here are that extension's (the ring, the shm constants, the loops).
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

try:
    from ._ringnet_test import ffi, lib  # type: ignore[import-not-found]
except ImportError as e:  # pragma: no cover - depends on how ringnet was installed
    raise ImportError("ringnet._ringnet_test is not built: it comes with a test install "
                      "(RINGNET_TEST_BUILD=1 pip install ., as scripts/setup-test-env.sh "
                      "does) or an in-place build (python ringnet/_build.py)") from e

__all__ = ["Side", "ffi", "lib", "run_pair"]


@dataclass(frozen=True)
class Side:
    """What one side of the ring reported: its return code and its counters."""

    rc: int
    frames: int
    bytes: int
    kicks: int
    sleeps: int
    full: int
    bad_seq: int
    pauses: int


def _side(rc: int, s: Any) -> Side:
    return Side(rc, s.frames, s.bytes, s.kicks, s.sleeps, s.full, s.bad_seq, s.pauses)


def run_pair(size: int, frame_max: int, cpus: Optional[tuple[int, int]] = None,
             **params: int) -> tuple[Side, Side, float]:
    """Move frames from a forked producer to this process through a fresh ring.

    ``size``: the ring's data area; ``frame_max``: its largest frame; ``cpus``: pin the
    consumer (this process) and the producer to these CPUs; ``params``: fields of struct
    rn_ringtest_params (nframes, minlen, maxlen, batch, verify, seed, cpause_every,
    ppause_every, ...; batch defaults to 32, the timeout to 30 s: it only ends a run whose
    wakeups are lost). Returns the producer's and the consumer's reports and the seconds
    from fork to the consumer's last frame. A producer that dies reports rc -1.
    """
    fd = os.memfd_create("rn-ringtest", os.MFD_CLOEXEC)
    ev_c = os.eventfd(0, os.EFD_CLOEXEC)
    ev_p = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        length = lib.rn_ringtest_mem_size(size)
        os.ftruncate(fd, length)
        mm = mmap.mmap(fd, length)
        out = mmap.mmap(-1, 4096)         # the producer's report, shared across fork
        mem = ffi.from_buffer(mm)
        r = ffi.new("struct rn_ring *")
        rc = lib.rn_ring_attach(r, mem, size, frame_max, 1)
        if rc:
            raise OSError(-rc, f"rn_ring_attach: {os.strerror(-rc)}")
        p = ffi.new("struct rn_ringtest_params *")
        p.size, p.frame_max, p.batch, p.timeout_ms = size, frame_max, 32, 30_000
        p.ev_consumer, p.ev_producer = ev_c, ev_p
        for k, v in params.items():
            setattr(p, k, v)

        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:                          # producer child: C only, then _exit
            code = 1
            try:
                if cpus:
                    os.sched_setaffinity(0, {cpus[1]})
                buf = ffi.from_buffer(out)
                ffi.cast("int32_t *", buf)[0] = lib.rn_ringtest_produce(
                    mem, p, ffi.cast("struct rn_ringtest_stats *", buf + 64))
                code = 0
            finally:
                os._exit(code)
        old = os.sched_getaffinity(0) if cpus else None
        try:
            if cpus:
                os.sched_setaffinity(0, {cpus[0]})
            cst = ffi.new("struct rn_ringtest_stats *")
            crc = lib.rn_ringtest_consume(mem, p, cst)
            elapsed = time.perf_counter() - t0
        finally:
            if old:
                os.sched_setaffinity(0, old)
            _, status = os.waitpid(pid, 0)
        buf = ffi.from_buffer(out)
        if os.waitstatus_to_exitcode(status) == 0:
            prod = _side(ffi.cast("int32_t *", buf)[0],
                         ffi.cast("struct rn_ringtest_stats *", buf + 64)[0])
        else:
            prod = Side(-1, 0, 0, 0, 0, 0, 0, 0)
        return prod, _side(crc, cst[0]), elapsed
    finally:
        os.close(fd)
        os.close(ev_c)
        os.close(ev_p)
