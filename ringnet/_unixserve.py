"""Pieces shared by ringnet's unix-socket servers (the control socket, _ctlsock.py, and the
slirp4netns-style API socket, _apisock.py): who the peer is, and stopping the serving thread."""

from __future__ import annotations

import os
import socket
import struct
import threading

__all__ = ["peer_uid", "stop_serving"]


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of the connected unix socket ``conn``."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def stop_serving(sock: socket.socket, stop_r: int, stop_w: int, thread: threading.Thread) -> None:
    """Wake the serving ``thread`` through its stop pipe (``stop_r``, ``stop_w``), wait for
    it, then close the pipe and the listening ``sock``. The socket file is the caller's."""
    os.write(stop_w, b"x")
    thread.join()
    for fd in (stop_r, stop_w):
        os.close(fd)
    sock.close()
