"""Shared fixtures: skips where the kernel forbids user namespaces, leak checks,
running ringnet as an unprivileged user; the check that scripts/test.sh's sanitized
run really runs the ASan+UBSan build."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time

import psutil
import pytest

import ringnet

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ringnet.__file__)))
TEST_USER = os.environ.get("RINGNET_TEST_USER", "ringnet-test")


def _check_sanitized_run() -> None:
    """In scripts/test.sh's sanitized run (RINGNET_SANITIZED names the tree it built),
    refuse to run unless the C core really is that ASan+UBSan build with ASan loaded:
    otherwise the run would pass without checking anything."""
    tree = os.environ.get("RINGNET_SANITIZED")
    if not tree:
        return
    import ringnet._ringnet_c as core  # type: ignore[import-not-found]

    where = os.path.realpath(core.__file__)
    if not where.startswith(os.path.realpath(tree) + os.sep):
        pytest.exit(f"sanitized run imports {where}, not the build in {tree}", returncode=3)
    with open(where, "rb") as f:
        if b"__asan_report_" not in f.read():
            pytest.exit(f"{where} is not built with AddressSanitizer", returncode=3)
    with open("/proc/self/maps") as f:
        if "libasan" not in f.read():
            pytest.exit("the ASan runtime is not loaded (LD_PRELOAD)", returncode=3)


def pytest_sessionstart(session: pytest.Session) -> None:
    _check_sanitized_run()


def _userns_reason() -> str:
    """Empty if this process can create user namespaces, else why not."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    try:
        r = subprocess.run(["unshare", "-Urn", "true"], capture_output=True, timeout=60)
    except FileNotFoundError:
        return "unshare (util-linux) is not installed"
    if r.returncode != 0:
        return f"the kernel forbids user namespaces here: {r.stderr.decode().strip()}"
    return ""


_REASON = _userns_reason()
needs_userns = pytest.mark.skipif(bool(_REASON), reason=_REASON or "ok")


# How long wait_until() waits for something that must happen: only a hang detector, so
# generous enough that a busy machine never reaches it.
HANG_S = 60.0


def wait_until(cond, what: str, timeout: float = HANG_S, interval: float = 0.005) -> None:
    """Poll ``cond()`` until it is true. The tests synchronise on conditions, never on
    sleeps; ``timeout`` only turns a hang into a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def worker_counter(net, name: str) -> int:
    """A worker counter of ``net``, summed over its workers."""
    return sum(w[name] for w in net.counters()["workers"])


def counter_reaches(net, name: str, want: int) -> int:
    """Wait until the workers' ``name`` counts ``want``, then return the count. A worker
    counts after it acts, so what it did (a reply, an ICMP error) can be seen first."""
    wait_until(lambda: worker_counter(net, name) >= want, f"{name} to reach {want}")
    return worker_counter(net, name)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ringnet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ringnet", *args]


def ringnet_processes(uid: int | None = None) -> set[int]:
    """PIDs of live ringnet children (namespace children and workers): those of ``uid``
    anywhere on the machine, or, by default, those descending from this process (other
    ringnet users on the machine must not disturb the tests)."""
    if uid is None:
        procs = psutil.Process().children(recursive=True)
    else:
        procs = [p for p in psutil.process_iter() if _uid_of(p) == uid]
    out = set()
    for p in procs:
        try:
            if p.name().startswith("ringnet-") and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def _uid_of(p: psutil.Process) -> int:
    try:
        return p.uids().real
    except psutil.NoSuchProcess:
        return -1


def own_memfd_mappings() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "memfd:ringnet" in line]


@pytest.fixture
def no_leaks():
    """Assert that the test leaves no ringnet processes, fds or shared mappings behind."""
    procs = ringnet_processes()
    fds = set(os.listdir("/proc/self/fd"))
    yield
    assert ringnet_processes() - procs == set(), "ringnet processes left running"
    assert own_memfd_mappings() == [], "ringnet shared memory still mapped"
    # A thread of the test (a server's, say) may still be closing its last socket: an fd
    # is leaked if it stays open, so wait for the count (the deadline only ends a leak).
    def new_fds() -> list[str]:
        return [os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds
                if os.path.exists(f"/proc/self/fd/{fd}")]
    try:
        wait_until(lambda: not new_fds(), "the test's fds to close", timeout=10)
    except AssertionError:
        raise AssertionError(f"fds leaked: {new_fds()}") from None


def unpriv_user():
    """(uid, gid) of the unprivileged test user, or skip with the reason."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.skip(f"no user {TEST_USER!r}: scripts/setup-test-env.sh creates it")
    return pw.pw_uid, pw.pw_gid


def as_user_argv(argv: list[str]) -> list[str]:
    """argv that runs ``argv`` as the unprivileged test user (unchanged when not root)."""
    if os.geteuid() != 0:
        return argv
    uid, gid = unpriv_user()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


@pytest.fixture
def unshared_target():
    """A process (``sleep``) in a rootless namespace made by ``unshare -Urn``, as a container
    runtime would make one; waits until it has left our network namespace."""
    target = subprocess.Popen(["unshare", "-Urn", "sleep", "300"])
    try:
        ours = os.stat("/proc/self/ns/net").st_ino
        wait_until(lambda: os.stat(f"/proc/{target.pid}/ns/net").st_ino != ours,
                   "unshare -Urn to create a namespace")
        yield target
    finally:
        target.kill()
        target.wait()
