"""Supervision: a worker that dies is replaced with new rings; the namespace child's death is fatal.

Theory of operation
-------------------
Orchestrator side (``Supervisor``, one per running Network, a thread of ours with
signals blocked): it polls a pidfd of every child (opened while the child is
known alive, so a reaped and reused PID can never be mistaken for it) and a
wake-up pipe; not the namespace child's control socket, which carries
``Network.socket()``'s exchanges (its report is read once its pidfd says it exited).

- A worker exits (crash, SIGKILL, error): it is reaped and replaced, under the
  query lock (no FLOWS or DNS_UPSTREAMS exchange meanwhile). The replacement is
  started by the very function that starts the workers at first
  (``Network._spawn_worker()``: same index, so the same flows hash to it; the
  current DNS upstreams, host addresses and netem settings; the rules memfd and a
  memfd of the current rule set; its capture mapping; a new hook socket when
  on_connect is set; a fresh counter array, which carries on from the dead
  worker's final event counts while its gauges start afresh, the dead array then
  closed), with a new control socketpair towards the namespace child and a fresh
  ring memfd, created, sealed and initialised here (the namespace child's sandbox
  allows no memfd_create() or sealing). WORKER_REPLACE carries both to the
  namespace child (under the lock of ``Network.socket()``'s exchanges on that
  socket), which makes the worker a new splice socketpair and answers
  WORKER_REPLACED once the new worker has accepted its rings; the orchestrator
  then sends OFFLOADS and a running capture's CAPTURE
  (``Network._worker_resumed()``) and hands the forwards out again
  (``Publisher.reestablish()``: the TCP listeners it keeps a copy of to every
  worker with new handoff sockets, the UDP sockets the dead worker served to its
  replacement). The event is recorded (``Network.events()``) and logged as a
  warning.
- Restarts are rate-limited: more than ``max_restarts`` within RESTART_WINDOW
  seconds (or any with ``max_restarts=0``) fail the network.
- The namespace child exits, or reports an error: the namespace, its interface
  and every flow are gone, and nothing can bring them back (commands inside
  hold the namespace). The network fails.

A failed network records a ``network_failed`` event, logs an error, and stays
FAILED: every call that needs it running raises the reason, and ``close()``
still tears down whatever is left.

Namespace child side (``NsQueues``, ``ns_replace_worker``): the pump threads
share every worker's ring to_worker (a frame read from queue i may belong to
worker j), so one queue's rings cannot be swapped under the others. The
namespace child instead checks the new worker (HELLO with the ring, doorbells
and a new splice socket; ACK) while the pump runs on, then stops the whole pump
(its threads finish their batch; a frame a thread held for a full ring is
dropped), swaps worker i's control and splice sockets, ring and doorbells,
and starts the pump again on the same tun queues, adopting the other rings as
they are (indices in shared memory). The other workers' flows see a pause (its
length is logged at INFO), no loss that TCP does not repair.

Flows of the dead worker: its host sockets closed with it (the kernel sends the
host peers FIN, or RST where unread data was left). Inside, a TCP segment of such
a flow reaches the replacement, which has no flow for it and answers RST
(``drop_tcp_no_flow``): a connection is reset on its next segment, or at its own
timeout if it sends nothing. UDP and ICMP flows are made again by the next
datagram. Until the replacement runs, frames for the dead worker fill its ring;
a pump thread whose own ring is full stops reading its tun queue, so flows
queued behind it wait for the swap.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from . import _control
from ._control import Msg
from ._threads import start_thread
from .errors import ChildError, CoreError, ProtocolError, RingnetError, role_display

if TYPE_CHECKING:
    from ._shm import CounterArray
    from .network import Network, _Child

__all__ = ["Supervisor", "NsQueues", "Swap", "ns_replace_worker", "RESTART_WINDOW", "describe_status"]

log = logging.getLogger(__name__)

RESTART_WINDOW = 60.0   # seconds over which max_restarts counts
_STOP_TIMEOUT = 10.0


def describe_status(status: Optional[int]) -> str:
    """A child's exit status as words: "killed by SIGKILL", "exit status 1"."""
    if status is None:
        return "status unknown"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


# Namespace child -----------------------------------------------------------------------

