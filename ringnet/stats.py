"""Typed snapshots of a running network: C core counters, ringnet processes, flows.

``Network.stats()`` returns a Stats. Counters come from the shared-memory arrays the C
core writes (read without locks through numpy views); process figures come from psutil
and cover exactly ringnet's own processes (the namespace child and the workers), never
the user's; flow rows come from the workers' flow tables.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import psutil

__all__ = ["Stats", "ProcessStats", "FlowRow", "ProcessSampler"]


@dataclasses.dataclass(frozen=True)
class ProcessStats:
    """psutil's view of one ringnet process."""

    pid: int
    role: str              # "ns" or "worker N"
    cpu_percent: float     # since the previous snapshot of this network (first: since start)
    cpu_seconds: float     # user + system, since the process started
    rss: int               # bytes
    num_fds: int
    num_threads: int


@dataclasses.dataclass(frozen=True)
class FlowRow:
    """One flow in a worker's flow table, as the namespace sees it."""

    worker: int
    proto: str
    guest: str
    guest_port: int
    remote: str
    remote_port: int
    state: str
    bytes_in: int          # namespace -> host
    bytes_out: int         # host -> namespace
    age: float             # seconds


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of one network."""

    time: float
    pump: dict[str, int]
    workers: list[dict[str, int]]
    processes: list[ProcessStats]
    flows: list[FlowRow]

    def total(self, name: str) -> int:
        """Sum of a worker counter over all workers."""
        return sum(w.get(name, 0) for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        return cls(time=d["time"], pump=dict(d["pump"]), workers=[dict(w) for w in d["workers"]],
                   processes=[ProcessStats(**p) for p in d["processes"]],
                   flows=[FlowRow(**f) for f in d["flows"]])


class ProcessSampler:
    """Keeps psutil.Process objects between snapshots so that cpu_percent means
    'since the last snapshot'."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, roles: dict[int, str]) -> list[ProcessStats]:
        out = []
        for pid, role in roles.items():
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    out.append(ProcessStats(
                        pid=pid, role=role, cpu_percent=proc.cpu_percent(None),
                        cpu_seconds=cpu.user + cpu.system, rss=proc.memory_info().rss,
                        num_fds=_num_fds(proc), num_threads=proc.num_threads()))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._procs.pop(pid, None)
        for pid in set(self._procs) - set(roles):
            del self._procs[pid]
        return out


def _num_fds(proc: psutil.Process) -> int:
    try:
        return proc.num_fds()
    except psutil.AccessDenied:
        return -1


def now() -> float:
    return time.time()


def rates(prev: Optional[Stats], cur: Stats) -> dict[str, float]:
    """Per-second rates of the main counters between two snapshots (for `ringnet top`)."""
    if prev is None or cur.time <= prev.time:
        return {}
    dt = cur.time - prev.time
    out = {}
    for name in ("frames_in", "bytes_in", "frames_out", "bytes_out"):
        out[name] = (cur.total(name) - prev.total(name)) / dt
    for name in ("tun_frames_in", "tun_frames_out"):
        out[name] = (cur.pump.get(name, 0) - prev.pump.get(name, 0)) / dt
    return out
