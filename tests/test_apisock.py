"""slirp4netns's API socket (ringnet/_apisock.py): the same answers as slirp4netns, forwards that carry traffic.

The requests a slirp4netns client sends (podman's, rootlesskit's and slirp4netns's own
test's, good and bad) go to the real slirp4netns 1.2 (attached to an ``unshare -rn``
namespace) and then, on the same host ports, to ringnet's API socket; the answers must
be the same bytes. Then what ringnet does differently on purpose (it says why an add
failed; it refuses ports out of range and other guest addresses), forwards added
through the API carrying traffic to a server inside and closing again when removed,
and ``ringnet run --api-socket`` / ``ringnet-slirp4netns -a`` as the unprivileged user.
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
import textwrap

import pytest

import ringnet
from conftest import HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user, wait_until
from forwards import WHOAMI, refused
from forwards import ask_loopback as ask, served_loopback as served
from localdns import free_port

WHOAMI_PORT = 7000
def api(path: str, data: bytes, shut: bool = True) -> bytes:
    """One request, as slirp4netns's clients send it (shut: then SHUT_WR, as its manual
    asks; podman does; some clients do not); the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(HANG_S)
        # slirp4netns listens with a backlog of 0: a full queue refuses for a moment
        rc: list = []
        wait_until(lambda: rc.append(s.connect_ex(path)) or rc[-1] != errno.EAGAIN,
                   f"{path} to take a connection", interval=0.01)
        if rc[-1]:
            raise OSError(rc[-1], os.strerror(rc[-1]), path)
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def call(path: str, execute: str, **arguments) -> dict:
    req: dict = {"execute": execute}
    if arguments:
        req["arguments"] = arguments
    return json.loads(api(path, json.dumps(req).encode() + b"\n"))


# --- the same answers as slirp4netns ------------------------------------------------------------


def conversation(p: list[int]) -> list[tuple[bytes, bool]]:
    """(request, shut down after it) in order, on host ports ``p``: slirp4netns's own API
    test's requests, podman's (newline-terminated, empty guest_addr), and the corner
    cases of its JSON reading."""
    def add(**a) -> bytes:
        return json.dumps({"execute": "add_hostfwd", "arguments": a}).encode()
    reqs = [
        b"badjson\n", b'{"unexpectedjson": 42}', b'{"execute": "bad"}', b"[1,2]", b'"text"',
        b'{"execute": 5}', b"", b" ", b"\x00\x01", b'{"execute": "LIST_HOSTFWD"}',
        b'{"execute": "list_hostfwd", "execute": "list_hostfwd"}',      # duplicate key
        b'{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": NaN, "guest_port": 1}}',
        b'{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1e400, "guest_port": 1}}',
        b"x" * 4096,                                                    # too large
        b'{"execute": "list_hostfwd"}',                                 # empty list
        add(proto="bad"), add(proto="tcp4", host_port=p[0], guest_port=80),
        add(proto="tcp", host_port=p[0], guest_port=80),                # id 1
        add(proto="tcp", host_addr="127.0.0.1", host_port=p[1], guest_addr="10.0.2.100",
            guest_port=81),                                             # id 2
        json.dumps({"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "",
                    "host_port": p[2], "guest_addr": "", "guest_port": 82}}).encode() + b"\n",
        b'{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": %d.7, '
        b'"guest_port": 83}}' % p[3],                                   # truncated: id 4
        add(proto="tcp", host_port=str(p[4]), guest_port=80),           # a string: no port
        add(proto="tcp", host_port=p[4]),                               # no guest port
        add(proto="tcp", host_port=p[4], guest_port=True),
        add(proto="tcp", host_addr="::1", host_port=p[4], guest_port=80),
        add(proto="tcp", host_addr="127.1", host_port=p[4], guest_port=80),
        add(proto="tcp", host_addr=None, host_port=p[4], guest_port=84),  # default: id 5
        add(proto="tcp", host_port=p[5], guest_addr="10.0.2", guest_port=80),
        b'{"execute": "list_hostfwd"}',
        b'{"execute": "list_hostfwd", "arguments": {"ignored": 1}}',
        b'\t\n {"execute": "list_hostfwd"} trailing words',
        b'{"execute": "list_hostfwd"}\x00{after a NUL',
        b'{"execute": "remove_hostfwd", "arguments": {"id": 1}}',
        b'{"execute": "remove_hostfwd", "arguments": {"id": 1}}',       # gone
        b'{"execute": "remove_hostfwd"}',
        b'{"execute": "remove_hostfwd", "arguments": {"id": "2"}}',
        b'{"execute": "remove_hostfwd", "arguments": {"id": 3.9}}',     # removes 3
        b'{"execute": "list_hostfwd"}',
        add(proto="tcp", host_port=p[5], guest_port=85),                # id 6: never reused
        b'{"execute": "list_hostfwd"}',
    ]
    # a client that never shuts its side down gets its answer too
    return [(r, True) for r in reqs] + [(b'{"execute": "list_hostfwd"}', False)]


