"""Interleaved A/B of ringnet builds (and peers) on a shared, noisy machine (issue 12).

    python -m perf.ab --variant base=/tmp/ab/base --variant poll=/tmp/ab/poll \\
        [--peer pasta,slirp4netns,loopback] [--tests rr,crr,crr_rst] [--rounds 6]
        [--rr-seconds 2] [--streams 1] [--workers 1] [--mtu 1500] [--out FILE.json]
        [--base NAME]
    python -m perf.ab --summarize FILE.json [--base NAME]

A variant is NAME=ROOT[:VAR=VALUE...]: ROOT is a directory holding a built ``ringnet``
package (a copy of the checkout's ``ringnet/`` with its extension built in place, for
example ``cp -r ringnet csrc setup.py pyproject.toml ROOT && cd ROOT &&
python ringnet/_build.py``), VAR=VALUE are environment variables for that variant's
processes (ringnet's children inherit them). A peer is one of perf.backends' peers.

Every variant and peer gets one long-lived agent process (its own network, started
once, with ROOT first on PYTHONPATH); the driver then runs every test once per variant
per round, in an order reversed every round (A B C, C B A, A B C, ...), so that the
load other processes put on the machine drifts across all of them alike. The summary
gives each variant's medians over the rounds and its ratio to the first variant with
the bootstrap 95% interval of perf/stats.py (over runs), plus ringnet's counters per
operation (kicks, wakeups, naps...) to see where a change acts.

Started as root it runs itself again as the unprivileged test user (perf/rootless.py),
as every benchmark here; ROOT must be readable by that user (/tmp is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np

from . import rootless, stats

_PERF_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ("rr", "crr", "crr_rst", "tcp", "tcp_rev", "http", "http_close")
# counters shown per operation for ringnet variants
COUNTERS = ("kicks", "wakeups", "naps", "polls", "poll_hits", "pump_kicks", "pump_wakeups",
            "pump_naps", "pump_polls", "pump_poll_hits", "host_events", "timer_runs",
            "ring_full", "pump_ring_full")


# agent ---------------------------------------------------------------------------------

def agent(spec: str, mtu: int, workers: int, netbench: str) -> int:
    """Serve test commands (JSON lines on stdin) for one variant or peer, one result line
    each on stdout."""
    from . import backends as bk, measure

    kind = spec.split("=", 1)[0] if "=" in spec else spec
    if "=" in spec:
        backend: bk.Backend = bk.Ringnet(workers)
    else:
        backend = {b.name: b for b in bk.all_backends(1)}[kind]
    env = backend.start(mtu)
    work = tempfile.mkdtemp(prefix="ringnet-ab-")
    try:
        print(json.dumps({"ready": True, "pids": env.stack_pids()}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            test, streams, seconds = cmd["test"], cmd["streams"], cmd["seconds"]
            if test in ("tcp", "tcp_rev"):
                run = measure.iperf3_run(env, "tcp", "host->ns" if test == "tcp_rev" else "ns->host",
                                         streams, seconds)
            elif test.startswith("http"):
                run = measure.http_run(env, work, test, streams, seconds)
            else:
                run = measure.netbench_run(env, netbench, test, streams, seconds,
                                           cmd.get("max_conns", 200_000))
            run.pop("per_second", None)
            print(json.dumps(run), flush=True)
    finally:
        env.close()
    return 0


class Agent:
    """The driver's handle on one agent process."""

    def __init__(self, name: str, spec: str, args: argparse.Namespace, netbench: str) -> None:
        self.name = name
        env = dict(os.environ)
        roots = [_PERF_PARENT]
        if "=" in spec:
            root, *assigns = spec.split("=", 1)[1].split(":")
            roots.insert(0, os.path.abspath(root))
            for a in assigns:
                k, v = a.split("=", 1)
                env[k] = v
        env["PYTHONPATH"] = os.pathsep.join(roots)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perf.ab", "--agent", spec, "--mtu", str(args.mtu),
             "--workers", str(args.workers), "--netbench", netbench],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/", text=True)
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"agent {name} did not start")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent {self.name} exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def run(self, test: str, streams: int, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"test": test, "streams": streams, "seconds": seconds}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# summary -------------------------------------------------------------------------------

def _metric(test: str) -> str:
    return "gbps" if test.startswith("tcp") else "ops_per_s"


def _vals(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get("ok") and r.get(key) is not None]


def _fmt_ratio(r: stats.Ratio) -> str:
    if r.value is None:
        return "n/a"
    ci = f"[{r.lo:.3f}, {r.hi:.3f}]" if r.lo is not None else "[n/a]"
    return f"{r.value:.3f}x {ci}"


def paired(runs_b: list[dict[str, Any]], runs_a: list[dict[str, Any]], key: str,
           reps: int = stats.BOOTSTRAP, seed: int = stats.SEED) -> str:
    """Median over rounds of B's figure / A's figure in the same round, with a bootstrap
    95% interval over the rounds (resampled as pairs): load that drifts between rounds
    cancels out of each pair."""
    a = {r["round"]: r.get(key) for r in runs_a if r.get("ok") and r.get(key)}
    pairs = [float(r[key]) / float(a[r["round"]]) for r in runs_b
             if r.get("ok") and r.get(key) and r["round"] in a]
    if len(pairs) < stats.MIN_SAMPLES:
        return "n/a"
    x = np.array(pairs)
    rng = np.random.default_rng(seed)
    rep = np.median(x[rng.integers(0, x.size, size=(reps, x.size))], axis=1)
    lo, hi = np.percentile(rep, [2.5, 97.5])
    return f"{np.median(x):.3f}x [{lo:.3f}, {hi:.3f}]"


