"""Sockets inside the namespace for the caller's process: ``Network.socket()``.

Theory of operation
-------------------
A socket belongs to the network namespace of the process that creates it, for
its whole life, whoever holds it afterwards. The namespace child lives in the
namespace, so it creates the socket and passes it to the orchestrator over its
control socket (SCM_RIGHTS); from then on the caller's process uses it like any
other: blocking calls, timeouts, selectors, asyncio (``loop.sock_connect``,
``asyncio.open_connection(sock=...)``, ``asyncio.start_server(sock=...)``).

Why not the orchestrator itself, or a helper: joining a network namespace
(setns CLONE_NEWNET) takes CAP_SYS_ADMIN both in the namespace's owning user
namespace and in the caller's own; a rootless orchestrator has the first (it
owns the child user namespace) but not the second, unless it joins that user
namespace too, which a multithreaded process cannot do. A short-lived helper
process (a fork in C, or a fresh interpreter) could, but costs a process per
socket, where the namespace child answers in one round trip.

The exchange (Msg.NS_SOCKET, one at a time under a lock: the namespace child's
control socket carries one exchange at a time): the orchestrator checks the
request (family AF_INET or AF_INET6; type SOCK_STREAM or SOCK_DGRAM, with
SOCK_NONBLOCK / SOCK_CLOEXEC flags; a protocol of that type) and sends
``{"seq", "family", "type", "proto"}``; the namespace child checks it again,
creates the socket and answers NS_SOCKET with the fd, or with ``{"error":
errors.to_wire(...)}`` when the kernel refuses, echoing ``seq`` (a reply that
arrives after its request timed out is dropped by the next exchange). The
namespace child is not trusted: the orchestrator checks that what arrived is a
socket of the family, type and protocol asked for, in the namespace's own
network namespace (SIOCGSKNS, compared with the namespace fd from READY), or
closes it and fails.
The fd is close-on-exec from its arrival (MSG_CMSG_CLOEXEC), as every socket
Python makes is; SOCK_NONBLOCK is applied here (setblocking).

The namespace child's seccomp allow-list (csrc/sandbox.c) lets it create
AF_INET and AF_INET6 sockets only; having no capabilities, it cannot create raw
or packet sockets, and what such a socket can reach is what the namespace
reaches through the tun device anyway. The socket is the namespace's own, so
the caller binds to ports below 1024 or sets options needing CAP_NET_ADMIN
there when it owns the namespace's user namespace (always, when ringnet made
it).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from typing import Any, Optional

from . import _control
from ._control import Msg
from .errors import ChildError, ConfigError, ProtocolError, RingnetError, from_wire, to_wire

__all__ = ["SocketOpener", "check_request", "serve_request", "AF_INET", "SOCK_STREAM"]

AF_INET = socket.AF_INET
SOCK_STREAM = socket.SOCK_STREAM
SIOCGSKNS = 0x894C            # ioctl: an fd of a socket's network namespace (Linux 4.9)
_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_FAMILIES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}
_TYPES = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM"}
# protocols per (family, type); 0 picks the type's usual one, as socket(2) does
_PROTOS = {
    (socket.AF_INET, socket.SOCK_STREAM): {0: socket.IPPROTO_TCP, socket.IPPROTO_TCP: socket.IPPROTO_TCP},
    (socket.AF_INET6, socket.SOCK_STREAM): {0: socket.IPPROTO_TCP, socket.IPPROTO_TCP: socket.IPPROTO_TCP},
    (socket.AF_INET, socket.SOCK_DGRAM): {0: socket.IPPROTO_UDP, socket.IPPROTO_UDP: socket.IPPROTO_UDP,
                                          socket.IPPROTO_ICMP: socket.IPPROTO_ICMP},
    (socket.AF_INET6, socket.SOCK_DGRAM): {0: socket.IPPROTO_UDP, socket.IPPROTO_UDP: socket.IPPROTO_UDP,
                                           socket.IPPROTO_ICMPV6: socket.IPPROTO_ICMPV6},
}
REPLY_TIMEOUT = 30.0   # the namespace child answers between two passes of its loop


def _int(value: Any) -> Optional[int]:
    """``value`` as an int if it is one (an IntEnum such as socket.AF_INET too), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)


def check_request(family: Any, type: Any, proto: Any) -> tuple[int, int, int, int]:
    """Check a socket request; returns (family, base type, protocol as given, flags of
    ``type``). Raises ConfigError naming the argument and the values allowed."""
    fam, typ, pro = _int(family), _int(type), _int(proto)
    if fam not in _FAMILIES:
        raise ConfigError(f"socket(): family={family!r} is not supported inside the namespace; "
                          "give socket.AF_INET or socket.AF_INET6")
    if typ is None or (typ & ~_FLAGS) not in _TYPES:
        raise ConfigError(f"socket(): type={type!r} is not supported inside the namespace; give "
                          "socket.SOCK_STREAM or socket.SOCK_DGRAM (optionally | SOCK_NONBLOCK, "
                          "SOCK_CLOEXEC)")
    base, flags = typ & ~_FLAGS, typ & _FLAGS
    protos = _PROTOS[(fam, base)]
    if pro not in protos:
        names = {0: "0", socket.IPPROTO_TCP: "IPPROTO_TCP", socket.IPPROTO_UDP: "IPPROTO_UDP",
                 socket.IPPROTO_ICMP: "IPPROTO_ICMP", socket.IPPROTO_ICMPV6: "IPPROTO_ICMPV6"}
        raise ConfigError(f"socket(): proto={proto!r} does not go with {_FAMILIES[fam]}, "
                          f"{_TYPES[base]}; give one of "
                          + ", ".join(names[p] for p in protos))
    return fam, base, pro, flags


