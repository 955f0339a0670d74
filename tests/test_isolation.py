"""Isolation around the data path (issue 10, items 1-5): what a command inside can reach of
ringnet's processes, sealed counters, the hash key's secrecy, process-lifetime parent
tracking, signals and close-on-exec fds."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import psutil
import pytest

import ringnet
from ringnet import _control
from ringnet._control import Msg

from conftest import HANG_S, as_user_argv, child_env, needs_userns, wait_until

PROBE = r'''
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
out = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
for what in ("kill", "fd", "pidfd", "ptrace"):
    out[what] = {}
for pid in map(int, sys.argv[1:]):
    try:
        os.kill(pid, 0)
        out["kill"][pid] = "ok"
    except OSError as e:
        out["kill"][pid] = e.errno
    try:
        os.listdir(f"/proc/{pid}/fd")
        out["fd"][pid] = "ok"
    except OSError as e:
        out["fd"][pid] = e.errno
    try:  # the way to pidfd_getfd()
        os.close(os.pidfd_open(pid))
        out["pidfd"][pid] = "ok"
    except OSError as e:
        out["pidfd"][pid] = e.errno
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        out["ptrace"][pid] = "ok"
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    else:
        out["ptrace"][pid] = ctypes.get_errno()
print(json.dumps(out))
'''


def _probe(net: ringnet.Network, pids: list[int]) -> dict:
    r = net.run([sys.executable, "-c", PROBE, *map(str, pids)], capture_output=True, check=True)
    out = json.loads(r.stdout)
    return {k: v if k == "pids" else {int(pid): res for pid, res in v.items()} for k, v in out.items()}


# Item 1: the command's own PID namespace ------------------------------------------------

@needs_userns
def test_command_cannot_see_or_signal_ringnet_processes():
    with ringnet.Network(workers=2) as net:
        ours = [*net.pids(), os.getpid()]  # namespace child, workers, orchestrator
        assert min(ours) > 2
        out = _probe(net, ours)
    assert out["pids"] == [1, 2]  # its init and itself: nothing of the host
    for pid in ours:
        for what in ("kill", "fd", "pidfd", "ptrace"):
            assert out[what][pid] != "ok", (what, pid)


@needs_userns
def test_without_pid_namespace_the_host_pids_are_visible():
    with ringnet.Network(workers=1, pid_namespace=False) as net:
        ours = [*net.pids(), os.getpid()]
        out = _probe(net, ours)
    assert set(ours) <= set(out["pids"])
    assert all(out["kill"][pid] == "ok" and out["pidfd"][pid] == "ok" for pid in ours)


@needs_userns
def test_the_new_proc_cannot_be_removed_from_inside():
    """Unmounting the namespace's /proc would uncover the host's, where the user's other
    processes are open by path: the mount is locked. So is the init's /proc entry."""
    script = ("umount /proc; umount -l /proc; echo /proc/[0-9]*; "
              "readlink /proc/1/fd/0 >/dev/null 2>&1 && echo init-fds-open; "
              "readlink /proc/1/ns/mnt >/dev/null 2>&1 && echo init-ns-open; "
              "umount /etc/resolv.conf; grep -c 10.0.2.3 /etc/resolv.conf")
    with ringnet.Network(workers=1) as net:
        r = net.run(["sh", "-c", script], capture_output=True)
    # still the namespace's /proc (init and sh), the init out of reach, resolv.conf ours
    assert r.stdout.decode().split() == ["/proc/1", "/proc/2", "1"], r.stdout + r.stderr


