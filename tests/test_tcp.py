"""TCP end to end: real applications inside the namespace, real servers on host loopback.

Servers listen on 127.0.0.1 or ::1 and are reached from inside as the gateway
addresses (10.0.2.2, fd00::2) with allow_host_loopback=True; no traffic goes anywhere
else. Every transfer is checked byte for byte (sha256 at both ends).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import pytest

import ringnet
from conftest import HANG_S, counter_reaches, needs_userns, wait_until, worker_counter

pytestmark = needs_userns

GW4, GW6 = "10.0.2.2", "fd00::2"
# Socket timeouts in the scripts run inside (60 s) are hang detectors, like HANG_S.
MIB = 1 << 20
GIB = 1 << 30


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def worker_tcp_sockets(net) -> int:
    n = 0
    for pid in net.worker_pids:
        n += len([c for c in psutil.Process(pid).net_connections(kind="tcp")])
    return n


def run_inside(net, code: str, timeout: float = 120) -> str:
    r = net.run([sys.executable, "-c", code], capture_output=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout.decode()[-2000:], r.stderr.decode()[-3000:])
    return r.stdout.decode()


class Server:
    """A TCP server on host loopback; handler(conn) runs in a thread per connection."""

    def __init__(self, handler, family: int = socket.AF_INET, backlog: int = 256):
        self.sock = socket.socket(family)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.results: list = []
        self.errors: list = []
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._one, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with conn:
                r = self.handler(conn)
                if r is not None:
                    self.results.append(r)
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))

    def join(self, timeout: float = HANG_S) -> None:
        deadline = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def recv_all(conn: socket.socket) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    while True:
        d = conn.recv(4 * MIB)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def send_random(conn: socket.socket, total: int) -> str:
    h, left = hashlib.sha256(), total
    while left:
        d = os.urandom(min(MIB, left))
        conn.sendall(d)
        h.update(d)
        left -= len(d)
    return h.hexdigest()


@pytest.fixture(scope="module")
def net():
    with ringnet.Network(allow_host_loopback=True, workers=2) as n:
        yield n


# --- throughput with real tools ----------------------------------------------------------------

IPERF_CASES = [(65520, False), (65520, True), (1500, False), (1500, True)]


@pytest.mark.parametrize("mtu,reverse", IPERF_CASES, ids=[f"mtu{m}-{'host2ns' if r else 'ns2host'}"
                                                          for m, r in IPERF_CASES])
def test_iperf3_through_gateway(mtu, reverse):
    port = free_port()
    srv = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port), "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ringnet.Network(allow_host_loopback=True, workers=2, mtu=mtu) as n:
            wait_until(lambda: any(c.laddr.port == port for c in psutil.net_connections("tcp")
                                   if c.status == psutil.CONN_LISTEN), "iperf3 server")
            argv = ["iperf3", "-c", GW4, "-p", str(port), "-t", "2", "-J"] + (["-R"] if reverse else [])
            r = n.run(argv, capture_output=True, timeout=2 * HANG_S)
            assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
            end = json.loads(r.stdout)["end"]
            # No rate is asserted (it depends on the machine's load): the rate is a
            # benchmark figure (perf/); this checks that a real tool's stream works
            assert end["sum_received"]["bytes"] > 0
            assert counter_reaches(n, "tcp_established", 2) >= 2  # control and data
    finally:
        srv.kill()
        srv.wait()


# --- HTTP, IPv4 and IPv6 -----------------------------------------------------------------------


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_http_fetch(net, tmp_path, family):
    body = os.urandom(5 * MIB + 123)
    (tmp_path / "blob").write_bytes(body)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    class V6(http.server.ThreadingHTTPServer):
        address_family = family

    httpd = V6(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0),
               lambda *a, **kw: Quiet(*a, directory=str(tmp_path), **kw))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        host = f"[{GW6}]" if family == socket.AF_INET6 else GW4
        url = f"http://{host}:{httpd.server_address[1]}/blob"
        if shutil.which("curl"):
            r = net.run(["curl", "--fail", "-sS", "--max-time", str(int(HANG_S)), url],
                        capture_output=True, timeout=2 * HANG_S)
            assert r.returncode == 0, r.stderr.decode()
            got = r.stdout
        else:
            code = f"import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen({url!r}).read())"
            got = net.run([sys.executable, "-c", code], capture_output=True,
                          timeout=2 * HANG_S).stdout
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- bulk transfers, byte-exact -----------------------------------------------------------------

UPLOAD = r'''
import hashlib, os, socket
s = socket.create_connection(({host!r}, {port}), timeout=60)
h, left = hashlib.sha256(), {size}
while left:
    d = os.urandom(min(1 << 20, left))
    s.sendall(d); h.update(d); left -= len(d)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    reply += d
print(h.hexdigest(), reply.decode())
'''

DOWNLOAD = r'''
import hashlib, socket
s = socket.create_connection(({host!r}, {port}), timeout=60)
h, n = hashlib.sha256(), 0
while True:
    d = s.recv(4 << 20)
    if not d:
        break
    h.update(d); n += len(d)
print(n, h.hexdigest())
'''


def upload(net, size: int, family=socket.AF_INET, timeout: float = 180) -> None:
    def handler(conn):
        n, digest = recv_all(conn)
        conn.sendall(f"{n} {digest}".encode())
        return n, digest

    srv = Server(handler, family)
    try:
        host = GW6 if family == socket.AF_INET6 else GW4
        out = run_inside(net, UPLOAD.format(host=host, port=srv.port, size=size), timeout)
        srv.join()
        assert not srv.errors
        sent_digest, n, got_digest = out.split()
        assert int(n) == size and got_digest == sent_digest
        assert srv.results == [(size, sent_digest)]
    finally:
        srv.close()


def download(net, size: int, family=socket.AF_INET, timeout: float = 180) -> None:
    srv = Server(lambda conn: send_random(conn, size), family)
    try:
        host = GW6 if family == socket.AF_INET6 else GW4
        out = run_inside(net, DOWNLOAD.format(host=host, port=srv.port), timeout)
        srv.join()
        assert not srv.errors
        n, digest = out.split()
        assert int(n) == size and [digest] == srv.results
    finally:
        srv.close()


def test_one_gib_namespace_to_host(net):
    upload(net, GIB)


def test_one_gib_host_to_namespace(net):
    download(net, GIB)


def test_bulk_ipv6_both_ways(net):
    upload(net, 64 * MIB, socket.AF_INET6)
    download(net, 64 * MIB, socket.AF_INET6)


def test_near_host_socket_gets_its_window_clamped(net):
    """A flow's host socket on a near path (host loopback: minimum RTT a few microseconds)
    gets its receive window clamped (tcp_send.c, counted in tcp_window_clamps) as the
    namespace takes its bytes, and the download stays byte-exact. (What the clamp is for,
    fewer spurious retransmissions of a loopback sender, depends on scheduling: perf.ab
    measures it, tcp_rev.)"""
    before = worker_counter(net, "tcp_window_clamps")
    download(net, 16 * MIB)
    counter_reaches(net, "tcp_window_clamps", before + 1)


CONCURRENT = r'''
import asyncio, hashlib, random, struct
async def one(i):
    rnd = random.Random(i)
    up, down, seed = rnd.randrange(0, 1 << 20), rnd.randrange(0, 1 << 20), rnd.getrandbits(32)
    r, w = await asyncio.open_connection({host!r}, {port})
    w.write(struct.pack("!III", up, down, seed))
    w.write(random.Random(seed).randbytes(up))
    await w.drain()
    got = await r.readexactly(down)
    tail = await r.read()
    w.close()
    ok = got == random.Random(seed + 1).randbytes(down) and tail == b""
    return ok
async def main():
    res = await asyncio.gather(*(one(i) for i in range({n})))
    print(sum(res), len(res))
asyncio.run(main())
'''


def test_200_concurrent_connections_random_sizes(net):
    def handler(conn):
        hdr = b""
        while len(hdr) < 12:
            d = conn.recv(12 - len(hdr))
            assert d
            hdr += d
        up, down, seed = struct.unpack("!III", hdr)
        want = random_bytes(seed, up)
        got = bytearray()
        while len(got) < up:
            d = conn.recv(up - len(got))
            assert d
            got += d
        conn.sendall(random_bytes(seed + 1, down))
        return bytes(got) == want

    srv = Server(handler)
    try:
        out = run_inside(net, CONCURRENT.format(host=GW4, port=srv.port, n=200), 180)
        srv.join()
        assert out.split() == ["200", "200"]
        assert not srv.errors and srv.results == [True] * 200
        wait_until(lambda: worker_counter(net, "flows_open_tcp") == 0, "flows to close")
        wait_until(lambda: worker_tcp_sockets(net) == 0, "host sockets to close")
    finally:
        srv.close()


def random_bytes(seed: int, n: int) -> bytes:
    import random
    return random.Random(seed).randbytes(n)


# --- half-close, refusal, resets -----------------------------------------------------------------

HALF_CLOSE_NS = r'''
import hashlib, os, socket
s = socket.create_connection(({host!r}, {port}), timeout=60)
req = os.urandom(1 << 20)
s.sendall(req)
s.shutdown(socket.SHUT_WR)           # the namespace side stops writing...
h, n = hashlib.sha256(), 0
while True:                          # ...and still receives the whole reply
    d = s.recv(1 << 20)
    if not d:
        break
    h.update(d); n += len(d)
print(hashlib.sha256(req).hexdigest(), n, h.hexdigest())
'''


def test_half_close_namespace_shuts_write(net):
    def handler(conn):
        n, digest = recv_all(conn)  # until the namespace's FIN
        return n, digest, send_random(conn, 3 * MIB)

    srv = Server(handler)
    try:
        out = run_inside(net, HALF_CLOSE_NS.format(host=GW4, port=srv.port)).split()
        srv.join()
        [(n, up_digest, down_digest)] = srv.results
        assert n == MIB and out[0] == up_digest
        assert out[1:] == [str(3 * MIB), down_digest]
    finally:
        srv.close()


HALF_CLOSE_HOST = r'''
import hashlib, os, socket
s = socket.create_connection(({host!r}, {port}), timeout=60)
h, n = hashlib.sha256(), 0
while True:                          # the host shuts down writing first
    d = s.recv(1 << 20)
    if not d:
        break
    h.update(d); n += len(d)
req = os.urandom(2 << 20)            # the namespace still sends after the EOF
s.sendall(req)
s.close()
print(n, h.hexdigest(), hashlib.sha256(req).hexdigest())
'''


def test_half_close_host_shuts_write(net):
    def handler(conn):
        digest = send_random(conn, MIB)
        conn.shutdown(socket.SHUT_WR)
        n, got = recv_all(conn)
        return digest, n, got

    srv = Server(handler)
    try:
        out = run_inside(net, HALF_CLOSE_HOST.format(host=GW4, port=srv.port)).split()
        srv.join()
        [(down_digest, n, up_digest)] = srv.results
        assert out == [str(MIB), down_digest, up_digest] and n == 2 * MIB
    finally:
        srv.close()


REFUSED = r'''
import errno, socket
for host in ({gw4!r}, {gw6!r}):
    try:
        socket.create_connection((host, {port}), timeout=60)
        print("connected")
    except OSError as e:
        print(type(e).__name__, errno.errorcode.get(e.errno, e.errno))
'''


def test_refused_port_econnrefused(net):
    """A closed host port: the worker's connect is refused and the namespace's connect
    fails with ECONNREFUSED, from the RST the worker sends (a timeout would be
    TimeoutError)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s6 = socket.socket(socket.AF_INET6)
    s6.bind(("::1", port))  # the same port, closed on both families
    try:
        refused, rst = (worker_counter(net, k) for k in ("tcp_connect_refused", "tcp_rst_sent"))
        out = run_inside(net, REFUSED.format(gw4=GW4, gw6=GW6, port=port)).splitlines()
        assert out == ["ConnectionRefusedError ECONNREFUSED"] * 2
        assert counter_reaches(net, "tcp_connect_refused", refused + 2) == refused + 2
        assert counter_reaches(net, "tcp_rst_sent", rst + 2) >= rst + 2
    finally:
        s.close()
        s6.close()


