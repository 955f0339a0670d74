"""Monitoring: typed stats snapshots, the per-network control socket, ringnet ls/stats/top."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

import ringnet
from conftest import (HANG_S, as_user_argv, child_env, counter_reaches, needs_userns, ringnet_cmd,
                      unpriv_user)

pytestmark = needs_userns


def cli(*args, argv_wrap=lambda a: a):
    return subprocess.run(argv_wrap(ringnet_cmd(*args)), capture_output=True, text=True, timeout=HANG_S,
                          env=child_env(), cwd="/")


def test_stats_snapshot_counts_known_traffic(no_leaks, tmp_path):
    with ringnet.Network(workers=2, control_dir=str(tmp_path)) as net:
        r = net.run(["ping", "-c", "5", "-i", "0.2", "-W", "60", "10.0.2.2"], capture_output=True)
        assert r.returncode == 0
        counter_reaches(net, "icmp_echo_replies", 5)  # a worker counts a reply after sending it
        s = net.stats()
        assert isinstance(s, ringnet.Stats)
        assert s.total("icmp_echo_replies") == 5
        assert s.total("frames_in") >= 5 and s.total("bytes_in") >= 5 * 84
        assert s.pump["tun_frames_in"] >= 5
        # psutil figures cover every ringnet process and none of the user's
        assert {p.pid for p in s.processes} == set(net.pids())
        assert os.getpid() not in {p.pid for p in s.processes}
        assert sorted(p.role for p in s.processes) == ["ns", "worker 0", "worker 1"]
        assert all(p.rss > 0 and p.num_fds > 0 and p.num_threads >= 1 for p in s.processes)
        ns = next(p for p in s.processes if p.role == "ns")
        assert ns.num_threads >= 3  # main thread and one pump thread per queue
        again = ringnet.Stats.from_dict(json.loads(json.dumps(s.to_dict())))
        assert again == s


def test_control_socket_serves_other_processes(no_leaks, tmp_path):
    with ringnet.Network(workers=1, control_dir=str(tmp_path)) as net:
        net.label = "monitor-test"
        path = net.control_socket
        assert os.path.dirname(path) == str(tmp_path)
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
        net.run(["ping", "-c", "2", "-i", "0.2", "-W", "60", "10.0.2.2"], capture_output=True, check=True)
        counter_reaches(net, "icmp_echo_replies", 2)

        ls = cli("ls", "--json", "--dir", str(tmp_path))
        assert ls.returncode == 0, ls.stderr
        nets = json.loads(ls.stdout)
        assert [(n["id"], n["label"], n["ns_pid"]) for n in nets] == [(net.id, "monitor-test", net.pid)]

        st = cli("stats", net.id[:5], "--json", "--dir", str(tmp_path))
        assert st.returncode == 0, st.stderr
        snap = json.loads(st.stdout)
        assert sum(w["icmp_echo_replies"] for w in snap["workers"]) == 2
        assert {p["pid"] for p in snap["processes"]} == set(net.pids())

        text = cli("stats", net.id, "--dir", str(tmp_path))
        assert "icmp_echo_replies" in text.stdout and "worker 0" in text.stdout

        top = cli("top", net.id, "--iterations", "2", "--interval", "0.2", "--dir", str(tmp_path))
        assert top.returncode == 0, top.stderr
        assert top.stdout.count("ringnet top") == 2
    assert not os.path.exists(path)
    assert json.loads(cli("ls", "--json", "--dir", str(tmp_path)).stdout) == []


def test_stats_refused_for_another_uid(no_leaks):
    uid, _ = unpriv_user()
    if uid == os.getuid():
        pytest.skip("needs to run as root to test another uid")
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="ringnet-ctl-", dir="/tmp")  # reachable by the other user
    os.chmod(top, 0o755)
    d = os.path.join(top, "ctl")
    os.mkdir(d, 0o700)
    try:
        _refused_for_another_uid(d)
    finally:
        shutil.rmtree(top)


def _refused_for_another_uid(d):
    with ringnet.Network(workers=1, control_dir=str(d)) as net:
        r = cli("stats", net.id, "--json", "--dir", str(d), argv_wrap=as_user_argv)
        assert r.returncode == 1
        assert f"refused: {d} belongs to another user" in r.stderr and r.stdout == ""
        # Even with the directory opened up, the server checks the peer's uid.
        os.chmod(d, 0o755)
        os.chmod(net.control_socket, 0o666)
        probe = ("import sys; from ringnet import _ctlsock\n"
                 "try:\n    _ctlsock.query(sys.argv[1], 'stats')\n"
                 "except Exception as e:\n    print(e)\n")
        r = subprocess.run(as_user_argv([sys.executable, "-c", probe, net.control_socket]),
                           capture_output=True, text=True, timeout=HANG_S, env=child_env(), cwd="/")
        assert "refused: this network belongs to another user" in r.stdout, r.stdout + r.stderr
        os.chmod(d, 0o700)


def test_unknown_network_id(tmp_path):
    r = cli("stats", "nosuchid", "--dir", str(tmp_path))
    assert r.returncode == 1 and "no running network with id 'nosuchid'" in r.stderr


def test_runtime_dir_must_be_private(tmp_path, monkeypatch):
    from ringnet import _ctlsock
    base = tmp_path / "run"
    base.mkdir()
    (base / "ringnet").mkdir(mode=0o755)
    os.chmod(base / "ringnet", 0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    with pytest.raises(ringnet.RingnetError, match="not a private directory"):
        _ctlsock.runtime_dir()


FLOW_CLIENT = r'''
import socket, sys, time
s = socket.create_connection(("10.0.2.2", int(sys.argv[1])))
s.sendall(b"x" * 100000)
got = 0
while got < 5000:
    got += len(s.recv(65536))
print("sent", flush=True)
sys.stdin.readline()
s.close()
'''


def test_flows_table_of_a_live_tcp_connection(no_leaks, tmp_path):
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            got = 0
            while got < 100000:
                data = conn.recv(65536)
                if not data:
                    return
                got += len(data)
            conn.sendall(b"y" * 5000)
            conn.recv(1)  # EOF once the client closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with ringnet.Network(workers=2, allow_host_loopback=True, control_dir=str(tmp_path)) as net:
        t0 = time.monotonic()
        p = net.spawn([sys.executable, "-c", FLOW_CLIENT, str(port)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
        # The server answers only after it has all 100000 bytes, and the client reports
        # only once it has the 5000 of the answer: both counts are final by now.
        assert p.stdout.readline().strip() == b"sent"
        flows = net.flows()
        lived = time.monotonic() - t0
        assert flows.dtype == ringnet.FLOW_DTYPE
        tcp = flows[flows["proto"] == "tcp"]
        assert len(tcp) == 1, flows
        f = tcp[0]
        assert (f["guest"], f["remote"], int(f["remote_port"])) == ("10.0.2.100", "10.0.2.2", port)
        assert 1024 <= int(f["guest_port"]) <= 65535
        assert f["state"] == "ESTABLISHED"
        assert (int(f["bytes_in"]), int(f["bytes_out"])) == (100000, 5000)
        assert 0 <= f["idle"] <= f["age"] <= lived + 0.001  # ms clock: one ms of rounding
        assert int(f["worker"]) in (0, 1)
        assert set(net.stats().flows["proto"]) == set(flows["proto"])

        snap = json.loads(cli("stats", net.id, "--json", "--dir", str(tmp_path)).stdout)
        rows = [r for r in snap["flows"] if r["proto"] == "tcp"]
        assert [(r["remote_port"], r["bytes_in"], r["bytes_out"], r["state"]) for r in rows] == \
            [(port, 100000, 5000, "ESTABLISHED")]
        assert set(snap["flows"][0]) == set(ringnet.FLOW_DTYPE.names)
        text = cli("stats", net.id, "--dir", str(tmp_path)).stdout
        # per-protocol aggregate, then the flow itself
        assert any(line.split()[:4] == ["tcp", "1", "100KB", "5KB"] for line in text.splitlines()), text
        assert f"10.0.2.2:{port}" in text
        p.stdin.write(b"\n")
        p.stdin.close()
        assert p.wait(timeout=HANG_S) == 0
        p.stdout.close()
    srv.close()
    t.join(timeout=HANG_S)
    assert not t.is_alive()


def test_stats_round_trip_keeps_the_flow_table():
    import numpy as np
    flows = np.array([(1, "udp", "active", "fd00::100", 5353, "fd00::3", 53, 40, 120, 1.5, 0.25),
                      (0, "tcp", "ESTABLISHED", "10.0.2.100", 40000, "10.0.2.2", 80, 7, 9, 3.0, 2.0)],
                     dtype=ringnet.FLOW_DTYPE)
    s = ringnet.Stats(time=1.0, pump={"tun_frames_in": 3}, workers=[{"frames_in": 2}],
                      processes=[], flows=flows)
    again = ringnet.Stats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again.flows.dtype == ringnet.FLOW_DTYPE
    assert again != ringnet.Stats(time=1.0, pump={"tun_frames_in": 3}, workers=[{"frames_in": 2}],
                                  processes=[], flows=flows[:1])
    with pytest.raises(ringnet.ProtocolError, match="flow record"):
        ringnet.Stats.from_dict(dict(s.to_dict(), flows=[{"proto": "tcp"}]))


def test_control_socket_errors_arrive_as_their_class(tmp_path):
    import errno
    from ringnet import _ctlsock
    from ringnet.errors import from_wire, to_wire

    def worker_failed(args):
        raise from_wire(to_wire(PermissionError(errno.EPERM, "Operation not permitted"),
                                "worker 1", "run"), "worker 1")

    def closed(args):
        raise ringnet.RingnetError("network is closed, not running")

    srv = _ctlsock.ControlServer("errtest", {"stats": worker_failed, "info": closed}, str(tmp_path))
    try:
        with pytest.raises(PermissionError) as info:
            _ctlsock.query(srv.path, "stats")
        assert isinstance(info.value, ringnet.ChildError)
        assert (info.value.errno, info.value.child, info.value.step) == (errno.EPERM, "worker 1", "run")
        with pytest.raises(ringnet.RingnetError) as info:
            _ctlsock.query(srv.path, "info")
        assert type(info.value) is ringnet.RingnetError and info.value.child is None
        assert str(info.value) == "network is closed, not running"
    finally:
        srv.close()


def test_control_socket_passes_arguments_and_reports_bad_ones(tmp_path):
    from ringnet import _ctlsock

    def echo(args):
        if "n" not in args:
            raise ValueError("echo: n is required")
        return {"twice": args["n"] * 2}

    srv = _ctlsock.ControlServer("argtest", {"echo": echo}, str(tmp_path))
    try:
        assert _ctlsock.query(srv.path, "echo", {"n": 21}) == {"twice": 42}
        with pytest.raises(ringnet.RingnetError, match="echo: n is required"):
            _ctlsock.query(srv.path, "echo")
        with pytest.raises(ringnet.RingnetError, match="bad request; commands: echo"):
            _ctlsock.query(srv.path, "nope")
    finally:
        srv.close()


def test_unknown_fd_count_renders_as_a_dash():
    """An unprivileged user cannot count the fds of ringnet's children (not dumpable)."""
    import numpy as np

    from ringnet import cli
    procs = [ringnet.ProcessStats(pid=10, role="worker 0", cpu_percent=0.0, cpu_seconds=1.0,
                                  rss=1 << 20, num_fds=-1, num_threads=1),
             ringnet.ProcessStats(pid=11, role="ns", cpu_percent=0.0, cpu_seconds=1.0,
                                  rss=1 << 20, num_fds=12, num_threads=3)]
    s = ringnet.Stats(time=1.0, pump={}, workers=[], processes=procs,
                      flows=np.array([], dtype=ringnet.FLOW_DTYPE))
    lines = cli._render(s, None).splitlines()
    assert lines[1].split()[-2:] == ["-", "1"]
    assert lines[2].split()[-2:] == ["12", "3"]


