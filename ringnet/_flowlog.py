"""Flow log: one JSON line per flow opened and closed (``--flow-log FILE``).

Workers put a fixed-size record (struct rn_cap_event, csrc/capture.h) into the
event ring of their capture mapping when a flow enters or leaves their flow
table; nothing else happens on the data path, and a full ring loses the record
and counts it (``flowlog_drops``) rather than wait. A thread here polls every
worker's ring (``POLL_S``), turns records into JSON lines and appends them to
the file; ``close()`` runs after the workers exited, so the records of flows
they closed at shutdown (reason "shutdown") are written too.

Record fields (open records have the first group, close records all):

    event        "open" or "close"
    time         wall-clock time of the event, seconds since the epoch
    worker       index of the worker that owns the flow
    proto        "tcp", "udp", "icmp", "icmp6" (another protocol: its number)
    guest, guest_port    the namespace-side address and port (ICMP: echo identifier)
    remote, remote_port  the remote address and port as the namespace names them
    name         a name ringnet's DNS forwarder handed the remote address out for
                 (looked up when the open record is written; null if none)
    rule         the egress rule that decided for the flow, as its text ("allow
                 tcp:pypi.org:443"); null when no rule matched (the default decided);
                 "#SLOT" for a rule removed before the open record was written
    opened       (close) when the flow was created; duration: seconds it lived
    bytes_in, bytes_out      (close) payload bytes namespace -> host, host -> namespace
                             (the directions of Network.flows())
    packets_in, packets_out  (close) frames that carried that payload (a TSO or USO
                             super-frame counts once; retransmissions do not count)
    reason       (close) why it ended: fin, reset, ns_reset, host_error,
                 connect_failed, idle_timeout, fin_timeout, retransmit_timeout,
                 shutdown, error, closed (not recorded)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
from typing import Any, Callable, Optional

from ._core import ffi, lib
from ._threads import start_thread
from .errors import ConfigError, RingnetError

__all__ = ["FlowLog", "event_record"]

log = logging.getLogger(__name__)

POLL_S = 0.05
_BATCH = 1024
_OPEN_MAX = 1 << 20       # flows whose name and rule are kept for their close record
_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}


def _addr(family: int, raw: Any) -> str:
    return str(ipaddress.ip_address(bytes(raw)[: 16 if family == 6 else 4]))


def event_record(ev: Any, worker: int) -> dict[str, Any]:
    """The JSON record of one struct rn_cap_event of ``worker`` ("name" None, "rule" the
    rule's slot: FlowLog fills in both)."""
    rec: dict[str, Any] = {
        "event": "open" if ev.kind == lib.RN_CAP_EV_OPEN else "close",
        "time": round(ev.ts_ns / 1e9, 6),
        "worker": worker,
        "proto": _PROTO_NAMES.get(ev.proto, str(ev.proto)),
        "guest": _addr(ev.family, ev.saddr), "guest_port": ev.sport,
        "remote": _addr(ev.family, ev.daddr), "remote_port": ev.dport,
        "name": None,
        "rule": None if ev.rule == lib.RN_CAP_NO_RULE else ev.rule,
    }
    if ev.kind != lib.RN_CAP_EV_OPEN:
        name = lib.rn_flow_end_name(ev.end)
        rec.update(opened=round(ev.opened_ns / 1e9, 6),
                   duration=round(max(0, ev.ts_ns - ev.opened_ns) / 1e9, 6),
                   bytes_in=ev.bytes_up, bytes_out=ev.bytes_down,
                   packets_in=ev.pkts_up, packets_out=ev.pkts_down,
                   reason=ffi.string(name).decode() if name != ffi.NULL else str(ev.end))
    return rec


class FlowLog:
    """Appends the flow records of every worker's event ring (``shms``: _capture.CaptureShm)
    to ``path`` as JSON lines, from a thread of its own, until ``close()``.

    ``rule_text(slot)`` names the rule in a slot (RuleSet.slot_rule), ``name_of(family,
    packed address)`` a DNS name handed out for an address (RuleSet.name_of). Both are
    asked when a flow's open record is written and the answers kept for its close
    record (a rule may be removed and a name expire while the flow lives)."""

    def __init__(self, path: str, shms: list,
                 rule_text: Optional[Callable[[int], Optional[str]]] = None,
                 name_of: Optional[Callable[[int, bytes], Optional[str]]] = None) -> None:
        self.path = path
        self.records = 0
        self._shms = shms
        self._rule_text = rule_text
        self._name_of = name_of
        self._open: dict[tuple, tuple[Optional[str], Optional[str]]] = {}   # flow -> (name, rule)
        self._buf = ffi.new("struct rn_cap_event[]", _BATCH)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(f"flow_log={path!r}: {e.strerror}") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = start_thread(self._run, "ringnet-flowlog")

    def _drain(self) -> int:
        """Write every record waiting in the workers' rings; return how many."""
        moved = 0
        with self._lock:
            for i, shm in enumerate(self._shms):
                while shm.reader is not None:
                    n = lib.rn_capture_drain_events(shm.reader, self._buf, _BATCH)
                    if n < 0:
                        raise RingnetError(f"worker {i}'s flow event ring is corrupted")
                    if not n:
                        break
                    self._file.write("".join(json.dumps(self._record(self._buf[k], i)) + "\n"
                                             for k in range(n)))
                    moved += n
            if moved:
                self._file.flush()
                self.records += moved
        return moved

    def _record(self, ev: Any, worker: int) -> dict[str, Any]:
        """event_record() with the flow's name and rule text."""
        rec = event_record(ev, worker)
        key = (worker, ev.proto, ev.family, bytes(ev.saddr), ev.sport, bytes(ev.daddr), ev.dport)
        if rec["event"] == "open" or key not in self._open:
            name = rule = None
            if self._name_of is not None:
                name = self._name_of(ev.family, bytes(ev.daddr)[: 16 if ev.family == 6 else 4])
            if self._rule_text is not None and rec["rule"] is not None:
                rule = self._rule_text(rec["rule"])
            if rec["event"] == "open":
                if len(self._open) >= _OPEN_MAX:   # close records lost (ring full): forget
                    self._open.clear()
                self._open[key] = (name, rule)
        else:
            name, rule = self._open[key]
        if rec["event"] == "close":
            self._open.pop(key, None)
        rec["name"] = name
        rec["rule"] = rule if rule is not None or rec["rule"] is None else f"#{rec['rule']}"
        return rec

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_S):
                self._drain()
        except (OSError, RingnetError) as e:
            log.error("flow log %s failed: %s", self.path, e)

    def close(self) -> None:
        """Write what is left and close the file (after the workers exited)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self._drain()
        except (OSError, RingnetError) as e:
            log.error("flow log %s failed: %s", self.path, e)
        finally:
            self._file.close()

    def flush(self) -> Optional[int]:
        """Write the records the workers have put out so far; return how many."""
        if self._stop.is_set():
            return None
        return self._drain()
