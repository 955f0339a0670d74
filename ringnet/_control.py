"""Control protocol between the orchestrator, the namespace child and the workers.

Each message is one AF_UNIX SOCK_SEQPACKET datagram: a 12-byte header (magic,
protocol version, message type, body length) followed by a JSON object; file
descriptors ride along as SCM_RIGHTS. Only signalling travels here (hello, fd
passing, readiness, errors, shutdown): frame data never does.

The namespace child is not trusted, so receivers check everything: the header,
the body size, that the body is a JSON object, the number of fds; unexpected fds
are closed at once. Received fds are close-on-exec from the moment they arrive
(MSG_CMSG_CLOEXEC): nothing a child might start inherits them.

A child process watches its parent (``watch_parent`` with a pidfd of the
orchestrator): every wait for a message then also ends, with ParentGone, when
the orchestrator process has exited, whichever of its threads started us.
"""

from __future__ import annotations

import array
import enum
import json
import os
import select
import socket
import struct
import time
from typing import Any, NoReturn, Optional, Sequence

from .errors import ProtocolError, RingnetError, from_wire, role_display, to_wire

__all__ = ["Msg", "PROTOCOL_VERSION", "MAX_BODY", "FLOW_ROWS_MAX", "send", "recv", "expect", "send_error",
           "raise_error", "Message", "ParentGone", "watch_parent", "parent_gone"]

PROTOCOL_VERSION = 1
_MAGIC = 0x54434E52  # "RNCT"
_HDR = struct.Struct("<IHHI")
MAX_BODY = 60 * 1024
FLOW_ROWS_MAX = 200  # flow records in a FLOWS reply (the worker sends fewer if they do not fit)
_MAX_FDS = 2 + 64  # FORWARD_ADD: listener, handoff socket, one per other worker (64 at most)
_FD = array.array("i")


class Msg(enum.IntEnum):
    HELLO = 1       # namespace child -> worker: rings (fds: memfd, ev_worker, ev_ns, and the
                    # worker's end of the splice socket, a SOCK_SEQPACKET socketpair)
    ACK = 2         # worker -> namespace child: rings accepted; worker -> orchestrator: done
    ERROR = 3       # any -> peer: errors.to_wire() (kind, errno, child, step, error text);
                    # the sender is giving up
    READY = 4       # namespace child -> orchestrator: interface up (fds: userns, netns)
    SHUTDOWN = 5    # orchestrator -> child: stop and exit
    IDMAP = 6       # namespace child -> orchestrator: map my ids with newuidmap/newgidmap
    IDMAP_DONE = 7  # orchestrator -> namespace child: done, or {"error": text}
    DNS_UPSTREAMS = 8  # orchestrator -> worker: {"upstreams": ["ADDR:PORT", ...]}
    FLOWS = 10      # orchestrator -> worker: {"max": N}; worker -> orchestrator: {"total": N,
                    # "rows": [{field: value}]}, records named as stats.FLOW_FIELDS but "worker"
    OFFLOADS = 9    # orchestrator -> worker: {"offloads": [...]} the tun device accepted
    HOST_ADDRS = 12  # orchestrator -> worker: {"v4": [...], "v6": [...]} the host's addresses
    SECRETS = 11    # orchestrator -> child, first message: {"hash_key": hex}, what must not
                    # be on a command line (every local user can read /proc/PID/cmdline)
    FORWARD_ADD = 13  # orchestrator -> worker: {"id", "family", "addr", "port", "handoff", "out"}
                      # (fds: listener, [handoff socket], sending ends towards workers "out");
                      # answered ACK or ERROR (the worker goes on)
    FORWARD_DEL = 14  # orchestrator -> worker: {"id"}; answered ACK or ERROR
    # supervision (_supervise.py)
    WORKER_REPLACE = 29   # orchestrator -> namespace child: {"worker": i} (fds: the new
                          # worker's control socket, its fresh ring memfd); answered
                          # WORKER_REPLACED
    WORKER_REPLACED = 30  # namespace child -> orchestrator: {"worker": i}, with "error"
                          # (text) when the new worker refused its rings
    NS_SOCKET = 31  # orchestrator -> namespace child: {"seq", "family", "type", "proto"};
                    # answered NS_SOCKET {"seq"} with the socket's fd, or {"seq", "error":
                    # to_wire()} (_nssocket.py)
    RULES = 15      # orchestrator -> worker: {"size"} (fd: memfd of the rule set, _rules.py);
                    # answered ACK or ERROR (the worker keeps its old set)
    NETEM = 23      # orchestrator -> worker: {"dir": "up"|"down", "params": {...}} (_netem.py);
                    # answered ACK or ERROR (the worker goes on)
    # On the splice socket only (worker <-> namespace child), sent and read by C
    # (csrc/splice.c): this header with a fixed binary body, not JSON.
    SPLICE_REQ = 25   # worker -> namespace child: u32 count, u8 family, u8 0, u16 0: "make me
                      # count fresh TCP sockets inside the namespace" (the worker connects them)
    SPLICE_FD = 26    # namespace child -> worker: u32 count, u8 family, u8 0, u16 errno; count
                      # sockets ride as SCM_RIGHTS (errno when none could be made)
    CAPTURE = 20    # orchestrator -> worker: {"snaplen": N (0: off), "flowlog": bool}: what to
                    # put into the capture mapping (_capture.py); answered ACK


