"""DNS queries per second through each stack's DNS forwarder: ringnet, slirp4netns, pasta.

    python -m perf.dns_bench [--seconds 5] [--repeat 3] [--outstanding 100]
                             [--backends loopback,slirp4netns,pasta,ringnet] [--workers 1]
                             [--out perf/results/tmp]

One DNS server, dnsmasq on host loopback (127.83.0.1:53, fixed records, nothing forwarded
further), answers every backend. dnsperf runs inside each namespace and queries the
namespace's DNS address, 10.0.2.3, for A and AAAA records, with --outstanding queries in
flight, for --seconds; `loopback` is dnsperf querying the server directly (the ceiling).
Each stack is pointed at the server the only way it allows: ringnet with dns_upstream;
slirp4netns and pasta read the first nameserver of /etc/resolv.conf, so each runs in a
private mount namespace where a file naming 127.83.0.1 is bind-mounted over it (hence
root, which also binds port 53; without root only loopback and ringnet run, and the
others are skipped with the reason). No query goes anywhere else.

Figures per backend: queries/s (median of --repeat runs, min-max), average latency, lost
queries, and the stack's CPU microseconds per query (psutil, its own processes); then
ringnet's queries/s ÷ each other backend's, with a bootstrap 95% interval over the runs
(perf/stats.py; n/a with fewer than 3 runs). Printed as Markdown and written to
OUT/dns.json. Needs dnsperf and dnsmasq (Debian
packages dnsperf, dnsmasq-base).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from . import stats
from .backends import BackendError, Env, Pasta, Ringnet, Slirp4netns, _RingnetEnv
from .measure import cpu_seconds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from localdns import LocalDns  # noqa: E402  (tests/localdns.py: dnsmasq on loopback)

SERVER = "127.83.0.1"
DNS_INSIDE = "10.0.2.3"
NAMES = {"example.test": ("192.0.2.10", "2001:db8::10")}
BACKENDS = ("loopback", "slirp4netns", "pasta", "ringnet")


def _private_resolv(resolv: str) -> tuple[str, ...]:
    """A command prefix: run in a private mount namespace where ``resolv`` is /etc/resolv.conf."""
    return ("unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            resolv)


class _LoopbackEnv(Env):
    """dnsperf on the host, straight at the server: the ceiling."""

    def spawn(self, argv, **kw):
        return subprocess.Popen(list(argv), **kw)


def start(name: str, workers: int, resolv: str, dns: LocalDns) -> Env:
    if name == "loopback":
        return _LoopbackEnv(None, 1500)  # type: ignore[arg-type]
    if name in ("slirp4netns", "pasta"):
        peer = Slirp4netns() if name == "slirp4netns" else Pasta()
        peer.wrap = _private_resolv(resolv)
        if name == "pasta":
            peer.extra = ("--dns-forward", DNS_INSIDE)
        return peer.start(1500)
    import ringnet

    env = _RingnetEnv.__new__(_RingnetEnv)
    Env.__init__(env, Ringnet(workers), 65520)
    try:
        env.net = ringnet.Network(workers=workers, dns_upstream=dns.upstream).start()
    except ringnet.RingnetError as e:
        raise BackendError(f"ringnet.Network did not start: {e}") from e
    return env


def unavailable(name: str) -> Optional[str]:
    tools = {"slirp4netns": ("slirp4netns", "unshare", "nsenter"),
             "pasta": ("pasta", "unshare", "nsenter")}.get(name, ())
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not found (scripts/install-peers.sh installs them)"
    if name in ("slirp4netns", "pasta") and os.geteuid() != 0:
        return (f"{name} forwards DNS to the first nameserver of /etc/resolv.conf only (port "
                "53): pointing it at our server needs root (a private mount namespace and port 53)")
    return None


def dnsperf(env: Env, server: str, port: int, qfile: str, seconds: float,
            outstanding: int) -> dict[str, Any]:
    """One dnsperf run: its figures and the stack's CPU per query."""
    pids = env.stack_pids()
    cpu0 = cpu_seconds(pids)
    argv = ["dnsperf", "-s", server, "-p", str(port), "-d", qfile, "-l", f"{seconds:g}",
            "-q", str(outstanding), "-c", "1", "-T", "1", "-t", "2"]
    p = env.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = p.communicate(timeout=seconds + 30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out = p.communicate()[0].decode(errors="replace")
    cpu1 = cpu_seconds(pids)

    def num(label: str) -> Optional[float]:
        m = re.search(rf"{label}:\s+([0-9.]+)", out)
        return float(m.group(1)) if m else None

    lat = num("Average Latency \\(s\\)")
    run: dict[str, Any] = {"qps": num("Queries per second"), "completed": num("Queries completed"),
                           "lost": num("Queries lost"),
                           "latency_ms": lat * 1000 if lat is not None else None,
                           "cpu_us_per_query": None}
    run["ok"] = p.returncode == 0 and bool(run["qps"])
    if cpu0 is not None and cpu1 is not None and run["completed"]:
        run["cpu_us_per_query"] = (cpu1 - cpu0) * 1e6 / run["completed"]
    if not run["ok"]:
        run["error"] = out.strip()[-300:] or f"dnsperf exited with status {p.returncode}"
    return run


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.dns_bench",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--outstanding", type=int, default=100)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--workers", type=int, default=1, help="ringnet workers")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "tmp"))
    a = ap.parse_args(argv)
    if shutil.which("dnsperf") is None:
        print("dnsperf is not installed (Debian package dnsperf)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ringnet-dnsbench-") as tmp:
        os.chmod(tmp, 0o755)
        qfile = os.path.join(tmp, "queries")
        with open(qfile, "w") as f:
            f.write("example.test A\nexample.test AAAA\n")
        resolv = os.path.join(tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write(f"nameserver {SERVER}\n")
        with LocalDns(NAMES, host=SERVER, port=53 if os.geteuid() == 0 else None) as dns:
            for name in filter(None, a.backends.split(",")):
                why = unavailable(name)
                if why:
                    results[name] = {"status": "skipped", "reason": why}
                    continue
                try:
                    env = start(name, a.workers, resolv, dns)
                except (BackendError, OSError) as e:
                    results[name] = {"status": "failed", "reason": str(e)}
                    continue
                server, port = (dns.host, dns.port) if name == "loopback" else (DNS_INSIDE, 53)
                with env:
                    runs = []
                    for _ in range(a.repeat):
                        runs.append(dnsperf(env, server, port, qfile, a.seconds, a.outstanding))
                        time.sleep(0.5)
                results[name] = {"status": "ok" if all(r["ok"] for r in runs) else "failed",
                                 "runs": runs}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "dns.json"), "w") as f:
        json.dump({"seconds": a.seconds, "repeat": a.repeat, "outstanding": a.outstanding,
                   "workers": a.workers, "loadavg": os.getloadavg(), "results": results}, f,
                  indent=1)
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    """The results as Markdown: one row per backend, then ringnet ÷ each other backend."""
    rows = ["| backend | queries/s median [min-max] | avg latency ms | lost | stack CPU µs/query |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        if r.get("status") != "ok":
            why = r.get("reason") or next((x.get("error") for x in r.get("runs", [])
                                           if x.get("error")), "")
            rows.append(f"| {name} | {r.get('status')}: {why} | | | |")
            continue
        qps = stats.summary(x["qps"] for x in r["runs"])
        lat = stats.summary(x["latency_ms"] for x in r["runs"])["median"]
        lost = sum(int(x["lost"] or 0) for x in r["runs"])
        cpu = [x["cpu_us_per_query"] for x in r["runs"] if x["cpu_us_per_query"] is not None]
        cpu_text = f"{stats.summary(cpu)['median']:.1f}" if cpu else "-"
        rows.append(f"| {name} | {qps['median']:,.0f} [{qps['min']:,.0f}-{qps['max']:,.0f}] "
                    f"| {lat:.3f} | {lost} | {cpu_text} |")
    mine = results.get("ringnet")
    if mine and mine.get("status") == "ok":
        rows += ["", "| ringnet ÷ | queries/s ratio [95% interval over runs] |", "|---|---|"]
        for name, r in results.items():
            if name == "ringnet":
                continue
            if r.get("status") != "ok":
                rows.append(f"| {name} | — ({r.get('status')}) |")
                continue
            rat = stats.run_ratio(mine["runs"], r["runs"], "qps")
            rows.append(f"| {name} | {rat.text()}{'' if rat.has_interval else ' (' + rat.why + ')'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
