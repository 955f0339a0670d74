"""Servers and clients shared by the forward tests (test_apisock, test_forward_cli,
test_forward_churn, test_publish, test_publish_udp, test_splice, test_splice_proto).

WHOAMI runs inside a namespace and answers each connection with the address and port
it sees (WHOAMI_AT the same on a given address, IPv6 too); SINK with the SHA-256 and
length of what the client sent. ask_loopback(), served_loopback() and refused() reach a
server through a forward on host 127.0.0.1; ask()/served() through a forward on any
address, telling our own port too; upload_loopback()/uploaded_loopback() send bytes to
a sink through a forward on host 127.0.0.1; worker_fds() counts the open fds of a
network's workers. in_outer_namespace() runs a test body in a user+net namespace of its
own, where OUTER_ADDR stands in for a non-loopback address of this machine
(test_publish, test_publish_udp, test_splice: a client from a real address, without
sending to the machine's own address).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import HANG_S, wait_until

# argv: port [listen backlog, default 64 [connections to answer, then exit; default no
# end]]; IPv4, every address
WHOAMI = textwrap.dedent("""
    import itertools, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(int(sys.argv[2]) if len(sys.argv) > 2 else 64)
    for _ in (range(int(sys.argv[3])) if len(sys.argv) > 3 else itertools.count()):
        c, a = s.accept()
        c.sendall(f"{a[0]} {a[1]}\\n".encode())
        c.close()
""")

# argv: bind address, port; an IPv6 address (:: is every address of both families) gets
# an IPv6 socket that takes IPv4 too, and an IPv4 client is told its plain IPv4 address
WHOAMI_AT = textwrap.dedent("""
    import socket, sys
    addr = sys.argv[1]
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    if ":" in addr:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(sys.argv[2])))
    s.listen(128)
    while True:
        c, a = s.accept()
        host = a[0][7:] if a[0].startswith("::ffff:") else a[0]
        c.sendall(f"{host} {a[1]}\\n".encode())
        c.close()
""")

# argv: port; reads until the client's half-close (EOF), then answers with the SHA-256
# of what it read and the byte count
SINK = textwrap.dedent("""
    import hashlib, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(8)
    while True:
        c, a = s.accept()
        h, n = hashlib.sha256(), 0
        while chunk := c.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
        c.sendall(f"{h.hexdigest()} {n}\\n".encode())
        c.close()
""")


def ask_loopback(port: int) -> str | None:
    """What the whoami server behind 127.0.0.1:port answers, None if nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as s:
            data = b""
            while chunk := s.recv(256):
                data += chunk
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    return data.decode() if data.endswith(b"\n") else None


def served_loopback(port: int) -> str:
    """ask_loopback() once the server inside answers."""
    got: list = []
    wait_until(lambda: got.append(ask_loopback(port)) or got[-1] is not None,
               f"the server behind port {port}", interval=0.05)
    return got[-1]


def refused(port: int) -> bool:
    """True if a connection to 127.0.0.1:port is refused (nothing forwards it)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANG_S).close()
    except ConnectionRefusedError:
        return True
    return False


def ask(addr: str, port: int, bind: tuple | None = None,
        timeout: float = 60) -> tuple[str, int, int] | None:
    """Connect through a forward: (address, port) the server inside saw and our own port,
    or None while the server is not there yet."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam) as s:
        s.settimeout(timeout)
        if bind:
            s.bind(bind)
        try:
            s.connect((addr, port))
            data = b""
            while chunk := s.recv(256):
                data += chunk
        except (ConnectionResetError, ConnectionRefusedError):
            return None
        if not data.endswith(b"\n"):
            return None
        host, p = data.decode().split()
        return host, int(p), s.getsockname()[1]


def served(addr: str, port: int, timeout: float = 60) -> tuple[str, int, int]:
    """ask() once the server inside answers."""
    got: list = []
    wait_until(lambda: got.append(ask(addr, port, timeout=timeout)) or got[-1] is not None,
               f"the server behind {addr}:{port}", interval=0.05)
    return got[-1]


def upload_loopback(port: int, data: bytes, timeout: float = 60) -> list[str] | None:
    """Send ``data`` to the sink behind 127.0.0.1:port, shut our side down and read its
    answer to the end: [SHA-256, byte count] (the answer split), or None while the sink is
    not listening yet (the connection reset, or no answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(256):
                reply += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    return reply.decode().split() or None


def uploaded_loopback(port: int, data: bytes) -> list[str]:
    """upload_loopback() once the sink inside answers."""
    got: list = []
    wait_until(lambda: got.append(upload_loopback(port, data)) or got[-1] is not None,
               "the upload", interval=0.05)
    return got[-1]


def worker_fds(net) -> int:
    """The open fds of all the workers of ``net``."""
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in net.worker_pids)


# The address that stands in for "this machine's own non-loopback address" in the outer
# namespace of in_outer_namespace() (TEST-NET-1, RFC 5737)
OUTER_ADDR = "192.0.2.1"

# argv: address, tests directory; the body on stdin. Makes the outer user+net namespace
# (ringnet's own helpers: this fresh interpreter is single-threaded, as unshare(CLONE_NEWUSER)
# requires), brings its loopback up with the address on it, runs the body's main(address)
# and prints what it returns as JSON on the last line.
_OUTER = textwrap.dedent("""
    import json, os, sys
    addr, tests = sys.argv[1:3]
    body = sys.stdin.read()
    from ringnet._nsutil import unshare_user_net, write_id_maps
    uid, gid = os.getuid(), os.getgid()
    unshare_user_net()
    write_id_maps(uid, gid)
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=lo, address=addr, prefixlen=32)
    sys.path.insert(0, tests)
    scope = {"__name__": "__outer__"}
    exec(compile(body, "<outer namespace body>", "exec"), scope)
    print(json.dumps(scope["main"](addr)), flush=True)
""")


@functools.lru_cache(maxsize=None)
def _nested_userns_reason() -> str:
    """Empty if a user namespace can be made inside one of ours (ringnet's namespace inside
    the outer one), else why not."""
    r = subprocess.run(["unshare", "-Urn", "unshare", "-Urn", "true"], capture_output=True,
                       timeout=HANG_S)
    if r.returncode != 0:
        return f"the kernel forbids nested user namespaces here: {r.stderr.decode().strip()}"
    return ""


def in_outer_namespace(body: str, timeout: float = 4 * HANG_S):
    """Run ``body`` in a user+net namespace of its own, where OUTER_ADDR on loopback stands
    in for this machine's own non-loopback address: a test can then connect from a real
    (non-loopback) source and still send only to a namespace it made. ``body`` is Python
    source defining ``main(addr)`` (the tests directory is on sys.path) that returns a
    JSON value, returned here. Fails with the child's stderr if
    the body fails or outlives ``timeout``; skips if nested user namespaces are forbidden.
    The namespace, and the network the body makes in it, end with the child."""
    reason = _nested_userns_reason()
    if reason:
        pytest.skip(reason)
    tests = os.path.dirname(os.path.abspath(__file__))
    argv = [sys.executable, "-c", _OUTER, OUTER_ADDR, tests]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(body, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            try:
                err = p.communicate(timeout=HANG_S)[1]
            except subprocess.TimeoutExpired:
                err = "(its stderr stayed open)"
            raise AssertionError(f"the outer namespace's body still ran after {timeout:.0f} s:"
                                 f"\n{err}") from None
    if p.returncode != 0:
        raise AssertionError(f"the outer namespace's body failed (exit {p.returncode}):\n{err}")
    return json.loads(out.splitlines()[-1])