def _wait_socket(path: str, proc: subprocess.Popen) -> None:
    def up() -> bool:
        assert proc.poll() is None, "the API server's process exited"
        try:
            return b"entries" in api(path, b'{"execute": "list_hostfwd"}')
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
            return False
    wait_until(up, f"{path} to accept connections", interval=0.05)


def real_slirp4netns_answers(path: str, reqs) -> list[bytes]:
    target = subprocess.Popen(["unshare", "-rn", "sleep", "300"])
    slirp = None
    try:
        ours = os.stat("/proc/self/ns/net").st_ino
        wait_until(lambda: os.stat(f"/proc/{target.pid}/ns/net").st_ino != ours,
                   "unshare -rn to create a namespace")
        slirp = subprocess.Popen(["slirp4netns", "-c", "--api-socket", path, str(target.pid), "tap0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_socket(path, slirp)
        return [api(path, r, shut) for r, shut in reqs]
    finally:
        for p in (slirp, target):
            if p is not None:
                p.kill()
                p.wait()


def ringnet_answers(path: str, reqs) -> list[bytes]:
    with ringnet.Network(workers=1, control_socket=False, api_socket=path) as net:
        assert net.info()["api_socket"] == path
        assert os.stat(path).st_mode & 0o777 == 0o600
        answers = [api(path, r, shut) for r, shut in reqs]
    assert not os.path.exists(path), "the API socket outlived its network"
    return answers


@needs_userns
def test_answers_are_slirp4netns_answers(tmp_path):
    if shutil.which("slirp4netns") is None:
        pytest.skip("slirp4netns is not installed (scripts/install-peers.sh installs it)")
    ports = [free_port() for _ in range(6)]
    reqs = conversation(ports)
    want = real_slirp4netns_answers(str(tmp_path / "slirp4netns.sock"), reqs)
    got = ringnet_answers(str(tmp_path / "ringnet.sock"), reqs)
    diff = [(r[:100], w, g) for (r, _), w, g in zip(reqs, want, got) if w != g]
    assert not diff, "\n".join(f"{r!r}:\n  slirp4netns {w!r}\n  ringnet     {g!r}" for r, w, g in diff)
    # and the conversation went where it should: a sanity check on the reference itself
    assert want[reqs.index((b'{"execute": "list_hostfwd"}', True))] == b'{"entries":[]}'
    assert b'"id":6' in want[-2] and b'"id":3' not in want[-1]


# --- ringnet's own answers, traffic ---------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("api") / "api.sock")
    with ringnet.Network(workers=2, control_socket=False, api_socket=path) as n:
        n.spawn([sys.executable, "-c", WHOAMI, str(WHOAMI_PORT)])
        n.test_api = path
        yield n


def error(desc: str) -> dict:
    return {"error": {"desc": desc}}


@needs_userns
def test_added_forward_carries_traffic_and_removal_closes_it(net):
    path, port = net.test_api, free_port()
    got = call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
               guest_addr="", guest_port=WHOAMI_PORT)
    fid = got["return"]["id"]
    assert served(port).split()[0] == "127.0.0.1"   # a loopback client: spliced, seen from loopback
    entry = {"id": fid, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": port,
             "guest_addr": "10.0.2.100", "guest_port": WHOAMI_PORT}
    assert entry in call(path, "list_hostfwd")["entries"]
    [fwd] = [f for f in net.forwards() if f.ports == [(port, WHOAMI_PORT)]]
    assert str(fwd.spec.host_addr) == "127.0.0.1"
    assert call(path, "remove_hostfwd", id=fid) == {"return": {}}
    assert refused(port)
    assert entry not in call(path, "list_hostfwd")["entries"]
    assert fwd.closed and fwd not in net.forwards()
    assert call(path, "remove_hostfwd", id=fid) == error("bad request: remove_hostfwd: bad arguments.id")


@needs_userns
def test_forward_removed_elsewhere_leaves_the_list(net):
    path, port = net.test_api, free_port()
    fid = call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
               guest_port=WHOAMI_PORT)["return"]["id"]
    [fwd] = [f for f in net.forwards() if f.ports == [(port, WHOAMI_PORT)]]
    fwd.close()
    assert fid not in [e["id"] for e in call(path, "list_hostfwd")["entries"]]
    assert call(path, "remove_hostfwd", id=fid) == error("bad request: remove_hostfwd: bad arguments.id")


