"""The ``ringnet`` command: a thin layer over ringnet.Network.

    ringnet run [OPTIONS] -- CMD [ARGS...]   run CMD in a new rootless namespace with networking
    ringnet attach [OPTIONS] PID             give networking to PID's namespace until interrupted
    ringnet attach [OPTIONS] --netns PATH [--userns PATH]   the same, for the namespace at PATH
    ringnet ls                               list this user's running networks
    ringnet stats ID [--json]                a snapshot of one network's counters and processes
    ringnet top ID                           a live view of one network, refreshed every second
    ringnet forward ID add|ls|rm [SPEC|FWD]  add, list or remove a running network's forwards
    ringnet netem ID [--up|--down] [SPEC]    show or change one network's emulation
    ringnet rules ID ls|names|add|rm|default  list or change a running network's egress rules
    ringnet capture ID FILE [--seconds N]    capture a running network's frames into a pcapng file

``run`` exits with CMD's status (128+N when CMD is killed by signal N), and 125
when ringnet itself fails; SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to it are
forwarded to CMD (ringnet's own threads block them, so they reach the main
thread's sigtimedwait). Every network option's default is NetworkConfig's: the
options' dests are its field names, and a bad value's error names the option (not
the field) and its allowed range. ``run`` and ``attach`` also take ``--quiet`` (only
errors on stderr) and ``--pid-file PATH`` (this process's pid, written once the
network is up and removed at exit). ``stats`` and ``top`` aggregate the flow
table (numpy, FLOW_DTYPE) per protocol and list the busiest flows (``top``: the
fastest since its previous refresh). Errors are
printed on one line. Logging handlers are installed here only, never by the
library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import select
import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from . import __version__, _ctlsock, _forwardctl
from ._resolv import MAX_UPSTREAMS
from .config import (BUSY_POLL_US_MAX, COALESCE_US_MAX, MTU_MAX, MTU_MIN, PCAP_SNAPLEN_MAX, PCAP_SNAPLEN_MIN, RING_SIZE_MAX,
                     RING_SIZE_MIN, UDP_PORTS_MAX, UDP_PORTS_MIN, WORKERS_MAX, NetworkConfig)
from .errors import ConfigError, RingnetError
from .network import Network
from .stats import Stats, busiest_first, rates

if TYPE_CHECKING:
    import numpy as np

__all__ = ["main"]

EXIT_RINGNET_FAILED = 125
SI_USER = 0
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(NetworkConfig)}


class _AppendRule(argparse.Action):
    """--allow SPEC / --deny SPEC: "allow SPEC" or "deny SPEC" onto NetworkConfig.rules, in
    the order given on the command line (first match wins)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        rule = f"{self.const} {values}"
        setattr(namespace, self.dest, tuple(getattr(namespace, self.dest) or ()) + (rule,))


