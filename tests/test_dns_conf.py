"""DNS configuration around the namespace: the resolv.conf that commands see inside
(a private mount namespace per command), the CLI switches, and the watcher that
follows the host's resolv.conf through symlinks.

Nothing here sends a DNS query; tests/test_dns.py resolves names end to end.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

import ringnet
from ringnet import _resolv
from ringnet._resolv import ResolvWatcher, Upstream, parse_upstream

from conftest import child_env, needs_userns, ringnet_cmd, wait_until

HOST_RESOLV = "/etc/resolv.conf"


def host_resolv_text() -> str:
    with open(HOST_RESOLV) as f:
        return f.read()


def host_mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver")]


# --- resolv.conf inside --------------------------------------------------------------


@needs_userns
def test_resolv_conf_inside_names_the_dns_addresses(no_leaks):
    before, mounts = host_resolv_text(), host_mounts()
    with ringnet.Network(workers=1) as net:
        inside = net.run(["cat", "/etc/resolv.conf"], capture_output=True, check=True).stdout.decode()
        assert nameservers(inside) == ["10.0.2.3", "fd00::3"]
        # The bind mount lives in the command's own mount namespace only.
        own = net.run(["readlink", "/proc/self/ns/mnt"], capture_output=True, check=True).stdout
        assert own.decode().strip() != os.readlink("/proc/self/ns/mnt")
        assert host_resolv_text() == before
    assert host_mounts() == mounts


@needs_userns
def test_resolv_conf_ipv4_only_and_custom_dns_address(no_leaks):
    with ringnet.Network(workers=1, ipv6=False, cidr4="10.7.0.0/24", dns4="10.7.0.53") as net:
        inside = net.run(["cat", "/etc/resolv.conf"], capture_output=True, check=True).stdout.decode()
        assert nameservers(inside) == ["10.7.0.53"]


@needs_userns
def test_resolv_conf_keeps_host_search_domains(tmp_path, monkeypatch, no_leaks):
    fake = tmp_path / "resolv.conf"
    fake.write_text("# host\nnameserver 127.0.0.1\nsearch corp.test lab.test\noptions ndots:2\n")
    monkeypatch.setattr(_resolv, "RESOLV_CONF", str(fake))
    with ringnet.Network(workers=1) as net:
        inside = net.run(["cat", "/etc/resolv.conf"], capture_output=True, check=True).stdout.decode()
    assert nameservers(inside) == ["10.0.2.3", "fd00::3"]
    assert "search corp.test lab.test" in inside.splitlines()
    assert "127.0.0.1" not in inside and "options" not in inside


@needs_userns
def test_resolv_conf_off(no_leaks):
    with ringnet.Network(workers=1, resolv_conf=False) as net:
        inside = net.run(["cat", "/etc/resolv.conf"], capture_output=True, check=True).stdout.decode()
    assert inside == host_resolv_text()
    # without a PID namespace (whose /proc needs a mount namespace) nothing is unshared
    with ringnet.Network(workers=1, resolv_conf=False, pid_namespace=False) as net:
        same_mnt = net.run(["readlink", "/proc/self/ns/mnt"], capture_output=True, check=True).stdout
    assert same_mnt.decode().strip() == os.readlink("/proc/self/ns/mnt")


@needs_userns
def test_resolv_conf_not_offered_in_attach_mode(no_leaks, unshared_target):
    with ringnet.Network.attach(unshared_target.pid, workers=1) as net:
        inside = net.run(["cat", "/etc/resolv.conf"], capture_output=True, check=True).stdout
    assert inside.decode() == host_resolv_text()


@needs_userns
def test_cli_resolv_conf_default_and_opt_out():
    def cat(*opts):
        r = subprocess.run(ringnet_cmd("run", "--workers", "1", *opts, "--", "cat", "/etc/resolv.conf"),
                           capture_output=True, text=True, timeout=60, env=child_env())
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert nameservers(cat()) == ["10.0.2.3", "fd00::3"]
    assert nameservers(cat("--disable-ipv6")) == ["10.0.2.3"]
    assert cat("--no-resolv-conf") == host_resolv_text()


@needs_userns
def test_enter_warns_and_runs_when_the_mount_fails(no_leaks):
    """A resolv.conf that cannot be mounted (here: its source does not exist) costs a
    warning, not the command."""
    enter = os.path.join(os.path.dirname(ringnet.__file__), "_enter.py")
    with ringnet.Network(workers=1, resolv_conf=False) as net:
        u, n = net.namespace_fds
        r = subprocess.run([sys.executable, enter, str(u), str(n), "--resolv-conf=/nonexistent/x",
                            "--", "cat", "/etc/resolv.conf"], pass_fds=(u, n), capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 0
    assert "ringnet: warning: cannot bind-mount /nonexistent/x over /etc/resolv.conf" in r.stderr
    assert r.stdout == host_resolv_text()


@pytest.mark.parametrize("args", [[], ["3"], ["3", "4"], ["3", "4", "--"], ["x", "4", "--", "true"],
                                  ["3", "4", "--resolv-conf=", "--", "true"],
                                  ["3", "4", "--resolv-conf=/x", "true"]])
def test_enter_usage_errors(args):
    enter = os.path.join(os.path.dirname(ringnet.__file__), "_enter.py")
    r = subprocess.run([sys.executable, enter, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("usage:"), r.stderr


# --- CLI and configuration -----------------------------------------------------------


def test_cli_dns_upstream_reaches_the_config(monkeypatch):
    from ringnet import cli

    seen = {}

    class Fake:
        def __init__(self, cfg):
            seen["cfg"] = cfg

        def __enter__(self):
            raise ringnet.RingnetError("stop here")

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(cli, "Network", Fake)
    rc = cli.main(["run", "--dns-upstream", "127.0.0.1:5353", "--dns-upstream", "[::1]:53",
                   "--no-resolv-conf", "--", "true"])
    assert rc == cli.EXIT_RINGNET_FAILED
    cfg = seen["cfg"]
    assert cfg.dns_upstream == ("127.0.0.1:5353", "[::1]:53") and cfg.resolv_conf is False
    cli.main(["run", "--", "true"])
    assert seen["cfg"].dns_upstream is None and seen["cfg"].resolv_conf is True


def test_cli_bad_dns_upstream_is_a_one_line_error():
    r = subprocess.run(ringnet_cmd("run", "--dns-upstream", "resolver.example:53", "--", "true"),
                       capture_output=True, text=True, timeout=60, env=child_env())
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [
        "ringnet: error: --dns-upstream='resolver.example:53' is not ADDR[:PORT] with an IP address"]


# --- the host's resolv.conf, followed --------------------------------------------------


def test_read_resolv_conf_follows_symlinks(tmp_path):
    (tmp_path / "real").write_text("nameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
                                   "nameserver bogus\nsearch a.test\ndomain b.test\n")
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "resolv.conf").symlink_to("link")
    path = str(tmp_path / "resolv.conf")
    assert _resolv.read_resolv_conf(path) == [parse_upstream("127.0.0.53"), parse_upstream("fe80::1")]
    assert _resolv.read_search_lines(path) == ["search a.test", "domain b.test"]
    assert _resolv.read_resolv_conf(str(tmp_path / "missing")) == []


class Recorder:
    def __init__(self):
        self.calls: list[tuple[list[Upstream], list[str]]] = []
        self.event = threading.Event()

    def __call__(self, ups, search):
        self.calls.append(([str(u) for u in ups], search))
        self.event.set()


def test_watcher_sees_symlink_retarget_rename_and_rewrite(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("nameserver 127.0.0.1\n")
    b.write_text("nameserver 127.0.0.2\nsearch x.test\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to("a")
    rec = Recorder()
    w = ResolvWatcher(str(link), _resolv.read_resolv_conf(str(link)), [], rec)
    assert not w.check() and rec.calls == []
    link.unlink()
    link.symlink_to("b")  # a symlink pointed elsewhere (NetworkManager, systemd-resolved)
    assert w.check()
    tmp = tmp_path / "b.new"
    tmp.write_text("nameserver ::1\n")
    os.replace(tmp, b)  # replaced by rename
    assert w.check()
    with open(b, "w") as f:  # rewritten in place
        f.write("nameserver 127.0.0.3\nnameserver 127.0.0.4\n")
    assert w.check()
    assert not w.check()
    assert rec.calls == [(["127.0.0.2:53"], ["search x.test"]), (["[::1]:53"], []),
                         (["127.0.0.3:53", "127.0.0.4:53"], [])]


def test_watcher_keeps_upstreams_while_the_file_is_empty_or_gone(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 127.0.0.1\n")
    rec = Recorder()
    w = ResolvWatcher(str(f), _resolv.read_resolv_conf(str(f)), [], rec)
    f.write_text("")
    assert not w.check()
    f.unlink()
    assert not w.check()
    f.write_text("nameserver 127.0.0.1\n")
    assert not w.check() and rec.calls == []


def test_watcher_thread_survives_a_failing_callback(tmp_path, caplog):
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 127.0.0.1\n")
    calls = []

    def boom(ups, search):
        calls.append(ups)
        raise OSError("worker gone")

    w = ResolvWatcher(str(f), [], [], boom, interval=0.02)
    with caplog.at_level(logging.ERROR, logger="ringnet._resolv"):
        w.start()
        wait_until(lambda: calls, "the first callback")
        f.write_text("nameserver 127.0.0.2\n")
        wait_until(lambda: len(calls) >= 2, "the callback for the changed file")
        w.stop()
    assert len(calls) == 2
    assert "could not apply the new DNS upstreams" in caplog.text
    assert not any(t.name == "ringnet-resolv-watch" for t in threading.enumerate())


@needs_userns
def test_dns_upstream_given_means_no_watcher(no_leaks):
    with ringnet.Network(workers=1, dns_upstream="127.0.0.1:5353") as net:
        assert net._watcher is None
    with ringnet.Network(workers=1) as net:
        assert net._watcher is not None
    assert not any(t.name == "ringnet-resolv-watch" for t in threading.enumerate())
