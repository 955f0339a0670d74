"""Namespace mechanics: creating, entering and identifying user and net namespaces.

Used by the namespace child (unshare or setns, uid/gid maps) and by the
orchestrator (checks on an attach target, the newuidmap path).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import shutil
import subprocess

from ._core import check_libc, ffi, lib
from .errors import NamespaceError

__all__ = [
    "unshare_user_net", "write_id_maps", "run_idmap_helpers", "enter_netns_of", "owning_userns",
    "check_attach_target", "ns_inode", "userns_available",
    "check_netns_path", "enter_netns_path", "in_userns_of_ours",
]

NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702
NS_GET_NSTYPE = 0xB703
NS_GET_OWNER_UID = 0xB704
_USERNS_DEPTH_MAX = 33   # the kernel nests user namespaces 32 deep
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def ns_inode(path: str) -> int:
    """Inode of a namespace file such as /proc/self/ns/net (identifies the namespace)."""
    return os.stat(path).st_ino


def userns_available() -> tuple[bool, str]:
    """Can this process create a user namespace? Returns (ok, reason if not)."""
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            with open(path) as f:
                if f.read().strip() == bad and (os.geteuid() != 0 or path.endswith("max_user_namespaces")):
                    return False, f"{path} is {bad}"
        except OSError:
            pass
    try:
        with open("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") as f:
            if f.read().strip() == "1" and os.geteuid() != 0:
                return False, "kernel.apparmor_restrict_unprivileged_userns is 1"
    except OSError:
        pass
    return True, ""


def unshare_user_net() -> None:
    """Move this (single-threaded) process into new user and net namespaces."""
    if lib.unshare(lib.CLONE_NEWUSER | lib.CLONE_NEWNET) == -1:
        err = ffi.errno
        ok, why = userns_available()
        hint = f" ({why})" if not ok else ""
        if err in (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EUSERS):
            raise NamespaceError(f"cannot create a user namespace: {os.strerror(err)}{hint}; "
                                 "enable unprivileged user namespaces "
                                 "(sysctl kernel.unprivileged_userns_clone=1 or "
                                 "user.max_user_namespaces>0)")
        raise NamespaceError(f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(err)}")


def write_id_maps(uid: int, gid: int) -> None:
    """Map ``uid``/``gid`` (our ids outside) to 0 inside, as an unprivileged process may."""
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    except OSError as e:
        raise NamespaceError(f"cannot write the uid/gid maps of the new user namespace: "
                             f"{e.strerror}") from None


def _subid_range(path: str, name: str, uid: int) -> tuple[int, int]:
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    return int(parts[1]), int(parts[2])
    except OSError:
        pass
    raise NamespaceError(f"no entry for {name} in {path}: add one (usermod --add-subuids) or "
                         "do not ask for idmap helpers")


def run_idmap_helpers(pid: int) -> None:
    """Map 0 to our ids and 1.. to our subordinate ranges in ``pid``'s user namespace."""
    import pwd

    uid, gid = os.getuid(), os.getgid()
    name = pwd.getpwuid(uid).pw_name
    for tool, path, own in (("newuidmap", "/etc/subuid", uid), ("newgidmap", "/etc/subgid", gid)):
        exe = shutil.which(tool)
        if exe is None:
            raise NamespaceError(f"{tool} is not installed (package uidmap); do not ask for "
                                 "idmap helpers, or install it")
        start, count = _subid_range(path, name, uid)
        res = subprocess.run([exe, str(pid), "0", str(own), "1", "1", str(start), str(count)],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise NamespaceError(f"{tool} failed: {res.stderr.strip() or res.returncode}")


def owning_userns(netns_fd: int) -> int:
    """fd of the user namespace that owns the net namespace ``netns_fd``."""
    try:
        return fcntl.ioctl(netns_fd, NS_GET_USERNS)
    except OSError as e:
        raise NamespaceError(f"cannot find the user namespace owning the target network "
                             f"namespace: {e.strerror}") from None


def check_attach_target(pid: int) -> None:
    """Raise NamespaceError unless ``pid`` is a live process of ours in another net namespace."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise NamespaceError(f"PID {pid!r} is not a process id")
    try:
        st = os.stat(f"/proc/{pid}")
    except FileNotFoundError:
        raise NamespaceError(f"PID {pid} does not exist") from None
    if st.st_uid != os.getuid() and os.getuid() != 0 and not in_userns_of_ours(pid):
        raise NamespaceError(f"PID {pid} belongs to uid {st.st_uid}, not to us (uid {os.getuid()}); "
                             "attach only to your own processes, or to processes in a user "
                             "namespace you created")
    try:
        target = ns_inode(f"/proc/{pid}/ns/net")
    except PermissionError:
        raise NamespaceError(f"PID {pid}'s network namespace is not accessible to us") from None
    except FileNotFoundError:
        raise NamespaceError(f"PID {pid} does not exist") from None
    if target == ns_inode("/proc/self/ns/net"):
        raise NamespaceError(f"PID {pid} shares our own network namespace; attach to a process "
                             "in a separate one (for example started with unshare -Urn)")


def in_userns_of_ours(pid: int) -> bool:
    """Is ``pid`` in a user namespace below ours whose ancestor just below ours a process
    of our uid created? Such a process may run as any uid mapped there (a container's
    non-root user, ids from /etc/subuid): its uid is not ours, but we hold every
    capability in its namespaces (the kernel's rule: the owner of the namespace whose
    parent is ours), so the kernel lets us enter them."""
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False   # not ours to look at
    own = ns_inode("/proc/self/ns/user")
    try:
        for _ in range(_USERNS_DEPTH_MAX):
            parent = fcntl.ioctl(fd, NS_GET_PARENT)   # EPERM at our own user namespace
            if os.fstat(parent).st_ino == own:
                os.close(parent)
                owner = array.array("I", [0])
                fcntl.ioctl(fd, NS_GET_OWNER_UID, owner, True)
                return owner[0] == os.getuid()
            os.close(fd)
            fd = parent
    except OSError:
        return False   # it is ours, or not below ours
    finally:
        os.close(fd)
    return False


def enter_netns_of(pid: int) -> None:
    """Enter ``pid``'s net namespace through its owning user namespace."""
    check_attach_target(pid)
    netfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        userfd = owning_userns(netfd)
        try:
            same = os.fstat(userfd).st_ino == ns_inode("/proc/self/ns/user")
            if not same:
                check_libc(lib.setns(userfd, lib.CLONE_NEWUSER), "setns(user namespace)")
        finally:
            os.close(userfd)
        check_libc(lib.setns(netfd, lib.CLONE_NEWNET), "setns(network namespace)")
    except OSError as e:
        raise NamespaceError(f"cannot enter PID {pid}'s namespaces: {e.strerror}") from None
    finally:
        os.close(netfd)


# Namespaces named by path (slirp4netns --netns-type=path, --userns-path) ----------------

def _ns_file(path: str, nstype: int, what: str) -> int:
    """An O_RDONLY fd of the namespace file ``path``; NamespaceError unless it is a
    namespace of type ``nstype`` (CLONE_NEWNET, CLONE_NEWUSER)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NamespaceError(f"cannot open the {what} namespace {path}: {e.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != nstype:
        os.close(fd)
        raise NamespaceError(f"{path} is not a {what} namespace (expected a file such as "
                             f"/proc/PID/ns/{'net' if nstype == CLONE_NEWNET else 'user'} "
                             "or a bind mount of one)")
    return fd


def check_netns_path(netns: str, userns: str | None = None) -> None:
    """Raise NamespaceError unless ``netns`` (and ``userns`` if given) name namespaces of
    the right type and ``netns`` is not our own network namespace."""
    fd = _ns_file(netns, CLONE_NEWNET, "network")
    try:
        if os.fstat(fd).st_ino == ns_inode("/proc/self/ns/net"):
            raise NamespaceError(f"{netns} is our own network namespace; give a separate one")
    finally:
        os.close(fd)
    if userns is not None:
        os.close(_ns_file(userns, CLONE_NEWUSER, "user"))


def enter_netns_path(netns: str, userns: str | None = None) -> None:
    """Enter the network namespace at ``netns`` through the user namespace at ``userns``,
    or, without one, through the user namespace that owns it (as for a PID)."""
    netfd = _ns_file(netns, CLONE_NEWNET, "network")
    try:
        userfd = _ns_file(userns, CLONE_NEWUSER, "user") if userns else owning_userns(netfd)
        try:
            if os.fstat(userfd).st_ino != ns_inode("/proc/self/ns/user"):
                check_libc(lib.setns(userfd, lib.CLONE_NEWUSER), "setns(user namespace)")
        finally:
            os.close(userfd)
        check_libc(lib.setns(netfd, lib.CLONE_NEWNET), "setns(network namespace)")
    except OSError as e:
        raise NamespaceError(f"cannot enter the network namespace {netns}"
                             f"{f' through the user namespace {userns}' if userns else ''}: "
                             f"{e.strerror}") from None
    finally:
        os.close(netfd)

