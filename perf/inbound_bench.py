"""Issue 11's inbound family: traffic through a published port, ringnet against pasta and slirp4netns.

    python -m perf.inbound_bench [--repeat 3] [--seconds 3] [--backends LIST] [--workers 1]
                                 [--as-root] [--out DIR]

Servers run inside the namespace, clients on host loopback, through a forward of each
stack: ringnet's ``publish`` (``ringnet``: the default, host-loopback clients on the splice
route; ``ringnet-core``: ``splice_local=False``, the same clients through the C core),
pasta's ``-t``/``-u``, slirp4netns's ``add_hostfwd`` over its API socket (``--api-socket``,
the JSON requests podman's port handler sends). Tests, each ``--repeat`` times on one
fresh namespace per backend:

- ``tcp host->ns``: ``iperf3 -c`` on the host sending to ``iperf3 -s`` inside;
- ``tcp ns->host``: the same with ``-R`` (the server inside sends);
- ``crr``: connect, 1-byte request and answer, close, one client (perf/netbench.c), the
  server inside;
- ``udp``: ``iperf3 -u -l 1400 -b 5G`` from the host: the rate received inside.

Each figure is the median of the runs; each ringnet ÷ peer ratio is the ratio of the means
of the per-second samples of all runs, with a bootstrap 95% interval (perf/stats.py).
``--from inbound.json`` prints the table of an earlier run again. Started as root, it runs
as the unprivileged test user (perf/rootless.py). Needs iperf3, pasta (passt) and
slirp4netns (scripts/install-peers.sh), and a C compiler for netbench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from . import rootless, stats
from .backends import _HolderEnv, Backend, BackendError
from .measure import build_netbench, free_port

NS_ADDR = "10.0.2.100"
IPERF_PORT, ECHO_PORT = 5201, 7777
TESTS = ("tcp host->ns", "tcp ns->host", "crr", "udp")
UDP_SIZE, UDP_RATE = 1400, "5G"
MTU = 65520


class _Peer(Backend):
    """A peer stack in an ``unshare -Urn`` holder, forwards set up at start."""

    def __init__(self, name: str) -> None:
        self.name = self.kind = name


def _pasta_env(tcp_port: int, crr_port: int) -> _HolderEnv:
    env = _HolderEnv(_Peer("pasta"), MTU)
    argv = ["pasta", "--config-net", "-f", "-q", "-4", "-a", NS_ADDR, "-n", "24", "-g", "10.0.2.2",
            "-m", str(MTU), "-t", f"{tcp_port}:{IPERF_PORT}", "-t", f"{crr_port}:{ECHO_PORT}",
            "-u", f"{tcp_port}:{IPERF_PORT}", "-T", "none", "-U", "none"]
    if os.geteuid() == 0:
        argv += ["--runas", "0"]
    try:
        env.start_pasta(argv)
    except BaseException:
        env.close()
        raise
    return env


def _slirp_api(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """One request on slirp4netns's API socket; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return json.loads(data)


def _slirp_env(tcp_port: int, crr_port: int, work: str) -> _HolderEnv:
    env = _HolderEnv(_Peer("slirp4netns"), MTU)
    api = os.path.join(work, "slirp.sock")
    try:
        env.start_slirp4netns([f"--api-socket={api}"])
        for proto, host, guest in (("tcp", tcp_port, IPERF_PORT), ("udp", tcp_port, IPERF_PORT),
                                   ("tcp", crr_port, ECHO_PORT)):
            got = _slirp_api(api, {"execute": "add_hostfwd", "arguments": {
                "proto": proto, "host_addr": "127.0.0.1", "host_port": host, "guest_port": guest}})
            if "error" in got:
                raise BackendError(f"slirp4netns add_hostfwd {proto} {host}: {got['error']}")
    except BaseException:
        env.close()
        raise
    return env


class _RingnetEnv:
    """ringnet with the three forwards from its configuration."""

    def __init__(self, name: str, tcp_port: int, crr_port: int, workers: int, splice: bool) -> None:
        import ringnet

        self.name = name
        self.net = ringnet.Network(mtu=MTU, workers=workers, splice_local=splice, publish=[
            f"127.0.0.1:{tcp_port}:{IPERF_PORT}", f"127.0.0.1:{tcp_port}:{IPERF_PORT}/udp",
            f"127.0.0.1:{crr_port}:{ECHO_PORT}"])
        self.net.start()

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        return self.net.spawn(argv, **kw)

    def health(self) -> Optional[str]:
        dead = self.net.failed_children()
        return f"ringnet processes exited: {', '.join(dead)}" if dead else None

    def close(self) -> None:
        self.net.close()


