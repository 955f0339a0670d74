"""Inbound port forwarding (publish) through the C core, end to end.

The spec parser's good and bad cases with their exact messages; host listener errors
(port in use, privileged port); then real networks: servers inside the namespace
(python -m http.server, and a "whoami" server answering with the address and port it
sees), forwards from host ports, real clients on the host. A client on host loopback
appears from the gateway address; a client on a non-loopback address appears with its
real address and port, also when the worker that accepted it does not own the flow (two
workers: the accepting worker hands the socket over). That one runs in a user+net
namespace of the test's own, where an address on its loopback stands in for a
non-loopback address of this machine (tests send nothing to the machine's own
addresses). Removing a forward closes the port again; many sequential connections leave
no flows or worker fds behind.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import ringnet
from ringnet._publish import PortSpec, open_listener, parse_spec, unprivileged_port_start
from conftest import as_user_argv, child_env, needs_userns, ringnet_cmd, wait_until, worker_counter
import forwards
from forwards import SINK, WHOAMI, WHOAMI_AT, uploaded_loopback
from forwards import worker_fds as _worker_fds
from localdns import free_port

A = ipaddress.ip_address
FORM = "[ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]"


# --- the spec parser ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, addr, host, ns, proto", [
    ("8080:80", None, (8080, 8080), (80, 80), "tcp"),
    ("8080:80/tcp", None, (8080, 8080), (80, 80), "tcp"),
    ("8080:80/UDP", None, (8080, 8080), (80, 80), "udp"),
    ("127.0.0.1:8080:80", A("127.0.0.1"), (8080, 8080), (80, 80), "tcp"),
    ("0.0.0.0:1-3:101-103/tcp", A("0.0.0.0"), (1, 3), (101, 103), "tcp"),
    ("[::1]:8080:80", A("::1"), (8080, 8080), (80, 80), "tcp"),
    ("[fd00::5]:65535:1/udp", A("fd00::5"), (65535, 65535), (1, 1), "udp"),
    (" 8080-8081:80-81 ", None, (8080, 8081), (80, 81), "tcp"),
])
def test_spec_good(text, addr, host, ns, proto):
    s = parse_spec(text)
    assert (s.host_addr, s.host_ports, s.ns_ports, s.proto) == (addr, host, ns, proto)
    assert s.pairs() == list(zip(range(host[0], host[1] + 1), range(ns[0], ns[1] + 1)))


@pytest.mark.parametrize("text, message", [
    ("", f"publish spec is empty: expected {FORM}"),
    ("8080", f"publish spec '8080': expected {FORM}"),
    ("8080:80/sctp", "publish spec '8080:80/sctp': protocol 'sctp' is neither tcp nor udp"),
    ("::1:8080:80", "publish spec '::1:8080:80': an IPv6 host address goes in brackets, "
                    "as in [::1]:8080:80"),
    ("[::1:8080:80", "publish spec '[::1:8080:80': '[' without ']' around the IPv6 host address"),
    ("[::1]8080:80", f"publish spec '[::1]8080:80': expected ':' after the host address; "
                     f"the form is {FORM}"),
    ("[::1]:8080", f"publish spec '[::1]:8080': expected HOSTPORT:NSPORT after the host address; "
                   f"the form is {FORM}"),
    ("[10.0.0.1]:8080:80", "publish spec '[10.0.0.1]:8080:80': host address '10.0.0.1' in "
                           "brackets is not an IPv6 address"),
    ("localhost:8080:80", "publish spec 'localhost:8080:80': host address 'localhost' is not an "
                          "IP address"),
    ("0:80", "publish spec '0:80': host port '0' is not a port number (1..65535)"),
    ("8080:65536", "publish spec '8080:65536': namespace port '65536' is not a port number "
                   "(1..65535)"),
    ("http:80", "publish spec 'http:80': host port 'http' is not a port number (1..65535)"),
    ("8080-:80", "publish spec '8080-:80': host port '' is not a port number (1..65535)"),
    ("90-80:80-70", "publish spec '90-80:80-70': host port range 90-80 ends before it starts"),
    ("8080-8081:80", "publish spec '8080-8081:80': host port range 8080-8081 (2 ports) and "
                     "namespace port range 80 (1 port) must be of equal length"),
])
def test_spec_bad(text, message):
    with pytest.raises(ringnet.ConfigError) as e:
        parse_spec(text)
    assert str(e.value) == message


def test_config_checks_publish_specs():
    assert ringnet.NetworkConfig(publish=["8080:80", "[::1]:9090:90"]).publish == \
        ("8080:80", "[::1]:9090:90")
    assert ringnet.NetworkConfig(publish="8080:80").publish == ("8080:80",)
    with pytest.raises(ringnet.ConfigError, match="host port '0' is not a port number"):
        ringnet.NetworkConfig(publish=["0:80"])


# --- host listeners ----------------------------------------------------------------------------


def test_listener_port_in_use_names_the_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ringnet.PublishError) as e:
            open_listener(A("127.0.0.1"), port)
        assert e.value.errno == errno.EADDRINUSE
        assert str(e.value) == f"host port {port} is already in use (127.0.0.1:{port})"
    finally:
        holder.close()


def test_listener_privileged_port_says_so():
    start = unprivileged_port_start()
    if start <= 1:
        pytest.skip("net.ipv4.ip_unprivileged_port_start allows every port here")
    port = start - 1
    code = textwrap.dedent(f"""
        import ipaddress
        import ringnet
        from ringnet._publish import open_listener
        try:
            open_listener(ipaddress.ip_address("127.0.0.1"), {port})
        except ringnet.PublishError as e:
            print(e.errno, e)
        else:
            print("bound")
    """)
    out = subprocess.run(as_user_argv([sys.executable, "-c", code]), env=child_env(),
                         capture_output=True, text=True, timeout=60)
    if out.stdout.strip() == "bound":
        pytest.skip("this user may bind privileged ports (CAP_NET_BIND_SERVICE)")
    assert out.stdout.strip() == (
        f"{errno.EACCES} host port {port} is below net.ipv4.ip_unprivileged_port_start ({start}): "
        "publishing it needs CAP_NET_BIND_SERVICE, or a lower value of that sysctl"), out.stderr


# --- end to end ---------------------------------------------------------------------------------

HTTP_PORT, WHOAMI_PORT, WHOAMI2_PORT, SINK_PORT, CLOSED_PORT = 8000, 7000, 7001, 7002, 7003


# through a forward, with a 30 s timeout on each connection
ask = functools.partial(forwards.ask, timeout=30)
served = functools.partial(forwards.served, timeout=30)


@pytest.fixture(scope="module")
def content(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    data = os.urandom(4 << 20)
    (d / "blob").write_bytes(data)
    return d, data


@pytest.fixture(scope="module")
def net(content):
    """Two workers (so that flows of real-source clients may need a handoff), the C-core
    route for every client, an HTTP
    server and two whoami servers inside, one forward from the configuration."""
    http_host = free_port()
    # splice_local=False: host-loopback clients go through the C core too (the splice
    # route has tests/test_splice.py)
    with ringnet.Network(workers=2, publish=[f"127.0.0.1:{http_host}:{HTTP_PORT}"],
                         control_socket=False, splice_local=False) as n:
        n.test_http_host = http_host
        procs = [n.spawn([sys.executable, "-m", "http.server", "--bind", "::", "-d",
                          str(content[0]), str(HTTP_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        for port in (WHOAMI_PORT, WHOAMI2_PORT):
            procs.append(n.spawn([sys.executable, "-c", WHOAMI_AT, "::", str(port)]))
        procs.append(n.spawn([sys.executable, "-c", SINK, str(SINK_PORT)]))
        yield n


def _http_get(addr: str, port: int, path: str) -> bytes:
    import http.client

    def attempt():
        try:
            c = http.client.HTTPConnection(addr, port, timeout=60)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            c.close()
            return body if r.status == 200 else None
        except (ConnectionResetError, ConnectionRefusedError, http.client.RemoteDisconnected):
            return None
    got: list = []
    wait_until(lambda: got.append(attempt()) or got[-1] is not None, f"GET {path} through {port}",
               interval=0.05)
    return got[-1]


@needs_userns
def test_http_get_through_configured_forward_ipv4(net, content):
    """NetworkConfig(publish=...) forwards at start; a 4 MiB GET arrives byte-exact."""
    [fwd] = [f for f in net.forwards() if f.ports == [(net.test_http_host, HTTP_PORT)]]
    assert fwd.ns_addr == A("10.0.2.100")
    assert _http_get("127.0.0.1", net.test_http_host, "/blob") == content[1]
    assert worker_counter(net, "fwd_accepted") >= 1


@needs_userns
def test_http_get_ipv6_forward(net, content):
    port = free_port("::1")
    fwd = net.publish(f"[::1]:{port}:{HTTP_PORT}")
    try:
        assert fwd.ns_addr == A("fd00::100")
        assert _http_get("::1", port, "/blob") == content[1]
    finally:
        fwd.close()


@needs_userns
def test_upload_through_forward_byte_exact(net):
    """Host -> namespace: 32 MiB sent through a forward arrive whole and in order."""
    import hashlib

    data = os.urandom(32 << 20)
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{SINK_PORT}"):
        assert uploaded_loopback(port, data) == [hashlib.sha256(data).hexdigest(), str(len(data))]


@needs_userns
def test_closed_port_inside_resets_the_client(net):
    """Nothing listens on the namespace port: the namespace's RST answers our SYN, and the
    client's connection is reset (SO_LINGER 0), not left hanging."""
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{CLOSED_PORT}"):
        before = worker_counter(net, "tcp_rst_received")
        with pytest.raises(ConnectionResetError):
            # (the reset may even beat connect()'s return)
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.recv(1)
        assert worker_counter(net, "tcp_rst_received") > before