def test_delta_shows_exactly_the_echo_counters_moving(no_leaks, tmp_path):
    # IPv4 only, so that no neighbour discovery or router solicitation moves other counters
    with ringnet.Network(workers=1, ipv6=False, control_dir=str(tmp_path)) as net:
        before = net.stats()
        r = net.run(["ping", "-c", "3", "-i", "0.2", "-W", "60", "10.0.2.2"], capture_output=True)
        assert r.returncode == 0, r.stderr
        counter_reaches(net, "icmp_echo_replies", 3)
        after = net.stats()
    d = after.delta(before)
    assert isinstance(d, ringnet.Stats)
    assert d.time == after.time and d.processes == after.processes and len(d.workers) == 1
    # the ring path's own bookkeeping moves with any traffic; everything else stays still
    transport = {"frames_in", "bytes_in", "frames_out", "bytes_out", "wakeups", "kicks", "naps",
                 "timer_runs", "host_events"}
    # and the kernel inside sends IGMP membership reports at times of its own choosing
    # (dropped and counted as drop_multicast)
    background = {"drop_multicast"}
    moved = {k: v for k, v in d.workers[0].items() if v and k not in transport | background}
    assert moved == {"icmp_echo_replies": 3}
    assert d.total("frames_in") >= 3 and d.total("frames_out") >= 3
    assert d.pump["tun_frames_in"] >= 3
    assert d.total("frames_in") == after.total("frames_in") - before.total("frames_in")