class ParentGone(Exception):
    """The orchestrator process exited while this child waited for a message."""


_parent = [-1]  # pidfd of the orchestrator, in a child process (watch_parent)


def watch_parent(pidfd: int) -> None:
    """In a child: end every wait for a message with ParentGone once the process behind
    ``pidfd`` (the orchestrator) has exited. The caller keeps owning ``pidfd``."""
    _parent[0] = pidfd


def parent_gone() -> bool:
    """True when the watched orchestrator process (watch_parent) has exited."""
    if _parent[0] < 0:
        return False
    p = select.poll()
    p.register(_parent[0], select.POLLIN)
    return bool(p.poll(0))


class Message:
    """A received control message: its type, JSON body and any file descriptors."""

    __slots__ = ("type", "body", "fds")

    def __init__(self, type_: Msg, body: dict, fds: list[int]) -> None:
        self.type = type_
        self.body = body
        self.fds = fds

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __repr__(self) -> str:
        return f"Message({self.type.name}, {self.body!r}, fds={self.fds})"


def send(sock: socket.socket, type_: Msg, body: Optional[dict] = None,
         fds: Sequence[int] = ()) -> None:
    """Send one message. Raises ProtocolError if the body is too large, OSError on I/O errors."""
    data = json.dumps(body or {}, separators=(",", ":")).encode()
    if len(data) > MAX_BODY:
        raise ProtocolError(f"control message {type_.name} body of {len(data)} bytes exceeds "
                            f"{MAX_BODY}")
    payload = _HDR.pack(_MAGIC, PROTOCOL_VERSION, int(type_), len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        # sendmsg(), as with fds: sendall() is sendto(), which the namespace child's
        # sandbox refuses (its messages after set-up: WORKER_REPLACED, ERROR)
        sock.sendmsg([payload])


def recv(sock: socket.socket, timeout: Optional[float] = None,
         max_fds: int = _MAX_FDS) -> Optional[Message]:
    """Receive one message.

    Returns None at end of file (the peer closed). Raises TimeoutError when nothing
    arrives within ``timeout`` seconds (None waits forever), ParentGone when the
    watched orchestrator exits first (in a child, watch_parent), and ProtocolError for
    a malformed message (its fds are closed first). Received fds are close-on-exec.
    """
    if timeout is not None or (_parent[0] >= 0 and sock.getblocking()):
        _wait_readable(sock, timeout)
    data, fds, flags = _recv_cloexec(sock)
    if not data and not fds:
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("control message truncated")
        if len(fds) > max_fds:
            raise ProtocolError(f"control message carries {len(fds)} fds, at most {max_fds} expected")
        if len(data) < _HDR.size:
            raise ProtocolError(f"control message of {len(data)} bytes is shorter than its header")
        magic, version, type_, length = _HDR.unpack_from(data)
        if magic != _MAGIC:
            raise ProtocolError(f"control message has bad magic {magic:#x}")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"control protocol version {version}, expected {PROTOCOL_VERSION}")
        if length != len(data) - _HDR.size:
            raise ProtocolError("control message length field disagrees with its size")
        try:
            mtype = Msg(type_)
        except ValueError:
            raise ProtocolError(f"unknown control message type {type_}") from None
        try:
            body = json.loads(data[_HDR.size:].decode()) if length else {}
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"control message body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ProtocolError("control message body is not a JSON object")
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise
    return Message(mtype, body, list(fds))


