"""``ringnet-slirp4netns``: slirp4netns 1.2's command line over ringnet's attach path.

    ringnet-slirp4netns [OPTION]... PID|PATH [TAPNAME]

A drop-in for ``slirp4netns`` where a container engine starts one per container
(podman's ``network_cmd_path`` in containers.conf, rootlesskit): the same
options, the same defaults (MTU 1500, 10.0.2.0/24 with the guest at .100, the
gateway at .2 and DNS at .3, host loopback reachable through the gateway unless
``--disable-host-loopback``, IPv6 only with ``-6``), the same ``--help`` text
(podman reads it to learn which options it may pass), the same exit statuses
(0 when the exit fd ends it, 1 for a bad command line or a failure), the ready
fd's byte ("1").

Theory of operation: the command line becomes a NetworkConfig (``ifname`` is
TAPNAME, default ``tap0``: ringnet's interface is a tun device, but it gets the
name asked for) and a ``Network.attach`` (``--netns-type=pid``) or
``Network.attach_path`` (``--netns-type=path``, with ``--userns-path``). The
network is started, "1" is written to the ready fd, and the process then
waits on the exit fd: when it becomes readable or is closed, the network is
torn down and the process exits 0. SIGINT, SIGTERM and SIGHUP tear it down too
and end the process with that signal, as slirp4netns dies of it. A ringnet
child that fails while serving ends the process with status 1.

``-a/--api-socket PATH`` serves slirp4netns's JSON API there (add_hostfwd,
list_hostfwd, remove_hostfwd; _apisock.py), which podman's
``port_handler=slirp4netns`` uses to publish ports.

Options ringnet cannot honour fail before anything starts, with a message that
names them: ``--outbound-addr``/``--outbound-addr6``
(ringnet's host sockets are not bound to an address), ``--disable-dns`` (the
DNS forwarder cannot be turned off), ``--macaddress`` (a tun device has no MAC
address) and ``--target-type=bess``. ``--enable-sandbox`` and
``--enable-seccomp``, which podman always passes when ``--help`` lists them, are
accepted: they ask slirp4netns to confine its own process, and ringnet's data
path runs in separate processes of its own (docs/ARCHITECTURE.md, "Processes");
this is logged (at info level).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import re
import select
import signal
import sys
from typing import Callable, NoReturn, Optional, Sequence

from . import __version__
from .config import MTU_MAX, MTU_MIN, NetworkConfig
from .errors import RingnetError
from .network import Network

__all__ = ["main", "parse_args", "config_from_args", "HELP"]

log = logging.getLogger(__name__)

PROG = "ringnet-slirp4netns"
EXIT_OK = 0
EXIT_FAILURE = 1
DEFAULT_MTU = 1500
DEFAULT_TAP = "tap0"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# slirp4netns 1.2's --help, option for option (podman looks for option names in it).
HELP = f"""\
Usage: {PROG} [OPTION]... PID|PATH [TAPNAME]
User-mode networking for unprivileged network namespaces (ringnet, slirp4netns-compatible).

-c, --configure          bring up the interface
-e, --exit-fd=FD         specify the FD for terminating {PROG}
-r, --ready-fd=FD        specify the FD to write to when the network is configured
-m, --mtu=MTU            specify MTU (default={DEFAULT_MTU}, min={MTU_MIN}, max={MTU_MAX})
-6, --enable-ipv6        enable IPv6
-a, --api-socket=PATH    specify API socket path
--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)
--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace
--netns-type=TYPE        specify network namespace type ([path|pid], default=pid)
--userns-path=PATH       specify user namespace path
--enable-sandbox         accepted; ringnet's data path runs in processes of its own
--enable-seccomp         accepted; ringnet's data path runs in processes of its own
--outbound-addr=IPv4     sets outbound ipv4 address to bound to (not available in ringnet: fails)
--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (not available in ringnet: fails)
--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns redirect (not available in ringnet: fails)
--macaddress=MAC         specify the MAC address of the TAP (only valid with -c; a tun device has none: fails)
--target-type=TYPE       specify the target type ([netns|bess], default=netns; bess fails)
-h, --help               show this help and exit
-v, --version            show version and exit
"""

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class UsageError(RingnetError):
    """A command line slirp4netns would refuse, or that ringnet cannot honour."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _fd(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            fd = int(text, 10)
        except ValueError:
            fd = -1
        if fd < 0:
            raise UsageError(f"{option}={text}: FD must be a non-negative integer")
        return fd
    return parse