def test_unknown_counter_raises_naming_close_matches():
    s = ringnet.Stats(time=0.0, pump={"tun_frames_in": 1}, workers=[{"icmp_echo_replies": 2}],
                      processes=[], flows=ringnet.stats.flow_array([]))
    assert s.total("icmp_echo_replies") == 2
    assert s.total("frames_in") == 0  # a real counter this snapshot happens not to hold
    with pytest.raises(ringnet.UnknownCounterError, match="icmp_echo_reply.*icmp_echo_replies") as e:
        s.total("icmp_echo_reply")
    assert isinstance(e.value, KeyError) and isinstance(e.value, ringnet.RingnetError)
    with pytest.raises(KeyError, match="no_such_counter"):
        s.total("no_such_counter")
    with pytest.raises(ringnet.UnknownCounterError, match="pump counter"):
        s.total("tun_frames_in")


def test_every_counter_has_a_description():
    worker, pump = ringnet.counter_descriptions(), ringnet.counter_descriptions("pump")
    from ringnet._core import pump_counter_names, worker_counter_names

    assert tuple(worker) == worker_counter_names() and tuple(pump) == pump_counter_names()
    assert all(d.strip() for d in [*worker.values(), *pump.values()])
    assert ringnet.Stats.describe("icmp_echo_replies") == "ICMP echo replies sent"
    assert ringnet.Stats.describe("tun_frames_in") == "frames read from the tun device"
    with pytest.raises(ringnet.UnknownCounterError, match="tcp_retransmits"):
        ringnet.Stats.describe("tcp_retransmit")
    with pytest.raises(ringnet.ConfigError, match="kind"):
        ringnet.counter_descriptions("nic")


