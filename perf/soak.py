"""Soak: a steady mixed load through one ringnet network for N minutes; nothing may grow.

    python -m perf.soak                      # 30 minutes, 2 workers
    python -m perf.soak --minutes 3 --warmup 1

Issue 10 item 10. Not a CI test: a benchmark script, run by hand, whose output is
committed under perf/results/soak-DATE.txt. Three processes carry the load, none of
them the orchestrator (this process), so that its own fds and memory are ringnet's:

- servers (``--serve``, on host loopback): a TCP echo, a TCP sink that answers the byte
  count it received, a UDP echo, and a DNS responder (every A query gets 192.0.2.10);
- load (``--load``, inside the namespace, reaching the servers through the gateway with
  allow_host_loopback and the DNS address): TCP connections at a steady rate (one in
  ten ends with RST, the rest with FIN), a new UDP flow (new source port) twice a
  second with 5 echoed datagrams, DNS queries over UDP (and one in ten over TCP), a
  bulk transfer of ``--bulk-mb`` every 20 s checked byte-exact by the sink's count;
- ``ping -i 0.5`` of the gateway (echo answered by a worker), the real tool.

Every minute it prints, per ringnet process (ns, worker N) and for the orchestrator:
open fds and RSS; the flow table (flows the workers report, and the open-flow gauges),
host UDP ports, and the counters of interest since the previous minute; and the load's
own tally (operations done and failed). UDP flows time out after ``--udp-timeout``
(30 s), so the flow table turns over many times within the run.

Bound, after ``--warmup`` minutes: each process's fds may exceed the highest count seen
during warm-up by at most ``--fd-slack`` (32: connections in flight), its RSS the
warm-up peak by at most 10% + 8 MiB (RSS includes ring pages, touched gradually up to
the rings' size), and its anonymous RSS (RssAnon: its own memory) the warm-up peak by at
most 10% + 2 MiB. A sample beyond that, a load process that died,
or a network that failed makes the exit status 1.

Who runs it: the children are not dumpable, so only root may count their fds
(/proc/PID/fd); run as root, the script stays root for that reason (the network itself
is the same rootless code path: a user namespace of its own). ``--rootless`` reruns it as
the unprivileged test user (perf/rootless.py), where fds show as -1 and only RSS is
checked. The machine is shared: the load is modest on purpose (a leak shows as a trend,
whatever the rate).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024

# Counters printed each minute (their growth since the previous minute).
COUNTERS = ("tcp_connects", "tcp_closed", "tcp_rst_sent", "tcp_rst_received", "tcp_retransmits",
            "udp_out", "udp_in", "dns_flows", "icmp_echo_replies", "flows_refused_cap",
            "flows_refused_fd", "flows_refused_ports", "host_send_errors")
GAUGES = ("flows_open_tcp", "flows_open_udp", "flows_open_icmp", "udp_ports_open")


# ---------------------------------------------------------------------------------------
# servers (host loopback)

def _serve_tcp(sock: socket.socket, handler: Any) -> None:
    """Accept forever on ``sock``, one thread per connection running ``handler(conn)``."""
    while True:
        conn, _ = sock.accept()

        def run(c: socket.socket = conn) -> None:
            with c:
                try:
                    handler(c)
                except OSError:
                    pass
        threading.Thread(target=run, daemon=True).start()


def _echo(c: socket.socket) -> None:
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)


def _sink(c: socket.socket) -> None:
    n = 0
    while True:
        data = c.recv(1 << 20)
        if not data:
            break
        n += len(data)
    c.sendall(struct.pack("!Q", n))


def _dns_answer(q: bytes) -> Optional[bytes]:
    """A reply to the DNS query ``q``: one A record 192.0.2.10 (None if ``q`` is no query)."""
    if len(q) < 17:
        return None
    end = 12
    while end < len(q) and q[end]:
        end += q[end] + 1
    end += 5
    if end > len(q):
        return None
    hdr = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    return hdr + q[12:end] + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([192, 0, 2, 10])


def serve(portfile: str) -> None:
    """Run the servers on 127.0.0.1 and write their ports to ``portfile`` (JSON)."""
    socks = {}
    for name in ("echo", "sink"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(512)
        socks[name] = s
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    dns_tcp = socket.socket()
    dns_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dns_tcp.bind(("127.0.0.1", dns.getsockname()[1]))
    dns_tcp.listen(64)
    ports = {k: s.getsockname()[1] for k, s in socks.items()}
    ports.update(udp=udp.getsockname()[1], dns=dns.getsockname()[1])
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ports, f)
    os.rename(tmp, portfile)

    def udp_echo() -> None:
        while True:
            data, addr = udp.recvfrom(65536)
            udp.sendto(data, addr)

    def dns_udp() -> None:
        while True:
            data, addr = dns.recvfrom(4096)
            ans = _dns_answer(data)
            if ans:
                dns.sendto(ans, addr)

    def dns_stream(c: socket.socket) -> None:
        hdr = _recv_exact(c, 2)
        ans = _dns_answer(_recv_exact(c, struct.unpack("!H", hdr)[0]))
        if ans:
            c.sendall(struct.pack("!H", len(ans)) + ans)

    for fn in (udp_echo, dns_udp):
        threading.Thread(target=fn, daemon=True).start()
    threading.Thread(target=_serve_tcp, args=(socks["sink"], _sink), daemon=True).start()
    threading.Thread(target=_serve_tcp, args=(dns_tcp, dns_stream), daemon=True).start()
    _serve_tcp(socks["echo"], _echo)


def _recv_exact(c: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = c.recv(n - len(buf))
        if not data:
            raise ConnectionError("short read")
        buf += data
    return buf


# ---------------------------------------------------------------------------------------
# load (inside the namespace)

class Tally:
    """Operations done and failed per kind, shared by the load's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def dump(self, path: str) -> None:
        with self.lock:
            data = json.dumps(self.counts)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.rename(tmp, path)


