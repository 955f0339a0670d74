"""Issue 3's TCP benchmark: the sweep's TCP points, then its targets checked against peers.

    python -m perf.tcp_bench [--repeat 3] [--seconds 10] [--out DIR]
    python -m perf.tcp_bench --from DIR/sweep.json     # only evaluate an existing run

The measuring is perf/sweep.py's (iperf3 both directions, 1 and 4 streams, MTU 65520
and 1500, for ringnet with 1 and 2 workers, slirp4netns, pasta and host loopback, with
retransmits, per-second figures and the stack's CPU); this adds the preset and the
table of issue 3's targets, as ratios within the same run:

- ns->host, MTU 65520, 1 stream: >= 2.0x slirp4netns and >= 60% of host loopback;
- host->ns, MTU 65520, 1 stream: >= 1.2x pasta and >= 3x slirp4netns;
- ns->host, MTU 1500, 1 stream: >= 4x slirp4netns;
- no stalls (every ringnet TCP point): per-second minimum >= 70% of the median, and at
  most 10 retransmits per 10 s;
- efficiency, ns->host MTU 65520 1 stream: Gbit per CPU-second of the stack's own
  processes >= 2x slirp4netns's;
- 4 streams with 2 workers >= 1.3x the single-stream figure (MTU 65520, each direction).

A target whose figures are missing (a peer not installed, a failed point) is "n/a" with
the reason; nothing is loosened or skipped silently. Each ratio is printed with its
bootstrap 95% interval (perf/stats.py: over the runs with --repeat 3 or more, else over
their seconds, else n/a); a target met or missed while its interval straddles the
wanted ratio says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

from . import stats, sweep

_HERE = os.path.dirname(os.path.abspath(__file__))
N2H, H2N = "ns->host", "host->ns"


def _points(doc: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {(p["backend"], p["mtu"], p["direction"], p["streams"]): p
            for p in doc["points"] if p["test"] == "tcp"}


def _med(p: Optional[dict[str, Any]], metric: str) -> Optional[float]:
    if not p or p.get("status") not in ("ok", "partial"):
        return None
    s = p["summary"].get(metric)
    return None if s is None else s["median"]


def _best_ringnet(pts, mtu: int, direction: str, streams: int, workers: Optional[int] = None):
    """The ringnet point with the highest median throughput (or with `workers` workers)."""
    cands = [p for (b, m, d, s), p in pts.items() if p["kind"] == "ringnet" and m == mtu
             and d == direction and s == streams and (workers is None or p["workers"] == workers)]
    cands = [p for p in cands if _med(p, "gbps") is not None]
    return max(cands, key=lambda p: _med(p, "gbps"), default=None)


def _ratio_row(name: str, mine_p: Optional[dict[str, Any]], theirs_p: Optional[dict[str, Any]],
               metric: str, want: float, what: str, invert: bool = False) -> dict[str, Any]:
    """A target row: mine ÷ theirs of ``metric`` (theirs ÷ mine with ``invert``, for a cost
    whose inverse is the figure: CPU s/GB against Gbit per CPU-second) against ``want``."""
    mine, theirs = _med(mine_p, metric), _med(theirs_p, metric)
    row = {"target": name, "want": f">= {want:g}x {what}"}
    if mine is None or not theirs or (invert and not mine):
        return {**row, "got": "n/a", "ok": None, "why": "figures missing"}
    assert mine_p is not None and theirs_p is not None
    if invert:
        r = stats.run_ratio(theirs_p["runs"], mine_p["runs"], metric, value=theirs / mine)
    else:
        r = stats.run_ratio(mine_p["runs"], theirs_p["runs"], metric, value=mine / theirs)
    assert r.value is not None
    why = ""
    if r.has_interval and r.lo is not None and r.hi is not None and r.lo < want < r.hi:
        why = "(the interval straddles the target)"
    elif not r.has_interval:
        why = f"(no interval: {r.why})"
    return {**row, "got": f"{r.text(basis=True)} ({mine:.2f} vs {theirs:.2f})", "ok": r.value >= want,
            "why": why, "ratio": r.value, **r.as_json()}


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what is wanted, what this run got, met or not."""
    pts = _points(doc)
    peer = lambda b, mtu, d, s=1: pts.get((b, mtu, d, s))  # noqa: E731
    rows = []

    p = _best_ringnet(pts, 65520, N2H, 1)
    rows.append(_ratio_row("ns->host 65520 1 stream", p, peer("slirp4netns", 65520, N2H), "gbps",
                           2.0, "slirp4netns"))
    rows.append(_ratio_row("ns->host 65520 1 stream", p, peer("loopback", 65520, N2H), "gbps",
                           0.6, "host loopback"))
    # Gbit per CPU-second is 8 / (CPU s per GB): the ratio is slirp's s/GB over ours
    rows.append(_ratio_row("efficiency ns->host 65520", p, peer("slirp4netns", 65520, N2H),
                           "cpu_s_per_gb", 2.0, "slirp4netns Gbit per CPU-second", invert=True))

    p = _best_ringnet(pts, 65520, H2N, 1)
    rows.append(_ratio_row("host->ns 65520 1 stream", p, peer("pasta", 65520, H2N), "gbps",
                           1.2, "pasta"))
    rows.append(_ratio_row("host->ns 65520 1 stream", p, peer("slirp4netns", 65520, H2N), "gbps",
                           3.0, "slirp4netns"))

    p = _best_ringnet(pts, 1500, N2H, 1)
    rows.append(_ratio_row("ns->host 1500 1 stream", p, peer("slirp4netns", 1500, N2H), "gbps",
                           4.0, "slirp4netns"))

    for d in (N2H, H2N):
        four = _best_ringnet(pts, 65520, d, 4, workers=2)
        one = _best_ringnet(pts, 65520, d, 1)
        rows.append(_ratio_row(f"{d} 65520 4 streams, 2 workers", four, one, "gbps", 1.3,
                               "the single stream"))

    seconds = doc.get("config", {}).get("seconds") or 10
    for (b, mtu, d, s), p in sorted(pts.items()):
        if p["kind"] != "ringnet" or p.get("status") not in ("ok", "partial"):
            continue
        ps = p["summary"].get("per_second_gbps")
        rt = p["summary"].get("retransmits")
        name = f"no stalls {b} {mtu} {d} P{s}"
        if not ps or not ps["median"]:
            rows.append({"target": name, "want": "", "got": "n/a", "ok": None,
                         "why": "no per-second figures"})
            continue
        low = ps["min"] / ps["median"]
        retr = (rt["max"] if rt else 0) * 10 / seconds
        rows.append({"target": name, "want": "min >= 0.7 median, <= 10 retr/10 s",
                     "got": f"min/median {low:.2f}, {retr:.0f} retr/10 s "
                            f"(per second {ps['min']:.2f} / {ps['median']:.2f} / {ps['max']:.2f})",
                     "ok": low >= 0.7 and retr <= 10, "why": ""})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | wanted | got | met |", "|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[r["ok"]]
        lines.append(f"| {r['target']} | {r['want']} | {r['got']} {r['why']} | {met} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.tcp_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--out", default=os.path.join(_HERE, "results", "tmp", "tcp"))
    ap.add_argument("--from", dest="src", help="evaluate this sweep.json instead of running")
    ap.add_argument("--as-root", action="store_true",
                    help="started as root, stay root (default: the sweep runs as the test user)")
    args = ap.parse_args(argv)
    src = args.src
    if not src:
        rc = sweep.main(["--tests", "tcp", "--mtus", "1500,65520", "--streams", "1,4",
                         "--directions", f"{N2H},{H2N}", "--max-workers", "2",
                         "--backends", "loopback,slirp4netns,pasta,ringnet",
                         "--repeat", str(args.repeat), "--seconds", str(args.seconds),
                         "--no-ring", "--out", args.out, *(["--as-root"] if args.as_root else [])])
        if rc:
            return rc
        src = os.path.join(args.out, "sweep.json")
    with open(src) as f:
        doc = json.load(f)
    rows = evaluate(doc)
    text = table(rows)
    print("\nIssue 3 targets (ratios within this run, [bootstrap 95% interval]):\n" + text)
    if not args.src:
        with open(os.path.join(args.out, "tcp_targets.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