@needs_userns
def test_ipv6_loopback_client_appears_from_gateway6(net):
    port = free_port("::1")
    with net.publish(f"[::1]:{port}:{WHOAMI_PORT}") as fwd:
        host, _, _ = served("::1", port)
        assert host == "fd00::2"
    assert fwd.closed


# Answers with whether the accepted connection has timestamps (TCP_INFO tcpi_options),
# in the "host port" form ask() reads
TSINFO = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(8)
    while True:
        c, a = s.accept()
        ts = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[5] & 1
        c.sendall(b"ts 1\\n" if ts else b"no-ts 0\\n")
        c.close()
""")


@needs_userns
def test_active_open_negotiates_timestamps(net):
    """Our SYN towards the namespace offers timestamps (RFC 7323) and its kernel takes
    them: the connection it accepted has them."""
    port, nsport = free_port(), 7004
    proc = net.spawn([sys.executable, "-c", TSINFO, str(nsport)])
    try:
        with net.publish(f"127.0.0.1:{port}:{nsport}"):
            assert served("127.0.0.1", port)[:2] == ("ts", 1)
    finally:
        proc.kill()
        proc.wait()


@needs_userns
def test_loopback_client_appears_from_gateway(net):
    port = free_port()
    fwd = net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}")
    try:
        host, seen_port, _ = served("127.0.0.1", port)
        assert host == "10.0.2.2"
        assert 1024 <= seen_port <= 65535
    finally:
        fwd.close()


# In a namespace of its own (forwards.in_outer_namespace), as the module's network is set
# up: two workers, the C-core route, the whoami server; 16 connections from the outer
# address (which stands in for a non-loopback address of this machine) to a forward on it
REAL_CLIENTS = textwrap.dedent("""
    import sys
    import ringnet
    from conftest import worker_counter
    from localdns import free_port
    from forwards import WHOAMI_AT
    from test_publish import WHOAMI_PORT, ask, served

    def main(addr):
        with ringnet.Network(workers=2, control_socket=False, splice_local=False) as n:
            n.spawn([sys.executable, "-c", WHOAMI_AT, "::", str(WHOAMI_PORT)])
            port = free_port(addr)
            with n.publish(f"{addr}:{port}:{WHOAMI_PORT}"):
                served(addr, port)
                before = worker_counter(n, "fwd_handoffs")
                seen = [ask(addr, port, bind=(addr, 0)) for _ in range(16)]
                # which worker accepts is the kernel's pick by the client's port: go on,
                # up to 128 in all, until one was handed over (none in 128: 1 in 2**128)
                while worker_counter(n, "fwd_handoffs") == before and len(seen) < 128:
                    seen.append(ask(addr, port, bind=(addr, 0)))
                return {"seen": seen, "handoffs": worker_counter(n, "fwd_handoffs") - before}
