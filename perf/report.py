"""The sweep's outputs: ratios, JSON, CSV, Markdown and PNG plots (schema in perf/README.md).

Every ratio (ringnet ÷ a peer) carries a bootstrap 95% interval from perf/stats.py,
printed beside it as ``1.69x [1.55, 1.83]``: over the runs of the two points when each
has at least three, else over their seconds (marked ``†``), else ``[n/a]``.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Optional

from . import stats

PEERS = ("slirp4netns", "pasta", "loopback")
# metrics summarised (min/median/max over a point's successful runs) per test
METRICS = {
    "tcp": ("gbps", "retransmits", "per_second_gbps", "cpu_s_per_gb"),
    "udp": ("gbps", "sent_gbps", "loss_percent", "jitter_ms", "per_second_gbps", "cpu_s_per_gb"),
    "rr": ("ops_per_s", "p50_us", "p99_us", "cpu_us_per_op"),
    "crr": ("ops_per_s", "p50_us", "p99_us", "errors", "cpu_us_per_op"),
}
# metric -> (label, unit, which way is better)
LABELS = {
    "gbps": ("throughput", "Gbit/s", "higher"),
    "sent_gbps": ("offered", "Gbit/s", "higher"),
    "retransmits": ("retransmits", "", "lower"),
    "per_second_gbps": ("per-second throughput", "Gbit/s", "higher"),
    "cpu_s_per_gb": ("stack CPU", "s/GB", "lower"),
    "loss_percent": ("loss", "%", "lower"),
    "jitter_ms": ("jitter", "ms", "lower"),
    "ops_per_s": ("rate", "/s", "higher"),
    "p50_us": ("p50 latency", "us", "lower"),
    "p99_us": ("p99 latency", "us", "lower"),
    "errors": ("errors", "", "lower"),
    "cpu_us_per_op": ("stack CPU", "us/op", "lower"),
}
# the ratios printed and stored for every ringnet point
HEADLINE = {
    "tcp": ("gbps", "cpu_s_per_gb"),
    "udp": ("gbps", "loss_percent", "cpu_s_per_gb"),
    "rr": ("ops_per_s", "p50_us", "p99_us"),
    "crr": ("ops_per_s",),
}
PER_SECOND_MARK = "†"
CI_LEGEND = ("[lo, hi]: bootstrap 95% interval of the ratio (perf/stats.py, fixed seed) over "
             "the runs of the two points; " + PER_SECOND_MARK + ": over the seconds of their runs "
             "(one run per point: seconds are not independent, so this interval is narrower than "
             "runs would give); [n/a]: fewer than " + str(stats.MIN_SAMPLES) + " samples a side")
TITLES = {"tcp": "TCP (iperf3)", "udp": "UDP (iperf3)", "rr": "1-byte TCP ping-pong",
          "crr": "TCP connection rate (connect, 1 request, close)"}


def _key(p: dict[str, Any]) -> tuple:
    return (p["test"], p["mtu"], p["direction"], p["streams"])


def _median(p: Optional[dict[str, Any]], metric: str) -> Optional[float]:
    if p is None:
        return None
    s = p["summary"].get(metric)
    return None if s is None else s["median"]


def _usable(p: dict[str, Any]) -> list[dict[str, Any]]:
    """The point's runs for an interval. Runs recorded before ``per_second_from`` took UDP
    ns->host per-second figures from the sender (the offered rate, not what arrived):
    those series are left out."""
    if p["test"] != "udp" or p["direction"] != "ns->host":
        return p["runs"]
    return [r if r.get("per_second_from") == "receiver" else
            {k: v for k, v in r.items() if k != "per_second_gbps"} for r in p["runs"]]


def ratios(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every ringnet point and headline metric: its median and its ratio (ringnet / peer)
    to the same point of each peer in this run; None where either side has no figure."""
    by = {(p["backend"], *_key(p)): p for p in points}
    out = []
    for p in points:
        if p["kind"] != "ringnet":
            continue
        for m in HEADLINE[p["test"]]:
            mine = _median(p, m)
            vs = {}
            for peer in PEERS:
                q = by.get((peer, *_key(p)))
                theirs = _median(q, m)
                value = mine / theirs if mine is not None and theirs else None
                vs[peer] = {"value": theirs, "ratio": value, "status": q["status"] if q else "absent"}
                if value is not None and q is not None:
                    r = stats.run_ratio(_usable(p), _usable(q), m, value=value)
                    vs[peer].update(r.as_json(), ci_why=r.why or None)
                else:
                    vs[peer].update(ci=None, ci_basis=None, ci_n=None, ci_why="no figure on one side")
            out.append({"backend": p["backend"], "test": p["test"], "mtu": p["mtu"],
                        "direction": p["direction"], "streams": p["streams"], "metric": m,
                        "better": LABELS[m][2], "value": mine, "status": p["status"],
                        "reason": p["reason"], "vs": vs})
    return out


