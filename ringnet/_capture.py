"""Packet capture: pcapng files of the namespace's frames, written off the data path.

Each worker shares a capture mapping with the orchestrator (csrc/capture.h): a
sealed memfd the orchestrator creates at start (``CaptureShm.create``) and the
worker adopts (``CaptureShm.adopt``), holding a packet ring and a flow event
ring. While a capture runs, every worker copies at most the snap length of
each frame it takes from or puts into the namespace's rings into its packet
ring, with a timestamp and the direction, and never waits: a full ring drops
the frame from the capture and counts it (``capture_drops``). A writer thread
here writes every worker's ring to the file as pcapng blocks (C: writev()
straight from the ring, GIL released); it polls, so no doorbell costs the
workers a system call.

File format: pcapng, one interface (the namespace's, LINKTYPE_RAW: IP packets
without a link header), nanosecond timestamps, each packet's direction in its
epb_flags (outbound: sent by the namespace), and at the end an Interface
Statistics Block with the frames seen and dropped. ``tcpdump -r`` and
Wireshark read it. TSO/USO super-frames appear as they cross the rings: one
frame of up to 64 KiB whose IP length covers it all, with the partial transport
checksum of checksum offload.

One capture runs at a time per network: ``Network.capture()`` (Python),
``NetworkConfig(pcap=...)`` / ``ringnet run --pcap FILE`` (from the start), and
the control socket's ``capture`` command (``ringnet capture ID FILE``).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _control
from ._control import Msg
from ._core import check, ffi, lib, worker_counter_names
from ._shm import _check_sealed, sealed_memfd
from ._threads import start_thread
from .errors import ConfigError, ProtocolError, RingnetError

if TYPE_CHECKING:
    from .network import Network

__all__ = ["CaptureShm", "Capture", "Taps", "check_snaplen", "check_seconds",
           "SNAPLEN_MIN", "SNAPLEN_MAX", "SECONDS_MAX"]

log = logging.getLogger(__name__)

SNAPLEN_MIN = 64          # RN_CAP_SNAPLEN_MIN
SNAPLEN_MAX = 65575       # RN_CAP_SNAPLEN_MAX: the largest IP packet a frame carries
SECONDS_MAX = 7 * 86400
POLL_S = 0.005            # how often the writer looks at idle rings
REPLY_TIMEOUT = 10.0
_LINKTYPE_RAW = 101


def check_snaplen(value: Any, name: str = "snaplen") -> int:
    """``value`` as a snap length; ConfigError naming ``name`` and the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not SNAPLEN_MIN <= value <= SNAPLEN_MAX:
        raise ConfigError(f"{name}={value!r} is out of range: {name} must be an integer from "
                          f"{SNAPLEN_MIN} to {SNAPLEN_MAX} (bytes of each packet)")
    return value


