"""The perf harness.

perf/stats.py on fixed inputs (summaries, per-second series, ratios with bootstrap
intervals: degenerate when the samples are, around a known shift, narrower with more
samples, absent rather than made up with too few), the report's and the benchmarks'
use of it on fixed sweep points; then python -m perf.sweep itself in --quick mode: JSON
of the documented schema (perf/schema.json), run rootless by default, ringnet figures
above zero for what ringnet forwards today (found by a probe of its own, so these tests
tighten by themselves as TCP and UDP land), explicit reasons where it fails, a skip
recorded for a backend hidden from PATH, and no interval where one run of one second
gives too few samples. The latency and churn families: netbench's and wrk's outputs
parsed and aggregated on fixed inputs, then each family run once through ringnet at
tiny counts, its records checked for structure (never for speed)."""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import ringnet
from conftest import TEST_USER, needs_userns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ringnet.__file__)))
HIDDEN = "slirp4netns"
ROUND_TRIP = ("rr", "crr")

# the checkout's perf package, after the installed ringnet
if REPO not in sys.path:
    sys.path.append(REPO)
from perf import latency, measure, report, stats, sweep as sweep_mod, tcp_bench, udp_bench  # noqa: E402

needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")


def sweep_test(f):
    """A test of a real sweep run: user namespaces and iperf3 needed."""
    return needs_userns(needs_iperf3(f))


# perf/stats.py ------------------------------------------------------------------------------

def test_identical_samples_give_a_degenerate_interval():
    r = stats.ratio([5.0] * 6, [2.5] * 6)
    assert (r.value, r.lo, r.hi, r.basis) == (2.0, 2.0, 2.0, stats.RUNS)
    assert r.text() == "2.00x [2.00, 2.00]"


def test_a_known_shift_lies_within_the_interval():
    base = [0.9, 1.0, 1.1, 0.95, 1.05, 1.0, 0.97, 1.03]
    r = stats.ratio([1.5 * x for x in reversed(base)], base)
    assert r.value == pytest.approx(1.5)
    assert r.lo < 1.5 < r.hi
    # and a shift the samples do not show is outside
    assert not r.lo < 1.0 < r.hi