class NsQueues:
    """The namespace child's pump and what it runs on: the tun queues, and per worker its
    control socket, ring mapping and doorbells (lists shared with the caller, who closes
    what they hold at the end)."""

    def __init__(self, cfg: Any, hash_key: str, tun_fds: list[int], counters: "CounterArray",
                 socks: list[socket.socket], rings: list[Any],
                 evs: list[tuple[int, int]], splices: list[socket.socket]) -> None:
        from ._core import ffi

        self.cfg = cfg
        self.hash_key = hash_key
        self.tun_fds = list(tun_fds)
        self.counters = counters
        self.socks = socks
        self.rings = rings
        self.evs = evs
        self.splices = splices   # our end of each worker's splice socket (csrc/splice.c)
        self.pump = ffi.NULL

    def start(self) -> None:
        """Start the pump threads on the current rings (adopting their state)."""
        from ._core import check, ffi, lib

        params = ffi.new("struct rn_pump_params *")
        params.nqueues = self.cfg.workers
        params.coalesce_us = self.cfg.coalesce_us
        params.busy_poll_us = self.cfg.busy_poll_us
        ffi.memmove(params.hash_key, bytes.fromhex(self.hash_key), 16)
        params.ring_size = self.cfg.ring_size
        out = ffi.new("struct rn_pump **")
        check(lib.rn_pump_start(out, params, ffi.new("int[]", self.tun_fds),
                                ffi.new("void *[]", [r.ptr for r in self.rings]),
                                ffi.new("int[]", [e[0] for e in self.evs]),
                                ffi.new("int[]", [e[1] for e in self.evs]), self.counters.ptr),
              "rn_pump_start")
        self.pump = out[0]

    def stop(self) -> int:
        """Stop and join the pump threads; return the first error one recorded (0)."""
        from ._core import ffi, lib

        if self.pump == ffi.NULL:
            return 0
        err = lib.rn_pump_stop(self.pump)
        self.pump = ffi.NULL
        return err


class _MappedRing:
    """A replacement worker's ring memfd, mapped through libc's mmap(): Python's mmap
    module dup()s the fd (F_DUPFD_CLOEXEC), which the namespace child's sandbox refuses.
    The memfd comes from the orchestrator (trusted), sealed and initialised there; the
    sandbox refuses F_GET_SEALS here too, so only its size is checked. Owns ``fd``."""

    def __init__(self, fd: int, ring_size: int) -> None:
        from ._core import ffi, lib

        self.fd = fd
        try:
            self.size = lib.rn_shm_size(ring_size)
            if os.fstat(fd).st_size != self.size:
                raise ProtocolError(f"replacement ring memfd is not {self.size} bytes")
            ptr = lib.mmap(ffi.NULL, self.size, lib.PROT_READ | lib.PROT_WRITE, lib.MAP_SHARED, fd, 0)
            if ptr == ffi.cast("void *", -1):
                err = ffi.errno
                raise OSError(err, f"mmap of the replacement ring: {os.strerror(err)}")
        except BaseException:
            os.close(fd)
            raise
        self.ptr = ptr

    def close(self) -> None:
        """Unmap and close (once)."""
        from ._core import lib

        if self.fd >= 0:
            lib.munmap(self.ptr, self.size)
            os.close(self.fd)
            self.fd = -1


class Swap(NamedTuple):
    """What the namespace child's poll loop must stop and start watching after a
    replacement: the old control and splice sockets' fds, the new sockets."""

    old_ctl: int
    new_ctl: socket.socket
    old_splice: int
    new_splice: socket.socket


def ns_replace_worker(q: NsQueues, msg: _control.Message, ctl: socket.socket) -> Optional[Swap]:
    """Namespace child: WORKER_REPLACE from the orchestrator. Hand the new worker its
    rings and a new splice socket (HELLO, as at start-up; wait for ACK) while the pump
    runs, then stop the pump, swap the worker's sockets, ring and doorbells, and start it
    again. Answers WORKER_REPLACED (with "error" when the new worker refused). Returns
    what to watch instead, or None when nothing changed. A pump that fails to restart
    raises (fatal)."""
    i = msg.body.get("worker")
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(q.socks) \
            or len(msg.fds) != 2:
        msg.close_fds()
        raise ProtocolError("WORKER_REPLACE without a worker index and its two fds")
    sock_fd, memfd = msg.fds
    msg.fds = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fileno=sock_fd)
    ring = None
    evs: tuple[int, ...] = ()
    splice = None
    try:
        ring = _MappedRing(memfd, q.cfg.ring_size)
        evs = (os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK),
               os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        # a unix socket pair of the namespace (the sandbox allows AF_UNIX pairs only)
        splice, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            _control.send(sock, Msg.HELLO, {"version": _control.PROTOCOL_VERSION, "worker": i,
                                            "ring_size": q.cfg.ring_size},
                          [ring.fd, *evs, theirs.fileno()])
        finally:
            theirs.close()
        _control.expect(sock, Msg.ACK, q.cfg.startup_timeout, f"worker {i}")
    except (RingnetError, OSError) as e:
        sock.close()
        if splice is not None:
            splice.close()
        if ring is not None:
            ring.close()
        for fd in evs:
            os.close(fd)
        log.warning("replacement of worker %d failed: %s", i, e)
        _control.send(ctl, Msg.WORKER_REPLACED, {"worker": i, "error": str(e)})
        return None
    paused = time.monotonic()
    err = q.stop()
    old_sock, old_ring, old_evs, old_splice = q.socks[i], q.rings[i], q.evs[i], q.splices[i]
    q.socks[i], q.rings[i], q.evs[i], q.splices[i] = sock, ring, (evs[0], evs[1]), splice
    if err:
        raise CoreError(abs(err), "pump thread")
    q.start()
    paused = time.monotonic() - paused
    swap = Swap(old_sock.fileno(), sock, old_splice.fileno(), splice)
    old_sock.close()
    old_splice.close()
    old_ring.close()
    for fd in old_evs:
        os.close(fd)
    log.info("worker %d replaced: new rings, pump stopped for %.1f ms", i, paused * 1000)
    _control.send(ctl, Msg.WORKER_REPLACED, {"worker": i})
    return swap


