"""MTU sweep: ringnet against slirp4netns, pasta and host loopback, on this machine, in one run.

    python -m perf.sweep [--quick] [--mtus 1500,65520] [--repeat 3] [--backends ...] [--out DIR]
                         [--tests tcp,udp,rr,crr | --tests latency,churn | ...]

For each MTU, each backend (loopback, slirp4netns, pasta, ringnet with 1..N workers)
starts a fresh namespace and runs, each point --repeat times: iperf3 TCP and UDP in
both directions (namespace->host, host->namespace) with 1 and 4 streams, a 1-byte
TCP ping-pong and a connection-rate loop (C helper, perf/netbench.c) with 1 and 4
clients. Two families are chosen by name: ``latency`` (rr, crr and crr_rst: ping-pong and
connect + request + close with a FIN and with an RST, with p50, p99, max, the operations
over 2 ms and the slowest ones' timestamps) and ``churn`` (http and http_close: wrk
against a private nginx, keep-alive and one connection per request). Servers run on host loopback; clients inside the namespace reach them at
the gateway, 10.0.2.2. Writes sweep.json (schema in perf/README.md), sweep.csv,
sweep.md and PNG plots to --out, and prints every ringnet figure as a ratio to
slirp4netns, pasta and loopback from the same run, with a bootstrap 95% interval
(perf/stats.py). Started as root it runs as the unprivileged test user, as users run
it (perf/rootless.py); --as-root keeps root.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional

from . import backends as bk
from . import latency, measure, report, rootless, stats

SCHEMA = "ringnet-perf-sweep"
SCHEMA_VERSION = 1
TESTS = ("tcp", "udp", "rr", "crr", "crr_rst", "http", "http_close")
DEFAULT_TESTS = ("tcp", "udp", "rr", "crr")
NETBENCH_TESTS = latency.NETBENCH                  # perf/netbench.c against its echo server
HTTP_TESTS = latency.HTTP                          # wrk against nginx
# --tests names that stand for several tests
FAMILIES = {"latency": NETBENCH_TESTS, "churn": HTTP_TESTS}
DIRECTIONS = ("ns->host", "host->ns")
# these clients always run inside: a round trip has both directions in it
ROUND_TRIP_TESTS = NETBENCH_TESTS + HTTP_TESTS
DEFAULT_MTUS = "1500,4000,9000,16384,32768,65520"
QUICK_MTUS = "1500,65520"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _csv(text: str, conv: Callable[[str], Any] = str) -> list[Any]:
    return [conv(x.strip()) for x in text.split(",") if x.strip()]


def expand_tests(names: list[str]) -> list[str]:
    """--tests with each family name replaced by its tests, in order, each test once."""
    out: list[str] = []
    for n in names:
        for t in FAMILIES.get(n, (n,)):
            if t not in out:
                out.append(t)
    return out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m perf.sweep", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"CI mode: MTUs {QUICK_MTUS}, 1 repeat, 1 s runs, 1 worker, short ring runs")
    ap.add_argument("--mtus", help=f"comma-separated (default {DEFAULT_MTUS})")
    ap.add_argument("--repeat", type=int, help="runs per point (default 3; --quick 1)")
    ap.add_argument("--seconds", type=float, help="seconds per iperf3 run (default 4; --quick 1)")
    ap.add_argument("--rr-seconds", type=float,
                    help="seconds per rr/crr/crr_rst run, and per http/http_close run rounded to whole "
                         "seconds, at least 1 (default 2; --quick 0.5)")
    ap.add_argument("--streams", default="1,4", help="parallel streams/clients (default 1,4)")
    ap.add_argument("--tests", default=",".join(DEFAULT_TESTS),
                    help=f"subset of {','.join(TESTS)}, or the families latency (rr,crr,crr_rst) and "
                         f"churn (http,http_close) (default {','.join(DEFAULT_TESTS)})")
    ap.add_argument("--directions", default=",".join(DIRECTIONS))
    ap.add_argument("--backends", default="loopback,slirp4netns,pasta,ringnet",
                    help="subset of loopback,slirp4netns,pasta,ringnet (ringnet: every worker count)")
    ap.add_argument("--max-workers", type=int,
                    help="ringnet runs with 1..N workers (default: CPUs available; --quick 1)")
    ap.add_argument("--udp-rate", default="1G", help="total offered UDP rate (iperf3 units, default 1G)")
    ap.add_argument("--udp-size", type=int, default=1400, help="UDP datagram bytes (default 1400)")
    ap.add_argument("--max-conns", type=int, default=200_000,
                    help="rr, crr, crr_rst: operations per run at most")
    ap.add_argument("--no-ring", action="store_true", help="skip the ring benchmark section")
    ap.add_argument("--out", default=os.path.join(_HERE, "results", "tmp"),
                    help="output directory (default perf/results/tmp; the committed run is perf/results)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--as-root", action="store_true",
                    help="started as root, stay root (default: run as the unprivileged test user, "
                         f"{rootless.TEST_USER})")
    a = ap.parse_args(argv)
    a.mtus = _csv(a.mtus or (QUICK_MTUS if a.quick else DEFAULT_MTUS), int)
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.seconds = a.seconds or (1.0 if a.quick else 4.0)
    a.rr_seconds = a.rr_seconds or (0.5 if a.quick else 2.0)
    a.streams = _csv(a.streams, int)
    a.tests = expand_tests(_csv(a.tests))
    a.directions = _csv(a.directions)
    a.backends = _csv(a.backends)
    if a.max_workers is None:
        a.max_workers = 1 if a.quick else max(1, len(os.sched_getaffinity(0)))
    for what, got, allowed in (("test", a.tests, TESTS), ("direction", a.directions, DIRECTIONS),
                               ("backend", a.backends, ("loopback", "slirp4netns", "pasta", "ringnet"))):
        bad = set(got) - set(allowed)
        if bad:
            ap.error(f"unknown {what}: {', '.join(sorted(bad))}")
    if a.repeat < 1 or a.seconds <= 0 or a.rr_seconds <= 0 or not a.mtus:
        ap.error("--repeat, --seconds and --rr-seconds must be positive and --mtus non-empty")
    return a


# The plan ------------------------------------------------------------------------------

def specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """(test, direction, streams) of every point of one backend at one MTU."""
    out = []
    for test in args.tests:
        dirs = ["ns->host"] if test in ROUND_TRIP_TESTS else args.directions
        for d in dirs:
            for s in args.streams:
                out.append({"test": test, "direction": d, "streams": s})
    return out


def select_backends(args: argparse.Namespace) -> list[bk.Backend]:
    chosen = []
    for b in bk.all_backends(args.max_workers):
        if b.kind in args.backends:
            chosen.append(b)
    return chosen


def new_point(b: bk.Backend, mtu: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {"backend": b.name, "kind": b.kind, "workers": b.workers, "mtu": mtu, **spec,
            "status": "pending", "reason": None, "runs": [], "summary": {}}


def summarise(point: dict[str, Any]) -> None:
    """Fill status and summary (min/median/max over the successful runs) of a point."""
    ok = [r for r in point["runs"] if r.get("ok")]
    if point["status"] == "skipped":
        return
    if not point["runs"]:
        point["status"] = "failed"
    elif len(ok) == len(point["runs"]):
        point["status"] = "ok"
    else:
        point["status"] = "partial" if ok else "failed"
        errors = sorted({str(r.get("error")) for r in point["runs"] if not r.get("ok")})
        point["reason"] = point["reason"] or "; ".join(errors)
    for m in report.METRICS[point["test"]]:
        if m == "per_second_gbps":
            vals = [v for r in ok for v in r.get(m) or []]
        else:
            vals = [r[m] for r in ok if r.get(m) is not None]
        if vals:
            point["summary"][m] = stats.summary(vals)


# Running ---------------------------------------------------------------------------------

class _Progress:
    """tqdm when it is installed and stderr is a terminal; otherwise one line per group."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        self.done, self.total = 0, total
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def label(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text, refresh=True)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_backend(b: bk.Backend, mtu: int, args: argparse.Namespace, netbench: Optional[str],
                nb_reason: str, points: list[dict[str, Any]], progress: _Progress,
                work: str) -> None:
    """All points of backend ``b`` at ``mtu``, appended to ``points``; ``work`` is the sweep's
    private directory (the HTTP runs' nginx configurations go there)."""
    mine = [new_point(b, mtu, s) for s in specs(args)]
    points.extend(mine)

    def settle(pts: list[dict[str, Any]], status: str, reason: str) -> None:
        for p in pts:
            p["status"], p["reason"] = status, reason
            progress.step(args.repeat)

    skip = b.unavailable()
    if skip:
        settle(mine, "skipped", skip)
        return
    if shutil.which("iperf3") is None:
        settle([p for p in mine if p["test"] in ("tcp", "udp")], "skipped",
               "iperf3 not found on PATH (scripts/install-peers.sh installs it)")
    if netbench is None:
        settle([p for p in mine if p["test"] in NETBENCH_TESTS], "skipped", nb_reason)
    http_why = measure.http_tools()[2]
    if http_why:
        settle([p for p in mine if p["test"] in HTTP_TESTS and p["status"] == "pending"], "skipped",
               http_why)
    todo = [p for p in mine if p["status"] == "pending"]
    if not todo:
        return
    progress.label(f"mtu {mtu} {b.name}: starting")
    try:
        env = b.start(mtu)
    except (bk.BackendError, OSError) as e:
        settle(todo, "failed", f"{b.name} did not start at MTU {mtu}: {e}")
        return
    with env:
        try:
            pr = measure.probe(env, netbench)
        except RuntimeError as e:
            settle(todo, "failed", f"probe: {e}")
            return
        for p in todo:
            why = pr["tcp"]
            if p["test"] == "udp" and not why and pr["udp"]:
                why = pr["udp"]
            elif p["test"] == "udp" and why:
                why = f"{why} (iperf3's control connection is TCP)"
            if why:
                settle([p], "failed", f"probe: {why}")
                continue
            for i in range(args.repeat):
                progress.label(f"mtu {mtu} {b.name} {p['test']} {p['direction']} P{p['streams']} "
                               f"#{i + 1}")
                if p["test"] in ("tcp", "udp"):
                    r = measure.iperf3_run(env, p["test"], p["direction"], p["streams"], args.seconds,
                                           args.udp_rate, args.udp_size)
                elif p["test"] in HTTP_TESTS:
                    r = measure.http_run(env, work, p["test"], p["streams"], args.rr_seconds)
                else:
                    assert netbench is not None
                    r = measure.netbench_run(env, netbench, p["test"], p["streams"], args.rr_seconds,
                                             args.max_conns)
                r["repeat"] = i
                health = env.health()
                if not r["ok"] and health:
                    r["error"] = f"{r['error']} ({health})"
                p["runs"].append(r)
                progress.step()
            summarise(p)


