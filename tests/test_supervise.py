"""Supervision (issue 10 item 9): a worker that dies is replaced, the rest keeps working.

End to end, with the real tools: ping from inside, TCP transfers from inside to a sink
on host loopback (through the gateway), an echo server inside behind a published port.
A worker is SIGKILLed; the tests wait for conditions (the event, a reply), never for a
time, and check what must hold: a new worker pid, new connections through the new
worker, the transfer of the other worker completing byte-exact, the forward answering
again, the event reported, nothing left behind. Killing the namespace child, or a worker
with max_restarts=0, fails the network with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import ringnet
from ringnet import _ctlsock
from ringnet.errors import RingnetError

from conftest import (HANG_S, as_user_argv, child_env, counter_reaches, needs_userns, ringnet_cmd,
                      wait_until, worker_counter)
from localdns import free_port

GW = "10.0.2.2"
TOTAL = 24 << 20     # bytes of the held transfer

# Inside: connect to the sink, send TOTAL bytes of a seeded pattern, print the sink's
# reply (sha256 and length) and our own digest.
CLIENT = r"""
import hashlib, random, socket, sys
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
h = hashlib.sha256()
s = socket.create_connection((host, port), timeout=600)
print(s.getsockname()[1], flush=True)
left = total
while left:
    chunk = rng.randbytes(min(left, 1 << 16))
    h.update(chunk)
    s.sendall(chunk)
    left -= len(chunk)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    d = s.recv(256)
    if not d:
        break
    reply += d
print(reply.decode().strip(), h.hexdigest(), flush=True)
"""

# Inside: N short connections to the echo server; prints how many echoed correctly.
CHURN = r"""
import os, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for _ in range(n):
    msg = os.urandom(64)
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(64)
            if not d:
                break
            got += d
        ok += got == msg
print(ok, flush=True)
"""

# Inside: one connection to the echo server; each line on stdin is sent and must come
# back ("ok"); an error ends it, printing the error's class.
LINES = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
print(s.getsockname()[1], flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        d = s.recv(256)
    except OSError as e:
        print(type(e).__name__, flush=True)
        break
    print("ok" if d == line.encode() else f"bad {d!r}", flush=True)
"""