RESET = r'''
import socket
s = socket.create_connection(({host!r}, {port}), timeout=60)
s.sendall(b"hello")
try:
    while s.recv(100):
        pass
    print("eof")
except ConnectionResetError:
    print("reset")
'''


def test_host_rst_reaches_app(net):
    def handler(conn):
        conn.recv(5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    srv = Server(handler)
    try:
        assert run_inside(net, RESET.format(host=GW4, port=srv.port)).strip() == "reset"
    finally:
        srv.close()


CONNECT = r'''
import socket
try:
    socket.create_connection(({host!r}, {port}), timeout=60)
    print("connected")
except OSError as e:
    print(type(e).__name__)
'''


def test_host_loopback_refused_by_default():
    srv = Server(lambda c: None)
    try:
        with ringnet.Network(workers=1) as n:
            out = run_inside(n, CONNECT.format(host=GW4, port=srv.port)).strip()
            assert out in ("ConnectionRefusedError", "OSError")
            assert counter_reaches(n, "policy_refused", 1) == 1
        assert srv.accepted == 0
    finally:
        srv.close()


# --- limits: fds and flows ------------------------------------------------------------------------

SEQUENTIAL = r'''
import socket
ok = 0
for i in range({n}):
    s = socket.create_connection(({host!r}, {port}), timeout=60)
    s.sendall(b"x")
    assert s.recv(1) == b"y"
    s.close()
    ok += 1
print(ok)
'''


def test_2000_sequential_connections_with_1024_fds():
    def handler(conn):
        assert conn.recv(1) == b"x"
        conn.sendall(b"y")

    srv = Server(handler)
    try:
        with ringnet.Network(allow_host_loopback=True, workers=1) as n:
            [wpid] = n.worker_pids
            psutil.Process(wpid).rlimit(psutil.RLIMIT_NOFILE, (1024, 1024))
            out = run_inside(n, SEQUENTIAL.format(host=GW4, port=srv.port, n=2000), 300)
            assert out.strip() == "2000"
            assert counter_reaches(n, "tcp_established", 2000) == 2000
            wait_until(lambda: worker_tcp_sockets(n) == 0, "host sockets to close")
            assert psutil.Process(wpid).num_fds() < 64  # nothing else left behind
    finally:
        srv.close()


CAP = r'''
import socket
held = []
for i in range({cap}):
    held.append(socket.create_connection(({host!r}, {port}), timeout=60))
try:
    socket.create_connection(({host!r}, {port}), timeout=60)
    print("over the cap")
except ConnectionRefusedError:
    print("refused")
for s in held:                        # established flows keep working
    s.sendall(b"ping")
    assert s.recv(4) == b"pong"
print("alive", len(held))
'''


def test_flow_cap_refuses_new_keeps_established():
    def handler(conn):
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")

    srv = Server(handler)
    try:
        with ringnet.Network(allow_host_loopback=True, workers=1, max_flows=16) as n:
            out = run_inside(n, CAP.format(host=GW4, port=srv.port, cap=16)).split("\n")
            assert out[:2] == ["refused", "alive 16"]
            assert counter_reaches(n, "flows_refused_cap", 1) == 1
    finally:
        srv.close()


# --- faults and bad input ----------------------------------------------------------------------------


def test_one_gib_both_ways_with_faults():
    faults = "drop=0.01,dup=0.01,reorder=0.01,seed=1"
    with ringnet.Network(allow_host_loopback=True, workers=2, faults=faults) as n:
        upload(n, GIB, timeout=400)
        download(n, GIB, timeout=400)
        c = {k: worker_counter(n, k) for k in ("fault_drop_in", "fault_dup_in", "fault_hold_in",
                                           "fault_drop_out", "fault_dup_out", "fault_hold_out")}
        assert all(v > 0 for v in c.values()), c
        assert worker_counter(n, "tcp_retransmits") > 0


MALFORMED_TCP = r'''
import random, socket, struct
import frames as F
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("rn0", 0))
SRC, DST = "10.0.2.100", "10.0.2.2"
def tcp(sport, dport, flags, payload=b"", doff=None, opts=b"", good=True):
    off = (doff if doff is not None else (20 + len(opts)) // 4) << 4
    t = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, off, flags, 1000, 0, 0) + opts + payload
    c = F.csum(t, F.pseudo4(SRC, DST, 6, len(t))) ^ (0 if good else 0x5555)
    return F.ipv4(SRC, DST, 6, t[:16] + struct.pack("!H", c) + t[18:], df=True)
frames = {
    "drop_tcp_header": [tcp(40001, PORT, 0x10, doff=4), tcp(40001, PORT, 0x10, doff=15),
                        F.ipv4(SRC, DST, 6, bytes(12))],
    "drop_tcp_options": [tcp(40001, PORT, 0x02, opts=b"\x02\x08\x05\xb4")],
    "drop_tcp_flags": [tcp(40001, PORT, f) for f in (0x03, 0x06, 0x00, 0x01)],
    "drop_tcp_port": [tcp(0, PORT, 0x02)],
    "drop_tcp_csum": [tcp(40001, PORT, 0x02, good=False)],
    "drop_tcp_no_flow": [tcp(40002, PORT, 0x10, b"stray"), tcp(40003, PORT, 0x04)],
}
for fs in frames.values():
    for f in fs:
        s.send(f)
rnd = random.Random(7)
for i in range(300):  # random bytes behind a valid IPv4 header
    s.send(F.ipv4(SRC, DST, 6, rnd.randbytes(rnd.randrange(0, 80))))
print("sent")
'''


def test_malformed_tcp_frames_counted_live_flow_unaffected(net):
    srv = Server(lambda conn: send_random(conn, 256 * MIB))
    try:
        host_code = DOWNLOAD.format(host=GW4, port=srv.port)
        live = net.spawn([sys.executable, "-c", host_code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        wait_until(lambda: srv.accepted == 1, "the live flow")
        before = {k: worker_counter(net, k) for k in ("drop_tcp_header", "drop_tcp_options",
                                                  "drop_tcp_flags", "drop_tcp_port",
                                                  "drop_tcp_csum", "drop_tcp_no_flow")}
        r = net.run([sys.executable, "-c", MALFORMED_TCP.replace("PORT", str(srv.port))],
                    capture_output=True, timeout=2 * HANG_S,
                    env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__))))
        assert r.returncode == 0, r.stderr.decode()
        out, err = live.communicate(timeout=120)
        assert live.returncode == 0, err.decode()
        srv.join()
        n, digest = out.decode().split()
        assert int(n) == 256 * MIB and [digest] == srv.results
        for k, v in before.items():
            assert worker_counter(net, k) > v, k
        assert not net.failed_children()
    finally:
        srv.close()