@needs_userns
def test_failed_add_says_why(net):
    path = net.test_api
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    try:
        assert call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=busy,
                    guest_port=80) == \
            error(f"bad request: add_hostfwd: host port {busy} is already in use (127.0.0.1:{busy})")
    finally:
        holder.close()
    port = free_port()
    fid = call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
               guest_port=WHOAMI_PORT)["return"]["id"]
    try:
        got = call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
                   guest_port=80)
        assert got == error(f"bad request: add_hostfwd: publish spec '127.0.0.1:{port}:80/tcp': host "
                            f"ports overlap those of the forward '127.0.0.1:{port}:{WHOAMI_PORT}/tcp'")
    finally:
        call(path, "remove_hostfwd", id=fid)


@needs_userns
@pytest.mark.parametrize("arguments, desc", [
    ({"proto": "tcp", "host_port": 70000, "guest_port": 80}, "bad arguments.host_port"),
    ({"proto": "tcp", "host_port": -5, "guest_port": 80}, "bad arguments.host_port"),
    ({"proto": "tcp", "host_port": 8080, "guest_port": 65536}, "bad arguments.guest_port"),
    ({"proto": "tcp", "host_port": 8080, "guest_addr": "10.0.2.50", "guest_port": 80},
     "bad arguments.guest_addr: ringnet forwards to the namespace's address 10.0.2.100 only"),
])
def test_refused_where_slirp4netns_would_misbehave(net, arguments, desc):
    """slirp4netns wraps ports out of range and forwards to any address; ringnet refuses."""
    before = len(net.forwards())
    assert call(net.test_api, "add_hostfwd", **arguments) == error(f"bad request: add_hostfwd: {desc}")
    assert len(net.forwards()) == before


@needs_userns
def test_udp_goes_to_publish_and_its_answer_comes_back(net):
    """proto udp is passed to Network.publish: its forward's id, or its error in the API's
    form (whichever this tree's publish gives)."""
    port = free_port()
    spec = f"127.0.0.1:{port}:{WHOAMI_PORT}/udp"
    try:
        net.publish(spec).close()
    except ringnet.RingnetError as e:
        want = error(f"bad request: add_hostfwd: {e}")
    else:
        want = None
    got = call(net.test_api, "add_hostfwd", proto="udp", host_addr="127.0.0.1", host_port=port,
               guest_port=WHOAMI_PORT)
    if want is not None:
        assert got == want
    else:
        fid = got["return"]["id"]
        assert {"id": fid, "proto": "udp", "host_addr": "127.0.0.1", "host_port": port,
                "guest_addr": "10.0.2.100", "guest_port": WHOAMI_PORT} in \
            call(net.test_api, "list_hostfwd")["entries"]
        assert call(net.test_api, "remove_hostfwd", id=fid) == {"return": {}}


@needs_userns
def test_silent_client_does_not_block_others_for_ever(net):
    """A client that connects and sends nothing gets 'cannot parse JSON' after the read
    timeout; the next client is answered after it."""
    with socket.socket(socket.AF_UNIX) as idle:
        idle.connect(net.test_api)
        assert "entries" in call(net.test_api, "list_hostfwd")
        idle.settimeout(HANG_S)
        assert idle.recv(256) == b'{"error":{"desc":"bad request: cannot parse JSON"}}'


