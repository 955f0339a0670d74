"""``ringnet attach`` on the command line: a namespace named by path (--netns, --userns),
and a target process running as a mapped non-root uid of a user namespace we own.

Both run as the unprivileged test user (rootless, as container engines run it): the
target is made by ``unshare`` as that user, traffic is a ping of the gateway from
inside (nsenter into the target's namespaces), and attach ends by itself when its
target goes away.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import psutil
import pytest

from conftest import HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user, wait_until

pytestmark = needs_userns

INNER_UID = 1000   # the target's uid inside its user namespace (not root)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ringnet_cmd(*args), capture_output=True, text=True, timeout=2 * HANG_S,
                           env=child_env())


def start_target(argv: list[str]) -> subprocess.Popen:
    """``argv`` (an unshare command ending in sleep) as the test user; waits until it has
    its own network namespace."""
    target = subprocess.Popen(as_user_argv(argv), cwd="/")
    ours = os.stat("/proc/self/ns/net").st_ino

    def moved() -> bool:
        if target.poll() is not None:
            raise AssertionError(f"{argv} exited with status {target.returncode}")
        try:
            return os.stat(f"/proc/{target.pid}/ns/net").st_ino != ours \
                and psutil.Process(target.pid).name() == "sleep"
        except (OSError, psutil.NoSuchProcess):
            return False

    wait_until(moved, f"{argv[0]} to make a namespace")
    return target


def attach_and_ping(target: subprocess.Popen, *attach_args: str) -> None:
    """Run ``ringnet attach ATTACH_ARGS`` as the test user, wait for its ready fd, ping the
    gateway from inside the target's namespaces, then end the target: attach must exit 0
    by itself and leave no ringnet process behind."""
    r, w = os.pipe()
    attach = None
    try:
        attach = subprocess.Popen(as_user_argv(ringnet_cmd("attach", "--workers", "1", "--ready-fd",
                                                           str(w), *attach_args)),
                                  pass_fds=[w], env=child_env(), cwd="/", stderr=subprocess.PIPE,
                                  text=True)
        os.close(w)
        w = -1
        ready = os.read(r, 1)
        assert ready == b"1", attach.wait(HANG_S) and attach.stderr.read()
        ours = psutil.Process(attach.pid).children(recursive=True)
        assert sorted(p.name() for p in ours) == ["ringnet-ns", "ringnet-worker"]
        ping = subprocess.run(as_user_argv(["nsenter", f"--target={target.pid}", "--user", "--net",
                                            "--preserve-credentials", "ping", "-c", "2", "-i", "0.2", "-W", "60", "10.0.2.2"]),
                              capture_output=True, text=True, timeout=2 * HANG_S)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "2 received" in ping.stdout
        target.kill()   # attach ends when its target's namespace goes away
        target.wait()
        assert attach.wait(timeout=HANG_S) == 0, attach.stderr.read()
        attach.stderr.close()
        gone, alive = psutil.wait_procs(ours, timeout=HANG_S)
        assert not alive, f"outlived attach: {alive}"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        if attach is not None and attach.poll() is None:
            attach.kill()
            attach.wait()


def test_attach_netns_and_userns_paths_rootless():
    target = start_target(["unshare", "-Urn", "sleep", "300"])
    try:
        attach_and_ping(target, "--netns", f"/proc/{target.pid}/ns/net",
                        "--userns", f"/proc/{target.pid}/ns/user")
    finally:
        target.kill()
        target.wait()


def test_attach_netns_path_through_its_owning_userns_rootless():
    target = start_target(["unshare", "-Urn", "sleep", "300"])
    try:
        attach_and_ping(target, "--netns", f"/proc/{target.pid}/ns/net")
    finally:
        target.kill()
        target.wait()


def _subids(uid: int) -> tuple[int, int]:
    """The first subordinate uid and gid ranges' starts of ``uid``, or skip."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        pytest.skip("newuidmap/newgidmap (package uidmap) are not installed")
    name = pwd.getpwuid(uid).pw_name
    starts = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                rows = [ln.strip().split(":") for ln in f]
        except OSError:
            rows = []
        row = next((r for r in rows if len(r) == 3 and r[0] in (name, str(uid))
                    and int(r[2]) > INNER_UID), None)
        if row is None:
            pytest.skip(f"{name} has no range of more than {INNER_UID} ids in {path}")
        starts.append(int(row[1]))
    return starts[0], starts[1]


def test_attach_to_a_process_of_a_mapped_non_root_uid_rootless():
    """The target runs as uid 1000 of a user namespace the test user created with its
    subordinate ids (as rootless podman runs a container's non-root user): on the host
    it is uid SUBUID+999, not the user's, yet the user owns its namespaces."""
    uid, _ = unpriv_user()
    subuid, subgid = _subids(uid)
    target = start_target(["unshare", "--net", "--map-root-user",
                           f"--map-users={subuid},1,65536", f"--map-groups={subgid},1,65536", "--",
                           "setpriv", f"--reuid={INNER_UID}", f"--regid={INNER_UID}", "--clear-groups",
                           "--", "sleep", "300"])
    try:
        outside = subuid + INNER_UID - 1
        assert psutil.Process(target.pid).uids().real == outside != uid
        attach_and_ping(target, str(target.pid))
    finally:
        target.kill()
        target.wait()


def test_attach_refuses_a_process_of_another_user_even_when_mapped():
    """The check that let the test above through is about whose namespace it is: the
    unprivileged user still may not attach to a process of root's (PID 1)."""
    uid, _ = unpriv_user()
    if uid == 0:
        pytest.skip("needs an unprivileged user")
    r = subprocess.run(as_user_argv(ringnet_cmd("attach", "1")), capture_output=True, text=True,
                       timeout=HANG_S, env=child_env(), cwd="/")
    assert r.returncode == 1
    assert "not to us" in r.stderr and "user namespace you created" in r.stderr, r.stderr


@pytest.mark.parametrize("args, match", [
    ([], "attach takes either PID or --netns PATH"),
    (["--netns", "/proc/self/ns/net", "1"], "attach takes either PID or --netns PATH"),
    (["--userns", "/proc/self/ns/user", "1"], "--userns PATH goes with --netns PATH"),
    (["--netns", "/etc/hostname"], "/etc/hostname is not a network namespace"),
    (["--netns", "/nonexistent/netns"], "cannot open the network namespace /nonexistent/netns"),
    (["--netns", "/proc/self/ns/net"], "is our own network namespace"),
])
def test_bad_attach_arguments_one_line_error(args, match):
    r = run_cli("attach", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("ringnet: error: ") and match in lines[0], lines[0]


def test_in_userns_of_ours(unshared_target):
    """The rule behind the mapped-uid attach: a process in a user namespace made by our
    uid below ours (two levels down too) qualifies; one in our own does not."""
    from ringnet._nsutil import in_userns_of_ours
    assert in_userns_of_ours(unshared_target.pid)
    assert not in_userns_of_ours(os.getpid())
    nested = subprocess.Popen(["unshare", "-Ur", "unshare", "-Urn", "sleep", "300"])
    try:
        wait_until(lambda: psutil.Process(nested.pid).name() == "sleep"
                   and os.stat(f"/proc/{nested.pid}/ns/net").st_ino
                   != os.stat("/proc/self/ns/net").st_ino, "the nested namespace")
        assert in_userns_of_ours(nested.pid)
    finally:
        nested.kill()
        nested.wait()