def _paced(rate: float, stop: threading.Event, fn: Any) -> None:
    """Call ``fn()`` ``rate`` times a second until ``stop`` (no catching up after a stall)."""
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        fn()
        nxt = max(nxt + period, time.monotonic())
        stop.wait(max(0.0, nxt - time.monotonic()))


def load(args: argparse.Namespace) -> None:
    """The load inside the namespace, for ``args.seconds``; tallies to ``args.tally``."""
    ports = json.loads(args.ports)
    gw, dnsaddr = args.gateway, args.dns
    tally = Tally()
    stop = threading.Event()
    qname = b"\x04soak\x07example\x04test\x00"

    def tcp_conn() -> None:
        rst = random.random() < 0.1
        try:
            with socket.create_connection((gw, ports["echo"]), timeout=10) as s:
                msg = os.urandom(200)
                s.sendall(msg)
                if _recv_exact(s, len(msg)) != msg:
                    raise ConnectionError("echo differs")
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tally.add("tcp_rst" if rst else "tcp_ok")
        except OSError:
            tally.add("tcp_err")

    def udp_flow() -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                for _ in range(5):
                    msg = os.urandom(100)
                    s.sendto(msg, (gw, ports["udp"]))
                    data, _ = s.recvfrom(2048)
                    tally.add("udp_ok" if data == msg else "udp_err")
        except OSError:
            tally.add("udp_err")

    def dns_query() -> None:
        q = struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + \
            struct.pack("!HH", 1, 1)
        try:
            if random.random() < 0.1:
                with socket.create_connection((dnsaddr, 53), timeout=5) as s:
                    s.sendall(struct.pack("!H", len(q)) + q)
                    n = struct.unpack("!H", _recv_exact(s, 2))[0]
                    ans = _recv_exact(s, n)
                kind = "dns_tcp"
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(5)
                    s.sendto(q, (dnsaddr, 53))
                    ans = s.recv(4096)
                kind = "dns_udp"
            tally.add(f"{kind}_ok" if ans[:2] == q[:2] and ans[-4:] == bytes([192, 0, 2, 10])
                      else f"{kind}_err")
        except OSError:
            tally.add("dns_err")

    def bulk() -> None:
        n = args.bulk_mb * MIB
        chunk = os.urandom(MIB)
        try:
            with socket.create_connection((gw, ports["sink"]), timeout=60) as s:
                for _ in range(args.bulk_mb):
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
                got = struct.unpack("!Q", _recv_exact(s, 8))[0]
            tally.add("bulk_ok" if got == n else "bulk_err")
        except OSError:
            tally.add("bulk_err")

    threads = [threading.Thread(target=_paced, args=(rate, stop, fn), daemon=True)
               for rate, fn in ((args.conn_rate, tcp_conn), (2.0, udp_flow), (5.0, dns_query),
                                (1 / 20, bulk))]
    for t in threads:
        t.start()
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        tally.dump(args.tally)
        time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(70)
    tally.dump(args.tally)


