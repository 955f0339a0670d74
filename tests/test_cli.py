"""The ringnet command: exit status, signal forwarding, one-line errors, teardown."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys

import psutil
import pytest

import ringnet

from conftest import HANG_S, child_env, needs_userns, ringnet_cmd


def run_cli(*args, timeout=2 * HANG_S):
    return subprocess.run(ringnet_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=child_env())


@pytest.mark.parametrize("args,match", [
    (["run", "--mtu", "99", "--", "true"],
     "--mtu=99 is out of range: --mtu must be an integer from 1280 to 65520"),
    (["run", "--workers", "0", "--", "true"], "--workers=0 is out of range"),
    (["run", "--cidr", "10.0.2.0/40", "--", "true"], "--cidr='10.0.2.0/40' is not a valid IPv4 network"),
    (["run", "--ring-size", "1000", "--", "true"], "--ring-size=1000"),
    (["run", "--max-flows", "8", "--", "true"],
     "--max-flows=8 is out of range: --max-flows must be an integer from 16 to 1048576"),
    (["attach", "--max-flows", "2000000", "1"], "--max-flows must be an integer from 16 to 1048576"),
    (["run", "--tcp-idle-timeout", "5", "--", "true"],
     "--tcp-idle-timeout must be an integer from 10 to 604800"),
    (["run", "--tcp-fin-timeout", "0", "--", "true"], "--tcp-fin-timeout must be an integer from 1 to 3600"),
    (["run", "--udp-timeout", "90000", "--", "true"], "--udp-timeout must be an integer from 1 to 86400"),
    (["run", "--startup-timeout", "700", "--", "true"], "--startup-timeout=700.0 must be between 0 and 600"),
    (["run", "--dns4", "10.0.3.3", "--", "true"], "--dns4=10.0.3.3 is outside its network 10.0.2.0/24"),
    (["run", "--gateway4", "10.0.2.3", "--", "true"], "--gateway4 and --dns4 are both 10.0.2.3"),
    (["run", "--guest6", "fd01::5", "--", "true"], "--guest6=fd01::5 is outside its network fd00::/64"),
    (["run"], "no command given"),
    (["attach", "4194000"], "PID 4194000 does not exist"),
])
def test_bad_input_one_line_error(args, match):
    r = run_cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ringnet: error: ") and match in lines[0], lines[0]
    assert r.returncode == (125 if args[0] == "run" else 1)


def _network_options(subcommand: str) -> list:
    from ringnet import cli
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[subcommand]._actions
            if a.dest not in ("help", "verbose", "argv", "pid", "ready_fd", "quiet", "pid_file",
                              "netns", "userns")]


@pytest.mark.parametrize("subcommand", ["run", "attach"])
def test_cli_defaults_are_network_configs(subcommand):
    from ringnet import cli
    fields = {f.name: f.default for f in dataclasses.fields(ringnet.NetworkConfig)}
    options = _network_options(subcommand)
    assert len(options) >= 26
    # every field a user may set has an option; faults is test-only; the on_connect hook
    # is a Python function, so it and its settings are the library's only
    hook = {"on_connect", "on_connect_timeout", "on_connect_cache", "on_connect_fail"}
    assert {a.dest for a in options} == set(fields) - {"faults"} - hook - (
        {"resolv_conf", "pid_namespace"} if subcommand == "attach" else set())
    for action in options:  # each option sets a field and defaults to the field's default
        assert action.dest in fields, action.option_strings
        assert action.default == fields[action.dest], action.option_strings
    argv = ["run", "--", "true"] if subcommand == "run" else ["attach", "1"]
    assert cli._config(cli._parser().parse_args(argv)) == ringnet.NetworkConfig()


def test_cli_options_reach_the_config():
    from ringnet import cli
    args = cli._parser().parse_args(
        ["run", "--mtu", "1500", "--workers", "3", "--cidr", "10.9.0.0/24", "--cidr6", "fd09::/64",
         "--disable-ipv6", "--ifname", "eth0", "--ring-size", str(1 << 20), "--allow-host-loopback",
         "--dns-upstream", "127.0.0.1:5353", "--dns-upstream", "[::1]:53", "--coalesce-us", "0",
         "--busy-poll-us", "50", "--idmap-helpers", "--no-resolv-conf", "--no-pid-namespace", "--", "true"])
    assert cli._config(args) == ringnet.NetworkConfig(
        mtu=1500, workers=3, cidr4="10.9.0.0/24", cidr6="fd09::/64", ipv6=False, ifname="eth0",
        ring_size=1 << 20, allow_host_loopback=True, dns_upstream=("127.0.0.1:5353", "[::1]:53"),
        coalesce_us=0, busy_poll_us=50, idmap_helpers=True, resolv_conf=False,
        pid_namespace=False)


def test_cli_new_options_reach_the_config():
    from ringnet import cli
    args = cli._parser().parse_args(
        ["attach", "--max-flows", "100", "--cidr", "10.9.0.0/24", "--guest4", "10.9.0.5",
         "--gateway4", "10.9.0.1", "--dns4", "10.9.0.53", "--guest6", "fd00::5", "--gateway6",
         "fd00::1", "--dns6", "fd00::53", "--tcp-idle-timeout", "60", "--tcp-fin-timeout", "5",
         "--udp-timeout", "30", "--startup-timeout", "12.5", "--no-configure-interface",
         "--no-sandbox", "--no-control-socket", "--control-dir", "/tmp/x", "-q",
         "--pid-file", "/tmp/p", "1"])
    assert cli._config(args) == ringnet.NetworkConfig(
        max_flows=100, cidr4="10.9.0.0/24", guest4="10.9.0.5", gateway4="10.9.0.1",
        dns4="10.9.0.53", guest6="fd00::5", gateway6="fd00::1", dns6="fd00::53",
        tcp_idle_timeout=60, tcp_fin_timeout=5, udp_timeout=30, startup_timeout=12.5,
        configure_interface=False, sandbox=False, control_socket=False, control_dir="/tmp/x")
    assert args.quiet and args.pid_file == "/tmp/p"
    plain = cli._parser().parse_args(["run", "--", "true"])
    assert not plain.quiet and plain.pid_file is None


@needs_userns
def test_pid_file_holds_the_orchestrators_pid_while_running(tmp_path):
    pid_file = tmp_path / "ringnet.pid"
    # the command reports that it runs (the network is up by then), then waits for stdin
    p = subprocess.Popen(ringnet_cmd("run", "--workers", "1", "--pid-file", str(pid_file), "--",
                                     "sh", "-c", "echo up; read x"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        assert pid_file.read_text() == f"{p.pid}\n"
        p.communicate("\n", timeout=HANG_S)
        assert p.returncode == 0, p.stderr
        assert not pid_file.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@needs_userns
def test_quiet_leaves_stderr_empty_unless_an_error():
    loud = run_cli("run", "-vv", "--workers", "1", "--", "true")
    assert loud.returncode == 0 and "DEBUG" in loud.stderr  # so that -q has something to silence
    r = run_cli("run", "-q", "-vv", "--workers", "1", "--", "true")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run_cli("run", "-q", "--max-flows", "1", "--", "true")
    assert r.returncode == 125 and r.stderr.startswith("ringnet: error: --max-flows=1"), r.stderr


pytestmark_ns = needs_userns


@needs_userns
@pytest.mark.parametrize("code", [0, 3, 77])
def test_run_exit_status_is_the_commands(code):
    r = run_cli("run", "--workers", "1", "--", "sh", "-c", f"exit {code}")
    assert r.returncode == code, r.stderr


@needs_userns
def test_run_ping_through_the_rings():
    r = run_cli("run", "--workers", "2", "--", "ping", "-c", "3", "-i", "0.2", "-W", "60", "10.0.2.2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 received" in r.stdout


@needs_userns
def test_run_command_killed_by_signal():
    r = run_cli("run", "--workers", "1", "--", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + signal.SIGKILL


@needs_userns
def test_run_command_not_found():
    r = run_cli("run", "--workers", "1", "--", "no-such-command-ringnet")
    assert r.returncode == 127 and "command not found" in r.stderr


SIGNAL_CHILD = r'''
import signal, sys, time
def h(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    sys.exit(40 + signum)
signal.signal(signal.SIGTERM, h)
signal.signal(signal.SIGINT, h)
print("ready", flush=True)
time.sleep(300)
'''


@needs_userns
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals(sig):
    p = subprocess.Popen(ringnet_cmd("run", "--workers", "1", "--", sys.executable, "-c", SIGNAL_CHILD),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        kids = psutil.Process(p.pid).children()
        assert len(kids) == 3  # namespace child, worker, the command
        p.send_signal(sig)
        out, err = p.communicate(timeout=HANG_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert out.strip() == f"got {sig.name}", err
    assert p.returncode == 40 + sig
    gone, alive = psutil.wait_procs(kids, timeout=HANG_S)
    assert not alive, f"left running: {alive}"


def _blocked_signals(pid: int, tid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


@needs_userns
def test_run_only_its_main_thread_takes_forwarded_signals():
    """Every other thread of the orchestrator blocks the forwarded signals at all times, so a
    signal sent while the main thread is not in sigtimedwait waits for it (a SIGTERM taken by
    another thread used to kill the orchestrator and leave CMD running)."""
    p = subprocess.Popen(ringnet_cmd("run", "--workers", "1", "--", sys.executable, "-c", SIGNAL_CHILD),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        threads = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
        # the control socket server, the resolv.conf and host address watchers, the supervisor
        assert len(threads) == 4
        for tid in threads:
            assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGCHLD} <= _blocked_signals(p.pid, tid)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=HANG_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert out.strip() == "got SIGTERM", err


@needs_userns
def test_command_sigkilled_leaves_nothing():
    p = subprocess.Popen(ringnet_cmd("run", "--workers", "2", "--", "sh", "-c", "echo $$; exec sleep 300"),
                         stdout=subprocess.PIPE, text=True, env=child_env(), start_new_session=True)
    assert int(p.stdout.readline()) == 2  # under the init of its own PID namespace
    kids = {c.pid for c in psutil.Process(p.pid).children()}
    assert len(kids) == 4  # namespace child, two workers, the command's relay
    relay = next(c for c in psutil.Process(p.pid).children() if not c.name().startswith("ringnet-"))
    (init,) = relay.children()
    (cmd,) = init.children()
    os.kill(cmd.pid, signal.SIGKILL)
    assert p.wait(timeout=HANG_S) == 128 + signal.SIGKILL
    for k in kids:
        assert not psutil.pid_exists(k)


@needs_userns
def test_orchestrator_sigkilled_children_follow():
    p = subprocess.Popen(ringnet_cmd("run", "--workers", "2", "--", "sh", "-c", "echo go; exec sleep 300"),
                         stdout=subprocess.PIPE, text=True, env=child_env(), start_new_session=True)
    assert p.stdout.readline().strip() == "go"
    kids = [c for c in psutil.Process(p.pid).children() if c.name().startswith("ringnet-")]
    assert len(kids) == 3
    inside = [c for c in psutil.Process(p.pid).children(recursive=True) if c not in kids]
    assert len(inside) == 3  # the relay, the init of the command's PID namespace, the command
    p.kill()
    p.wait()
    gone, alive = psutil.wait_procs(kids + inside, timeout=HANG_S)
    assert not alive, f"outlived the orchestrator: {alive}"


@needs_userns
def test_attach_cli_with_ready_fd(unshared_target):
    target = unshared_target
    r, w = os.pipe()
    try:
        p = subprocess.Popen(ringnet_cmd("attach", "--workers", "1", "--ready-fd", str(w), str(target.pid)),
                             pass_fds=[w], env=child_env(), stderr=subprocess.PIPE, text=True)
        os.close(w)
        w = -1
        assert os.read(r, 1) == b"1"
        ping = subprocess.run(["nsenter", f"--target={target.pid}", "--user", "--net",
                               "--preserve-credentials", "ping", "-c", "2", "-i", "0.2", "-W", "60",
                               "10.0.2.2"], capture_output=True, timeout=2 * HANG_S)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        target.kill()  # attach ends when its target's namespace goes away
        assert p.wait(timeout=HANG_S) == 0, p.stderr.read()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _flows(*rows):
    import numpy as np
    return np.array(list(rows), dtype=ringnet.FLOW_DTYPE)


def test_top_aggregates_and_sorts_the_flow_table():
    from ringnet import cli
    old = _flows((0, "tcp", "ESTABLISHED", "10.0.2.100", 1000, "10.0.2.2", 80, 100, 0, 5.0, 1.0),
                 (1, "udp", "active", "10.0.2.100", 2000, "10.0.2.3", 53, 10, 10, 5.0, 1.0))
    new = _flows((0, "tcp", "ESTABLISHED", "10.0.2.100", 1000, "10.0.2.2", 80, 1100, 0, 7.0, 0.0),
                 (1, "udp", "active", "10.0.2.100", 2000, "10.0.2.3", 53, 10, 90000, 7.0, 3.0),
                 (0, "tcp", "SYN_RCVD", "10.0.2.100", 1001, "10.0.2.2", 80, 500, 0, 0.5, 0.0))
    prev = ringnet.Stats(time=10.0, pump={}, workers=[], processes=[], flows=old)
    cur = ringnet.Stats(time=12.0, pump={}, workers=[], processes=[], flows=new)
    # bytes per second since the previous snapshot; a new flow counts from its creation
    assert cli._flow_rates(prev, cur).tolist() == [500.0, 44995.0, 1000.0]
    lines = cli._render(cur, prev).splitlines()
    agg = [line.split() for line in lines if line.startswith(("tcp ", "udp "))][:2]
    assert agg == [["tcp", "2", "1.6KB", "0B", "ESTABLISHED", "1,", "SYN_RCVD", "1"],
                   ["udp", "1", "10B", "90KB", "active", "1"]]
    listed = [line.split()[1] for line in lines if line.startswith(("tcp ", "udp "))][2:]
    assert listed == ["10.0.2.100:2000", "10.0.2.100:1001", "10.0.2.100:1000"]  # fastest first
    # ringnet stats (no previous snapshot): busiest first, no rate column
    lines = cli._render(cur, None).splitlines()
    listed = [line.split()[1] for line in lines if line.startswith(("tcp ", "udp "))][2:]
    assert listed == ["10.0.2.100:2000", "10.0.2.100:1000", "10.0.2.100:1001"]
    assert not any("RATE" in line for line in lines)
