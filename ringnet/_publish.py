"""Inbound port forwarding (publishing a port): spec parser, host listeners, forwards.

A spec is what podman and docker users write after ``-p``::

    [ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]      e.g. 8080:80, 127.0.0.1:8080:80/tcp,
                                                          [::1]:8080-8081:80-81

``parse_spec()`` checks it and names the bad part. ``Publisher`` (one per Network)
opens the host listeners here in the orchestrator, so that "port in use" and "port
below net.ipv4.ip_unprivileged_port_start" are reported with the port they concern,
and hands every listener to every worker (FORWARD_ADD, with fds). Route: through the
C core (csrc/forward.c): the worker accepts and opens the connection towards the
namespace through the tun; clients on host loopback appear from the gateway address,
others with their real address. A client's real address and port fix the flow's
hash, hence the worker the namespace's replies go to; the worker that accepted it
hands the socket to that worker over a handoff socket: per forward, one SOCK_DGRAM
socketpair per worker (its receiving end to that worker, the sending end to every
other). With one worker there are none.

Workers own every fd of a forward once they have acknowledged FORWARD_ADD; the
orchestrator keeps only a copy of each listener (and of each UDP forward's socket),
closed with the forward (FORWARD_DEL, or the network's end), so that a worker started
again after a crash (_supervise.py) gets its forwards again: ``reestablish()`` removes
each TCP forward from every worker and adds it anew with new handoff sockets, on the
same listener (connections waiting in its accept queue stay there), and gives a UDP
forward's socket again to the replacement when the dead worker served it.

Clients on host loopback take the splice route instead (csrc/splice.c, unless
``splice_local`` is off): the worker connects a socket the namespace child made
inside the namespace (to its loopback, else the forward's address) and relays the
two sockets with splice(); the namespace sees them from its own loopback.

UDP forwards (csrc/udp_fwd.c): the bound UDP socket goes to one worker, the one that
owns the namespace address and port it forwards to (``udp_owner()``): a UDP flow
belongs to the worker of its namespace endpoint (csrc/flow.h), so that the namespace's
replies from that endpoint, to any client, reach it. The worker keeps one flow per
sender, so replies return to the sender they answer; flows expire after
``udp_timeout`` idle. Senders appear as for TCP, without handoff.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _control
from ._control import Msg
from .errors import ConfigError, ProtocolError, PublishError, RingnetError

if TYPE_CHECKING:
    from .network import Network

__all__ = ["PortSpec", "Forward", "Publisher", "parse_spec", "open_listener", "worker_forward"]

log = logging.getLogger(__name__)

IPAddr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
SPEC_FORM = "[ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]"
PORT_MIN, PORT_MAX = 1, 65535
_UNPRIV_SYSCTL = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
REPLY_TIMEOUT = 10.0


def _covers(a: Optional[IPAddr], b: Optional[IPAddr]) -> bool:
    """Whether a listener on host address ``a`` (None: all) takes connections meant for
    ``b``: all addresses and the unspecified ones (0.0.0.0 for its family; :: for both,
    as a dual-stack socket) cover every address they serve."""
    if a is None:
        return True
    if a.is_unspecified:
        return b is None or a.version == 6 or b.version == a.version
    return a == b


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A parsed publish spec: ``host_addr`` None means all addresses; port ranges are
    (first, last), of equal length."""

    text: str
    host_addr: Optional[IPAddr]
    host_ports: tuple[int, int]
    ns_ports: tuple[int, int]
    proto: str = "tcp"

    def pairs(self) -> list[tuple[int, int]]:
        """(host port, namespace port) of every port the spec publishes."""
        return [(self.host_ports[0] + i, self.ns_ports[0] + i)
                for i in range(self.host_ports[1] - self.host_ports[0] + 1)]


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"publish spec {text!r}: {why}")


def _port_range(text: str, part: str, what: str) -> tuple[int, int]:
    first, sep, last = part.partition("-")
    ports = []
    for p in (first, last) if sep else (first,):
        if not p.isdigit() or not PORT_MIN <= int(p) <= PORT_MAX:
            raise _bad(text, f"{what} {p!r} is not a port number ({PORT_MIN}..{PORT_MAX})")
        ports.append(int(p))
    if len(ports) == 1:
        return ports[0], ports[0]
    if ports[1] < ports[0]:
        raise _bad(text, f"{what} range {part} ends before it starts")
    return ports[0], ports[1]


