"""The on_connect hook (ringnet/_hook.py, csrc/verdict.c), end to end with real namespaces.

Clients run inside the namespace (python); servers listen on host loopback only, reached
through the gateway address. No assertion depends on timing: a slow hook sleeps far
longer (60 s, released at the end) than its timeout (0.3 s), and every wait has a
deadline that only turns a hang into a failure.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading

import pytest

import ringnet

from conftest import HANG_S, as_user_argv, child_env, counter_reaches, needs_userns, unpriv_user, \
    worker_counter

pytestmark = needs_userns

GW4 = "10.0.2.2"
GUEST4 = "10.0.2.100"

# A TCP client inside: connects, prints {"port": its own port, "data": what it read} or
# {"err": errno name}
TCP_CLIENT = r'''
import errno, json, socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
    port = s.getsockname()[1]
    data = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        data += b
    print(json.dumps({"port": port, "data": data.decode()}))
except OSError as e:
    print(json.dumps({"err": errno.errorcode.get(e.errno, str(e))}))
'''

# A UDP client inside: sends one datagram on a connected socket, prints the answer or the
# error its socket reports
UDP_CLIENT = r'''
import errno, json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(60)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"ping")
    print(json.dumps({"port": s.getsockname()[1], "data": s.recv(100).decode()}))
except OSError as e:
    print(json.dumps({"err": errno.errorcode.get(e.errno, str(e))}))
'''


class TcpServer:
    """Accepts on 127.0.0.1, writes ``text`` to each client and closes; counts clients."""

    def __init__(self, text: str = "hi") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.text = text.encode()
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with c:
                c.sendall(self.text)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join()


class UdpEcho:
    """Echoes datagrams on 127.0.0.1 with a prefix; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(100)
            except OSError:
                return
            if data == b"stop":
                return
            self.got += 1
            self.sock.sendto(b"echo " + data, peer)

    def close(self) -> None:
        self.sock.sendto(b"stop", self.sock.getsockname())
        self._thread.join()
        self.sock.close()


@pytest.fixture
def server():
    srv = TcpServer()
    yield srv
    srv.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_json(net: ringnet.Network, code: str, *args: object) -> dict:
    r = net.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, timeout=HANG_S)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


class Recorder:
    """A hook that records the flows it sees and answers with ``verdict(flow)``."""

    def __init__(self, verdict=lambda flow: ringnet.ALLOW) -> None:
        self.flows: list[ringnet.Flow] = []
        self.verdict = verdict
        self.lock = threading.Lock()

    def __call__(self, flow: ringnet.Flow):
        with self.lock:
            self.flows.append(flow)
        return self.verdict(flow)


def test_allow_passes_the_flow_and_the_hook_sees_its_tuple(server, no_leaks):
    hook = Recorder()
    with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=hook) as net:
        out = run_json(net, TCP_CLIENT, GW4, server.port)
        assert out["data"] == "hi"
        assert hook.flows == [ringnet.Flow("tcp", GUEST4, out["port"], GW4, server.port, None)]
        assert worker_counter(net, "hook_asks") == 1
        assert worker_counter(net, "hook_held") == 1


def test_udp_first_datagram_is_held_and_delivered(no_leaks):
    echo = UdpEcho()
    hook = Recorder()
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=hook) as net:
            out = run_json(net, UDP_CLIENT, GW4, echo.port)
            assert out["data"] == "echo ping"
            assert hook.flows == [ringnet.Flow("udp", GUEST4, out["port"], GW4, echo.port)]
    finally:
        echo.close()


def test_deny_refuses_tcp_udp_and_ping(server, no_leaks):
    echo = UdpEcho()
    hook = Recorder(lambda flow: ringnet.DENY)
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=hook) as net:
            assert run_json(net, TCP_CLIENT, GW4, server.port) == {"err": "ECONNREFUSED"}
            # ICMP administratively prohibited: Linux reports it to a connected UDP socket
            out = run_json(net, UDP_CLIENT, GW4, echo.port)
            assert out.get("err") == "EHOSTUNREACH", out
            ping = net.run(["ping", "-c", "1", "-W", "60", GW4], capture_output=True, timeout=HANG_S)
            assert ping.returncode != 0
            assert {f.protocol for f in hook.flows} == {"tcp", "udp", "icmp"}
            assert counter_reaches(net, "hook_verdicts_deny", 3) == 3
        assert server.accepted == 0 and echo.got == 0
    finally:
        echo.close()


