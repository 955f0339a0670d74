"""Issue 14's capture cost: TCP throughput at MTU 65520 with a packet capture running, and without.

    python -m perf.capture_bench [--repeat 5] [--seconds 4] [--workers 1] [--snaplens 128,65575]
                                 [--directions ns->host,host->ns] [--file /dev/null]
                                 [--as-root] [--out DIR]
    python -m perf.capture_bench --from DIR/capture.json     # only the table of an earlier run

For each direction, ``--repeat`` rounds of iperf3 TCP (1 stream, perf/measure.py's run:
client inside a fresh ``ringnet.Network(mtu=65520, allow_host_loopback=True)``,
server on host loopback), one run per mode in each round: capture off, then a
capture (``Network.capture(FILE, snaplen)``) of each snap length, the order
rotating from round to round so that a drift of the machine does not favour one
mode. Each mode prints its median Gbit/s and its ratio to capture-off with a
bootstrap 95% interval (perf/stats.py: over the rounds with ``--repeat 3`` or more,
else over the seconds), the stack's CPU seconds per GB (namespace child and workers:
where the capture's copy happens) and its ratio to capture-off with its interval over
the rounds, and what the capture kept and dropped (a capture ring full while the
writer falls behind drops frames; the traffic never waits for it). On a busy machine
the CPU per GB is the steadier figure: throughput follows whatever else runs.

The capture goes to ``/dev/null`` by default, so that the figure is the data
path's cost (the copy into the capture ring) and the writer's, not the disk's;
``--file PATH`` writes a real file (it can grow by a GB a second). The writer thread
runs in this process: its CPU time is reported as ``writer_cpu_s`` (this process's
CPU during the run, mostly the writer's). Started as root, it runs as the
unprivileged test user (perf/rootless.py; ``--as-root`` keeps root). Needs iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Optional

from . import backends, measure, rootless, stats

N2H, H2N = "ns->host", "host->ns"
MTU = 65520


def _mode_name(snaplen: Optional[int]) -> str:
    return "off" if snaplen is None else f"snaplen {snaplen}"


def one_run(direction: str, snaplen: Optional[int], args: argparse.Namespace) -> dict[str, Any]:
    """One iperf3 run in a fresh network, with a capture of ``snaplen`` (None: no capture)."""
    env = backends.Ringnet(args.workers).start(MTU)
    try:
        cap = env.net.capture(args.file, snaplen=snaplen) if snaplen is not None else None  # type: ignore[attr-defined]
        t0 = os.times()
        run = measure.iperf3_run(env, "tcp", direction, 1, args.seconds)
        if cap is not None:
            cap.close()
            t1 = os.times()
            run["writer_cpu_s"] = round((t1.user - t0.user) + (t1.system - t0.system), 3)
            run["capture_frames"] = cap.frames
            run["capture_dropped"] = cap.dropped
    finally:
        env.close()
    run["mode"] = _mode_name(snaplen)
    return run


def case(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    modes: list[Optional[int]] = [None, *args.snaplens]
    runs: dict[str, list[dict[str, Any]]] = {_mode_name(m): [] for m in modes}
    for r in range(args.repeat):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for m in order:
            run = one_run(direction, m, args)
            runs[run["mode"]].append(run)
            extra = (f", captured {run['capture_frames']}, dropped {run['capture_dropped']}, "
                     f"writer {run['writer_cpu_s']} s CPU") if m is not None and run.get("ok") else ""
            print(f"  {direction} round {r + 1} {run['mode']:<16} "
                  + (f"{run['gbps']:.2f} Gbit/s, stack {run.get('stack_cpu_s')} s CPU{extra}"
                     if run.get("ok") else f"failed: {run.get('error')}"), flush=True)
    return {"direction": direction, "rows": rows_of(runs), "runs": runs}


def rows_of(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each mode's figures and its ratios to capture-off, with intervals."""
    base = runs["off"]
    rows = []
    for name, rs in runs.items():
        ok = [x for x in rs if x.get("ok")]
        med = float(stats.summary([x["gbps"] for x in ok])["median"]) if ok else None
        rat = stats.run_ratio(rs, base, "gbps") if name != "off" else None
        crat = stats.run_ratio(rs, base, "cpu_s_per_gb") if name != "off" else None
        cpu = [x["cpu_s_per_gb"] for x in ok if x.get("cpu_s_per_gb") is not None]
        frames = sum(x.get("capture_frames", 0) for x in ok)
        dropped = sum(x.get("capture_dropped", 0) for x in ok)
        rows.append({"mode": name, "runs": len(ok), "median_gbps": med,
                     "ratio_to_off": None if rat is None else {"value": rat.value, **rat.as_json(),
                                                               "text": rat.text(basis=True)},
                     "stack_cpu_s_per_gb": float(stats.summary(cpu)["median"]) if cpu else None,
                     "cpu_ratio_to_off": None if crat is None else {"value": crat.value, **crat.as_json(),
                                                                    "text": crat.text(basis=True)},
                     "captured": frames, "dropped": dropped,
                     "dropped_percent": 100.0 * dropped / (frames + dropped) if frames + dropped else None})
    return rows