def test_gauges_are_marked_in_the_c_descriptions():
    """stats.gauges(): the counters whose description ends with "(gauge)"; the marking
    anywhere else would be missed, so it appears nowhere else."""
    worker, gauges = ringnet.counter_descriptions(), ringnet.stats.gauges()
    assert {"flows_open_tcp", "flows_open_udp", "flows_open_icmp", "flows_open_splice",
            "udp_ports_open", "netem_queued_up", "netem_queued_down"} <= gauges
    assert not gauges & {"frames_in", "tcp_connects", "netem_loss_up", "udp_in"}
    assert [n for n, d in worker.items() if "(gauge)" in d and n not in gauges] == []
    assert ringnet.stats.gauges("pump") == frozenset()
    with pytest.raises(ringnet.ConfigError, match="kind"):
        ringnet.stats.gauges("nic")


def test_counters_doc_is_generated_from_the_c_lists():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "scripts", "gen-counters-doc.py")],
                       capture_output=True, text=True, timeout=HANG_S, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(root, "docs", "COUNTERS.md"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == r.stdout, "docs/COUNTERS.md is stale: run scripts/gen-counters-doc.py " \
        "-o docs/COUNTERS.md"
    for name, desc in ringnet.counter_descriptions().items():
        assert f"| `{name}` | {desc} |" in committed
