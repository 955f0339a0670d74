"""The latency and churn families' tables: p50, p99 and max per point, the operations over
2 ms, and the slowest operations with their timestamps (sweep.md and the sweep's output).

The latency family (rr, crr, crr_rst: perf/netbench.c) times every operation; a run
records p50/p99/p99.9/max, ``slow`` (operations over ``slow_threshold_us``, 2 ms) and
``outliers``: the slowest operations, each with its start (``t_ms`` since the run began),
total and phases (``connect_us``, ``rtt_us``, ``close_us``) and client ``stream``. The
churn family (http, http_close: wrk against nginx) records wrk's percentiles and max; wrk
does not count requests over a threshold, so its ``slow`` is absent.

A point's row here: p50 and p99 are the medians over its successful runs (like the
figure tables), max is the largest over the runs (the worst operation seen at that
point), over-2-ms the sum over the runs out of the operations of those runs, and the
outliers are the slowest few over every run, tagged with the run's index.
"""

from __future__ import annotations

from typing import Any, Optional

from . import stats

NETBENCH = ("rr", "crr", "crr_rst")
HTTP = ("http", "http_close")
TESTS = NETBENCH + HTTP
TITLES = {"rr": "1-byte ping-pong (one round trip)",
          "crr": "connect + request + close with FIN",
          "crr_rst": "connect + request + close with RST",
          "http": "HTTP keep-alive (wrk, nginx)",
          "http_close": "HTTP Connection: close (wrk, nginx; wrk times from the request, after connect)"}
SHOWN_OUTLIERS = 3     # per point in sweep.md


def row(p: dict[str, Any]) -> dict[str, Any]:
    """The latency row of one point: ``p50_us``, ``p99_us`` (medians over its successful
    runs), ``max_us`` (the largest), ``slow`` and ``ops`` (sums; ``slow`` None when no run
    counted), ``slow_threshold_us``, ``outliers`` (slowest first, each with ``repeat``)."""
    ok = [r for r in p["runs"] if r.get("ok")]
    out: dict[str, Any] = {"backend": p["backend"], "test": p["test"], "mtu": p["mtu"],
                           "streams": p["streams"], "status": p["status"], "reason": p["reason"],
                           "runs": len(ok)}
    for m in ("p50_us", "p99_us"):
        vals = stats.run_values(ok, m)
        out[m] = stats.summary(vals)["median"] if vals else None
    maxes = stats.run_values(ok, "max_us")
    out["max_us"] = max(maxes) if maxes else None
    counted = [r for r in ok if r.get("slow") is not None]
    out["slow"] = sum(int(r["slow"]) for r in counted) if counted else None
    out["ops"] = sum(int(r.get("ops") or 0) for r in (counted or ok))
    out["slow_threshold_us"] = next((r["slow_threshold_us"] for r in counted
                                     if r.get("slow_threshold_us")), None)
    outliers = [dict(o, repeat=r.get("repeat")) for r in ok for o in r.get("outliers") or []]
    out["outliers"] = sorted(outliers, key=lambda o: -float(o["us"]))
    return out


def rows(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """row() of every point of the two families, in the points' order."""
    return [row(p) for p in points if p["test"] in TESTS]


def _us(v: Optional[float]) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def cell(r: dict[str, Any]) -> str:
    """``75 / 128 / 15,700 µs, 12 of 12,800 over 2 ms`` (or the status when no run succeeded)."""
    if not r["runs"]:
        return r["status"]
    text = f"{_us(r['p50_us'])} / {_us(r['p99_us'])} / {_us(r['max_us'])}"
    if r["slow"] is not None:
        text += f"; {r['slow']:,} of {r['ops']:,} over {(r['slow_threshold_us'] or 2000) / 1000:g} ms"
    return text


def outlier_text(o: dict[str, Any]) -> str:
    """One slow operation: ``15.7 ms at 812.3 ms (run 1, stream 0): connect 15.6, rtt 0.1, close 0.0``."""
    text = f"{o['us'] / 1000:.2f} ms at {o['t_ms']:.1f} ms (run {int(o.get('repeat') or 0) + 1}, " \
           f"stream {o.get('stream', 0)})"
    phases = [f"{k} {o[k + '_us'] / 1000:.2f}" for k in ("connect", "rtt", "close")
              if o.get(k + "_us") is not None]
    return text + (": " + ", ".join(phases) if phases else "")


def markdown(doc: dict[str, Any]) -> list[str]:
    """sweep.md's section for the two families (nothing when neither ran): per test a table
    of every backend's p50 / p99 / max and operations over 2 ms, then the slowest operations
    of every point that had any over 2 ms."""
    rs = rows(doc["points"])
    if not rs:
        return []
    names = [b["name"] for b in doc["backends"]]
    out = ["## Latency: p50 / p99 / max (µs) and operations over 2 ms", "",
           "p50 and p99: median over the runs; max: the worst operation of any run; over 2 ms: "
           "summed over the runs (netbench only: wrk does not count them). One operation is one "
           "round trip (rr), connect + 1-byte request and reply + close (crr, crr_rst: the "
           "connection's whole life as the client sees it) or one HTTP request (wrk).", ""]
    for test in TESTS:
        trs = [r for r in rs if r["test"] == test]
        if not trs:
            continue
        by = {(r["backend"], r["mtu"], r["streams"]): r for r in trs}
        keys = sorted({(r["mtu"], r["streams"]) for r in trs})
        out += [f"### {TITLES[test]}", "", "| MTU | streams | " + " | ".join(names) + " |",
                "|---|---|" + "---|" * len(names)]
        for mtu, s in keys:
            cells = [cell(by[(n, mtu, s)]) if (n, mtu, s) in by else "—" for n in names]
            out.append(f"| {mtu} | {s} | " + " | ".join(cells) + " |")
        out.append("")
    slow = [r for r in rs if r["outliers"]]
    if slow:
        out += ["### Slowest operations", "",
                f"The {SHOWN_OUTLIERS} slowest of each point with any over 2 ms (sweep.json keeps up "
                "to 32 a run): total, start since the run began, and where the time went "
                "(ms: connect, request/reply, close).", ""]
        for r in slow:
            out.append(f"- {r['backend']} {r['test']} mtu {r['mtu']} P{r['streams']}: " +
                       "; ".join(outlier_text(o) for o in r["outliers"][:SHOWN_OUTLIERS]))
        out.append("")
    return out


def headline(doc: dict[str, Any]) -> list[str]:
    """The sweep's printed lines for the two families, one per point and backend, with the
    slowest operation of each point that had one over 2 ms; only when a test of its own
    (crr_rst, http, http_close) ran: the default sweep's rr and crr points are many, and
    sweep.md has them all."""
    rs = [r for r in rows(doc["points"]) if r["status"] != "skipped"]
    if not any(r["test"] in ("crr_rst",) + HTTP for r in rs):
        return []
    out = ["", "latency p50 / p99 / max (us; p50, p99: median over runs; max: worst of any run), "
           "operations over 2 ms"]
    for r in rs:
        out.append(f"{r['backend']:<11} {r['test']:<10} mtu {r['mtu']:<5} P{r['streams']}  {cell(r)}")
        if r["outliers"]:
            out.append(f"{'':<11} slowest: {outlier_text(r['outliers'][0])}")
    return out
