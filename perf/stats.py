"""The perf harness's statistics, in numpy: summaries, per-second series, ratios with intervals.

Theory of operation
-------------------
Every figure the benchmarks print is a summary of samples: the runs of one point
(``--repeat``), or, inside one run, its seconds (iperf3's intervals, netbench's
per-second counts, dnsperf's per-second rates). ``summary()`` gives min, median,
max, n and the percentiles; ``iperf3_per_second()`` and ``counts_per_second()``
turn a tool's intervals into a per-second rate series.

A ratio of two such samples (ringnet ÷ a peer) is ``ratio()``: the ratio of the
two samples' statistic (median over runs, mean over seconds), and a 95% percentile
bootstrap interval: each sample is resampled with replacement, on its own, B times,
and the 2.5th and 97.5th percentiles of the B ratios bound the interval. The random
generator has a fixed seed, so the same samples print the same interval on every
machine and every run. An interval needs at least ``MIN_SAMPLES`` values on each
side; with fewer (one repeat of a 1 s run, a figure measured once per run) it is
absent, printed ``[n/a]``: there is never an interval made up from one value.

Which samples an interval comes from is its *basis* and is printed beside it:
``runs`` (each run one value: the honest basis) or ``per-second`` (the seconds of
one or a few runs, pooled). Seconds of one run are not independent of each other
(a stall in the machine lasts longer than a second), so a per-second interval is
narrower than a runs interval would be; the output says which one it is.
``choose_samples()`` takes runs when both sides have enough, else seconds.

``geomean_ratio()`` summarises several ratios (the MTUs and stream counts of one
figure) as their geometric mean with an interval from the same bootstrap
replicates, point by point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

SEED = 20260409          # fixed: the same samples give the same interval everywhere
BOOTSTRAP = 4000         # replicates per interval
LEVEL = 0.95             # two-sided interval
MIN_SAMPLES = 3          # fewer values on either side: no interval
PERCENTILES = (5, 50, 95, 99)

RUNS, PER_SECOND = "runs", "per-second"
STATISTIC = {RUNS: "median", PER_SECOND: "mean"}


class StatsError(ValueError):
    """A sample that cannot be summarised (empty, not finite)."""


def _array(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=np.float64)
    if a.size and not np.all(np.isfinite(a)):
        raise StatsError(f"sample has non-finite values: {a.tolist()}")
    return a


# Summaries -------------------------------------------------------------------------------

def summary(values: Iterable[float]) -> dict[str, Any]:
    """``{min, median, max, n}`` of ``values`` (plain Python numbers, for JSON).

    Raises StatsError when there are no values.
    """
    a = _array(values)
    if a.size == 0:
        raise StatsError("summary of no values")
    return {"min": _py(a.min()), "median": _py(np.median(a)), "max": _py(a.max()), "n": int(a.size)}


def percentiles(values: Iterable[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p5": .., "p50": .., ...}``: linear-interpolated percentiles of ``values``."""
    a = _array(values)
    if a.size == 0:
        raise StatsError("percentiles of no values")
    got = np.percentile(a, list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, got)}


def _py(v: Any) -> float | int:
    """A numpy scalar as int when it is integral (counts stay counts), else float."""
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


# Per-second series -------------------------------------------------------------------------

def iperf3_per_second(intervals: Sequence[dict[str, Any]], scale: float = 1e-9) -> list[float]:
    """Per-second rates from iperf3 ``-J`` intervals: each interval's ``sum.bits_per_second``
    times ``scale`` (Gbit/s by default); omitted (warm-up) intervals and intervals shorter
    than a tenth of a second (the stub iperf3 reports at the end) are left out."""
    out = []
    for i in intervals:
        s = i.get("sum") or {}
        if "bits_per_second" not in s or s.get("omitted"):
            continue
        if float(s.get("seconds", 1.0)) < 0.1:
            continue
        out.append(round(float(s["bits_per_second"]) * scale, 6))
    return out


def counts_per_second(counts: Sequence[float], seconds: float) -> list[float]:
    """Rates from per-second counts over a run of ``seconds``: the last bucket covers only
    the run's fraction of a second, so it is scaled up by that fraction (and dropped when
    it is under a tenth of a second)."""
    out = []
    for i, c in enumerate(counts):
        length = min(1.0, seconds - i)
        if length < 0.1:
            break
        out.append(float(c) / length)
    return out


# Ratios ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    """``value`` = statistic(a) ÷ statistic(b); ``lo``, ``hi`` its bootstrap interval, or None."""

    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    basis: Optional[str]
    n_a: int
    n_b: int
    why: str = ""          # why there is no interval (or no value)

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def text(self, digits: int = 2, basis: bool = False) -> str:
        """``1.69x [1.55, 1.83]``, ``1.69x [n/a]`` or ``—`` (no value)."""
        if self.value is None:
            return "—"
        ci = f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]" if self.has_interval else "[n/a]"
        tag = f" ({self.basis})" if basis and self.has_interval and self.basis else ""
        return f"{self.value:.{digits}f}x {ci}{tag}"

    def as_json(self) -> dict[str, Any]:
        return {"ci": [self.lo, self.hi] if self.has_interval else None,
                "ci_basis": self.basis if self.has_interval else None,
                "ci_n": [self.n_a, self.n_b] if self.has_interval else None}


