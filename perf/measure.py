"""One measurement run in an Env: iperf3 TCP and UDP, 1-byte ping-pong, connection rate.

Each function returns a run record (a dict, stored as is in the sweep's JSON):
``ok``, ``error`` (None or the reason), the figures, ``stack_cpu_s`` (CPU seconds
the stack's own processes used during the run, from psutil) and, for ringnet,
``counters`` (the counters that changed). Servers listen on 127.0.0.1 only; each
client runs inside the namespace and reaches them through the Env's gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Optional

import psutil

from . import stats
from .backends import HOST, Env

_NETBENCH_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netbench.c")
_SLACK = 20.0          # seconds a client may run past its nominal duration before it is killed


def build_netbench(workdir: str) -> tuple[Optional[str], str]:
    """Compile netbench.c with the system compiler: (path or None, compiler or reason)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) on PATH: the latency and connection-rate helper is C"
    out = os.path.join(workdir, "netbench")
    r = subprocess.run([cc, "-O2", "-std=gnu11", "-pthread", "-o", out, _NETBENCH_SRC],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, f"{cc} failed to build perf/netbench.c: {r.stderr.strip()[-300:]}"
    os.chmod(out, 0o755)
    return out, cc


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:])
    except OSError:
        return False


def cpu_seconds(pids: list[int]) -> Optional[float]:
    """User + system CPU seconds of ``pids`` so far (None when there are none)."""
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class _Meter:
    """CPU time of the stack and its counters across one run."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.pids = env.stack_pids()
        self.cpu0 = cpu_seconds(self.pids)
        self.c0 = env.counters()
        self.t0 = time.monotonic()

    def finish(self, run: dict[str, Any]) -> dict[str, Any]:
        run["wall_s"] = round(time.monotonic() - self.t0, 3)
        cpu1 = cpu_seconds(self.pids)
        run["stack_pids"] = self.pids
        run["stack_cpu_s"] = None if cpu1 is None or self.cpu0 is None else round(cpu1 - self.cpu0, 4)
        if self.c0 is not None:
            c1 = self.env.counters() or {}
            run["counters"] = {k: v - self.c0.get(k, 0) for k, v in c1.items() if v != self.c0.get(k, 0)}
        return run


def counter_hint(counters: Optional[dict[str, int]]) -> str:
    """' (ringnet counters: drop_x +3, ...)' naming drops and refusals, or ''."""
    if not counters:
        return ""
    bad = [f"{k} +{v}" for k, v in sorted(counters.items())
           if v > 0 and (k.startswith("drop_") or "refused" in k)]
    return f" (ringnet counters: {', '.join(bad)})" if bad else ""


def _run_client(env: Env, argv: list[str], timeout: float) -> tuple[int, str, str]:
    p = env.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return -9, out.decode(errors="replace"), f"killed after {timeout:.0f} s"
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class _Server:
    """A server on host loopback for the duration of one run."""

    def __init__(self, argv: list[str], port: Optional[int] = None, ready_line: bool = False) -> None:
        self.port = port
        # only a ready line is read from stdout; anything else would fill the pipe
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        if ready_line:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            if not line.startswith("ready "):
                self.close()
                raise RuntimeError(f"server {argv[0]} did not start: {line.strip()}")
            self.port = int(line.split()[1])
            return
        assert port is not None
        while not _listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.close()
                raise RuntimeError(f"server {os.path.basename(argv[0])} did not listen on "
                                   f"{HOST}:{port}: {err.strip()[-200:]}")
            time.sleep(0.01)

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace") if err else ""

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# iperf3 --------------------------------------------------------------------------------

def iperf3_run(env: Env, test: str, direction: str, streams: int, seconds: float,
               udp_rate: str = "1G", udp_size: int = 1400) -> dict[str, Any]:
    """One iperf3 run (``test`` "tcp" or "udp") with the client inside the namespace."""
    port = free_port()
    run: dict[str, Any] = {"ok": False, "error": None}
    argv = ["iperf3", "-c", env.gateway, "-p", str(port), "-t", f"{seconds:g}", "-P", str(streams),
            "-J", "--connect-timeout", "3000", "--get-server-output"]
    if direction == "host->ns":
        argv.append("-R")
    if test == "udp":
        # the offered rate is the total over all streams (iperf3's -b is per stream)
        argv += ["-u", "-b", _per_stream_rate(udp_rate, streams), "-l", str(udp_size)]
    try:
        # -J: the server's own intervals come back as JSON (--get-server-output), the
        # receiving side's per-second figures for ns->host
        server = _Server(["iperf3", "-s", "-1", "-J", "-B", HOST, "-p", str(port)], port=port)
    except RuntimeError as e:
        run["error"] = str(e)
        return run
    with server:
        meter = _Meter(env)
        rc, out, err = _run_client(env, argv, seconds + _SLACK)
        meter.finish(run)
    try:
        data = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        data = {}
    if not data or data.get("error"):
        why = data.get("error") or err.strip()[-300:] or f"iperf3 exited with status {rc}"
        run["error"] = f"iperf3: {why}{counter_hint(run.get('counters'))}"
        return run
    _parse_iperf3(data, test, direction, run)
    run["ok"] = run.get("gbps", 0) > 0
    if not run["ok"]:
        run["error"] = f"iperf3 moved no data{counter_hint(run.get('counters'))}"
    return run


def _per_stream_rate(rate: str, streams: int) -> str:
    units = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    num, unit = rate.rstrip("KMGkmg"), rate[len(rate.rstrip("KMGkmg")):].upper()
    return f"{float(num) * units[unit] / streams:.0f}"


def _parse_iperf3(data: dict[str, Any], test: str, direction: str, run: dict[str, Any]) -> None:
    end = data.get("end", {})
    recv = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    run["bytes"] = int(recv.get("bytes", 0))
    run["gbps"] = recv.get("bits_per_second", 0) / 1e9
    run["seconds"] = recv.get("seconds")
    run["sent_gbps"] = sent.get("bits_per_second", 0) / 1e9
    if test == "tcp":
        run["retransmits"] = sent.get("retransmits")
    else:
        run["loss_percent"] = recv.get("lost_percent")
        run["lost_packets"] = recv.get("lost_packets")
        run["packets"] = recv.get("packets")
        run["jitter_ms"] = recv.get("jitter_ms")
    # per-second figures from the receiving side: the server for ns->host, the client for -R
    # (for UDP the sender's intervals are the offered rate, not what arrived)
    side = data.get("server_output_json") if direction == "ns->host" else data
    intervals = (side or {}).get("intervals") or []
    run["per_second_gbps"] = stats.iperf3_per_second(intervals)
    run["per_second_from"] = "receiver"
    run["iperf3_cpu_percent"] = end.get("cpu_utilization_percent")
    run["iperf3_version"] = data.get("start", {}).get("version")
    gb = run["bytes"] / 1e9
    if run.get("stack_cpu_s") is not None and gb > 0:
        run["cpu_s_per_gb"] = run["stack_cpu_s"] / gb


# ping-pong and connection rate -----------------------------------------------------------

def netbench_run(env: Env, netbench: str, test: str, streams: int, seconds: float,
                 max_conns: int = 200_000) -> dict[str, Any]:
    """``test`` "rr" (1-byte ping-pong) or "crr" (connect, 1 request, close) with STREAMS
    concurrent clients inside the namespace against a C echo server on host loopback."""
    run: dict[str, Any] = {"ok": False, "error": None}
    try:
        server = _Server([netbench, "server", HOST, "0", f"{seconds + 2 * _SLACK:g}"], ready_line=True)
    except RuntimeError as e:
        run["error"] = str(e)
        return run
    with server:
        argv = [netbench, test, env.gateway, str(server.port), f"{seconds:g}", str(streams)]
        if test == "crr":
            argv.append(str(max_conns))
        meter = _Meter(env)
        rc, out, err = _run_client(env, argv, seconds + _SLACK)
        meter.finish(run)
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        run["error"] = f"netbench {test}: {err.strip()[-300:] or f'exit status {rc}'}"
        return run
    run.update({k: data.get(k) for k in ("ops", "seconds", "ops_per_s", "errors", "p50_us", "p99_us",
                                         "max_us", "per_second")})
    if data.get("per_second") and data.get("seconds"):
        run["per_second_ops"] = stats.counts_per_second(data["per_second"], float(data["seconds"]))
    if data.get("error"):
        run["first_error"] = data["error"]
    run["ok"] = bool(data.get("ok")) and (data.get("ops") or 0) > 0
    if not run["ok"]:
        run["error"] = f"netbench {test}: {data.get('error') or 'no round trip'}{counter_hint(run.get('counters'))}"
    elif run.get("stack_cpu_s") is not None:
        run["cpu_us_per_op"] = run["stack_cpu_s"] / run["ops"] * 1e6
    return run


def probe(env: Env, netbench: Optional[str]) -> dict[str, Optional[str]]:
    """Quick checks before a backend's runs: {"tcp": None or why TCP fails, "udp": ...}.

    TCP: one connection and a few 1-byte round trips; UDP: one datagram and its echo.
    Both to a C echo server on host loopback through the gateway.
    """
    if netbench is None:
        return {"tcp": None, "udp": None}
    res: dict[str, Optional[str]] = {}
    c0 = env.counters()
    with _Server([netbench, "server", HOST, "0", "60"], ready_line=True) as server:
        # no port in the reason: points of one backend share it, whatever port each probe had
        target = f"{env.gateway} (host {HOST})"
        rc, out, err = _run_client(env, [netbench, "rr", env.gateway, str(server.port), "0.2", "1"], 15)
        res["tcp"] = None if rc == 0 else f"TCP to {target} failed: {_why(out, err, rc)}"
        rc, out, err = _run_client(env, [netbench, "udp", env.gateway, str(server.port), "2000"], 15)
        res["udp"] = None if rc == 0 else f"UDP to {target} failed: {_why(out, err, rc)}"
    c1 = env.counters()
    if c0 is not None and c1 is not None:
        hint = counter_hint({k: v - c0.get(k, 0) for k, v in c1.items()})
        res = {k: (v + hint if v else v) for k, v in res.items()}
    return res


def _why(out: str, err: str, rc: int) -> str:
    try:
        return str(json.loads(out).get("error") or f"exit status {rc}")
    except (json.JSONDecodeError, AttributeError):
        return err.strip()[-200:] or f"exit status {rc}"


def workdir() -> str:
    """A private directory for the helper binary, readable by everyone (namespaces)."""
    d = tempfile.mkdtemp(prefix="ringnet-perf-")
    os.chmod(d, 0o755)
    return d
