"""What every ringnet child process does first and last.

The orchestrator starts each child as ``python -m ringnet._nschild SPEC`` or
``python -m ringnet._worker SPEC``, where SPEC is a JSON object with the child's
parameters, its role ("ns", "worker 0") and the numbers of the inherited fds.
``run_child`` ties the child to its parent (PR_SET_PDEATHSIG, plus a check that
the parent did not die before that took effect), unblocks every signal (a
child inherits the signal mask of the orchestrator thread that started it),
sets a process name that psutil shows, and turns any failure into an ERROR
message on the control socket and a non-zero exit. The child's main function
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
from .errors import RingnetError

__all__ = ["run_child", "step", "current_step", "Stop"]

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


def run_child(name: str, main: Callable[[dict, socket.socket], int]) -> None:
    """Run ``main(spec, ctl)`` as the child process called ``ringnet-<name>`` and exit with
    its status."""
    spec = json.loads(sys.argv[1])
    ctl = socket.socket(fileno=spec["ctl_fd"])
    role = str(spec["role"])
    logging.basicConfig(level=os.environ.get("RINGNET_LOG_LEVEL", "WARNING").upper(),
                        format=f"ringnet[{role} %(process)d] %(levelname)s %(message)s")
    from ._nsutil import set_pdeathsig

    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != spec["parent_pid"]:
        sys.exit(1)  # the orchestrator died before PR_SET_PDEATHSIG took effect
    _set_comm(name)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    status = 1
    try:
        status = main(spec, ctl)
    except Stop:
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