def print_table(cases: list[dict[str, Any]]) -> None:
    print("\n| direction | capture | runs | median Gbit/s | ÷ capture off [95% CI] | stack CPU s/GB "
          "| ÷ capture off [95% CI] | frames captured | dropped |\n|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        for row in c["rows"]:
            off = row["mode"] == "off"
            med = f"{row['median_gbps']:.2f}" if row["median_gbps"] is not None else "—"
            rat = row["ratio_to_off"]["text"] if row["ratio_to_off"] else "1"
            cpu = f"{row['stack_cpu_s_per_gb']:.3f}" if row["stack_cpu_s_per_gb"] is not None else "—"
            crat = row["cpu_ratio_to_off"]["text"] if row.get("cpu_ratio_to_off") else "1"
            drop = (f"{row['dropped']} ({row['dropped_percent']:.1f}%)" if row["dropped_percent"] is not None
                    else "—")
            print(f"| {c['direction']} | {row['mode']} | {row['runs']} | {med} | {rat} | {cpu} | {crat} "
                  f"| {'—' if off else row['captured']} | {'—' if off else drop} |")
    print("\n[lo, hi]: bootstrap 95% interval of median(capture) ÷ median(off) over the rounds "
          "(perf/stats.py; per-second when fewer than 3 rounds)")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.capture_bench", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="rounds (one run per mode each; default 5)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per iperf3 run (default 4)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--snaplens", default="128,65575", help="snap lengths to measure (default 128,65575)")
    ap.add_argument("--directions", default=f"{N2H},{H2N}")
    ap.add_argument("--file", default="/dev/null", help="where captures go (default /dev/null)")
    ap.add_argument("--out", help="also write capture.json into this directory")
    ap.add_argument("--as-root", action="store_true", help="started as root, stay root")
    ap.add_argument("--from", dest="from_", metavar="FILE", help="print the table of an earlier "
                    "run's capture.json (its figures recomputed) and measure nothing")
    args = ap.parse_args(argv)
    if args.from_:
        with open(args.from_) as f:
            doc = json.load(f)
        print_table([{"direction": c["direction"], "rows": rows_of(c["runs"])} for c in doc["cases"]])
        return 0
    try:
        args.snaplens = [int(x) for x in args.snaplens.split(",") if x]
    except ValueError:
        ap.error("--snaplens takes comma-separated integers")
    args.directions = [x for x in args.directions.split(",") if x]
    if set(args.directions) - {N2H, H2N} or args.repeat < 1 or args.seconds <= 0 or not args.snaplens:
        ap.error("directions are ns->host and host->ns; --repeat, --seconds > 0; one snap length at least")
    if shutil.which("iperf3") is None:
        print("iperf3 is not installed (scripts/install-peers.sh installs it)", file=sys.stderr)
        return 2
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.capture_bench", list(argv if argv is not None else sys.argv[1:]),
                              out=args.out)
    print(f"perf.capture_bench: running as {rootless.whoami()}, load {os.getloadavg()[0]:.2f}, "
          f"MTU {MTU}, {args.workers} worker(s), captures to {args.file}", flush=True)
    t0 = time.time()
    cases = [case(d, args) for d in args.directions]
    print_table(cases)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "capture.json"), "w") as f:
            json.dump({"command": rootless.command("perf.capture_bench", argv), "user": rootless.whoami(),
                       "loadavg": os.getloadavg(), "started": t0, "seconds": args.seconds,
                       "workers": args.workers, "mtu": MTU, "file": args.file, "cases": cases}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
