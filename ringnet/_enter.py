"""Run a command inside a ringnet namespace.

    python _enter.py USERNS_FD NETNS_FD [--resolv-conf=FILE] [--pid-ns=PID] -- ARGV...

Run as a plain script (not ``-m``), so starting it imports neither ringnet nor
cffi. It joins the user and net namespaces whose fds it inherited and closes
them. With ``--resolv-conf=FILE`` it bind-mounts FILE over /etc/resolv.conf
(through a symlink to its target) in a mount namespace of its own, whose mounts
are all private so that nothing propagates back to the host; resolvers inside
then ask ringnet's DNS address. If that mount is impossible (for example
/etc/resolv.conf is a dangling symlink) the command still runs, with a warning.

Without ``--pid-ns`` it then execs ARGV, which sees the host's processes.

Theory of operation (``--pid-ns=PID``, the default of Network.spawn)
----------------------------------------------------------------------
The command runs in a PID namespace of its own with its own /proc, so that
nothing inside can name, signal, ptrace or open the /proc files of ringnet's
processes (or any other process of the host). Three processes::

    this process (the relay, host PIDs)      what Network.spawn() returns
      +-- init (PID 1 in the new PID namespace)
            +-- ARGV (PID 2)

- The relay joins the namespaces, enters a private mount namespace (below),
  mounts resolv.conf, unshares the PID namespace, forks the init, and then
  only relays: user-sent signals (kill(), not the terminal's, which reach the
  whole process group anyway) go to the init, and it exits as ARGV did (by
  the same signal, or with the same status), which the init reports through a
  pipe (a namespace's init cannot die of a signal it sends itself).
- The init mounts a fresh /proc of the new PID namespace, forks ARGV, reaps
  every orphan inside, relays user-sent signals to ARGV and exits with it:
  the kernel then kills everything left in the namespace. It also ends (and
  so ends everything inside) when the relay dies (PR_SET_PDEATHSIG: the relay
  has one thread) or when PID, the orchestrator, exits (a pidfd of it).
- ARGV unshares its own mount namespace before exec.

The mounts must not be removable from inside: root inside could otherwise
unmount the new /proc and reach the host's /proc beneath it, where every
process of the user (the orchestrator, the user's shell) is open to it by
path. The kernel locks mounts (MNT_LOCKED) when it copies a mount namespace
into one owned by another user namespace. So the mount namespace where /proc
and resolv.conf are mounted is created by a short-lived helper in a child user
namespace of the network's, and the relay joins it; ARGV's own mount namespace,
a copy owned by the network's user namespace, then holds those mounts locked.
ARGV keeps every capability it had in the network's user namespace (it owns
the network namespace, so ip, ping and tcpdump work as before). The relay and
the init are not dumpable and set no_new_privs once they have forked what
comes after them.

Exit status 125 if the namespaces cannot be set up, 127 if ARGV cannot be
found, 126 if it cannot be executed, as shells do; otherwise ARGV's.
"""

import ctypes
import os
import select
import signal
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
SFD_CLOEXEC = 0o2000000
SI_KERNEL = 0x80
RESOLV_CONF = b"/etc/resolv.conf"
NO_PID_NS = ("; to run it without (seeing the host's processes): pid_namespace=False, "
             "--no-pid-namespace")
USAGE = "usage: _enter.py USERNS_FD NETNS_FD [--resolv-conf=FILE] [--pid-ns=PID] -- ARGV...\n"

# Signals the relay and the init pass on; the others are the kernel's to deliver
_NOT_RELAYED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
                signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
RELAYED = frozenset(signal.valid_signals()) - _NOT_RELAYED
_STATUS = struct.Struct("i")

libc = ctypes.CDLL(None, use_errno=True)


class SigSet(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]


def fail(text: str, status: int) -> None:
    """Print ``text`` as ringnet's and exit with ``status`` (os._exit: also in forks)."""
    sys.stderr.write(f"ringnet: {text}\n")
    sys.stderr.flush()
    os._exit(status)


def errtext() -> str:
    return os.strerror(ctypes.get_errno())


