"""Network sysctls inside the namespace (NetworkConfig.sysctls, --sysctl; ringnet/_sysctl.py).

The parser's good and bad cases with their messages; then real networks: the values a
command inside reads back (dotted and slash forms, a per-interface key of ringnet's own
interface, a later setting of a key winning; ringnet's default tcp_tw_reuse=1 in the
namespaces it creates and none in one it attaches to), the start failing with the setting named
when the namespace's kernel lacks the key, keeps it to the host or refuses the value
(leaving nothing behind), and the CLI as an unprivileged user.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import ringnet
from conftest import HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd
from ringnet import _sysctl


@pytest.mark.parametrize("text, want", [
    ("net.ipv4.tcp_tw_reuse=1", ("net/ipv4/tcp_tw_reuse", "1")),
    (" net.ipv4.ping_group_range = 0 2147483647 ", ("net/ipv4/ping_group_range", "0 2147483647")),
    ("net/ipv6/conf/eth0.5/mtu=1400", ("net/ipv6/conf/eth0.5/mtu", "1400")),
    ("net.ipv4.ip_local_port_range=1024\t65535", ("net/ipv4/ip_local_port_range", "1024\t65535")),
])
def test_parse_good(text, want):
    assert _sysctl.parse(text) == want


@pytest.mark.parametrize("text, message", [
    ("net.ipv4.tcp_tw_reuse", "must be KEY=VALUE"),
    ("=1", "must be KEY=VALUE"),
    ("kernel.hostname=x", "'kernel.hostname' is not a network sysctl: KEY must be net.*"),
    ("net=1", "'net' is not a network sysctl"),
    ("net.ipv4..tcp_tw_reuse=1", "is not a network sysctl"),
    ("net/ipv4/../../kernel/hostname=x", "is not a network sysctl"),
    ("net/ipv4//x=1", "is not a network sysctl"),
    ("net.ipv4.tcp tw=1", "is not a network sysctl"),
    ("net.ipv4.tcp_tw_reuse=", "the value must be 1 to 1024 printable characters (tabs too), got ''"),
    ("net.ipv4.tcp_tw_reuse=1\n2", "the value must be 1 to 1024 printable characters"),
    ("net.ipv4.x=" + "1" * 1025, "the value must be 1 to 1024 printable characters"),
])
def test_parse_bad_names_the_setting(text, message):
    with pytest.raises(ringnet.ConfigError, match="^sysctls: ") as e:
        _sysctl.parse(text)
    assert message in str(e.value)


def test_config_takes_a_mapping_a_string_or_a_sequence():
    assert ringnet.NetworkConfig(sysctls={"net.ipv4.tcp_tw_reuse": 1}).sysctls == \
        ("net.ipv4.tcp_tw_reuse=1",)
    assert ringnet.NetworkConfig(sysctls=" net.ipv4.tcp_ecn = 2").sysctls == ("net.ipv4.tcp_ecn=2",)
    assert ringnet.NetworkConfig(sysctls=["net.ipv4.tcp_ecn=2", "net.ipv4.tcp_ecn=0"]).sysctls == \
        ("net.ipv4.tcp_ecn=2", "net.ipv4.tcp_ecn=0")
    assert ringnet.NetworkConfig().sysctls == ()
    with pytest.raises(ringnet.ConfigError, match="'vm.swappiness' is not a network sysctl"):
        ringnet.NetworkConfig(sysctls={"vm.swappiness": 1})


def test_defaults_the_kernel_lacks_are_skipped_the_users_are_not(tmp_path):
    """On a kernel (before 4.15) without a namespace's own tcp_congestion_control, our
    defaults apply where they can and the start goes on; a user's setting that cannot
    apply still fails, naming itself."""
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "tcp_tw_reuse").write_text("2")
    skipped = _sysctl.apply_defaults(root=str(tmp_path))
    assert skipped == ("net.ipv4.tcp_congestion_control=reno",)
    assert (tmp_path / "net" / "ipv4" / "tcp_tw_reuse").read_text() == "1"
    with pytest.raises(ringnet.NamespaceError,
                       match="sysctl net.ipv4.tcp_congestion_control: the namespace's kernel "
                             "has no such setting"):
        _sysctl.apply(["net.ipv4.tcp_congestion_control=reno"], root=str(tmp_path))


def test_cli_error_names_the_option():
    r = subprocess.run(ringnet_cmd("run", "--sysctl", "kernel.hostname=x", "--", "true"),
                       capture_output=True, text=True, timeout=HANG_S, env=child_env())
    assert r.returncode != 0
    assert "--sysctl: 'kernel.hostname' is not a network sysctl" in r.stderr


def _read_inside(net, *paths: str) -> list[str]:
    out = net.run(["cat", *(f"/proc/sys/{p}" for p in paths)], capture_output=True, check=True)
    return out.stdout.decode().splitlines()


@needs_userns
def test_values_are_set_inside(no_leaks):
    with ringnet.Network(workers=1, control_socket=False, sysctls={
            "net.ipv4.tcp_tw_reuse": 1,                 # kernel default 2
            "net/ipv4/ping_group_range": "0 0",         # default "1 0": nobody
            "net/ipv6/conf/rn0/hop_limit": 33,          # ringnet's own interface
            "net.ipv4.tcp_ecn": 1}) as net:
        assert _read_inside(net, "net/ipv4/tcp_tw_reuse", "net/ipv4/ping_group_range",
                            "net/ipv6/conf/rn0/hop_limit", "net/ipv4/tcp_ecn") == \
            ["1", "0\t0", "33", "1"]


_NEW_SOCKET_CC = ("import socket; s = socket.socket(); "
                  "print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)"
                  ".rstrip(b'\\0').decode())")


def _host_value(path: str) -> str:
    with open(f"/proc/sys/{path}") as f:
        return f.read().strip()


@needs_userns
def test_created_namespace_defaults_unless_told_otherwise(no_leaks):
    """ringnet's own namespaces get net.ipv4.tcp_tw_reuse=1 and reno as the default
    congestion control (_sysctl.CREATED_DEFAULTS), so a new socket inside uses reno; the
    user's settings override them."""
    with ringnet.Network(workers=1, control_socket=False) as net:
        assert _read_inside(net, "net/ipv4/tcp_tw_reuse",
                            "net/ipv4/tcp_congestion_control") == ["1", "reno"]
        out = net.run([sys.executable, "-c", _NEW_SOCKET_CC], capture_output=True, check=True)
        assert out.stdout.decode().strip() == "reno"
    host_cc = _host_value("net/ipv4/tcp_congestion_control")
    with ringnet.Network(workers=1, control_socket=False,
                         sysctls=["net.ipv4.tcp_tw_reuse=2",
                                  f"net.ipv4.tcp_congestion_control={host_cc}"]) as net:
        assert _read_inside(net, "net/ipv4/tcp_tw_reuse",
                            "net/ipv4/tcp_congestion_control") == ["2", host_cc]


