"""Exec a command inside a ringnet namespace: ``python _enter.py USERNS_FD NETNS_FD -- ARGV``.

Run as a plain script (not ``-m``), so starting it imports neither ringnet nor
cffi: it only unblocks signals, joins the user and net namespaces whose fds it
inherited, closes them and execs ARGV. Exit status 127 if ARGV cannot be
executed (126 if it is not executable), as shells do.
"""

import ctypes
import os
import signal
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def main() -> None:
    userfd, netfd = int(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3] != "--" or len(sys.argv) < 5:
        sys.stderr.write("usage: _enter.py USERNS_FD NETNS_FD -- ARGV...\n")
        sys.exit(2)
    argv = sys.argv[4:]
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    libc = ctypes.CDLL(None, use_errno=True)
    same_user = os.fstat(userfd).st_ino == os.stat("/proc/self/ns/user").st_ino
    for fd, flag, what in ((userfd, CLONE_NEWUSER, "user"), (netfd, CLONE_NEWNET, "network")):
        if flag == CLONE_NEWUSER and same_user:
            continue
        if libc.setns(fd, flag) != 0:
            err = ctypes.get_errno()
            sys.stderr.write(f"ringnet: cannot enter the {what} namespace: {os.strerror(err)}\n")
            sys.exit(125)
    os.close(userfd)
    os.close(netfd)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        sys.stderr.write(f"ringnet: {argv[0]}: command not found\n")
        sys.exit(127)
    except OSError as e:
        sys.stderr.write(f"ringnet: {argv[0]}: {e.strerror}\n")
        sys.exit(126)


if __name__ == "__main__":
    main()
