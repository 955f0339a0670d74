"""The ``ringnet`` command: a thin layer over ringnet.Network.

    ringnet run [OPTIONS] -- CMD [ARGS...]   run CMD in a new rootless namespace with networking
    ringnet attach [OPTIONS] PID             give networking to PID's namespace until interrupted

``run`` exits with CMD's status (128+N when CMD is killed by signal N), and 125
when ringnet itself fails. Errors are printed on one line. Logging handlers are
installed here only, never by the library.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
from typing import Optional, Sequence

from . import __version__
from .config import MTU_MAX, MTU_MIN, NetworkConfig
from .errors import RingnetError
from .network import Network

__all__ = ["main"]

EXIT_RINGNET_FAILED = 125
SI_USER = 0
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _net_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--mtu", type=int, default=MTU_MAX, help=f"interface MTU, {MTU_MIN}..{MTU_MAX} "
                   f"(default {MTU_MAX})")
    g.add_argument("--workers", type=int, default=None,
                   help="host stack worker processes, 1..64 (default: half the CPUs, at most 8)")
    g.add_argument("--cidr", default="10.0.2.0/24", help="IPv4 network (default 10.0.2.0/24)")
    g.add_argument("--cidr6", default="fd00::/64", help="IPv6 network (default fd00::/64)")
    g.add_argument("--disable-ipv6", action="store_true", help="configure IPv4 only")
    g.add_argument("--ifname", default="rn0", help="interface name inside (default rn0)")
    g.add_argument("--ring-size", type=int, default=4 * 1024 * 1024,
                   help="bytes per ring, a power of two, 512 KiB..256 MiB (default 4 MiB)")
    g.add_argument("--allow-host-loopback", action="store_true",
                   help="let the gateway addresses reach host loopback (127.0.0.1, ::1)")
    g.add_argument("--dns-upstream", action="append", metavar="ADDR[:PORT]",
                   help="resolver the DNS addresses forward to, instead of the host's "
                   "/etc/resolv.conf (repeatable, at most 3; [V6ADDR]:PORT for IPv6 with a port)")
    g.add_argument("--idmap-helpers", action="store_true",
                   help="map subordinate ids with newuidmap/newgidmap")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")


def _config(args: argparse.Namespace) -> NetworkConfig:
    return NetworkConfig(mtu=args.mtu, workers=args.workers, cidr4=args.cidr, cidr6=args.cidr6,
                         ipv6=not args.disable_ipv6, ifname=args.ifname, ring_size=args.ring_size,
                         allow_host_loopback=args.allow_host_loopback,
                         dns_upstream=tuple(args.dns_upstream) if args.dns_upstream else None,
                         resolv_conf=not getattr(args, "no_resolv_conf", False),
                         idmap_helpers=args.idmap_helpers)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ringnet", description="Fast userspace networking for rootless "
                                "network namespaces.")
    p.add_argument("--version", action="version", version=f"ringnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command in a new namespace with networking",
                         usage="ringnet run [OPTIONS] -- CMD [ARGS...]")
    _net_options(run)
    run.add_argument("--no-resolv-conf", action="store_true",
                     help="leave /etc/resolv.conf alone (by default CMD sees one naming the "
                     "namespace's DNS addresses, in a private mount namespace)")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    att = sub.add_parser("attach", help="give networking to an existing process's namespace")
    _net_options(att)
    att.add_argument("--ready-fd", type=int, default=None,
                     help="write '1' to this fd once the network is up")
    att.add_argument("pid", type=int, help="a process in the target network namespace")
    return p


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise RingnetError("no command given: ringnet run [OPTIONS] -- CMD [ARGS...]")
    with Network(_config(args)) as net:
        # Signals are taken synchronously (sigwaitinfo) so that we know who sent them: a
        # signal the terminal sent to the whole foreground group (si_code is not SI_USER)
        # reached CMD already and is not forwarded again; one sent to us alone is.
        mask = set(_FORWARDED) | {signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, mask)
        try:
            proc = net.spawn(argv)
            warned = False
            while proc.poll() is None:
                info = signal.sigtimedwait(mask, 1.0)
                if info is None or info.si_signo == signal.SIGCHLD:
                    broken = net.failed_children()
                    if broken and not warned:
                        print(f"ringnet: network failed: {', '.join(broken)}", file=sys.stderr)
                        warned = True
                    continue
                if info.si_code == SI_USER and info.si_pid != proc.pid:
                    try:
                        os.kill(proc.pid, info.si_signo)
                    except ProcessLookupError:
                        pass
            return _exit_status(proc.returncode)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)


def _attach(args: argparse.Namespace) -> int:
    stop = {"sig": 0}

    def on_signal(signum, frame):
        stop["sig"] = signum

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    pidfd = os.pidfd_open(args.pid)
    try:
        with Network.attach(args.pid, _config(args)) as net:
            if args.ready_fd is not None:
                os.write(args.ready_fd, b"1")
                os.close(args.ready_fd)
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not stop["sig"]:
                if poller.poll(500):
                    break  # the target process exited
                broken = net.failed_children()
                if broken:
                    raise RingnetError(f"network failed: {', '.join(broken)}")
    finally:
        os.close(pidfd)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ringnet`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="ringnet: %(levelname)s %(message)s")
    failed = EXIT_RINGNET_FAILED if args.command == "run" else 1
    try:
        if args.command == "run":
            return _run(args)
        return _attach(args)
    except RingnetError as e:
        print(f"ringnet: error: {e}", file=sys.stderr)
        return failed
    except ProcessLookupError:
        print(f"ringnet: error: PID {getattr(args, 'pid', '?')} does not exist", file=sys.stderr)
        return failed
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
