"""The ``ringnet`` command: a thin layer over ringnet.Network.

    ringnet run [OPTIONS] -- CMD [ARGS...]   run CMD in a new rootless namespace with networking
    ringnet attach [OPTIONS] PID             give networking to PID's namespace until interrupted
    ringnet ls                               list this user's running networks
    ringnet stats ID [--json]                a snapshot of one network's counters and processes
    ringnet top ID                           a live view of one network, refreshed every second

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
from typing import TYPE_CHECKING, Optional, Sequence

from . import __version__, _ctlsock
from ._resolv import MAX_UPSTREAMS
from .config import (COALESCE_US_MAX, MTU_MAX, MTU_MIN, RING_SIZE_MAX, RING_SIZE_MIN, UDP_PORTS_MAX,
                     UDP_PORTS_MIN, WORKERS_MAX, NetworkConfig)
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
    g.add_argument("--idmap-helpers", action="store_true", default=d["idmap_helpers"],
                   help="map subordinate ids with newuidmap/newgidmap")
    g.add_argument("-p", "--publish", action=_AppendTuple, metavar="SPEC", default=d["publish"],
                   help="forward a host port inside: [ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp] "
                   "(repeatable; IPv6 as [::1]:8080:80)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
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
    att.add_argument("pid", type=int, help="a process in the target network namespace")
    ls = sub.add_parser("ls", help="list this user's running networks")
    ls.add_argument("--json", action="store_true", help="print JSON")
    st = sub.add_parser("stats", help="print a snapshot of a running network")
    st.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    st.add_argument("--json", action="store_true", help="print JSON")
    top = sub.add_parser("top", help="live view of a running network")
    top.add_argument("id", help="network id (or a unique prefix), from ringnet ls")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=0, help="stop after N refreshes (0: never)")
    for q in (ls, st, top):
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
    stop = {"sig": 0}

    def on_signal(signum, frame):
        stop["sig"] = signum

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    pidfd = os.pidfd_open(args.pid)
    pid_file = _PidFile(args.pid_file)
    try:
        with Network.attach(args.pid, _config(args)) as net:
            net.label = f"attach {args.pid}"
            pid_file.write()
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
        pid_file.remove()
        os.close(pidfd)
    return 0


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
    return 0


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ringnet`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level,
                        format="ringnet: %(levelname)s %(message)s")
    failed = EXIT_RINGNET_FAILED if args.command == "run" else 1
    try:
        handlers = {"run": _run, "attach": _attach, "ls": _ls, "stats": _stats, "top": _top}
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
