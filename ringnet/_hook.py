"""The per-connection hook: ``Network(on_connect=fn)`` decides about every new flow.

``fn(flow)`` receives a :class:`Flow` (protocol, source and destination address and
port as the namespace sees them; ``name`` is None for now) and returns ``ALLOW``,
``DENY`` or ``Redirect(addr, port)``. It runs in the orchestrator (this process), on
threads of its own, never per packet: a worker asks once per new flow and holds the
flow meanwhile (csrc/verdict.c: the SYN, the first datagram or echo request is kept
and replayed once the verdict arrives, so the worker's loop never waits).

Wire: each worker has a hook socket of its own beside its control socket (an
AF_UNIX SOCK_SEQPACKET pair), because the control socket carries one request/reply
exchange at a time and asks come whenever flows start. The worker's C loop reads
and writes it itself, no Python on the way: each message is an array of
fixed-size records in host byte order, asks (csrc/verdict.h's struct
rn_verdict_ask, ``ASK``) one way and verdicts (struct rn_verdict_reply,
``REPLY``) the other, one message per verdict.

Orchestrator side (:class:`HookServer`): ``HOOK_THREADS`` threads ("ringnet-hook-N")
take turns reading the asks of every worker and run the hook, each on the ask it
read (no hand-off between threads on the way); a watchdog thread ("ringnet-hook")
keeps the deadlines. A hook that raises (logged with its traceback), returns
something else than a verdict, or is still running at ``on_connect_timeout`` gets
the fail mode (``on_connect_fail``, "deny" by default) from the watchdog, which never
runs user code, so a slow hook delays neither other asks (another thread reads
them) nor the rest of the network (stats, flows, the control socket use other
threads and sockets). A hook that never returns keeps its thread; the watchdog
starts another in its place, up to ``HOOK_THREADS_MAX``. Should every thread be
stuck all the same, the workers give their held flows the fail mode themselves,
2 s after the timeout.

A redirect target is named as the namespace would name it; host loopback
(127.0.0.1, ::1) stands for the gateway address of its family, which the
destination policy maps to host loopback only with ``allow_host_loopback``. The
target must be of the flow's address family, and the policy applies to it as to
any destination (csrc/policy.c), so a redirect reaches nothing the namespace could
not reach itself. Flows to the DNS address's port 53 are not asked.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import heapq
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._threads import start_thread
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import NetworkConfig

__all__ = ["Flow", "Action", "ALLOW", "DENY", "Redirect", "Verdict", "OnConnect", "HookServer",
           "check_options", "child_config", "worker_setup"]

log = logging.getLogger(__name__)

HOOK_THREADS = 4          # threads running the hook in the orchestrator, at first
HOOK_THREADS_MAX = 16     # ... and at most, when hooks get stuck
PENDING_MAX = 64          # flows a worker holds waiting for verdicts (csrc/verdict.c)
TIMEOUT_MAX = 60.0
CACHE_MAX = 86400.0
_WORKER_MARGIN_S = 2.0    # the worker's own deadline: the orchestrator's plus this
# csrc/verdict.h's records on the hook socket, host byte order
ASK = struct.Struct("=IBBHH16s16s2x")     # id, family, proto, sport, dport, saddr, daddr
REPLY = struct.Struct("=IBBH16s")         # id, kind, family, port, addr
_RECV_MAX = 64 * ASK.size
_PROTOS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}


class Action(enum.Enum):
    """A verdict without a target: let the flow go to its destination, or refuse it."""

    ALLOW = "allow"
    DENY = "deny"


ALLOW = Action.ALLOW
DENY = Action.DENY


@dataclasses.dataclass(frozen=True)
class Redirect:
    """A verdict: connect the flow's host socket to ``addr``:``port`` instead (the
    namespace still sees its original destination). ``addr`` is named as the namespace
    would name it; 127.0.0.1 and ::1 stand for the gateway (host loopback, which needs
    ``allow_host_loopback``). Raises ValueError for a bad address or port."""

    addr: str
    port: int

    def __post_init__(self) -> None:
        try:
            addr = ipaddress.ip_address(self.addr)
        except ValueError:
            raise ValueError(f"Redirect addr={self.addr!r} is not an IP address") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"Redirect port={self.port!r} must be an integer from 1 to 65535")
        object.__setattr__(self, "addr", str(addr))


Verdict = Union[Action, Redirect]


@dataclasses.dataclass(frozen=True)
class Flow:
    """A new flow from the namespace, as the on_connect hook sees it.

    protocol: "tcp", "udp", "icmp" or "icmp6" (echo; ports are the echo identifier);
    src, src_port: the namespace's address and port; dst, dst_port: the destination as
    the namespace names it (the gateway address for host loopback); name: the DNS name
    ringnet's DNS forwarder handed the destination out for (the rules' name table,
    _rules.py), None when it did not (the program resolved elsewhere, or the answer
    expired)."""

    protocol: str
    src: str
    src_port: int
    dst: str
    dst_port: int
    name: Optional[str] = None


OnConnect = Callable[[Flow], Verdict]

_FAIL_MODES = ("deny", "allow")


def check_options(on_connect: Any, timeout: Any, cache: Any, fail: Any) -> None:
    """Validate NetworkConfig's on_connect options; ConfigError naming the bad one."""
    if on_connect is not None and not callable(on_connect):
        raise ConfigError(f"on_connect={on_connect!r} must be a callable taking a ringnet.Flow, or None")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= TIMEOUT_MAX:
        raise ConfigError(f"on_connect_timeout={timeout!r} must be a number of seconds above 0 "
                          f"and at most {TIMEOUT_MAX:g}")
    if isinstance(cache, bool) or not isinstance(cache, (int, float)) or not 0 <= cache <= CACHE_MAX:
        raise ConfigError(f"on_connect_cache={cache!r} must be a number of seconds from 0 (no cache) "
                          f"to {CACHE_MAX:g}")
    if fail not in _FAIL_MODES:
        raise ConfigError(f"on_connect_fail={fail!r} must be one of {', '.join(map(repr, _FAIL_MODES))}")


