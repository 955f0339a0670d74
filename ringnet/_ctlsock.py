"""Per-network control socket: lets another process of the same user query a running network.

Each running Network listens on ``<runtime dir>/<id>.sock``, where the runtime dir is
``$XDG_RUNTIME_DIR/ringnet`` (or ``/tmp/ringnet-<uid>``), created mode 0700 and refused
if anyone else owns it or can enter it. A client connects, sends one JSON line
(``{"cmd": "info"}``, ``{"cmd": "stats"}``, or a command with arguments:
``{"cmd": NAME, "args": {...}}``) and reads one JSON line back:
``{"ok": ...}``, or ``{"error": text}`` with, for an error of the network, ``"raised"``:
the error as data (errors.to_wire), which ``query`` raises as its own class. The
server checks the peer's uid with SO_PEERCRED and answers only its owner. ``ringnet ls``,
``ringnet stats`` and ``ringnet top`` are the clients.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from typing import Any, Callable, Optional

from ._unixserve import peer_uid, start_serving, stop_serving
from .errors import RingnetError, from_wire, to_wire

__all__ = ["runtime_dir", "ControlServer", "query", "list_networks"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 4096
_TIMEOUT = 5.0


def runtime_dir(create: bool = False) -> str:
    """The directory of this user's control sockets; with ``create``, make it (0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
        path = os.path.join(base, "ringnet")
    else:
        path = f"/tmp/ringnet-{os.getuid()}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RingnetError(f"{path} is not a private directory of uid {os.getuid()} "
                           "(owner or mode 0700 wrong); remove it and retry")
    return path


class ControlServer:
    """Serves requests for one network on a thread of the owning process (started with
    signals blocked, _threads.start_thread), one at a time.

    ``handlers`` maps a command name to a function of the request's ``args`` (a dict,
    empty when the request has none) returning JSON-able data. A RingnetError it raises
    reaches the client as that error; a ValueError (a bad argument) as a RingnetError
    with its text.
    """

    def __init__(self, net_id: str, handlers: dict[str, Callable[[dict], Any]],
                 directory: Optional[str] = None) -> None:
        self.path = os.path.join(directory or runtime_dir(create=True), f"{net_id}.sock")
        self._handlers = handlers
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)
            old = os.umask(0o177)
            try:
                self._sock.bind(self.path)
            finally:
                os.umask(old)
            self._sock.listen(8)
        except OSError as e:
            self._sock.close()
            raise RingnetError(f"cannot create control socket {self.path}: {e.strerror}") from None
        self._stop_r, self._stop_w, self._thread = start_serving(
            self._sock, self._answer, f"ringnet-ctl-{net_id}", log, "control client",
            (OSError, ValueError))

    def _answer(self, conn: socket.socket) -> None:
        """Read one request line from ``conn`` and send its answer line."""
        conn.settimeout(_TIMEOUT)
        data = b""
        while b"\n" not in data and len(data) < _MAX_REQUEST:
            chunk = conn.recv(_MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        if peer_uid(conn) != os.getuid():
            conn.sendall(json.dumps({"error": "refused: this network belongs to another user"}).encode() + b"\n")
            return
        try:
            req = json.loads(data.split(b"\n", 1)[0] or b"{}")
            handler = self._handlers[req["cmd"]]
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError("args is not an object")
        except (ValueError, KeyError, TypeError, AttributeError):
            reply: Any = {"error": f"bad request; commands: {', '.join(sorted(self._handlers))}"}
        else:
            try:
                reply = {"ok": handler(args)}
            except RingnetError as e:
                # as data, so that the client raises the very error (errors.to_wire)
                reply = {"error": str(e), "raised": to_wire(e, None, None)}
            except ValueError as e:
                reply = {"error": str(e), "raised": to_wire(RingnetError(str(e)), None, None)}
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        """Stop serving and remove the socket file. Idempotent."""
        if self._stop_w < 0:
            return
        stop_serving(self._sock, self._stop_r, self._stop_w, self._thread)
        self._stop_w = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def query(path: str, cmd: str, args: Optional[dict] = None, timeout: float = _TIMEOUT) -> Any:
    """Send ``cmd`` (with ``args``, if any) to the control socket at ``path``; return the
    answer. RingnetError (or the network's own error class) on refusal or failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            req: dict[str, Any] = {"cmd": cmd}
            if args:
                req["args"] = args
            s.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except PermissionError:
            raise RingnetError(f"refused: {path} belongs to another user") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise RingnetError(f"no running network at {path}") from None
        except OSError as e:
            raise RingnetError(f"{path}: {e.strerror or e}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise RingnetError(f"{path}: malformed reply") from None
    if isinstance(reply.get("raised"), dict):
        raise from_wire(reply["raised"], None)
    if "error" in reply:
        raise RingnetError(str(reply["error"]))
    return reply["ok"]


def list_networks(directory: Optional[str] = None) -> list[dict[str, Any]]:
    """Info of every running network of this user; stale sockets are removed."""
    d = directory or runtime_dir()
    out = []
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    except PermissionError:
        raise RingnetError(f"refused: {d} belongs to another user") from None
    for name in names:
        if not name.endswith(".sock"):
            continue
        path = os.path.join(d, name)
        try:
            out.append(query(path, "info", timeout=2.0))
        except RingnetError as e:
            if "no running network" in str(e):
                try:
                    os.unlink(path)
                except OSError:
                    pass
    return out


def resolve(net_id: str, directory: Optional[str] = None) -> str:
    """Path of the control socket of network ``net_id`` (an id or a unique prefix)."""
    d = directory or runtime_dir()
    if "/" in net_id or not net_id:
        raise RingnetError(f"{net_id!r} is not a network id (see ringnet ls)")
    try:
        matches = [n for n in os.listdir(d) if n.endswith(".sock") and n.startswith(net_id)]
    except FileNotFoundError:
        matches = []
    except PermissionError:
        raise RingnetError(f"refused: {d} belongs to another user") from None
    if len(matches) != 1:
        raise RingnetError(f"no running network with id {net_id!r}" if not matches else
                           f"id {net_id!r} is ambiguous: {', '.join(m[:-5] for m in matches)}")
    return os.path.join(d, matches[0])
