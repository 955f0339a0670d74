"""The splice socket's two ends (csrc/splice.c), in-process, with real sockets.

The namespace child's end (rn_splice_serve()) answers a request for N sockets with N fresh
non-blocking TCP sockets, ignores malformed requests and reports the worker's end of file.
The worker's end takes only what it asked for: a malformed message, a batch nobody asked
for, or an fd that is not an unconnected TCP socket of the family asked for is dropped and
counted (splice_bad_replies) and its fds closed; a good batch fills the stock. Then the
whole route in one process, host loopback standing in for the namespace: accept, connect a
stock socket, relay both ways with a half-close (also run under ASan+UBSan:
scripts/test.sh --sanitize tests/test_splice_proto.py).
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
import time

import pytest

from ringnet._ringnet_c import lib

from forwards import upload_loopback
from test_worker_input import Harness

HDR = struct.Struct("<IHHI")
MAGIC, VERSION, REQ, FD = 0x54434E52, 1, 25, 26
STOCK = 16


def req(count: int, family: int) -> bytes:
    return HDR.pack(MAGIC, VERSION, REQ, 8) + struct.pack("<IBBH", count, family, 0, 0)


def answer(count: int, family: int, err: int = 0) -> bytes:
    return HDR.pack(MAGIC, VERSION, FD, 8) + struct.pack("<IBBH", count, family, 0, err)


def recv_msg(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, anc, _, _ = sock.recvmsg(64, socket.CMSG_LEN(32 * 4))
    fds = array.array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % 4])
    return data, list(fds)


def test_serve_makes_fresh_nonblocking_tcp_sockets():
    ns, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ns, worker:
        worker.send(req(3, 4))
        worker.send(b"garbage")                      # ignored
        worker.send(req(STOCK + 1, 4))               # too many: ignored
        worker.send(req(2, 6))
        assert lib.rn_splice_serve(ns.fileno()) == 0
        for family, n in ((socket.AF_INET, 3), (socket.AF_INET6, 2)):
            data, fds = recv_msg(worker)
            assert data == answer(n, 4 if family == socket.AF_INET else 6)
            assert len(fds) == n
            for fd in fds:
                s = socket.socket(fileno=fd)
                assert (s.family, s.type, s.proto) == (family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                assert not os.get_blocking(fd)
                try:
                    s.getpeername()
                    raise AssertionError("a fresh socket is connected")
                except OSError as e:
                    assert e.errno == errno.ENOTCONN
                s.close()
        worker.setblocking(False)
        try:
            worker.recv(64)
            raise AssertionError("an answer to a malformed request")
        except BlockingIOError:
            pass
        worker.shutdown(socket.SHUT_WR)
        assert lib.rn_splice_serve(ns.fileno()) == -errno.EPIPE


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    socket.send_fds(sock, [data], fds) if fds else sock.send(data)


def test_worker_takes_only_the_fresh_sockets_it_asked_for():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with Harness() as h, b:
        assert lib.rn_splice_attach(h.w, a.detach()) == 0
        # a worker serving no forward holds no sockets of the namespace: no request
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(64)
        # its first TCP forward (rn_worker_forward_add) asks for a stock of each family
        lib.rn_splice_prime(h.w)
        b.settimeout(5)
        assert {b.recv(64), b.recv(64)} == {req(STOCK, 4), req(STOCK, 6)}
        assert h.counters()["splice_requests"] == 2
        base = _fds()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        peer = socket.socket()
        peer.bind(("127.0.0.1", 0))
        peer.listen(1)
        connected = socket.create_connection(peer.getsockname())
        bad = [
            (b"garbage", []),
            (answer(1, 4)[:-1], [udp.fileno()]),             # short body
            (answer(1, 5), [udp.fileno()]),                  # no such family
            (answer(2, 4), [udp.fileno()]),                  # count disagrees
            (answer(0, 4), []),                              # neither sockets nor errno
        ]
        for data, fds in bad:
            _send(b, data, fds)
        lib.rn_worker_run(h.w, 0)
        assert h.counters()["splice_bad_replies"] == len(bad)
        # an answer of the family asked for: the wrong kinds are dropped one by one
        good = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _send(b, answer(4, 4), [udp.fileno(), tcp6.fileno(), connected.fileno(), good.fileno()])
        lib.rn_worker_run(h.w, 0)
        assert h.counters()["splice_bad_replies"] == len(bad) + 3
        # nothing asked for IPv4 any more: the next batch is refused whole
        _send(b, answer(1, 4), [good.fileno()])
        lib.rn_worker_run(h.w, 0)
        assert h.counters()["splice_bad_replies"] == len(bad) + 4
        # the worker kept exactly one fd (the good socket) of all it was sent
        assert _fds() == base + 5 + 1
        for s in (udp, tcp6, connected, good, peer):
            s.close()


def test_relay_in_process_byte_exact_with_half_close():
    """The whole splice route in one process, with host loopback standing in for the
    namespace (the worker's stock is ours): the worker accepts a forwarded client,
    connects a stock socket to the server, relays 8 MiB one way and the server's answer
    the other after the client's half-close, counts the bytes, and ends the flow."""
    import hashlib
    import threading

    from ringnet._ringnet_c import ffi

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def serve():
        c, _ = server.accept()
        h, n = hashlib.sha256(), 0
        while chunk := c.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
        c.sendall(f"{h.hexdigest()} {n}".encode())
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    with Harness() as h, b, server:
        assert lib.rn_splice_attach(h.w, a.detach()) == 0
        lib.rn_splice_prime(h.w)
        b.settimeout(5)
        b.recv(64), b.recv(64)
        stock = [socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                 for _ in range(4)]
        socket.send_fds(b, [answer(4, 4)], [s.fileno() for s in stock])
        for s in stock:
            s.close()
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        lst.setblocking(False)
        fwd_port = lst.getsockname()[1]
        nsaddr = ffi.new("uint8_t[16]", [127, 0, 0, 1] + [0] * 12)
        assert lib.rn_worker_forward_add(h.w, 1, lst.detach(), 4, nsaddr, port, -1, ffi.NULL, 0) == 0
        stop = threading.Event()
        errors: list = []

        def loop():
            while not stop.is_set():
                rc = lib.rn_worker_run(h.w, 20)
                if rc < 0:
                    errors.append(rc)
                    return
        t = threading.Thread(target=loop)
        t.start()
        try:
            data = os.urandom(8 << 20)
            assert upload_loopback(fwd_port, data, timeout=30) == \
                [hashlib.sha256(data).hexdigest(), str(len(data))]
            deadline = time.monotonic() + 30  # only a hang detector
            while h.counters()["flows_open_splice"] and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            t.join()
        assert errors == []
        c = h.counters()
        assert (c["splice_opened"], c["flows_open_splice"], c["splice_resets"]) == (1, 0, 0)
