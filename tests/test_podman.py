"""Debian's podman, rootless, with ringnet-slirp4netns as its network command.

As the unprivileged test user (scripts/setup-test-env.sh creates it, with subordinate
ids) when the tests run as root, else as ourselves. Everything podman reads or writes
lives in a temporary directory: HOME, XDG_CONFIG_HOME, XDG_DATA_HOME (image storage),
XDG_RUNTIME_DIR and CONTAINERS_CONF (storage driver vfs), whose containers.conf sets
``network_cmd_path`` to the installed ``ringnet-slirp4netns``, plus ``runtime = "runc"``
and ``cgroup_manager = "cgroupfs"`` (crun refuses this machine's hybrid cgroup layout).
The image is imported (``podman import``) from a rootfs holding busybox-static: no
registry is involved.

Ports are published both ways podman has: its default port handler, rootlessport
(which reaches the container through the namespace's own network), and
``port_handler=slirp4netns``, where podman passes ``--api-socket`` and asks
ringnet-slirp4netns over slirp4netns's JSON API (``add_hostfwd``) to forward the
host port through ringnet.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading

import psutil
import pytest

from conftest import HANG_S, as_user_argv, unpriv_user, wait_until

IMAGE = "localhost/ringnet-busybox:test"
NETWORK_CMD = os.path.join(os.path.dirname(sys.executable), "ringnet-slirp4netns")
PODMAN_TIMEOUT = 120  # a hang detector only


def _static_busybox() -> str | None:
    """Path of a statically linked busybox (no PT_INTERP program header), or None."""
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        try:
            with open(path, "rb") as f:
                head = f.read(64)
                if head[:4] != b"\x7fELF" or head[4] != 2:
                    continue
                phoff, = struct.unpack_from("<Q", head, 32)
                phentsize, phnum = struct.unpack_from("<HH", head, 54)
                f.seek(phoff)
                table = f.read(phentsize * phnum)
        except OSError:
            continue
        types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
        if 3 not in types:  # PT_INTERP
            return path
    return None


def _rootfs_tar(busybox: str) -> bytes:
    """A tar of a rootfs with busybox as /bin/busybox and the applets the tests use."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "tmp", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in ("sh", "wget", "cat", "httpd", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out.getvalue()


