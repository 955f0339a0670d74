"""Typed snapshots of a running network: C core counters, ringnet processes, flows.

``Network.stats()`` returns a Stats. Counters come from the shared-memory arrays the C
core writes (read without locks through read-only numpy views); process figures come
from psutil and cover exactly ringnet's own processes (the namespace child and the
workers), never the user's; the flow table comes from the workers (``Network.flows()``)
as a numpy structured array of FLOW_DTYPE:

=============  ======  ===============================================================
field          dtype   meaning
=============  ======  ===============================================================
worker         uint16  index of the worker that owns the flow
proto          U5      "tcp", "udp", "icmp" or "icmp6" (other protocols: the number)
state          U12     TCP: "CONNECTING", "SYN_SENT", "SYN_RCVD", "ESTABLISHED",
                       "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK",
                       "TIME_WAIT" (tcp_fsm.c); UDP and ICMP: "active"
guest          U39     the namespace-side address (IPv4 or IPv6, as text)
guest_port     uint16  the namespace-side port (ICMP: the echo identifier)
remote         U39     the remote address as the namespace names it
remote_port    uint16  the remote port (ICMP: the echo identifier)
bytes_in       uint64  payload bytes namespace -> host
bytes_out      uint64  payload bytes host -> namespace
age            float64 seconds since the flow was created
idle           float64 seconds since the flow last carried anything
=============  ======  ===============================================================

numpy is imported on first use only (``FLOW_DTYPE`` included): ringnet's children
import this package and must stay single-threaded until they have unshared, and
numpy's BLAS starts threads at import.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

import psutil

from .errors import ProtocolError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Stats", "ProcessStats", "ProcessSampler", "FLOW_FIELDS", "flow_dtype",
           "flow_array", "flow_records", "busiest_first"]

# (name, numpy type, meaning): the flow table's columns, in order (see the table above)
FLOW_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("worker", "u2", "index of the worker that owns the flow"),
    ("proto", "U5", "tcp, udp, icmp or icmp6"),
    ("state", "U12", "protocol state (UDP, ICMP: active)"),
    ("guest", "U39", "namespace-side address"),
    ("guest_port", "u2", "namespace-side port (ICMP: echo identifier)"),
    ("remote", "U39", "remote address as the namespace names it"),
    ("remote_port", "u2", "remote port (ICMP: echo identifier)"),
    ("bytes_in", "u8", "payload bytes namespace -> host"),
    ("bytes_out", "u8", "payload bytes host -> namespace"),
    ("age", "f8", "seconds since the flow was created"),
    ("idle", "f8", "seconds since the flow last carried anything"),
)

_dtype: list = []


def flow_dtype() -> "np.dtype":
    """The numpy structured dtype of flow tables (FLOW_DTYPE); imports numpy."""
    if not _dtype:
        import numpy as np

        _dtype.append(np.dtype([(name, kind) for name, kind, _ in FLOW_FIELDS]))
    return _dtype[0]


def __getattr__(name: str) -> Any:
    if name == "FLOW_DTYPE":
        return flow_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flow_array(records: Iterable[Mapping[str, Any]]) -> "np.ndarray":
    """A flow table (FLOW_DTYPE) from records that map every field name to its value, in
    their order. Raises ProtocolError for a record with a missing or unfit field."""
    import numpy as np

    dt = flow_dtype()
    try:
        rows = [tuple(r[name] for name in dt.names) for r in records]
        return np.array(rows, dtype=dt)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"malformed flow record: {type(e).__name__}: {e}") from None


def flow_records(flows: "np.ndarray") -> list[dict[str, Any]]:
    """A flow table as a list of plain dicts (JSON-ready), one per flow."""
    names = flows.dtype.names
    return [dict(zip(names, row)) for row in flows.tolist()]


def busiest_first(flows: "np.ndarray") -> "np.ndarray":
    """The flows sorted by bytes moved (in + out), largest first."""
    import numpy as np

    total = flows["bytes_in"] + flows["bytes_out"]
    return flows[np.argsort(total, kind="stable")[::-1]]


@dataclasses.dataclass(frozen=True)
class ProcessStats:
    """psutil's view of one ringnet process."""

    pid: int
    role: str              # "ns" or "worker N"
    cpu_percent: float     # since the previous snapshot of this network (first: since start)
    cpu_seconds: float     # user + system, since the process started
    rss: int               # bytes
    num_fds: int           # -1 when the kernel does not tell: ringnet's processes are not
                           # dumpable, so only root may list their /proc/PID/fd
    num_threads: int


@dataclasses.dataclass(frozen=True, eq=False)
class Stats:
    """A snapshot of one network; ``flows`` is its flow table (FLOW_DTYPE), busiest first."""

    time: float
    pump: dict[str, int]
    workers: list[dict[str, int]]
    processes: list[ProcessStats]
    flows: "np.ndarray"

    def total(self, name: str) -> int:
        """Sum of a worker counter over all workers."""
        return sum(w.get(name, 0) for w in self.workers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return (self.time, self.pump, self.workers, self.processes) == \
            (other.time, other.pump, other.workers, other.processes) \
            and self.flows.dtype == other.flows.dtype and len(self.flows) == len(other.flows) \
            and bool((self.flows == other.flows).all())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): flows as a list of records named as FLOW_DTYPE's fields."""
        return {"time": self.time, "pump": dict(self.pump), "workers": [dict(w) for w in self.workers],
                "processes": [dataclasses.asdict(p) for p in self.processes],
                "flows": flow_records(self.flows)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        return cls(time=d["time"], pump=dict(d["pump"]), workers=[dict(w) for w in d["workers"]],
                   processes=[ProcessStats(**p) for p in d["processes"]],
                   flows=flow_array(d["flows"]))


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
