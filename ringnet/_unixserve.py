"""Pieces shared by ringnet's unix-socket servers (the control socket, _ctlsock.py, and the
slirp4netns-style API socket, _apisock.py): who the peer is, and starting and stopping the
thread that serves the listening socket one connection at a time."""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
from typing import Callable

from ._threads import start_thread

__all__ = ["peer_uid", "start_serving", "stop_serving"]


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of the connected unix socket ``conn``."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def start_serving(sock: socket.socket, answer: Callable[[socket.socket], None], name: str,
                  log: logging.Logger, what: str,
                  errors: tuple[type[BaseException], ...] = (OSError,)
                  ) -> tuple[int, int, threading.Thread]:
    """Serve the listening ``sock`` on a new thread called ``name`` (signals blocked,
    _threads.start_thread): accept one connection at a time, hand it to ``answer``, close
    it. An exception of ``errors`` out of ``answer`` is logged to ``log`` (debug, as "<what>
    failed: ...") and the next connection served. Returns the stop pipe (read end, write
    end) and the thread, for stop_serving()."""
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)

    def serve() -> None:
        while True:
            r, _, _ = select.select([sock, stop_r], [], [])
            if stop_r in r:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    answer(conn)
                except errors as e:
                    log.debug("%s failed: %s", what, e)

    return stop_r, stop_w, start_thread(serve, name)


def stop_serving(sock: socket.socket, stop_r: int, stop_w: int, thread: threading.Thread) -> None:
    """Wake the serving ``thread`` through its stop pipe (``stop_r``, ``stop_w``), wait for
    it, then close the pipe and the listening ``sock``. The socket file is the caller's."""
    os.write(stop_w, b"x")
    thread.join()
    for fd in (stop_r, stop_w):
        os.close(fd)
    sock.close()
