"""The pytest plugin (ringnet.pytest_plugin, loaded through the pytest11 entry point):
inner pytest runs (pytester, in a subprocess) of small test files that use the
``ringnet_network`` fixture and the ``ringnet`` marker through real networks, and a test
that leaks a network, which the plugin must report as an error."""

from __future__ import annotations

import os

import psutil
import pytest

from conftest import needs_userns

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    """Run ``source`` as a test file in a fresh pytest process (only the plugins the
    entry points load, the ringnet one among them) and return the result."""
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


USES_THE_FIXTURE = '''
import time

import pytest
import ringnet

seen = []


@pytest.mark.ringnet(mtu=1500, workers=1)
def test_marker_configures_the_network(ringnet_network):
    net = ringnet_network
    assert net.state is ringnet.State.RUNNING
    assert (net.config.mtu, net.config.workers) == (1500, 1)
    link = net.run(["ip", "-o", "link", "show", net.ifname], capture_output=True, check=True)
    assert b" mtu 1500 " in link.stdout
    net.run(["ping", "-c", "1", "-W", "60", "10.0.2.2"], check=True, capture_output=True)
    # a worker counts a reply after sending it: wait for the count (60 s: a hang detector)
    hang = time.monotonic() + 60
    while net.stats().total("icmp_echo_replies") < 1 and time.monotonic() < hang:
        time.sleep(0.005)
    assert net.stats().total("icmp_echo_replies") == 1
    seen.append(net)


def test_default_network(ringnet_network):
    assert ringnet_network.config.mtu == ringnet.MTU_MAX
    seen.append(ringnet_network)


@pytest.mark.ringnet(workers=1)
class TestClassMarker:
    @pytest.mark.ringnet(mtu=9000)
    def test_closest_marker_wins_per_field(self, ringnet_network):
        assert (ringnet_network.config.mtu, ringnet_network.config.workers) == (9000, 1)


def test_networks_are_closed_after_their_test():
    assert len(seen) == 2
    assert [n.state for n in seen] == [ringnet.State.CLOSED] * 2


@pytest.mark.ringnet(no_such_field=1)
def test_unknown_field(ringnet_network):
    pass


@pytest.mark.ringnet(mtu=1)
def test_invalid_value(ringnet_network):
    pass


@pytest.mark.skipif(not ringnet.available()[0], reason=ringnet.available()[1])
def test_available_for_skipif():
    pass
'''


@needs_userns
def test_fixture_and_marker(pytester):
    r = run(pytester, USES_THE_FIXTURE)
    r.assert_outcomes(passed=5, errors=2)
    out = r.stdout.str()
    assert "ERROR test_inner.py::test_unknown_field" in out
    assert "no NetworkConfig field no_such_field" in out
    assert "ERROR test_inner.py::test_invalid_value" in out
    assert "ConfigError" in out


LEAKS_A_NETWORK = '''
import os
import ringnet

leaked = []


def test_leaks_a_network(ringnet_network):
    net = ringnet.Network(workers=1)
    net.start()
    leaked.append(net)
    with open(os.environ["PIDS_FILE"], "w") as f:
        f.write(" ".join(map(str, net.pids())))


def test_then_closes_it():
    leaked[0].close()


def test_no_leak(ringnet_network):
    ringnet_network.run(["true"], check=True)
'''


@needs_userns
def test_a_leak_is_an_error(pytester, tmp_path, monkeypatch):
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("PIDS_FILE", str(pids_file))
    r = run(pytester, LEAKS_A_NETWORK)
    r.assert_outcomes(passed=3, errors=1)
    out = r.stdout.str()
    assert "ERROR at teardown of test_leaks_a_network" in out
    assert "test_inner.py::test_leaks_a_network leaked ringnet resources" in out
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2   # the namespace child and the worker
    for pid in pids:
        assert f"(pid {pid})" in out
    assert "ringnet processes left running" in out
    assert "ringnet shared memory still mapped" in out
    assert "fds left open" in out
    # the plugin killed the leaked processes: none outlived the inner run
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unavailable_skips_with_the_reason(pytester, monkeypatch):
    """Where no network can be created, the fixture skips with available()'s reason.
    The inner run is made to see no /dev/net/tun through available()'s dev root."""
    pytester.makeconftest('''
import functools
import ringnet
import ringnet._preflight as pre

ringnet.available = functools.partial(pre.available, dev="/nonexistent")
''')
    r = run(pytester, "def test_x(ringnet_network):\n    raise AssertionError('ran')\n")
    r.assert_outcomes(skipped=1)
    assert "/nonexistent/net/tun does not exist" in r.stdout.str()
    assert "modprobe tun" in r.stdout.str()