def parse(args: list) -> tuple:
    """(userns fd, netns fd, resolv.conf file or None, orchestrator PID or None, argv);
    exits 2 on a usage error."""
    try:
        userfd, netfd = int(args[0]), int(args[1])
        rest = args[2:]
        resolv = pid = None
        while rest and rest[0].startswith("--") and rest[0] != "--":
            name, _, value = rest.pop(0).partition("=")
            if name == "--resolv-conf" and value:
                resolv = value
            elif name == "--pid-ns" and value.isdigit() and int(value) > 0:
                pid = int(value)
            else:
                raise ValueError
        if rest[0] != "--" or len(rest) < 2:
            raise ValueError
    except (IndexError, ValueError):
        sys.stderr.write(USAGE)
        sys.exit(2)
    return userfd, netfd, resolv, pid, rest[1:]


def join(userfd: int, netfd: int) -> None:
    """Enter the network's user and net namespaces; exits 125 on failure."""
    same_user = os.fstat(userfd).st_ino == os.stat("/proc/self/ns/user").st_ino
    for fd, flag, what in ((userfd, CLONE_NEWUSER, "user"), (netfd, CLONE_NEWNET, "network")):
        if flag == CLONE_NEWUSER and same_user:
            continue
        if libc.setns(fd, flag) != 0:
            fail(f"cannot enter the {what} namespace: {errtext()}", 125)
    os.close(userfd)
    os.close(netfd)


def offer_resolv_conf(path: str, unshare: bool) -> None:
    """Bind-mount ``path`` over /etc/resolv.conf, first in a private mount namespace of
    our own when ``unshare``; warns on failure."""
    if unshare and libc.unshare(CLONE_NEWNS) != 0:
        what = "create a mount namespace"
    elif unshare and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        what = "make the mounts private"
    elif libc.mount(os.fsencode(path), RESOLV_CONF, None, MS_BIND, None) != 0:
        what = f"bind-mount {path} over /etc/resolv.conf"
    else:
        return
    sys.stderr.write(f"ringnet: warning: cannot {what} ({errtext()}); names resolve as the host's "
                     "/etc/resolv.conf says, which may not work inside\n")


def enter_locking_mount_ns() -> None:
    """Join a new private mount namespace owned by a child user namespace of ours, so
    that mounts made in it are locked in any copy ARGV makes (see the header); exits 125
    on failure. Keeps the working directory."""
    cwd = os.getcwd()
    up_r, up_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the helper: make the namespace, hold it until the relay has joined
        os.close(up_r)
        os.close(hold_w)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            os.write(up_w, f"create a user and mount namespace: {errtext()}".encode())
        elif libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os.write(up_w, f"make the mounts private: {errtext()}".encode())
        else:
            os.write(up_w, b"ok")
            os.read(hold_r, 1)
        os._exit(0)
    os.close(up_w)
    os.close(hold_r)
    try:
        said = os.read(up_r, 512).decode(errors="replace")
        if said != "ok":
            fail(f"cannot {said or 'create a mount namespace'}{NO_PID_NS}", 125)
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        rc = libc.setns(fd, CLONE_NEWNS)
        os.close(fd)
        if rc != 0:
            fail(f"cannot enter the new mount namespace: {errtext()}{NO_PID_NS}", 125)
    finally:
        os.close(up_r)
        os.close(hold_w)
        os.waitpid(pid, 0)
    try:
        os.chdir(cwd)  # setns() moved us to the namespace's root
    except OSError as e:
        fail(f"cannot return to the working directory {cwd}: {e.strerror}", 125)


def prctl(option: int, value: int, what: str) -> None:
    if libc.prctl(option, value, 0, 0, 0) != 0:
        fail(f"prctl({what}) failed: {errtext()}", 125)


def signalfd() -> int:
    """A signalfd of the RELAYED signals and SIGCHLD, which the caller has blocked."""
    mask = SigSet()
    libc.sigemptyset(ctypes.byref(mask))
    for sig in RELAYED | {signal.SIGCHLD}:
        libc.sigaddset(ctypes.byref(mask), int(sig))
    fd = libc.signalfd(-1, ctypes.byref(mask), SFD_CLOEXEC)
    if fd < 0:
        fail(f"signalfd failed: {errtext()}", 125)
    return fd