def _mtu(text: str) -> int:
    try:
        mtu = int(text, 10)
    except ValueError:
        mtu = -1
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise UsageError(f"--mtu={text}: MTU must be an integer from {MTU_MIN} to {MTU_MAX} in ringnet")
    return mtu


def _choice(option: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise UsageError(f"{option}={text}: must be one of {', '.join(allowed)}")
        return text
    return parse


def _addr(option: str, version: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            addr = None
        if addr is None or addr.version != version:
            raise UsageError(f"{option}={text}: not an IPv{version} address")
        return text
    return parse


def _macaddr(text: str) -> str:
    if not _MAC.match(text):
        raise UsageError(f"--macaddress={text}: not a MAC address (xx:xx:xx:xx:xx:xx)")
    return text


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, add_help=False, allow_abbrev=True)
    p.add_argument("-c", "--configure", action="store_true")
    p.add_argument("-e", "--exit-fd", type=_fd("--exit-fd"), default=None)
    p.add_argument("-r", "--ready-fd", type=_fd("--ready-fd"), default=None)
    p.add_argument("-m", "--mtu", type=_mtu, default=DEFAULT_MTU)
    p.add_argument("-6", "--enable-ipv6", action="store_true")
    p.add_argument("-a", "--api-socket", default=None)
    p.add_argument("--cidr", default="10.0.2.0/24")
    p.add_argument("--disable-host-loopback", action="store_true")
    p.add_argument("--netns-type", type=_choice("--netns-type", ("pid", "path")), default="pid")
    p.add_argument("--userns-path", default=None)
    p.add_argument("--enable-sandbox", action="store_true")
    p.add_argument("--enable-seccomp", action="store_true")
    p.add_argument("--outbound-addr", type=_addr("--outbound-addr", 4), default=None)
    p.add_argument("--outbound-addr6", type=_addr("--outbound-addr6", 6), default=None)
    p.add_argument("--disable-dns", action="store_true")
    p.add_argument("--macaddress", type=_macaddr, default=None)
    p.add_argument("--target-type", type=_choice("--target-type", ("netns", "bess")), default="netns")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("target", nargs="?", default=None)
    p.add_argument("tapname", nargs="?", default=None)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as slirp4netns reads it. Raises UsageError naming the option or
    argument at fault, including options ringnet cannot honour."""
    args, extra = _parser().parse_known_args(list(argv))
    if args.help or args.version:
        return args
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        raise UsageError(f"unrecognized option '{unknown[0]}'")
    if extra:
        raise UsageError("too many arguments")
    _refuse_unsupported(args)
    if args.target is None:
        raise UsageError("missing PID or PATH of the network namespace")
    if args.netns_type == "pid":
        try:
            args.target = int(args.target, 10)
        except ValueError:
            raise UsageError(f"PID {args.target!r} is not a process id (give --netns-type=path "
                             "for a path)") from None
        if args.target <= 0:
            raise UsageError(f"PID {args.target} is not a process id")
    if args.tapname is None:
        args.tapname = DEFAULT_TAP
    if args.macaddress is not None and not args.configure:
        raise UsageError("--macaddress is only valid with -c (--configure)")
    if args.exit_fd is not None and args.exit_fd == args.ready_fd:
        raise UsageError(f"--exit-fd and --ready-fd are both {args.exit_fd}")
    return args


def _refuse_unsupported(args: argparse.Namespace) -> None:
    """UsageError for the first option ringnet cannot honour."""
    if args.target_type == "bess":
        raise UsageError("--target-type=bess: ringnet serves network namespaces only "
                         "(--target-type=netns)")
    for option, value in (("--outbound-addr", args.outbound_addr),
                          ("--outbound-addr6", args.outbound_addr6)):
        if value is not None:
            raise UsageError(f"{option}={value}: ringnet cannot bind its outbound host sockets "
                             "to an address yet")
    if args.disable_dns:
        raise UsageError("--disable-dns: ringnet's DNS forwarder cannot be turned off yet")
    if args.macaddress is not None:
        raise UsageError(f"--macaddress={args.macaddress}: ringnet's interface is a tun device "
                         "(layer 3), which has no MAC address")


def config_from_args(args: argparse.Namespace) -> NetworkConfig:
    """The NetworkConfig of a parsed command line (slirp4netns's defaults)."""
    try:
        return NetworkConfig(mtu=args.mtu, cidr4=args.cidr, ipv6=args.enable_ipv6,
                             ifname=args.tapname, configure_interface=args.configure,
                             allow_host_loopback=not args.disable_host_loopback,
                             resolv_conf=False, api_socket=args.api_socket)
    except RingnetError as e:
        # name the option, not the field: cidr4 is --cidr, ifname is TAPNAME
        text = str(e).replace("cidr4=", "--cidr=").replace("ifname=", "TAPNAME ") \
            .replace("api_socket=", "--api-socket=")
        raise UsageError(text) from None


def _network(args: argparse.Namespace, cfg: NetworkConfig) -> Network:
    if args.netns_type == "path":
        return Network.attach_path(args.target, args.userns_path, cfg)
    if args.userns_path is not None:
        return Network.attach_path(f"/proc/{args.target}/ns/net", args.userns_path, cfg)
    return Network.attach(args.target, cfg)


def _check_fd(fd: Optional[int], option: str) -> None:
    if fd is None:
        return
    try:
        os.fstat(fd)
    except OSError as e:
        raise UsageError(f"{option}={fd}: {e.strerror}") from None


def _serve(net: Network, exit_fd: Optional[int], wake_fd: int, stop: dict) -> int:
    """Wait for the exit fd, a stop signal (``wake_fd`` becomes readable) or a failed
    child; return the exit status."""
    poller = select.poll()
    poller.register(wake_fd, select.POLLIN)
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while not stop["sig"]:
        if any(fd == exit_fd for fd, _ in poller.poll(500)):
            log.info("exit fd %d is readable: stopping", exit_fd)
            return EXIT_OK
        broken = net.failed_children()
        if broken:
            raise RingnetError(f"network failed: {', '.join(broken)}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Bring the network up as ``args`` says, signal readiness, serve until told to stop."""
    cfg = config_from_args(args)
    _check_fd(args.exit_fd, "--exit-fd")
    _check_fd(args.ready_fd, "--ready-fd")
    if args.enable_sandbox or args.enable_seccomp:
        log.info("--enable-sandbox/--enable-seccomp: accepted; ringnet's data path runs in "
                 "processes of its own, not in this one")
    stop = {"sig": 0}

    def on_signal(signum: int, frame: object) -> None:
        stop["sig"] = signum

    # a signal's handler runs between bytecodes, so poll() is woken through this pipe
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    try:
        for s in _STOP_SIGNALS:
            signal.signal(s, on_signal)
        with _network(args, cfg) as net:
            net.label = f"slirp4netns {args.target} {args.tapname}"
            if args.ready_fd is not None:
                os.write(args.ready_fd, b"1")
                os.close(args.ready_fd)
            status = _serve(net, args.exit_fd, wake_r, stop)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    if stop["sig"]:
        # die of the signal, as slirp4netns does, now that everything is torn down
        signal.signal(stop["sig"], signal.SIG_DFL)
        os.kill(os.getpid(), stop["sig"])
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ringnet-slirp4netns`` console script."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        if args.help:
            sys.stdout.write(HELP)
            return EXIT_OK
        if args.version:
            sys.stdout.write(f"{PROG} version {__version__} (slirp4netns 1.2 command line)\n")
            return EXIT_OK
        return run(args)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        print(f"Try '{PROG} --help' for more information.", file=sys.stderr)
        return EXIT_FAILURE
    except RingnetError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
