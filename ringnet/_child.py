"""What every ringnet child process does first and last.

The orchestrator starts each child as ``python -m ringnet._nschild SPEC`` or
``python -m ringnet._worker SPEC``, where SPEC is a JSON object with the child's
parameters and the numbers of the inherited fds. ``run_child`` ties the child
to its parent (PR_SET_PDEATHSIG, plus a check that the parent did not die
before that took effect), sets a process name that psutil shows, and turns any
failure into an ERROR message on the control socket and a non-zero exit.
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

__all__ = ["run_child", "Stop"]


class Stop(Exception):
    """Raised by a child's signal handler to unwind and tear down in order."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def run_child(name: str, main: Callable[[dict, socket.socket], int]) -> None:
    """Run ``main(spec, ctl)`` as child ``name`` and exit with its status."""
    spec = json.loads(sys.argv[1])
    ctl = socket.socket(fileno=spec["ctl_fd"])
    logging.basicConfig(level=os.environ.get("RINGNET_LOG_LEVEL", "WARNING").upper(),
                        format=f"ringnet[{name} %(process)d] %(levelname)s %(message)s")
    from ._nsutil import set_pdeathsig

    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != spec["parent_pid"]:
        sys.exit(1)  # the orchestrator died before PR_SET_PDEATHSIG took effect
    _set_comm(name)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = 1
    try:
        status = main(spec, ctl)
    except Stop:
        status = 0
    except (RingnetError, OSError, TimeoutError) as e:
        _control.send_error(ctl, f"{name}: {e}")
        status = 1
    except Exception as e:  # a bug: report it in full, to the parent and to stderr
        traceback.print_exc()
        _control.send_error(ctl, f"{name}: internal error: {type(e).__name__}: {e}")
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