def start(name: str, tcp_port: int, crr_port: int, workers: int, work: str) -> Any:
    """A fresh namespace of backend ``name`` with the forwards in place."""
    if name == "ringnet":
        return _RingnetEnv(name, tcp_port, crr_port, workers, True)
    if name == "ringnet-core":
        return _RingnetEnv(name, tcp_port, crr_port, workers, False)
    if name == "pasta":
        return _pasta_env(tcp_port, crr_port)
    if name == "slirp4netns":
        return _slirp_env(tcp_port, crr_port, work)
    raise ValueError(name)


def _echo_ready(port: int, deadline: float) -> bool:
    """Whether the echo server inside answers through the forward (retried until ``deadline``)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"x")
                if s.recv(1) == b"x":
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _iperf3(test: str, port: int, seconds: float) -> dict[str, Any]:
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}", "-J"]
    if test == "tcp ns->host":
        argv.append("-R")
    if test == "udp":
        argv += ["-u", "-l", str(UDP_SIZE), "-b", UDP_RATE, "-w", "4M"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"iperf3 did not finish within {seconds + 15:g} s"}
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "error": r.stderr.strip()[-200:] or f"status {r.returncode}"}
    if data.get("error"):
        return {"ok": False, "error": data["error"]}
    end = data.get("end", {})
    recv = end.get("sum_received") or end.get("sum") or {}
    run: dict[str, Any] = {"ok": True, "value": recv.get("bits_per_second", 0) / 1e9, "unit": "Gbit/s"}
    if test == "udp":
        run["loss_percent"] = recv.get("lost_percent")
        # the sender's intervals are the offered rate: scale them by what arrived
        sent = end.get("sum_sent") or end.get("sum") or {}
        share = recv.get("bits_per_second", 0) / sent["bits_per_second"] if sent.get("bits_per_second") else 0
        run["per_second"] = [x * share for x in stats.iperf3_per_second(data.get("intervals") or [])]
    else:
        side = data if test == "tcp ns->host" else data.get("server_output_json")
        intervals = (side or data).get("intervals") or []
        run["per_second"] = stats.iperf3_per_second(intervals)
        run["retransmits"] = (end.get("sum_sent") or {}).get("retransmits")
    return run


def _crr(netbench: str, port: int, seconds: float) -> dict[str, Any]:
    try:
        r = subprocess.run([netbench, "crr", "127.0.0.1", str(port), f"{seconds:g}", "1", "1000000"],
                           capture_output=True, text=True, timeout=seconds + 15)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"netbench did not finish within {seconds + 15:g} s"}
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "error": r.stderr.strip()[-200:] or f"status {r.returncode}"}
    if not data.get("ok") or not data.get("ops"):
        return {"ok": False, "error": data.get("error") or "no connection"}
    return {"ok": True, "value": data["ops_per_s"] / 1000.0, "unit": "k conn/s",
            "per_second": [x / 1000.0 for x in
                           stats.counts_per_second(data.get("per_second") or [], float(data["seconds"]))],
            "p50_us": data.get("p50_us"), "p99_us": data.get("p99_us"), "errors": data.get("errors")}


def run_backend(name: str, args: argparse.Namespace, netbench: str, work: str) -> dict[str, list]:
    """Every test ``--repeat`` times on one namespace of ``name``: {test: [run, ...]}."""
    tcp_port, crr_port = free_port(), free_port()
    while crr_port == tcp_port:
        crr_port = free_port()
    out: dict[str, list] = {t: [] for t in args.tests}
    try:
        env = start(name, tcp_port, crr_port, args.workers, work)
    except (BackendError, OSError, Exception) as e:  # noqa: B014 - a peer may fail any way
        print(f"  {name}: did not start: {e}", flush=True)
        return out
    procs = []
    try:
        procs.append(env.spawn(["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL))
        procs.append(env.spawn([netbench, "server", "0.0.0.0", str(ECHO_PORT), "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not _echo_ready(crr_port, time.monotonic() + 30):
            print(f"  {name}: the echo server inside is not reachable through the forward", flush=True)
            return out
        time.sleep(0.3)  # iperf3 -s started first; the echo server answering means both are up
        for rep in range(args.repeat):
            for test in args.tests:
                run = _crr(netbench, crr_port, args.seconds) if test == "crr" else \
                    _iperf3(test, tcp_port, args.seconds)
                out[test].append(run)
                shown = f"{run['value']:.2f} {run['unit']}" if run["ok"] else f"failed: {run['error']}"
                if run.get("loss_percent") is not None:
                    shown += f" ({run['loss_percent']:.1f}% lost)"
                print(f"  {name:12} {test:13} run {rep + 1}: {shown}", flush=True)
                time.sleep(0.2)  # let iperf3 -s take the next client
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        env.close()
    return out


def _median(runs: list) -> Optional[float]:
    vals = sorted(r["value"] for r in runs if r.get("ok"))
    return vals[len(vals) // 2] if vals else None


def _ratio(a: list, b: list) -> stats.Ratio:
    """ringnet's runs ``a`` against a peer's ``b``: the ratio of the means of their
    per-second samples, with its bootstrap 95% interval."""
    sa = [x for r in a if r.get("ok") for x in r.get("per_second", [])]
    sb = [x for r in b if r.get("ok") for x in r.get("per_second", [])]
    return stats.ratio(sa, sb, stats.PER_SECOND)


def table(results: dict[str, dict[str, list]], backends: list[str], tests: list[str]) -> dict:
    """Print the Markdown table of medians and ratios; return the ratios as JSON."""
    print("\n| test | " + " | ".join(backends) + " | ringnet ÷ pasta | ringnet ÷ slirp4netns "
          "| ringnet-core ÷ pasta |")
    print("|---" * (len(backends) + 4) + "|")
    ratios: dict[str, dict[str, Any]] = {}
    for test in tests:
        cells = []
        for b in backends:
            m = _median(results[b][test])
            unit = next((r["unit"] for r in results[b][test] if r.get("ok")), "")
            cells.append(f"{m:.2f} {unit}" if m is not None else "failed")
        rs = {}
        for mine, peer in (("ringnet", "pasta"), ("ringnet", "slirp4netns"), ("ringnet-core", "pasta")):
            if mine in results and peer in results:
                rs[f"{mine}/{peer}"] = _ratio(results[mine][test], results[peer][test])
        ratios[test] = {k: {"value": v.value, **v.as_json()} for k, v in rs.items()}
        print(f"| {test} | " + " | ".join(cells) + " | " + " | ".join(
            rs[k].text() if k in rs else "—" for k in ("ringnet/pasta", "ringnet/slirp4netns",
                                                        "ringnet-core/pasta")) + " |")
    print("\nfigures: medians of the runs; ratios: means of the per-second samples of all runs, "
          "[lo, hi] their bootstrap 95% interval (perf/stats.py)")
    return ratios


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.inbound_bench", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per test and backend (default 3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per run (default 3)")
    ap.add_argument("--backends", default="ringnet,ringnet-core,pasta,slirp4netns")
    ap.add_argument("--tests", default=",".join(TESTS))
    ap.add_argument("--workers", type=int, default=1, help="ringnet workers (default 1)")
    ap.add_argument("--out", help="also write inbound.json into this directory")
    ap.add_argument("--as-root", action="store_true", help="started as root, stay root")
    ap.add_argument("--from", dest="from_json", metavar="JSON",
                    help="print the table of an earlier run's inbound.json; measure nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            old = json.load(f)
        table(old["results"], list(old["results"]), [t for t in TESTS if all(
            t in r for r in old["results"].values())])
        return 0
    args.backends = [b for b in args.backends.split(",") if b]
    args.tests = [t for t in args.tests.split(",") if t]
    if set(args.backends) - {"ringnet", "ringnet-core", "pasta", "slirp4netns"} or \
            set(args.tests) - set(TESTS) or args.repeat < 1 or args.seconds <= 0:
        ap.error(f"backends: ringnet, ringnet-core, pasta, slirp4netns; tests: {', '.join(TESTS)}; "
                 "--repeat and --seconds > 0")
    for tool in ("iperf3", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install-peers.sh)", file=sys.stderr)
            return 2
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.inbound_bench", list(argv if argv is not None else sys.argv[1:]),
                              out=args.out)
    print(f"perf.inbound_bench: running as {rootless.whoami()}, load {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs", flush=True)
    work = tempfile.mkdtemp(prefix="ringnet-inbound-")
    try:
        netbench, why = build_netbench(work)
        if netbench is None:
            print(why, file=sys.stderr)
            return 2
        results = {b: run_backend(b, args, netbench, work) for b in args.backends}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = table(results, args.backends, args.tests)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "inbound.json"), "w") as f:
            json.dump({"command": rootless.command("perf.inbound_bench", argv), "user": rootless.whoami(),
                       "loadavg": os.getloadavg(), "seconds": args.seconds, "repeat": args.repeat,
                       "workers": args.workers, "results": results, "ratios": ratios}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