def test_no_host_sockets_after_flows_close(net):
    wait_until(lambda: worker_counter(net, "flows_open_tcp") == 0, "flows to close")
    wait_until(lambda: worker_tcp_sockets(net) == 0, "host sockets to close")
    ns_unix = namespace_unix_sockets(net)
    for pid in net.worker_pids:
        kinds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [k for k in kinds if k.startswith("socket:")
                    and k not in control_sockets(pid) and k not in ns_unix], kinds


def control_sockets(pid: int) -> set[str]:
    """The worker's Unix control sockets (not flows)."""
    out = set()
    for c in psutil.Process(pid).net_connections(kind="unix"):
        if c.fd >= 0:
            out.add(os.readlink(f"/proc/{pid}/fd/{c.fd}"))
    return out


def namespace_unix_sockets(net) -> set[str]:
    """Unix sockets of the namespace's network namespace, as "socket:[INODE]": the splice
    sockets the namespace child made and passed to the workers (not flows)."""
    with open(f"/proc/{net.pid}/net/unix") as f:
        return {f"socket:[{line.split()[6]}]" for line in f.read().splitlines()[1:]}


# --- timestamps (RFC 7323) and TIME_WAIT reuse inside the namespace ----------------------------

TW_REUSE = r'''
import errno, socket, struct
TCPI_OPT_TIMESTAMPS = 1


def once(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(60)
    s.bind(("0.0.0.0", port))
    try:
        s.connect(({gw!r}, {port}))
    except OSError as e:
        s.close()
        return None, errno.errorcode[e.errno]
    ts = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[5] & TCPI_OPT_TIMESTAMPS
    s.sendall(b"ping %d" % port)
    assert s.recv(100) == b"pong %d" % port
    # Closing first, and reading to the server's FIN: the connection is in TIME_WAIT now
    s.shutdown(socket.SHUT_WR)
    assert s.recv(100) == b""
    port = s.getsockname()[1]
    s.close()
    return port, "ts" if ts else "no-ts"


port, first = once(0)
print(first)
print(once(port)[1])  # the same tuple again: only with timestamps may Linux reuse it
'''