def test_bad_api_socket_paths_name_the_option():
    with pytest.raises(ringnet.ConfigError, match=r"api_socket='/tmp/x+' is 1\d\d bytes long; a "
                       r"unix socket path holds at most 107"):
        ringnet.NetworkConfig(api_socket="/tmp/" + "x" * 120)
    with pytest.raises(ringnet.ConfigError, match="api_socket='' must be a non-empty path"):
        ringnet.NetworkConfig(api_socket="")
    r = subprocess.run(ringnet_cmd("run", "--api-socket", "/tmp/" + "y" * 120, "--", "true"),
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S)
    assert r.returncode == 125
    assert r.stderr.startswith("ringnet: error: --api-socket='/tmp/yyy"), r.stderr


# --- the command lines, as the unprivileged user -----------------------------------------------

CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode())
    s.shutdown(socket.SHUT_WR)
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    print(out.decode())
""")


def _user_dir() -> str:
    """A private directory of the unprivileged test user, for its API socket."""
    uid, gid = unpriv_user()
    d = tempfile.mkdtemp(prefix="ringnet-api-")
    os.chown(d, uid, gid)
    os.chmod(d, 0o700)
    return d


def _user_call(path: str, req: dict) -> dict:
    """A request sent by the test user (the socket answers only its owner's uid)."""
    r = subprocess.run(as_user_argv([sys.executable, "-c", CLIENT, path, json.dumps(req)]),
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait_user_socket(path: str, proc: subprocess.Popen) -> None:
    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        r = subprocess.run(["test", "-S", path], timeout=HANG_S)   # as root: sees into the dir
        return r.returncode == 0
    wait_until(up, f"{path} to appear", interval=0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


@needs_userns
def test_ringnet_run_api_socket_as_unprivileged_user():
    d = _user_dir()
    path = os.path.join(d, "api.sock")
    port = free_port()
    p = subprocess.Popen(as_user_argv(ringnet_cmd("run", "--workers", "1", "--api-socket", path, "--",
                                                  sys.executable, "-c", WHOAMI, str(WHOAMI_PORT))),
                         env=child_env(), cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        _wait_user_socket(path, p)
        got = _user_call(path, {"execute": "add_hostfwd", "arguments": {
            "proto": "tcp", "host_addr": "127.0.0.1", "host_port": port, "guest_port": WHOAMI_PORT}})
        assert got == {"return": {"id": 1}}
        assert served(port).split()[0] == "127.0.0.1"  # spliced: seen from loopback
        # the socket refuses a client of another uid (we are root when the test user exists)
        if os.geteuid() == 0:
            assert json.loads(api(path, b'{"execute": "list_hostfwd"}')) == \
                error("refused: this network belongs to another user")
        assert _user_call(path, {"execute": "remove_hostfwd", "arguments": {"id": 1}}) == {"return": {}}
        assert refused(port)
    finally:
        _stop(p)
        assert not os.path.exists(path)
        shutil.rmtree(d, ignore_errors=True)


@needs_userns
def test_ringnet_slirp4netns_api_socket(unshared_target, tmp_path):
    """ringnet-slirp4netns -a, as podman starts it for port_handler=slirp4netns: a forward
    added through the socket reaches a server in the target namespace."""
    path = str(tmp_path / "api.sock")
    exe = os.path.join(os.path.dirname(sys.executable), "ringnet-slirp4netns")
    argv = [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "ringnet.slirp4netns"]
    ready_r, ready_w = os.pipe()
    p = subprocess.Popen(argv + ["-c", "-a", path, "-r", str(ready_w), str(unshared_target.pid), "tap0"],
                         pass_fds=[ready_w], env=child_env(), stderr=subprocess.PIPE, text=True)
    os.close(ready_w)
    server = None
    try:
        assert os.read(ready_r, 1) == b"1", p.stderr.read() if p.poll() is not None else ""
        server = subprocess.Popen(["nsenter", f"--target={unshared_target.pid}", "--user", "--net",
                                   "--preserve-credentials", sys.executable, "-c", WHOAMI,
                                   str(WHOAMI_PORT)])
        port = free_port()
        assert call(path, "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
                    guest_port=WHOAMI_PORT) == {"return": {"id": 1}}
        assert served(port).split()[0] == "127.0.0.1"  # spliced: seen from loopback
        assert call(path, "list_hostfwd")["entries"][0]["guest_addr"] == "10.0.2.100"
    finally:
        os.close(ready_r)
        if server is not None:
            server.kill()
            server.wait()
        _stop(p)
    assert not os.path.exists(path)