def _based(names: list[str], base: Optional[str]) -> list[str]:
    """``names`` with ``base`` (if given) first: summarize() gives ratios to the first."""
    return [base] + [n for n in names if n != base] if base else names


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], names: list[str]) -> str:
    """Markdown: per test, per variant, medians and ratios to names[0]."""
    out = []
    base = names[0]
    for test, by in results.items():
        m = _metric(test)
        out.append(f"\n### {test}\n")
        out.append(f"| variant | {m} median [min-max] | ratio to {base} | paired | p50 us | p99 us "
                   f"| p99 paired | max us (worst) | slow | retr | per-op counters |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in names:
            runs = by.get(name, [])
            v = _vals(runs, m)
            if not v:
                errs = "; ".join(str(r.get("error")) for r in runs if not r.get("ok"))[:200]
                out.append(f"| {name} | failed: {errs} | | | | | | | | | |")
                continue
            s = stats.summary(v)
            rb = stats.ratio(v, _vals(by.get(base, []), m))
            p50 = _vals(runs, "p50_us")
            p99 = _vals(runs, "p99_us")
            r99 = paired(runs, by.get(base, []), "p99_us")
            pr = paired(runs, by.get(base, []), m)
            mx = _vals(runs, "max_us")
            slow = sum(_vals(runs, "slow"))
            retr = _vals(runs, "retransmits")
            ops = sum(_vals(runs, "ops")) or None
            per = []
            tot: dict[str, int] = {}
            for r in runs:
                for k, c in (r.get("counters") or {}).items():
                    tot[k] = tot.get(k, 0) + c
            for k in COUNTERS:
                if ops and tot.get(k):
                    per.append(f"{k} {tot[k] / ops:.2f}")
            cpu = _vals(runs, "cpu_us_per_op")
            if cpu:
                per.append(f"cpu {stats.summary(cpu)['median']:.1f} us/op")
            cpugb = _vals(runs, "cpu_s_per_gb")
            if cpugb:
                per.append(f"cpu {stats.summary(cpugb)['median']:.3f} s/GB")
            out.append(
                f"| {name} | {s['median']:.4g} [{s['min']:.4g}-{s['max']:.4g}] | {_fmt_ratio(rb)} | {pr} | "
                f"{stats.summary(p50)['median']:.0f} | " if p50 else
                f"| {name} | {s['median']:.4g} [{s['min']:.4g}-{s['max']:.4g}] | {_fmt_ratio(rb)} | {pr} | - | ")
            if p99:
                out[-1] += (f"{stats.summary(p99)['median']:.0f} | {r99} | "
                            f"{max(mx):.0f} | {slow:.0f} | ")
            else:
                out[-1] += "- | - | - | - | "
            out[-1] += (f"{stats.summary(retr)['median']:.0f} | " if retr else "- | ") + ", ".join(per) + " |"
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.ab", description=__doc__.split("\n")[0])
    p.add_argument("--variant", action="append", default=[], help="NAME=ROOT[:VAR=VALUE...]")
    p.add_argument("--peer", default="", help="comma-separated: loopback, slirp4netns, pasta")
    p.add_argument("--tests", default="rr,crr,crr_rst")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--rr-seconds", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=4.0, help="iperf3 runs")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--out", default=None, help="write every run here (JSON)")
    p.add_argument("--as-root", action="store_true")
    p.add_argument("--base", default=None,
                   help="give ratios to this variant or peer (default: the first)")
    p.add_argument("--summarize", default=None, metavar="FILE.json",
                   help="run nothing: summarize the runs an earlier --out wrote (with --base)")
    p.add_argument("--agent", default=None, help=argparse.SUPPRESS)
    p.add_argument("--netbench", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.agent:
        return agent(args.agent, args.mtu, args.workers, args.netbench)
    if args.summarize:
        with open(args.summarize) as f:
            saved = json.load(f)
        names = list(next(iter(saved["results"].values())))
        if args.base and args.base not in names:
            p.error(f"--base: {args.base!r} is not one of {', '.join(names)}")
        print(summarize(saved["results"], _based(names, args.base)))
        return 0
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.ab", sys.argv[1:] if argv is None else argv)

    from . import measure
    tests = [t for t in args.tests.split(",") if t]
    for t in tests:
        if t not in TESTS:
            p.error(f"--tests: {t!r} is not one of {', '.join(TESTS)}")
    specs = [(v.split("=", 1)[0], v) for v in args.variant]
    specs += [(x, x) for x in args.peer.split(",") if x]
    if not specs:
        p.error("--variant or --peer: nothing to run")
    work = tempfile.mkdtemp(prefix="ringnet-ab-")
    netbench, why = measure.build_netbench(work)
    if netbench is None:
        print(why, file=sys.stderr)
        return 2
    agents = [Agent(n, s, args, netbench) for n, s in specs]
    names = [a.name for a in agents]
    if args.base and args.base not in names:
        p.error(f"--base: {args.base!r} is not one of {', '.join(names)}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {n: [] for n in names} for t in tests}
    t0 = time.monotonic()
    try:
        for rnd in range(args.rounds):
            order = agents if rnd % 2 == 0 else agents[::-1]
            for t in tests:
                for a in order:
                    secs = args.seconds if t.startswith("tcp") else args.rr_seconds
                    run = a.run(t, args.streams, secs)
                    run["round"] = rnd
                    results[t][a.name].append(run)
            print(f"round {rnd + 1}/{args.rounds} done, {time.monotonic() - t0:.0f} s, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for a in agents:
            a.close()
    text = (f"perf.ab: {', '.join(names)}; tests {', '.join(tests)}; {args.rounds} rounds; "
            f"streams {args.streams}; workers {args.workers}; mtu {args.mtu}; {rootless.whoami()}\n"
            + summarize(results, _based(names, args.base)))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results, "summary": text}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
