"""Forwards at run time: the control socket's forward_add/forward_ls/forward_rm, ``ringnet forward``, ``ringnet attach -p``.

A network with a "whoami" server inside (it answers with the address and port it
sees): forwards added over its control socket carry connections, are listed, and
once removed leave the host port closed (connection refused). Errors come back as the
network's own classes and name what they concern: an unknown forward, a host port
in use, an overlapping forward, a bad spec. Then the command line as the unprivileged
user (as root when the test user exists), including a port below
net.ipv4.ip_unprivileged_port_start, and ``ringnet attach -p`` (with ``--api-socket``)
giving a namespace made by ``unshare -Urn`` its forwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

import ringnet
from ringnet import _ctlsock
from ringnet._publish import unprivileged_port_start
from conftest import HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user, wait_until
from forwards import WHOAMI, refused
from forwards import ask_loopback as ask, served_loopback as served
from localdns import free_port

WHOAMI_PORT = 7000
@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl")
    os.chmod(d, 0o700)
    with ringnet.Network(workers=2, control_dir=str(d)) as n:
        n.spawn([sys.executable, "-c", WHOAMI, str(WHOAMI_PORT)])
        yield n


def q(net, cmd: str, args: dict | None = None):
    return _ctlsock.query(net.control_socket, cmd, args, timeout=HANG_S)


# --- the control socket ------------------------------------------------------------------------


@needs_userns
def test_add_ls_rm_over_the_control_socket(net):
    port = free_port()
    rec = q(net, "forward_add", {"spec": f"127.0.0.1:{port}:{WHOAMI_PORT}"})
    assert (rec["spec"], rec["proto"], rec["host_addr"], rec["ports"], rec["ns_addr"]) == \
        (f"127.0.0.1:{port}:{WHOAMI_PORT}", "tcp", "127.0.0.1", [[port, WHOAMI_PORT]], "10.0.2.100")
    assert served(port).split()[0] == "127.0.0.1"  # spliced: seen from loopback
    assert rec in q(net, "forward_ls")
    assert any(f.ids[0] == rec["id"] for f in net.forwards())
    assert q(net, "forward_rm", {"forward": rec["id"]}) == rec
    assert refused(port)
    assert rec not in q(net, "forward_ls")
    assert all(f.ids[0] != rec["id"] for f in net.forwards())


@needs_userns
def test_remove_by_spec_however_written(net):
    port = free_port()
    rec = q(net, "forward_add", {"spec": f"127.0.0.1:{port}:{WHOAMI_PORT}"})
    served(port)
    assert q(net, "forward_rm", {"forward": f" 127.0.0.1:{port}:{WHOAMI_PORT}/TCP "})["id"] == rec["id"]
    assert refused(port)


@needs_userns
def test_unknown_forward_is_an_error_naming_it(net):
    with pytest.raises(ringnet.ConfigError) as e:
        q(net, "forward_rm", {"forward": 987654})
    assert str(e.value) == "no forward with id 987654 (ringnet forward ID ls lists them)"
    with pytest.raises(ringnet.ConfigError) as e:
        q(net, "forward_rm", {"forward": "127.0.0.1:1:2"})
    assert str(e.value) == "no forward '127.0.0.1:1:2' (ringnet forward ID ls lists them)"
    with pytest.raises(ringnet.ConfigError, match="forward_rm takes the forward"):
        q(net, "forward_rm", {})
    with pytest.raises(ringnet.ConfigError, match="forward_add takes a spec"):
        q(net, "forward_add", {"spec": 8080})


@needs_userns
def test_errors_name_the_port_the_spec_and_the_overlap(net):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    before = q(net, "forward_ls")
    try:
        with pytest.raises(ringnet.PublishError) as e:
            q(net, "forward_add", {"spec": f"127.0.0.1:{busy}:{WHOAMI_PORT}"})
        assert e.value.errno == errno.EADDRINUSE
        assert str(e.value) == f"host port {busy} is already in use (127.0.0.1:{busy})"
    finally:
        holder.close()
    with pytest.raises(ringnet.ConfigError) as e:
        q(net, "forward_add", {"spec": "0:80"})
    assert str(e.value) == "publish spec '0:80': host port '0' is not a port number (1..65535)"
    port = free_port()
    rec = q(net, "forward_add", {"spec": f"127.0.0.1:{port}:{WHOAMI_PORT}"})
    try:
        with pytest.raises(ringnet.ConfigError) as e:
            q(net, "forward_add", {"spec": f"{port}:80"})
        assert str(e.value) == (f"publish spec '{port}:80': host ports overlap those of the "
                                f"forward '127.0.0.1:{port}:{WHOAMI_PORT}'")
    finally:
        q(net, "forward_rm", {"forward": rec["id"]})
    assert q(net, "forward_ls") == before


# --- the command line, as the unprivileged user --------------------------------------------------


def _as_user(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(as_user_argv(ringnet_cmd(*args)), capture_output=True, text=True,
                          env=child_env(), cwd="/", timeout=HANG_S)


@needs_userns
def test_ringnet_forward_command_line():
    uid, gid = unpriv_user()
    d = tempfile.mkdtemp(prefix="ringnet-ctl-")
    os.chown(d, uid, gid)
    os.chmod(d, 0o700)
    p = subprocess.Popen(as_user_argv(ringnet_cmd("run", "--workers", "1", "--control-dir", d, "--",
                                                  sys.executable, "-c", WHOAMI, str(WHOAMI_PORT))),
                         env=child_env(), cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        nets: list = []

        def listed() -> bool:
            assert p.poll() is None, p.stderr.read()
            r = _as_user("ls", "--json", "--dir", d)
            nets[:] = json.loads(r.stdout) if r.returncode == 0 else []
            return bool(nets)
        wait_until(listed, "the network to be listed", interval=0.1)
        nid = nets[0]["id"]
        port = free_port()
        r = _as_user("forward", nid, "add", f"127.0.0.1:{port}:{WHOAMI_PORT}", "--dir", d)
        assert r.returncode == 0, r.stderr
        fid = r.stdout.strip()
        assert fid.isdigit()
        assert served(port).split()[0] == "127.0.0.1"  # spliced: seen from loopback
        r = _as_user("forward", nid, "ls", "--dir", d)
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()
        assert rows[0].split() == ["ID", "PROTO", "HOST", "NAMESPACE", "SPEC"]
        assert rows[1].split() == [fid, "tcp", f"127.0.0.1:{port}", f"10.0.2.100:{WHOAMI_PORT}",
                                   f"127.0.0.1:{port}:{WHOAMI_PORT}"]
        start = unprivileged_port_start()
        if os.geteuid() == 0 and start > 1:
            low = start - 1
            r = _as_user("forward", nid, "add", f"127.0.0.1:{low}:{WHOAMI_PORT}", "--dir", d)
            assert r.returncode == 1
            assert r.stderr.strip() == (
                f"ringnet: error: host port {low} is below net.ipv4.ip_unprivileged_port_start "
                f"({start}): publishing it needs CAP_NET_BIND_SERVICE, or a lower value of that sysctl")
        r = _as_user("forward", nid, "rm", "99999", "--dir", d)
        assert (r.returncode, r.stderr.strip()) == \
            (1, "ringnet: error: no forward with id 99999 (ringnet forward ID ls lists them)")
        r = _as_user("forward", nid, "add", "--dir", d)
        assert r.returncode != 0 and "ringnet forward ID add needs SPEC" in r.stderr
        r = _as_user("forward", nid, "rm", fid, "--dir", d)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert refused(port)
        r = _as_user("forward", nid, "ls", "--json", "--dir", d)
        assert json.loads(r.stdout) == []
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=HANG_S)
        p.stderr.close()
        shutil.rmtree(d, ignore_errors=True)


def test_forward_to_no_network_fails_clearly(tmp_path):
    os.chmod(tmp_path, 0o700)
    r = subprocess.run(ringnet_cmd("forward", "deadbeef", "ls", "--dir", str(tmp_path)),
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S)
    assert (r.returncode, r.stderr.strip()) == \
        (1, "ringnet: error: no running network with id 'deadbeef'")


# --- ringnet attach -p and --api-socket ----------------------------------------------------------------


@needs_userns
def test_attach_publishes_and_serves_the_api_socket(unshared_target, tmp_path):
    port, port2 = free_port(), free_port()
    api = str(tmp_path / "api.sock")
    ready_r, ready_w = os.pipe()
    p = subprocess.Popen(ringnet_cmd("attach", "--workers", "1", "--no-control-socket",
                                     "-p", f"127.0.0.1:{port}:{WHOAMI_PORT}", "--api-socket", api,
                                     "--ready-fd", str(ready_w), str(unshared_target.pid)),
                         pass_fds=[ready_w], env=child_env(), stderr=subprocess.PIPE, text=True)
    os.close(ready_w)
    server = None
    try:
        assert os.read(ready_r, 1) == b"1", p.stderr.read() if p.poll() is not None else ""
        server = subprocess.Popen(["nsenter", f"--target={unshared_target.pid}", "--user", "--net",
                                   "--preserve-credentials", sys.executable, "-c", WHOAMI,
                                   str(WHOAMI_PORT)])
        assert served(port).split()[0] == "127.0.0.1"  # spliced: seen from loopback
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(HANG_S)
            s.connect(api)
            s.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {
                "proto": "tcp", "host_addr": "127.0.0.1", "host_port": port2,
                "guest_port": WHOAMI_PORT}}).encode())
            s.shutdown(socket.SHUT_WR)
            assert s.recv(256) == b'{"return":{"id":1}}'
        assert served(port2).split()[0] == "127.0.0.1"  # spliced: seen from loopback
    finally:
        os.close(ready_r)
        if server is not None:
            server.kill()
            server.wait()
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=HANG_S)
        p.stderr.close()
    assert refused(port) and refused(port2)
    assert not os.path.exists(api)