def relay(child: int, ends: tuple = ()) -> int | None:
    """Pass user-sent signals on to ``child``, reap every child of ours, and return
    ``child``'s wait status once it has exited; None if an fd of ``ends`` (a pidfd)
    becomes readable first."""
    sfd = signalfd()
    poller = select.poll()
    poller.register(sfd, select.POLLIN)
    for fd in ends:
        poller.register(fd, select.POLLIN)
    status = None
    while True:
        for fd, _ in poller.poll():
            if fd != sfd:
                return None
            signo, _errno, code, sender = struct.unpack_from("<IiiI", os.read(sfd, 128))
            if signo != signal.SIGCHLD:
                # the terminal's signals (SI_KERNEL) reached the whole process group
                if code != SI_KERNEL and sender != child:
                    try:
                        os.kill(child, signo)
                    except ProcessLookupError:
                        pass
                continue
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == child:
                    status = st
            if status is not None:
                return status


def exec_command(argv: list) -> None:
    """Exec ARGV with the signal dispositions and mask a new process expects."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)  # Python ignores them, exec would keep that
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        fail(f"{argv[0]}: command not found", 127)
    except OSError as e:
        fail(f"{argv[0]}: {e.strerror}", 126)


def init(argv: list, orchestrator: int, relay_fd: int, status_w: int) -> None:
    """PID 1 of the new PID namespace: /proc, ARGV, orphans, signals; never returns."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")
    poller = select.poll()
    poller.register(relay_fd, select.POLLIN)
    if poller.poll(0):
        os._exit(125)  # the relay died before PR_SET_PDEATHSIG took effect
    if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        fail(f"cannot mount /proc for the command's PID namespace: {errtext()}{NO_PID_NS}", 125)
    child = os.fork()
    if child == 0:
        os.close(status_w)
        # a mount namespace of ARGV's own, owned by the network's user namespace: /proc
        # and resolv.conf come locked into it
        if libc.unshare(CLONE_NEWNS) != 0:
            fail(f"cannot create the command's mount namespace: {errtext()}{NO_PID_NS}", 125)
        exec_command(argv)
    prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    status = relay(child, (orchestrator, relay_fd))
    if status is not None:
        os.write(status_w, _STATUS.pack(status))
    os._exit(0 if status is not None else 137)  # the kernel ends everything inside


def exit_as(status: int) -> None:
    """Exit as a process with wait status ``status`` did: by the same signal, or with the
    same exit status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def run_in_pid_ns(userfd: int, netfd: int, resolv, orchestrator: int, argv: list) -> None:
    """The relay (see the header); never returns."""
    signal.pthread_sigmask(signal.SIG_SETMASK, RELAYED | {signal.SIGCHLD})
    try:
        orch_fd = os.pidfd_open(orchestrator)
    except OSError as e:
        fail(f"the network's process {orchestrator} is gone: {e.strerror}", 125)
    join(userfd, netfd)
    enter_locking_mount_ns()
    if resolv is not None:
        offer_resolv_conf(resolv, unshare=False)
    prctl(PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")
    if libc.unshare(CLONE_NEWPID) != 0:
        fail(f"cannot create a PID namespace: {errtext()}{NO_PID_NS}", 125)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    relay_fd = os.pidfd_open(os.getpid())
    child = os.fork()
    if child == 0:
        os.close(status_r)
        init(argv, orch_fd, relay_fd, status_w)
    for fd in (status_w, orch_fd, relay_fd):
        os.close(fd)
    prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    init_status = relay(child)
    data = os.read(status_r, _STATUS.size)
    if len(data) == _STATUS.size:
        exit_as(_STATUS.unpack(data)[0])
    if os.WIFEXITED(init_status) and os.WEXITSTATUS(init_status) == 125:
        os._exit(125)  # the init said why
    fail("the command's PID namespace ended before the command (the network is gone)", 125)


def main() -> None:
    userfd, netfd, resolv, orchestrator, argv = parse(sys.argv[1:])
    if orchestrator is not None:
        run_in_pid_ns(userfd, netfd, resolv, orchestrator, argv)
    join(userfd, netfd)
    if resolv is not None:
        offer_resolv_conf(resolv, unshare=True)
    exec_command(argv)


if __name__ == "__main__":
    main()
