"""What every ringnet child process does first and last.

The orchestrator starts each child as ``python -m ringnet._nschild SPEC`` or
``python -m ringnet._worker SPEC``, where SPEC is a JSON object with the child's
parameters, its role ("ns", "worker 0") and the numbers of the inherited fds.
``run_child`` ties the child to its parent process: the orchestrator passes a
pidfd of itself, which every wait for a control message watches
(``_control.watch_parent``) and the main loops poll, so the child ends when the
orchestrator process exits (not when the thread that started it does, as
PR_SET_PDEATHSIG would). It sets no_new_privs, unblocks every signal (a child
inherits the signal mask of the orchestrator thread that started it), sets a
process name that psutil shows, takes what must not be on its command line
(the flow-hash key) from the SECRETS message that comes first on its control
socket, and turns any failure into an ERROR message on the control socket and a
non-zero exit. Once set up, a child calls ``setup_done()``: it is no longer
dumpable, so other processes of the user (root inside the namespace among
them) can neither ptrace it nor open its /proc files. The child's main function
names what it is doing with ``step()``; the ERROR message carries the failing
step with the error's class and errno (errors.to_wire), so the orchestrator
re-raises the very error, not a text about it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import traceback
from typing import Callable

from . import _control
from ._control import Msg
from .errors import ProtocolError, RingnetError

__all__ = ["run_child", "step", "current_step", "setup_done", "parent_gone", "Stop"]

PR_SET_NO_NEW_PRIVS = 38    # linux/prctl.h; stable ABI
SECRETS_TIMEOUT = 30.0

_step = ["start"]


class Stop(Exception):
    """Raised by a child's signal handler to unwind and tear down in order."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def step(name: str) -> None:
    """Say what this child is doing now; an error report names the step it failed in."""
    _step[0] = name


def current_step() -> str:
    """What this child said it is doing (step())."""
    return _step[0]


def parent_gone() -> bool:
    """True once the orchestrator process has exited."""
    return _control.parent_gone()


def setup_done() -> None:
    """Set-up is over: make this process not dumpable (no ptrace, no /proc/PID/fd or mem
    for other processes of the user; no core dump)."""
    from ._core import check_libc, lib

    check_libc(lib.prctl(lib.PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def _take_secrets(spec: dict, ctl: socket.socket) -> None:
    """Add the SECRETS message's fields (the first message from the orchestrator) to
    ``spec``."""
    msg = _control.expect(ctl, Msg.SECRETS, SECRETS_TIMEOUT, "orchestrator")
    key = msg.body.get("hash_key")
    if not isinstance(key, str) or len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
        raise ProtocolError("SECRETS message without a 16-byte hash key")
    spec["hash_key"] = key


def run_child(name: str, main: Callable[[dict, socket.socket], int]) -> None:
    """Run ``main(spec, ctl)`` as the child process called ``ringnet-<name>`` and exit with
    its status."""
    spec = json.loads(sys.argv[1])
    ctl = socket.socket(fileno=spec["ctl_fd"])
    role = str(spec["role"])
    logging.basicConfig(level=os.environ.get("RINGNET_LOG_LEVEL", "WARNING").upper(),
                        format=f"ringnet[{role} %(process)d] %(levelname)s %(message)s")
    from ._core import check_libc, lib

    _control.watch_parent(spec["parent_pidfd"])
    if _control.parent_gone():
        sys.exit(1)  # the orchestrator exited before we started
    check_libc(lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _set_comm(name)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    status = 1
    try:
        _take_secrets(spec, ctl)
        status = main(spec, ctl)
    except (Stop, _control.ParentGone):
        status = 0
    except (RingnetError, OSError) as e:  # OSError includes TimeoutError
        _control.send_error(ctl, e, role, current_step())
        status = 1
    except Exception as e:  # a bug: report it in full, to the parent and to stderr
        traceback.print_exc()
        _control.send_error(ctl, e, role, current_step())
        status = 2
    finally:
        ctl.close()
    sys.exit(status)


def _set_comm(name: str) -> None:
    """Name the process (what ps and psutil.Process.name() show) ``ringnet-<name>``."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(f"ringnet-{name}"[:15])
    except OSError:
        pass
