"""ringnet.available() and the preflight: each obstacle is named with its exact fix,
read from a made-up /proc and /dev (the checks read configuration only)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ringnet
from ringnet import _preflight
from ringnet.errors import NamespaceError

from conftest import as_user_argv, child_env

USER = 4242   # an unprivileged uid in the made-up configuration, owning no file here


def fake_root(tmp_path, sysctls: dict[str, str] | None = None, tun_mode: int | None = 0o666,
              label: str | None = "unconfined"):
    """(proc, dev) roots with the given sysctls ("kernel/x": value), a /dev/net/tun of
    ``tun_mode`` owned by root (none if None) and our AppArmor label (none if None)."""
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    for name, value in (sysctls or {}).items():
        path = proc / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    if label is not None:
        (proc / "self" / "attr" / "apparmor").mkdir(parents=True)
        (proc / "self" / "attr" / "apparmor" / "current").write_text(label + "\n")
    (dev / "net").mkdir(parents=True)
    if tun_mode is not None:
        tun = dev / "net" / "tun"
        tun.write_text("")
        tun.chmod(tun_mode)
    return str(proc), str(dev)


def test_a_usable_configuration_has_no_problems(tmp_path):
    proc, dev = fake_root(tmp_path, {"user/max_user_namespaces": "15000",
                                     "kernel/unprivileged_userns_clone": "1",
                                     "kernel/apparmor_restrict_unprivileged_userns": "0"})
    assert _preflight.problems(proc=proc, dev=dev, euid=USER) == []


def test_ubuntu_apparmor_restriction_names_the_sysctl_and_both_fixes(tmp_path):
    proc, dev = fake_root(tmp_path, {"kernel/apparmor_restrict_unprivileged_userns": "1"})
    [p] = _preflight.problems(proc=proc, dev=dev, euid=USER)
    assert "kernel.apparmor_restrict_unprivileged_userns = 1" in p.what
    assert "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in p.fix
    assert "/etc/sysctl.d/" in p.fix
    # the narrower alternative: a profile granting userns to this interpreter's real path
    assert "  userns,\n" in p.fix
    assert f"profile ringnet {os.path.realpath(sys.executable)} flags=(unconfined)" in p.fix
    assert "apparmor_parser -r /etc/apparmor.d/ringnet" in p.fix


def test_apparmor_restriction_does_not_apply_under_a_profile(tmp_path):
    """A process confined by a profile (one granting userns, as the suggested one) is
    not restricted; neither is root."""
    proc, dev = fake_root(tmp_path, {"kernel/apparmor_restrict_unprivileged_userns": "1"},
                          label="ringnet (unconfined)")
    assert _preflight.problems(proc=proc, dev=dev, euid=USER) == []
    proc, dev = fake_root(tmp_path / "root", {"kernel/apparmor_restrict_unprivileged_userns": "1"})
    assert _preflight.problems(proc=proc, dev=dev, euid=0) == []


def test_without_apparmor_label_files_the_restriction_still_counts(tmp_path):
    proc, dev = fake_root(tmp_path, {"kernel/apparmor_restrict_unprivileged_userns": "1"}, label=None)
    [p] = _preflight.problems(proc=proc, dev=dev, euid=USER)
    assert "apparmor_restrict_unprivileged_userns" in p.what


def test_old_debian_userns_clone(tmp_path):
    proc, dev = fake_root(tmp_path, {"kernel/unprivileged_userns_clone": "0"})
    [p] = _preflight.problems(proc=proc, dev=dev, euid=USER)
    assert "kernel.unprivileged_userns_clone = 0" in p.what
    assert "sudo sysctl -w kernel.unprivileged_userns_clone=1" in p.fix
    assert _preflight.problems(proc=proc, dev=dev, euid=0) == []


def test_max_user_namespaces_zero_stops_root_too(tmp_path):
    proc, dev = fake_root(tmp_path, {"user/max_user_namespaces": "0"})
    for euid in (USER, 0):
        [p] = _preflight.problems(proc=proc, dev=dev, euid=euid)
        assert "user.max_user_namespaces = 0" in p.what
        assert "sudo sysctl -w user.max_user_namespaces=15000" in p.fix


def test_attach_skips_the_user_namespace_checks(tmp_path):
    proc, dev = fake_root(tmp_path, {"user/max_user_namespaces": "0",
                                     "kernel/apparmor_restrict_unprivileged_userns": "1"})
    assert _preflight.problems(proc=proc, dev=dev, euid=USER, new_userns=False) == []


def test_missing_tun(tmp_path):
    proc, dev = fake_root(tmp_path, tun_mode=None)
    [p] = _preflight.problems(proc=proc, dev=dev, euid=USER)
    assert p.what == f"{dev}/net/tun does not exist"
    assert "modprobe tun" in p.fix and "mknod -m 0666 /dev/net/tun c 10 200" in p.fix


@pytest.mark.parametrize("mode, in_group, ok", [(0o666, False, True), (0o660, False, False),
                                                (0o660, True, True), (0o600, True, False)])
def test_tun_access_follows_its_mode(tmp_path, mode, in_group, ok):
    """USER reaches the device through its group (when in_group) or as any other user."""
    proc, dev = fake_root(tmp_path, tun_mode=mode)
    groups = {os.stat(f"{dev}/net/tun").st_gid} if in_group else set()
    found = _preflight.problems(proc=proc, dev=dev, euid=USER, groups=groups)
    if ok:
        assert found == []
    else:
        [p] = found
        assert "is not readable and writable by uid 4242" in p.what
        assert p.fix.startswith(f"sudo chmod 0666 {dev}/net/tun")


def test_every_problem_is_reported_at_once(tmp_path):
    proc, dev = fake_root(tmp_path, {"kernel/unprivileged_userns_clone": "0",
                                     "kernel/apparmor_restrict_unprivileged_userns": "1"},
                          tun_mode=0o600)
    found = _preflight.problems(proc=proc, dev=dev, euid=USER)
    assert [p.what.split(" ")[0] for p in found] == [f"{dev}/net/tun", "unprivileged", "AppArmor"]


def test_available_and_require_give_the_whole_message(tmp_path):
    proc, dev = fake_root(tmp_path, {"user/max_user_namespaces": "0"}, tun_mode=None)
    found = _preflight.problems(proc=proc, dev=dev)
    assert len(found) == 2
    ok, why = ringnet.available(proc=proc, dev=dev)
    assert ok is False
    assert why == "ringnet cannot create a network here: " + "; ".join(map(str, found))
    with pytest.raises(NamespaceError) as e:
        _preflight.require(proc=proc, dev=dev)
    assert str(e.value) == why
    with pytest.raises(NamespaceError) as e:
        _preflight.require(proc=proc, dev=dev, new_userns=False)
    assert "tun does not exist" in str(e.value) and "max_user_namespaces" not in str(e.value)
    proc, dev = fake_root(tmp_path / "good")
    assert ringnet.available(proc=proc, dev=dev) == (True, "")
    _preflight.require(proc=proc, dev=dev)


_PROBE = "import ringnet; ok, why = ringnet.available(); print(int(ok)); print(why)"


def test_available_agrees_with_the_kernel():
    """On the real machine, for an unprivileged user: available() is true exactly when
    that user can create a user namespace (unshare -Urn) and open /dev/net/tun."""
    r = subprocess.run(as_user_argv([sys.executable, "-c", _PROBE]), capture_output=True,
                       text=True, env=child_env())
    assert r.returncode == 0, r.stderr
    ok, why = r.stdout.split("\n", 1)
    probe = subprocess.run(as_user_argv(["unshare", "-Urn", "sh", "-c", "exec 3<>/dev/net/tun"]),
                           capture_output=True, text=True)
    assert (ok == "1") == (probe.returncode == 0), (why, probe.stderr)
    assert (ok == "1") == (why.strip() == "")