class SocketOpener:
    """The orchestrator's end: asks the namespace child for sockets, one at a time."""

    def __init__(self) -> None:
        # one exchange at a time on the namespace child's control socket (the supervisor's
        # WORKER_REPLACE takes it too, _supervise.py)
        self.lock = threading.Lock()
        self._seq = 0   # numbers requests: a reply that comes after its request timed out is dropped

    def open(self, ctl: socket.socket, netns_fd: int, family: Any, type: Any,
             proto: Any) -> socket.socket:
        """A socket of ``family``, ``type``, ``proto`` created inside the namespace by the
        namespace child (control socket ``ctl``), checked to belong to the network
        namespace ``netns_fd``. Raises ConfigError for a bad request, a ChildOSError
        when the kernel refuses the socket inside, ChildError or ProtocolError when the
        namespace child fails or answers wrongly."""
        fam, base, pro, flags = check_request(family, type, proto)
        with self.lock:
            self._seq += 1
            msg = self._exchange(ctl, {"seq": self._seq, "family": fam, "type": base, "proto": pro})
        if msg is None:
            raise ChildError("the namespace child closed its control connection")
        if msg.type == Msg.ERROR:
            _control.raise_error(msg, "ns")
        if msg.type != Msg.NS_SOCKET or len(msg.fds) > 1:
            msg.close_fds()
            raise ProtocolError(f"namespace child answered a socket request with {msg.type.name} "
                                f"and {len(msg.fds)} fds")
        if not msg.fds:
            err = msg.body.get("error")
            if not isinstance(err, dict):
                raise ProtocolError("namespace child answered a socket request with neither "
                                    "a socket nor an error")
            exc = from_wire(err, "ns")
            raise exc
        fd = msg.fds[0]
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise ProtocolError("namespace child sent something that is not a socket") from None
        try:
            _check_socket(sock, netns_fd, fam, base, _PROTOS[(fam, base)][pro])
        except BaseException:
            sock.close()
            raise
        if flags & socket.SOCK_NONBLOCK:
            sock.setblocking(False)
        return sock


    def _exchange(self, ctl: socket.socket, request: dict) -> Optional[_control.Message]:
        """Send ``request``, return the reply to it (None at end of file); replies to
        earlier requests that timed out are dropped, their fds closed."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        try:
            _control.send(ctl, Msg.NS_SOCKET, request)
            while True:
                msg = _control.recv(ctl, timeout=max(0.0, deadline - time.monotonic()), max_fds=1)
                if msg is None or msg.type != Msg.NS_SOCKET or msg.body.get("seq") == request["seq"]:
                    return msg
                msg.close_fds()
        except TimeoutError:
            raise ChildError(f"the namespace child did not answer a socket request within "
                             f"{REPLY_TIMEOUT:.0f} s") from None
        except OSError as e:
            raise ChildError(f"cannot ask the namespace child for a socket: {e}") from None


def _check_socket(sock: socket.socket, netns_fd: int, family: int, type_: int, proto: int) -> None:
    """Raise ProtocolError unless ``sock`` is of ``family``, ``type_``, ``proto`` and in the
    network namespace ``netns_fd``."""
    got = (int(sock.family), int(sock.type), sock.proto)
    if got != (family, type_, proto):
        raise ProtocolError(f"namespace child sent a socket of family, type, protocol {got}, "
                            f"not the {(family, type_, proto)} asked for")
    try:
        ns = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    except OSError as e:
        raise ProtocolError(f"cannot tell the network namespace of the socket the namespace "
                            f"child sent: {e.strerror}") from None
    try:
        same = os.fstat(ns).st_ino == os.fstat(netns_fd).st_ino
    finally:
        os.close(ns)
    if not same:
        raise ProtocolError("namespace child sent a socket of another network namespace")


def serve_request(ctl: socket.socket, msg: _control.Message, role: str) -> None:
    """In the namespace child: answer one NS_SOCKET request on ``ctl`` with a new socket
    of this namespace, or with the reason it cannot be made. The request comes from
    the orchestrator but is checked again; a failure is reported, never fatal."""
    msg.close_fds()
    seq = msg.body.get("seq")
    reply: dict[str, Any] = {"seq": seq} if isinstance(seq, int) and not isinstance(seq, bool) else {}
    sock = None
    try:
        fam, base, pro, _ = check_request(msg.body.get("family"), msg.body.get("type"),
                                          msg.body.get("proto"))
        sock = socket.socket(fam, base, pro)   # close-on-exec, blocking
    except (OSError, RingnetError) as e:
        _control.send(ctl, Msg.NS_SOCKET, dict(reply, error=to_wire(e, role, "create a socket")))
        return
    try:
        _control.send(ctl, Msg.NS_SOCKET, reply, [sock.fileno()])
    finally:
        sock.close()