def _stat(a: np.ndarray, how: str, axis: int = -1) -> Any:
    return np.median(a, axis=axis) if how == "median" else np.mean(a, axis=axis)


def _replicates(a: np.ndarray, b: np.ndarray, how: str, rng: np.random.Generator,
                reps: int) -> np.ndarray:
    """``reps`` bootstrap ratios stat(a*) / stat(b*); inf/nan where stat(b*) is 0."""
    ia = rng.integers(0, a.size, size=(reps, a.size))
    ib = rng.integers(0, b.size, size=(reps, b.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _stat(a[ia], how) / _stat(b[ib], how)


def ratio(a: Iterable[float], b: Iterable[float], basis: str = RUNS,
          value: Optional[float] = None, reps: int = BOOTSTRAP, seed: int = SEED) -> Ratio:
    """The ratio of sample ``a`` to sample ``b`` with a bootstrap 95% interval.

    @a, @b: the two samples (ringnet's, the peer's)
    @basis: RUNS (statistic: median) or PER_SECOND (statistic: mean)
    @value: the ratio to report, when the caller has it from elsewhere (the medians of
        the runs while the interval comes from seconds); default: statistic(a) / statistic(b)
    @reps, @seed: bootstrap replicates and the generator's seed

    Return: a Ratio; its interval is None (with ``why``) when either side has fewer than
    MIN_SAMPLES values or stat(b) is 0 in more than 2.5% of the replicates; its value is
    None when either side is empty or stat(b) is 0.
    """
    how = STATISTIC[basis]
    xa, xb = _array(a), _array(b)
    if value is None and xa.size and xb.size:
        sb = float(_stat(xb, how))
        value = float(_stat(xa, how)) / sb if sb else None
    if value is None:
        return Ratio(None, None, None, None, int(xa.size), int(xb.size), "no figure on one side")
    if min(xa.size, xb.size) < MIN_SAMPLES:
        return Ratio(value, None, None, None, int(xa.size), int(xb.size),
                     f"fewer than {MIN_SAMPLES} samples ({basis}) on one side: "
                     f"{xa.size} and {xb.size}")
    r = _replicates(xa, xb, how, np.random.default_rng(seed), reps)
    return _interval(value, r, basis, int(xa.size), int(xb.size))


def _interval(value: float, r: np.ndarray, basis: str, n_a: int, n_b: int) -> Ratio:
    tail = (1 - LEVEL) / 2
    ok = r[np.isfinite(r)]
    if ok.size < r.size * (1 - tail):
        return Ratio(value, None, None, None, n_a, n_b, "the denominator is 0 in too many replicates")
    # the infinite replicates count as the highest ones: they stay in the ranking
    lo, hi = np.quantile(np.where(np.isfinite(r), r, np.inf), [tail, 1 - tail])
    return Ratio(value, float(lo), float(hi), basis, n_a, n_b)


def geomean_ratio(pairs: Sequence[tuple[Sequence[float], Sequence[float], str, float]],
                  reps: int = BOOTSTRAP, seed: int = SEED) -> Ratio:
    """The geometric mean of several ratios with a bootstrap interval.

    @pairs: (a, b, basis, value) per point, ``value`` that point's ratio
    @reps, @seed: as ratio()

    Return: a Ratio whose value is the geometric mean of the values; its interval comes
    from the per-point bootstrap replicates combined replicate by replicate, and is None
    unless every point has an interval of its own (same basis reported: "runs" when all
    are runs, else "per-second").
    """
    vals = [v for _, _, _, v in pairs if v]
    if not pairs or len(vals) != len(pairs):
        return Ratio(None, None, None, None, 0, 0, "a point has no figure")
    gm = math.exp(sum(math.log(v) for v in vals) / len(vals))
    rng = np.random.default_rng(seed)
    logs = np.zeros(reps)
    basis = RUNS
    for a, b, bs, _ in pairs:
        xa, xb = _array(a), _array(b)
        if min(xa.size, xb.size) < MIN_SAMPLES:
            return Ratio(gm, None, None, None, len(pairs), len(pairs),
                         f"a point has fewer than {MIN_SAMPLES} samples on one side")
        r = _replicates(xa, xb, STATISTIC[bs], rng, reps)
        if not np.all(np.isfinite(r) & (r > 0)):
            return Ratio(gm, None, None, None, len(pairs), len(pairs),
                         "a point's denominator or numerator is 0 in a replicate")
        logs += np.log(r)
        if bs != RUNS:
            basis = PER_SECOND
    r = np.exp(logs / len(pairs))
    return _interval(gm, r, basis, len(pairs), len(pairs))


# Samples of a sweep point ----------------------------------------------------------------------

# the per-second series that stands for a run-level metric within a run
PER_SECOND_OF = {"gbps": "per_second_gbps", "ops_per_s": "per_second_ops", "qps": "per_second_qps"}


def run_values(runs: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """The metric's value in each successful run."""
    return [float(r[metric]) for r in runs if r.get("ok") and r.get(metric) is not None]


def second_values(runs: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """The metric's per-second values over every second of every successful run (empty when
    the metric has no per-second series)."""
    key = PER_SECOND_OF.get(metric)
    if key is None:
        return []
    out: list[float] = []
    for r in runs:
        if not r.get("ok"):
            continue
        series = r.get(key)
        if series is None and key == "per_second_ops" and r.get("per_second") and r.get("seconds"):
            # runs recorded before per_second_ops: netbench's raw per-second counts
            series = counts_per_second(r["per_second"], float(r["seconds"]))
        out += [float(v) for v in series or []]
    return out


def choose_samples(a_runs: Sequence[dict[str, Any]], b_runs: Sequence[dict[str, Any]],
                   metric: str) -> tuple[list[float], list[float], str]:
    """The samples for a ratio's interval: (a, b, basis). Runs when both sides have
    MIN_SAMPLES of them; else every second of their runs when the metric has a per-second
    series; else the runs (too few: the interval will be n/a)."""
    a, b = run_values(a_runs, metric), run_values(b_runs, metric)
    if min(len(a), len(b)) >= MIN_SAMPLES:
        return a, b, RUNS
    sa, sb = second_values(a_runs, metric), second_values(b_runs, metric)
    if min(len(sa), len(sb)) >= MIN_SAMPLES:
        return sa, sb, PER_SECOND
    return a, b, RUNS


def run_ratio(a_runs: Sequence[dict[str, Any]], b_runs: Sequence[dict[str, Any]], metric: str,
              value: Optional[float] = None) -> Ratio:
    """ratio() of two points' runs for ``metric``, on the basis choose_samples() picks;
    ``value`` (the ratio of the medians of the runs) is the one reported whatever the basis."""
    a, b, basis = choose_samples(a_runs, b_runs, metric)
    if value is None:
        ra, rb = run_values(a_runs, metric), run_values(b_runs, metric)
        if ra and rb and float(np.median(rb)):
            value = float(np.median(ra)) / float(np.median(rb))
    if value is None:
        return Ratio(None, None, None, None, len(a), len(b), "no figure on one side")
    return ratio(a, b, basis, value=value)


# Estimates against a target (perf/netem_check.py) ---------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A figure and its 95% interval (``lo``, ``hi``; None with fewer than MIN_SAMPLES)."""

    value: float
    lo: Optional[float]
    hi: Optional[float]
    n: int

    def text(self, digits: int = 2, unit: str = "") -> str:
        ci = f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]" if self.lo is not None else "[n/a]"
        return f"{self.value:.{digits}f}{unit} {ci}"


def estimate(values: Iterable[float], how: str = "median", reps: int = BOOTSTRAP,
             seed: int = SEED) -> Estimate:
    """``how`` ("median" or "mean") of ``values`` with a seeded percentile bootstrap 95%
    interval. Raises StatsError when there are no values."""
    a = _array(values)
    if a.size == 0:
        raise StatsError("estimate of no values")
    value = float(_stat(a, how))
    if a.size < MIN_SAMPLES:
        return Estimate(value, None, None, int(a.size))
    rng = np.random.default_rng(seed)
    r = _stat(a[rng.integers(0, a.size, size=(reps, a.size))], how)
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(r, [tail, 1 - tail])
    return Estimate(value, float(lo), float(hi), int(a.size))


def difference(a: Iterable[float], b: Iterable[float], how: str = "median", reps: int = BOOTSTRAP,
               seed: int = SEED) -> Estimate:
    """stat(a) - stat(b) with a seeded bootstrap 95% interval, each sample resampled on its
    own (an added delay: RTTs with it minus RTTs without)."""
    xa, xb = _array(a), _array(b)
    if xa.size == 0 or xb.size == 0:
        raise StatsError("difference with an empty sample")
    value = float(_stat(xa, how) - _stat(xb, how))
    if min(xa.size, xb.size) < MIN_SAMPLES:
        return Estimate(value, None, None, int(min(xa.size, xb.size)))
    rng = np.random.default_rng(seed)
    r = (_stat(xa[rng.integers(0, xa.size, size=(reps, xa.size))], how)
         - _stat(xb[rng.integers(0, xb.size, size=(reps, xb.size))], how))
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(r, [tail, 1 - tail])
    return Estimate(value, float(lo), float(hi), int(min(xa.size, xb.size)))


def proportion(k: int, n: int) -> Estimate:
    """k of n as a fraction with its Wilson score 95% interval (a loss rate)."""
    if n <= 0 or not 0 <= k <= n:
        raise StatsError(f"proportion of {k} in {n}")
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)
