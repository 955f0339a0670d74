"""Flow log end to end: known transfers to host-loopback servers, the JSON lines read back.

Each test closes the network before reading the log: closing writes every record
the workers put out, including the flows they close at shutdown, so the tests
wait for nothing but the network's own teardown.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import sys
import threading

import pytest

import ringnet
from conftest import HANG_S, needs_userns, wait_until

pytestmark = needs_userns

GW4, GW6 = "10.0.2.2", "fd00::2"
GUEST4, GUEST6 = "10.0.2.100", "fd00::100"


def records(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def of_port(recs: list[dict], port: int) -> list[dict]:
    return [r for r in recs if r["remote_port"] == port]


def serve_once(handler, family=socket.AF_INET) -> tuple[int, threading.Thread]:
    """A one-connection TCP server on host loopback running ``handler(conn)``."""
    srv = socket.socket(family)
    srv.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    srv.listen(1)

    def run():
        with srv:
            conn, _ = srv.accept()
            with conn:
                handler(conn)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def run_inside(net, code: str, *args: str) -> str:
    r = net.run([sys.executable, "-c", code, *args], capture_output=True, timeout=HANG_S * 2)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout.decode()


EXCHANGE = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.sendall(b"u" * int(sys.argv[3]))
s.shutdown(socket.SHUT_WR)
n = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    n += len(d)
print(n)
'''


@pytest.mark.parametrize("family", [4, 6])
def test_flow_log_records_a_known_transfer(tmp_path, family, no_leaks):
    log = tmp_path / "flows.jsonl"
    up, down = 1_000_003, 250_007
    got = []

    def handler(conn):
        n = 0
        while True:
            d = conn.recv(1 << 20)
            if not d:
                break
            n += len(d)
        got.append(n)
        conn.sendall(b"d" * down)

    port, t = serve_once(handler, socket.AF_INET6 if family == 6 else socket.AF_INET)
    gw, guest = (GW6, GUEST6) if family == 6 else (GW4, GUEST4)
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=2,
                         flow_log=str(log)) as net:
        assert run_inside(net, EXCHANGE, gw, str(port), str(up)).strip() == str(down)
        t.join(HANG_S)
    assert got == [up]
    recs = of_port(records(log), port)
    assert [r["event"] for r in recs] == ["open", "close"], recs
    opened, closed = recs
    for r in recs:
        assert (r["proto"], r["guest"], r["remote"], r["remote_port"]) == ("tcp", guest, gw, port)
        assert r["guest_port"] == opened["guest_port"] and r["worker"] == opened["worker"]
        assert r["name"] is None and r["rule"] is None
    assert closed["bytes_in"] == up and closed["bytes_out"] == down
    assert closed["packets_in"] >= 1 and closed["packets_out"] >= 1
    assert closed["reason"] == "fin"
    assert opened["time"] <= closed["time"] and closed["opened"] <= closed["time"]
    assert abs(closed["opened"] - opened["time"]) < 0.01   # the same moment, ms resolution
    assert closed["duration"] == pytest.approx(closed["time"] - closed["opened"], abs=1e-5)


RESET = r'''
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.sendall(b"x" * 100)
assert s.recv(1) == b"k"
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
'''


def test_close_reasons(tmp_path, no_leaks):
    log = tmp_path / "flows.jsonl"
    done = threading.Event()

    def reset_by_ns(conn):
        conn.recv(100)
        conn.sendall(b"k")
        try:
            while conn.recv(65536):
                pass
        except ConnectionResetError:
            done.set()   # the namespace's RST, passed on as a reset

    def reset_by_host(conn):
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    ns_port, _ = serve_once(reset_by_ns)
    host_port, _ = serve_once(reset_by_host)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))   # bound, not listening: connects are refused
    refused_port = closed.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp_port = udp.getsockname()[1]
    try:
        with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1,
                             flow_log=str(log)) as net:
            run_inside(net, RESET, GW4, str(ns_port))
            wait_until(done.is_set, "the server to see the namespace's reset")
            run_inside(net, r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.sendall(b"h")
try:
    while s.recv(65536):
        pass
except ConnectionResetError:
    pass
''', GW4, str(host_port))
            run_inside(net, r'''
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
except ConnectionRefusedError:
    print("refused")
''', GW4, str(refused_port))
            run_inside(net, r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"z" * 321, (sys.argv[1], int(sys.argv[2])))
''', GW4, str(udp_port))
            assert len(udp.recv(1000)) == 321
    finally:
        closed.close()
        udp.close()
    recs = records(log)

    def reason(port, proto="tcp"):
        ends = [r for r in of_port(recs, port) if r["event"] == "close" and r["proto"] == proto]
        assert len(ends) == 1, of_port(recs, port)
        return ends[0]

    assert reason(ns_port)["reason"] == "ns_reset"
    assert reason(ns_port)["bytes_in"] == 100 and reason(ns_port)["bytes_out"] == 1
    assert reason(host_port)["reason"] == "host_error"
    assert reason(refused_port)["reason"] == "connect_failed"
    u = reason(udp_port, "udp")
    assert u["reason"] == "shutdown"   # still open when the network closed
    assert (u["bytes_in"], u["packets_in"], u["bytes_out"]) == (321, 1, 0)


def test_flow_log_appends_and_counts(tmp_path, no_leaks):
    log = tmp_path / "flows.jsonl"
    log.write_text('{"earlier": true}\n')
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1,
                         flow_log=str(log)) as net:
        run_inside(net, r'''
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"q", ("10.0.2.2", 9))
''')
        wait_until(lambda: net.counters()["workers"][0]["flowlog_events"] >= 1, "the open record")
        assert net.counters()["workers"][0]["flowlog_drops"] == 0
    recs = records(log)
    assert recs[0] == {"earlier": True}
    assert [r["event"] for r in of_port(recs[1:], 9)] == ["open", "close"]


def test_no_flow_log_no_records(no_leaks):
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1) as net:
        run_inside(net, r'''
import socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", ("10.0.2.2", 9))
''')
        wait_until(lambda: net.counters()["workers"][0]["udp_in"] >= 1, "the datagram")
        assert net.counters()["workers"][0]["flowlog_events"] == 0



NAMED = r'''
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    s = socket.create_connection((addr, int(port)), timeout=60)
    s.sendall(b"n")
    s.close()
'''


def test_name_and_rule_of_each_flow(tmp_path, no_leaks):
    """A flow to an address ringnet's DNS handed out for a name carries that name; a flow
    an egress rule decided carries the rule's text, one the default decided null."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (scripts/setup-test-env.sh installs it)")
    from localdns import LocalDns

    log = tmp_path / "flows.jsonl"
    ruled, other = serve_once(lambda c: c.recv(100)), serve_once(lambda c: c.recv(100))
    with LocalDns({"app.test": ("10.0.2.2",)}, ttl=300) as dns:
        with ringnet.Network(control_socket=False, workers=1, allow_host_loopback=True,
                             dns_upstream=dns.upstream, rules=[f"allow tcp:app.test:{ruled[0]}"],
                             flow_log=str(log)) as net:
            rule = net.rules.list()[0]["rule"]
            run_inside(net, NAMED, f"app.test:{ruled[0]}", f"app.test:{other[0]}")
            assert [r["hits"] for r in net.rules.list()] == [1]
    for _, t in (ruled, other):
        t.join(HANG_S)
    recs = records(log)
    a, b = of_port(recs, ruled[0]), of_port(recs, other[0])
    assert [r["event"] for r in a] == [r["event"] for r in b] == ["open", "close"], recs
    assert [(r["name"], r["rule"]) for r in a] == [("app.test", rule)] * 2
    assert [(r["name"], r["rule"]) for r in b] == [("app.test", None)] * 2   # the default
    dns_flows = [r for r in recs if r["remote_port"] == 53]
    assert dns_flows and all(r["rule"] is None for r in dns_flows)
