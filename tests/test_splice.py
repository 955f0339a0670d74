"""The splice route of forwards (csrc/splice.c), end to end through a real namespace.

Clients on host loopback take it: the worker connects a socket the namespace child made
inside the namespace (to its loopback, else to the forward's address) and relays the two
sockets with splice(). Checked here with real servers inside (an HTTP
server from python's http.server with PUT added, a "whoami" server answering with the
address it sees, a sink that answers after the client's half-close): 256 MiB GET and PUT
byte-exact over IPv4 and IPv6, the source the namespace sees, the fallback to the
forward's address, a refused connect, the flow in flows(), and no fds left behind. A
client on a non-loopback address takes the C-core route on the same forward and keeps its
real source (in a user+net namespace of the test's own, where an address on its loopback
stands in for one of this machine's).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import textwrap

import pytest

import ringnet
from conftest import needs_userns, wait_until, worker_counter
from forwards import (OUTER_ADDR, SINK, WHOAMI_AT, ask, in_outer_namespace, served,
                      uploaded_loopback)
from localdns import free_port

HTTP_PORT, WHOAMI_PORT, GUEST_ONLY_PORT, SINK_PORT, CLOSED_PORT = 8000, 7000, 7001, 7002, 7003
BIG = 256 << 20

HTTPD = textwrap.dedent("""
    import functools, hashlib, http.server, socket, sys

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_PUT(self):
            left = n = int(self.headers["Content-Length"])
            h = hashlib.sha256()
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            body = f"{h.hexdigest()} {n - left}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    Server(("::", int(sys.argv[2])), functools.partial(Handler, directory=sys.argv[1])).serve_forever()
""")


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    """256 MiB of random bytes in a file the HTTP server serves, and their SHA-256."""
    d = tmp_path_factory.mktemp("www")
    h = hashlib.sha256()
    with open(d / "blob", "wb") as f:
        for _ in range(BIG >> 24):
            chunk = os.urandom(1 << 24)
            h.update(chunk)
            f.write(chunk)
    return d, h.hexdigest()


@pytest.fixture(scope="module")
def net(blob):
    """Two workers, the servers inside: HTTP (every address), whoami (every address and
    the guest address only), the sink."""
    with ringnet.Network(workers=2, control_socket=False) as n:
        n.spawn([sys.executable, "-c", HTTPD, str(blob[0]), str(HTTP_PORT)])
        n.spawn([sys.executable, "-c", WHOAMI_AT, "::", str(WHOAMI_PORT)])
        n.spawn([sys.executable, "-c", WHOAMI_AT, "10.0.2.100", str(GUEST_ONLY_PORT)])
        n.spawn([sys.executable, "-c", SINK, str(SINK_PORT)])
        yield n


def _request(addr: str, port: int, method: str, body=None, length: int = 0):
    """One HTTP request: (status, SHA-256 of the response body, its length, its first 200
    bytes), or None when the server inside is not listening yet."""
    try:
        c = http.client.HTTPConnection(addr, port, timeout=120)
        headers = {"Content-Length": str(length)} if body is not None else {}
        c.request(method, "/blob", body=body, headers=headers)
        r = c.getresponse()
        h, n, head = hashlib.sha256(), 0, b""
        while chunk := r.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
            head = head or chunk[:200]
        c.close()
        return r.status, h.hexdigest(), n, head
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
            http.client.RemoteDisconnected):
        return None


def _wait_http(addr: str, port: int) -> None:
    def up():
        try:
            with socket.create_connection((addr, port), timeout=60) as s:
                s.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/")
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
            return False
    wait_until(up, f"the HTTP server behind {addr}:{port}", interval=0.05)


def _chunks(n: int, seed: bytes):
    """n bytes of a deterministic pseudo-random stream (SHA-256 in counter mode is too
    slow for 256 MiB: 1 MiB random block, each copy prefixed differently), and the hash."""
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    parts = []
    for i in range(n >> 20):
        part = i.to_bytes(8, "little") + seed + block[16:]
        h.update(part)
        parts.append(part)
    return parts, h.hexdigest()


@needs_userns
@pytest.mark.parametrize("family", [4, 6])
def test_256mib_get_and_put_byte_exact(net, blob, family):
    """256 MiB GET and 256 MiB PUT through a forward from host loopback, on the splice
    route, IPv4 and IPv6: the SHA-256 on the far side matches."""
    lo = "127.0.0.1" if family == 4 else "::1"
    port = free_port(lo)
    opened = worker_counter(net, "splice_opened")
    with net.publish(f"[{lo}]:{port}:{HTTP_PORT}" if family == 6 else f"{lo}:{port}:{HTTP_PORT}"):
        _wait_http(lo, port)
        got = _request(lo, port, "GET")
        assert got is not None and got[:3] == (200, blob[1], BIG)
        parts, digest = _chunks(BIG, b"put-%d---" % family)

        class Body:  # a file-like body: http.client sends it in blocks
            def __init__(self):
                self.i = 0

            def read(self, _n=-1):
                if self.i == len(parts):
                    return b""
                self.i += 1
                return parts[self.i - 1]
        put = _request(lo, port, "PUT", Body(), BIG)
    assert put is not None and put[0] == 200
    assert put[3].decode() == f"{digest} {BIG}"
    assert worker_counter(net, "splice_opened") - opened >= 2


@needs_userns
def test_put_answer_is_the_senders_hash(net):
    """The PUT answer carries the server's SHA-256 of what arrived: compare it (32 MiB)."""
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{HTTP_PORT}"):
        _wait_http("127.0.0.1", port)
        data = os.urandom(32 << 20)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("PUT", "/blob", body=data, headers={"Content-Length": str(len(data))})
        r = c.getresponse()
        answer = r.read().decode().split()
        c.close()
    assert r.status == 200
    assert answer == [hashlib.sha256(data).hexdigest(), str(len(data))]


