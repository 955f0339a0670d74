"""Ring throughput between two processes, beside a plain memcpy of the same bytes.

    python perf/ring_bench.py [--ring-size BYTES] [--seconds S] [--sizes 64,1500,65536]

For each frame size, a forked child produces frames into a ring in a memfd
(rn_ringtest_produce: reserve, fill, commit, publish per batch) while this
process consumes them (rn_ringtest_consume: peek, copy out, consume, release per
batch), both in C with the NEED_WAKEUP protocol; then this process copies the
same number of frames of the same size with memcpy into an area as large as
the ring (rn_ringtest_memcpy). The ring moves every byte twice (in and out) on
two cores; memcpy once on one. Aims are printed, never asserted.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time

try:
    from ringnet._ringtest import ffi, lib, run_pair
except ImportError:  # run from a checkout: python perf/ring_bench.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ringnet._ringtest import ffi, lib, run_pair

# frame size -> (what is aimed at, threshold)
AIMS = {64: ("frames/s", 10e6), 65536: ("memcpy ratio", 0.70)}


def ring_run(ring_size: int, frame: int, nframes: int, batch: int,
             cpus: tuple[int, int] | None = None) -> tuple[float, int]:
    """Move ``nframes`` frames of ``frame`` bytes; return (seconds, rc): the consumer's
    return code, or -1 when the producer failed.

    ``cpus``: pin the consumer (this process) and the producer to these CPUs.
    """
    prod, cons, secs = run_pair(ring_size, lib.RN_FRAME_MAX, cpus, nframes=nframes,
                                minlen=frame, maxlen=frame, batch=batch, verify=0)
    return secs, cons.rc or (-1 if prod.rc else 0)


def memcpy_run(ring_size: int, frame: int, nframes: int) -> float:
    """Copy ``nframes`` frames of ``frame`` bytes once, ring-like; return seconds."""
    dst = mmap.mmap(-1, ring_size)
    buf = ffi.from_buffer(dst)
    lib.rn_ringtest_memcpy(buf, ring_size, frame, min(nframes, 1000))  # fault pages in
    t0 = time.perf_counter()
    lib.rn_ringtest_memcpy(buf, ring_size, frame, nframes)
    return time.perf_counter() - t0


def measure(frame: int, ring_size: int = 1 << 20, seconds: float = 0.5, batch: int = 32,
            repeat: int = 5, cpus: tuple[int, int] | None = None) -> dict:
    """Best of ``repeat`` ring runs and memcpy runs for one frame size.

    Returns {"frame", "frames", "frames_per_s", "ring_gbs", "memcpy_gbs", "ratio"};
    raises RuntimeError when a ring run fails.
    """
    # calibrate the frame count on a short run
    n = 20_000 if frame > 4096 else 200_000
    secs, rc = ring_run(ring_size, frame, n, batch, cpus)
    if rc:
        raise RuntimeError(f"ring run failed: {rc}")
    n = max(1000, int(n * seconds / max(secs, 1e-6)))
    best_ring = min(ring_run(ring_size, frame, n, batch, cpus)[0] for _ in range(repeat))
    if cpus:
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})
    best_copy = min(memcpy_run(ring_size, frame, n) for _ in range(repeat))
    if cpus:
        os.sched_setaffinity(0, old)
    ring_gbs = n * frame / best_ring / 1e9
    copy_gbs = n * frame / best_copy / 1e9
    return {"frame": frame, "frames": n, "frames_per_s": n / best_ring, "ring_gbs": ring_gbs,
            "memcpy_gbs": copy_gbs, "ratio": ring_gbs / copy_gbs}


def default_cpus(no_pin: bool = False) -> tuple[int, int] | None:
    """The first two CPUs this process may use, or None (unpinned)."""
    avail = sorted(os.sched_getaffinity(0))
    return None if no_pin or len(avail) < 2 else (avail[0], avail[1])


def aim(row: dict) -> tuple[str, bool | None]:
    """(text, passed) for the aim of this frame size; ("", None) when there is none."""
    if row["frame"] not in AIMS:
        return "", None
    what, want = AIMS[row["frame"]]
    got = row["frames_per_s"] if what == "frames/s" else row["ratio"]
    ok = got >= want
    want_s = f"{want / 1e6:.0f} M" if what == "frames/s" else f"{want:.0%}"
    return f"{what} >= {want_s}: {'pass' if ok else 'MISS'}", ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring-size", type=int, default=1 << 20)
    ap.add_argument("--seconds", type=float, default=0.5, help="target time per ring run")
    ap.add_argument("--sizes", default="64,1500,65536")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5, help="runs per size, best kept")
    ap.add_argument("--no-pin", action="store_true",
                    help="let the scheduler place both processes (default: one CPU each)")
    args = ap.parse_args(argv)
    cpus = default_cpus(args.no_pin)

    print(f"ring {args.ring_size} B, batch {args.batch}, best of {args.repeat}, "
          f"{f'consumer on CPU {cpus[0]}, producer on CPU {cpus[1]}' if cpus else 'unpinned'}")
    print(f"{'frame':>7} {'frames/s':>12} {'ring GB/s':>10} {'memcpy GB/s':>12} "
          f"{'ratio':>6}  aim")
    missed = 0
    for frame in (int(s) for s in args.sizes.split(",")):
        try:
            row = measure(frame, args.ring_size, args.seconds, args.batch, args.repeat, cpus)
        except RuntimeError as e:
            print(f"{frame:>7} {e}")
            return 2
        text, ok = aim(row)
        missed += ok is False
        print(f"{frame:>7} {row['frames_per_s']:>12,.0f} {row['ring_gbs']:>10.2f} "
              f"{row['memcpy_gbs']:>12.2f} {row['ratio']:>6.2f}  {text}")
    if missed:
        print(f"{missed} aim(s) missed (not an error: figures depend on the machine's load)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