""")


@needs_userns
def test_real_client_address_is_seen_inside():
    """A client on a non-loopback address keeps its address and port, whichever worker
    accepts it: 16 connections or more, until one was accepted by the worker that does not
    own the flow and handed over (about half are)."""
    got = forwards.in_outer_namespace(REAL_CLIENTS)
    assert 16 <= len(got["seen"]) <= 128
    for one in got["seen"]:
        assert one is not None
        host, seen_port, own_port = one
        assert (host, seen_port) == (forwards.OUTER_ADDR, own_port)
    assert got["handoffs"] >= 1


@needs_userns
def test_removed_forward_closes_the_port(net):
    port = free_port()
    fwd = net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}")
    served("127.0.0.1", port)
    assert fwd in net.forwards()
    fwd.close()
    assert fwd.closed and fwd not in net.forwards()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=30).close()
    fwd.close()  # twice: nothing more


@needs_userns
def test_worker_refuses_unknown_forward_and_goes_on(net):
    """FORWARD_DEL of an id no worker has: each worker answers with its error (ENOENT) and
    keeps running; the first one's is raised."""
    with pytest.raises(ringnet.CoreError) as e:
        net._publisher._del(999999)
    assert e.value.errno == errno.ENOENT
    assert str(e.value) == (f"worker 0 (FORWARD_DEL): [Errno {errno.ENOENT}] rn_worker_forward_del: "
                            f"{os.strerror(errno.ENOENT)}")
    assert net.failed_children() == []
    port = free_port()
    with net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}"):
        assert served("127.0.0.1", port)[0] == "10.0.2.2"