def ring_section(args: argparse.Namespace) -> dict[str, Any]:
    """perf/ring_bench.py's figures (one ring between two processes, beside memcpy)."""
    if args.no_ring:
        return {"status": "skipped", "reason": "--no-ring", "rows": []}
    try:
        from . import ring_bench
    except (ImportError, SystemExit) as e:
        return {"status": "skipped", "reason": f"the ring test loops cannot be imported: {e}", "rows": []}
    secs, rep = (0.05, 1) if args.quick else (0.3, 3)
    cpus = ring_bench.default_cpus()
    rows = []
    try:
        for frame in (64, 1500, 65536):
            row = ring_bench.measure(frame, seconds=secs, repeat=rep, cpus=cpus)
            row["aim"], row["aim_passed"] = ring_bench.aim(row)
            rows.append(row)
    except RuntimeError as e:
        return {"status": "failed", "reason": str(e), "rows": rows}
    return {"status": "ok", "reason": None, "rows": rows, "pinned_cpus": list(cpus) if cpus else None,
            "seconds": secs, "repeat": rep}


def backend_entry(b: bk.Backend) -> dict[str, Any]:
    why = b.unavailable()
    return {"name": b.name, "kind": b.kind, "workers": b.workers,
            "status": "skipped" if why else "available", "reason": why,
            "version": None if why else b.version()}


