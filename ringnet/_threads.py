"""Threads that ringnet starts in the caller's process, with every asynchronous signal blocked.

A signal sent to a process goes to any one of its threads that does not block
it. ringnet's own threads (the control socket server, the resolv.conf and host address watchers)
must never be that thread: Python would run the handler late, in the main
thread, at whatever line it is on (a KeyboardInterrupt inside subprocess's
bookkeeping, say), a signal left at its default action would end the whole
process, and ``ringnet run``, which blocks the signals it forwards and takes
them with sigtimedwait, would never see them. So every thread of ours starts
with all asynchronous signals blocked (a new thread inherits its creator's
mask, so there is no moment when it could take one); the signals of faults
(SIGSEGV, SIGBUS, ...) stay unblocked, as the kernel delivers those to the
faulting thread regardless.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

__all__ = ["start_thread", "ASYNC_SIGNALS"]

_FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
           signal.SIGSYS, signal.SIGABRT}
ASYNC_SIGNALS = frozenset(signal.valid_signals()) - _FAULTS


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread running ``target`` with every asynchronous signal blocked."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return thread