# Inside: an echo server on port argv[1], one thread per connection.
ECHO = r"""
import socket, sys, threading
srv = socket.create_server(("::", int(sys.argv[1])), family=socket.AF_INET6, dualstack_ipv6=True)
def serve(c):
    with c:
        while d := c.recv(65536):
            c.sendall(d)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _expect_reset(client: subprocess.Popen) -> None:
    """``client`` runs LINES on a connection its (killed) worker held: the next line it
    sends is answered with a reset (the replacement has no flow for it), and it exits 0."""
    client.stdin.write("again\n")
    client.stdin.flush()
    assert client.stdout.readline() == "ConnectionResetError\n"
    client.stdin.close()
    assert client.wait(HANG_S) == 0
    client.stdout.close()


class _LoopbackServer:
    """A TCP server on host loopback: each accepted connection is served by ``_serve(c)``
    (the subclass's) in a thread of its own; close() closes the listener and every
    connection."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.srv.close()
        for c in self.conns:
            c.close()


class HeldSink(_LoopbackServer):
    """A TCP sink on host loopback that reads ``hold`` bytes of each connection, then
    stops reading until ``release()``: the sender's flow stays open, its window full,
    for as long as the test wants. At EOF it answers "sha256 length"."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.held = threading.Event()      # the first connection reached ``hold`` bytes
        self.go = threading.Event()
        super().__init__()

    def _serve(self, c: socket.socket) -> None:
        h, n = hashlib.sha256(), 0
        try:
            while True:
                if n >= self.hold and not self.go.is_set():
                    self.held.set()
                    self.go.wait()
                d = c.recv(min(1 << 16, self.hold - n) if n < self.hold else 1 << 16)
                if not d:
                    break
                h.update(d)
                n += len(d)
            c.sendall(f"{h.hexdigest()} {n}\n".encode())
        except OSError:
            pass
        finally:
            c.close()

    def release(self) -> None:
        self.go.set()

    def close(self) -> None:
        self.go.set()
        super().close()


def _owner(net, guest_port: int, remote_port: int) -> int:
    """The worker that owns the TCP flow guest_port -> remote_port (from the flow table)."""
    got: list = []

    def find() -> bool:
        rows = net.flows()
        rows = rows[(rows["proto"] == "tcp") & (rows["guest_port"] == guest_port)
                    & (rows["remote_port"] == remote_port)]
        got[:] = [int(r) for r in rows["worker"]]
        return bool(got)
    wait_until(find, f"the flow from port {guest_port} in the flow table")
    return got[0]


def _events(net, kind: str) -> list[dict]:
    return [e for e in net.events() if e["kind"] == kind]


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


@needs_userns
def test_sigkill_worker_replaced_other_flow_unaffected(no_leaks, tmp_path):
    """Two workers, a long ping and a transfer held open on one worker; SIGKILL the other.
    It is replaced (new pid, event reported), ping replies go on, new connections work
    through the new worker, and the transfer completes byte-exact. A connection of the
    killed worker is reset on its next segment (the replacement has no flow for it)."""
    sink = HeldSink(hold=4 << 20)
    echo = _HostEcho()
    echo_port = echo.port
    ping_out = tmp_path / "ping.txt"
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True) as net:
            old_pids = net.worker_pids
            with open(ping_out, "w") as f:
                ping = net.spawn(["ping", "-i", "0.2", GW], stdout=f, stderr=subprocess.STDOUT)
            wait_until(lambda: sum("bytes from" in x for x in _lines(ping_out)) >= 2,
                       "ping replies before the kill", interval=0.05)
            client = net.spawn([sys.executable, "-c", CLIENT, GW, str(sink.port), str(TOTAL)],
                               stdout=subprocess.PIPE, text=True)
            guest_port = int(client.stdout.readline())
            wait_until(sink.held.is_set, "the sink to hold the transfer")
            keep = _owner(net, guest_port, sink.port)
            victim = 1 - keep
            # a connection owned by the worker we kill (flows hash to workers: try again
            # until one lands there; each try is a coin toss)
            for _ in range(24):
                doomed = net.spawn([sys.executable, "-c", LINES, GW, str(echo_port)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                doomed_port = int(doomed.stdout.readline())
                if _owner(net, doomed_port, echo_port) == victim:
                    break
                doomed.stdin.close()
                doomed.wait(HANG_S)
                doomed.stdout.close()
            else:
                raise AssertionError("24 connections in a row hashed to one worker")
            doomed.stdin.write("hello\n")
            doomed.stdin.flush()
            assert doomed.stdout.readline() == "ok\n"
            before = sum("bytes from" in x for x in _lines(ping_out))

            os.kill(old_pids[victim], signal.SIGKILL)
            wait_until(lambda: _events(net, "worker_restarted"), "the worker_restarted event")

            [ev] = _events(net, "worker_restarted")
            assert ev["child"] == f"worker {victim}"
            assert ev["old_pid"] == old_pids[victim]
            assert ev["reason"] == "killed by SIGKILL" and ev["status"] == -signal.SIGKILL
            new_pids = net.worker_pids
            assert new_pids[keep] == old_pids[keep]
            assert new_pids[victim] == ev["pid"] != old_pids[victim]
            assert net.failed_children() == []
            # the killed worker's connection: reset by the replacement at its next segment
            _expect_reset(doomed)
            # the event through the control socket too (ringnet's clients)
            assert _ctlsock.query(net.control_socket, "events", {})[0]["kind"] == "worker_restarted"

            # ping goes on: replies after the kill
            wait_until(lambda: sum("bytes from" in x for x in _lines(ping_out)) >= before + 5,
                       "ping replies after the replacement", interval=0.05)
            # new connections, some of which hash to the new worker, all work
            churn = net.run([sys.executable, "-c", CHURN, GW, str(echo_port), "32"],
                            capture_output=True, text=True, timeout=HANG_S)
            assert churn.stdout.split() == ["32"], churn.stderr
            assert net.counters()["workers"][victim]["tcp_established"] >= 1

            # the held transfer on the surviving worker completes byte-exact
            sink.release()
            out, _ = client.communicate(timeout=HANG_S)
            theirs, n, ours = out.split()
            assert (theirs, int(n)) == (ours, TOTAL)
            assert client.returncode == 0
            ping.terminate()
            ping.wait()
    finally:
        sink.close()
        echo.close()


@needs_userns
def test_restart_reestablishes_published_port(no_leaks):
    """One worker behind a published port: each time it is killed, its replacement
    accepts on the same host port again (the orchestrator keeps the listener)."""
    port, inside = free_port(), 7100
    with ringnet.Network(workers=1, publish=[f"127.0.0.1:{port}:{inside}"],
                         control_socket=False) as net:
        net.spawn([sys.executable, "-c", ECHO, str(inside)])

        def echoes() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as s:
                    s.sendall(b"ping\n")
                    return s.recv(16) == b"ping\n"
            except OSError:
                return False   # the server inside not up yet, or the worker just died
        wait_until(echoes, "the echo server behind the forward", interval=0.05)
        for round_ in (1, 2):
            pid = net.worker_pids[0]
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: len(_events(net, "worker_restarted")) == round_,
                       f"restart {round_}")
            assert net.worker_pids[0] != pid
            wait_until(echoes, f"the forward after restart {round_}", interval=0.05)
        assert [f.spec.text for f in net.forwards()] == [f"127.0.0.1:{port}:{inside}"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=HANG_S).close()


@needs_userns
def test_no_restarts_allowed_fails_the_network(no_leaks):
    """max_restarts=0: a worker's death fails the network, with the reason."""
    with ringnet.Network(workers=2, max_restarts=0, control_socket=False) as net:
        victim = net.worker_pids[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _events(net, "network_failed"), "the network_failed event")
        [ev] = net.events()
        assert ev["child"] == "worker 1"
        assert "killed by SIGKILL" in ev["reason"] and "max_restarts=0" in ev["reason"]
        assert net.state is ringnet.State.FAILED
        with pytest.raises(RingnetError, match="network failed: worker 1 .*max_restarts=0"):
            net.stats()
        assert net.failed_children() == [ev["reason"]]


@needs_userns
def test_restarts_counted_over_the_window(no_leaks):
    """max_restarts=1: one restart per RESTART_WINDOW. The window's clock is the test's,
    so no real time has to pass: a restart, the window moved on, another restart, then a
    second death within the window fails the network."""
    from ringnet._supervise import RESTART_WINDOW

    with ringnet.Network(workers=2, max_restarts=1, control_socket=False) as net:
        now = [1000.0]
        net._supervisor.clock = lambda: now[0]
        for n in (1, 2):
            os.kill(net.worker_pids[0], signal.SIGKILL)
            wait_until(lambda: len(_events(net, "worker_restarted")) == n, f"restart {n}")
            now[0] += RESTART_WINDOW + 1
        now[0] -= 1   # the last restart is now 60 s old: still inside the window
        os.kill(net.worker_pids[1], signal.SIGKILL)
        wait_until(lambda: _events(net, "network_failed"), "the network_failed event")
        [ev] = _events(net, "network_failed")
        assert ev["child"] == "worker 1"
        assert "after 1 restarts within 60 s (max_restarts=1): giving up" in ev["reason"]


@needs_userns
def test_namespace_child_killed_is_fatal(no_leaks):
    """The namespace child holds the namespace and the tun device: its death cannot be
    repaired; the network fails saying so, and close() still cleans up."""
    with ringnet.Network(workers=2, control_socket=False) as net:
        ns = net.pid
        os.kill(ns, signal.SIGKILL)
        wait_until(lambda: _events(net, "network_failed"), "the network_failed event")
        [ev] = net.events()
        assert ev["child"] == "ns"
        assert f"namespace child (pid {ns}) exited (killed by SIGKILL)" in ev["reason"]
        with pytest.raises(RingnetError, match="namespace child .* exited"):
            net.spawn(["true"])
        assert net.failed_children()


@needs_userns
def test_run_logs_the_restart():
    """`ringnet run` (as the unprivileged user when we are root) logs a warning naming the
    replaced worker, and the command goes on with a working network."""
    import pathlib
    import shutil
    import tempfile

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ringnet-supervise-"))
    os.chmod(tmp, 0o777)   # the unprivileged user's command writes here
    err = tmp / "stderr.txt"
    ready = tmp / "ready"
    # the command: a network probe loop that writes "ok" once ping works after a flag file
    script = (f"import os, subprocess, time\n"
              f"open({str(ready)!r}, 'w').close()\n"
              f"while not os.path.exists({str(ready)!r} + '.go'):\n    time.sleep(0.05)\n"
              f"r = subprocess.run(['ping', '-c', '3', '-i', '0.2', '-W', '5', {GW!r}])\n"
              f"raise SystemExit(r.returncode)\n")
    argv = as_user_argv(ringnet_cmd("run", "--workers", "2", "--no-control-socket", "--",
                                    sys.executable, "-c", script))
    with open(err, "w") as f:
        run = subprocess.Popen(argv, stderr=f, env=child_env(), cwd="/")
    try:
        wait_until(ready.exists, "the command inside to start", interval=0.05)
        workers = [p for p in _children_named(run.pid, "ringnet-worker")]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: "restarted" in err.read_text(), "the warning", interval=0.05)
        open(str(ready) + ".go", "w").close()
        assert run.wait(HANG_S) == 0, err.read_text()
        text = err.read_text()
        assert "WARNING" in text and "killed by SIGKILL" in text and "restarted: pid" in text
        assert "network failed" not in text
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _children_named(pid: int, name: str) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True) if p.name() == name]