def environment(chosen: list[bk.Backend], cc: str) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    commit = None
    try:
        # safe.directory: run rootless, the checkout may belong to another user (root)
        r = subprocess.run(["git", "-c", f"safe.directory={os.path.dirname(_HERE)}", "-C",
                            os.path.dirname(_HERE), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        commit = r.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    import psutil
    versions = {"iperf3": bk.tool_version(["iperf3", "--version"]), "cc": cc,
                "python": platform.python_version(), **measure.tool_versions()}
    for b in chosen:
        versions[b.kind] = None if b.unavailable() else b.version()
    try:
        import ringnet
        ringnet_module: Optional[str] = os.path.dirname(os.path.abspath(ringnet.__file__))
    except ImportError:
        ringnet_module = None
    return {"kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_bytes": psutil.virtual_memory().total, "euid": os.geteuid(),
            "user": rootless.whoami(),
            "loadavg_start": list(os.getloadavg()), "git_commit": commit, "ringnet_module": ringnet_module,
            "versions": versions}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.sweep", list(argv if argv is not None else sys.argv[1:]),
                              out=args.out)
    print(f"perf.sweep: running as {rootless.whoami()}", flush=True)
    started = time.time()
    chosen = select_backends(args)
    # A peer that is missing is skipped; ringnet, what the sweep measures, is not: a sweep
    # without it (a source tree without its built core shadowing the installed one) would
    # run for half an hour and compare nothing.
    for b in chosen:
        why = b.unavailable() if b.kind == "ringnet" else None
        if why:
            print(f"perf.sweep: {b.name}: {why}; build it (python ringnet/_build.py) or run "
                  "from outside the source tree, or leave ringnet out (--backends)",
                  file=sys.stderr)
            return 2
    work = measure.workdir()
    netbench, cc_or_reason = measure.build_netbench(work)
    doc: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
        "finished": None, "duration_s": None, "interrupted": False,
        "command": rootless.command("perf.sweep", argv),
        "config": {k: v for k, v in vars(args).items()
                   if k not in ("out", "no_plots", "no_progress", "as_root")},
        "environment": environment(chosen, cc_or_reason if netbench else f"unavailable: {cc_or_reason}"),
        "helper": {"rr_crr": "perf/netbench.c, compiled at run time" if netbench else None,
                   "reason": None if netbench else cc_or_reason,
                   "http": None if measure.http_tools()[2] else
                   f"wrk inside against nginx on {bk.HOST}, {measure.HTTP_FILE_BYTES} B file",
                   "http_reason": measure.http_tools()[2]},
        "backends": [backend_entry(b) for b in chosen],
        "points": [], "ratios": [], "ring": None,
    }
    signal.signal(signal.SIGTERM, _interrupt)
    total = len(args.mtus) * len(chosen) * len(specs(args)) * args.repeat
    progress = _Progress(total, not args.no_progress)
    try:
        progress.label("ring benchmark")
        doc["ring"] = ring_section(args)
        for mtu in args.mtus:
            for b in chosen:
                run_backend(b, mtu, args, netbench, cc_or_reason, doc["points"], progress, work)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        for p in doc["points"]:
            if p["status"] == "pending":
                summarise(p)
                p["reason"] = p["reason"] or "interrupted"
    finally:
        progress.close()
        shutil.rmtree(work, ignore_errors=True)
    doc["ring"] = doc["ring"] or {"status": "skipped", "reason": "interrupted", "rows": []}
    doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    doc["duration_s"] = round(time.time() - started, 1)
    doc["environment"]["loadavg_end"] = list(os.getloadavg())
    doc["ratios"] = report.ratios(doc["points"])
    paths = report.write_all(doc, args.out, plots=not args.no_plots)
    print(report.headline(doc))
    print("wrote " + ", ".join(rootless.shown_path(p) for p in paths))
    return 130 if doc["interrupted"] else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the sweep like ^C: what ran so far is written."""
    raise KeyboardInterrupt()


if __name__ == "__main__":
    sys.exit(main())
