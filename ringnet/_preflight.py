"""Preflight: can ringnet create a network here, and if not, what exactly to change.

``available()`` answers (ok, reason) without starting anything, for ``pytest.mark.skipif``
and for a first run; ``problems()`` lists every obstacle with the exact fix. Only kernel
and device configuration is read (sysctls under /proc/sys, our AppArmor label, the mode
of /dev/net/tun); ``proc`` and ``dev`` name the roots so the logic can be checked against
a made-up configuration.

The obstacles, and where they occur:

- ``/dev/net/tun`` missing (the tun module not loaded; minimal containers) or not
  readable and writable by the user (some distributions ship it 0660).
- ``user.max_user_namespaces`` = 0: user namespaces disabled for everyone.
- ``kernel.unprivileged_userns_clone`` = 0: Debian before 11 and old Ubuntu kernels,
  which carry a patch that disables them for unprivileged users.
- ``kernel.apparmor_restrict_unprivileged_userns`` = 1: Ubuntu 23.10 and later (24.04 by
  default). ``unshare(CLONE_NEWUSER)`` still succeeds for an unconfined process, but the
  namespace gets no capabilities, so writing its uid map or creating the tun device
  fails later with EPERM. A process running under an AppArmor profile that grants
  ``userns`` is not restricted, so the check reads our own label first.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

from .errors import NamespaceError

__all__ = ["Problem", "problems", "available", "require", "apparmor_profile"]

_SYSCTL_FILE = "/etc/sysctl.d/60-ringnet.conf"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One obstacle: ``what`` is wrong, ``fix`` is the exact change that removes it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _sysctl_fix(name: str, value: str) -> str:
    return (f"sudo sysctl -w {name}={value} (and to keep it after a reboot: "
            f"echo '{name}={value}' | sudo tee {_SYSCTL_FILE})")


def _apparmor_label(proc: str) -> Optional[str]:
    """Our AppArmor label ("unconfined", or "NAME (MODE)"), None without AppArmor."""
    for path in (f"{proc}/self/attr/apparmor/current", f"{proc}/self/attr/current"):
        label = _read(path)
        if label:
            return label
    return None


def apparmor_profile(executable: Optional[str] = None) -> str:
    """An AppArmor profile that lets ``executable`` (default: this Python interpreter, with
    symlinks resolved, since AppArmor attaches to the real path) create user namespaces
    on a kernel that restricts them, for /etc/apparmor.d/ringnet."""
    exe = os.path.realpath(executable or sys.executable)
    return ("abi <abi/4.0>,\n"
            "include <tunables/global>\n\n"
            f"profile ringnet {exe} flags=(unconfined) {{\n"
            "  userns,\n"
            "  include if exists <local/ringnet>\n"
            "}\n")


def _can_rw(path: str, euid: int, groups: set[int]) -> bool:
    if euid == os.geteuid():
        return os.access(path, os.R_OK | os.W_OK)   # honours ACLs too
    if euid == 0:
        return True
    st = os.stat(path)
    if st.st_uid == euid:
        need = 0o600
    elif st.st_gid in groups:
        need = 0o060
    else:
        need = 0o006
    return st.st_mode & need == need


def problems(*, proc: str = "/proc", dev: str = "/dev", euid: Optional[int] = None,
             groups: Optional[set[int]] = None, new_userns: bool = True) -> list[Problem]:
    """Everything that would stop ``Network()`` from starting for user ``euid`` (default:
    us, with our ``groups``), read from the configuration under ``proc`` and ``dev``.
    ``new_userns=False`` skips the user namespace checks (``Network.attach`` joins an
    existing namespace instead of creating one)."""
    if euid is None:
        euid = os.geteuid()
    if groups is None:
        groups = {os.getegid(), *os.getgroups()} if euid == os.geteuid() else set()
    out: list[Problem] = []
    tun = f"{dev}/net/tun"
    if not os.path.exists(tun):
        out.append(Problem(f"{tun} does not exist",
                           "sudo modprobe tun (or in a container: sudo mkdir -p /dev/net && "
                           "sudo mknod -m 0666 /dev/net/tun c 10 200)"))
    elif not _can_rw(tun, euid, groups):
        out.append(Problem(f"{tun} is not readable and writable by uid {euid}",
                           f"sudo chmod 0666 {tun} (the mode common distributions ship)"))
    if not new_userns:
        return out
    if _read(f"{proc}/sys/user/max_user_namespaces") == "0":
        out.append(Problem("user namespaces are disabled (user.max_user_namespaces = 0)",
                           _sysctl_fix("user.max_user_namespaces", "15000")))
    if euid == 0:
        return out
    if _read(f"{proc}/sys/kernel/unprivileged_userns_clone") == "0":
        out.append(Problem("unprivileged user namespaces are disabled "
                           "(kernel.unprivileged_userns_clone = 0)",
                           _sysctl_fix("kernel.unprivileged_userns_clone", "1")))
    if _read(f"{proc}/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        label = _apparmor_label(proc)
        if label is None or label == "unconfined":
            out.append(Problem(
                "AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1, the default on Ubuntu "
                "23.10 and later): the namespace would get no capabilities",
                _sysctl_fix("kernel.apparmor_restrict_unprivileged_userns", "0")
                + "; or, to allow only this Python, write this profile to "
                "/etc/apparmor.d/ringnet and load it with "
                "sudo apparmor_parser -r /etc/apparmor.d/ringnet:\n" + apparmor_profile()))
    return out


def available(*, proc: str = "/proc", dev: str = "/dev") -> tuple[bool, str]:
    """Can ringnet create a network here? (True, "") or (False, what is wrong and the
    exact fix). For ``pytest.mark.skipif(not ringnet.available()[0], ...)``."""
    found = problems(proc=proc, dev=dev)
    if not found and proc == "/proc":
        from ._nsutil import userns_available   # imports the C core: only for the real /proc

        ok, why = userns_available()
        if not ok:
            return False, f"ringnet cannot create a network here: {why}"
    if not found:
        return True, ""
    return False, "ringnet cannot create a network here: " + "; ".join(map(str, found))


def require(*, proc: str = "/proc", dev: str = "/dev", new_userns: bool = True) -> None:
    """Raise NamespaceError naming every obstacle and its exact fix, if there is one
    (what ``Network.start()`` should check before spawning anything)."""
    found = problems(proc=proc, dev=dev, new_userns=new_userns)
    if found:
        raise NamespaceError("ringnet cannot create a network here: " + "; ".join(map(str, found)))
