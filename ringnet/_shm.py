"""Shared memory owned by ringnet processes: ring mappings and counter arrays.

A ring mapping (one per worker) is a sealed memfd laid out as csrc/shm.h says;
the namespace child creates it, the worker checks and maps it. A counter array
is a memfd of RN_CTR_SLOTS uint64 values that the orchestrator creates, seals
(no shrink, no grow, no more seals) and maps read-only, its child checks the
seals of, maps read-write and writes, and the orchestrator reads through a
(read-only) numpy view without locks. Sealing is what keeps a truncation (from
any process that can open the memfd) from killing its mappers with SIGBUS.
A replacement worker's array carries on from its predecessor's final event
counts (``carry_over``): what the orchestrator reads is those plus its own.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
from typing import Iterable

from ._core import check, ffi, lib
from .errors import ProtocolError

__all__ = ["RingMapping", "CounterArray", "check_eventfd", "sealed_memfd", "REQUIRED_SEALS"]

REQUIRED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def sealed_memfd(name: str, size: int, prot: int = mmap.PROT_READ | mmap.PROT_WRITE
                 ) -> tuple[int, mmap.mmap]:
    """A new memfd ``name`` of ``size`` zero bytes, sealed against shrinking, growing and
    further seals (REQUIRED_SEALS: truncating it, say through /proc/PID/fd, would make
    every process that maps it die of SIGBUS), and its shared mapping with ``prot``.
    The caller owns both; on failure nothing is left open."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS)
        return fd, mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    except BaseException:
        os.close(fd)
        raise


class RingMapping:
    """One worker's ring pair in a sealed memfd, mapped shared.

    ``ptr`` is the C address of the mapping; the mapping stays valid until close().
    """

    def __init__(self, fd: int, ring_size: int, mm: mmap.mmap) -> None:
        self.fd = fd
        self.ring_size = ring_size
        self._mm = mm
        self._buf = ffi.from_buffer(mm)
        self.ptr = ffi.cast("void *", self._buf)
        self.size = len(mm)

    @classmethod
    def create(cls, ring_size: int, worker: int) -> "RingMapping":
        """Namespace child: create, size, seal and map the memfd, write the header and
        reset both rings."""
        fd, mm = sealed_memfd(f"ringnet-w{worker}", lib.rn_shm_size(ring_size))
        self = cls(fd, ring_size, mm)
        hdr = ffi.cast("struct rn_shm_hdr *", self.ptr)
        hdr.magic = lib.RN_SHM_MAGIC
        hdr.version = lib.RN_SHM_VERSION
        hdr.ring_size = ring_size
        hdr.frame_max = lib.RN_FRAME_MAX
        hdr.worker = worker
        ring = ffi.new("struct rn_ring *")
        for mem in (lib.rn_shm_to_worker(self.ptr, ring_size), lib.rn_shm_to_ns(self.ptr, ring_size)):
            check(lib.rn_ring_attach(ring, mem, ring_size, lib.RN_FRAME_MAX, 1), "rn_ring_attach")
        return self

    @classmethod
    def adopt(cls, fd: int, ring_size: int) -> "RingMapping":
        """Worker: check an untrusted memfd (seals, size, type) and map it.

        Takes ownership of ``fd``. Raises ProtocolError when the memfd is unfit.
        """
        try:
            _check_sealed(fd, "ring")
            st = os.fstat(fd)
            want = lib.rn_shm_size(ring_size)
            if not stat.S_ISREG(st.st_mode) or st.st_size != want:
                raise ProtocolError(f"ring memfd is {st.st_size} bytes, expected {want}")
            mm = mmap.mmap(fd, want, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, ring_size, mm)

    def close(self) -> None:
        if self._mm is None:
            return
        ffi.release(self._buf)
        self._mm.close()
        os.close(self.fd)
        self._mm = None