class _AppendTuple(argparse.Action):
    """Like action="append", onto a tuple default (NetworkConfig.publish's)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        setattr(namespace, self.dest, tuple(getattr(namespace, self.dest) or ()) + (values,))


def _net_options(p: argparse.ArgumentParser) -> None:
    """The network options; every default is NetworkConfig's (dests are its field names)."""
    d = _DEFAULTS
    g = p.add_argument_group("network")
    g.add_argument("--mtu", type=int, default=d["mtu"], metavar="N",
                   help=f"interface MTU, {MTU_MIN}..{MTU_MAX} (default %(default)s)")
    g.add_argument("--workers", type=int, default=d["workers"], metavar="N",
                   help=f"host stack worker processes, 1..{WORKERS_MAX} (default: half the CPUs, "
                   "at most 8)")
    g.add_argument("--cidr", dest="cidr4", default=d["cidr4"], metavar="CIDR", help="IPv4 network (default %(default)s)")
    g.add_argument("--cidr6", default=d["cidr6"], metavar="CIDR", help="IPv6 network (default %(default)s)")
    g.add_argument("--disable-ipv6", dest="ipv6", action="store_false", default=d["ipv6"],
                   help="configure IPv4 only")
    g.add_argument("--ifname", default=d["ifname"], help="interface name inside (default %(default)s)")
    g.add_argument("--ring-size", type=int, default=d["ring_size"], metavar="BYTES",
                   help=f"bytes per ring, a power of two, {RING_SIZE_MIN // 1024} KiB.."
                   f"{RING_SIZE_MAX // (1 << 20)} MiB (default %(default)s)")
    g.add_argument("--allow-host-loopback", action="store_true", default=d["allow_host_loopback"],
                   help="let the gateway addresses reach host loopback (127.0.0.1, ::1)")
    g.add_argument("--allow-host", action="store_true", default=d["allow_host"],
                   help="let the namespace reach the host's own addresses (refused by default)")
    g.add_argument("--allow-link-local", action="store_true", default=d["allow_link_local"],
                   help="let the namespace reach 169.254.0.0/16 and fe80::/10, where cloud "
                   "metadata services live (refused by default)")
    g.add_argument("--max-flows", type=int, default=d["max_flows"], metavar="N",
                   help="flows (TCP, UDP, ICMP) each worker may hold, 16..1048576 "
                   "(default %(default)s)")
    for fam, net in ((4, "--cidr"), (6, "--cidr6")):
        for role, what, off in (("guest", "the namespace's own address", "first"),
                                ("gateway", "the gateway (the host as the namespace sees it)",
                                 "second"),
                                ("dns", "the DNS forwarder", "third")):
            g.add_argument(f"--{role}{fam}", default=d[f"{role}{fam}"], metavar="ADDR",
                           help=f"IPv{fam} address of {what}, inside {net} (default: the "
                           f"{off} of slirp4netns's .100/.2/.3 offsets)")
    g.add_argument("--tcp-idle-timeout", type=int, default=d["tcp_idle_timeout"], metavar="S",
                   help="seconds an established TCP flow may stay idle, 10..604800 "
                   "(default %(default)s)")
    g.add_argument("--tcp-fin-timeout", type=int, default=d["tcp_fin_timeout"], metavar="S",
                   help="seconds a closing TCP flow may take to finish, 1..3600 (default %(default)s)")
    g.add_argument("--udp-timeout", type=int, default=d["udp_timeout"], metavar="S",
                   help="seconds a UDP flow may stay idle, 1..86400 (default %(default)s)")
    g.add_argument("--max-restarts", type=int, default=d["max_restarts"], metavar="N",
                   help="replace a worker that exits at most N times within 60 s, 0..100; "
                   "beyond, or with 0, the network fails (default %(default)s)")
    g.add_argument("--startup-timeout", type=float, default=d["startup_timeout"], metavar="S",
                   help="seconds to wait for ringnet's processes to start, up to 600 "
                   "(default %(default)s)")
    g.add_argument("--no-configure-interface", dest="configure_interface", action="store_false",
                   default=d["configure_interface"],
                   help="leave the interface unconfigured (no addresses, routes or link up)")
    g.add_argument("--no-sandbox", dest="sandbox", action="store_false", default=d["sandbox"],
                   help="do not isolate ringnet's processes once set up (for debugging)")
    g.add_argument("--no-control-socket", dest="control_socket", action="store_false",
                   default=d["control_socket"],
                   help="do not serve ringnet ls/stats/top for this network")
    g.add_argument("--control-dir", default=d["control_dir"], metavar="DIR",
                   help="control socket directory (default $XDG_RUNTIME_DIR/ringnet or "
                   "/tmp/ringnet-UID)")
    g.add_argument("--udp-ports", type=int, default=d["udp_ports"], metavar="N",
                   help=f"host UDP ports the namespace may hold, {UDP_PORTS_MIN}..{UDP_PORTS_MAX} "
                   "(default %(default)s)")
    g.add_argument("--dns-upstream", action="append", metavar="ADDR[:PORT]", default=d["dns_upstream"],
                   help="resolver the DNS addresses forward to, instead of the host's "
                   f"/etc/resolv.conf (repeatable, at most {MAX_UPSTREAMS}; [V6ADDR]:PORT for IPv6 "
                   "with a port)")
    g.add_argument("--coalesce-us", type=int, default=d["coalesce_us"], metavar="US",
                   help=f"wake-up moderation during small-packet streams, 0..{COALESCE_US_MAX} "
                   "microseconds (default %(default)s; 0: off)")
    g.add_argument("--busy-poll-us", type=int, default=d["busy_poll_us"], metavar="US",
                   help=f"adaptive busy polling before a data path thread sleeps, "
                   f"0..{BUSY_POLL_US_MAX} microseconds (default %(default)s; 0: off)")
    g.add_argument("--idmap-helpers", action="store_true", default=d["idmap_helpers"],
                   help="map subordinate ids with newuidmap/newgidmap")
    g.add_argument("-p", "--publish", action=_AppendTuple, metavar="SPEC", default=d["publish"],
                   help="forward a host port inside: [ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp] "
                   "(repeatable; IPv6 as [::1]:8080:80)")
    g.add_argument("--sysctl", dest="sysctls", action=_AppendTuple, metavar="KEY=VALUE",
                   default=d["sysctls"],
                   help="set a network sysctl inside the namespace once it is up, e.g. "
                   "net.ipv4.tcp_tw_reuse=1 (repeatable; net.* keys only)")
    g.add_argument("--api-socket", default=d["api_socket"], metavar="PATH",
                   help="serve slirp4netns's JSON API (add_hostfwd, list_hostfwd, remove_hostfwd) "
                   "on a unix socket at PATH")
    for verb in ("allow", "deny"):
        g.add_argument(f"--{verb}", dest="rules", action=_AppendRule, const=verb,
                       metavar="SPEC", default=d["rules"],
                       help=f"{verb} new flows to [tcp:|udp:|icmp:]TARGET[:PORT[-PORT]], TARGET a "
                       "CIDR ([V6]/N before ports), a host name or *.domain (repeatable; the "
                       "first matching --allow/--deny wins)")
    g.add_argument("--default-deny", action="store_true", default=d["default_deny"],
                   help="refuse new flows no --allow/--deny matches (DNS excepted)")
    for opt, dest, what in (("--netem", "netem", "both directions"),
                            ("--netem-up", "netem_up", "namespace -> world only"),
                            ("--netem-down", "netem_down", "world -> namespace only")):
        g.add_argument(opt, dest=dest, default=d[dest], metavar="SPEC",
                       help=f"network emulation, {what}: 'delay=20ms jitter=5ms loss=1%% "
                       "dup=0.1%% reorder=1%% rate=100mbit limit=1000 seed=N' (any of them)")
    g.add_argument("--no-splice", dest="splice_local", action="store_false",
                   default=d["splice_local"],
                   help="forwarded TCP clients on host loopback go through the C core (seen "
                   "inside from the gateway) instead of being spliced (seen from loopback)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    t = p.add_argument_group("seeing the traffic")
    t.add_argument("--flow-log", default=d["flow_log"], metavar="FILE",
                   help="append a JSON line for every flow opened and closed to FILE")
    t.add_argument("--pcap", default=d["pcap"], metavar="FILE",
                   help="capture the namespace's frames into FILE (pcapng, for tcpdump -r and "
                   "Wireshark)")
    t.add_argument("--pcap-snaplen", type=int, default=d["pcap_snaplen"], metavar="N",
                   help=f"bytes of each packet the capture keeps, {PCAP_SNAPLEN_MIN}..{PCAP_SNAPLEN_MAX} "
                   "(default %(default)s: all)")
    o = p.add_argument_group("output")
    o.add_argument("-q", "--quiet", action="store_true",
                   help="print only errors on stderr (no warnings, no notices)")
    o.add_argument("--pid-file", metavar="PATH", default=None,
                   help="write this process's pid here once the network is up; removed at exit")


def _option_names() -> dict[str, str]:
    """NetworkConfig field name -> the CLI option that sets it (options taking a value)."""
    out: dict[str, str] = {}
    run = argparse.ArgumentParser(add_help=False)
    _net_options(run)
    for a in run._actions:
        if a.dest in _DEFAULTS and a.nargs != 0:
            out[a.dest] = next(o for o in reversed(a.option_strings) if o.startswith("--"))
    out.pop("rules", None)  # --allow and --deny: their errors name the rule itself
    return out


def _config(args: argparse.Namespace) -> NetworkConfig:
    """The NetworkConfig the network options of ``args`` describe. A bad value raises
    ConfigError naming the option (--max-flows), not the field (max_flows)."""
    given = {k: v for k, v in vars(args).items() if k in _DEFAULTS}
    if given.get("dns_upstream") is not None:
        given["dns_upstream"] = tuple(given["dns_upstream"])
    try:
        return NetworkConfig(**given)
    except ConfigError as e:
        names = _option_names()
        text = re.sub(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])",
                      lambda m: names[m.group(1)], str(e))
        raise ConfigError(text) from None


