"""A real DNS server on host loopback for tests and benchmarks: dnsmasq from Debian.

Tests must never query this machine's own resolver (it is not a loopback
address); they point ringnet's ``dns_upstream`` at a LocalDns instead. dnsmasq
(package dnsmasq-base, which starts no system service) serves fixed records
over UDP and TCP and forwards nothing (``--no-resolv``).

    with LocalDns({"example.test": ("192.0.2.10", "2001:db8::10")}) as dns:
        ringnet.Network(dns_upstream=dns.upstream, ...)

With ``log_queries=True`` dnsmasq logs every query it receives to a file, before it
answers, and ``queries()`` reads them back: a test can then say how many queries a
server got, not only that an answer came.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from typing import Mapping, Optional, Sequence

__all__ = ["LocalDns", "free_port", "dns_query", "dns_answers", "build_query",
           "QTYPE_A", "QTYPE_AAAA"]

QTYPE_A, QTYPE_AAAA = 1, 28
DEFAULT_RECORDS = {"example.test": ("192.0.2.10", "2001:db8::10"),
                   "other.example.test": ("192.0.2.11",)}


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both UDP and TCP on ``host`` right now."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(fam, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")


def build_query(name: str, qtype: int = QTYPE_A, qid: Optional[int] = None) -> bytes:
    """A recursive DNS query for ``name``."""
    qid = random.randrange(65536) if qid is None else qid
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def _skip_name(msg: bytes, off: int) -> int:
    while True:
        n = msg[off]
        if n >= 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def dns_answers(msg: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """(id, rcode, [(type, rdata), ...]) of a DNS response."""
    qid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    off = 12
    for _ in range(qd):
        off = _skip_name(msg, off) + 4
    out = []
    for _ in range(an):
        off = _skip_name(msg, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        out.append((rtype, msg[off + 10:off + 10 + rdlen]))
        off += 10 + rdlen
    return qid, flags & 0xF, out


def dns_query(host: str, port: int, name: str, qtype: int = QTYPE_A, tcp: bool = False,
              timeout: float = 2.0) -> list[str]:
    """Ask ``host``:``port`` for ``name``; the addresses in the answer, as text."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    q = build_query(name, qtype)
    with socket.socket(fam, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        if tcp:
            s.sendall(struct.pack("!H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    raise ConnectionError("DNS server closed the connection")
                buf += chunk
            resp = buf[2:]
        else:
            s.send(q)
            resp = s.recv(65535)
    _, _, ans = dns_answers(resp)
    return [socket.inet_ntop(socket.AF_INET if t == QTYPE_A else socket.AF_INET6, rd)
            for t, rd in ans if t in (QTYPE_A, QTYPE_AAAA)]


class LocalDns:
    """dnsmasq serving ``records`` (name -> addresses) on ``host``:``port`` (UDP and TCP).

    ``port`` None picks a free one. ``upstream`` is the "ADDR:PORT" text for
    ringnet's dns_upstream. ``log_queries``: log each query received, for
    ``queries()``. ``ttl``: the TTL of the answers (dnsmasq's default is 0). Raises RuntimeError if dnsmasq is missing or does not answer
    within 10 s (the reason is in the message).
    """

    def __init__(self, records: Mapping[str, Sequence[str]] = DEFAULT_RECORDS,
                 host: str = "127.0.0.1", port: Optional[int] = None,
                 log_queries: bool = False, ttl: Optional[int] = None) -> None:
        self.records = dict(records)
        self.ttl = ttl
        self.host = host
        self.port = port or free_port(host)
        self.proc: Optional[subprocess.Popen] = None
        self._logdir = tempfile.mkdtemp(prefix="localdns-") if log_queries else None

    @property
    def upstream(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        argv = [exe, "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--pid-file=", f"--listen-address={self.host}", f"--port={self.port}",
                "--bind-interfaces", "--cache-size=0"]
        if self._logdir:
            # to a file, not stderr: nobody reads the pipe while the server runs
            argv += ["--keep-in-foreground", "--log-queries",
                     f"--log-facility={os.path.join(self._logdir, 'log')}"]
        else:
            argv += ["--no-daemon", "--log-facility=-"]
        if os.geteuid() == 0:
            argv.append("--user=nobody")
        if self.ttl is not None:  # dnsmasq answers its own records with TTL 0 otherwise
            argv.append(f"--local-ttl={self.ttl}")
        for name, addrs in self.records.items():
            argv.append(f"--host-record={name},{','.join(addrs)}")
        return argv

    def queries(self) -> list[tuple[str, str, str]]:
        """(type, name, client address) of every query received so far (with
        ``log_queries``), the readiness probes of start() included."""
        assert self._logdir, "LocalDns(log_queries=True) logs queries"
        try:
            with open(os.path.join(self._logdir, "log"), encoding="utf-8",
                      errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        return re.findall(r"query\[(\w+)\] (\S+) from (\S+)", text)

    def start(self) -> "LocalDns":
        if self._logdir:
            os.chmod(self._logdir, 0o755)  # dnsmasq may write it as nobody
        if not os.path.exists(self.argv()[0]):
            raise RuntimeError("dnsmasq is not installed (Debian package dnsmasq-base)")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        name = next(iter(self.records))
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited with status {self.proc.returncode}: {err}")
            try:
                if dns_query(self.host, self.port, name, timeout=0.2):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not answer within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        if self._logdir:
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None

    def __enter__(self) -> "LocalDns":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