@needs_userns
def test_attached_namespace_keeps_its_own_settings(unshared_target):
    """A namespace ringnet attaches to is its runtime's: no defaults of ours, only the
    sysctls asked for."""
    host_cc = _host_value("net/ipv4/tcp_congestion_control")
    with ringnet.Network.attach(unshared_target.pid, workers=1, control_socket=False) as net:
        assert _read_inside(net, "net/ipv4/tcp_tw_reuse",
                            "net/ipv4/tcp_congestion_control") == ["2", host_cc]
    with ringnet.Network.attach(unshared_target.pid, workers=1, control_socket=False,
                                sysctls={"net.ipv4.tcp_ecn": 1}) as net:
        assert _read_inside(net, "net/ipv4/tcp_tw_reuse", "net/ipv4/tcp_ecn") == ["2", "1"]


@needs_userns
@pytest.mark.parametrize("setting, message", [
    ("net.ipv4.no_such_setting=1",
     "sysctl net.ipv4.no_such_setting: the namespace's kernel has no such setting"),
    ("net.core.rmem_max=1000000",
     "sysctl net.core.rmem_max: not writable from the namespace"),
    ("net.ipv4.tcp_tw_reuse=7", "sysctl net.ipv4.tcp_tw_reuse=7: the kernel refused the value"),
])
def test_a_setting_the_namespace_cannot_take_fails_the_start(setting, message, no_leaks):
    net = ringnet.Network(workers=1, control_socket=False, sysctls=[setting])
    with pytest.raises(ringnet.NamespaceError) as e:
        net.start()
    assert message in str(e.value)
    net.close()


@needs_userns
def test_cli_as_unprivileged_user_later_setting_wins():
    argv = as_user_argv(ringnet_cmd(
        "run", "--workers", "1", "--no-control-socket",
        "--sysctl", "net.ipv4.tcp_tw_reuse=1", "--sysctl", "net.ipv4.ip_local_port_range=2000 3000",
        "--sysctl", "net.ipv4.tcp_tw_reuse=0", "--",
        "cat", "/proc/sys/net/ipv4/tcp_tw_reuse", "/proc/sys/net/ipv4/ip_local_port_range"))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=4 * HANG_S, env=child_env(),
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0", "2000\t3000"]
