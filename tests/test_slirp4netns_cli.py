"""ringnet-slirp4netns: slirp4netns 1.2's command line (parsing, --help, refusals) and
end-to-end runs against a namespace made by ``unshare -Urn``, started as podman starts
slirp4netns: ready fd, exit fd, the interface named as asked, host loopback policy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from ringnet import slirp4netns as s4
from ringnet.slirp4netns import UsageError, config_from_args, parse_args

from conftest import HANG_S, child_env, needs_userns, ringnet_processes, wait_until

# every option slirp4netns 1.2 lists in --help
OPTIONS = ["-c", "--configure", "-e", "--exit-fd", "-r", "--ready-fd", "-m", "--mtu", "-6",
           "--enable-ipv6", "-a", "--api-socket", "--cidr", "--disable-host-loopback",
           "--netns-type", "--userns-path", "--enable-sandbox", "--enable-seccomp",
           "--outbound-addr", "--outbound-addr6", "--disable-dns", "--macaddress",
           "--target-type", "-h", "--help", "-v", "--version"]


def _script() -> list[str]:
    """The installed console script (beside this interpreter), else the module."""
    exe = os.path.join(os.path.dirname(sys.executable), "ringnet-slirp4netns")
    return [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "ringnet.slirp4netns"]


# Command line ---------------------------------------------------------------------------

def test_help_lists_every_option_and_exits_0():
    r = subprocess.run(_script() + ["--help"], capture_output=True, text=True, env=child_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: ringnet-slirp4netns [OPTION]... PID|PATH [TAPNAME]")
    listed = set()
    for line in r.stdout.splitlines():
        for word in line.replace(",", " ").replace("=", " ").split()[:3]:
            listed.add(word)
    missing = [o for o in OPTIONS if o not in listed]
    assert not missing, f"--help does not list {missing}"
    # the strings podman 4 looks for in --help before passing an option
    for probe in ("--disable-host-loopback", "--mtu", "--enable-sandbox", "--enable-seccomp",
                  "--cidr", "--enable-ipv6", "--netns-type"):
        assert probe in r.stdout


def test_short_help_and_version(capsys):
    assert s4.main(["-h"]) == 0
    assert capsys.readouterr().out == s4.HELP
    assert s4.main(["--version"]) == 0
    assert "ringnet-slirp4netns version" in capsys.readouterr().out


def test_podman_command_line_parses():
    # what podman 4.3 passes (observed), with its default options
    args = parse_args(["--disable-host-loopback", "--mtu=65520", "--enable-sandbox",
                       "--enable-seccomp", "--enable-ipv6", "-c", "-e", "3", "-r", "4",
                       "--netns-type=path", "/run/user/1000/netns/netns-1234", "tap0"])
    assert (args.exit_fd, args.ready_fd, args.target, args.tapname) == \
        (3, 4, "/run/user/1000/netns/netns-1234", "tap0")
    cfg = config_from_args(args)
    assert (cfg.mtu, cfg.ipv6, cfg.ifname, cfg.allow_host_loopback, cfg.configure_interface) == \
        (65520, True, "tap0", False, True)
    assert cfg.resolv_conf is False


def test_slirp4netns_defaults():
    args = parse_args(["1234"])
    assert (args.target, args.tapname, args.netns_type) == (1234, "tap0", "pid")
    cfg = config_from_args(args)
    assert cfg.mtu == 1500
    assert cfg.allow_host_loopback is True          # reachable unless --disable-host-loopback
    assert cfg.ipv6 is False                        # only with -6
    assert cfg.configure_interface is False         # only with -c
    addrs = {k: str(v) for k, v in cfg.addresses().items()}
    assert addrs == {"guest4": "10.0.2.100", "gateway4": "10.0.2.2", "dns4": "10.0.2.3"}


@pytest.mark.parametrize("argv, attr, want", [
    (["-c", "1"], "configure", True),
    (["--configure", "1"], "configure", True),
    (["-e", "7", "1"], "exit_fd", 7),
    (["--exit-fd=7", "1"], "exit_fd", 7),
    (["-r7", "1"], "ready_fd", 7),
    (["--ready-fd", "7", "1"], "ready_fd", 7),
    (["-m", "9000", "1"], "mtu", 9000),
    (["--mtu=9000", "1"], "mtu", 9000),
    (["-6", "1"], "enable_ipv6", True),
    (["--enable-ipv6", "1"], "enable_ipv6", True),
    (["--cidr=10.8.0.0/24", "1"], "cidr", "10.8.0.0/24"),
    (["--disable-host-loopback", "1"], "disable_host_loopback", True),
    (["--netns-type=path", "/x"], "target", "/x"),
    (["--netns-type", "pid", "1"], "netns_type", "pid"),
    (["--userns-path=/proc/1/ns/user", "1"], "userns_path", "/proc/1/ns/user"),
    (["--enable-sandbox", "1"], "enable_sandbox", True),
    (["--enable-seccomp", "1"], "enable_seccomp", True),
    (["--target-type=netns", "1"], "target_type", "netns"),
    (["-ce", "5", "1"], "exit_fd", 5),              # getopt-style bundled short options
    (["-c6", "1"], "enable_ipv6", True),
    (["1", "eth7"], "tapname", "eth7"),
])
def test_each_option_parses(argv, attr, want):
    assert getattr(parse_args(argv), attr) == want


def test_cidr_moves_every_address():
    cfg = config_from_args(parse_args(["--cidr=10.8.0.0/24", "1"]))
    assert {k: str(v) for k, v in cfg.addresses().items()} == \
        {"guest4": "10.8.0.100", "gateway4": "10.8.0.2", "dns4": "10.8.0.3"}


@pytest.mark.parametrize("argv, named", [
    (["--mtu=abc", "1"], "--mtu=abc"),
    (["--mtu=65521", "1"], "--mtu=65521"),
    (["-m", "576", "1"], "--mtu=576"),
    (["-e", "x", "1"], "--exit-fd=x"),
    (["--ready-fd=-2", "1"], "--ready-fd=-2"),
    (["--netns-type=cgroup", "1"], "--netns-type=cgroup"),
    (["--target-type=vm", "1"], "--target-type=vm"),
    (["--outbound-addr=fd00::1", "1"], "--outbound-addr=fd00::1"),
    (["--outbound-addr6=10.0.0.1", "1"], "--outbound-addr6=10.0.0.1"),
    (["--macaddress=zz", "-c", "1"], "--macaddress=zz"),
    (["--cidr=10.0.2.0/31", "1"], "--cidr=10.0.2.0/31"),
    (["--cidr=banana", "1"], "--cidr='banana'"),
    (["abc"], "PID 'abc'"),
    (["1", "much-too-long-interface-name"], "TAPNAME"),
    (["--bogus", "1"], "--bogus"),
    (["--mtu"], "--mtu"),
    ([], "PID or PATH"),
    (["1", "tap0", "extra"], "too many arguments"),
    (["-e", "3", "-r", "3", "1"], "--exit-fd and --ready-fd"),
    (["-a", "/tmp/" + "x" * 120, "1"], "--api-socket='/tmp/xxx"),
])
def test_bad_values_name_themselves(argv, named, capsys):
    assert s4.main(argv) == 1
    err = capsys.readouterr().err
    assert named in err, err
    assert err.startswith("ringnet-slirp4netns: ")


@pytest.mark.parametrize("argv, named", [
    (["--outbound-addr=127.0.0.1", "1"], "--outbound-addr=127.0.0.1"),
    (["--outbound-addr6=::1", "1"], "--outbound-addr6=::1"),
    (["--disable-dns", "1"], "--disable-dns"),
    (["-c", "--macaddress=02:00:00:00:00:01", "1"], "--macaddress=02:00:00:00:00:01: ringnet's "
     "interface is a tun device"),
    (["--macaddress=02:00:00:00:00:01", "1"], "--macaddress"),
    (["--target-type=bess", "/tmp/bess.sock"], "--target-type=bess"),
])
def test_options_ringnet_cannot_honour_fail_naming_themselves(argv, named):
    with pytest.raises(UsageError) as e:
        parse_args(argv)
    assert named in str(e.value)


def test_missing_namespace_fails_with_status_1():
    r = subprocess.run(_script() + ["--netns-type=path", "/nonexistent/netns", "tap0"],
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S)
    assert r.returncode == 1
    assert "/nonexistent/netns" in r.stderr


def test_a_file_that_is_not_a_namespace_is_refused():
    r = subprocess.run(_script() + ["--netns-type=path", "/proc/self/ns/user", "tap0"],
                       capture_output=True, text=True, env=child_env(), timeout=HANG_S)
    assert r.returncode == 1
    assert "is not a network namespace" in r.stderr


@needs_userns
def test_attach_path_refuses_our_own_namespace_and_wrong_types(unshared_target):
    from ringnet import NamespaceError, Network

    with pytest.raises(NamespaceError, match="our own network namespace"):
        Network.attach_path("/proc/self/ns/net")
    with pytest.raises(NamespaceError, match="is not a user namespace"):
        Network.attach_path(f"/proc/{unshared_target.pid}/ns/net", "/proc/self/ns/net")
    with pytest.raises(NamespaceError, match="is not a network namespace"):
        Network.attach_path(f"/proc/{unshared_target.pid}/ns/user")


# End to end ---------------------------------------------------------------------------

class Slirp:
    """ringnet-slirp4netns running for a target namespace, started as podman starts
    slirp4netns: -e and -r on pipes."""

    def __init__(self, argv: list[str]) -> None:
        self.exit_r, self.exit_w = os.pipe()
        ready_r, ready_w = os.pipe()
        argv = [a.replace("EXIT", str(self.exit_r)).replace("READY", str(ready_w)) for a in argv]
        try:
            self.proc = subprocess.Popen(_script() + argv, pass_fds=[self.exit_r, ready_w],
                                         env=child_env(), stderr=subprocess.PIPE, text=True)
        finally:
            os.close(self.exit_r)
            os.close(ready_w)
        try:
            self.ready = os.read(ready_r, 16)   # EOF (b"") if it failed before ready
        finally:
            os.close(ready_r)

    def stop(self) -> int:
        """Close the exit fd's other end, as podman does; return the exit status."""
        if self.exit_w >= 0:
            os.close(self.exit_w)
            self.exit_w = -1
        try:
            return self.proc.wait(timeout=HANG_S)
        finally:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()