@needs_userns
def test_half_close_reaches_the_server(net):
    """The client's shutdown(SHUT_WR) becomes the server's end of file; its answer still
    comes back over the other direction."""
    data = os.urandom(8 << 20)
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{SINK_PORT}"):
        assert uploaded_loopback(port, data) == [hashlib.sha256(data).hexdigest(), str(len(data))]


@needs_userns
@pytest.mark.parametrize("lo", ["127.0.0.1", "::1"])
def test_loopback_client_appears_from_namespace_loopback(net, lo):
    port = free_port(lo)
    spec = f"[{lo}]:{port}:{WHOAMI_PORT}" if ":" in lo else f"{lo}:{port}:{WHOAMI_PORT}"
    opened = worker_counter(net, "splice_opened")
    with net.publish(spec):
        host, _, _ = served(lo, port)
    assert host == lo
    assert worker_counter(net, "splice_opened") > opened


@needs_userns
def test_server_on_guest_address_only_is_reached(net):
    """Nothing on the namespace's loopback: the worker asks again for the forward's
    address, and the server sees the connection from the namespace's own address."""
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{GUEST_ONLY_PORT}"):
        host, _, _ = served("127.0.0.1", port)
    assert host == "10.0.2.100"


@needs_userns
def test_nothing_listening_inside_resets_the_client(net):
    port = free_port()
    refused = worker_counter(net, "splice_refused")
    with net.publish(f"127.0.0.1:{port}:{CLOSED_PORT}"):
        with pytest.raises((ConnectionResetError, ConnectionRefusedError)):
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                if s.recv(1) == b"":
                    raise AssertionError("orderly close instead of a reset")
    assert worker_counter(net, "splice_refused") > refused