def test_redirect_reaches_another_port_and_obeys_the_policy(server, no_leaks):
    elsewhere = free_port()
    subnet_port = free_port()

    def verdict(flow):
        if flow.dst_port == elsewhere:
            return ringnet.Redirect("127.0.0.1", server.port)
        return ringnet.Redirect("10.0.2.50", server.port)   # own subnet: the policy refuses it

    with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=Recorder(verdict)) as net:
        assert run_json(net, TCP_CLIENT, GW4, elsewhere)["data"] == "hi"
        assert run_json(net, TCP_CLIENT, GW4, subnet_port) == {"err": "ECONNREFUSED"}
        assert worker_counter(net, "hook_verdicts_redirect") == 2
        assert worker_counter(net, "hook_redirect_refused") == 1
    assert server.accepted == 1


def test_redirect_to_host_loopback_over_ipv6(no_leaks):
    srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = srv.getsockname()[1]
    got = []

    def serve():
        c, _ = srv.accept()
        with c:
            got.append(c.getpeername()[0])
            c.sendall(b"six")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    hook = Recorder(lambda flow: ringnet.Redirect("::1", port))
    try:
        with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=hook) as net:
            out = run_json(net, TCP_CLIENT, "fd00::2", free_port())
            assert out["data"] == "six"
            [flow] = hook.flows
            assert (flow.protocol, flow.src, flow.dst) == ("tcp", "fd00::100", "fd00::2")
        t.join(HANG_S)
        assert got == ["::1"]
    finally:
        srv.close()


def test_redirect_validates_its_target():
    with pytest.raises(ValueError, match="port"):
        ringnet.Redirect("127.0.0.1", 0)
    with pytest.raises(ValueError, match="not an IP address"):
        ringnet.Redirect("example.org", 80)
    assert ringnet.Redirect("::1", 8080).addr == "::1"


def test_hook_that_raises_denies_and_is_logged(server, caplog, no_leaks):
    def boom(flow):
        raise RuntimeError("hook exploded")

    with caplog.at_level(logging.ERROR, logger="ringnet._hook"):
        with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=boom) as net:
            assert run_json(net, TCP_CLIENT, GW4, server.port) == {"err": "ECONNREFUSED"}
    records = [r for r in caplog.records if r.name == "ringnet._hook"]
    assert records and records[0].exc_info and "hook exploded" in str(records[0].exc_info[1])
    assert server.accepted == 0


def test_hook_returning_junk_gets_the_fail_mode(server, caplog, no_leaks):
    with caplog.at_level(logging.ERROR, logger="ringnet._hook"):
        with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=lambda f: True) as net:
            assert run_json(net, TCP_CLIENT, GW4, server.port) == {"err": "ECONNREFUSED"}
    assert any("expected ringnet.ALLOW" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_slow_hook_times_out_denied_while_the_network_answers(server, caplog, no_leaks):
    release = threading.Event()
    entered = threading.Event()

    def slow(flow):
        entered.set()
        release.wait(60)    # far beyond the 0.3 s timeout; released at the end
        return ringnet.ALLOW

    try:
        with caplog.at_level(logging.WARNING, logger="ringnet._hook"):
            with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=slow,
                                 on_connect_timeout=0.3) as net:
                client = net.spawn([sys.executable, "-c", TCP_CLIENT, GW4, str(server.port)],
                                   stdout=subprocess.PIPE)
                assert entered.wait(HANG_S)
                # the hook is stuck in its thread: the network still answers
                stats = net.stats()
                assert stats.total("hook_asks") == 1
                assert len(net.flows()) >= 0
                out, _ = client.communicate(timeout=HANG_S)
                assert json.loads(out) == {"err": "ECONNREFUSED"}
        assert any("no verdict within" in r.getMessage() for r in caplog.records)
        assert server.accepted == 0
    finally:
        release.set()


