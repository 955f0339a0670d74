"""Network.socket(): sockets of the namespace used in the test process (_nssocket.py).

A socket made by net.socket() listens inside (a command run inside connects to it),
connects from inside to a server on host loopback through the gateway (the server
sees ringnet's worker, and the flow is in ringnet's table), works with asyncio and
for UDP; bad requests fail naming the argument; a refusal by the kernel inside
comes back as its own OSError class; nothing leaks in either process.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import subprocess
import sys
import threading

import pytest

import ringnet
from conftest import HANG_S, as_user_argv, child_env, needs_userns, unpriv_user, wait_until

pytestmark = needs_userns

GUEST = {socket.AF_INET: "10.0.2.100", socket.AF_INET6: "fd00::100"}
GATEWAY = {socket.AF_INET: "10.0.2.2", socket.AF_INET6: "fd00::2"}
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


class EchoServer:
    """A TCP (or UDP) echo server on host loopback that records its clients' addresses."""

    def __init__(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> None:
        self.sock = socket.socket(family, kind)
        self.sock.bind((LOOPBACK[family], 0))
        self.sock.settimeout(HANG_S)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.kind = kind
        if kind == socket.SOCK_STREAM:
            self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            if self.kind == socket.SOCK_DGRAM:
                data, peer = self.sock.recvfrom(65536)
                self.peers.append(peer[0])
                self.sock.sendto(b"echo:" + data, peer)
                return
            conn, peer = self.sock.accept()
            self.peers.append(peer[0])
            with conn:
                conn.settimeout(HANG_S)
                while data := conn.recv(65536):
                    conn.sendall(b"echo:" + data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(HANG_S)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def namespace_sockets(net) -> int:
    """How many fds of this process are sockets of ``net``'s network namespace (ringnet's
    own threads open and close other fds meanwhile, so a plain count would not do)."""
    netns = os.fstat(net.namespace_fds[1]).st_ino
    n = 0
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            dup = os.dup(fd)
        except OSError:
            continue   # closed meanwhile
        try:
            probe = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue   # not a socket
        try:
            ns = fcntl.ioctl(probe.fileno(), 0x894C)   # SIOCGSKNS
        except OSError:
            continue
        finally:
            probe.close()
        n += os.fstat(ns).st_ino == netns
        os.close(ns)
    return n


def test_listen_inside_and_connect_from_a_command_inside(no_leaks):
    """A listener made by net.socket() accepts a connection from a process run inside;
    bytes flow both ways. The guest address exists only inside the namespace."""
    with ringnet.Network(workers=1) as net:
        with net.socket() as srv:
            srv.bind((GUEST[socket.AF_INET], 0))
            srv.listen(1)
            srv.settimeout(HANG_S)
            port = srv.getsockname()[1]
            proc = net.spawn([sys.executable, "-c",
                              "import socket, sys\n"
                              f"c = socket.create_connection(('{GUEST[socket.AF_INET]}', {port}), timeout=60)\n"
                              "c.sendall(b'from a command inside')\n"
                              "sys.stdout.write(c.recv(100).decode())\n"],
                             stdout=subprocess.PIPE)
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(HANG_S)
                assert conn.recv(100) == b"from a command inside"
                conn.sendall(b"from the test process")
            out, _ = proc.communicate(timeout=HANG_S)
            assert proc.returncode == 0
            assert out == b"from the test process"
            assert peer[0] == GUEST[socket.AF_INET]
        # the host has no such address: the same bind fails outside
        with socket.socket() as outside, pytest.raises(OSError) as e:
            outside.bind((GUEST[socket.AF_INET], 0))
        assert e.value.errno == errno.EADDRNOTAVAIL


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_connect_from_inside_to_host_loopback_through_the_gateway(no_leaks, family):
    """A socket made inside connects to the gateway address; ringnet's worker carries it
    to the server on host loopback, which sees ringnet's host socket, not the test's."""
    server = EchoServer(family)
    try:
        with ringnet.Network(workers=1, allow_host_loopback=True) as net:
            with net.socket(family) as c:
                c.settimeout(HANG_S)
                c.connect((GATEWAY[family], server.port))
                assert c.getsockname()[0] == GUEST[family]
                c.sendall(b"hello")
                assert c.recv(100) == b"echo:hello"
                flows = net.flows()
                assert any(f["proto"] == "tcp" and f["remote_port"] == server.port for f in flows)
        assert server.peers == [LOOPBACK[family]]
    finally:
        server.close()


def test_socket_of_an_attached_namespace(no_leaks, unshared_target):
    """With attach, the socket is the target's namespace's (made by unshare -Urn)."""
    server = EchoServer()
    try:
        with ringnet.Network.attach(unshared_target.pid, workers=1, allow_host_loopback=True) as net:
            with net.socket() as c:
                ns = fcntl.ioctl(c.fileno(), 0x894C)   # SIOCGSKNS
                try:
                    assert os.fstat(ns).st_ino == os.stat(f"/proc/{unshared_target.pid}/ns/net").st_ino
                finally:
                    os.close(ns)
                c.settimeout(HANG_S)
                c.connect((GATEWAY[socket.AF_INET], server.port))
                c.sendall(b"attached")
                assert c.recv(100) == b"echo:attached"
    finally:
        server.close()


def test_asyncio_connect_and_stream(no_leaks):
    """A non-blocking socket from net.socket() works with loop.sock_connect and then
    as an asyncio stream (asyncio.open_connection(sock=...))."""
    server = EchoServer()

    async def talk(net) -> bytes:
        loop = asyncio.get_running_loop()
        sock = net.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        assert not sock.getblocking()
        await asyncio.wait_for(loop.sock_connect(sock, (GATEWAY[socket.AF_INET], server.port)), HANG_S)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"async")
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(b"echo:async")), HANG_S)
        writer.close()
        await writer.wait_closed()
        return got

    try:
        with ringnet.Network(workers=1, allow_host_loopback=True) as net:
            assert asyncio.run(talk(net)) == b"echo:async"
    finally:
        server.close()