@needs_userns
def test_init_ends_what_the_command_left_running():
    with ringnet.Network(workers=1) as net:
        proc = net.spawn(["sh", "-c", "sleep 300 & echo started; read x"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"started\n"
        (init,) = psutil.Process(proc.pid).children()
        (cmd,) = init.children()
        left = cmd.children()
        assert len(left) == 1  # the background job
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.wait(HANG_S) == 0  # sh is done; its job is the init's orphan
        proc.stdout.close()
        gone, alive = psutil.wait_procs(left, timeout=HANG_S)
        assert not alive


@needs_userns
def test_relay_ends_as_the_command_did():
    with ringnet.Network(workers=1) as net:
        assert net.run(["sh", "-c", "exit 3"]).returncode == 3
        assert net.run(["sh", "-c", "kill -TERM $$"]).returncode == -signal.SIGTERM
        proc = net.spawn([sys.executable, "-c", "import sys, signal, time\n"
                          "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(42))\n"
                          "print('ready', flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)  # reaches the command through the relay and init
        assert proc.wait(HANG_S) == 42
        proc.stdout.close()


@needs_userns
def test_children_have_no_new_privs():
    with ringnet.Network(workers=2) as net:
        for pid in net.pids():
            with open(f"/proc/{pid}/status") as f:
                assert "NoNewPrivs:\t1\n" in f.read()


NOT_DUMPABLE = r'''
import json, os, ringnet
with ringnet.Network(workers=1) as net:
    out = {}
    for pid in net.pids():
        try:
            os.listdir(f"/proc/{pid}/fd")
            out[pid] = "open"
        except PermissionError:
            out[pid] = "refused"
    print(json.dumps(out))
'''


@needs_userns
def test_children_are_not_dumpable():
    """Another process of the same user can no longer open a child's /proc/PID/fd."""
    r = subprocess.run(as_user_argv([sys.executable, "-c", NOT_DUMPABLE]), capture_output=True,
                       text=True, timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out) == 2 and set(out.values()) == {"refused"}


# Item 2: sealed counters -----------------------------------------------------------------

def test_counter_memfd_cannot_be_truncated(no_leaks):
    from ringnet._shm import CounterArray
    ctr = CounterArray.create("test")
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(ctr.fd, 0)
        with open(f"/proc/self/fd/{ctr.fd}", "r+b") as f, pytest.raises(PermissionError):
            f.truncate(8)
        assert int(ctr.values.sum()) == 0  # still mapped, still readable
    finally:
        ctr.close()


def test_unsealed_counter_memfd_is_refused(no_leaks):
    from ringnet._core import lib
    from ringnet._shm import CounterArray
    fd = os.memfd_create("ringnet-test-ctr", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, lib.RN_CTR_SLOTS * 8)
        with pytest.raises(ringnet.ProtocolError, match="seals"):
            CounterArray.adopt(fd)
    finally:
        os.close(fd)


@needs_userns
def test_running_networks_counters_are_sealed():
    with ringnet.Network(workers=1) as net:
        for ctr in [*net._wctr, net._pctr]:
            with pytest.raises(PermissionError):
                os.ftruncate(ctr.fd, 0)
        assert net.counters()["workers"][0]["frames_in"] >= 0


# Item 3: the hash key is not on a command line --------------------------------------------

UDP_SPREAD = r'''
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
got = 0
for i in range(n):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(60)  # only a hang detector
        s.sendto(b"x%d" % i, ("10.0.2.2", port))
        got += s.recv(100) == b"x%d" % i
print(got)
'''


@needs_userns
def test_hash_key_not_on_command_lines_and_flows_spread():
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        echo.settimeout(0.2)
        while not stop.is_set():
            try:
                data, peer = echo.recvfrom(100)
            except socket.timeout:
                continue
            echo.sendto(data, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True) as net:
            key = net._hash_key
            assert len(key) == 32
            for pid in net.pids():
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode()
                assert key not in cmdline and "hash_key" not in cmdline
            n = 32
            r = net.run([sys.executable, "-c", UDP_SPREAD, str(echo.getsockname()[1]), str(n)],
                        capture_output=True, check=True)
            assert int(r.stdout) == n  # every flow's owner agreed with the pump's choice
            flows = net.flows()
            udp = flows[flows["proto"] == "udp"]
            assert set(udp["worker"].tolist()) == {0, 1}  # 2**-31 that all land on one
            assert net.stats().total("drop_wrong_owner") == 0
    finally:
        stop.set()
        t.join()
        echo.close()


# Item 4: the parent is the orchestrator process, not a thread ------------------------------

@needs_userns
def test_network_started_from_a_thread_that_exits_keeps_working():
    box: dict = {}

    def start() -> None:
        box["tid"] = threading.get_native_id()
        box["net"] = ringnet.Network(workers=2).start()

    t = threading.Thread(target=start)
    t.start()
    t.join()
    net = box["net"]
    try:
        wait_until(lambda: not os.path.exists(f"/proc/self/task/{box['tid']}"),
                   "the kernel to finish the thread's exit", interval=0)
        r = net.run(["ping", "-c", "2", "-i", "0.2", "-W", "60", "10.0.2.2"], capture_output=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert net.failed_children() == []
    finally:
        net.close()


# Item 5: signals, close-on-exec --------------------------------------------------------------

@needs_userns
def test_sigterm_ends_a_worker_through_its_cleanup():
    net = ringnet.Network(workers=2).start()
    try:
        worker = next(c for c in net._children if c.role.value == "worker")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(HANG_S) == 0  # Stop unwound main(): not killed, not an error
    finally:
        net.close()


def test_received_fds_are_close_on_exec(no_leaks):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        os.set_inheritable(r, True)
        _control.send(a, Msg.HELLO, {}, [r, w])
        msg = _control.recv(b, timeout=HANG_S)
        assert msg is not None and len(msg.fds) == 2
        try:
            for fd in msg.fds:
                assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        finally:
            msg.close_fds()
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