def _ports(n: int) -> str:
    return f"{n} port" if n == 1 else f"{n} ports"


def parse_spec(text: str) -> PortSpec:
    """Parse ``[ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]`` (an IPv6 ADDR in brackets:
    ``[::1]:8080:80``). Raises ConfigError naming the bad part and what is allowed."""
    if not isinstance(text, str):
        raise ConfigError(f"publish spec {text!r} is not a string of the form {SPEC_FORM}")
    spec = text.strip()
    if not spec:
        raise ConfigError(f"publish spec is empty: expected {SPEC_FORM}")
    proto = "tcp"
    if "/" in spec:
        spec, _, proto = spec.rpartition("/")
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise _bad(text, f"protocol {proto!r} is neither tcp nor udp")
    addr_text: Optional[str] = None
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise _bad(text, "'[' without ']' around the IPv6 host address")
        addr_text, rest = spec[1:close], spec[close + 1:]
        if not rest.startswith(":"):
            raise _bad(text, f"expected ':' after the host address; the form is {SPEC_FORM}")
        parts = rest[1:].split(":")
        if len(parts) != 2:
            raise _bad(text, f"expected HOSTPORT:NSPORT after the host address; the form is {SPEC_FORM}")
    else:
        parts = spec.split(":")
        if len(parts) == 3:
            addr_text, parts = parts[0], parts[1:]
        elif len(parts) > 3:
            raise _bad(text, "an IPv6 host address goes in brackets, as in [::1]:8080:80")
        elif len(parts) != 2:
            raise _bad(text, f"expected {SPEC_FORM}")
    addr: Optional[IPAddr] = None
    if addr_text is not None:
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise _bad(text, f"host address {addr_text!r} is not an IP address") from None
        if spec.startswith("[") and addr.version != 6:
            raise _bad(text, f"host address {addr_text!r} in brackets is not an IPv6 address")
    host = _port_range(text, parts[0], "host port")
    ns = _port_range(text, parts[1], "namespace port")
    nh, nn = host[1] - host[0] + 1, ns[1] - ns[0] + 1
    if nh != nn:
        raise _bad(text, f"host port range {parts[0]} ({_ports(nh)}) and namespace port range "
                         f"{parts[1]} ({_ports(nn)}) must be of equal length")
    return PortSpec(text, addr, host, ns, proto)


def unprivileged_port_start() -> int:
    """net.ipv4.ip_unprivileged_port_start (1024 where it cannot be read)."""
    try:
        with open(_UNPRIV_SYSCTL, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def open_listener(addr: Optional[IPAddr], port: int, proto: str = "tcp") -> socket.socket:
    """A non-blocking TCP listener (or, for ``proto`` "udp", a bound UDP socket) on
    ``addr`` (None: every address, IPv6 and IPv4 where the host has IPv6) and ``port``.
    Raises PublishError naming the port when it is in use, privileged, or the address is
    not the host's."""
    where = f"[{addr}]:{port}" if addr is not None and addr.version == 6 else f"{addr or '*'}:{port}"
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    if addr is None:
        try:
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            bind_to: tuple = ("::", port)
        except OSError:
            s = socket.socket(socket.AF_INET, kind)
            bind_to = ("0.0.0.0", port)
    else:
        s = socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET, kind)
        bind_to = (str(addr), port)
    try:
        if kind == socket.SOCK_STREAM:
            # A port whose previous connections linger in TIME_WAIT can be published again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(bind_to)
        if kind == socket.SOCK_STREAM:
            s.listen(socket.SOMAXCONN)
        s.setblocking(False)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            raise PublishError(e.errno, f"host port {port} is already in use ({where})") from None
        if e.errno == errno.EACCES and port < unprivileged_port_start():
            raise PublishError(e.errno, f"host port {port} is below net.ipv4.ip_unprivileged_port_start "
                                        f"({unprivileged_port_start()}): publishing it needs "
                                        "CAP_NET_BIND_SERVICE, or a lower value of that sysctl") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise PublishError(e.errno, f"host address {addr} is not an address of this host "
                                        f"(publishing {where})") from None
        raise PublishError(e.errno or 0, f"cannot listen on host port {port} ({where}): "
                                         f"{e.strerror or e}") from None
    return s