def _pong(conn: socket.socket) -> None:
    conn.settimeout(HANG_S)
    data = conn.recv(100)
    conn.sendall(b"pong" + data[4:])
    assert conn.recv(100) == b""  # the client closes first


def _tw_reuse(n) -> list[str]:
    srv = Server(_pong)
    try:
        out = run_inside(n, TW_REUSE.format(gw=GW4, port=srv.port)).split()
        srv.join()
        assert not srv.errors, srv.errors
        return out
    finally:
        srv.close()


def test_time_wait_tuple_reused_at_once_with_timestamps(net):
    """The namespace's client closes first, so its kernel holds the connection in
    TIME_WAIT; connecting from the same port to the same server again reuses that tuple
    only if the connection had timestamps (tcp_twsk_unique(): an explicitly bound port
    needs nothing else), else connect() fails with EADDRNOTAVAIL. Our SYN-ACK claims
    them, the new SYN on the tuple the worker saw close is a new flow, and its bytes
    arrive."""
    assert _tw_reuse(net) == ["ts", "ts"]


NO_TS = r'''
import hashlib, os, socket
with open("/proc/sys/net/ipv4/tcp_timestamps", "w") as f:
    f.write("0")
s = socket.create_connection(({gw!r}, {port}), timeout=60)
assert not s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[5] & 1  # no timestamps
data = os.urandom(4 << 20)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    got += d
assert got == data[::-1][:len(got)] and len(got) == len(data), len(got)
print("ok")
'''


def _reverse(conn: socket.socket) -> None:
    conn.settimeout(HANG_S)
    got = b""
    while True:
        d = conn.recv(1 << 20)
        if not d:
            break
        got += d
    conn.sendall(got[::-1])


def test_namespace_without_timestamps_still_works():
    """With net.ipv4.tcp_timestamps=0 inside (its root may set it), the SYN has none:
    the connection has none either, and bulk data both ways is intact (segments of the
    full MSS at MTU 1500); TIME_WAIT reuse is then impossible, as on main."""
    with ringnet.Network(allow_host_loopback=True, workers=1, mtu=1500) as n:
        srv = Server(_reverse)
        try:
            assert run_inside(n, NO_TS.format(gw=GW4, port=srv.port)).split() == ["ok"]
            srv.join()
            assert not srv.errors, srv.errors
        finally:
            srv.close()
        assert _tw_reuse(n) == ["no-ts", "EADDRNOTAVAIL"]