def test_asyncio_server_inside(no_leaks):
    """asyncio.start_server(sock=...) serves a command run inside."""
    async def serve(net) -> bytes:
        srv_sock = net.socket()
        srv_sock.bind((GUEST[socket.AF_INET], 0))
        port = srv_sock.getsockname()[1]
        got = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            got.set_result(await reader.readline())
            writer.close()

        server = await asyncio.start_server(handle, sock=srv_sock)
        async with server:
            proc = await asyncio.create_subprocess_exec(*net.enter_argv(
                [sys.executable, "-c", "import socket\n"
                 f"socket.create_connection(('{GUEST[socket.AF_INET]}', {port}), timeout=60)"
                 ".sendall(b'line from inside\\n')"]), pass_fds=net.namespace_fds)
            line = await asyncio.wait_for(got, HANG_S)
            assert await asyncio.wait_for(proc.wait(), HANG_S) == 0
        return line

    with ringnet.Network(workers=1) as net:
        assert asyncio.run(serve(net)) == b"line from inside\n"


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_udp_socket_to_host_loopback(no_leaks, family):
    server = EchoServer(family, socket.SOCK_DGRAM)
    try:
        with ringnet.Network(workers=1, allow_host_loopback=True) as net:
            with net.socket(family, socket.SOCK_DGRAM) as u:
                assert u.type == socket.SOCK_DGRAM and u.proto == socket.IPPROTO_UDP
                u.settimeout(HANG_S)
                u.sendto(b"datagram", (GATEWAY[family], server.port))
                data, peer = u.recvfrom(100)
                assert data == b"echo:datagram"
                assert peer[:2] == (GATEWAY[family], server.port)
        assert server.peers == [LOOPBACK[family]]
    finally:
        server.close()


@pytest.mark.parametrize("args, match", [
    ((socket.AF_UNIX,), "family=.*AF_INET or socket.AF_INET6"),
    ((socket.AF_PACKET,), "family=.*AF_INET or socket.AF_INET6"),
    (("inet",), "family='inet'"),
    ((socket.AF_INET, socket.SOCK_RAW), "type=.*SOCK_STREAM or socket.SOCK_DGRAM"),
    ((socket.AF_INET, socket.SOCK_SEQPACKET), "type=.*SOCK_STREAM or socket.SOCK_DGRAM"),
    ((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP), "proto=17 does not go with AF_INET, "
     "SOCK_STREAM; give one of 0, IPPROTO_TCP"),
    ((socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), "give one of 0, IPPROTO_UDP, "
     "IPPROTO_ICMPV6"),
])
def test_bad_requests_name_the_argument(args, match):
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.ConfigError, match=match):
            net.socket(*args)
        with net.socket() as s:   # the network still serves good ones
            assert s.family == socket.AF_INET