def check_seconds(value: Any, name: str = "seconds") -> Optional[float]:
    """``value`` as a capture duration (None: until closed); ConfigError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= SECONDS_MAX:
        raise ConfigError(f"{name}={value!r} is out of range: {name} must be a number of seconds "
                          f"above 0 and at most {SECONDS_MAX}")
    return float(value)


class CaptureShm:
    """One worker's capture mapping (csrc/capture.h layout), mapped shared.

    The orchestrator creates it (``create``: memfd, size, seals, header, rings reset,
    and ``reader`` for its consumer side), passes ``fd`` to the worker, which maps it
    with ``adopt`` and hands ``ptr`` to C.
    """

    def __init__(self, fd: int, mm: mmap.mmap) -> None:
        self.fd = fd
        self._mm: Optional[mmap.mmap] = mm
        self._buf = ffi.from_buffer(mm)
        self.ptr = ffi.cast("void *", self._buf)
        self.size = len(mm)
        self.reader: Any = None

    @classmethod
    def create(cls, worker: int) -> "CaptureShm":
        """Orchestrator: a new sealed capture memfd for worker ``worker``, set up."""
        fd, mm = sealed_memfd(f"ringnet-cap-w{worker}", lib.rn_capture_shm_size())
        self = cls(fd, mm)
        try:
            check(lib.rn_capture_shm_init(self.ptr, self.size), "rn_capture_shm_init")
            self.reader = ffi.new("struct rn_cap_reader *")
            check(lib.rn_capture_reader_init(self.reader, self.ptr, self.size),
                  "rn_capture_reader_init")
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def adopt(cls, fd: int) -> "CaptureShm":
        """Worker: map the capture memfd ``fd`` (taking ownership of it); ProtocolError if
        it is not sealed or has the wrong size."""
        try:
            _check_sealed(fd, "capture")
            want = lib.rn_capture_shm_size()
            if os.fstat(fd).st_size != want:
                raise ProtocolError(f"capture memfd is {os.fstat(fd).st_size} bytes, expected {want}")
            mm = mmap.mmap(fd, want, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mm)

    def close(self) -> None:
        if self._mm is None:
            return
        self.reader = None
        ffi.release(self._buf)
        self._mm.close()
        os.close(self.fd)
        self._mm = None


# pcapng blocks (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng) -----------------

def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("=HH", code, len(data)) + data + b"\0" * (-len(data) % 4)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("=II", btype, total) + body + struct.pack("=I", total)


def _ts(ns: int) -> bytes:
    return struct.pack("=II", ns >> 32, ns & 0xFFFFFFFF)


def pcapng_header(snaplen: int, ifname: str) -> bytes:
    """Section Header Block and the one Interface Description Block (LINKTYPE_RAW,
    nanosecond timestamps)."""
    from . import __version__

    shb = _block(0x0A0D0D0A, struct.pack("=IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _opt(4, f"ringnet {__version__}".encode()) + _opt(0, b""))
    idb = _block(1, struct.pack("=HHI", _LINKTYPE_RAW, 0, snaplen)
                 + _opt(2, ifname.encode()) + _opt(9, bytes([9])) + _opt(0, b""))
    return shb + idb


def pcapng_stats(start_ns: int, end_ns: int, received: int, dropped: int) -> bytes:
    """Interface Statistics Block: frames the workers saw and the ones left out."""
    return _block(5, struct.pack("=I", 0) + _ts(end_ns)
                  + _opt(2, _ts(start_ns)) + _opt(3, _ts(end_ns))
                  + _opt(4, struct.pack("=Q", received)) + _opt(5, struct.pack("=Q", dropped))
                  + _opt(0, b""))


class Capture:
    """A running packet capture of one network; ``close()`` (or the context's end, or
    ``seconds`` running out) stops it and completes the file.

    ``frames`` counts the packets written, ``dropped`` those the workers left out
    because the writer fell behind (the capture ring was full).
    """

    def __init__(self, taps: "Taps", path: str, snaplen: int, seconds: Optional[float]) -> None:
        self.path = path
        self.snaplen = snaplen
        self.seconds = seconds
        self.frames = 0
        self._taps = taps
        self._file = open(path, "wb", buffering=0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hold = threading.Event()   # tests: the writer stops draining (the ring fills)
        self._done = threading.Event()
        self._closed = False
        self._start_ns = time.time_ns()
        self._drops0 = taps.counter("capture_drops")
        self._dropped_final: Optional[int] = None
        self._nframes = ffi.new("uint64_t *")
        self._nbytes = ffi.new("uint64_t *")
        self._thread: Optional[threading.Thread] = None
        try:
            self._file.write(pcapng_header(snaplen, taps.ifname))
        except BaseException:
            self._file.close()
            raise

    def _start(self) -> None:
        self._thread = start_thread(self._run, "ringnet-capture")
        if self.seconds is not None:
            start_thread(self._timer, "ringnet-capture-timer")

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def dropped(self) -> int:
        """Frames left out of this capture so far (capture ring full)."""
        if self._dropped_final is not None:
            return self._dropped_final
        return self._taps.counter("capture_drops") - self._drops0

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the capture has ended (closed, or ``seconds`` ran out); True if it has."""
        return self._done.wait(timeout)

    def stats(self) -> dict[str, Any]:
        """What the control socket reports: file, snap length, frames written, dropped."""
        return {"file": self.path, "snaplen": self.snaplen, "seconds": self.seconds,
                "frames": self.frames, "dropped": self.dropped, "running": self.running}

    def _drain(self) -> int:
        """Move every worker's captured frames into the file (writev from the rings, in C,
        GIL released); return the frames moved."""
        moved = 0
        for shm in self._taps.shms:
            if shm.reader is None:
                continue
            rc = lib.rn_capture_drain_fd(shm.reader, self._file.fileno(), 0, self._nframes,
                                         self._nbytes)
            moved += self._nframes[0]
            self.frames += self._nframes[0]
            if rc < 0:
                raise OSError(-rc, f"{self.path}: {os.strerror(-rc)}")
        return moved

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._hold.is_set() or not self._drain():
                    self._stop.wait(POLL_S)
        except (OSError, RingnetError) as e:
            log.error("capture to %s failed: %s", self.path, e)
            start_thread(self.close, "ringnet-capture-stop")

    def _timer(self) -> None:
        if not self._stop.wait(self.seconds):
            try:
                self.close()
            except (OSError, RingnetError) as e:
                log.error("stopping the capture to %s failed: %s", self.path, e)

    def close(self) -> None:
        """Stop capturing, write what the workers captured and the statistics block, close
        the file. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            err: Optional[BaseException] = None
            try:
                self._taps._set_capture(0)   # every worker ACKs: nothing more is produced
            except (OSError, RingnetError) as e:
                err = e
            self._stop.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()
            try:
                self._drain()
                self._dropped_final = self._taps.counter("capture_drops") - self._drops0
                self._file.write(pcapng_stats(self._start_ns, time.time_ns(),
                                              self.frames + self._dropped_final, self._dropped_final))
            finally:
                self._file.close()
                self._taps._ended(self)
                self._done.set()
            if err is not None:
                raise err

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Capture {self.path} snaplen={self.snaplen} frames={self.frames}>"


class Taps:
    """A network's capture mappings, its running capture and its flow log.

    Network calls ``create`` before it starts the workers (the fds go to them),
    ``start`` once they run, and ``close`` after they were reaped (so the flow
    log gets the records of flows closed at shutdown)."""

    def __init__(self, net: "Network") -> None:
        self._net = net
        self.shms: list[CaptureShm] = []
        self._capture: Optional[Capture] = None
        self._last: Optional[Capture] = None   # the capture that ended last, for reports
        self._flowlog: Any = None
        self._lock = threading.Lock()

    @property
    def ifname(self) -> str:
        return self._net.ifname

    def create(self, nworkers: int) -> list[int]:
        """One capture mapping per worker; returns their fds, in worker order."""
        for i in range(nworkers):
            self.shms.append(CaptureShm.create(i))
        return [s.fd for s in self.shms]

    def counter(self, name: str) -> int:
        """A worker counter of the network, summed over its workers (read from the
        counter arrays directly: also while the network starts or closes; a replaced
        worker's successor carries on from its count, see Network.counters())."""
        idx = worker_counter_names().index(name)
        with self._net._ctr_lock:
            return sum(c.value(idx) for c in self._net._wctr)

    def start(self) -> None:
        """After start-up: the flow log and the capture the configuration asks for."""
        cfg = self._net.config
        if cfg.flow_log is not None:
            from ._flowlog import FlowLog

            rules = self._net.rules

            def rule_text(slot: int) -> Optional[str]:
                r = rules.slot_rule(slot)
                return None if r is None else str(r)

            self._flowlog = FlowLog(cfg.flow_log, self.shms, rule_text, rules.name_of)
        if cfg.pcap is not None:
            self.capture(cfg.pcap, cfg.pcap_snaplen)

    def capture(self, path: str, snaplen: int = SNAPLEN_MAX, seconds: Optional[float] = None) -> Capture:
        """Start a capture into ``path`` (see Network.capture)."""
        snaplen = check_snaplen(snaplen)
        seconds = check_seconds(seconds)
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError(f"capture file {path!r} must be a path")
        path = os.path.abspath(os.fspath(path))
        with self._lock:
            if self._capture is not None:
                raise RingnetError(f"a capture runs already (into {self._capture.path}); "
                                   "close it first")
            try:
                cap = Capture(self, path, snaplen, seconds)
            except OSError as e:
                raise RingnetError(f"capture file {path}: {e.strerror}") from None
            self._capture = cap
        try:
            self._set_capture(snaplen)
        except BaseException:
            cap.close()
            raise
        cap._start()
        log.info("capturing into %s (snap length %d)", path, snaplen)
        return cap

    def current(self) -> Optional[Capture]:
        return self._capture

    def _ended(self, cap: Capture) -> None:
        with self._lock:
            if self._capture is cap:
                self._capture = None
                self._last = cap

    def _set_capture(self, snaplen: int) -> None:
        """CAPTURE to every worker; each answers ACK once it captures at ``snaplen`` (0: off).
        No worker left (the network closes): nothing to do."""
        body = {"snaplen": snaplen, "flowlog": self._net.config.flow_log is not None}
        for child in self._net._workers():
            with self._net._query_lock:
                _control.send(child.ctl, Msg.CAPTURE, body)
                _control.expect(child.ctl, Msg.ACK, REPLY_TIMEOUT, child.name)

    def worker_state(self) -> Optional[dict[str, Any]]:
        """The CAPTURE body a replaced worker needs (_supervise.py) when a capture runs,
        else None (a worker starts with capture off and the flow log as configured). Its
        capture mapping is the one its predecessor wrote into: the readers go on."""
        cap = self._capture
        if cap is None:
            return None
        return {"snaplen": cap.snaplen, "flowlog": self._net.config.flow_log is not None}

    def control(self, args: dict) -> dict[str, Any]:
        """The control socket's ``capture`` command: ``{"file": PATH, "snaplen": N,
        "seconds": S}`` starts one, ``{"stop": true}`` stops it, ``{}`` reports on it."""
        if args.get("stop"):
            cap = self._capture
            if cap is None:
                raise RingnetError("no capture is running")
            cap.close()
            return cap.stats()
        if "file" in args:
            path = args["file"]
            if not isinstance(path, str) or not os.path.isabs(path):
                raise ConfigError(f"capture file {path!r} must be an absolute path")
            return self.capture(path, args.get("snaplen", SNAPLEN_MAX), args.get("seconds")).stats()
        cap = self._capture or self._last
        return cap.stats() if cap is not None else {"running": False}

    def flush(self) -> None:
        """Write the flow records the workers have put out so far (before the rules that
        name their rule and DNS name go away at teardown)."""
        if self._flowlog is not None:
            try:
                self._flowlog.flush()
            except (OSError, RingnetError) as e:
                log.warning("flow log %s: %s", self._flowlog.path, e)

    def close(self) -> None:
        """After the workers are gone: end the capture and the flow log (draining what the
        workers left), unmap everything."""
        cap = self._capture
        if cap is not None:
            try:
                cap.close()
            except (OSError, RingnetError) as e:
                log.warning("capture %s: %s", cap.path, e)
        if self._flowlog is not None:
            self._flowlog.close()
            self._flowlog = None
        for s in self.shms:
            s.close()
        self.shms = []


def worker_capture(worker: Any, ctl: Any, msg: _control.Message,
                   send: Callable[..., None] = _control.send) -> None:
    """CAPTURE from the orchestrator, in a worker: set the snap length and flow log, ACK."""
    snaplen = _control.body_field(msg, "snaplen", int)
    flowlog = msg.body.get("flowlog")
    if not isinstance(flowlog, bool) or not (snaplen == 0 or SNAPLEN_MIN <= snaplen <= SNAPLEN_MAX):
        raise ProtocolError("CAPTURE with a bad snap length or flow log flag")
    check(lib.rn_capture_set(worker, snaplen, int(flowlog)), "rn_capture_set")
    send(ctl, Msg.ACK)
