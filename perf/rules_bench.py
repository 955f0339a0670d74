"""Connection rate through ringnet with 10,000 egress rules against none (issue 14).

    python -m perf.rules_bench [--seconds 5] [--repeat 5] [--streams 4] [--workers 1]
                               [--rules 10000] [--out perf/results/tmp] [--as-root]

Rules are evaluated once per new flow (csrc/rules.c), so the cost that could show is on
connection setup: netbench "crr" (connect, one 1-byte request and answer, close) with
--streams concurrent clients inside the namespace against its C echo server on host
loopback, reached through the gateway (perf/measure.py). Each run starts a fresh network;
runs alternate between the two configurations so that drift of this shared machine hits
both alike:

- ``none``: no rules at all;
- ``rules``: --rules rules that the flows must walk past: /32 and /24 denies spread over
  10.0.0.0/8 (sharing the trie path of the gateway address 10.0.2.2), port-range denies
  on 10.0.2.0/24 for ports below 1024 (the server's is an ephemeral one), name rules, then as the very last
  rule ``allow tcp:10.0.2.2`` under ``default_deny``: every flow is decided by the last
  rule, the worst place for a first-match list.

Printed: connections/s per configuration (median [min-max] of the runs) and the ratio
rules ÷ none with a bootstrap 95% interval over the runs (perf/stats.py), the stack's
CPU µs per connection; written to OUT/rules.json. Started as root, it runs itself again
as the unprivileged test user (perf/rootless.py); --as-root keeps root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Optional

from . import measure, rootless, stats
from .backends import Env, Ringnet, _RingnetEnv


def rule_set(n: int) -> list[str]:
    """``n`` rules, the last of which allows the benchmark's flows (see the module doc)."""
    out: list[str] = []
    i = 0
    while len(out) < n - 1:
        kind = i % 4
        if kind == 0:
            out.append(f"deny 10.{(i >> 8) & 255}.{i & 255}.{(i >> 16) & 255 or 1}/32")
        elif kind == 1:
            out.append(f"deny 10.{(i >> 8) & 255}.{i & 255}.0/24")
        elif kind == 2:
            lo = 1 + (i * 7) % 1000   # privileged ports: the server's is an ephemeral one
            out.append(f"deny tcp:10.0.2.0/24:{lo}-{lo + 3}")
        else:
            out.append(f"deny n{i}.example.test")
        i += 1
    out = list(dict.fromkeys(r for r in out if not r.startswith("deny 10.0.2.")))
    while len(out) < n - 1:
        out.append(f"deny x{len(out)}.example.test")
    return out[: n - 1] + ["allow tcp:10.0.2.2"]


class _Env(_RingnetEnv):
    """A ringnet network with the given rules, for perf/measure.py's clients."""

    def __init__(self, workers: int, rules: list[str], default_deny: bool) -> None:
        import ringnet

        Env.__init__(self, Ringnet(workers), 65520)
        self.net = ringnet.Network(workers=workers, allow_host_loopback=True, rules=rules,
                                   default_deny=default_deny).start()


def one_run(netbench: str, config: str, workers: int, nrules: int, streams: int,
            seconds: float) -> dict[str, Any]:
    """One netbench crr run in a fresh network of ``config`` ("none" or "rules")."""
    rules = rule_set(nrules) if config == "rules" else []
    env = _Env(workers, rules, default_deny=config == "rules")
    with env:
        started = time.monotonic()
        run = measure.netbench_run(env, netbench, "crr", streams, seconds)
        run["config"] = config
        run["rules"] = len(env.net.rules)
        if config == "rules":
            run["last_rule_hits"] = env.net.rules.list()[-1]["hits"]
        run["wall_s"] = time.monotonic() - started
    if run.get("ok") and run.get("ops"):
        run["conns_per_s"] = run["ops"] / float(run.get("seconds") or seconds)
    return run


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.rules_bench",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "tmp"))
    ap.add_argument("--as-root", action="store_true", help="measure as root (not rootless)")
    a = ap.parse_args(argv)
    if rootless.should_drop(a.as_root):
        return rootless.rerun("perf.rules_bench", list(argv if argv is not None else sys.argv[1:]),
                              a.out)
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "rules": []}
    with tempfile.TemporaryDirectory(prefix="ringnet-rulesbench-") as tmp:
        netbench, why = measure.build_netbench(tmp)
        if netbench is None:
            print(f"perf.rules_bench: {why}", file=sys.stderr)
            return 2
        for _ in range(a.repeat):
            for config in ("none", "rules"):
                runs[config].append(one_run(netbench, config, a.workers, a.rules, a.streams,
                                            a.seconds))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "rules.json"), "w") as f:
        json.dump({"seconds": a.seconds, "repeat": a.repeat, "streams": a.streams,
                   "workers": a.workers, "rules": a.rules, "user": rootless.whoami(),
                   "loadavg": os.getloadavg(), "runs": runs}, f, indent=1)
    print(table(runs, a))
    return 0 if all(r.get("ok") for rs in runs.values() for r in rs) else 1


def table(runs: dict[str, list[dict[str, Any]]], a: argparse.Namespace) -> str:
    """Markdown: connections/s per configuration, then the ratio with its interval."""
    rows = [f"crr, {a.streams} streams, {a.workers} worker(s), {a.seconds:g} s x {a.repeat} runs "
            f"each, alternating", "",
            "| config | connections/s median [min-max] | stack CPU µs/conn | failed runs |",
            "|---|---|---|---|"]
    for config, rs in runs.items():
        ok = [r for r in rs if r.get("ok") and r.get("conns_per_s")]
        if not ok:
            err = next((r.get("error") for r in rs if r.get("error")), "no run succeeded")
            rows.append(f"| {config} | failed: {err} | | {len(rs)} |")
            continue
        s = stats.summary(r["conns_per_s"] for r in ok)
        cpu = [r["cpu_us_per_op"] for r in ok if r.get("cpu_us_per_op") is not None]
        cpu_text = f"{stats.summary(cpu)['median']:.1f}" if cpu else "-"
        label = f"{config} ({ok[0]['rules']} rules)" if config == "rules" else config
        rows.append(f"| {label} | {s['median']:,.0f} [{s['min']:,.0f}-{s['max']:,.0f}] | "
                    f"{cpu_text} | {len(rs) - len(ok)} |")
    a_vals = [r["conns_per_s"] for r in runs["rules"] if r.get("ok") and r.get("conns_per_s")]
    b_vals = [r["conns_per_s"] for r in runs["none"] if r.get("ok") and r.get("conns_per_s")]
    rat = stats.ratio(a_vals, b_vals, stats.RUNS)
    rows += ["", f"rules ÷ none: {rat.text()}" + ("" if rat.has_interval else f" ({rat.why})")]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