def _recv_cloexec(sock: socket.socket) -> tuple[bytes, list[int], int]:
    """One datagram and the fds it carries, close-on-exec from their arrival
    (socket.recv_fds does not pass its flags on to recvmsg)."""
    data, anc, flags, _ = sock.recvmsg(_HDR.size + MAX_BODY + 1,
                                       socket.CMSG_LEN(_MAX_FDS * _FD.itemsize),
                                       socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), flags


def _wait_readable(sock: socket.socket, timeout: Optional[float]) -> None:
    """Wait until ``sock`` is readable: TimeoutError after ``timeout`` seconds (None:
    never), ParentGone when the watched orchestrator exits first."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if _parent[0] >= 0:
        poller.register(_parent[0], select.POLLIN)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError("no control message within the time allowed")
        ready = dict(poller.poll(None if left is None else int(left * 1000) + 1))
        if _parent[0] in ready:
            raise ParentGone("the orchestrator process exited")
        if sock.fileno() in ready:
            return


def expect(sock: socket.socket, want: Msg, timeout: Optional[float], who: str,
           nfds: int = 0) -> Message:
    """Receive one message from ``who`` (the peer's role: "ns", "worker 0", "orchestrator")
    that must be ``want`` carrying exactly ``nfds`` fds.

    An ERROR message is re-raised as the error the peer reports (raise_error), end of
    file becomes a ProtocolError saying ``who`` went away.
    """
    msg = recv(sock, timeout)
    if msg is None:
        raise ProtocolError(f"{role_display(who)} closed the control connection")
    if msg.type == Msg.ERROR:
        raise_error(msg, who)
    if msg.type != want or len(msg.fds) != nfds:
        msg.close_fds()
        raise ProtocolError(f"{role_display(who)} sent {msg.type.name} with {len(msg.fds)} fds, "
                            f"expected {want.name} with {nfds}")
    return msg


def send_error(sock: socket.socket, exc: BaseException, child: str, step: str) -> None:
    """Best effort: tell the peer why we are giving up: ``exc``, raised in ``child`` (our
    role) during ``step``, as structured data (errors.to_wire)."""
    try:
        send(sock, Msg.ERROR, to_wire(exc, child, step))
    except (OSError, ProtocolError):
        pass


def raise_error(msg: Message, who: str) -> NoReturn:
    """Raise the error an ERROR message from ``who`` (the sender's role) describes, as its
    own class (errors.from_wire); closes any fds it carried."""
    msg.close_fds()
    exc: RingnetError = from_wire(msg.body, who)
    raise exc


def body_field(msg: Message, name: str, kind: type) -> Any:
    """Return ``msg.body[name]`` checked to be of ``kind``; ProtocolError otherwise."""
    value = msg.body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{msg.type.name} message field {name!r} missing or not {kind.__name__}")
    return value