@needs_userns
def test_port_in_use_and_overlap_are_refused(net):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    before = net.forwards()
    try:
        with pytest.raises(ringnet.PublishError, match=f"host port {port} is already in use"):
            net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}")
    finally:
        holder.close()
    assert net.forwards() == before
    fwd = net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}")
    try:
        with pytest.raises(ringnet.ConfigError, match="host ports overlap those of the forward"):
            net.publish(f"{port}:{WHOAMI2_PORT}")
        # the unspecified addresses cover every address of their family (:: both)
        for wild in ("0.0.0.0", "[::]"):
            with pytest.raises(ringnet.ConfigError, match="host ports overlap those of the forward"):
                net.publish(f"{wild}:{port}:{WHOAMI2_PORT}")
        # the same host port for UDP is another forward (tests/test_publish_udp.py)
        net.publish(f"127.0.0.1:{port}:{WHOAMI_PORT}/udp").close()
    finally:
        fwd.close()


def _tcp_flows_to(net, ns_port: int) -> int:
    f = net.flows()
    return int(((f["proto"] == "tcp") & (f["guest_port"] == ns_port)).sum())


@needs_userns
def test_sequential_connections_leave_no_flows_or_fds(net):
    port = free_port()
    fwd = net.publish(f"127.0.0.1:{port}:{WHOAMI2_PORT}")
    try:
        served("127.0.0.1", port)
        wait_until(lambda: _tcp_flows_to(net, WHOAMI2_PORT) == 0, "the first flow to end")
        fds = _worker_fds(net)
        own = len(os.listdir("/proc/self/fd"))
        accepted = worker_counter(net, "fwd_accepted")
        for _ in range(200):
            assert ask("127.0.0.1", port) is not None
        assert worker_counter(net, "fwd_accepted") - accepted == 200
        wait_until(lambda: _tcp_flows_to(net, WHOAMI2_PORT) == 0, "the flows to end")
        wait_until(lambda: _worker_fds(net) == fds, "the workers' fds to return to their count")
        assert len(os.listdir("/proc/self/fd")) == own
    finally:
        fwd.close()


# --- the command line ---------------------------------------------------------------------------

def test_cli_bad_publish_spec_one_line_error():
    r = subprocess.run(ringnet_cmd("run", "-p", "0:80", "--", "true"), capture_output=True,
                       text=True, timeout=60, env=child_env())
    assert r.returncode == 125
    assert r.stderr.strip() == ("ringnet: error: --publish spec '0:80': host port '0' is not a "
                                "port number (1..65535)")


@needs_userns
def test_cli_run_publish_as_unprivileged_user():
    """ringnet run -p, rootless (as the unprivileged test user when run as root), forwards a
    host port to the command inside; the client on host loopback takes the splice route
    (seen inside from the namespace's loopback)."""
    port = free_port()
    argv = ringnet_cmd("run", "--workers", "2", "-p", f"127.0.0.1:{port}:{WHOAMI_PORT}",
                       "--", sys.executable, "-c", WHOAMI, str(WHOAMI_PORT), "8", "1")
    p = subprocess.Popen(as_user_argv(argv), env=child_env(), cwd="/",
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got: list = []
        wait_until(lambda: p.poll() is not None or got.append(ask("127.0.0.1", port)) or
                   got[-1] is not None, "the command inside to answer", interval=0.05)
        assert p.poll() is None or p.returncode == 0, p.stderr.read()
        assert got[-1][0] == "127.0.0.1"
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
