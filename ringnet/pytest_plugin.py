"""pytest plugin (entry point ``pytest11``): a ringnet network as a fixture.

    import pytest, ringnet

    @pytest.mark.ringnet(mtu=1500, workers=1)       # NetworkConfig fields
    def test_fetch(ringnet_network):
        ringnet_network.run(["ping", "-c", "1", "10.0.2.2"], check=True)

    @pytest.mark.skipif(not ringnet.available()[0], reason=ringnet.available()[1])
    def test_without_the_fixture(): ...

``ringnet_network`` is a started ``ringnet.Network`` for one test, configured by the
``ringnet`` markers on the test, its class and its module (the closest one wins per
field). It skips the test, with the reason and the fix, where ``ringnet.available()`` says
no network can be created. On teardown it closes the network and then checks that the
test left nothing of ringnet's behind: no ringnet processes descending from the test
process, no ringnet shared memory mapped, no new namespace, socket, memfd or event fds.
A leak is reported as an error of the test's teardown, and leaked ringnet processes are
killed so that they do not outlive the test.

This module imports only pytest at load time: installing ringnet must not slow down or
disturb pytest sessions that never use it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ringnet import Network

__all__ = ["ringnet_network", "Snapshot", "leaks"]

MARKER = "ringnet"

# fd targets (readlink of /proc/self/fd/N) that a ringnet network holds: its namespaces,
# its control sockets, its shared memory, eventfds and pidfds
_FD_KINDS = ("user:[", "net:[", "mnt:[", "socket:[", "/memfd:ringnet", "anon_inode:[eventfd]",
             "anon_inode:[pidfd]", "anon_inode:inotify")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**fields): NetworkConfig fields for the ringnet_network fixture, "
        "e.g. @pytest.mark.ringnet(mtu=1500, workers=1)")


def _ringnet_children() -> dict[int, str]:
    """{pid: name} of live ringnet processes (named ringnet-*) descending from us."""
    import psutil

    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            name = p.name()
            if name.startswith("ringnet-") and p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = name
        except psutil.NoSuchProcess:
            continue
    return out


def _ringnet_fds() -> dict[str, str]:
    """{fd: target} of our open fds of the kinds a ringnet network holds."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue   # the fd of the listing itself, or one closed meanwhile
        if target.startswith(_FD_KINDS):
            out[fd] = target
    return out


def _memfd_mappings() -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split()[0] for line in f if "memfd:ringnet" in line}


@dataclasses.dataclass
class Snapshot:
    """What of ringnet's this process holds at one moment."""

    processes: dict[int, str]
    fds: dict[str, str]
    mappings: set[str]

    @classmethod
    def take(cls) -> "Snapshot":
        return cls(_ringnet_children(), _ringnet_fds(), _memfd_mappings())


def leaks(before: Snapshot, after: Snapshot) -> list[str]:
    """What ``after`` holds that ``before`` did not, one line per kind (empty: no leak)."""
    out = []
    procs = {pid: name for pid, name in after.processes.items() if pid not in before.processes}
    if procs:
        out.append("ringnet processes left running: "
                   + ", ".join(f"{name} (pid {pid})" for pid, name in sorted(procs.items())))
    fds = {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t}
    if fds:
        out.append("fds left open: " + ", ".join(f"{fd} -> {t}" for fd, t in sorted(fds.items())))
    maps = after.mappings - before.mappings
    if maps:
        out.append(f"ringnet shared memory still mapped: {len(maps)} mapping(s) at "
                   + ", ".join(sorted(maps)))
    return out


def _config_fields(item: pytest.Item) -> dict[str, Any]:
    """The NetworkConfig fields the ringnet markers of ``item`` give (closest wins)."""
    from ringnet import NetworkConfig

    names = {f.name for f in dataclasses.fields(NetworkConfig)}
    fields: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers(MARKER))):   # farthest first
        if mark.args:
            pytest.fail(f"{item.nodeid}: @pytest.mark.{MARKER} takes NetworkConfig "
                                    f"fields as keywords, not {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - names)
        if unknown:
            pytest.fail(f"{item.nodeid}: @pytest.mark.{MARKER}: no NetworkConfig "
                                    f"field {', '.join(unknown)} (fields: {', '.join(sorted(names))})")
        fields.update(mark.kwargs)
    return fields


@pytest.fixture
def ringnet_network(request: pytest.FixtureRequest) -> Iterator["Network"]:
    """A started ringnet.Network, configured by @pytest.mark.ringnet(**fields), closed
    after the test; the teardown fails if the test leaked ringnet processes, fds or
    shared memory. Skips where ringnet.available() is false."""
    import ringnet

    fields = _config_fields(request.node)
    ok, why = ringnet.available()
    if not ok:
        pytest.skip(why)
    before = Snapshot.take()
    net = ringnet.Network(**fields)
    net.start()
    try:
        yield net
    finally:
        net.close()
    found = leaks(before, Snapshot.take())
    if found:
        for pid in Snapshot.take().processes.keys() - before.processes.keys():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"{request.node.nodeid} leaked ringnet resources:\n  " + "\n  ".join(found),
                    pytrace=False)