class Forward:
    """A published spec: its host listeners and where they lead. ``close()`` removes it
    (the host ports are closed again; connections already made go on)."""

    def __init__(self, publisher: "Publisher", spec: PortSpec, ids: list[int],
                 ports: list[tuple[int, int]], ns_addr: IPAddr) -> None:
        self.spec = spec
        self.ids = ids
        self.ports = ports          # (host port, namespace port) pairs
        self.ns_addr = ns_addr
        self._publisher = publisher
        self.closed = False

    def info(self) -> dict[str, Any]:
        return {"spec": self.spec.text, "proto": self.spec.proto,
                "host_addr": str(self.spec.host_addr) if self.spec.host_addr else None,
                "ports": [list(p) for p in self.ports], "ns_addr": str(self.ns_addr),
                "ids": list(self.ids)}

    def close(self) -> None:
        """Remove the forward; the host ports stop accepting. Closing twice is fine."""
        if not self.closed:
            self._publisher.remove(self)

    def __enter__(self) -> "Forward":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Forward {self.spec.text} -> {self.ns_addr}{' closed' if self.closed else ''}>"


def udp_owner(hash_key: bytes, nworkers: int, ns_addr: IPAddr, ns_port: int) -> int:
    """The index of the worker that owns UDP flows from ``ns_addr``:``ns_port`` inside
    the namespace: the C core's rule (csrc/flow.c rn_flow_owner_key()), which the pump
    routes the namespace's datagrams by."""
    from ._core import ffi, lib

    k = ffi.new("struct rn_flow_key *")
    k.family, k.proto, k.sport = ns_addr.version, socket.IPPROTO_UDP, ns_port
    k.saddr = list(ns_addr.packed.ljust(16, b"\0"))
    return int(lib.rn_flow_owner_key(hash_key, max(nworkers, 1), k))