def child_config(cfg: "NetworkConfig") -> dict:
    """The configuration as the children get it (JSON): every field but the hook itself,
    which stays in this process (no deep copy of the user's callable either)."""
    return {f.name: (None if f.name == "on_connect" else getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)}


# Orchestrator side -------------------------------------------------------------------------


class _Ask:
    """One ask of one worker, until exactly one verdict has been sent for it."""

    __slots__ = ("sock", "id", "flow", "deadline", "done", "running")

    def __init__(self, sock: socket.socket, id_: int, flow: Flow, deadline: float) -> None:
        self.sock = sock
        self.id = id_
        self.flow = flow
        self.deadline = deadline
        self.done = False
        self.running = False    # a hook thread is in the hook for it

    def __lt__(self, other: "_Ask") -> bool:
        return self.deadline < other.deadline


class HookServer:
    """Runs ``on_connect`` for the asks of every worker (see the module docstring).

    ``worker_end()`` makes each worker's hook socket pair before the worker starts;
    ``start()`` once the workers run; ``close()`` stops the threads and closes the
    sockets (a hook still running keeps its thread until it returns).

    Threads: the hook threads take turns (leader/follower): the one holding the poll
    lock waits for asks on every worker's socket, takes one message, lets the next
    thread poll and runs the hook itself, so an ask reaches the hook without a
    thread hand-off; the asks of a message beyond the first wait in a backlog for
    the next free thread. The watchdog thread gives the fail mode to asks still
    without a verdict at their deadline and, when a hook thread is stuck in the
    hook, starts another (HOOK_THREADS_MAX in all)."""

    def __init__(self, cfg: "NetworkConfig",
                 names: Optional[Callable[[int, bytes], Optional[str]]] = None) -> None:
        """``names(family, packed address)``: the DNS name of a destination, or None."""
        assert cfg.on_connect is not None
        self._fn: OnConnect = cfg.on_connect
        self._names = names
        self._timeout = float(cfg.on_connect_timeout)
        self._fail = RN_KIND[Action.ALLOW if cfg.on_connect_fail == "allow" else Action.DENY]
        self._gateways = {4: str(cfg.addresses()["gateway4"])}
        if "gateway6" in cfg.addresses():
            self._gateways[6] = str(cfg.addresses()["gateway6"])
        self._socks: list[socket.socket] = []
        self._child_ends: list[socket.socket] = []
        self._poll_lock = threading.Lock()    # who polls the sockets; guards the backlog
        self._backlog: "collections.deque[_Ask]" = collections.deque()
        self._poller: Optional[select.poll] = None
        self._by_fd: dict[int, socket.socket] = {}
        self._lock = threading.Lock()         # an ask's done flag and the sockets' sends
        self._dog = threading.Condition()     # the deadline heap
        self._deadlines: list[_Ask] = []
        self._stop = threading.Event()
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._kick = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)   # drained: a socket was added
        self._threads: list[threading.Thread] = []

    def worker_end(self) -> int:
        """A new hook socket pair: keep one end, return the fd of the worker's end (to pass
        to the worker; close it with ``children_started()``). Also once the threads run:
        a worker replaced after a crash (_supervise.py) gets a new pair, polled from the
        next round on (the kick pipe ends the current one)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socks.append(ours)
        self._child_ends.append(theirs)
        if self._poller is not None:
            self._by_fd[ours.fileno()] = ours
            self._poller.register(ours, select.POLLIN)
            os.write(self._kick[1], b"x")
        return theirs.fileno()

    def children_started(self) -> None:
        """The workers have their ends: close ours of them."""
        for s in self._child_ends:
            s.close()
        self._child_ends = []

    def start(self) -> "HookServer":
        self._poller = select.poll()
        self._by_fd = {s.fileno(): s for s in self._socks}
        for fd in self._by_fd:
            self._poller.register(fd, select.POLLIN)
        self._poller.register(self._wake[0], select.POLLIN)
        self._poller.register(self._kick[0], select.POLLIN)
        self._threads.append(start_thread(self._watchdog, "ringnet-hook"))
        for _ in range(HOOK_THREADS):
            self._add_runner()
        return self

    def _add_runner(self) -> None:
        n = len(self._threads)
        self._threads.append(start_thread(self._run, f"ringnet-hook-{n}"))

    def close(self) -> None:
        """Stop the threads (not waiting for a hook still running) and close the sockets."""
        self._stop.set()
        try:
            os.write(self._wake[1], b"x")   # never drained: wakes every poller from now on
        except OSError:
            pass
        with self._dog:
            self._dog.notify()
        until = time.monotonic() + 1.0
        for t in self._threads:    # a thread in a stuck hook is left behind (daemon)
            t.join(timeout=max(0.0, until - time.monotonic()))
        self._threads = []
        self.children_started()
        with self._lock, self._poll_lock:
            for s in self._socks:
                s.close()
            self._socks = []
            os.close(self._wake[0])
            os.close(self._wake[1])
            self._wake = (-1, -1)
            os.close(self._kick[0])
            os.close(self._kick[1])
            self._kick = (-1, -1)

    # the hook threads: poll in turn, run hooks
    def _run(self) -> None:
        while True:
            with self._poll_lock:
                ask = self._next()
            if ask is None:
                return
            ask.running = True
            try:
                verdict = self._fn(ask.flow)
                kind = self._wire(verdict, ask.flow)
            except Exception:
                log.exception("on_connect hook failed for %s: %s", ask.flow, self._fail_text())
                kind = self._fail
            ask.running = False
            self._send(ask, kind)

    def _next(self) -> Optional[_Ask]:
        """With the poll lock: the next ask to decide (from the backlog, else the sockets),
        or None when stopping."""
        assert self._poller is not None
        while not self._stop.is_set():
            while self._backlog:
                ask = self._backlog.popleft()
                if not ask.done:
                    return ask
            for fd, _ in self._poller.poll():
                if fd == self._kick[0]:
                    try:
                        os.read(fd, 64)
                    except BlockingIOError:
                        pass
                    continue
                sock = self._by_fd.get(fd)
                if sock is not None and not self._receive(sock):
                    self._poller.unregister(fd)
                    del self._by_fd[fd]
        return None

    def _name_of(self, family: int, addr: bytes) -> Optional[str]:
        """The DNS name ringnet handed ``addr`` out for, or None (and None on any failure:
        a name is information for the hook, never a reason to lose the ask)."""
        if self._names is None or family not in (4, 6):
            return None
        try:
            return self._names(family, addr)
        except Exception as e:  # noqa: BLE001 - see above
            log.debug("on_connect: name lookup failed: %s", e)
            return None

    def _receive(self, sock: socket.socket) -> bool:
        """Take one message of asks from a worker into the backlog; False when its socket
        is done."""
        try:
            data = sock.recv(_RECV_MAX)
        except BlockingIOError:
            return True
        except OSError as e:
            log.warning("on_connect: a worker's hook socket failed: %s", e)
            return False
        if not data:
            return False
        if len(data) % ASK.size:
            log.warning("on_connect: malformed ask message of %d bytes", len(data))
            return True
        deadline = time.monotonic() + self._timeout
        new = []
        for id_, family, proto, sport, dport, saddr, daddr in ASK.iter_unpack(data):
            alen = 16 if family == 6 else 4
            name = self._name_of(family, daddr[:alen])
            flow = Flow(_PROTOS.get(proto, str(proto)), str(ipaddress.ip_address(saddr[:alen])),
                        sport, str(ipaddress.ip_address(daddr[:alen])), dport, name)
            new.append(_Ask(sock, id_, flow, deadline))
        self._backlog.extend(new)
        with self._dog:
            idle = not self._deadlines
            for ask in new:
                heapq.heappush(self._deadlines, ask)
            if idle and new:
                self._dog.notify()
        return True

    # the watchdog thread: deadlines, stuck hooks
    def _watchdog(self) -> None:
        while True:
            with self._dog:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if self._deadlines and self._deadlines[0].deadline <= now:
                        break
                    # wake at the earliest deadline, at most 20 times a second
                    wait = max(self._deadlines[0].deadline - now, 0.05) if self._deadlines else None
                    self._dog.wait(wait)
                if self._stop.is_set():
                    return
                due = []
                while self._deadlines and self._deadlines[0].deadline <= now:
                    due.append(heapq.heappop(self._deadlines))
            stuck = 0
            for ask in due:
                if self._send(ask, self._fail):
                    stuck += ask.running
                    log.warning("on_connect hook gave no verdict within %g s for %s: %s",
                                self._timeout, ask.flow, self._fail_text())
            for _ in range(min(stuck, HOOK_THREADS_MAX + 1 - len(self._threads))):
                self._add_runner()

    def _fail_text(self) -> str:
        return "allowed (on_connect_fail='allow')" if self._fail[0] == 0 else "denied"

    def _wire(self, verdict: Any, flow: Flow) -> tuple:
        """A verdict as REPLY carries it: (kind, family, port, addr). Raises TypeError or
        ValueError for what is no verdict for this flow."""
        if isinstance(verdict, Action):
            return RN_KIND[verdict]
        if not isinstance(verdict, Redirect):
            raise TypeError(f"on_connect returned {verdict!r}; expected ringnet.ALLOW, ringnet.DENY "
                            "or ringnet.Redirect(addr, port)")
        addr = ipaddress.ip_address(verdict.addr)
        family = ipaddress.ip_address(flow.dst).version
        if addr.version != family:
            raise ValueError(f"on_connect redirected an IPv{family} flow to IPv{addr.version} "
                             f"address {addr}; a redirect keeps the flow's address family")
        if addr.is_loopback:
            if family not in self._gateways:
                raise ValueError(f"on_connect redirected to {addr}, but IPv{family} is off")
            addr = ipaddress.ip_address(self._gateways[family])
        return (RN_KIND_REDIRECT, family, verdict.port, addr.packed)

    def _send(self, ask: _Ask, kind: tuple) -> bool:
        """Send the one verdict of ``ask`` unless it was sent already; True if sent now."""
        with self._lock:
            if ask.done:
                return False
            ask.done = True
            if ask.sock.fileno() < 0:
                return False
            try:
                ask.sock.send(REPLY.pack(ask.id, *kind))
            except OSError:
                return False    # the worker is gone
        return True


# csrc/verdict.h's enum rn_verdict_kind, as REPLY carries it: (kind, family, port, addr)
RN_KIND = {Action.ALLOW: (0, 0, 0, b""), Action.DENY: (1, 0, 0, b"")}
RN_KIND_REDIRECT = 2


# Worker side ---------------------------------------------------------------------------------


def worker_setup(worker: Any, cfg: "NetworkConfig", sock: socket.socket) -> None:
    """Hand the hook socket to a worker's C loop (csrc/verdict.c), which asks and reads
    verdicts on it from now on. The caller keeps ``sock`` open while the worker runs."""
    from ._core import check, lib

    sock.setblocking(False)
    check(lib.rn_verdict_setup(worker, sock.fileno(), int(cfg.on_connect_cache * 1000), PENDING_MAX,
                               int((cfg.on_connect_timeout + _WORKER_MARGIN_S) * 1000),
                               int(cfg.on_connect_fail == "allow")), "rn_verdict_setup")