def test_max_restarts_is_checked():
    with pytest.raises(ringnet.ConfigError, match="max_restarts=101 .* from 0 to 100"):
        ringnet.NetworkConfig(max_restarts=101)


def test_describe_status():
    from ringnet._supervise import describe_status

    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(1) == "exit status 1"
    assert json.dumps(describe_status(None)) == '"status unknown"'


# Inside: connect to each port given, N times each from a new source port; print one word
# per attempt: "ok" (connected) or the errno's name.
CONNECTS = r"""
import errno, socket, sys
host, n, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
for port in ports:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(60)
        try:
            s.connect((host, port))
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e)))
        finally:
            s.close()
    print(port, *out, flush=True)
"""


class _Acceptor(_LoopbackServer):
    """A TCP server on host loopback that accepts and closes (what a refused rule hides)."""

    def _serve(self, c: socket.socket) -> None:
        c.close()


@needs_userns
def test_restart_keeps_rules_and_forward(no_leaks):
    """A worker replaced after SIGKILL starts with the rules as they are now (the
    configured deny and one added at run time), so both workers, the survivor and the
    replacement, still refuse those flows (each counts policy_rule) while an allowed
    port connects; and a published TCP port still serves through the replacement."""
    servers = [_Acceptor() for _ in range(3)]   # denied by config, denied at run time, allowed
    denied_cfg, denied_rt, allowed = (s.port for s in servers)
    fwd_port, inside = free_port(), 7101
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True, control_socket=False,
                             rules=[f"deny tcp:{GW}:{denied_cfg}"],
                             publish=[f"127.0.0.1:{fwd_port}:{inside}"]) as net:
            net.rules.add(f"deny tcp:{GW}:{denied_rt}")
            net.spawn([sys.executable, "-c", ECHO, str(inside)])

            def echoes() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", fwd_port), timeout=HANG_S) as s:
                        s.sendall(b"ping\n")
                        return s.recv(16) == b"ping\n"
                except OSError:
                    return False   # the server inside not up yet
            wait_until(echoes, "the echo server behind the forward", interval=0.05)

            victim = net.worker_pids[1]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: _events(net, "worker_restarted"), "the restart")
            assert net.worker_pids[1] != victim
            before = [w["policy_rule"] for w in net.counters()["workers"]]
            assert before[1] == 0   # none refused yet (the dead worker's count carries on)

            def refused_by_both() -> bool:
                r = net.run([sys.executable, "-c", CONNECTS, GW, "8",
                             str(denied_cfg), str(denied_rt), str(allowed)],
                            capture_output=True, text=True, timeout=HANG_S)
                assert r.returncode == 0, r.stderr
                got = {int(line.split()[0]): line.split()[1:] for line in r.stdout.splitlines()}
                assert got[denied_cfg] == ["ECONNREFUSED"] * 8, got
                assert got[denied_rt] == ["ECONNREFUSED"] * 8, got
                assert got[allowed] == ["ok"] * 8, got
                now = [w["policy_rule"] for w in net.counters()["workers"]]
                return all(n > b for n, b in zip(now, before))
            # each round's source ports hash anew: until each worker has refused some
            wait_until(refused_by_both, "refusals counted by both workers")
            assert [r["rule"] for r in net.rules.list()] == \
                [f"deny tcp:{GW}/32:{denied_cfg}", f"deny tcp:{GW}/32:{denied_rt}"]
            # the forward: connections from many source ports, so both workers accept
            for _ in range(8):
                assert echoes(), "the forward after the restart"
    finally:
        for s in servers:
            s.close()