class Publisher:
    """A Network's forwards: publish(), the list, removal. Uses the Network's workers
    and its query lock (one request/reply exchange per worker control socket at a time)."""

    def __init__(self, net: "Network") -> None:
        self._net = net
        self._next_id = 1
        self._lock = threading.Lock()
        self._forwards: list[Forward] = []
        # forward id -> (our copy of its listener or UDP socket, namespace address and port)
        self._listeners: dict[int, tuple[socket.socket, IPAddr, int]] = {}
        self._udp_owner: dict[int, int] = {}  # UDP forward id -> index of the worker serving it

    def publish(self, text: str) -> Forward:
        """Publish ``text`` (see parse_spec); raises ConfigError for a bad or overlapping
        spec, PublishError when a host port cannot be listened on, or the worker's error."""
        spec = parse_spec(text)
        cfg = self._net.config
        addrs = cfg.addresses()
        v6 = spec.host_addr is not None and spec.host_addr.version == 6 and \
            spec.host_addr.ipv4_mapped is None and "guest6" in addrs
        ns_addr = addrs["guest6" if v6 else "guest4"]
        with self._lock:
            self._check_overlap(spec)
            fwd = Forward(self, spec, [], [], ns_addr)
            try:
                for host_port, ns_port in spec.pairs():
                    lst = open_listener(spec.host_addr, host_port, spec.proto)
                    try:
                        fid = self._next_id
                        self._next_id += 1
                        if spec.proto == "udp":
                            self._add_udp(fid, lst, ns_addr, ns_port)
                        else:
                            self._add(fid, lst, ns_addr, ns_port)
                    except BaseException:
                        lst.close()
                        raise
                    self._listeners[fid] = (lst, ns_addr, ns_port)  # for reestablish()
                    fwd.ids.append(fid)
                    fwd.ports.append((host_port, ns_port))
            except BaseException:
                for fid in fwd.ids:
                    self._del(fid)
                raise
            self._forwards.append(fwd)
        log.info("published %s -> %s", spec.text, ns_addr)
        return fwd

    def _check_overlap(self, spec: PortSpec) -> None:
        for other in self._forwards:
            o = other.spec
            if o.proto != spec.proto or o.host_ports[1] < spec.host_ports[0] or \
                    spec.host_ports[1] < o.host_ports[0]:
                continue
            if _covers(o.host_addr, spec.host_addr) or _covers(spec.host_addr, o.host_addr):
                raise _bad(spec.text, f"host ports overlap those of the forward {o.text!r}")

    def _add(self, fid: int, lst: socket.socket, ns_addr: IPAddr, ns_port: int) -> None:
        """FORWARD_ADD to every worker, with the listener and the handoff sockets."""
        workers = self._net._workers()
        n = len(workers)
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(n)] if n > 1 else []
        added: list[Any] = []
        try:
            for child in workers:
                i = child.index
                out = [j for j in range(n) if j != i]
                fds = [lst.fileno()] + ([pairs[i][0].fileno()] if pairs else []) + \
                      [pairs[j][1].fileno() for j in out if pairs]
                body = {"id": fid, "family": ns_addr.version, "addr": str(ns_addr), "port": ns_port,
                        "handoff": bool(pairs), "out": out if pairs else []}
                self._exchange(child, Msg.FORWARD_ADD, body, fds)
                added.append(child)
        except BaseException:
            for child in added:
                try:
                    self._exchange(child, Msg.FORWARD_DEL, {"id": fid})
                except (RingnetError, OSError):
                    pass
            raise
        finally:
            for a, b in pairs:
                a.close()
                b.close()

    def _add_udp(self, fid: int, sock: socket.socket, ns_addr: IPAddr, ns_port: int,
                 owner: Optional[int] = None) -> None:
        """FORWARD_ADD of a UDP forward to the worker that owns its namespace endpoint
        (``owner``: that worker's index, given again when it was replaced): a datagram
        cannot be handed on as a connection can, so one worker serves all its clients."""
        workers = self._net._workers()
        if owner is None:
            owner = udp_owner(bytes.fromhex(self._net._hash_key), self._net.config.workers,
                              ns_addr, ns_port)
        child = next(c for c in workers if c.index == owner)
        body = {"id": fid, "family": ns_addr.version, "addr": str(ns_addr), "port": ns_port,
                "proto": "udp", "handoff": False, "out": []}
        self._exchange(child, Msg.FORWARD_ADD, body, [sock.fileno()])
        self._udp_owner[fid] = child.index

    def _exchange(self, child: Any, type_: Msg, body: dict, fds: list[int] = ()) -> None:
        with self._net._query_lock:
            _control.send(child.ctl, type_, body, fds)
            _control.expect(child.ctl, Msg.ACK, REPLY_TIMEOUT, child.name)

    def _del(self, fid: int) -> None:
        kept = self._listeners.pop(fid, None)
        if kept is not None:
            kept[0].close()
        first: Optional[BaseException] = None
        owner = self._udp_owner.pop(fid, None)
        for child in self._net._workers():
            if owner is not None and child.index != owner:
                continue
            try:
                self._exchange(child, Msg.FORWARD_DEL, {"id": fid})
            except (RingnetError, OSError) as e:
                first = first or e
        if first is not None:
            raise first

    def remove(self, fwd: Forward) -> None:
        """Remove ``fwd``; ConfigError if it is not (or no longer) a forward of ours."""
        with self._lock:
            if fwd not in self._forwards:
                raise ConfigError(f"no forward {fwd.spec.text!r} to remove")
            self._forwards.remove(fwd)
            fwd.closed = True
            if self._net.state.value != "running":
                return
            for fid in fwd.ids:
                self._del(fid)
        log.info("removed forward %s", fwd.spec.text)

    def forwards(self) -> list[Forward]:
        with self._lock:
            return list(self._forwards)

    def forget(self) -> None:
        """The network is going away: its workers close every forward's sockets, and we
        our copies of the listeners."""
        with self._lock:
            for fwd in self._forwards:
                fwd.closed = True
            self._forwards = []
            for lst, _, _ in self._listeners.values():
                lst.close()
            self._listeners = {}

    def reestablish(self, index: int) -> None:
        """Worker ``index`` was replaced (_supervise.py): hand every TCP forward to every
        worker again, with new handoff sockets (the replacement's are new, and every other
        worker's sending end towards it is stale), and give the replacement the UDP
        forwards its predecessor served. Raises the first worker's error."""
        with self._lock:
            for fid, (lst, ns_addr, ns_port) in sorted(self._listeners.items()):
                owner = self._udp_owner.get(fid)
                if owner is not None:
                    if owner == index:   # the others never had it
                        self._add_udp(fid, lst, ns_addr, ns_port, owner)
                        log.info("UDP forward %d handed to worker %d again", fid, index)
                    continue
                for child in self._net._workers():
                    try:
                        self._exchange(child, Msg.FORWARD_DEL, {"id": fid})
                    except (RingnetError, OSError):
                        pass  # the replacement has none yet
                self._add(fid, lst, ns_addr, ns_port)
                log.info("forward %d handed to the workers again", fid)