def test_cache_asks_once_per_destination(server, no_leaks):
    hook = Recorder()
    with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=hook,
                         on_connect_cache=3600) as net:
        for _ in range(4):
            assert run_json(net, TCP_CLIENT, GW4, server.port)["data"] == "hi"
        assert len(hook.flows) == 1
        assert worker_counter(net, "hook_cached") == 3
    hook = Recorder()
    with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=hook) as net:
        for _ in range(3):
            assert run_json(net, TCP_CLIENT, GW4, server.port)["data"] == "hi"
        assert len(hook.flows) == 3      # no cache by default: every flow is asked
    assert server.accepted == 7


def test_cached_deny_refuses_at_once(server, no_leaks):
    hook = Recorder(lambda flow: ringnet.DENY)
    with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=hook,
                         on_connect_cache=3600) as net:
        for _ in range(2):
            assert run_json(net, TCP_CLIENT, GW4, server.port) == {"err": "ECONNREFUSED"}
        assert len(hook.flows) == 1
        assert worker_counter(net, "hook_denied") == 1


def test_fail_open_allows_when_the_hook_fails(server, no_leaks):
    def boom(flow):
        raise RuntimeError("hook exploded")

    with ringnet.Network(workers=1, allow_host_loopback=True, on_connect=boom,
                         on_connect_fail="allow") as net:
        assert run_json(net, TCP_CLIENT, GW4, server.port)["data"] == "hi"


def test_policy_comes_first(server, no_leaks):
    """Without allow_host_loopback the gateway is refused before the hook is asked."""
    hook = Recorder()
    with ringnet.Network(workers=1, on_connect=hook) as net:
        assert run_json(net, TCP_CLIENT, GW4, server.port) == {"err": "ECONNREFUSED"}
        assert hook.flows == [] and worker_counter(net, "policy_refused") == 1


@pytest.mark.parametrize("field,value,match", [
    ("on_connect", 42, "on_connect=42 must be a callable"),
    ("on_connect_timeout", 0, "on_connect_timeout=0 must be"),
    ("on_connect_timeout", 61, "on_connect_timeout=61 must be"),
    ("on_connect_cache", -1, "on_connect_cache=-1 must be"),
    ("on_connect_fail", "open", "on_connect_fail='open' must be one of 'deny', 'allow'"),
])
def test_bad_options_are_named(field, value, match):
    with pytest.raises(ringnet.ConfigError, match=match):
        ringnet.NetworkConfig(**{field: value})


HOOK_AS_USER = r'''
import json, os, socket, sys, threading, ringnet
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]
def serve():
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            c.sendall(b"hi")
threading.Thread(target=serve, daemon=True).start()
denied = port + 1 if port < 65535 else port - 1
seen = []
def hook(flow):
    seen.append(flow.dst_port)
    if flow.dst_port == denied:
        return ringnet.DENY
    return ringnet.Redirect("127.0.0.1", port) if flow.dst_port != port else ringnet.ALLOW
client = sys.argv[1]
with ringnet.Network(workers=2, allow_host_loopback=True, on_connect=hook) as net:
    out = [json.loads(net.run([sys.executable, "-c", client, "10.0.2.2", str(p)],
                              capture_output=True, timeout=60).stdout) for p in (port, denied)]
print(json.dumps({"uid": os.getuid(), "out": out, "seen": seen, "want": [port, denied]}))
'''


@pytest.mark.unpriv
def test_hook_as_unprivileged_user():
    uid, _ = unpriv_user()
    r = subprocess.run(as_user_argv([sys.executable, "-c", HOOK_AS_USER, TCP_CLIENT]),
                       capture_output=True, text=True, timeout=180, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["uid"] == uid
    assert res["out"][0]["data"] == "hi"
    assert res["out"][1] == {"err": "ECONNREFUSED"}
    assert res["seen"] == res["want"]
