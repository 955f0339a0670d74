"""Issue 14's network emulation figures, measured against what was set.

    python -m perf.netem_check [--pings 300] [--seconds 10] [--loss-pings 5000]
                               [--cases delay,rate,loss] [--as-root] [--out DIR]

- delay: ping the gateway (the worker answers it: the path is the rings, the worker and
  the emulation only) from inside ``Network(workers=1)``, without emulation, with
  ``netem_up="delay=20ms"`` (one direction, as tc netem on one interface), then with
  ``netem="delay=20ms"`` (both: 40 ms), in blocks taken in turn on one network whose
  emulation changes at run time (so all three share the machine's load). Figure: median
  RTT with it minus median RTT without, with a bootstrap 95% interval (perf/stats.py
  ``difference``). Target: the figure within 1 ms of the delay set (ping prints 0.1 ms
  steps above 10 ms; on a loaded machine the base RTT's spread widens the interval).
- rate: iperf3 TCP between a client inside and a server on host loopback, ns->host with
  ``netem_up="rate=100mbit"`` and host->ns (``-R``) with ``netem_down``, ``--seconds``
  long with 2 s omitted (slow start). Figure: the receiver's mean per-second rate, with a
  bootstrap 95% interval over those seconds (not independent: read it as steadiness).
  Target: within 5% of 100 Mbit/s. iperf3 counts TCP payload; the token bucket charges IP
  bytes of 64 KiB frames (headers about 0.1% at MTU 65520).
- loss: ``--loss-pings`` pings at 1 ms intervals with ``netem_up="loss=1%"``. Figure: the
  share of echo requests ping saw unanswered and the worker's own count
  (netem_loss_up / frames taken), each with its Wilson 95% interval. Target: 1% inside
  the interval.

Started as root it runs as the unprivileged test user (perf/rootless.py; ``--as-root``
keeps root). Prints measured vs target per case; exit status 1 when a target is missed.
Needs ping and iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from typing import Any, Optional

from . import rootless, stats
from .udp_bench import GATEWAY, HOST, iperf3_server

DELAY_MS = 20.0
DELAY_TOL_MS = 1.0
RATE_BPS = 100e6
RATE_TOL = 0.05
LOSS = 0.01


def _ping(net: Any, count: int, interval: str) -> tuple[list[float], int, int]:
    """RTTs (ms) of ``count`` pings of the gateway, packets sent and answered."""
    r = net.run(["ping", "-n", "-q" if count > 1000 else "-n", "-c", str(count), "-i", interval,
                 "-W", "2", GATEWAY[4]], capture_output=True, timeout=count * 0.1 + 120)
    out = r.stdout.decode()
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    if not m:
        raise RuntimeError(f"ping failed: {out[-300:]} {r.stderr.decode()[-300:]}")
    return rtts, int(m.group(1)), int(m.group(2))


def _network(**kw: Any) -> Any:
    """A one-worker IPv4 network reaching host loopback, with the given NetworkConfig fields."""
    import ringnet
    return ringnet.Network(workers=1, allow_host_loopback=True, ipv6=False, **kw)


def case_delay(pings: int, rounds: int = 5) -> list[dict[str, Any]]:
    """Median RTT with the delay minus without, one direction then both. One network,
    its emulation changed at run time between blocks of pings (``rounds`` of each, in
    turn), so the three samples share the machine's load."""
    cfgs = (("off", "off"), ("delay=20ms", "off"), ("delay=20ms", "delay=20ms"))
    got: list[list[float]] = [[], [], []]
    per = max(3, pings // rounds)
    with _network() as net:
        for _ in range(rounds):
            for i, (up, down) in enumerate(cfgs):
                net.netem(up, "up")
                net.netem(down, "down")
                got[i] += _ping(net, per, "0.02")[0]
    base = got[0]
    out = []
    for label, rtts, want in (("delay=20ms up", got[1], DELAY_MS),
                              ("delay=20ms both ways", got[2], 2 * DELAY_MS)):
        d = stats.difference(rtts, base)
        out.append({"case": f"ping RTT, {label}", "target": f"+{want:g} ms ± {DELAY_TOL_MS:g}",
                    "measured": f"+{d.text(3)} ms (median {stats.summary(rtts)['median']:.3f} "
                                f"vs base {stats.summary(base)['median']:.3f} ms, "
                                f"min {min(rtts):.3f} vs {min(base):.3f} ms, n={len(rtts)})",
                    "met": abs(d.value - want) <= DELAY_TOL_MS, "value": d.value, "ci": [d.lo, d.hi]})
    return out


def _iperf3(net: Any, seconds: float, reverse: bool) -> list[float]:
    """Receiver's per-second rates (bit/s) of one iperf3 TCP run through ``net``."""
    with iperf3_server(4) as port:
        argv = ["iperf3", "-c", GATEWAY[4], "-p", str(port), "-t", f"{seconds:g}", "-O", "2",
                "-J", "--get-server-output", "--connect-timeout", "3000"]
        if reverse:
            argv.append("-R")
        r = net.run(argv, capture_output=True, timeout=seconds + 60)
    data = json.loads(r.stdout.decode() or "{}")
    if r.returncode != 0 or data.get("error"):
        raise RuntimeError(f"iperf3: {data.get('error') or r.stderr.decode()[-300:]}")
    side = data if reverse else data.get("server_output_json") or {}
    return stats.iperf3_per_second(side.get("intervals") or [], scale=1.0)


def case_rate(seconds: float) -> list[dict[str, Any]]:
    """iperf3 through rate=100mbit, each direction."""
    out = []
    for label, kw, reverse in (("ns->host, netem_up", {"netem_up": "rate=100mbit"}, False),
                               ("host->ns, netem_down", {"netem_down": "rate=100mbit"}, True)):
        with _network(**kw) as net:
            per = _iperf3(net, seconds, reverse)
        if len(per) > 2 and not reverse:
            per = per[2:]           # the server side does not omit the warm-up seconds itself
        e = stats.estimate([x / 1e6 for x in per], "mean")
        ok = e.lo is not None and abs(e.value * 1e6 - RATE_BPS) <= RATE_TOL * RATE_BPS
        out.append({"case": f"iperf3 TCP {label} rate=100mbit", "target": "100 Mbit/s ± 5%",
                    "measured": f"{e.text(2)} Mbit/s (receiver, mean of {e.n} seconds)",
                    "met": ok, "value": e.value, "ci": [e.lo, e.hi]})
    return out


def case_loss(pings: int) -> list[dict[str, Any]]:
    """Pings through loss=1%: ping's unanswered share and the worker's count."""
    with _network(netem_up="loss=1%") as net:
        w0 = net.counters()["workers"][0]
        _, sent, answered = _ping(net, pings, "0.001")
        w1 = net.counters()["workers"][0]
    taken = w1["frames_in"] - w0["frames_in"]
    lost = w1["netem_loss_up"] - w0["netem_loss_up"]
    out = []
    for label, k, n in (("ping: requests unanswered", sent - answered, sent),
                        ("worker: netem_loss_up / frames taken", lost, taken)):
        e = stats.proportion(k, n)
        ok = e.lo is not None and e.lo <= LOSS <= e.hi
        out.append({"case": f"loss=1%, {label}", "target": "1% inside the 95% interval",
                    "measured": f"{100 * e.value:.3f}% [{100 * e.lo:.3f}, {100 * e.hi:.3f}] "
                                f"({k} of {n})",
                    "met": ok, "value": e.value, "ci": [e.lo, e.hi]})
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Run the cases asked for and print measured vs target; 1 when a target is missed."""
    ap = argparse.ArgumentParser(prog="python -m perf.netem_check", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pings", type=int, default=300, help="pings per delay run (default 300)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per iperf3 run (default 10)")
    ap.add_argument("--loss-pings", type=int, default=5000, help="pings of the loss run (default 5000)")
    ap.add_argument("--cases", default="delay,rate,loss")
    ap.add_argument("--out", help="also write netem.json into this directory")
    ap.add_argument("--as-root", action="store_true", help="started as root, stay root")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if set(cases) - {"delay", "rate", "loss"} or args.pings < 3 or args.seconds < 4 or args.loss_pings < 100:
        ap.error("cases are delay, rate, loss; --pings >= 3, --seconds >= 4, --loss-pings >= 100")
    for tool in ("ping", "iperf3"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.netem_check", list(argv if argv is not None else sys.argv[1:]),
                              out=args.out)
    print(f"perf.netem_check: running as {rootless.whoami()}, load {os.getloadavg()[0]:.2f}",
          flush=True)
    rows: list[dict[str, Any]] = []
    if "delay" in cases:
        rows += case_delay(args.pings)
    if "rate" in cases:
        rows += case_rate(args.seconds)
    if "loss" in cases:
        rows += case_loss(args.loss_pings)
    print("\n| case | target | measured [95% interval] | |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['target']} | {r['measured']} | {'met' if r['met'] else 'MISSED'} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; host: {HOST[4]} through {GATEWAY[4]}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "netem.json"), "w") as f:
            json.dump({"command": rootless.command("perf.netem_check", argv), "user": rootless.whoami(),
                       "loadavg": os.getloadavg(), "rows": rows}, f, indent=1)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
