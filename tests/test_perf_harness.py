"""The perf harness (python -m perf.sweep) in --quick mode: JSON of the documented schema
(perf/schema.json), ringnet figures above zero for what ringnet forwards today (found
by a probe of its own, so these tests tighten by themselves as TCP and UDP land),
explicit reasons where it fails, and a skip recorded for a backend hidden from PATH."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

import ringnet
from conftest import needs_userns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ringnet.__file__)))
HIDDEN = "slirp4netns"
ROUND_TRIP = ("rr", "crr")

pytestmark = [needs_userns,
              pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")]


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


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the harness once: --quick, every backend, slirp4netns hidden from PATH."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = str(tmp / "out")
    env = dict(os.environ)
    env["PATH"] = path_without(HIDDEN, str(tmp / "bin"))
    # the installed ringnet first (CI), then the checkout for the perf package
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT, REPO])
    r = subprocess.run([sys.executable, "-m", "perf.sweep", "--quick", "--no-progress", "--out", out],
                       cwd=str(tmp), env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"sweep failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    with open(os.path.join(out, "sweep.json")) as f:
        doc = json.load(f)
    doc["_out"], doc["_stdout"] = out, r.stdout
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


def test_json_matches_the_documented_schema(sweep):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(REPO, "perf", "schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = {k: v for k, v in sweep.items() if not k.startswith("_")}
    errors = [f"{e.json_path}: {e.message[:200]}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert errors == []


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


def test_missing_backend_is_skipped_with_reason(sweep):
    entry = next(b for b in sweep["backends"] if b["name"] == HIDDEN)
    assert entry["status"] == "skipped" and HIDDEN in entry["reason"]
    pts = points(sweep, backend=HIDDEN)
    assert pts and all(p["status"] == "skipped" and HIDDEN in p["reason"] for p in pts)
    assert f"skipped {HIDDEN}" in sweep["_stdout"]


def test_loopback_ceiling_has_figures(sweep):
    for p in points(sweep, backend="loopback"):
        assert p["status"] == "ok", p["reason"]
        main = "gbps" if p["test"] in ("tcp", "udp") else "ops_per_s"
        assert p["summary"][main]["median"] > 0
    tcp = points(sweep, backend="loopback", test="tcp")
    assert all(p["summary"]["per_second_gbps"]["max"] > 0 for p in tcp)


def test_every_point_without_figures_says_why(sweep):
    for p in sweep["points"]:
        if p["status"] != "ok":
            assert p["reason"] and len(p["reason"]) > 10, p
        for r in p["runs"]:
            assert r["ok"] or r["error"], r


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