def test_refusal_inside_comes_back_as_its_own_class(no_leaks):
    """The namespace's ping_group_range is empty, so the kernel inside refuses an ICMP
    socket: the error arrives as a PermissionError that is also a ChildError."""
    with ringnet.Network(workers=1) as net:
        with pytest.raises(PermissionError) as e:
            net.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        assert isinstance(e.value, ringnet.ChildError)
        assert e.value.errno == errno.EACCES
        assert "namespace child" in str(e.value)
        with net.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:   # and it goes on
            assert u.proto == socket.IPPROTO_UDP


def test_not_running():
    net = ringnet.Network(workers=1)
    with pytest.raises(ringnet.RingnetError, match="not running"):
        net.socket()


def test_no_fd_leak_in_either_process(no_leaks):
    """Many sockets opened and closed leave the fd tables of the test process and of the
    namespace child as they were; a socket closed after the network still closes."""
    with ringnet.Network(workers=1) as net:
        ns_pid = net.pid
        theirs = fd_count(ns_pid)
        assert namespace_sockets(net) == 0
        for i in range(50):
            s = net.socket(socket.AF_INET6 if i % 2 else socket.AF_INET,
                           socket.SOCK_DGRAM if i % 3 else socket.SOCK_STREAM)
            s.close()
        assert namespace_sockets(net) == 0
        held = [net.socket() for _ in range(5)]
        try:
            assert namespace_sockets(net) == 5
            # the namespace child closes its copy just after sending it
            wait_until(lambda: fd_count(ns_pid) == theirs, "the namespace child to close its copies")
        finally:
            for s in held:
                s.close()
        assert namespace_sockets(net) == 0
        late = net.socket()
    late.close()   # the no_leaks fixture checks our fd table


def test_socket_as_unprivileged_user():
    """Rootless: a socket made inside connects through the gateway to host loopback and
    binds a port below 1024 inside (the user owns the namespace's user namespace)."""
    unpriv_user()   # skips where there is no unprivileged user to be
    server = EchoServer()
    code = (
        "import socket, ringnet\n"
        "with ringnet.Network(workers=1, allow_host_loopback=True) as net:\n"
        "    low = net.socket()\n"
        "    low.bind(('10.0.2.100', 80))\n"
        "    low.close()\n"
        "    with net.socket() as c:\n"
        "        c.settimeout(60)\n"
        f"        c.connect(('10.0.2.2', {server.port}))\n"
        "        c.sendall(b'rootless')\n"
        "        print(c.recv(100).decode())\n")
    try:
        r = subprocess.run(as_user_argv([sys.executable, "-c", code]), capture_output=True,
                           text=True, timeout=120, env=child_env(), cwd="/")
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "echo:rootless"


def test_concurrent_requests_each_get_their_own_socket(no_leaks):
    """Threads asking at once are served one exchange at a time: each gets a socket of
    the family it asked for, none gets another's."""
    with ringnet.Network(workers=1) as net:
        got: dict[int, list] = {}
        errors: list[BaseException] = []

        def ask(i: int) -> None:
            family = socket.AF_INET6 if i % 2 else socket.AF_INET
            try:
                socks = [net.socket(family, socket.SOCK_DGRAM) for _ in range(20)]
                got[i] = [(s.family, s.fileno()) for s in socks]
                for s in socks:
                    s.close()
            except BaseException as e:   # reported below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG_S)
        assert not errors, errors
        for i, socks in got.items():
            assert {f for f, _ in socks} == {socket.AF_INET6 if i % 2 else socket.AF_INET}
        assert len(got) == 6


# The orchestrator's checks of what the (untrusted) namespace child sends: a thread plays
# the namespace child on a socketpair, answering one request as told.

