"""Network: one ringnet network, its processes, and commands run inside it.

The orchestrator side of ringnet. ``Network.start()`` creates the counter
arrays and control sockets, starts the workers and the namespace child (fresh
interpreters with ``pass_fds``), and waits for the namespace child's READY,
which arrives only after every worker accepted its rings. A failure at any step
tears down whatever was started and raises a RingnetError that names the step.
``close()`` stops commands still running in the namespace, asks every child to
shut down, reaps them (SIGKILL after a grace period) and closes every fd and
mapping. A Network is a context manager guarded by a state enum.

Children are known by role (Role.NS, Role.WORKER with its index), never by the
text that names them in messages. An error a child reports arrives as data
(errors.to_wire) and is re-raised as the same class, with the child's role and
failing step. The counter arrays are mapped read-only here: only the child
that owns one writes it; a replacement worker's carries on from the dead one's
event counts (Network.counters()). Threads of ours (the control socket server,
the resolv.conf watcher) start with every asynchronous signal blocked, so that a
signal sent to the process reaches the application's threads only (``ringnet
run`` takes the signals it forwards with sigtimedwait in its main thread).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from . import _control, _forwardctl, _hook, _nscall, _resolv
from ._apisock import ApiServer
from ._capture import SNAPLEN_MAX, Capture, Taps
from ._control import Msg
from ._ctlsock import ControlServer
from ._hostaddrs import HostAddrs, HostAddrWatcher, read_host_addrs
from ._core import pump_counter_names, worker_counter_names
from ._nssocket import AF_INET, SOCK_STREAM, SocketOpener
from ._netem import NetemControl
from ._nsutil import check_attach_target, check_netns_path, run_idmap_helpers
from ._preflight import require
from ._publish import Forward, Publisher
from ._rules import RuleSet
from ._resolv import ResolvWatcher, Upstream, namespace_resolv_conf
from ._shm import CounterArray
from ._supervise import Supervisor
from .config import NetworkConfig
from .errors import ChildError, NamespaceError, ProtocolError, RingnetError, from_wire, role_display
from .stats import ProcessSampler, Stats, busiest_first, flow_array

if TYPE_CHECKING:
    from socket import socket as _Socket

    import numpy as np

__all__ = ["Network", "State"]

log = logging.getLogger(__name__)

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_enter.py")
_GRACE = 5.0
_SECRET_FIELDS = ("hash_key",)


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"
    FAILED = "failed"


class Role(enum.Enum):
    """What a child process of a Network does."""

    NS = "ns"           # the namespace child: namespaces, tun device, pump threads
    WORKER = "worker"   # a host stack worker


class _Child:
    """A child process of ours with its control socket."""

    def __init__(self, role: Role, index: int, proc: subprocess.Popen, ctl: socket.socket) -> None:
        self.role = role
        self.index = index      # the worker's index; 0 for the namespace child
        self.proc = proc
        self.ctl = ctl

    @property
    def name(self) -> str:
        """The child's role as errors, stats and the control protocol name it: "ns", "worker 0"."""
        return _role_name(self.role, self.index)


def _role_name(role: Role, index: int) -> str:
    return "ns" if role is Role.NS else f"worker {index}"


def _spawn(role: Role, index: int, spec: dict, fds: list[int]) -> _Child:
    """Start the child of ``role`` (python -m ringnet._nschild or ringnet._worker) with
    ``spec``, its role and a control socket added, inheriting ``fds``."""
    module = "ringnet._nschild" if role is Role.NS else "ringnet._worker"
    # What must not be on the command line (every local user reads /proc/PID/cmdline)
    # goes over the control socket, as the first message.
    secrets_ = {k: spec[k] for k in _SECRET_FIELDS if k in spec}
    ctl, child_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The child watches this process (not the calling thread, which may be short-lived)
    # through a pidfd of ours.
    pidfd = os.pidfd_open(os.getpid())
    try:
        spec = {k: v for k, v in spec.items() if k not in _SECRET_FIELDS}
        spec.update(role=_role_name(role, index), ctl_fd=child_ctl.fileno(), parent_pidfd=pidfd)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(spec)],
            pass_fds=[child_ctl.fileno(), pidfd, *fds], stdin=subprocess.DEVNULL,
            env=_child_env(), start_new_session=True, close_fds=True,
            # -m looks in the working directory first: run where this very ringnet
            # package lives, so that a ringnet/ folder in the caller's directory (a
            # source checkout, say) cannot stand in for it.
            cwd=_PKG_PARENT)
        child = _Child(role, index, proc, ctl)
        try:
            _control.send(ctl, Msg.SECRETS, secrets_)
        except OSError:
            pass  # the child is gone already; start-up reports it
    except BaseException:
        ctl.close()
        raise
    finally:
        child_ctl.close()
        os.close(pidfd)
    return child


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + path if path else "")
    return env