def _check_sealed(fd: int, what: str) -> None:
    """Raise ProtocolError unless ``fd`` is a memfd sealed against shrinking, growing and
    further seals (REQUIRED_SEALS)."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        raise ProtocolError(f"{what} fd is not a sealable memfd") from None
    if seals & REQUIRED_SEALS != REQUIRED_SEALS:
        raise ProtocolError(f"{what} memfd seals {seals:#x} lack shrink/grow/seal "
                            f"({REQUIRED_SEALS:#x}); it could be truncated under us")


def check_eventfd(fd: int, what: str) -> None:
    """Raise ProtocolError unless ``fd`` is an eventfd."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target != "anon_inode:[eventfd]":
        raise ProtocolError(f"{what} fd is {target or 'unknown'}, not an eventfd")


class CounterArray:
    """RN_CTR_SLOTS uint64 counters in a memfd: written by one child, read by anyone mapping it.

    The orchestrator creates it (``create``), which maps it read-only, passes ``fd`` to
    the child, and reads ``values`` (a read-only numpy view) at any time; the child maps
    it read-write with ``adopt`` and hands ``ptr`` to C (``ptr`` is None in a read-only
    mapping). numpy is imported on first use of ``values`` only: children must stay
    single-threaded until they have entered their namespaces, and numpy's BLAS starts
    threads at import.

    ``snapshot`` and ``value`` read the live values plus ``carried``: the event counts of
    the dead workers this array's worker replaced (``carry_over``; None when it replaced
    none). ``values`` is the live array alone.
    """

    def __init__(self, fd: int, mm: mmap.mmap, writable: bool) -> None:
        self.fd = fd
        self._mm = mm
        self._values = None
        self.carried = None   # numpy uint64, RN_CTR_SLOTS: counted by predecessors
        self._buf = ffi.from_buffer(mm) if writable else None
        self.ptr = ffi.cast("uint64_t *", self._buf) if writable else None

    @property
    def values(self):
        """numpy uint64 view of the counters (lock-free reads of the live values); read-only
        where the mapping is."""
        if self._values is None:
            import numpy as np

            self._values = np.frombuffer(self._mm, dtype=np.uint64, count=lib.RN_CTR_SLOTS)
        return self._values

    @classmethod
    def create(cls, name: str) -> "CounterArray":
        """Orchestrator: a new zeroed counter memfd, mapped read-only."""
        fd, mm = sealed_memfd(f"ringnet-ctr-{name}", lib.RN_CTR_SLOTS * 8, mmap.PROT_READ)
        return cls(fd, mm, writable=False)

    @classmethod
    def adopt(cls, fd: int) -> "CounterArray":
        """Child: map the counter memfd ``fd`` read-write. Raises ProtocolError if its size
        is wrong or it is not sealed against shrinking and growing."""
        size = lib.RN_CTR_SLOTS * 8
        _check_sealed(fd, "counter")
        if os.fstat(fd).st_size != size:
            raise ProtocolError("counter memfd has the wrong size")
        return cls(fd, mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE),
                   writable=True)

    def carry_over(self, old: "CounterArray", gauges: "Iterable[int]") -> None:
        """Orchestrator: carry on from ``old``, the array of the worker this array's worker
        replaces, which has exited and been reaped (its values are final). From then on
        snapshot() and value() add what ``old`` read as (its own values and what it
        carried), except at the indices ``gauges``: counters of a current state (open
        flows, queued frames), which ended with the old worker. ``old`` is no longer
        needed afterwards."""
        carried = old.values.copy()
        if old.carried is not None:
            carried += old.carried
        carried[list(gauges)] = 0
        self.carried = carried

    def snapshot(self, names: tuple[str, ...]) -> dict[str, int]:
        """The first len(names) counters by name: live values plus what was carried over."""
        vals = self.values[: len(names)].copy()
        if self.carried is not None:
            vals += self.carried[: len(names)]
        return {n: int(v) for n, v in zip(names, vals)}

    def value(self, index: int) -> int:
        """Counter ``index``: its live value plus what was carried over."""
        v = int(self.values[index])
        return v + int(self.carried[index]) if self.carried is not None else v

    def close(self) -> None:
        if self._mm is None:
            return
        self._values = None
        if self._buf is not None:
            ffi.release(self._buf)
        self._mm.close()
        os.close(self.fd)
        self._mm = None