@needs_userns
def test_spliced_flow_is_listed_then_gone(net):
    """An open spliced connection is a flow in flows(): state SPLICED, the forward's
    namespace address and port, the client on host loopback; it goes once closed."""
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{HTTP_PORT}"):
        _wait_http("127.0.0.1", port)
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        own = s.getsockname()[1]

        def row():
            f = net.flows()
            return f[(f["remote_port"] == own) & (f["remote"] == "127.0.0.1")]
        wait_until(lambda: len(row()) == 1 and row()["state"][0] == "SPLICED", "the spliced flow")
        r = row()[0]
        assert (r["proto"], r["guest"], r["guest_port"]) == ("tcp", "10.0.2.100", HTTP_PORT)
        request = b"GET /blob HTTP/1.0\r\n\r\n"
        s.sendall(request)
        n = 0
        while n < (8 << 20) and (chunk := s.recv(1 << 20)):
            n += len(chunk)
        # the flow counts what it moved: all we received came through it, the request too
        r = row()[0]
        assert r["bytes_in"] >= n and r["bytes_out"] == len(request)
        while chunk := s.recv(1 << 20):
            n += len(chunk)
        s.close()
        assert n > BIG
        wait_until(lambda: len(row()) == 0, "the spliced flow to end")


# In a namespace of its own (forwards.in_outer_namespace), as the module's network is set
# up: two workers, the whoami server on every address; one forward on every IPv4 address,
# a client on its loopback, then 8 from the outer address (which stands in for a
# non-loopback address of this machine), with the splice and C-core counters around them
NON_LOOPBACK_CLIENT = textwrap.dedent("""
    import sys
    import ringnet
    from conftest import worker_counter
    from forwards import WHOAMI_AT, ask, served
    from localdns import free_port
    from test_splice import WHOAMI_PORT

    def main(addr):
        with ringnet.Network(workers=2, control_socket=False) as n:
            n.spawn([sys.executable, "-c", WHOAMI_AT, "::", str(WHOAMI_PORT)])
            port = free_port("0.0.0.0")
            with n.publish(f"0.0.0.0:{port}:{WHOAMI_PORT}"):
                loopback = served("127.0.0.1", port)[0]
                opened = worker_counter(n, "splice_opened")
                tcp_in = worker_counter(n, "fwd_accepted")
                seen = [ask(addr, port, bind=(addr, 0)) for _ in range(8)]
                return {"loopback": loopback, "seen": seen,
                        "spliced": worker_counter(n, "splice_opened") - opened,
                        "accepted": worker_counter(n, "fwd_accepted") - tcp_in}
""")


@needs_userns
def test_non_loopback_client_takes_the_c_core_with_its_real_source():
    """One forward on every IPv4 address: a client on loopback is spliced (seen from the
    namespace's loopback), a client on a non-loopback address goes through the C core
    and is seen with its real address and port."""
    got = in_outer_namespace(NON_LOOPBACK_CLIENT)
    assert got["loopback"] == "127.0.0.1"
    assert len(got["seen"]) == 8
    for one in got["seen"]:
        assert one is not None
        host, seen_port, own_port = one
        assert (host, seen_port) == (OUTER_ADDR, own_port)
    assert got["spliced"] == 0
    assert got["accepted"] == 8


POOL = 32  # RN_SPLICE_POOL: empty pipes a worker keeps for its next connections
STOCK = 16  # RN_SPLICE_STOCK: fresh namespace sockets a worker keeps per family


def _worker_fds(net) -> tuple[int, int]:
    """(fds that are not pipes, pipe fds) of the workers."""
    other = pipes = 0
    for pid in net.worker_pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("pipe:"):
                pipes += 1
            else:
                other += 1
    return other, pipes


@needs_userns
def test_sequential_spliced_connections_leave_no_flows_or_fds(net):
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}"):
        served("127.0.0.1", port)
        wait_until(lambda: worker_counter(net, "flows_open_splice") == 0, "the first flow to end")
        fds = _worker_fds(net)
        opened = worker_counter(net, "splice_opened")
        for _ in range(300):
            assert ask("127.0.0.1", port) is not None
        assert worker_counter(net, "splice_opened") - opened == 300
        wait_until(lambda: worker_counter(net, "flows_open_splice") == 0, "the flows to end")
        # the connections' sockets are closed: what a worker holds beyond its count before
        # is at most its stock of fresh namespace sockets (refilled in batches, so it
        # varies), and pipes only in the bounded pool of empty ones
        n = len(net.worker_pids)
        other, pipes = _worker_fds(net)
        assert other <= fds[0] + n * 2 * STOCK
        assert pipes <= fds[1] + n * POOL * 2