class _PidFile:
    """``--pid-file``: this process's pid, written (atomically) once the network is up,
    removed at exit."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.written = False

    def write(self) -> None:
        if self.path is None:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            raise RingnetError(f"--pid-file {self.path}: {e.strerror}") from None
        self.written = True

    def remove(self) -> None:
        if self.written:
            try:
                os.unlink(self.path)  # type: ignore[arg-type]
            except FileNotFoundError:
                pass
            self.written = False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ringnet", description="Fast userspace networking for rootless "
                                "network namespaces.")
    p.add_argument("--version", action="version", version=f"ringnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command in a new namespace with networking",
                         usage="ringnet run [OPTIONS] -- CMD [ARGS...]")
    _net_options(run)
    run.add_argument("--no-resolv-conf", dest="resolv_conf", action="store_false",
                     default=_DEFAULTS["resolv_conf"],
                     help="leave /etc/resolv.conf alone (by default CMD sees one naming the "
                     "namespace's DNS addresses, in a private mount namespace)")
    run.add_argument("--no-pid-namespace", dest="pid_namespace", action="store_false",
                     default=_DEFAULTS["pid_namespace"],
                     help="let CMD see the host's processes (by default it runs in a PID "
                     "namespace of its own with its own /proc)")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    att = sub.add_parser("attach", help="give networking to an existing process's namespace")
    _net_options(att)
    att.add_argument("--ready-fd", type=int, default=None,
                     help="write '1' to this fd once the network is up")
    att.add_argument("--netns", metavar="PATH", default=None,
                     help="the network namespace at PATH (/proc/PID/ns/net or a bind mount of "
                     "one) instead of PID's; ends when PATH no longer names it")
    att.add_argument("--userns", metavar="PATH", default=None,
                     help="with --netns: enter it through the user namespace at PATH (default: "
                     "the one owning it)")
    att.add_argument("pid", type=int, nargs="?", default=None,
                     help="a process in the target network namespace (its owner, or a mapped "
                     "uid of a user namespace you own)")
    ls = sub.add_parser("ls", help="list this user's running networks")
    ls.add_argument("--json", action="store_true", help="print JSON")
    st = sub.add_parser("stats", help="print a snapshot of a running network")
    st.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    st.add_argument("--json", action="store_true", help="print JSON")
    top = sub.add_parser("top", help="live view of a running network")
    top.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=0, help="stop after N refreshes (0: never)")
    fw = sub.add_parser("forward", help="add, list or remove forwards of a running network",
                        usage="ringnet forward ID {add SPEC | ls | rm SPEC-or-FWD-ID} [--json]")
    fw.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    fw.add_argument("action", choices=("add", "ls", "rm"))
    fw.add_argument("target", nargs="?", default=None, metavar="SPEC-or-FWD-ID",
                    help="add: [ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]; rm: the forward's "
                    "id (from ls) or its spec")
    fw.add_argument("--json", action="store_true", help="print JSON")
    ru = sub.add_parser("rules", help="list or change the egress rules of a running network",
                        usage="ringnet rules ID {ls,names} | ID add allow|deny SPEC [--at N] "
                        "| ID rm allow|deny SPEC | ID rm N | ID default allow|deny")
    ru.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    ru.add_argument("op", choices=("ls", "add", "rm", "names", "default"), help="what to do")
    ru.add_argument("rule", nargs="*", help="allow|deny SPEC (rm: or the rule's index; "
                    "default: allow or deny, for flows no rule matches)")
    ru.add_argument("--at", type=int, default=None, metavar="N",
                    help="add: insert before the rule at index N (default: last)")
    ru.add_argument("--json", action="store_true", help="print JSON")
    ne = sub.add_parser("netem", help="show or change a running network's emulation")
    ne.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    way = ne.add_mutually_exclusive_group()
    way.add_argument("--up", dest="direction", action="store_const", const="up", default="both",
                     help="namespace -> world only")
    way.add_argument("--down", dest="direction", action="store_const", const="down",
                     help="world -> namespace only")
    ne.add_argument("spec", nargs="*", help="key=value ... (delay, jitter, loss, dup, reorder, "
                    "rate, limit, seed), or off; none: show the current settings")
    cap = sub.add_parser("capture", help="capture a running network's frames into a pcapng file",
                         description="Capture both directions of the namespace's frames into FILE "
                         "until interrupted (SIGINT, SIGTERM) or for --seconds; prints what was "
                         "written and what was dropped.")
    cap.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    cap.add_argument("file", metavar="FILE", help="pcapng file to write (replaced if it exists)")
    cap.add_argument("--seconds", type=float, default=None, metavar="N",
                     help="stop after N seconds (default: until interrupted)")
    cap.add_argument("--snaplen", type=int, default=PCAP_SNAPLEN_MAX, metavar="N",
                     help=f"bytes of each packet to keep, {PCAP_SNAPLEN_MIN}..{PCAP_SNAPLEN_MAX} "
                     "(default %(default)s: all)")
    for q in (ls, st, top, fw, ru, ne, cap):
        q.add_argument("--dir", default=None, help="control socket directory "
                       "(default $XDG_RUNTIME_DIR/ringnet or /tmp/ringnet-UID)")
        q.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    return p


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise RingnetError("no command given: ringnet run [OPTIONS] -- CMD [ARGS...]")
    pid_file = _PidFile(args.pid_file)
    with Network(_config(args)) as net:
        net.label = " ".join(argv)[:200]
        pid_file.write()
        # Signals are taken synchronously (sigtimedwait) so that we know who sent them: a
        # signal the terminal sent to the whole foreground group (si_code is not SI_USER)
        # reached CMD already and is not forwarded again; one sent to us alone is. This
        # thread blocks them from here on and ringnet's own threads always do, so one that
        # arrives while we are not waiting stays pending until the next sigtimedwait.
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
            pid_file.remove()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)


def _attach(args: argparse.Namespace) -> int:
    """Serve a process's namespace (PID) or one named by path (--netns) until a signal
    comes, the process exits, or the path stops naming the namespace."""
    if (args.pid is None) == (args.netns is None):
        raise RingnetError("attach takes either PID or --netns PATH (one of them)")
    if args.userns is not None and args.netns is None:
        raise RingnetError("--userns PATH goes with --netns PATH")
    stop = {"sig": 0}

    def on_signal(signum, frame):
        stop["sig"] = signum

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    if args.netns is not None:
        net = Network.attach_path(args.netns, args.userns, _config(args))
        label, still_there = f"attach {args.netns}", _names_same_namespace(args.netns)
        pidfd = -1
    else:
        net = Network.attach(args.pid, _config(args))
        label, still_there = f"attach {args.pid}", lambda: True
        pidfd = os.pidfd_open(args.pid)
    pid_file = _PidFile(args.pid_file)
    try:
        with net:
            net.label = label
            pid_file.write()
            if args.ready_fd is not None:
                os.write(args.ready_fd, b"1")
                os.close(args.ready_fd)
            poller = select.poll()
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
            while not stop["sig"]:
                if poller.poll(500) or not still_there():
                    break  # the target process exited, or its namespace left the path
                broken = net.failed_children()
                if broken:
                    raise RingnetError(f"network failed: {', '.join(broken)}")
    finally:
        pid_file.remove()
        if pidfd >= 0:
            os.close(pidfd)
    return 0


def _names_same_namespace(path: str) -> Callable[[], bool]:
    """A test that ``path`` still names the namespace it names now (a /proc/PID/ns/net
    goes away with PID; a bind mount, when unmounted)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)

    def same() -> bool:
        try:
            now = os.stat(path)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == key

    return same