# ---------------------------------------------------------------------------------------
# the soak (orchestrator)

def _proc_figures(pid: int) -> tuple[int, int, int]:
    """(open fds or -1, RSS bytes, anonymous RSS bytes) of ``pid``. RSS also counts the
    ring pages the process has touched (RssShmem), which grow up to the rings' size;
    RssAnon (/proc/PID/status, readable by anyone) is its own memory."""
    import psutil

    p = psutil.Process(pid)
    try:
        fds = p.num_fds()
    except psutil.AccessDenied:
        fds = -1
    anon = -1
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return fds, p.memory_info().rss, anon


def soak(args: argparse.Namespace) -> int:
    """Run the soak; return the exit status (0: nothing grew beyond the bound)."""
    import ringnet

    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"# ringnet soak, {started:%Y-%m-%d %H:%M} UTC, {args.minutes} min, {args.workers} workers, "
          f"warm-up {args.warmup} min, uid {os.geteuid()}, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.2f} (shared machine)", flush=True)
    print(f"# load: {args.conn_rate:g} TCP conn/s (10% RST), 2 UDP flows/s x 5 echoes, 5 DNS "
          f"queries/s (10% TCP), {args.bulk_mb} MiB bulk every 20 s, ping -i 0.5; "
          f"udp_timeout {args.udp_timeout} s", flush=True)
    tmp = tempfile.mkdtemp(prefix="ringnet-soak-")
    os.chmod(tmp, 0o755)
    portfile, tally = os.path.join(tmp, "ports.json"), os.path.join(tmp, "tally.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    servers = subprocess.Popen([sys.executable, "-m", "perf.soak", "--serve", portfile], env=env,
                               cwd=_ROOT)
    procs: list[subprocess.Popen] = [servers]
    status = 0
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(portfile):
            if servers.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: the servers did not start")
            time.sleep(0.05)
        with open(portfile) as f:
            ports = json.load(f)
        cfg = ringnet.NetworkConfig(workers=args.workers, allow_host_loopback=True,
                                    dns_upstream=(f"127.0.0.1:{ports['dns']}",),
                                    udp_timeout=args.udp_timeout)
        with ringnet.Network(cfg) as net:
            gw = cfg.gateway4 or "10.0.2.2"
            dns = cfg.dns4 or "10.0.2.3"
            seconds = args.minutes * 60
            load_argv = [sys.executable, "-m", "perf.soak", "--load", "--ports", json.dumps(ports),
                         "--gateway", gw, "--dns", dns, "--tally", tally, "--seconds", str(seconds),
                         "--conn-rate", str(args.conn_rate), "--bulk-mb", str(args.bulk_mb)]
            loader = net.spawn(load_argv, env=env, cwd=_ROOT)
            ping = net.spawn(["ping", "-q", "-i", "0.5", "-w", str(seconds), gw],
                             stdout=subprocess.PIPE, text=True)
            procs += [loader, ping]
            status = _watch(net, args, tally, loader)
            ping_out = ping.communicate(timeout=seconds + 60)[0]
            summary = [line for line in ping_out.splitlines() if "packets" in line]
            print(f"# ping: {summary[0] if summary else ping_out.strip()}")
            if loader.wait(120) != 0:
                print(f"# FAIL: the load process exited with status {loader.returncode}")
                status = 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    print(f"# result: {'PASS' if status == 0 else 'FAIL'}", flush=True)
    return status