# Orchestrator --------------------------------------------------------------------------

class Supervisor:
    """Watches a running Network's children from a thread of ours: replaces a worker
    that dies, fails the network when the namespace child dies or restarts come too
    often. ``events()`` lists what happened."""

    def __init__(self, net: "Network") -> None:
        self._net = net
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._failure: Optional[str] = None
        self._restarts: collections.deque[float] = collections.deque()
        self._pidfds: dict[int, "_Child"] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.clock: Callable[[], float] = time.monotonic   # of the restart window (tests)

    # public -------------------------------------------------------------------------

    def start(self) -> "Supervisor":
        """Open a pidfd of every child (alive now) and start watching."""
        for child in self._net._children:
            self._watch(child)
        self._thread = start_thread(self._run, "ringnet-supervise")
        return self

    def stop(self) -> None:
        """Stop watching (before the network tears its children down); close our fds."""
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            # a replacement under way finishes first (bounded by its own timeouts)
            self._thread.join(self._net.config.startup_timeout + 2 * _STOP_TIMEOUT)
        for fd in list(self._pidfds):
            os.close(fd)
        self._pidfds.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def events(self) -> list[dict[str, Any]]:
        """What happened, oldest first: dicts with time (epoch seconds), child ("worker 1",
        "ns"), kind ("worker_restarted", "worker_restart_failed", "network_failed") and
        reason; a restart also has old_pid and pid."""
        with self._lock:
            return [dict(e) for e in self._events]

    @property
    def failure(self) -> Optional[str]:
        """Why the network failed, or None."""
        return self._failure

    # the thread ---------------------------------------------------------------------

    def _watch(self, child: "_Child") -> None:
        fd = os.pidfd_open(child.proc.pid)
        self._pidfds[fd] = child

    def _record(self, **event: Any) -> None:
        event.setdefault("time", time.time())
        with self._lock:
            self._events.append(event)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:   # a bug of ours must not pass silently
            if not self._stopping:
                log.exception("supervisor failed")
                self._fail("ns", f"the supervisor failed: {type(e).__name__}: {e}")

    def _ns(self) -> "_Child":
        from .network import Role

        return next(c for c in self._net._children if c.role is Role.NS)

    def _loop(self) -> None:
        ns = self._ns()
        while not self._stopping and self._failure is None:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            for fd in self._pidfds:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll():
                if self._stopping:
                    return
                if fd == self._wake_r:
                    continue
                child = self._pidfds.pop(fd)
                os.close(fd)
                if child is ns:
                    self._ns_message(ns)   # its report, if it left one, and its status
                else:
                    self._worker_died(child)
                break   # the set of fds changed

    def _ns_message(self, ns: "_Child") -> None:
        """The namespace child exited: read its ERROR report if it left one (else EOF),
        and its exit status; fail the network."""
        try:
            # it exited: its report if it left one, else EOF (a bound all the same)
            msg = _control.recv(ns.ctl, timeout=_STOP_TIMEOUT)
        except (OSError, ProtocolError, TimeoutError) as e:
            msg, why = None, f" ({e})"
        else:
            why = ""
        if msg is not None:
            msg.close_fds()
            why = f": it sent an unexpected {msg.type.name}"
            if msg.type == Msg.ERROR:
                try:
                    _control.raise_error(msg, "ns")
                except RingnetError as e:
                    why = f": {e}"
        try:
            status: Optional[int] = ns.proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        self._fail("ns", f"the namespace child (pid {ns.proc.pid}) exited "
                         f"({describe_status(status)}){why}: the namespace, its interface and "
                         "every flow are gone")

    def _fail(self, child: str, reason: str) -> None:
        """The network cannot go on: record, log, mark it failed."""
        if self._failure is not None:
            return
        self._failure = reason
        self._net._supervisor_failed(reason)   # FAILED before anyone sees the event
        self._record(child=child, kind="network_failed", reason=reason)
        log.error("network failed: %s; close it (commands inside have no network)", reason)

    def _worker_died(self, child: "_Child") -> None:
        status = child.proc.wait()
        ns = self._ns()
        if ns.proc.poll() is not None:
            # the workers end when the namespace child does: that is the cause
            self._ns_message(ns)
            return
        reason = describe_status(status)
        limit = self._net.config.max_restarts
        now = self.clock()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
            self._restarts.popleft()
        if len(self._restarts) >= limit:
            self._fail(child.name, f"{role_display(child.name)} (pid {child.proc.pid}) exited "
                                   f"({reason}) after {len(self._restarts)} restarts within "
                                   f"{RESTART_WINDOW:g} s (max_restarts={limit}): giving up")
            return
        self._restarts.append(now)
        log.warning("%s (pid %d) exited (%s): its flows are reset; starting a replacement",
                    role_display(child.name), child.proc.pid, reason)
        try:
            new = self._replace(child)
        except (RingnetError, OSError) as e:
            if self._failure is not None:
                return
            try:   # a namespace child killed closes its sockets before it is waitable
                ns.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._ns_message(ns)   # the cause: the workers end with it
                return
            if not any(c is not child and c.name == child.name for c in self._pidfds.values()):
                # no replacement process to watch: nothing would bring the next attempt
                self._fail(child.name, f"{role_display(child.name)} (pid {child.proc.pid}) "
                                       f"exited ({reason}) and could not be replaced: {e}")
                return
            self._record(child=child.name, kind="worker_restart_failed", reason=f"{reason}; {e}",
                         old_pid=child.proc.pid)
            log.warning("replacing %s failed: %s", role_display(child.name), e)
            return
        self._record(child=child.name, kind="worker_restarted", reason=reason, status=status,
                     old_pid=child.proc.pid, pid=new.proc.pid)
        log.warning("%s restarted: pid %d replaces %d (%s)", role_display(child.name),
                    new.proc.pid, child.proc.pid, reason)

    def _replace(self, old: "_Child") -> "_Child":
        """Start worker ``old.index`` again with new rings (see the module's docstring)."""
        from ._core import worker_counter_names
        from ._shm import CounterArray, RingMapping
        from .stats import gauges

        net = self._net
        cfg = net.config
        i = old.index
        ns = self._ns()
        with net._query_lock:
            pos = net._children.index(old)
            old.ctl.close()
            ctr = CounterArray.create(f"w{i}")
            ns_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                # the dead worker was reaped (_worker_died): its counts are final
                gauge = gauges()
                ctr.carry_over(net._wctr[i], [k for k, name in enumerate(worker_counter_names())
                                              if name in gauge])
                # the very spec and fds of a first start, as things are now (network.py)
                new = net._spawn_worker(i, worker_end, ctr)
            except BaseException:
                ns_end.close()
                ctr.close()
                raise
            net._children[pos] = new
            net._replace_counters(i, ctr)
            self._watch(new)   # from here on its death is seen, whatever happens below
            try:
                ring = RingMapping.create(cfg.ring_size, i)
                try:
                    # one exchange at a time on its control socket: Network.socket()'s
                    # NS_SOCKET takes the same lock
                    with net._sockets.lock:
                        _control.send(ns.ctl, Msg.WORKER_REPLACE, {"worker": i},
                                      [ns_end.fileno(), ring.fd])
                        ns_end.close()
                        reply = _control.expect(ns.ctl, Msg.WORKER_REPLACED,
                                                cfg.startup_timeout + 5, "ns")
                finally:
                    ring.close()
            finally:
                ns_end.close()
            if reply.body.get("worker") != i:
                raise ProtocolError(f"WORKER_REPLACED names worker {reply.body.get('worker')!r}, "
                                    f"not {i}")
            if reply.body.get("error"):
                new.proc.kill()   # its death brings the next attempt, or the end
                raise ChildError(f"the replacement refused its rings: {reply.body['error']}")
            net._worker_resumed(new)   # offloads, a running capture
        net._publisher.reestablish(i)
        return new