# Files --------------------------------------------------------------------------------------

def write_all(doc: dict[str, Any], out: str, plots: bool = True) -> list[str]:
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, n) for n in ("sweep.json", "sweep.csv", "sweep.md")]
    with open(paths[0], "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    write_csv(doc, paths[1])
    notes = []
    if plots:
        try:
            paths += write_plots(doc, out)
        except ImportError as e:
            notes.append(f"No plots: matplotlib is not installed ({e}); `pip install .[perf]`.")
    with open(paths[2], "w") as f:
        f.write(markdown(doc, [os.path.basename(p) for p in paths if p.endswith(".png")], notes))
    return paths


def write_csv(doc: dict[str, Any], path: str) -> None:
    """One row per point and metric (points without figures: one row, metric empty)."""
    cols = ["backend", "kind", "workers", "test", "mtu", "direction", "streams", "status",
            "metric", "min", "median", "max", "n", "reason"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in doc["points"]:
            base = [p["backend"], p["kind"], p["workers"] or "", p["test"], p["mtu"], p["direction"],
                    p["streams"], p["status"]]
            if not p["summary"]:
                w.writerow(base + ["", "", "", "", 0, p["reason"] or ""])
            for m, s in p["summary"].items():
                w.writerow(base + [m, _g(s["min"]), _g(s["median"]), _g(s["max"]), s["n"],
                                   p["reason"] or ""])


def _g(v: float) -> str:
    return f"{v:.6g}"


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "—"
    if float(v).is_integer() and abs(v) < 1e6:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


class _Notes:
    """Numbered footnotes for failure and skip reasons."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def _cell(p: Optional[dict[str, Any]], m: str, notes: _Notes, spread: bool = True) -> str:
    if p is None:
        return "—"
    s = p["summary"].get(m)
    if s is None:
        return f"{p['status']} {notes.ref(p['reason'] or p['status'])}" if p["status"] != "ok" else "—"
    text = _fmt(s["median"])
    if spread and s["n"] > 1:
        text += f" [{_fmt(s['min'])}–{_fmt(s['max'])}]"
    if p["status"] == "partial":
        text += f" partial {notes.ref(p['reason'] or 'partial')}"
    return text


def markdown(doc: dict[str, Any], pngs: list[str], extra_notes: list[str]) -> str:
    env, cfg = doc["environment"], doc["config"]
    points = doc["points"]
    names = [b["name"] for b in doc["backends"]]
    ringnets = [b["name"] for b in doc["backends"] if b["kind"] == "ringnet"]
    by = {(p["backend"], *_key(p)): p for p in points}
    rat = {(r["backend"], r["test"], r["mtu"], r["direction"], r["streams"], r["metric"]): r
           for r in doc["ratios"]}
    rows = sorted({_key(p) for p in points}, key=lambda k: (k[1], k[2] != "ns->host", k[3]))
    notes = _Notes()
    v = env["versions"]
    out = [
        "# ringnet perf sweep",
        "",
        f"{doc['started'][:19]} UTC, {doc['duration_s']} s{' (interrupted)' if doc['interrupted'] else ''}. "
        f"Linux {env['kernel']}, {env['cpus_usable']} CPUs ({env['cpu_model']}), "
        f"commit {env['git_commit']}, euid {env['euid']}, load {env['loadavg_start'][0]:.2f} at start, "
        f"{env.get('loadavg_end', [0])[0]:.2f} at end.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"Each point: {cfg['repeat']} run(s), median [min–max]; iperf3 runs {cfg['seconds']:g} s, "
        f"ping-pong and connection runs {cfg['rr_seconds']:g} s; UDP offered {cfg['udp_rate']}bit/s "
        f"in total, {cfg['udp_size']} B datagrams. Servers on host loopback; clients inside the "
        "namespace (host->ns: iperf3 -R). Host loopback keeps its own MTU (65536): its rows are the "
        "ceiling measured beside each MTU, not at it. Ratios are ringnet ÷ peer from this run: "
        "above 1 is better for throughput and rates, below 1 for CPU, loss and latency.",
        "",
        "Command: `" + " ".join(doc["command"]) + "`",
        "",
    ]
    skipped = [b for b in doc["backends"] if b["status"] == "skipped"]
    for b in skipped:
        out.append(f"- **{b['name']} skipped**: {b['reason']}")
    if skipped:
        out.append("")
    for png in pngs:
        out += [f"![{png}]({png})", ""]

    # ratios first: the headline
    if ringnets:
        out += summary_table(doc, ringnets)
        out += ["## ringnet ÷ peers", "", CI_LEGEND + ".", ""]
        for test, metrics in HEADLINE.items():
            for m in metrics:
                trs = [k for k in rows if k[0] == test]
                if not trs:
                    continue
                label, unit, better = LABELS[m]
                out += [f"### {TITLES[test]}: {label}{f' ({unit})' if unit else ''}, {better} is better",
                        "",
                        "| MTU | direction | streams | " +
                        " | ".join(f"{r} | ÷ slirp4netns | ÷ pasta | ÷ loopback" for r in ringnets) + " |",
                        "|---|---|---|" + "---|---|---|---|" * len(ringnets)]
                for k in trs:
                    cells = []
                    for rr in ringnets:
                        p = by.get((rr, *k))
                        cells.append(_cell(p, m, notes, spread=False))
                        r = rat.get((rr, *k, m))
                        for peer in PEERS:
                            cells.append(ratio_text(r["vs"][peer]) if r else "—")
                    out.append(f"| {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells) + " |")
                out.append("")

    out += ["## Figures", ""]
    for test in ("tcp", "udp", "rr", "crr"):
        trs = [k for k in rows if k[0] == test]
        if not trs:
            continue
        shown = [m for m in ("gbps", "retransmits", "per_second_gbps", "loss_percent", "ops_per_s",
                             "p50_us", "p99_us", "cpu_s_per_gb", "cpu_us_per_op", "errors")
                 if m in METRICS[test]]
        for m in shown:
            label, unit, better = LABELS[m]
            extra = " (min / median / max over every second of every run)" if m == "per_second_gbps" else ""
            out += [f"### {TITLES[test]}: {label}{f' ({unit})' if unit else ''}{extra}", "",
                    "| MTU | direction | streams | " + " | ".join(names) + " |",
                    "|---|---|---|" + "---|" * len(names)]
            for k in trs:
                out.append(f"| {k[1]} | {k[2]} | {k[3]} | " +
                           " | ".join(_cell(by.get((n, *k)), m, notes) for n in names) + " |")
            out.append("")

    ring = doc.get("ring") or {}
    out += ["## Rings (perf/ring_bench.py)", ""]
    if ring.get("status") == "ok":
        out += ["One ring between two processes (C producer and consumer, one CPU each), beside "
                "memcpy of the same bytes on one CPU; best of "
                f"{ring.get('repeat')} runs.", "",
                "| frame (B) | frames/s | ring GB/s | memcpy GB/s | ratio | aim |", "|---|---|---|---|---|---|"]
        for r in ring["rows"]:
            out.append(f"| {r['frame']} | {r['frames_per_s']:,.0f} | {r['ring_gbs']:.2f} | "
                       f"{r['memcpy_gbs']:.2f} | {r['ratio']:.2f} | {r.get('aim') or ''} |")
    else:
        out.append(f"{ring.get('status', 'absent')}: {ring.get('reason')}")
    out.append("")
    if notes.items or extra_notes:
        out += ["## Notes", ""]
        out += [f"{i + 1}. {t}" for i, t in enumerate(notes.items)]
        out += [f"- {t}" for t in extra_notes]
        out.append("")
    return "\n".join(out)


def ratio_text(x: dict[str, Any]) -> str:
    """One stored ratio (an entry of a ratio's ``vs``) as ``1.69x [1.55, 1.83]``, with
    PER_SECOND_MARK when its interval is over seconds, ``[n/a]`` without one, ``—`` without a
    ratio."""
    if x.get("ratio") is None:
        return "—"
    ci = x.get("ci")
    if not ci:
        return f"{x['ratio']:.2f}x [n/a]"
    mark = PER_SECOND_MARK if x.get("ci_basis") == stats.PER_SECOND else ""
    return f"{x['ratio']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]{mark}"


def summary_table(doc: dict[str, Any], ringnets: list[str]) -> list[str]:
    """Markdown lines: per ringnet backend, test, metric and direction, the geometric mean of
    its ratios to each peer over every MTU and stream count, with a bootstrap 95% interval
    (stats.geomean_ratio(): the points' samples resampled together) and the lowest and
    highest ratio."""
    by = {(p["backend"], *_key(p)): p for p in doc["points"]}
    groups: dict[tuple, dict[str, list[tuple]]] = {}
    for r in doc["ratios"]:
        g = groups.setdefault((r["backend"], r["test"], r["metric"], r["direction"]), {})
        mine = by.get((r["backend"], r["test"], r["mtu"], r["direction"], r["streams"]))
        for peer, x in r["vs"].items():
            theirs = by.get((peer, r["test"], r["mtu"], r["direction"], r["streams"]))
            if x["ratio"] and mine is not None and theirs is not None:
                a, b, basis = stats.choose_samples(_usable(mine), _usable(theirs), r["metric"])
                g.setdefault(peer, []).append((a, b, basis, x["ratio"]))
    if not any(groups.values()):
        return []
    out = ["## Summary: ringnet ÷ peers", "",
           "Geometric mean of the ratios over every MTU and stream count of this run, its "
           "bootstrap 95% interval (every point's samples resampled in each replicate; "
           f"{PER_SECOND_MARK}: some over seconds; [n/a]: a point without enough samples), "
           "then the lowest–highest ratio; the tables below give each point.", "",
           "| ringnet | test | figure | direction | ÷ slirp4netns | ÷ pasta | ÷ loopback |",
           "|---|---|---|---|---|---|---|"]
    order = {t: i for i, t in enumerate(HEADLINE)}
    for key in sorted(groups, key=lambda k: (ringnets.index(k[0]) if k[0] in ringnets else 0,
                                             order[k[1]], HEADLINE[k[1]].index(k[2]), k[3] != "ns->host")):
        backend, test, metric, direction = key
        cells = []
        for peer in PEERS:
            pairs = groups[key].get(peer)
            if not pairs:
                cells.append("—")
                continue
            gm = stats.geomean_ratio(pairs)
            vals = [v for *_, v in pairs]
            text = gm.text()
            if gm.basis == stats.PER_SECOND:
                text += PER_SECOND_MARK
            cells.append(f"{text}; {min(vals):.2f}–{max(vals):.2f}" if len(vals) > 1 else text)
        label, unit, better = LABELS[metric]
        out.append(f"| {backend} | {test} | {label}{f' ({unit})' if unit else ''}, {better} is better | "
                   f"{direction} | " + " | ".join(cells) + " |")
    return out + [""]


def headline(doc: dict[str, Any]) -> str:
    """What the sweep prints at the end: every ringnet figure with its ratios, one line each."""
    lines = ["", "ringnet ÷ peers (same run; throughput and rates: higher is better, "
             "CPU, loss and latency: lower is better)", CI_LEGEND]
    failed: dict[tuple[str, str, str], list[str]] = {}
    for r in doc["ratios"]:
        unit = LABELS[r["metric"]][1]
        what = (f"{r['backend']:<11} {r['test']:<4} mtu {r['mtu']:<5} {r['direction']:<8} "
                f"P{r['streams']} {r['metric']:<13}")
        if r["value"] is None:
            where = failed.setdefault((r["backend"], r["status"], str(r["reason"])), [])
            if f"{r['test']} mtu {r['mtu']}" not in where:
                where.append(f"{r['test']} mtu {r['mtu']}")
            continue
        vs = "  ".join(f"÷{peer} {ratio_text(x)}" for peer, x in r["vs"].items())
        lines.append(f"{what} {_fmt(r['value'])} {unit}  {vs}")
    for (backend, status, reason), where in failed.items():
        lines.append(f"{backend} {status} ({', '.join(where)}): {reason}")
    for b in doc["backends"]:
        if b["status"] == "skipped":
            lines.append(f"skipped {b['name']}: {b['reason']}")
    return "\n".join(lines)


# Plots --------------------------------------------------------------------------------------

def write_plots(doc: dict[str, Any], out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paths = []
    for test, metric, fname, ylabel in (
            ("tcp", "gbps", "tcp_throughput.png", "TCP throughput (Gbit/s)"),
            ("udp", "gbps", "udp_throughput.png", "UDP received (Gbit/s)"),
            ("tcp", "cpu_s_per_gb", "cpu_per_gb.png", "stack CPU seconds per GB (TCP)")):
        pts = [p for p in doc["points"] if p["test"] == test]
        if not pts:
            continue
        streams = sorted({p["streams"] for p in pts})
        mtus = sorted({p["mtu"] for p in pts})
        fig, axes = plt.subplots(1, len(streams), figsize=(6.5 * len(streams), 4.8), squeeze=False)
        names = [b["name"] for b in doc["backends"]]
        colors = {n: f"C{i}" for i, n in enumerate(names)}
        missing = set()
        for ax, s in zip(axes[0], streams):
            for n in names:
                for d, style in (("ns->host", "-"), ("host->ns", "--")):
                    line = sorted((p["mtu"], p["summary"][metric]) for p in pts
                                  if p["backend"] == n and p["direction"] == d and p["streams"] == s
                                  and metric in p["summary"])
                    if not line:
                        if any(p["backend"] == n and p["direction"] == d and p["status"] != "ok"
                               for p in pts):
                            missing.add(n)
                        continue
                    xs = [x for x, _ in line]
                    med = [y["median"] for _, y in line]
                    lo = [y["median"] - y["min"] for _, y in line]
                    hi = [y["max"] - y["median"] for _, y in line]
                    ax.errorbar(xs, med, yerr=[lo, hi], fmt=style + "o", color=colors[n], ms=3,
                                capsize=2, label=f"{n} {d}", lw=2.4 if n.startswith("ringnet") else 1.2)
            ax.set_xscale("log", base=2)
            ax.set_xticks(mtus)
            ax.set_xticklabels([str(m) for m in mtus], rotation=30)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xlabel("MTU (bytes)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel}, {s} stream{'s' if s > 1 else ''}")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        foot = []
        if missing:
            foot.append("no figures (failed or skipped, see sweep.md): " + ", ".join(sorted(missing)))
        if metric == "cpu_s_per_gb":
            foot.append("loopback: no stack process (the kernel's work is not counted for anyone)")
        if foot:
            fig.text(0.01, 0.01, "; ".join(foot), fontsize=8)
        fig.suptitle(f"{doc['started'][:10]}, Linux {doc['environment']['kernel']}, "
                     f"{doc['environment']['cpus_usable']} CPUs; solid ns->host, dashed host->ns; "
                     "bars min–max", fontsize=9)
        fig.tight_layout(rect=(0, 0.03, 1, 0.95))
        path = os.path.join(out, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m perf.report SWEEP.json [--out DIR]``: the ratios (with their intervals)
    and the Markdown, CSV and plots of an existing run, recomputed from its runs; the runs
    and their figures are not touched. Writes into DIR (default: beside SWEEP.json)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m perf.report", description=main.__doc__)
    ap.add_argument("sweep_json")
    ap.add_argument("--out")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    with open(a.sweep_json) as f:
        doc = json.load(f)
    doc["ratios"] = ratios(doc["points"])
    paths = write_all(doc, a.out or os.path.dirname(os.path.abspath(a.sweep_json)), plots=not a.no_plots)
    print(headline(doc))
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