def _watch(net: Any, args: argparse.Namespace, tally: str, loader: subprocess.Popen) -> int:
    """Print a row a minute for ``args.minutes``; check the bound after warm-up."""
    names = {pid: role for pid, role in
             [(net.pid, "ns")] + [(p, f"w{i}") for i, p in enumerate(net.worker_pids)]}
    names[os.getpid()] = "orch"
    peak: dict[str, tuple[int, int, int]] = {}
    status = 0
    prev = net.counters()
    prev_tally: dict[str, int] = {}
    start = time.monotonic()
    cols = " ".join(f"{r}:fds/rss/anonMiB" for r in names.values())
    print(f"# min  {cols}  flows(rows) tcp/udp/icmp udp_ports | counters (per minute) | load "
          "(per minute)", flush=True)
    for minute in range(1, args.minutes + 1):
        while time.monotonic() < start + minute * 60:
            if loader.poll() is not None:
                print(f"# FAIL: the load process exited early, status {loader.returncode}")
                return 1
            time.sleep(1.0)
        figs = {role: _proc_figures(pid) for pid, role in names.items()}
        cur = net.counters()
        w = cur["workers"]
        gauges = "/".join(str(sum(x[g] for x in w)) for g in GAUGES[:3])
        ports = sum(x["udp_ports_open"] for x in w)
        nrows = len(net.flows())
        ctrs = " ".join(f"{c}={sum(x[c] for x in w) - sum(x[c] for x in prev['workers'])}"
                        for c in COUNTERS)
        try:
            with open(tally) as f:
                t = json.load(f)
        except (OSError, ValueError):
            t = {}
        loadrow = " ".join(f"{k}={v - prev_tally.get(k, 0)}" for k, v in sorted(t.items()))
        prev, prev_tally = cur, t
        procs = " ".join(f"{r}:{fd}/{rss / MIB:.1f}/{anon / MIB:.1f}"
                         for r, (fd, rss, anon) in figs.items())
        print(f"{minute:4d}  {procs}  {nrows} {gauges} {ports} | {ctrs} | {loadrow}", flush=True)
        for role, (fd, rss, anon) in figs.items():
            if minute <= args.warmup or role not in peak:
                pfd, prss, panon = peak.get(role, (fd, rss, anon))
                peak[role] = (max(pfd, fd), max(prss, rss), max(panon, anon))
                continue
            pfd, prss, panon = peak[role]
            if fd >= 0 and fd > pfd + args.fd_slack:
                print(f"# FAIL: {role} has {fd} fds, warm-up peak {pfd} + slack {args.fd_slack}")
                status = 1
            if rss > prss * 1.10 + 8 * MIB:
                print(f"# FAIL: {role} RSS {rss / MIB:.1f} MiB, warm-up peak {prss / MIB:.1f} MiB "
                      "+ 10% + 8 MiB")
                status = 1
            if anon > panon * 1.10 + 2 * MIB:
                print(f"# FAIL: {role} anonymous RSS {anon / MIB:.1f} MiB, warm-up peak "
                      f"{panon / MIB:.1f} MiB + 10% + 2 MiB")
                status = 1
        if net.failed_children():
            print(f"# FAIL: children exited: {', '.join(net.failed_children())}")
            return 1
    bound = ", ".join(f"{r} fds<={pfd + args.fd_slack} rss<={(prss * 1.1 + 8 * MIB) / MIB:.1f}MiB "
                      f"anon<={(panon * 1.1 + 2 * MIB) / MIB:.1f}MiB"
                      for r, (pfd, prss, panon) in peak.items())
    print(f"# bound after warm-up: {bound}", flush=True)
    return status


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=int, default=30, help="length of the run (default 30)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="minutes before the bound applies (default 5, at most a third)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conn-rate", type=float, default=20.0, help="TCP connections a second")
    ap.add_argument("--bulk-mb", type=int, default=64, help="MiB of each bulk transfer")
    ap.add_argument("--udp-timeout", type=int, default=30)
    ap.add_argument("--fd-slack", type=int, default=32)
    ap.add_argument("--rootless", action="store_true",
                    help="started as root, run as the unprivileged test user (fds then unknown)")
    ap.add_argument("--serve", metavar="PORTFILE", help=argparse.SUPPRESS)
    ap.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--gateway", help=argparse.SUPPRESS)
    ap.add_argument("--dns", help=argparse.SUPPRESS)
    ap.add_argument("--tally", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.load:
        load(args)
        return 0
    if args.minutes < 1:
        ap.error(f"--minutes={args.minutes} must be at least 1")
    if args.warmup is None:
        args.warmup = min(5, args.minutes // 3)
    if not 0 <= args.warmup < args.minutes:
        ap.error(f"--warmup={args.warmup} must be between 0 and --minutes - 1")
    if args.rootless:
        from perf import rootless

        if rootless.should_drop(False):
            return rootless.rerun("perf.soak", [a for a in (argv if argv is not None else sys.argv[1:])
                                                if a != "--rootless"])
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