@contextlib.contextmanager
def slirp(argv: list[str]):
    s = Slirp(argv)
    try:
        yield s
    finally:
        s.kill()


def inside(target: subprocess.Popen, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--target={target.pid}", "--user", "--net",
                           "--preserve-credentials", *argv], capture_output=True, text=True,
                          timeout=HANG_S, **kw)


def link(target: subprocess.Popen, name: str) -> dict:
    r = inside(target, ["ip", "-j", "addr", "show", "dev", name])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


CONNECT = ("import socket, sys\n"
           "s = socket.create_connection(('10.0.2.2', int(sys.argv[1])), timeout=30)\n"
           "s.sendall(b'ping'); print(s.recv(100).decode())\n")


@contextlib.contextmanager
def loopback_server():
    """A TCP server on host loopback that answers 'pong:' + what it got, once per client."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(HANG_S)
                c.sendall(b"pong:" + c.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


def _namespace_path_args(kind: str, target: subprocess.Popen) -> list[str]:
    if kind == "pid":
        return [str(target.pid)]
    if kind == "path":
        return ["--netns-type=path", f"/proc/{target.pid}/ns/net"]
    return ["--netns-type=path", f"--userns-path=/proc/{target.pid}/ns/user",
            f"/proc/{target.pid}/ns/net"]


@needs_userns
@pytest.mark.parametrize("kind", ["pid", "path", "path+userns"])
def test_podman_style_run_configures_tap0_and_reaches_host_loopback(kind, unshared_target):
    target = unshared_target
    before = ringnet_processes()
    with loopback_server() as port, \
            slirp(["--mtu=9000", "--enable-sandbox", "--enable-seccomp", "-c", "-e", "EXIT",
                   "-r", "READY", *_namespace_path_args(kind, target), "tap0"]) as s:
        assert s.ready == b"1", s.proc.stderr.read() if s.proc.poll() is not None else ""
        tap = link(target, "tap0")
        assert tap["mtu"] == 9000
        assert "UP" in tap["flags"]
        v4 = [(a["local"], a["prefixlen"]) for a in tap["addr_info"] if a["family"] == "inet"]
        assert v4 == [("10.0.2.100", 24)]
        assert not [a for a in tap["addr_info"] if a["family"] == "inet6"
                    and a["local"].startswith("fd00:")], "IPv6 configured without -6"
        route = inside(target, ["ip", "-j", "route", "show", "default"])
        assert json.loads(route.stdout)[0]["gateway"] == "10.0.2.2"
        # host loopback is reachable through the gateway unless --disable-host-loopback
        r = inside(target, [sys.executable, "-c", CONNECT, str(port)])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "pong:ping"
        assert s.stop() == 0, s.proc.stderr
    # the exit fd ended it: nothing of ours left, the tun device gone with its owner
    assert ringnet_processes() - before == set()
    gone = inside(target, ["ip", "link", "show", "tap0"])
    assert gone.returncode != 0


@needs_userns
def test_disable_host_loopback_refuses_the_gateway(unshared_target):
    target = unshared_target
    with loopback_server() as port, \
            slirp(["-6", "--disable-host-loopback", "-c", "-e", "EXIT", "-r", "READY",
                   str(target.pid), "tap0"]) as s:
        assert s.ready == b"1"
        six = [a["local"] for a in link(target, "tap0")["addr_info"] if a["family"] == "inet6"]
        assert "fd00::100" in six
        r = inside(target, [sys.executable, "-c", CONNECT, str(port)])
        assert r.returncode != 0
        assert "ConnectionRefusedError" in r.stderr, r.stderr
        assert s.stop() == 0


@needs_userns
def test_without_configure_the_interface_is_left_bare(unshared_target):
    target = unshared_target
    with slirp(["-e", "EXIT", "-r", "READY", str(target.pid), "veth9"]) as s:
        assert s.ready == b"1"
        tap = link(target, "veth9")
        assert "UP" not in tap["flags"]
        assert not [a for a in tap["addr_info"] if a["family"] == "inet"]
        assert s.stop() == 0


@needs_userns
def test_a_byte_on_the_exit_fd_ends_it_too(unshared_target):
    before = ringnet_processes()
    with slirp(["-c", "-e", "EXIT", "-r", "READY", str(unshared_target.pid)]) as s:
        assert s.ready == b"1"
        os.write(s.exit_w, b"x")
        assert s.proc.wait(timeout=HANG_S) == 0
    assert ringnet_processes() - before == set()


@needs_userns
def test_sigterm_tears_down_and_dies_of_it(unshared_target):
    before = ringnet_processes()
    with slirp(["-c", "-r", "READY", str(unshared_target.pid)]) as s:
        assert s.ready == b"1"
        wait_until(lambda: ringnet_processes() - before, "ringnet's children to run")
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=HANG_S) == -signal.SIGTERM
    assert ringnet_processes() - before == set()


@needs_userns
def test_target_without_namespace_of_its_own_fails_before_ready():
    with slirp(["-c", "-e", "EXIT", "-r", "READY", str(os.getpid())]) as s:
        assert s.ready == b""
        assert s.proc.wait(timeout=HANG_S) == 1
        assert "shares our own network namespace" in s.proc.stderr.read()

