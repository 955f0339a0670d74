"""A child isolates itself once it is set up: csrc/sandbox.c does the work.

``enter("worker")`` in a worker after it accepted its rings, ``enter("nschild")``
in the namespace child before it starts its pump threads: from then on the
process has no filesystem, no capabilities, cannot be ptraced or read by other
processes of the user (not dumpable), and makes only the system calls of its
role's seccomp allow-list (others fail with EPERM). ``NetworkConfig(sandbox=False)``
turns it off; the caller passes that switch as ``enabled``.

Failure is fatal: a child that asked for isolation and did not get all of it
raises CoreError naming the step and the system call the kernel refused (for
example no user namespaces for a worker), and so never serves traffic half
isolated. What was applied is logged at INFO level.
"""

from __future__ import annotations

import errno
import logging

from ._core import check, ffi, lib

__all__ = ["ROLES", "enter", "step_names"]

log = logging.getLogger(__name__)

ROLES = {"worker": lib.RN_SANDBOX_ROLE_WORKER, "nschild": lib.RN_SANDBOX_ROLE_NSCHILD}

# The worker lives in the host's user namespace: it needs one of its own to make
# mounts. The namespace child already owns one (and may not make another once it
# has threads).
_STEPS = {
    "worker": lib.RN_SANDBOX_ALL,
    "nschild": lib.RN_SANDBOX_ALL & ~lib.RN_SANDBOX_USERNS,
}

_HINTS = {
    lib.RN_SANDBOX_USERNS: "this kernel or its configuration forbids user namespaces to "
                           "this process",
    lib.RN_SANDBOX_MOUNTNS: "the process may not make a mount namespace or mount a tmpfs",
    lib.RN_SANDBOX_ONE_THREAD: "the process already runs other threads, which would keep "
                               "their capabilities and filesystem",
    lib.RN_SANDBOX_SECCOMP: "the kernel lacks seccomp filters (CONFIG_SECCOMP_FILTER) or "
                            "this architecture has no allow-list",
}


def step_names(mask: int) -> list[str]:
    """Names of the RN_SANDBOX_* steps in ``mask``, in the order they are taken."""
    out = []
    bit = 1
    while bit <= lib.RN_SANDBOX_ONE_THREAD:
        if mask & bit:
            out.append(ffi.string(lib.rn_sandbox_step_name(bit)).decode())
        bit <<= 1
    return out


def enter(role: str, enabled: bool = True, steps: int | None = None) -> int:
    """Isolate this process as ``role`` ("worker" or "nschild"); returns the steps applied.

    ``enabled=False`` does nothing (logged). ``steps`` (tests only) takes a subset of
    the role's steps. Raises CoreError naming the refused step; the process is then
    half isolated and must exit.
    """
    if role not in ROLES:
        raise ValueError(f"unknown sandbox role {role!r}; expected one of {sorted(ROLES)}")
    if not enabled:
        log.info("%s: sandbox off (sandbox=False): not isolated", role)
        return 0
    params = ffi.new("struct rn_sandbox_params *")
    params.role = ROLES[role]
    params.steps = _STEPS[role] if steps is None else steps
    report = ffi.new("struct rn_sandbox_report *")
    rc = lib.rn_sandbox_enter(params, report)
    if rc < 0:
        failed = report.failed
        what = (f"{role} sandbox: {ffi.string(lib.rn_sandbox_step_name(failed)).decode()} "
                f"refused by {ffi.string(lib.rn_sandbox_step_call(failed)).decode()}")
        hint = _HINTS.get(failed)
        if hint and (failed == lib.RN_SANDBOX_ONE_THREAD
                     or -rc in (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EINVAL,
                                errno.ENOSYS)):
            what += f" ({hint})"
        applied = step_names(report.applied)
        what += (f"; applied before that: {', '.join(applied) or 'nothing'}"
                 "; sandbox=False turns isolation off")
        log.info("%s: %s", what, errno.errorcode.get(-rc, str(-rc)))
        check(rc, what)  # raises: the child reports it as ERROR and exits
    log.info("%s: sandboxed: %s (%d system calls allowed)", role,
             ", ".join(step_names(report.applied)), report.nrules)
    return int(report.applied)