class FakeNamespaceChild:
    """Answers one NS_SOCKET request on a socketpair with ``fd`` (or ``body`` alone),
    echoing its sequence number; first, if given, a stale reply carrying ``stale_fd``."""

    def __init__(self, fd: int = -1, body: dict | None = None, kind=None, stale_fd: int = -1) -> None:
        from ringnet import _control
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.request = None

        def serve() -> None:
            msg = _control.recv(self.theirs, timeout=HANG_S)
            self.request = msg.body
            seq = msg.body["seq"]
            if stale_fd >= 0:
                _control.send(self.theirs, _control.Msg.NS_SOCKET, {"seq": seq - 1}, [stale_fd])
            _control.send(self.theirs, kind or _control.Msg.NS_SOCKET, dict(body or {}, seq=seq),
                          [fd] if fd >= 0 else [])

        self.thread = threading.Thread(target=serve)
        self.thread.start()

    def close(self) -> None:
        self.thread.join(HANG_S)
        self.ours.close()
        self.theirs.close()


def _open(fake: FakeNamespaceChild, netns_fd: int, *args):
    from ringnet._nssocket import SocketOpener
    try:
        return SocketOpener().open(fake.ours, netns_fd, *args)
    finally:
        fake.close()


def _our_netns() -> int:
    return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def test_a_socket_of_the_right_kind_and_namespace_is_accepted():
    """The control for the refusals below: a host socket, checked against the host's own
    namespace, passes, and the request carried what was asked."""
    host = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    netns = _our_netns()
    try:
        fake = FakeNamespaceChild(host.fileno())
        with _open(fake, netns, socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, 0) as s:
            assert (s.family, s.type, s.proto) == (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            assert not s.getblocking()
        assert fake.request == {"seq": 1, "family": socket.AF_INET6, "type": socket.SOCK_DGRAM,
                                "proto": 0}
    finally:
        host.close()
        os.close(netns)


def test_a_late_reply_to_an_earlier_request_is_dropped():
    """A reply whose request timed out (an older sequence number) is skipped and its fd
    closed; the reply to this request is the one used."""
    host = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    stale = socket.socket()
    netns = _our_netns()
    try:
        before = set(os.listdir("/proc/self/fd"))
        with _open(FakeNamespaceChild(host.fileno(), stale_fd=stale.fileno()), netns,
                   socket.AF_INET6, socket.SOCK_DGRAM, 0) as s:
            assert s.family == socket.AF_INET6
            assert set(os.listdir("/proc/self/fd")) - before == {str(s.fileno())}
    finally:
        stale.close()
        host.close()
        os.close(netns)


def test_refuses_a_socket_of_another_network_namespace(unshared_target):
    host = socket.socket()
    netns = os.open(f"/proc/{unshared_target.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    before = set(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(ringnet.ProtocolError, match="another network namespace"):
            _open(FakeNamespaceChild(host.fileno()), netns, socket.AF_INET, socket.SOCK_STREAM, 0)
        assert set(os.listdir("/proc/self/fd")) <= before   # the received copy is closed
    finally:
        host.close()
        os.close(netns)


@pytest.mark.parametrize("make", [
    lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
    lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
], ids=["wrong-family", "wrong-type", "unix"])
def test_refuses_a_socket_of_another_kind(make):
    wrong = make()
    netns = _our_netns()
    try:
        with pytest.raises(ringnet.ProtocolError, match="not the .* asked for"):
            _open(FakeNamespaceChild(wrong.fileno()), netns, socket.AF_INET, socket.SOCK_STREAM, 0)
    finally:
        wrong.close()
        os.close(netns)


def test_refuses_what_is_not_a_socket():
    r, w = os.pipe()
    netns = _our_netns()
    before = set(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(ringnet.ProtocolError, match="not a socket"):
            _open(FakeNamespaceChild(r), netns, socket.AF_INET, socket.SOCK_STREAM, 0)
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        for fd in (r, w, netns):
            os.close(fd)


def test_refuses_an_answer_without_socket_or_error_and_a_wrong_message():
    from ringnet._control import Msg
    netns = _our_netns()
    try:
        with pytest.raises(ringnet.ProtocolError, match="neither a socket nor an error"):
            _open(FakeNamespaceChild(), netns, socket.AF_INET, socket.SOCK_STREAM, 0)
        with pytest.raises(ringnet.ProtocolError, match="answered a socket request with ACK"):
            _open(FakeNamespaceChild(kind=Msg.ACK), netns, socket.AF_INET, socket.SOCK_STREAM, 0)
    finally:
        os.close(netns)
