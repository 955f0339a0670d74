"""Exec a command inside a ringnet namespace.

    python _enter.py USERNS_FD NETNS_FD [--resolv-conf=FILE] -- ARGV...

Run as a plain script (not ``-m``), so starting it imports neither ringnet nor
cffi: it only unblocks signals, joins the user and net namespaces whose fds it
inherited, closes them and execs ARGV. With ``--resolv-conf=FILE`` it also
unshares a mount namespace of its own (owned by the namespace's user
namespace), makes every mount in it private so that nothing propagates back to
the host, and bind-mounts FILE over /etc/resolv.conf (through a symlink to its
target), so that resolvers inside ask ringnet's DNS address. If that mount is
impossible (for example /etc/resolv.conf is a dangling symlink) the command
still runs, with a warning. Exit status 125 if the namespaces cannot be
entered, 127 if ARGV cannot be found, 126 if it cannot be executed, as shells
do.
"""

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
RESOLV_CONF = b"/etc/resolv.conf"
USAGE = "usage: _enter.py USERNS_FD NETNS_FD [--resolv-conf=FILE] -- ARGV...\n"


def fail(text: str, status: int) -> None:
    sys.stderr.write(f"ringnet: {text}\n")
    sys.exit(status)


def parse(args: list) -> tuple:
    """(userns fd, netns fd, resolv.conf file or None, argv); exits 2 on a usage error."""
    try:
        userfd, netfd = int(args[0]), int(args[1])
        rest = args[2:]
        resolv = None
        if rest and rest[0].startswith("--resolv-conf="):
            resolv = rest[0].split("=", 1)[1]
            rest = rest[1:]
        if rest[0] != "--" or len(rest) < 2 or (resolv is not None and not resolv):
            raise ValueError
    except (IndexError, ValueError):
        sys.stderr.write(USAGE)
        sys.exit(2)
    return userfd, netfd, resolv, rest[1:]


def offer_resolv_conf(libc, path: str) -> None:
    """Private mount namespace with ``path`` over /etc/resolv.conf; warns on failure."""
    if libc.unshare(CLONE_NEWNS) != 0:
        what = "create a mount namespace"
    elif libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        what = "make the mounts private"
    elif libc.mount(os.fsencode(path), RESOLV_CONF, None, MS_BIND, None) != 0:
        what = f"bind-mount {path} over /etc/resolv.conf"
    else:
        return
    err = os.strerror(ctypes.get_errno())
    sys.stderr.write(f"ringnet: warning: cannot {what} ({err}); names resolve as the host's "
                     "/etc/resolv.conf says, which may not work inside\n")


def main() -> None:
    userfd, netfd, resolv, argv = parse(sys.argv[1:])
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    libc = ctypes.CDLL(None, use_errno=True)
    same_user = os.fstat(userfd).st_ino == os.stat("/proc/self/ns/user").st_ino
    for fd, flag, what in ((userfd, CLONE_NEWUSER, "user"), (netfd, CLONE_NEWNET, "network")):
        if flag == CLONE_NEWUSER and same_user:
            continue
        if libc.setns(fd, flag) != 0:
            fail(f"cannot enter the {what} namespace: {os.strerror(ctypes.get_errno())}", 125)
    os.close(userfd)
    os.close(netfd)
    if resolv is not None:
        offer_resolv_conf(libc, resolv)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        fail(f"{argv[0]}: command not found", 127)
    except OSError as e:
        fail(f"{argv[0]}: {e.strerror}", 126)


if __name__ == "__main__":
    main()
