"""Servers and clients shared by the forward tests (test_apisock, test_forward_cli,
test_forward_churn, test_publish, test_publish_udp, test_splice).

WHOAMI runs inside a namespace and answers each connection with the address and port
it sees; SINK with the SHA-256 and length of what the client sent. ask_loopback(),
served_loopback() and refused() reach a server through a forward on host 127.0.0.1;
ask()/served() through a forward on any address, telling our own port too;
worker_fds() counts the open fds of a network's workers; own_address() finds this
machine's non-loopback IPv4 address (test_publish_udp, test_splice).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import textwrap

from conftest import HANG_S, wait_until

# argv: port [listen backlog, default 64]; IPv4, every address
WHOAMI = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(int(sys.argv[2]) if len(sys.argv) > 2 else 64)
    while True:
        c, a = s.accept()
        c.sendall(f"{a[0]} {a[1]}\\n".encode())
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


def worker_fds(net) -> int:
    """The open fds of all the workers of ``net``."""
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in net.worker_pids)


def own_address() -> str | None:
    """This machine's IPv4 address that is neither loopback, link-local nor in the
    namespace's 10.0.2.0/24, to connect or send from; None if it has none."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET:
                ip = ipaddress.ip_address(a.address)
                if not ip.is_loopback and not ip.is_link_local and \
                        ip not in ipaddress.ip_network("10.0.2.0/24"):
                    return a.address
    return None