def _ls(args: argparse.Namespace) -> int:
    nets = _ctlsock.list_networks(args.dir)
    if args.json:
        print(json.dumps(nets, indent=2))
        return 0
    print(f"{'ID':<9} {'PID':>7} {'MODE':<6} {'WORKERS':>7} {'MTU':>6} {'CIDR':<18} {'UP':>8}  LABEL")
    for n in nets:
        up = _duration(time.time() - n["started"])
        print(f"{n['id']:<9} {n['pid']:>7} {n['mode']:<6} {n['workers']:>7} {n['mtu']:>6} "
              f"{n['cidr4']:<18} {up:>8}  {n['label']}")
    return 0


def _duration(sec: float) -> str:
    sec = int(sec)
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m" if sec >= 3600 else f"{sec // 60}m{sec % 60:02d}s"


def _stats(args: argparse.Namespace) -> int:
    snap = _ctlsock.query(_ctlsock.resolve(args.id, args.dir), "stats")
    if args.json:
        print(json.dumps(snap, indent=2))
        return 0
    print(_render(Stats.from_dict(snap), None))
    if snap.get("rules"):
        print("\nrules (hits: new flows each decided)")
        print("\n".join(f"{r['index']:>5} {r['hits']:>10}  {r['rule']}" for r in snap["rules"]))
    return 0


def _rules(args: argparse.Namespace) -> int:
    """``ringnet rules ID ls|names|add|rm``: the control socket's "rules" command."""
    path = _ctlsock.resolve(args.id, args.dir)
    text = " ".join(args.rule)
    if args.op in ("add", "rm") and not text:
        raise RingnetError(f"ringnet rules {args.op} needs a rule: allow|deny SPEC")
    req: dict = {"op": args.op}
    if args.op in ("add", "rm"):
        req["rule"] = int(text) if args.op == "rm" and text.isdigit() else text
    if args.op == "default":
        if text not in ("allow", "deny"):
            raise RingnetError("ringnet rules default takes allow or deny")
        req["deny"] = text == "deny"
    if args.at is not None:
        req["index"] = args.at
    out = _ctlsock.query(path, "rules", req)
    if args.json or args.op in ("add", "rm"):
        print(json.dumps(out, indent=2) if args.json else out)
    elif args.op == "default":
        print("deny" if out else "allow")
    elif args.op == "names":
        for e in out:
            print(f"{e['name']:<40} {e['address']:<39} {e['expires_in']:>8.1f}s")
    else:
        print(_rule_lines(out["rules"], out["default_deny"]))
    return 0


def _rule_lines(rules: list, default_deny: bool) -> str:
    """The rules as a table: index, hits, rule; the default last."""
    lines = [f"{'#':>5} {'HITS':>10}  RULE"]
    lines += [f"{r['index']:>5} {r['hits']:>10}  {r['rule']}" for r in rules]
    lines.append(f"{'':>5} {'':>10}  default: {'deny' if default_deny else 'allow'}")
    return "\n".join(lines)


def _human(n: float, unit: str = "") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{prefix}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


def _render(cur: Stats, prev: Optional[Stats]) -> str:
    lines = []
    r = rates(prev, cur)
    if r:
        lines.append(f"to host  {_human(r['frames_in'])} frames/s  {_human(8 * r['bytes_in'], 'bit/s')}    "
                     f"to namespace  {_human(r['frames_out'])} frames/s  {_human(8 * r['bytes_out'], 'bit/s')}")
    lines.append(f"{'PROCESS':<10} {'PID':>7} {'CPU%':>6} {'CPU s':>8} {'RSS':>8} {'FDS':>5} {'THR':>4}")
    for p in cur.processes:
        lines.append(f"{p.role:<10} {p.pid:>7} {p.cpu_percent:>6.1f} {p.cpu_seconds:>8.2f} "
                     f"{_human(p.rss, 'B'):>8} {p.num_fds if p.num_fds >= 0 else '-':>5} "
                     f"{p.num_threads:>4}")
    lines.append("")
    names = [k for k in (cur.workers[0] if cur.workers else {})]
    nonzero = [k for k in names if cur.total(k)] + [k for k, v in cur.pump.items() if v]
    lines.append("counters (workers summed; pump: tun_*, handoffs)")
    for k in names:
        if cur.total(k):
            lines.append(f"  {k:<28} {cur.total(k)}")
    for k, v in cur.pump.items():
        if v:
            lines.append(f"  pump.{k:<23} {v}")
    if not nonzero:
        lines.append("  (all zero)")
    if len(cur.flows):
        lines += _flow_lines(cur.flows, _flow_rates(prev, cur) if prev is not None else None)
    return "\n".join(lines)


_FLOWS_SHOWN = 30


_FLOW_KEY = ["worker", "proto", "guest", "guest_port", "remote", "remote_port"]


def _flow_rates(prev: Stats, cur: Stats) -> "np.ndarray":
    """Bytes per second (in + out) of each flow of ``cur`` since ``prev``; a flow that is
    new since then counts from its creation."""
    import numpy as np

    dt = cur.time - prev.time
    if dt <= 0:
        return np.zeros(len(cur.flows))
    def moved(flows: "np.ndarray") -> list[tuple[tuple, int]]:
        keys = map(tuple, flows[_FLOW_KEY].tolist())
        return list(zip(keys, (flows["bytes_in"] + flows["bytes_out"]).tolist()))

    before, now = dict(moved(prev.flows)), moved(cur.flows)
    delta = np.array([b - before.get(k, 0) for k, b in now], dtype=np.float64)
    new = np.array([k not in before for k, _ in now], dtype=bool)
    span = np.where(new, np.clip(cur.flows["age"], 1e-3, dt), dt)
    return np.maximum(delta, 0.0) / span


def _flow_lines(flows: "np.ndarray", rates: "Optional[np.ndarray]" = None) -> list[str]:
    """The flow table (FLOW_DTYPE) aggregated per protocol, then its busiest flows: by
    ``rates`` (bytes/s, as ``ringnet top`` shows them) when given, else by bytes moved."""
    import numpy as np

    protos, which = np.unique(flows["proto"], return_inverse=True)
    which = which.reshape(-1)
    count = np.bincount(which, minlength=len(protos))
    bytes_in = np.zeros(len(protos), dtype=np.uint64)
    bytes_out = np.zeros(len(protos), dtype=np.uint64)
    np.add.at(bytes_in, which, flows["bytes_in"])
    np.add.at(bytes_out, which, flows["bytes_out"])
    lines = ["", f"{'PROTO':<6} {'FLOWS':>6} {'IN':>8} {'OUT':>8}  STATES"]
    for i, proto in enumerate(protos):
        states, n = np.unique(flows["state"][which == i], return_counts=True)
        lines.append(f"{proto:<6} {count[i]:>6} {_human(int(bytes_in[i]), 'B'):>8} "
                     f"{_human(int(bytes_out[i]), 'B'):>8}  "
                     + ", ".join(f"{s} {c}" for s, c in zip(states.tolist(), n.tolist())))
    lines.append("")
    lines.append(f"{'PROTO':<5} {'GUEST':<28} {'REMOTE':<28} {'STATE':<12} {'IN':>8} {'OUT':>8} "
                 f"{'AGE':>7} {'IDLE':>7}" + (f" {'RATE':>10}" if rates is not None else ""))
    if rates is None:
        shown, shown_rates = busiest_first(flows)[:_FLOWS_SHOWN], None
    else:  # fastest first; among equals, the busiest
        order = np.lexsort((flows["bytes_in"] + flows["bytes_out"], rates))[::-1][:_FLOWS_SHOWN]
        shown, shown_rates = flows[order], rates[order].tolist()
    for i, f in enumerate(shown.tolist()):
        r = dict(zip(flows.dtype.names, f))
        lines.append(f"{r['proto']:<5} {r['guest'] + ':' + str(r['guest_port']):<28} "
                     f"{r['remote'] + ':' + str(r['remote_port']):<28} {r['state']:<12} "
                     f"{_human(r['bytes_in'], 'B'):>8} {_human(r['bytes_out'], 'B'):>8} "
                     f"{_duration(r['age']):>7} {_duration(r['idle']):>7}"
                     + (f" {_human(8 * shown_rates[i], 'bit/s'):>10}" if shown_rates else ""))
    if len(flows) > _FLOWS_SHOWN:
        lines.append(f"... and {len(flows) - _FLOWS_SHOWN} more")
    return lines


def _top(args: argparse.Namespace) -> int:
    path = _ctlsock.resolve(args.id, args.dir)
    if not 0.1 <= args.interval <= 3600:
        raise RingnetError(f"--interval={args.interval} must be from 0.1 to 3600 seconds")
    prev = None
    n = 0
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    while True:
        cur = Stats.from_dict(_ctlsock.query(path, "stats"))
        print(f"{clear}ringnet top {args.id}  {time.strftime('%H:%M:%S')}\n{_render(cur, prev)}", flush=True)
        prev = cur
        n += 1
        if args.iterations and n >= args.iterations:
            return 0
        time.sleep(args.interval)


def _netem(args: argparse.Namespace) -> int:
    """``ringnet netem ID [--up|--down] [SPEC]``: set (with SPEC) and print the emulation."""
    req = {"direction": args.direction}
    if args.spec:
        req["spec"] = " ".join(args.spec)
    cur = _ctlsock.query(_ctlsock.resolve(args.id, args.dir), "netem", req)
    for d in ("up", "down"):
        print(f"{d}: {cur[d]}")
    return 0


def _capture(args: argparse.Namespace) -> int:
    """``ringnet capture``: start a capture through the control socket, wait for its end
    (--seconds, or a signal: then stop it), report."""
    from ._capture import check_seconds, check_snaplen

    try:
        check_snaplen(args.snaplen, "--snaplen")
        check_seconds(args.seconds, "--seconds")
    except ConfigError as e:
        raise ConfigError(str(e).replace("--snaplen=", "--snaplen ").replace("--seconds=", "--seconds ")) from None
    path = _ctlsock.resolve(args.id, args.dir)
    target = os.path.abspath(args.file)
    req = {"file": target, "snaplen": args.snaplen}
    if args.seconds is not None:
        req["seconds"] = args.seconds
    stop = {"sig": 0}

    def on_signal(signum, frame):
        stop["sig"] = signum

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    _ctlsock.query(path, "capture", req)
    print(f"ringnet: capturing into {target}" + (f" for {args.seconds:g} s" if args.seconds else
                                                 " until interrupted"), file=sys.stderr)
    while True:
        if stop["sig"]:
            report = _ctlsock.query(path, "capture", {"stop": True})
            break
        report = _ctlsock.query(path, "capture", {})
        if not report.get("running") or report.get("file") != target:
            break
        time.sleep(0.2)
    if report.get("file") == target:
        print(f"ringnet: {report['frames']} frames written to {target}, {report['dropped']} dropped",
              file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ringnet`` console script."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "netem":
        args.spec += extra  # SPEC words after --up/--down (argparse took the empty list first)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level,
                        format="ringnet: %(levelname)s %(message)s")
    failed = EXIT_RINGNET_FAILED if args.command == "run" else 1
    try:
        handlers = {"run": _run, "attach": _attach, "ls": _ls, "stats": _stats, "top": _top,
                    "forward": _forwardctl.main, "rules": _rules, "netem": _netem,
                    "capture": _capture}
        return handlers[args.command](args)
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