# Inside: a UDP echo server on port argv[1] (IPv4 and IPv6).
UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
while True:
    data, a = s.recvfrom(65535)
    s.sendto(b"echo " + data, a)
"""


@needs_userns
def test_restart_keeps_udp_forward_and_hook(no_leaks):
    """The worker serving a UDP forward (of 2 workers, the one that owns its namespace
    endpoint, _publish.udp_owner()) is killed:
    its replacement gets the forward's socket again (a datagram to the host port is
    echoed from inside), and a new hook socket: the on_connect hook decides the
    replacement's flows too (it asks, hook_asks; the hook's DENY refuses)."""
    servers = [_Acceptor() for _ in range(2)]   # denied by the hook, allowed
    denied, allowed = (s.port for s in servers)
    uport, inside = free_port(), 5354
    asked: list[int] = []

    def hook(flow):
        asked.append(flow.dst_port)
        return ringnet.DENY if flow.dst_port == denied else ringnet.ALLOW
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True, control_socket=False,
                             on_connect=hook, publish=[f"127.0.0.1:{uport}:{inside}/udp"]) as net:
            net.spawn([sys.executable, "-c", UDP_ECHO, str(inside)])
            cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            cli.settimeout(0.5)

            def udp_echoes() -> bool:
                cli.sendto(b"hi", ("127.0.0.1", uport))
                try:
                    return cli.recv(64) == b"echo hi"
                except OSError:
                    return False   # not up yet (the datagram may go before the server binds)
            try:
                wait_until(udp_echoes, "the UDP echo behind the forward", interval=0.05)
                [serving] = net._publisher._udp_owner.values()
                victim = net.worker_pids[serving]
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda: _events(net, "worker_restarted"), "the restart")
                # the replacement's counters carry on from the dead worker's
                asks0 = [w["hook_asks"] for w in net.counters()["workers"]]
                wait_until(udp_echoes, "the UDP forward after the restart", interval=0.05)
            finally:
                cli.close()

            def decided_by_both() -> bool:
                r = net.run([sys.executable, "-c", CONNECTS, GW, "8", str(denied), str(allowed)],
                            capture_output=True, text=True, timeout=HANG_S)
                assert r.returncode == 0, r.stderr
                got = {int(line.split()[0]): line.split()[1:] for line in r.stdout.splitlines()}
                assert got[denied] == ["ECONNREFUSED"] * 8, got
                assert got[allowed] == ["ok"] * 8, got
                return all(w["hook_asks"] > a
                           for w, a in zip(net.counters()["workers"], asks0))
            # each round's source ports hash anew: until the replacement (and the
            # survivor) have asked the hook
            wait_until(decided_by_both, "the replacement asking the hook")
            assert denied in asked and allowed in asked
    finally:
        for s in servers:
            s.close()


class _HostEcho(_LoopbackServer):
    """A TCP echo server on host loopback, one thread per connection."""

    @staticmethod
    def _serve(c: socket.socket) -> None:
        with c:
            try:
                while d := c.recv(4096):
                    c.sendall(d)
            except OSError:
                pass   # the killed worker's host socket was reset; or we are closing


def test_counter_array_carries_event_counts_over(no_leaks):
    """CounterArray.carry_over(): a replacement's array reads as its predecessors' event
    counts plus its own, down a chain of replacements; gauges are its own values only."""
    from ringnet._core import worker_counter_names
    from ringnet._shm import CounterArray

    names = worker_counter_names()
    gauges = ringnet.stats.gauges()
    skip = [k for k, n in enumerate(names) if n in gauges]
    ev, gauge = names.index("tcp_connects"), names.index("flows_open_tcp")
    arrays = [CounterArray.create(f"t{n}") for n in range(3)]
    writers = [CounterArray.adopt(os.dup(a.fd)) for a in arrays]   # the workers' side
    try:
        for w, (connects, open_) in zip(writers, [(7, 2), (3, 1), (1, 1)]):
            w.values[ev], w.values[gauge] = connects, open_
        arrays[1].carry_over(arrays[0], skip)
        arrays[2].carry_over(arrays[1], skip)
        assert arrays[0].snapshot(names)["tcp_connects"] == 7
        assert [arrays[n].snapshot(names)["tcp_connects"] for n in (1, 2)] == [10, 11]
        assert [arrays[n].snapshot(names)["flows_open_tcp"] for n in (1, 2)] == [1, 1]
        assert (arrays[2].value(ev), arrays[2].value(gauge)) == (11, 1)
    finally:
        for a in [*writers, *arrays]:
            a.close()


@needs_userns
def test_restart_carries_event_counters_on(no_leaks):
    """A replaced worker's event counters carry on from the dead worker's counts: what
    net.counters(), stats() and the control socket's stats show never goes back (a delta
    across the restart has no negative event counter), and new traffic adds to it. Its
    gauges are the replacement's own state: the dead worker's open flow is gone. Twice,
    so that the replacement of a replacement carries both counts on."""
    echo = _HostEcho()
    held = None
    try:
        with ringnet.Network(workers=1, allow_host_loopback=True) as net:
            gauges = ringnet.stats.gauges()
            assert {"flows_open_tcp", "netem_queued_up"} <= gauges
            assert "tcp_connects" not in gauges and "frames_in" not in gauges
            connects = 0
            for round_ in (1, 2):
                churn = net.run([sys.executable, "-c", CHURN, GW, str(echo.port), "4"],
                                capture_output=True, text=True, timeout=HANG_S)
                assert churn.stdout.split() == ["4"], churn.stderr
                # more traffic adds to what the previous worker(s) counted
                connects = counter_reaches(net, "tcp_connects", connects + 4)
                # a connection held open: a flow of the worker we kill
                held = net.spawn([sys.executable, "-c", LINES, GW, str(echo.port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                held.stdout.readline()
                wait_until(lambda: worker_counter(net, "flows_open_tcp") >= 1,
                           "the held connection's flow")
                before = net.stats()
                connects = before.workers[0]["tcp_connects"]

                os.kill(net.worker_pids[0], signal.SIGKILL)
                wait_until(lambda: len(_events(net, "worker_restarted")) == round_,
                           f"restart {round_}")
                after = net.stats()
                w = after.workers[0]
                went_back = {k: v for k, v in after.delta(before).workers[0].items()
                             if v < 0 and k not in gauges}
                assert went_back == {}
                assert w["tcp_connects"] >= connects >= 5 * round_
                assert w["frames_in"] >= before.workers[0]["frames_in"] > 0
                assert w["flows_open_tcp"] == 0   # the dead worker's flow is gone
                ctl = _ctlsock.query(net.control_socket, "stats", {})["workers"][0]
                assert ctl["tcp_connects"] >= connects and ctl["flows_open_tcp"] == 0

                # the held connection: reset by the replacement at its next segment
                _expect_reset(held)
            # the second replacement carries on from both predecessors' counts
            churn = net.run([sys.executable, "-c", CHURN, GW, str(echo.port), "4"],
                            capture_output=True, text=True, timeout=HANG_S)
            assert churn.stdout.split() == ["4"], churn.stderr
            assert counter_reaches(net, "tcp_connects", connects + 4) >= 14
    finally:
        if held is not None:   # a failure may leave it running (close() ends it)
            held.stdin.close()
            held.stdout.close()
            held.wait(HANG_S)
        echo.close()
