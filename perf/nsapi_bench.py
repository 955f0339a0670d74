"""What the test-rig API costs: Network.socket() and Network.call(), rootless.

    python -m perf.nsapi_bench [--sockets 300] [--calls 20] [--as-root]

- ``net.socket()``: microseconds per socket made inside the namespace (a round trip
  to the namespace child over its control socket, the fd passed back, checked),
  beside ``socket.socket()`` on the host (the floor), and their ratio.
- ``net.call(pow, 2, 10)``: milliseconds per call (a fresh interpreter inside, the
  pickled call and result on pipes), beside ``net.run([python, -c, pass])``, the same
  interpreter started the same way with nothing to do, and their ratio.

Each figure is the median of its samples with a 95% percentile-bootstrap interval of
the median (perf/stats.py's seed and replicate count); each ratio is
perf/stats.py's ``ratio()`` over the same samples. Samples alternate between the two
sides so that a busy moment of the machine touches both. Started as root it runs
itself again as the unprivileged test user (perf/rootless.py), as users run ringnet.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Callable, Optional, Sequence

import numpy as np

from . import rootless, stats


def median_interval(values: Sequence[float]) -> str:
    """``median [lo, hi] (n)``: the median and a 95% bootstrap interval of it."""
    a = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(stats.SEED)
    reps = np.median(a[rng.integers(0, a.size, size=(stats.BOOTSTRAP, a.size))], axis=1)
    lo, hi = np.quantile(reps, [(1 - stats.LEVEL) / 2, 1 - (1 - stats.LEVEL) / 2])
    return f"{np.median(a):.1f} [{lo:.1f}, {hi:.1f}] (n={a.size})"


def timed(fn: Callable[[], object], scale: float) -> float:
    """Seconds ``fn()`` took, times ``scale``."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * scale


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.nsapi_bench", description=__doc__.split("\n")[0])
    p.add_argument("--sockets", type=int, default=300, help="samples of socket creation (default 300)")
    p.add_argument("--calls", type=int, default=20, help="samples of call() and run() (default 20)")
    p.add_argument("--as-root", action="store_true", help="stay root when started as root")
    args = p.parse_args(argv)
    if rootless.should_drop(args.as_root):
        return rootless.rerun("perf.nsapi_bench", list(argv if argv is not None else sys.argv[1:]))
    import ringnet

    print(f"perf.nsapi_bench: running as {rootless.whoami()}, load {os.getloadavg()[0]:.2f}", flush=True)
    with ringnet.Network(workers=1, control_socket=False) as net:
        inside: list[float] = []
        host: list[float] = []
        for _ in range(args.sockets):
            inside.append(timed(lambda: net.socket().close(), 1e6))
            host.append(timed(lambda: socket.socket().close(), 1e6))
        call: list[float] = []
        run: list[float] = []
        net.call(pow, 2, 10)   # warm the page cache for the interpreter
        for _ in range(args.calls):
            call.append(timed(lambda: net.call(pow, 2, 10), 1e3))
            run.append(timed(lambda: net.run([sys.executable, "-c", "pass"], check=True), 1e3))
    print("| what | median [95% interval] |")
    print("|---|---|")
    print(f"| net.socket() + close, µs | {median_interval(inside)} |")
    print(f"| socket.socket() + close on the host, µs | {median_interval(host)} |")
    print(f"| net.call(pow, 2, 10), ms | {median_interval(call)} |")
    print(f"| net.run([python, -c, pass]), ms | {median_interval(run)} |")
    print(f"| net.socket() ÷ host socket | {stats.ratio(inside, host).text()} |")
    print(f"| net.call() ÷ net.run(python) | {stats.ratio(call, run).text()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
