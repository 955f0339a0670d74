"""Connection rate with an on_connect hook against the rate without one (issue 14 §2).

    python -m perf.hook_bench [--seconds 2] [--repeat 9] [--streams 4] [--workers 1]
                              [--as-root] [--out perf/results/tmp]

netbench's "crr" test (perf/netbench.c: connect, a 1-byte request and its answer, close
with a FIN) runs inside a ringnet namespace with --streams concurrent clients against a C
echo server on host loopback, reached through the gateway, for --seconds. Three
configurations, each in a network of its own, alternate --repeat times (so that the
machine's load drifts over all of them alike):

- ``none``: no hook;
- ``hook``: a trivial hook (returns ringnet.ALLOW), no cache: every connection is held
  until the orchestrator's verdict;
- ``hook_cached``: the same hook with on_connect_cache=60: the first connection to the
  server asks, the others are decided in the worker.

--seconds stays short: 5 s runs stopped near 14,200 connections (ports held in TIME_WAIT)
and stalled, which capped the faster configurations (perf/README.md).

Printed: connections/s per configuration (median [min-max] of the runs) and each hook
configuration's rate ÷ the rate without one, with a bootstrap 95% interval over the runs
(perf/stats.py; issue 14's target is 0.7x or more). Written to OUT/hook.json. Started as
root it reruns itself as the unprivileged test user (perf/rootless.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

from . import rootless, stats
from .backends import BackendError, Env, Ringnet, _RingnetEnv
from .measure import build_netbench, netbench_run, workdir

CONFIGS = ("none", "hook", "hook_cached")


def _allow(flow: Any) -> Any:
    import ringnet
    return ringnet.ALLOW


def start(config: str, workers: int) -> Env:
    """A ringnet Env (MTU 65520, host loopback reachable) with ``config``'s hook."""
    import ringnet

    env = _RingnetEnv.__new__(_RingnetEnv)
    Env.__init__(env, Ringnet(workers), 65520)
    kw: dict[str, Any] = {}
    if config != "none":
        kw = {"on_connect": _allow, "on_connect_cache": 60.0 if config == "hook_cached" else 0.0}
    try:
        env.net = ringnet.Network(mtu=65520, workers=workers, allow_host_loopback=True, **kw).start()
    except ringnet.RingnetError as e:
        raise BackendError(f"ringnet.Network did not start: {e}") from e
    return env


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.hook_bench",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--as-root", action="store_true", help="measure as root (not rootless)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "tmp"))
    a = ap.parse_args(argv)
    if rootless.should_drop(a.as_root):
        return rootless.rerun("perf.hook_bench", list(argv if argv is not None else sys.argv[1:]),
                              out=a.out)
    netbench, why = build_netbench(workdir())
    if netbench is None:
        print(f"netbench could not be built: {why}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    for _ in range(a.repeat):
        for config in CONFIGS:
            with start(config, a.workers) as env:
                runs[config].append(netbench_run(env, netbench, "crr", a.streams, a.seconds))
            time.sleep(0.5)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "hook.json")
    with open(path, "w") as f:
        json.dump({"seconds": a.seconds, "repeat": a.repeat, "streams": a.streams,
                   "workers": a.workers, "user": rootless.whoami(), "loadavg": os.getloadavg(),
                   "runs": runs}, f, indent=1)
    print(table(runs))
    print(f"\n(runs as {rootless.whoami()}; written to {rootless.shown_path(path)})")
    return 0


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: connections/s per configuration, then each hook configuration ÷ none."""
    rows = ["| configuration | connections/s median [min-max] | failed runs |", "|---|---|---|"]
    ok = {c: [r["ops_per_s"] for r in rs if r.get("ok")] for c, rs in runs.items()}
    for c, rs in runs.items():
        bad = sum(1 for r in rs if not r.get("ok"))
        if ok[c]:
            s = stats.summary(ok[c])
            rows.append(f"| {c} | {s['median']:,.0f} [{s['min']:,.0f}-{s['max']:,.0f}] | {bad} |")
        else:
            err = next((r.get("error") for r in rs if r.get("error")), "")
            rows.append(f"| {c} | — ({err}) | {bad} |")
    rows += ["", "| ratio to none | connections/s [95% interval over runs] | target |", "|---|---|---|"]
    for c in CONFIGS[1:]:
        rows.append(f"| {c} | {stats.ratio(ok[c], ok['none']).text()} | >= 0.70x |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
