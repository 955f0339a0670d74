"""The one place where the C core's return codes become Python exceptions.

Everything else in ringnet calls C through the helpers here (or through ``lib``
for calls that cannot fail), so errors are reported uniformly: negative errno
return values raise CoreError naming the failing operation, and libc calls
declared in ``csrc/sys.cdef`` raise OSError with errno taken from ``ffi.errno``.
"""

from __future__ import annotations

import os

from ._ringnet_c import ffi, lib  # type: ignore[import-not-found]
from .errors import CoreError

__all__ = ["ffi", "lib", "check", "check_libc", "worker_counter_names", "pump_counter_names"]


def check(rc: int, what: str) -> int:
    """Return ``rc`` when it is not negative, else raise CoreError(-rc) naming ``what``."""
    if rc < 0:
        raise CoreError(-rc, what)
    return rc


def check_libc(rc: int, what: str) -> int:
    """Return ``rc`` unless it is -1, else raise OSError from the C errno, naming ``what``."""
    if rc == -1:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _names(count: int, name_of) -> tuple[str, ...]:
    return tuple(ffi.string(name_of(i)).decode() for i in range(count))


def worker_counter_names() -> tuple[str, ...]:
    """Names of the worker counters, in array order (from C)."""
    return _names(lib.rn_worker_counter_count(), lib.rn_worker_counter_name)


def pump_counter_names() -> tuple[str, ...]:
    """Names of the namespace pump counters, in array order (from C)."""
    return _names(lib.rn_pump_counter_count(), lib.rn_pump_counter_name)