# Worker side ------------------------------------------------------------------------------


def worker_forward(worker: Any, ctl: socket.socket, msg: _control.Message) -> None:
    """FORWARD_ADD / FORWARD_DEL from the orchestrator, in a worker: call the C core and
    answer ACK, or ERROR (the worker goes on). Owns ``msg.fds`` (closed unless the C core
    took them)."""
    from ._core import check, ffi, lib

    try:
        fid = _control.body_field(msg, "id", int)
        if msg.type == Msg.FORWARD_DEL:
            msg.close_fds()
            check(lib.rn_worker_forward_del(worker, fid), "rn_worker_forward_del")
        else:
            out = msg.body.get("out")
            handoff = msg.body.get("handoff")
            if not isinstance(out, list) or not all(isinstance(j, int) and 0 <= j < lib.RN_FWD_WORKERS_MAX
                                                   for j in out) or not isinstance(handoff, bool):
                raise ProtocolError("FORWARD_ADD without a valid handoff list")
            if msg.body.get("proto", "tcp") not in ("tcp", "udp") or \
                    (msg.body.get("proto") == "udp" and (handoff or out)):
                raise ProtocolError("FORWARD_ADD with a bad protocol")
            if len(msg.fds) != 1 + int(handoff) + len(out):
                raise ProtocolError(f"FORWARD_ADD carries {len(msg.fds)} fds, "
                                    f"expected {1 + int(handoff) + len(out)}")
            addr = ipaddress.ip_address(_control.body_field(msg, "addr", str))
            port = _control.body_field(msg, "port", int)
            if addr.version != msg.body.get("family") or not PORT_MIN <= port <= PORT_MAX:
                raise ProtocolError("FORWARD_ADD with a bad namespace address or port")
            lfd = msg.fds[0]
            packed = addr.packed + bytes(16 - len(addr.packed))
            if msg.body.get("proto") == "udp":
                check(lib.rn_worker_forward_add_udp(worker, fid, lfd, addr.version,
                                                    ffi.new("uint8_t[16]", list(packed)), port),
                      "rn_worker_forward_add_udp")
                msg.fds = []
                _control.send(ctl, Msg.ACK)
                return
            hand_in = msg.fds[1] if handoff else -1
            nout = max(out) + 1 if out else 0
            arr = ffi.new("int[]", max(nout, 1))
            for j in range(nout):
                arr[j] = -1
            for j, fd in zip(out, msg.fds[1 + int(handoff):]):
                arr[j] = fd
            packed = addr.packed + bytes(16 - len(addr.packed))
            nsaddr = ffi.new("uint8_t[16]", list(packed))
            check(lib.rn_worker_forward_add(worker, fid, lfd, addr.version, nsaddr, port, hand_in,
                                            arr, nout), "rn_worker_forward_add")
            msg.fds = []  # the C core owns them now
    except (RingnetError, OSError, ValueError) as e:
        msg.close_fds()
        # child None: the orchestrator names the worker it asked
        _control.send_error(ctl, e if not isinstance(e, ValueError) else ProtocolError(str(e)),
                            None, msg.type.name)
        return
    _control.send(ctl, Msg.ACK)
