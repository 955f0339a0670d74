"""slirp4netns's API socket: ``add_hostfwd``, ``list_hostfwd``, ``remove_hostfwd`` over a unix socket.

``ringnet run|attach --api-socket PATH`` and ``ringnet-slirp4netns -a PATH``
(NetworkConfig.api_socket) serve the JSON API that slirp4netns 1.2 serves, so
that tools written for it (podman's ``port_handler=slirp4netns``, rootlesskit's
slirp4netns port driver, scripts piping JSON through ``nc -U``) publish ports
through ringnet unchanged. Requests and answers, as slirp4netns 1.2.0 sends them
(compared byte for byte against the real binary in tests/test_apisock.py)::

    {"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0",
     "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}
                                                -> {"return":{"id":1}}
    {"execute": "list_hostfwd"}                 -> {"entries":[{"id":1,"proto":"tcp",
        "host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}]}
    {"execute": "remove_hostfwd", "arguments": {"id": 1}}  -> {"return":{}}
    anything wrong                              -> {"error":{"desc":"bad request: ..."}}

(slirp4netns's manual shows list_hostfwd's answer inside ``"return"``; the program
sends it bare, and so does this.) The rules are slirp4netns's: one request per
connection, answered without a trailing newline, then the connection is shut
down; a request of 4096 bytes or more is "too large message"; the JSON is read as
parson reads it (the text ends at a NUL byte, anything after the first value is
ignored, duplicate keys, NaN and numbers out of range are parse errors, a number
where a string is expected counts as missing and vice versa, ports are truncated
to integers); ``host_addr`` defaults to 0.0.0.0 (IPv4 only: slirp4netns 1.2 has
no IPv6 forwards), ``guest_addr`` to the namespace's IPv4 address; ids count
from 1 and are never reused. Where slirp4netns answers "slirp_add_hostfwd
failed", ringnet says why (the port in use, below
net.ipv4.ip_unprivileged_port_start, an overlapping forward), after the same
"bad request: add_hostfwd: " prefix. Deliberate differences: ports outside
1..65535 are refused (slirp4netns wraps them), and a ``guest_addr`` other than
the namespace's own address is refused (ringnet forwards to that address only).

slirp4netns reads a request with one read(2), so clients that never shut their
side down still get an answer; this server answers as soon as the bytes received
form a whole JSON value, at end of file, or after _TIMEOUT seconds. Forwards are
ordinary ones of the Network (Network.publish(), listed by ``net.forwards()`` and
``ringnet forward ID ls`` too); list_hostfwd lists those added through this socket
that still exist. The socket is created mode 0600, appears at PATH only once it
listens (bound under a temporary name, then renamed), answers only peers of our
uid, and is served on a thread of the Network's process, one request at a time.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from ._unixserve import peer_uid, start_serving, stop_serving
from .errors import ConfigError, RingnetError

if TYPE_CHECKING:
    from ._publish import Forward
    from .network import Network

__all__ = ["ApiServer", "check_path", "handle_request", "MAX_REQUEST", "SUN_PATH_MAX"]

log = logging.getLogger(__name__)

MAX_REQUEST = 4096      # slirp4netns's buffer: a request this long or longer is refused
SUN_PATH_MAX = 107      # bytes of a unix socket path (sun_path holds 108 with the NUL)
_TIMEOUT = 5.0          # seconds a client may take to send its request


def check_path(path: Optional[str], name: str = "api_socket") -> None:
    """ConfigError unless ``path`` is None or a usable unix socket path (not empty, no NUL,
    at most SUN_PATH_MAX bytes). Touches no file: children check their config too."""
    if path is None:
        return
    if not isinstance(path, str) or not path or "\0" in path:
        raise ConfigError(f"{name}={path!r} must be a non-empty path")
    n = len(os.fsencode(path))
    if n > SUN_PATH_MAX:
        raise ConfigError(f"{name}={path!r} is {n} bytes long; a unix socket path holds at most "
                          f"{SUN_PATH_MAX}")


# --- requests, read as slirp4netns (parson) reads them -------------------------------------


class _BadRequest(Exception):
    """A request answered with ``{"error": {"desc": "bad request: <text>"}}``."""


def _error(desc: str) -> bytes:
    return _dump({"error": {"desc": desc}})


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")  # parson refuses the whole text
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(data: bytes) -> Any:
    """The first JSON value of ``data`` as parson parses it; ValueError if none."""
    text = data.split(b"\0", 1)[0].decode("utf-8")          # a C string: ends at NUL
    text = text.lstrip(" \t\n\r\v\f")
    dec = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    try:
        value, _ = dec.raw_decode(text)                     # what follows is ignored
    except RecursionError:
        raise ValueError("nested too deeply") from None
    _check_numbers(value)
    return value


def _check_numbers(value: Any) -> None:
    """ValueError for a number parson cannot hold (out of a double's range)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("number out of range")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 1.7976931348623157e308:
            raise ValueError("number out of range")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _complete(data: bytes) -> bool:
    """Do the bytes received so far hold a whole request (so the answer need not wait for
    the client to shut its side down)?"""
    try:
        _parse(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _arg(req: dict, key: str) -> Any:
    args = req.get("arguments")
    return args.get(key) if isinstance(args, dict) else None


def _string_arg(req: dict, key: str) -> Optional[str]:
    v = _arg(req, key)
    return v if isinstance(v, str) else None


def _number_arg(req: dict, key: str) -> int:
    """The argument as slirp4netns reads it: (int) of the number, 0 when it is missing or
    not a number."""
    v = _arg(req, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    try:
        return int(v)       # toward zero, as C's cast
    except (OverflowError, ValueError):
        return 0


def _port_arg(req: dict, key: str, what: str) -> int:
    port = _number_arg(req, key)
    if not 1 <= port <= 65535:
        raise _BadRequest(f"{what}: bad arguments.{key}")
    return port


def _ipv4_arg(req: dict, key: str, what: str, default: str) -> str:
    text = _string_arg(req, key)
    if not text:
        return default
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise _BadRequest(f"{what}: bad arguments.{key}") from None


class _Api:
    """The forwards added through one API socket, by id, and the three commands."""

    def __init__(self, net: "Network") -> None:
        self._net = net
        self._lock = threading.Lock()
        self._next_id = 1
        self._entries: dict[int, tuple["Forward", dict[str, Any]]] = {}

    def _prune(self) -> None:
        """Forget forwards removed by other means (ringnet forward rm, Forward.close())."""
        for fid in [i for i, (f, _) in self._entries.items() if f.closed]:
            del self._entries[fid]

    def add_hostfwd(self, req: dict) -> Any:
        what = "add_hostfwd"
        proto = _string_arg(req, "proto")
        if proto not in ("tcp", "udp"):
            raise _BadRequest(f"{what}: bad arguments.proto")
        host_addr = _ipv4_arg(req, "host_addr", what, "0.0.0.0")
        host_port = _port_arg(req, "host_port", what)
        guest = str(self._net.config.addresses()["guest4"])
        guest_addr = _ipv4_arg(req, "guest_addr", what, guest)
        if guest_addr != guest:
            raise _BadRequest(f"{what}: bad arguments.guest_addr: ringnet forwards to the "
                              f"namespace's address {guest} only")
        guest_port = _port_arg(req, "guest_port", what)
        try:
            fwd = self._net.publish(f"{host_addr}:{host_port}:{guest_port}/{proto}")
        except RingnetError as e:
            raise _BadRequest(f"{what}: {e}") from None
        with self._lock:
            fid = self._next_id
            self._next_id += 1
            self._entries[fid] = (fwd, {"id": fid, "proto": proto, "host_addr": host_addr,
                                        "host_port": host_port, "guest_addr": guest_addr,
                                        "guest_port": guest_port})
        log.info("api socket: forward %d: %s:%d -> %s:%d/%s", fid, host_addr, host_port,
                 guest_addr, guest_port, proto)
        return {"return": {"id": fid}}

    def list_hostfwd(self, req: dict) -> Any:
        with self._lock:
            self._prune()
            return {"entries": [entry for _, entry in self._entries.values()]}

    def remove_hostfwd(self, req: dict) -> Any:
        fid = _number_arg(req, "id")
        with self._lock:
            self._prune()
            found = self._entries.get(fid)
        if found is None:
            raise _BadRequest("remove_hostfwd: bad arguments.id")
        try:
            found[0].close()
        except RingnetError as e:
            raise _BadRequest(f"remove_hostfwd: {e}") from None
        with self._lock:
            self._entries.pop(fid, None)
        log.info("api socket: forward %d removed", fid)
        return {"return": {}}


def handle_request(api: _Api, data: bytes) -> bytes:
    """The answer to the request ``data`` (bytes as received), slirp4netns's way."""
    if len(data) >= MAX_REQUEST:
        return _error("bad request: too large message")
    try:
        req = _parse(data)
    except (ValueError, UnicodeDecodeError):
        return _error("bad request: cannot parse JSON")
    if not isinstance(req, dict):
        return _error("bad request: json_object() failed")
    execute = req.get("execute")
    if not isinstance(execute, str):
        return _error("bad request: no execute found")
    handler = {"add_hostfwd": api.add_hostfwd, "list_hostfwd": api.list_hostfwd,
               "remove_hostfwd": api.remove_hostfwd}.get(execute)
    if handler is None:
        return _error("bad request: unknown execute")
    try:
        return _dump(handler(req))
    except _BadRequest as e:
        return _error(f"bad request: {e}")


# --- the socket ----------------------------------------------------------------------------


def _bind(path: str) -> socket.socket:
    """A listening socket at ``path`` (replacing what is there, as slirp4netns does), made
    under a temporary name and renamed, so that a client that waits for the file to appear
    never finds it refusing connections. RingnetError naming the path on failure."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    if len(os.fsencode(tmp)) > SUN_PATH_MAX:
        tmp = path  # no room for a longer name: bind in place
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        for p in {tmp, path}:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old)
        sock.listen(16)
        if tmp != path:
            os.rename(tmp, path)
    except OSError as e:
        sock.close()
        if tmp != path:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise RingnetError(f"api socket {path}: {e.strerror or e}") from None
    return sock


class ApiServer:
    """slirp4netns's API for ``net`` on the unix socket at ``path``, served on a thread of
    ours (signals blocked) until close(), which removes the socket file."""

    def __init__(self, net: "Network", path: str) -> None:
        check_path(path)
        self.path = os.path.abspath(path)
        self._api = _Api(net)
        self._sock = _bind(self.path)
        self._ino = os.stat(self.path).st_ino
        self._stop_r, self._stop_w, self._thread = start_serving(
            self._sock, self._answer, "ringnet-api-socket", log, "api socket client")

    def _answer(self, conn: socket.socket) -> None:
        """Read one request from ``conn`` (until it is whole, at end of file or after
        _TIMEOUT seconds), send its answer and shut the connection down."""
        deadline = time.monotonic() + _TIMEOUT
        data = b""
        while len(data) < MAX_REQUEST and not (data and _complete(data)):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            try:
                chunk = conn.recv(MAX_REQUEST - len(data))
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        if peer_uid(conn) != os.getuid():
            conn.sendall(_error("refused: this network belongs to another user"))
        else:
            log.debug("api socket request: %r", data[:200])
            conn.sendall(handle_request(self._api, data))
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Stop serving and remove the socket file (if it is still ours). Idempotent."""
        if self._stop_w < 0:
            return
        stop_serving(self._sock, self._stop_r, self._stop_w, self._thread)
        self._stop_w = -1
        try:
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