def test_the_interval_narrows_with_more_samples():
    widths = []
    for k in (1, 4, 16):
        a, b = [1.8, 2.0, 2.2] * k, [0.9, 1.0, 1.1] * k
        r = stats.ratio(a, b)
        assert r.lo <= 2.0 <= r.hi
        widths.append(r.hi - r.lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_the_interval_is_reproducible():
    a, b = [3.1, 2.7, 3.4, 2.9, 3.0, 3.3, 2.8], [1.2, 1.0, 1.1, 0.9, 1.3, 1.05, 0.95]
    assert stats.ratio(a, b) == stats.ratio(list(a), list(b))
    # the same because of the fixed seed, not because every seed gives the same
    ps = stats.PER_SECOND
    assert stats.ratio(a, b, ps, seed=1) != stats.ratio(a, b, ps, seed=2)


def test_too_few_samples_give_no_interval():
    r = stats.ratio([2.0, 2.1], [1.0, 1.0, 1.0])
    assert r.value == pytest.approx(2.05) and not r.has_interval
    assert r.text() == "2.05x [n/a]" and "fewer than 3" in r.why
    assert r.as_json() == {"ci": None, "ci_basis": None, "ci_n": None}


def test_no_figure_gives_no_ratio():
    assert stats.ratio([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).value is None
    assert stats.ratio([], [1.0, 1.0, 1.0]).text() == "—"
    # the denominator is 0 in most replicates: a value, but no interval
    r = stats.ratio([1.0] * 5, [0.0, 0.0, 0.0, 0.0, 1.0], basis=stats.PER_SECOND)
    assert r.value == pytest.approx(5.0) and not r.has_interval


def test_summary_and_percentiles():
    assert stats.summary([3, 1, 2, 10]) == {"min": 1, "median": 2.5, "max": 10, "n": 4}
    p = stats.percentiles(range(101))
    assert p == {"p5": 5.0, "p50": 50.0, "p95": 95.0, "p99": 99.0}
    with pytest.raises(stats.StatsError):
        stats.summary([])
    with pytest.raises(stats.StatsError):
        stats.summary([1.0, float("nan")])


def test_per_second_series():
    intervals = [{"sum": {"bits_per_second": 2e9, "seconds": 1.0, "omitted": True}},
                 {"sum": {"bits_per_second": 3e9, "seconds": 1.0}},
                 {"sum": {"bits_per_second": 4e9, "seconds": 1.0}},
                 {"sum": {"bits_per_second": 9e9, "seconds": 0.01}},      # iperf3's end stub
                 {"streams": []}]
    assert stats.iperf3_per_second(intervals) == [3.0, 4.0]
    # 2.5 s of counts: the last half second counts double; a sliver of a second is left out
    assert stats.counts_per_second([100, 120, 50], 2.5) == [100.0, 120.0, 100.0]
    assert stats.counts_per_second([100, 1], 1.05) == [100.0]


def _run(**kw):
    return {"ok": True, "error": None, **kw}


def test_samples_are_runs_when_there_are_enough_else_seconds():
    three = [_run(gbps=g, per_second_gbps=[g] * 4) for g in (1.0, 1.1, 0.9)]
    one = [_run(gbps=2.0, per_second_gbps=[1.9, 2.0, 2.1, 2.0])]
    short = [_run(gbps=2.0, per_second_gbps=[2.0])]
    failed = [{"ok": False, "error": "x", "gbps": 5.0}]
    assert stats.choose_samples(three, three, "gbps")[2] == stats.RUNS
    a, b, basis = stats.choose_samples(one, three, "gbps")
    assert basis == stats.PER_SECOND and a == [1.9, 2.0, 2.1, 2.0] and len(b) == 12
    assert not stats.run_ratio(short, three, "gbps").has_interval
    assert stats.run_ratio(one, three + failed, "gbps").value == pytest.approx(2.0)
    # netbench's raw per-second counts stand in for per_second_ops in older records
    old = [_run(ops_per_s=10.0, per_second=[10, 10, 10], seconds=3.0)]
    assert stats.second_values(old, "ops_per_s") == [10.0, 10.0, 10.0]
    # a figure measured once per run has no per-second series: n/a with one run
    assert not stats.run_ratio([_run(p99_us=5.0)], [_run(p99_us=4.0)], "p99_us").has_interval


def test_geometric_mean_of_ratios():
    pairs = [([2.0] * 3, [1.0] * 3, stats.RUNS, 2.0), ([8.0] * 4, [1.0] * 4, stats.PER_SECOND, 8.0)]
    g = stats.geomean_ratio(pairs)
    assert (g.value, g.lo, g.hi, g.basis) == (pytest.approx(4.0), pytest.approx(4.0),
                                              pytest.approx(4.0), stats.PER_SECOND)
    assert not stats.geomean_ratio(pairs + [([1.0], [1.0], stats.RUNS, 1.0)]).has_interval


# the report, tcp_bench and udp_bench on fixed figures ------------------------------------------------

def _point(backend, kind, runs, metric="gbps", test="tcp"):
    return {"backend": backend, "kind": kind, "workers": 1 if kind == "ringnet" else None,
            "test": test, "mtu": 1500, "direction": "ns->host", "streams": 1, "status": "ok",
            "reason": None, "runs": runs,
            "summary": {metric: stats.summary(r[metric] for r in runs)}}


def test_report_ratios_carry_their_interval():
    mine = _point("ringnet-w1", "ringnet", [_run(gbps=g, cpu_s_per_gb=0.5) for g in (4.0, 4.2, 3.8)])
    mine["summary"]["cpu_s_per_gb"] = stats.summary([0.5] * 3)
    pasta = _point("pasta", "pasta", [_run(gbps=2.0, per_second_gbps=[2.0, 2.0, 2.0])])
    loop = _point("loopback", "loopback", [_run(gbps=g) for g in (8.0, 8.0, 8.0)])
    rows = report.ratios([mine, pasta, loop])
    gbps = next(r for r in rows if r["metric"] == "gbps")
    assert gbps["vs"]["loopback"]["ci_basis"] == stats.RUNS
    assert gbps["vs"]["loopback"]["ci"] == [pytest.approx(3.8 / 8), pytest.approx(4.2 / 8)]
    # pasta ran once: ringnet's runs have no seconds, so no interval, and it says why
    assert gbps["vs"]["pasta"]["ratio"] == pytest.approx(2.0) and gbps["vs"]["pasta"]["ci"] is None
    assert "fewer than" in gbps["vs"]["pasta"]["ci_why"]
    assert gbps["vs"]["slirp4netns"]["status"] == "absent" and gbps["vs"]["slirp4netns"]["ci"] is None
    assert report.ratio_text(gbps["vs"]["loopback"]) == "0.50x [0.47, 0.53]"
    assert report.ratio_text(gbps["vs"]["pasta"]) == "2.00x [n/a]"
    assert report.ratio_text(gbps["vs"]["slirp4netns"]) == "—"
    assert report.ratio_text({"ratio": 1.5, "ci": [1.2, 1.8], "ci_basis": stats.PER_SECOND}) == \
        "1.50x [1.20, 1.80]" + report.PER_SECOND_MARK


def test_tcp_target_rows_say_when_the_interval_straddles():
    mine = _point("ringnet-w1", "ringnet", [_run(gbps=g) for g in (2.0, 2.6, 3.0)])
    peer = _point("slirp4netns", "slirp4netns", [_run(gbps=1.0)] * 3)
    row = tcp_bench._ratio_row("x", mine, peer, "gbps", 2.5, "slirp4netns")
    assert row["ok"] is True and row["ratio"] == pytest.approx(2.6)
    assert "straddles" in row["why"] and row["got"].startswith("2.60x [")
    assert tcp_bench._ratio_row("x", mine, None, "gbps", 2.5, "slirp4netns")["ok"] is None


def test_ab_summary_gives_ratios_to_the_chosen_base(tmp_path):
    from perf import ab
    runs = {"x": [{"ok": True, "round": r, "ops_per_s": 2000.0 + r, "p50_us": 50, "p99_us": 90,
                   "max_us": 300, "slow": 0} for r in range(4)],
            "pasta": [{"ok": True, "round": r, "ops_per_s": 1000.0 + r, "p50_us": 100,
                       "p99_us": 200, "max_us": 400, "slow": 1} for r in range(4)]}
    assert ab._based(["x", "pasta"], None) == ["x", "pasta"]
    assert ab._based(["x", "pasta"], "pasta") == ["pasta", "x"]
    text = ab.summarize({"rr": runs}, ab._based(["x", "pasta"], "pasta"))
    assert "ratio to pasta" in text
    row = next(line for line in text.splitlines() if line.startswith("| x |"))
    assert row.split("|")[3].strip().startswith("1.99")  # 2001.5 / 1001.5, over runs
    saved = tmp_path / "ab.json"
    saved.write_text(json.dumps({"args": {}, "results": {"rr": runs}, "summary": ""}))
    r = subprocess.run([sys.executable, "-m", "perf.ab", "--summarize", str(saved), "--base", "nope"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--base: 'nope' is not one of x, pasta" in r.stderr


def test_udp_bench_verdicts():
    good = {"ok": True, "gbps": 0.99, "loss_percent": 0.05}
    lossy = {"ok": True, "gbps": 0.95, "loss_percent": 2.0}
    slow = {"ok": True, "gbps": 0.40, "loss_percent": 0.0}
    failed = {"ok": False, "error": "iperf3: unable to connect"}
    assert udp_bench.verdict([lossy, good], lossy)[0] == "met"
    assert udp_bench.verdict([lossy, lossy], good) == ("MISSED", "plain loopback meets the target here")
    v, detail = udp_bench.verdict([lossy], {"ok": True, "gbps": 0.9, "loss_percent": 1.8})
    assert v == "not measurable here" and detail.endswith(": ok")
    assert udp_bench.verdict([slow], {"ok": True, "gbps": 0.85, "loss_percent": 0.0})[1].endswith("MISS")
    assert udp_bench.verdict([failed], good)[0] == "MISSED"
    assert udp_bench.verdict([failed], lossy) == ("failed", "iperf3: unable to connect")


# python -m perf.sweep --quick ------------------------------------------------------------------------


def path_without(tool: str, bindir: str) -> str:
    """A PATH of one directory holding links to everything on PATH except ``tool``."""
    os.makedirs(bindir, exist_ok=True)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = os.path.join(bindir, name)
            if name != tool and not os.path.lexists(link):
                os.symlink(os.path.join(d, name), link)
    return bindir


def expected_uid() -> int:
    """The uid the sweep runs as by default: ours, or as root the unprivileged test user."""
    if os.geteuid() != 0:
        return os.geteuid()
    try:
        return pwd.getpwnam(TEST_USER).pw_uid
    except KeyError:
        pytest.skip(f"no user {TEST_USER!r}: scripts/setup-test-env.sh creates it")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the harness once: --quick, every backend, slirp4netns hidden from PATH."""
    expected_uid()
    tmp = tmp_path_factory.mktemp("sweep")
    out = str(tmp / "out")
    env = dict(os.environ)
    # the PATH directory must be one the unprivileged user the sweep runs as can read
    bindir = tempfile.mkdtemp(prefix="ringnet-perf-bin-")
    os.chmod(bindir, 0o755)
    env["PATH"] = path_without(HIDDEN, bindir)
    # the installed ringnet first (CI), then the checkout for the perf package
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT, REPO])
    try:
        r = subprocess.run([sys.executable, "-m", "perf.sweep", "--quick", "--no-progress", "--out", out],
                           cwd=str(tmp), env=env, capture_output=True, text=True, timeout=400)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    assert r.returncode == 0, f"sweep failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    with open(os.path.join(out, "sweep.json")) as f:
        doc = json.load(f)
    doc["_out"], doc["_stdout"], doc["_stderr"] = out, r.stdout, r.stderr
    return doc


def _echo_server(kind: int) -> tuple[socket.socket, threading.Thread]:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    if kind == socket.SOCK_STREAM:
        s.listen(1)

    def serve() -> None:
        try:
            if kind == socket.SOCK_STREAM:
                c, _ = s.accept()
                with c:
                    c.sendall(c.recv(16))
            else:
                data, peer = s.recvfrom(16)
                s.sendto(data, peer)
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return s, t


_PROBE = """
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.settimeout(3)
s.connect(("10.0.2.2", int(sys.argv[2])))
s.send(b"ping")
sys.exit(0 if s.recv(16) == b"ping" else 1)
"""


@pytest.fixture(scope="module")
def ringnet_forwards(tmp_path_factory):
    """What ringnet forwards to host loopback right now: {"tcp": bool, "udp": bool}, found
    independently of the harness (an echo through 10.0.2.2 from inside a Network)."""
    got = {}
    # Start it away from the checkout: ringnet's children run "python -m", which puts
    # their working directory first on sys.path, where a checkout without the in-place
    # build would shadow the installed ringnet.
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("probe"))
    try:
        with ringnet.Network(mtu=1500, workers=1, allow_host_loopback=True) as net:
            for proto, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
                srv, t = _echo_server(kind)
                with srv:
                    r = net.run([sys.executable, "-c", _PROBE, proto, str(srv.getsockname()[1])],
                                capture_output=True, timeout=20)
                    got[proto] = r.returncode == 0
                    t.join(10)
    finally:
        os.chdir(old)
    return got


def points(doc, **match):
    return [p for p in doc["points"] if all(p[k] == v for k, v in match.items())]


@sweep_test
def test_json_matches_the_documented_schema(sweep):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(REPO, "perf", "schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = {k: v for k, v in sweep.items() if not k.startswith("_")}
    errors = [f"{e.json_path}: {e.message[:200]}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert errors == []


@sweep_test
def test_quick_mode_plan(sweep):
    cfg = sweep["config"]
    assert cfg["quick"] and cfg["mtus"] == [1500, 65520] and cfg["repeat"] == 1
    names = {b["name"] for b in sweep["backends"]}
    assert {"loopback", "slirp4netns", "pasta", "ringnet-w1"} <= names
    # every backend has every point: tcp/udp in both directions, rr/crr from inside, 1 and 4 streams
    for b in names:
        for mtu in cfg["mtus"]:
            got = {(p["test"], p["direction"], p["streams"]) for p in points(sweep, backend=b, mtu=mtu)}
            assert len(got) == 2 * 2 * 2 + 2 * 2, (b, mtu, got)


@sweep_test
def test_missing_backend_is_skipped_with_reason(sweep):
    entry = next(b for b in sweep["backends"] if b["name"] == HIDDEN)
    assert entry["status"] == "skipped" and HIDDEN in entry["reason"]
    pts = points(sweep, backend=HIDDEN)
    assert pts and all(p["status"] == "skipped" and HIDDEN in p["reason"] for p in pts)
    assert f"skipped {HIDDEN}" in sweep["_stdout"]


@sweep_test
def test_loopback_ceiling_has_figures(sweep):
    for p in points(sweep, backend="loopback"):
        assert p["status"] == "ok", p["reason"]
        main = "gbps" if p["test"] in ("tcp", "udp") else "ops_per_s"
        assert p["summary"][main]["median"] > 0
    tcp = points(sweep, backend="loopback", test="tcp")
    assert all(p["summary"]["per_second_gbps"]["max"] > 0 for p in tcp)


@sweep_test
def test_every_point_without_figures_says_why(sweep):
    for p in sweep["points"]:
        if p["status"] != "ok":
            assert p["reason"] and len(p["reason"]) > 10, p
        for r in p["runs"]:
            assert r["ok"] or r["error"], r


@sweep_test
def test_ringnet_tcp_rows(sweep, ringnet_forwards):
    pts = [p for p in points(sweep, kind="ringnet") if p["test"] in ("tcp", *ROUND_TRIP)]
    assert pts
    for p in pts:
        if ringnet_forwards["tcp"]:
            # TCP works: every TCP row must carry figures, stack CPU included
            assert p["status"] == "ok", f"ringnet TCP works but {p['test']} mtu {p['mtu']}: {p['reason']}"
            main = "gbps" if p["test"] == "tcp" else "ops_per_s"
            assert p["summary"][main]["median"] > 0
            assert all(r["stack_cpu_s"] is not None and r["stack_pids"] for r in p["runs"])
        else:
            assert p["status"] == "failed"
            assert "TCP" in p["reason"] and "10.0.2.2" in p["reason"], p["reason"]


@sweep_test
def test_ringnet_udp_rows(sweep, ringnet_forwards):
    pts = points(sweep, kind="ringnet", test="udp")
    assert pts
    works = ringnet_forwards["tcp"] and ringnet_forwards["udp"]   # iperf3's control is TCP
    for p in pts:
        if works:
            assert p["status"] == "ok", f"ringnet UDP works but mtu {p['mtu']}: {p['reason']}"
            assert p["summary"]["gbps"]["median"] > 0
        else:
            assert p["status"] == "failed"
            assert ("TCP" in p["reason"] or "UDP" in p["reason"]), p["reason"]


@sweep_test
def test_ratios_for_every_ringnet_point(sweep):
    ringnet_points = points(sweep, kind="ringnet")
    keys = {(r["backend"], r["test"], r["mtu"], r["direction"], r["streams"]) for r in sweep["ratios"]}
    assert keys == {(p["backend"], p["test"], p["mtu"], p["direction"], p["streams"])
                    for p in ringnet_points}
    for r in sweep["ratios"]:
        assert set(r["vs"]) == {"slirp4netns", "pasta", "loopback"}
        assert r["vs"]["slirp4netns"]["ratio"] is None           # hidden: no figures
        for peer in r["vs"].values():
            if r["value"] is not None and peer["value"]:
                assert peer["ratio"] == pytest.approx(r["value"] / peer["value"])
            # one run of one second (half a second for rr/crr) per point: too few samples
            # for an interval, and none is made up
            assert peer["ci"] is None and peer["ci_why"], peer


@sweep_test
def test_ratios_print_their_interval(sweep):
    shown = [r for r in sweep["ratios"] if any(p["ratio"] is not None for p in r["vs"].values())]
    if not shown:
        pytest.skip("ringnet has no figures to compare yet")
    assert "[n/a]" in sweep["_stdout"] and "bootstrap 95% interval" in sweep["_stdout"]
    with open(os.path.join(sweep["_out"], "sweep.md")) as f:
        md = f.read()
    assert "x [n/a]" in md and "bootstrap 95% interval" in md


@sweep_test
def test_runs_rootless_by_default(sweep):
    uid = expected_uid()
    assert sweep["environment"]["euid"] == uid
    assert sweep["environment"]["user"].startswith(f"uid {uid} ")
    assert f"perf.sweep: running as uid {uid} " in sweep["_stdout"]
    # the command recorded is the one typed, not the rerun's private output directory
    assert sweep["command"][-1] == sweep["_out"]
    if os.geteuid() == 0:
        assert "rootless" in sweep["_stderr"]


@sweep_test
def test_as_root_keeps_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("started as a user: there is no root to keep")
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, REPO]))
    r = subprocess.run([sys.executable, "-m", "perf.sweep", "--as-root", "--tests", "rr",
                        "--mtus", "1500", "--streams", "1", "--backends", "loopback", "--repeat", "1",
                        "--rr-seconds", "0.2", "--no-ring", "--no-plots", "--no-progress",
                        "--out", out], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with open(os.path.join(out, "sweep.json")) as f:
        doc = json.load(f)
    assert doc["environment"]["euid"] == 0 and "perf.sweep: running as uid 0 " in r.stdout


def test_sweep_without_an_importable_ringnet_stops_at_once(tmp_path):
    """A peer that is missing is skipped, but ringnet is what the sweep measures: a
    ``ringnet`` package without its built core first on sys.path (a source tree that
    shadows the installed one) stops the sweep before any run, saying what to do."""
    fake = tmp_path / "fake" / "ringnet"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), REPO]))
    r = subprocess.run([sys.executable, "-m", "perf.sweep", "--as-root", "--tests", "rr",
                        "--mtus", "1500", "--streams", "1", "--backends", "loopback,ringnet",
                        "--max-workers", "1", "--repeat", "1", "--no-ring", "--no-plots",
                        "--no-progress", "--out", str(tmp_path / "out")],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ringnet-w1: ringnet cannot be imported" in r.stderr
    assert not (tmp_path / "out" / "sweep.json").exists()


@sweep_test
def test_csv_markdown_and_plots(sweep):
    out = sweep["_out"]
    with open(os.path.join(out, "sweep.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {(r["backend"], r["test"], r["mtu"], r["direction"], r["streams"]) for r in rows} == \
        {(p["backend"], p["test"], str(p["mtu"]), p["direction"], str(p["streams"])) for p in sweep["points"]}
    with open(os.path.join(out, "sweep.md")) as f:
        md = f.read()
    assert "## ringnet ÷ peers" in md and f"**{HIDDEN} skipped**" in md
    pytest.importorskip("matplotlib")
    for png in ("tcp_throughput.png", "udp_throughput.png", "cpu_per_gb.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# the latency and churn families: parsing and aggregation on fixed inputs ---------------------------

_NETBENCH_OUT = json.dumps({
    "ok": True, "ops": 1000, "seconds": 0.5, "ops_per_s": 2000.0, "errors": 1,
    "error": "connect: Connection refused", "samples": 1000, "p50_us": 80.0, "p99_us": 400.0,
    "p999_us": 2500.0, "max_us": 13300.0, "slow_threshold_us": 2000, "slow": 2,
    "t0_mono_s": 2499.25, "t0_unix_s": 1796217640.5,
    "max_connect_us": 13200.0, "max_rtt_us": 2400.0, "max_close_us": 30.0,
    "outliers": [{"t_ms": 12.5, "us": 13300.0, "connect_us": 13200.0, "rtt_us": 90.0,
                  "close_us": 10.0, "stream": 0},
                 {"t_ms": 300.25, "us": 2500.0, "connect_us": 60.0, "rtt_us": 2400.0,
                  "close_us": 40.0, "stream": 1}],
    "per_second": [1000]})


def test_netbench_output_is_parsed():
    run = {"ok": False, "error": None, "stack_cpu_s": 0.25}
    measure.parse_netbench(_NETBENCH_OUT, "", 0, "crr", run)
    assert run["ok"] and run["error"] is None
    assert (run["ops"], run["slow"], run["max_us"], run["max_connect_us"]) == (1000, 2, 13300.0, 13200.0)
    assert run["outliers"][0]["connect_us"] == 13200.0 and len(run["outliers"]) == 2
    assert (run["t0_mono_s"], run["t0_unix_s"]) == (2499.25, 1796217640.5)
    assert run["first_error"] == "connect: Connection refused"
    assert run["per_second_ops"] == [2000.0]         # 1000 in half a second
    assert run["cpu_us_per_op"] == pytest.approx(250.0)
    bad = {"ok": False, "error": None, "counters": {"drop_no_flow": 3}}
    measure.parse_netbench(json.dumps({"ok": False, "ops": 0, "errors": 101,
                                       "error": "connect: no answer within 2 s"}), "", 1, "crr_rst", bad)
    assert not bad["ok"] and bad["error"] == ("netbench crr_rst: connect: no answer within 2 s "
                                              "(ringnet counters: drop_no_flow +3)")
    garbled = {"ok": False, "error": None}
    measure.parse_netbench("", "Segmentation fault", -11, "rr", garbled)
    assert not garbled["ok"] and garbled["error"] == "netbench rr: Segmentation fault"


_WRK_OUT = """Running 1s test @ http://10.0.2.2:40000/1k.html
  1 threads and 4 connections
Requests/sec:  12000.00
WRKJSON {"requests": 12000, "duration_us": 1000000, "bytes": 15000000, "connect_errors": 0, \
"read_errors": 2, "write_errors": 0, "status_errors": 1, "timeouts": 3, "p50_us": 250, \
"p90_us": 400, "p99_us": 900, "p999_us": 3000, "max_us": 14000, "mean_us": 280.5}
"""


def test_wrk_output_is_parsed():
    run = {"ok": False, "error": None, "stack_cpu_s": 1.2}
    measure.parse_wrk(_WRK_OUT, "", 0, "http", run)
    assert run["ok"] and run["ops"] == 12000 and run["ops_per_s"] == pytest.approx(12000.0)
    assert run["errors"] == 6 and run["wrk_errors"]["timeouts"] == 3
    assert (run["p50_us"], run["p99_us"], run["max_us"]) == (250.0, 900.0, 14000.0)
    assert run["cpu_us_per_op"] == pytest.approx(100.0)
    # wrk gives its done() hook percentiles even when nothing answered: no figures then
    none = {"ok": False, "error": None}
    measure.parse_wrk(_WRK_OUT.replace('"requests": 12000', '"requests": 0')
                      .replace('"connect_errors": 0', '"connect_errors": 4'), "", 0, "http_close", none)
    assert not none["ok"] and none["p99_us"] is None
    assert none["error"].startswith("wrk http_close: no request completed (connect_errors 4")
    lost = {"ok": False, "error": None}
    measure.parse_wrk("", "unable to connect to 10.0.2.2:1 Connection refused", 1, "http", lost)
    assert not lost["ok"] and "Connection refused" in lost["error"]


def test_http_run_configuration_stays_on_loopback(tmp_path):
    d = measure.http_prepare(str(tmp_path), 40123)
    with open(os.path.join(d, "nginx.conf")) as f:
        conf = f.read()
    listens = [ln.strip() for ln in conf.splitlines() if ln.strip().startswith("listen")]
    assert listens == ["listen 127.0.0.1:40123 backlog=4096;"]
    assert "daemon off;" in conf and "access_log off;" in conf and f"root {d}/www;" in conf
    assert os.path.getsize(os.path.join(d, "www", measure.HTTP_FILE)) == measure.HTTP_FILE_BYTES
    argv = measure.wrk_argv("wrk", "http://10.0.2.2:40123/1k.html", 4, 0.4, True, "x.lua")
    assert argv[argv.index("-d") + 1] == "1s" and argv[argv.index("-c") + 1] == "4"
    assert argv[argv.index("-H") + 1] == "Connection: close" and argv[-1].startswith("http://10.0.2.2:")
    assert "-H" not in measure.wrk_argv("wrk", "u", 1, 2.6, False, "x.lua")
    assert "3s" in measure.wrk_argv("wrk", "u", 1, 2.6, False, "x.lua")


def test_families_expand_to_their_tests():
    assert sweep_mod.expand_tests(["latency", "churn"]) == ["rr", "crr", "crr_rst", "http", "http_close"]
    assert sweep_mod.expand_tests(["rr", "latency", "tcp"]) == ["rr", "crr", "crr_rst", "tcp"]
    a = sweep_mod.parse_args(["--tests", "churn", "--mtus", "1500"])
    assert a.tests == ["http", "http_close"]
    assert [s["direction"] for s in sweep_mod.specs(a)] == ["ns->host"] * 4
    with pytest.raises(SystemExit):
        sweep_mod.parse_args(["--tests", "latency,bogus"])


def _lat_run(repeat, p50, p99, mx, slow, ops, outliers):
    return _run(repeat=repeat, p50_us=p50, p99_us=p99, max_us=mx, slow=slow, ops=ops,
                slow_threshold_us=2000, outliers=outliers)


def test_latency_rows_aggregate_over_runs():
    o = [{"t_ms": 10.0, "us": 15700.0, "connect_us": 15600.0, "rtt_us": 90.0, "close_us": 10.0,
          "stream": 0}]
    o2 = [{"t_ms": 812.25, "us": 3000.0, "connect_us": 50.0, "rtt_us": 2900.0, "close_us": 50.0,
           "stream": 1}]
    runs = [_lat_run(0, 70.0, 120.0, 15700.0, 1, 1000, o), _lat_run(1, 80.0, 130.0, 900.0, 0, 1100, []),
            _lat_run(2, 90.0, 500.0, 3000.0, 1, 900, o2),
            {"ok": False, "error": "netbench crr: x", "repeat": 3, "max_us": 99999.0, "slow": 50}]
    p = {"backend": "ringnet-w1", "kind": "ringnet", "workers": 1, "test": "crr", "mtu": 1500,
         "direction": "ns->host", "streams": 1, "status": "partial", "reason": "netbench crr: x",
         "runs": runs, "summary": {}}
    r = latency.row(p)
    # medians of the successful runs; the worst max; sums; the failed run counts for nothing
    assert (r["p50_us"], r["p99_us"], r["max_us"]) == (80.0, 130.0, 15700.0)
    assert (r["slow"], r["ops"], r["runs"]) == (2, 3000, 3)
    assert [x["us"] for x in r["outliers"]] == [15700.0, 3000.0] and r["outliers"][1]["repeat"] == 2
    assert latency.cell(r) == "80.0 / 130 / 15,700; 2 of 3,000 over 2 ms"
    assert latency.outlier_text(r["outliers"][0]) == \
        "15.70 ms at 10.0 ms (run 1, stream 0): connect 15.60, rtt 0.09, close 0.01"
    # wrk's rows: no count over 2 ms
    h = dict(p, test="http", status="ok", reason=None,
             runs=[_run(repeat=0, p50_us=60.0, p99_us=900.0, max_us=4000.0, ops=5000)])
    assert latency.cell(latency.row(h)) == "60.0 / 900 / 4,000"
    doc = {"points": [p, h], "backends": [{"name": "ringnet-w1"}, {"name": "pasta"}]}
    md = "\n".join(latency.markdown(doc))
    assert "| 1500 | 1 | 80.0 / 130 / 15,700; 2 of 3,000 over 2 ms | — |" in md
    assert "- ringnet-w1 crr mtu 1500 P1: 15.70 ms at 10.0 ms" in md
    assert latency.markdown({"points": [], "backends": []}) == []


# the two families through ringnet, tiny ------------------------------------------------------------

def _family_run(tmp_path, family, extra):
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, REPO]))
    r = subprocess.run([sys.executable, "-m", "perf.sweep", "--tests", family, "--backends", "ringnet",
                        "--max-workers", "1", "--mtus", "1500", "--streams", "1", "--repeat", "1",
                        "--no-ring", "--no-plots", "--no-progress", *extra, "--out", out],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with open(os.path.join(out, "sweep.json")) as f:
        doc = json.load(f)
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(REPO, "perf", "schema.json")) as f:
        schema = json.load(f)
    assert [e.message[:200] for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)] == []
    with open(os.path.join(out, "sweep.md")) as f:
        doc["_md"] = f.read()
    doc["_stdout"] = r.stdout
    return doc


def _check_ringnet_point(p, ringnet_forwards):
    if not ringnet_forwards["tcp"]:
        assert p["status"] == "failed" and "TCP" in p["reason"], p
        return None
    assert p["status"] == "ok", p["reason"]
    (run,) = p["runs"]
    assert run["ok"] and run["ops"] > 0 and run["stack_pids"] and run["stack_cpu_s"] is not None
    assert 0 < run["p50_us"] <= run["p99_us"] <= run["max_us"]
    assert p["summary"]["ops_per_s"]["median"] > 0 and "max_us" in p["summary"]
    return run


@needs_userns
def test_latency_family_through_ringnet(tmp_path, ringnet_forwards):
    expected_uid()
    doc = _family_run(tmp_path, "latency", ["--rr-seconds", "0.3", "--max-conns", "300"])
    assert doc["config"]["tests"] == ["rr", "crr", "crr_rst"]
    assert sorted(p["test"] for p in doc["points"]) == ["crr", "crr_rst", "rr"]
    for p in doc["points"]:
        run = _check_ringnet_point(p, ringnet_forwards)
        if run is None:
            continue
        assert run["ops"] <= 300 and run["slow_threshold_us"] == 2000 and run["t0_mono_s"] > 0
        assert 0 <= run["slow"] <= run["ops"]
        # one client: every operation over 2 ms is listed, up to 32, slowest first
        assert len(run["outliers"]) == min(run["slow"], 32)
        assert [o["us"] for o in run["outliers"]] == sorted((o["us"] for o in run["outliers"]),
                                                            reverse=True)
        for o in run["outliers"]:
            assert o["us"] > 2000 and o["stream"] == 0 and 0 <= o["t_ms"] <= run["seconds"] * 1000
            assert o["connect_us"] + o["rtt_us"] + o["close_us"] == pytest.approx(o["us"], abs=0.01)
            if p["test"] == "rr":
                assert o["connect_us"] < 1.0       # rr's connection is made before timing
        assert run["max_us"] >= max([o["us"] for o in run["outliers"]], default=0)
        assert max(run["max_connect_us"], run["max_rtt_us"], run["max_close_us"]) <= run["max_us"] + 0.01
    metrics = {(r["test"], r["metric"]) for r in doc["ratios"]}
    assert metrics == {("rr", "ops_per_s"), ("rr", "p50_us"), ("rr", "p99_us"), ("crr", "ops_per_s"),
                       ("crr", "p99_us"), ("crr_rst", "ops_per_s"), ("crr_rst", "p99_us")}
    assert "## Latency: p50 / p99 / max" in doc["_md"] and "### connect + request + close with RST" in doc["_md"]
    assert "latency p50 / p99 / max" in doc["_stdout"]


@needs_userns
def test_churn_family_through_ringnet(tmp_path, ringnet_forwards):
    expected_uid()
    if measure.http_tools()[2]:
        pytest.skip(measure.http_tools()[2])
    doc = _family_run(tmp_path, "churn", ["--rr-seconds", "1"])
    assert doc["config"]["tests"] == ["http", "http_close"]
    assert doc["helper"]["http"] and doc["environment"]["versions"]["nginx"]
    assert doc["environment"]["versions"]["wrk"]
    assert sorted(p["test"] for p in doc["points"]) == ["http", "http_close"]
    for p in doc["points"]:
        run = _check_ringnet_point(p, ringnet_forwards)
        if run is None:
            continue
        # every request fetched the whole file (headers on top)
        assert run["bytes"] >= run["ops"] * measure.HTTP_FILE_BYTES
        assert run["errors"] == sum(run["wrk_errors"].values())
        assert "slow" not in p["summary"]
    assert {(r["test"], r["metric"]) for r in doc["ratios"]} == {
        ("http", "ops_per_s"), ("http", "p99_us"), ("http_close", "ops_per_s"), ("http_close", "p99_us")}
    assert "### HTTP keep-alive (wrk, nginx)" in doc["_md"]