class Podman:
    """podman as the test user, confined to one temporary directory."""

    def __init__(self, root: str, uid: int, gid: int) -> None:
        self.root = root
        self.uid, self.gid = uid, gid
        self.run_dir = os.path.join(root, "run")
        self.env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    "HOME": os.path.join(root, "home"),
                    "XDG_CONFIG_HOME": os.path.join(root, "config"),
                    "XDG_DATA_HOME": os.path.join(root, "data"),
                    "XDG_RUNTIME_DIR": self.run_dir,
                    "CONTAINERS_CONF": os.path.join(root, "config", "containers", "containers.conf"),
                    "LANG": "C.UTF-8"}

    def argv(self, *args: str) -> list[str]:
        return as_user_argv(["podman", *args])

    def __call__(self, *args: str, timeout: float = PODMAN_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def network_processes(self) -> list[psutil.Process]:
        """ringnet-slirp4netns processes serving this podman's containers (their netns
        paths lie under our runtime directory)."""
        out = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if any(a.endswith("ringnet-slirp4netns") for a in cmd[:2]) and \
                    any(a.startswith(self.run_dir + "/") for a in cmd):
                out.append(p)
        return out

    def kill_pause_process(self) -> None:
        """End the pause process rootless podman leaves holding its user namespace (ours
        only: the one named in our runtime directory's pid file)."""
        try:
            with open(os.path.join(self.run_dir, "libpod", "tmp", "pause.pid")) as f:
                pid = int(f.read().strip())
            p = psutil.Process(pid)
            if p.uids().real == self.uid and p.name() == "catatonit":
                p.send_signal(signal.SIGKILL)
                p.wait(HANG_S)
        except (OSError, ValueError, psutil.Error):
            pass


@functools.lru_cache(maxsize=None)
def _why_podman_cannot_run() -> str:
    """Empty if rootless podman can run here, else why not."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup-test-env.sh installs it)"
    if shutil.which("runc") is None:
        return "runc is not installed (scripts/setup-test-env.sh installs it)"
    if _static_busybox() is None:
        return "no statically linked busybox (package busybox-static)"
    return ""


@pytest.fixture(scope="module")
def podman():
    why = _why_podman_cannot_run()
    if why:
        pytest.skip(why)
    assert os.access(NETWORK_CMD, os.X_OK), f"{NETWORK_CMD} is not installed (console script)"
    uid, gid = unpriv_user()
    # short: podman's API socket for port_handler=slirp4netns is run/libpod/tmp/<64 hex>.net
    # under it, and a unix socket path holds at most 107 bytes
    root = tempfile.mkdtemp(prefix="rnpm-")
    os.chmod(root, 0o755)
    pm = Podman(root, uid, gid)
    try:
        for d in ("home", "config/containers", "data", "run"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        with open(pm.env["CONTAINERS_CONF"], "w") as f:
            f.write('[engine]\n'
                    f'network_cmd_path = "{NETWORK_CMD}"\n'
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n')
        # vfs: copies, but needs neither fuse nor the kernel's rootless overlay
        with open(os.path.join(root, "config", "containers", "storage.conf"), "w") as f:
            f.write('[storage]\ndriver = "vfs"\n')
        tar = os.path.join(root, "rootfs.tar")
        with open(tar, "wb") as f:
            f.write(_rootfs_tar(_static_busybox()))
        for dirpath, _, files in os.walk(root):
            os.chown(dirpath, uid, gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), uid, gid)
        os.chmod(pm.run_dir, 0o700)
        probe = pm("unshare", "true")
        if probe.returncode != 0:
            pytest.skip(f"podman cannot run rootless here as uid {uid}: {probe.stderr.strip()}")
        imported = pm("import", tar, IMAGE)
        assert imported.returncode == 0, imported.stderr
        yield pm
    finally:
        try:
            pm("unshare", "rm", "-rf", pm.env["XDG_DATA_HOME"])   # files of subordinate ids
        except subprocess.TimeoutExpired:
            pass
        pm.kill_pause_process()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def no_network_left(podman):
    """Every ringnet-slirp4netns podman started for the test has gone once it is done."""
    yield
    wait_until(lambda: not podman.network_processes(), "ringnet-slirp4netns to exit after "
               "podman tore the container's network down", interval=0.05)


@contextlib.contextmanager
def http_server(content: bytes):
    """A host HTTP server on 127.0.0.1 serving ``content`` as /file."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/file":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_container_fetches_a_host_file_through_ringnet(podman, no_network_left):
    content = secrets.token_hex(2048).encode()
    with http_server(content) as port:
        r = podman("run", "--rm", "--network", "slirp4netns:allow_host_loopback=true", IMAGE,
                   "/bin/sh", "-c", "cat /sys/class/net/tap0/type /sys/class/net/tap0/mtu; "
                   f"echo ---; wget -q -O - http://10.0.2.2:{port}/file")
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition("---\n")
    # tap0 is a tun device (ARPHRD_NONE, 65534): ringnet, not slirp4netns's tap (1)
    assert head.split() == ["65534", "65520"]
    assert body.encode() == content


def test_host_loopback_is_refused_by_default(podman, no_network_left):
    with http_server(b"secret") as port:
        r = podman("run", "--rm", "--network", "slirp4netns", IMAGE,
                   "/bin/sh", "-c", f"wget -q -O - http://10.0.2.2:{port}/file")
    assert r.returncode != 0
    assert "secret" not in r.stdout
    assert "Connection refused" in r.stderr, r.stderr


def _serve_and_fetch(podman, network: str, marker: str, while_up=None) -> bytes:
    """Run a web server container with ``-p 127.0.0.1:HOSTPORT:8080`` on ``network``, read
    its page from the host, call ``while_up(HOSTPORT)`` if given; return the reply."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    name = f"ringnet-web-{secrets.token_hex(4)}"
    r = podman("run", "-d", "--rm", "--name", name, "--network", network,
               "-p", f"127.0.0.1:{host_port}:8080", IMAGE, "/bin/sh", "-c",
               f"echo {marker} > /www/index.html; exec httpd -f -p 8080 -h /www")
    assert r.returncode == 0, r.stderr
    try:
        got = {}

        def fetch() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", host_port), timeout=HANG_S) as c:
                    c.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := c.recv(4096):
                        data += chunk
            except OSError:
                return False
            got["reply"] = data
            return marker.encode() in data

        wait_until(fetch, "the published port to serve the container's page", interval=0.1)
        if while_up is not None:
            while_up(host_port)
        return got["reply"]
    finally:
        stopped = podman("stop", "-t", "0", name)
        assert stopped.returncode == 0, stopped.stderr


def _listeners_of(port: int) -> list[psutil.Process]:
    """The processes holding the listening socket of 127.0.0.1:``port``."""
    return [psutil.Process(pid) for pid in {c.pid for c in psutil.net_connections("tcp4")
            if c.status == psutil.CONN_LISTEN and c.laddr == ("127.0.0.1", port) and c.pid}]


def test_published_port_through_rootlessport(podman, no_network_left):
    reply = _serve_and_fetch(podman, "slirp4netns", "served-from-the-container")
    assert reply.startswith(b"HTTP/1.")


def test_published_port_through_the_api_socket(podman, no_network_left):
    """port_handler=slirp4netns: podman starts ringnet-slirp4netns with --api-socket and
    sends it add_hostfwd; the host port is a ringnet worker's, and the page comes through it."""
    def while_up(port: int) -> None:
        [net_cmd] = podman.network_processes()
        assert any(a.startswith("--api-socket") for a in net_cmd.cmdline()), net_cmd.cmdline()
        owners = _listeners_of(port)
        assert owners
        for owner in owners:   # ringnet's workers, not rootlessport
            assert owner.name().startswith("ringnet-"), owner.cmdline()
            assert net_cmd.pid in [p.pid for p in owner.parents()]
    reply = _serve_and_fetch(podman, "slirp4netns:port_handler=slirp4netns", "through-the-api",
                             while_up)
    assert reply.startswith(b"HTTP/1.")