def _terminate(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process of ``procs`` still running."""
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass


def _wait_or_kill(procs: list[subprocess.Popen]) -> None:
    """Reap ``procs``, giving them _GRACE seconds together; SIGKILL the slow ones."""
    deadline = time.monotonic() + _GRACE
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _reap(children: list[_Child], spawned: list[subprocess.Popen]) -> None:
    """Stop and reap every process; used by close() and when a Network is collected."""
    _terminate(spawned)
    for c in children:
        try:
            _control.send(c.ctl, Msg.SHUTDOWN)
        except OSError:
            pass
    _wait_or_kill([c.proc for c in children] + spawned)
    for c in children:
        c.ctl.close()


class Network:
    """A rootless network namespace with userspace networking through ringnet.

    ``Network(config)`` or ``Network(mtu=1500, workers=2, ...)`` describes it; entering
    the context (or ``start()``) brings it up; ``spawn()`` and ``run()`` run commands
    inside; leaving the context (or ``close()``) tears everything down.
    ``Network.attach(pid)`` gives networking to the namespace of an existing process.
    ``net.rules`` holds its egress rules (ringnet/_rules.py: add, remove, list, names).
    """

    def __init__(self, config: Optional[NetworkConfig] = None, **overrides: Any) -> None:
        if config is None:
            config = NetworkConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config: NetworkConfig = config
        self.id = secrets.token_hex(4)
        self.label = ""
        self.state = State.NEW
        self._started = 0.0
        self._sampler = ProcessSampler()
        self._ctlserver: Optional[ControlServer] = None
        self._apiserver: Optional[ApiServer] = None   # slirp4netns's API (_apisock.py)
        self._attach_pid: Optional[int] = None
        self._attach_path: Optional[tuple[str, Optional[str]]] = None   # (netns, userns)
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()   # one request/reply exchange with workers at a time
        self._children: list[_Child] = []   # the namespace child last
        self._spawned: list[subprocess.Popen] = []
        self._wctr: list[CounterArray] = []
        self._ctr_lock = threading.Lock()   # readers of _wctr's arrays vs. a replaced one's close
        self._pctr: Optional[CounterArray] = None
        self._nsfds: tuple[int, int] = (-1, -1)
        self._ready: dict[str, Any] = {}
        self._finalizer: Optional[weakref.finalize] = None
        self._resolv_dir: Optional[str] = None
        self._watcher: Optional[ResolvWatcher] = None
        self._addr_watcher: Optional[HostAddrWatcher] = None
        self._hash_key = ""   # the flow-hash secret: never on a command line
        self._publisher = Publisher(self)   # forwards of host ports (_publish.py)
        self._base_spec: dict[str, Any] = {}   # what every worker is started with (current)
        self._supervisor: Optional[Supervisor] = None   # restarts workers (_supervise.py)
        self._sockets = SocketOpener()   # sockets made inside for socket() (_nssocket.py)
        self.rules = RuleSet(self)   # egress rules (_rules.py)
        self._netem = NetemControl(config)   # network emulation settings (_netem.py)
        self._hook: Optional[_hook.HookServer] = None   # on_connect (_hook.py)
        self._taps = Taps(self)   # capture mappings, packet capture, flow log (_capture.py)

    @classmethod
    def attach(cls, pid: int, config: Optional[NetworkConfig] = None, **overrides: Any) -> "Network":
        """A Network for the net namespace of process ``pid`` (entered through its owning user
        namespace), as container runtimes use slirp4netns and pasta. Start it with ``with``
        or ``start()``. Raises NamespaceError if ``pid`` does not exist, is not ours, or
        shares our own network namespace."""
        check_attach_target(pid)
        net = cls(config, **overrides)
        net._attach_pid = pid
        return net

    @classmethod
    def attach_path(cls, netns: str, userns: Optional[str] = None,
                    config: Optional[NetworkConfig] = None, **overrides: Any) -> "Network":
        """A Network for the net namespace at path ``netns`` (``/proc/PID/ns/net``, or a bind
        mount of one such as podman's ``$XDG_RUNTIME_DIR/netns/netns-UUID``), entered through
        the user namespace at ``userns`` if given, else through the one that owns it, as
        ``slirp4netns --netns-type=path [--userns-path]`` does. Raises NamespaceError if a
        path is not a namespace of its type or ``netns`` is our own."""
        netns = os.path.abspath(netns)
        userns = os.path.abspath(userns) if userns else None
        check_netns_path(netns, userns)
        net = cls(config, **overrides)
        net._attach_path = (netns, userns)
        return net

    @property
    def _attached(self) -> bool:
        """Does this Network serve an existing namespace (attach, attach_path)?"""
        return self._attach_pid is not None or self._attach_path is not None

    # Lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> "Network":
        """Start a new network (a running one is entered as it is); a closed or failed
        Network raises RingnetError: a Network starts only once."""
        if self.state == State.NEW:
            self.start()
        elif self.state != State.RUNNING:
            raise RingnetError(f"network is {self.state.value}; a Network starts only once")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Network":
        """Bring the network up. Raises RingnetError (nothing is left running on failure)."""
        with self._lock:
            if self.state != State.NEW:
                raise RingnetError(f"network is {self.state.value}; a Network starts only once")
            self.state = State.STARTING
        try:
            self._preflight()
            self._start()
        except BaseException as e:
            self._teardown()
            self.state = State.FAILED
            if isinstance(e, (RingnetError, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(e, TimeoutError):
                raise ChildError(f"network did not start within {self.config.startup_timeout} s") from e
            raise ChildError(f"network failed to start: {e}") from e
        self._started = time.time()
        self.state = State.RUNNING
        self._supervisor = Supervisor(self).start()
        try:
            if self.config.control_socket:
                self._ctlserver = ControlServer(self.id, self._control_handlers(),
                                                self.config.control_dir)
            if self.config.api_socket:
                self._apiserver = ApiServer(self, self.config.api_socket)
        except BaseException:
            self.close()
            raise
        return self

    def _preflight(self) -> None:
        """Refuse to start, naming the exact fix, where the kernel or the system's
        configuration stops a rootless network (_preflight.py); check an attach target."""
        require(new_userns=not self._attached)
        if self._attach_path is not None:
            check_netns_path(*self._attach_path)
        elif self._attach_pid is not None:
            check_attach_target(self._attach_pid)

    def _spawn_child(self, role: Role, index: int, spec: dict, fds: list[int]) -> _Child:
        child = _spawn(role, index, spec, fds)
        self._children.append(child)
        return child

    def _spawn_worker(self, i: int, worker_end: socket.socket, ctr: CounterArray) -> _Child:
        """Start worker ``i`` with everything a worker gets, as things are now: at the
        network's start and for a replacement after a crash (_supervise.py), so the two
        cannot drift apart. Its spec: the current DNS upstreams and host addresses
        (_base_spec), the current netem settings (in its config), the rules memfd and a
        memfd of the current rule set (_rules.py), its capture mapping (the same one for a
        replacement: the capture and flow log readers go on reading it), a new hook socket
        when on_connect is set (_hook.py), its counters and its control socket towards
        the namespace child (``worker_end``, closed here). The namespace child gives it
        rings and a splice socket in HELLO; forwards and a running capture follow as
        messages. Returns the child (not added to _children)."""
        base = self._base_spec
        netem = {d: (None if v == "off" else v) for d, v in self._netem.current().items()}
        config = dict(base["config"], netem=None, netem_up=netem["up"], netem_down=netem["down"])
        rules_shm, rules_fd, rules_len = self.rules.worker_fds()
        cap_fd = self._taps.shms[i].fd
        hook_fd = self._hook.worker_end() if self._hook else -1
        try:
            return _spawn(Role.WORKER, i,
                          dict(base, config=config, index=i, ns_fd=worker_end.fileno(),
                               counters_fd=ctr.fd, rules_shm_fd=rules_shm, rules_fd=rules_fd,
                               rules_len=rules_len, hook_fd=hook_fd, capture_fd=cap_fd),
                          [worker_end.fileno(), ctr.fd, rules_shm, rules_fd, cap_fd]
                          + ([hook_fd] if self._hook else []))
        finally:
            worker_end.close()
            os.close(rules_fd)
            if self._hook:
                self._hook.children_started()

    def _worker_resumed(self, child: _Child) -> None:
        """A replacement worker runs (_supervise.py, under the query lock): what the others
        were told after start-up, as it is now (offloads, a running capture). Its
        forwards follow (Publisher.reestablish())."""
        _control.send(child.ctl, Msg.OFFLOADS, {"offloads": self.offloads})
        body = self._taps.worker_state()
        if body is not None:
            _control.send(child.ctl, Msg.CAPTURE, body)
            _control.expect(child.ctl, Msg.ACK, 5.0, child.name)

    def _start(self) -> None:
        cfg = self.config
        key = self._hash_key = os.urandom(16).hex()
        host_conf = _resolv.RESOLV_CONF
        host_ups = _resolv.read_resolv_conf(host_conf) if not cfg.dns_upstream else []
        search = _resolv.read_search_lines(host_conf) if not cfg.dns_upstream else []
        ups = list(cfg.dns_upstream) if cfg.dns_upstream else [str(u) for u in host_ups]
        if not ups:
            log.warning("no usable nameserver in %s: DNS queries inside the namespace will fail "
                        "until it names one (or set dns_upstream)", host_conf)
        host_addrs = read_host_addrs()  # refused unless allow_host
        # the rules reach workers in a memfd (_rules.py), never on a command line; the
        # on_connect hook stays in this process (_hook.child_config)
        base = {"config": dict(_hook.child_config(cfg), rules=()), "hash_key": key,
                "dns_upstreams": ups, "host_addrs": host_addrs.to_body()}
        self._base_spec = base
        self.rules.start_fds()
        self._pctr = CounterArray.create("pump")
        self._taps.create(cfg.workers)
        ns_ends: list[socket.socket] = []
        if cfg.on_connect is not None:
            self._hook = _hook.HookServer(cfg, self.rules.name_of)
        try:
            for i in range(cfg.workers):
                ctr = CounterArray.create(f"w{i}")
                self._wctr.append(ctr)
                ns_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                ns_ends.append(ns_end)
                self._children.append(self._spawn_worker(i, worker_end, ctr))
            ns = self._spawn_child(Role.NS, 0,
                                   dict(base, attach_pid=self._attach_pid,
                                        attach_path=self._attach_path,
                                        worker_fds=[s.fileno() for s in ns_ends],
                                        counters_fd=self._pctr.fd),
                                   [s.fileno() for s in ns_ends] + [self._pctr.fd])
        finally:
            for s in ns_ends:
                s.close()
        self._finalizer = weakref.finalize(self, _reap, self._children, self._spawned)
        self._wait_ready(ns)
        if self._hook is not None:
            self._hook.start()
        self._tell_workers(Msg.OFFLOADS, {"offloads": self.offloads})
        if cfg.resolv_conf and not self._attached:
            self._resolv_dir = tempfile.mkdtemp(prefix="ringnet-dns-")
            self._write_resolv_conf(search)
        if not cfg.dns_upstream:
            self._watcher = ResolvWatcher(host_conf, host_ups, search, self._dns_changed).start()
        if not cfg.allow_host:  # keep the workers' host address sets current
            self._addr_watcher = HostAddrWatcher(host_addrs, self._host_addrs_changed).start()
        for spec in cfg.publish:
            self._publisher.publish(spec)
        self._taps.start()

    # DNS: the resolv.conf offered inside, upstream changes --------------------------------

    def _write_resolv_conf(self, search: Sequence[str]) -> None:
        """(Re)write the resolv.conf that spawn() bind-mounts inside, in place (the
        mounts of running commands see the new text)."""
        if self._resolv_dir is None:
            return
        addrs = self.config.addresses()
        dns = [str(addrs[k]) for k in ("dns4", "dns6") if k in addrs]
        path = os.path.join(self._resolv_dir, "resolv.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(namespace_resolv_conf(dns, search))
        os.chmod(path, 0o644)

    def _workers(self) -> list[_Child]:
        return [c for c in self._children if c.role is Role.WORKER]

    def _tell_workers(self, type_: Msg, body: dict) -> None:
        for c in self._workers():
            try:
                _control.send(c.ctl, type_, body)
            except OSError:
                pass  # a dead worker: its replacement starts with what _base_spec holds

    def _dns_changed(self, upstreams: list[Upstream], search: list[str]) -> None:
        """The host's resolv.conf changed (called on the watcher's thread): tell every
        worker its new upstreams. Takes the query lock: a worker's control socket carries
        one exchange at a time, and flows() may be waiting for a worker's reply."""
        with self._query_lock:
            self._base_spec["dns_upstreams"] = [str(u) for u in upstreams]
            self._tell_workers(Msg.DNS_UPSTREAMS, {"upstreams": [str(u) for u in upstreams]})
            self._write_resolv_conf(search)

    def _host_addrs_changed(self, addrs: HostAddrs) -> None:
        """The host's addresses changed: tell every worker."""
        with self._query_lock:
            self._base_spec["host_addrs"] = addrs.to_body()
            self._tell_workers(Msg.HOST_ADDRS, addrs.to_body())

    def _wait_ready(self, ns: _Child) -> None:
        """Wait for READY from the namespace child, serving IDMAP requests and watching the
        workers, which report their own failures (for example refused rings)."""
        deadline = time.monotonic() + self.config.startup_timeout
        poller = select.poll()
        by_fd = {c.ctl.fileno(): c for c in self._children}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            for fd, _ in poller.poll(int(left * 1000) + 1):
                child = by_fd[fd]
                msg = _control.recv(child.ctl)
                if msg is None or msg.type == Msg.ERROR:
                    if msg is None:
                        err: RingnetError = ChildError(
                            f"exited during start-up (status {child.proc.wait(_GRACE)})")
                        err.child = child.name
                    else:
                        msg.close_fds()
                        err = from_wire(msg.body, child.name)
                    # A worker fails when the namespace child gives up and closes its end,
                    # and a worker that refuses its rings tells the namespace child too: the
                    # namespace child's report names the first cause, so prefer it.
                    if child is not ns:
                        err = self._ns_error(ns) or err
                    raise err
                if child is ns and msg.type == Msg.IDMAP:
                    self._serve_idmap(ns)
                elif child is ns and msg.type == Msg.READY and len(msg.fds) == 2:
                    self._nsfds = (msg.fds[0], msg.fds[1])
                    self._ready = msg.body
                    return
                else:
                    msg.close_fds()
                    raise ProtocolError(f"unexpected {msg.type.name} from {role_display(child.name)} "
                                        "during start-up")

    @staticmethod
    def _ns_error(ns: _Child) -> Optional[RingnetError]:
        """The error the namespace child reports if it does within a moment, else None."""
        try:
            msg = _control.recv(ns.ctl, timeout=2.0)
        except (TimeoutError, ProtocolError, OSError):
            return None
        if msg is None:
            return None
        msg.close_fds()
        return from_wire(msg.body, ns.name) if msg.type == Msg.ERROR else None

    def _serve_idmap(self, ns: _Child) -> None:
        try:
            run_idmap_helpers(ns.proc.pid)
        except RingnetError as e:
            _control.send(ns.ctl, Msg.IDMAP_DONE, {"error": str(e)})
            raise
        _control.send(ns.ctl, Msg.IDMAP_DONE)

    def close(self) -> None:
        """Tear everything down: commands still running inside, the children, fds, memory.
        Safe to call more than once."""
        with self._lock:
            if self.state in (State.CLOSED, State.NEW):
                self.state = State.CLOSED
                return
            self._teardown()
            self.state = State.CLOSED

    def _teardown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._ctlserver is not None:
            self._ctlserver.close()
            self._ctlserver = None
        if self._apiserver is not None:
            self._apiserver.close()
            self._apiserver = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._addr_watcher is not None:
            self._addr_watcher.stop()
            self._addr_watcher = None
        if not self._attached and self._nsfds[1] >= 0:
            self._kill_namespace_processes()
        self._publisher.forget()
        self._taps.flush()   # flow records so far, while their rules and names can be looked up
        self.rules.close()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _reap(self._children, self._spawned)
        self._children = []
        self._taps.close()   # the workers are gone: what they left goes to the files
        if self._hook is not None:
            self._hook.close()
            self._hook = None
        for fd in self._nsfds:
            if fd >= 0:
                os.close(fd)
        self._nsfds = (-1, -1)
        with self._ctr_lock:
            for ctr in self._wctr:
                ctr.close()
            self._wctr = []
        if self._pctr is not None:
            self._pctr.close()
            self._pctr = None
        if self._resolv_dir is not None:
            shutil.rmtree(self._resolv_dir, ignore_errors=True)
            self._resolv_dir = None

    def _kill_namespace_processes(self) -> None:
        """SIGKILL processes other than ours left in a namespace we created (for example
        daemons a command started), so the namespace dies with the network."""
        netns = os.fstat(self._nsfds[1]).st_ino
        ours = {c.proc.pid for c in self._children}
        # Commands we started get SIGTERM and a grace period first; the rest, SIGKILL.
        _terminate(self._spawned)
        _wait_or_kill(self._spawned)
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in ours:
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == netns:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue

    # Running things inside ---------------------------------------------------------------

    def _require_running(self) -> None:
        if self.state == State.FAILED and self._supervisor is not None and self._supervisor.failure:
            raise RingnetError(f"network failed: {self._supervisor.failure}")
        if self.state != State.RUNNING:
            raise RingnetError(f"network is {self.state.value}, not running")

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside the namespace; its process must inherit the
        fds in ``namespace_fds`` (``pass_fds``). With ``pid_namespace`` the command's
        PID namespace ends when this process exits."""
        self._require_running()
        if isinstance(argv, (str, bytes)) or not argv:
            raise RingnetError("argv must be a non-empty sequence of strings, not a string")
        opts = [f"--resolv-conf={self._resolv_dir}/resolv.conf"] if self._resolv_dir else []
        if self.config.pid_namespace:
            opts.append(f"--pid-ns={os.getpid()}")  # whose exit ends everything inside
        return [sys.executable, "-E", "-s", "-S", _ENTER, str(self._nsfds[0]), str(self._nsfds[1]),
                *opts, "--", *map(os.fspath, argv)]

    @property
    def namespace_fds(self) -> tuple[int, int]:
        """fds of the namespace's user and net namespaces (valid while running)."""
        self._require_running()
        return self._nsfds

    def spawn(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside the namespace; returns a subprocess.Popen (all of Popen's
        keyword arguments apply except ``executable`` and ``shell``). The command is root
        in the namespace's user namespace; it is terminated when the network closes.

        With ``pid_namespace`` (the default) the command runs in a PID namespace of its
        own, with its own /proc, as PID 2 under a small init (ringnet/_enter.py); the
        Popen is ringnet's relay process outside, which passes signals sent to it on to
        the command and ends as the command did (``returncode`` -N for signal N). When
        the command exits, or the network's process does, the init ends everything
        left inside."""
        for bad in ("executable", "shell", "preexec_fn"):
            if popen_kwargs.get(bad):
                raise RingnetError(f"spawn() does not take {bad}=")
            popen_kwargs.pop(bad, None)
        full = self.enter_argv(argv)
        pass_fds = tuple(popen_kwargs.pop("pass_fds", ())) + self._nsfds
        proc = subprocess.Popen(full, pass_fds=pass_fds, **popen_kwargs)
        proc.args = list(argv)
        self._spawned = [p for p in self._spawned if p.poll() is None] + [proc]
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _reap, self._children, self._spawned)
        return proc

    def run(self, argv: Sequence[str], *, input: Optional[bytes] = None, capture_output: bool = False,
            timeout: Optional[float] = None, check: bool = False,
            **popen_kwargs: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace and wait for it, like subprocess.run."""
        if capture_output:
            popen_kwargs["stdout"] = popen_kwargs["stderr"] = subprocess.PIPE
        if input is not None:
            popen_kwargs["stdin"] = subprocess.PIPE
        with self.spawn(argv, **popen_kwargs) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    def socket(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> "_Socket":
        """A new socket of the namespace's network for this process, as socket.socket()
        makes one of the host's: listen or connect from inside without a subprocess,
        blocking or with asyncio. ``family``: AF_INET or AF_INET6; ``type``: SOCK_STREAM
        or SOCK_DGRAM (| SOCK_NONBLOCK, SOCK_CLOEXEC); ``proto``: 0 or the type's own.
        Created by the namespace child and passed here (_nssocket.py). Raises
        ConfigError for another family or type."""
        self._require_running()
        ns = next(c for c in self._children if c.role is Role.NS)
        return self._sockets.open(ns.ctl, self._nsfds[1], family, type, proto)

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a fresh Python interpreter inside the namespace
        (as spawn() runs commands) and return its result, or raise its exception (its
        own class when it pickles, the remote traceback as its ``__cause__``). ``fn``,
        the arguments and the result travel pickled (_nscall.py): ``fn`` must be
        importable by name there (a module-level function). The result is unpickled
        here: use it only with a namespace whose processes you trust."""
        return _nscall.call(self, fn, args, kwargs)

    def call_timeout(self, timeout: Optional[float], fn: Callable[..., Any], /,
                     *args: Any, **kwargs: Any) -> Any:
        """call() with a limit: if ``fn`` has not returned within ``timeout`` seconds
        (None: no limit), its interpreter is killed and TimeoutError raised. ConfigError
        if ``timeout`` is not a positive number."""
        return _nscall.call(self, fn, args, kwargs, timeout)

    # Published ports (_publish.py) -------------------------------------------------------

    def publish(self, spec: str) -> Forward:
        """Forward host ports into the namespace: ``spec`` is
        ``[ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]`` as podman's ``-p``. Returns a handle
        whose ``close()`` removes it. Raises ConfigError or PublishError."""
        self._require_running()
        return self._publisher.publish(spec)

    def forwards(self) -> list[Forward]:
        """The forwards of this network (publish() and NetworkConfig.publish)."""
        return self._publisher.forwards()

    def netem(self, spec: Optional[str] = None, direction: str = "both") -> dict[str, str]:
        """Network emulation: with ``spec`` ("delay=20ms loss=1% rate=100mbit ...", "off"),
        set it for ``direction`` ("both", "up": namespace -> world, or "down") in every
        worker; return the current settings, ``{"up": spec, "down": spec}``. Raises
        ConfigError naming a bad key and its range."""
        self._require_running()
        if spec is None:
            return self._netem.current()
        with self._query_lock:
            return self._netem.set(self._workers(), spec, direction, self.config.faults)

    # Seeing the traffic (_capture.py, _flowlog.py) ----------------------------------------

    def capture(self, path: str, snaplen: int = SNAPLEN_MAX, seconds: Optional[float] = None) -> Capture:
        """Capture the namespace's frames, both directions, into the pcapng file ``path``
        (``tcpdump -r`` and Wireshark read it), keeping at most ``snaplen`` bytes of each
        packet, until the handle's ``close()`` or for ``seconds``. One capture at a time.
        Frames the writer could not keep up with are left out and counted
        (``handle.dropped``): capture never slows the traffic down."""
        self._require_running()
        return self._taps.capture(path, snaplen, seconds)

    # Introspection ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """PID of the namespace child (it holds the namespace and the tun device)."""
        self._require_running()
        return next(c.proc.pid for c in self._children if c.role is Role.NS)

    @property
    def worker_pids(self) -> list[int]:
        self._require_running()
        return [c.proc.pid for c in self._workers()]

    def pids(self) -> list[int]:
        """Every ringnet process of this network: the namespace child and the workers."""
        self._require_running()
        return [c.proc.pid for c in self._children]

    @property
    def ifname(self) -> str:
        return str(self._ready.get("ifname", self.config.ifname))

    @property
    def offloads(self) -> list[str]:
        """tun offloads the kernel accepted (csum, tso4, tso6, tso_ecn, uso4, uso6)."""
        return list(self._ready.get("offloads", []))

    def counters(self) -> dict[str, Any]:
        """A snapshot of the C core's counters: ``{"pump": {...}, "workers": [{...}, ...]}``.
        A worker's event counters never go backwards: a replacement worker's
        (_supervise.py) carry on from what the dead one had counted; its gauges
        (stats.gauges(): open flows, queued frames) are its own state only."""
        self._require_running()
        assert self._pctr is not None
        wnames, pnames = worker_counter_names(), pump_counter_names()
        with self._ctr_lock:
            return {"pump": self._pctr.snapshot(pnames),
                    "workers": [c.snapshot(wnames) for c in self._wctr]}

    def _replace_counters(self, i: int, ctr: CounterArray) -> None:
        """Put ``ctr``, the counter array of worker ``i``'s replacement (_supervise.py; it
        carries on from the dead worker's event counts: CounterArray.carry_over(), done by
        the caller), in the dead worker's array's place, and close that one; under the
        lock readers take, so that none reads it closed."""
        with self._ctr_lock:
            old, self._wctr[i] = self._wctr[i], ctr
            old.close()

    def stats(self) -> Stats:
        """A typed snapshot: counters, psutil figures of every ringnet process (the namespace
        child and the workers; none of the user's), and the flow table (flows())."""
        self._require_running()
        c = self.counters()
        roles = {child.proc.pid: child.name for child in self._children}
        return Stats(time=time.time(), pump=c["pump"], workers=c["workers"],
                     processes=self._sampler.sample(roles), flows=self.flows())

    def flows(self) -> "np.ndarray":
        """A snapshot of the flow tables of every worker, busiest (bytes in + out) first: a
        numpy structured array of ringnet.FLOW_DTYPE, one element per flow, with fields
        worker, proto, state, guest, guest_port, remote, remote_port, bytes_in (payload
        bytes namespace -> host), bytes_out (host -> namespace), age and idle (seconds);
        docs/ARCHITECTURE.md and ringnet.stats describe each. Each worker answers between
        two passes of its loop with its busiest flows, at most _control.FLOW_ROWS_MAX."""
        self._require_running()
        import numpy as np

        tables = []
        for child in self._workers():
            try:
                with self._query_lock:
                    _control.send(child.ctl, Msg.FLOWS, {"max": _control.FLOW_ROWS_MAX})
                    msg = _control.expect(child.ctl, Msg.FLOWS, 5.0, child.name)
            except (OSError, ProtocolError) as e:
                if child.proc.poll() is not None and self._supervisor is not None:
                    continue  # it died: its flows are gone, and the supervisor replaces it
                if isinstance(e, RingnetError) and e.child is not None:
                    raise  # the worker's own error report
                raise ChildError(f"{child.name} did not report its flows: {e}") from None
            rows = msg.body.get("rows")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ProtocolError(f"FLOWS reply of {child.name} without a list of records")
            tables.append(flow_array(dict(r, worker=child.index) for r in rows))
        return busiest_first(np.concatenate(tables) if tables else flow_array([]))

    def _control_handlers(self) -> dict[str, Callable[[dict], Any]]:
        """The control socket's commands (_ctlsock.ControlServer): name -> fn(args)."""
        return {
            "info": lambda args: self.info(),
            "stats": lambda args: self._stats_dict(),
            "events": lambda args: self.events(),
            "capture": self._taps.control,
            **_forwardctl.handlers(self),   # forward_add, forward_ls, forward_rm
            "rules": self.rules.control,
            "netem": lambda args: self.netem(args.get("spec"), args.get("direction", "both")),
        }

    def _stats_dict(self) -> dict[str, Any]:
        return dict(self.stats().to_dict(), rules=self.rules.list())

    def info(self) -> dict[str, Any]:
        """What ``ringnet ls`` shows of this network."""
        self._require_running()
        return {"id": self.id, "pid": os.getpid(), "ns_pid": self.pid, "worker_pids": self.worker_pids,
                "mode": "attach" if self._attached else "new", "attach_pid": self._attach_pid,
                "ifname": self.ifname, "cidr4": self.config.cidr4,
                "cidr6": self.config.cidr6 if self.config.ipv6 else None, "mtu": self.config.mtu,
                "workers": self.config.workers, "started": self._started, "label": self.label,
                "control_socket": self._ctlserver.path if self._ctlserver else None,
                "api_socket": self._apiserver.path if self._apiserver else None}

    @property
    def control_socket(self) -> Optional[str]:
        """Path of this network's control socket (None when disabled)."""
        return self._ctlserver.path if self._ctlserver else None

    def events(self) -> list[dict[str, Any]]:
        """What the supervisor saw, oldest first (_supervise.py): dicts with time, child,
        kind ("worker_restarted", "worker_restart_failed", "network_failed") and reason."""
        return self._supervisor.events() if self._supervisor is not None else []

    def _supervisor_failed(self, reason: str) -> None:
        """The supervisor gave up (namespace child gone, too many restarts)."""
        self.state = State.FAILED

    def failed_children(self) -> list[str]:
        """Why the network failed: children that have exited and were not, or could not
        be, replaced (empty when healthy)."""
        if self._supervisor is not None:
            return [self._supervisor.failure] if self._supervisor.failure else []
        return [f"{role_display(c.name)} (status {c.proc.returncode})" for c in self._children
                if c.proc.poll() is not None]

    def __repr__(self) -> str:
        return f"<Network {self.state.value} {self.config.cidr4} workers={self.config.workers}>"
