"""Packaging and first run: one version, a licence, the pytest plugin's entry point, the
wheel's tag; scripts/demo.sh saying what is missing.

Checked against the installed distribution (scripts/test.sh installs a wheel built from
this checkout), so what is tested is what pip produced."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

import ringnet
from conftest import as_user_argv

DIST = importlib.metadata.distribution("ringnet")


def test_one_version():
    assert ringnet.__version__ == importlib.metadata.version("ringnet")
    tomllib = pytest.importorskip("tomllib")
    with open(pathlib.Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ringnet.__version__"}


def test_licence_is_declared_and_shipped():
    assert DIST.metadata["License-Expression"] == "MIT"
    shipped = [f for f in DIST.files if f.name == "LICENSE"]
    assert shipped, "LICENSE is not in the installed distribution"
    assert "MIT License" in shipped[0].read_text()


def test_pytest_plugin_entry_point():
    [ep] = [ep for ep in DIST.entry_points if ep.group == "pytest11"]
    assert ep.name == "ringnet"
    plugin = ep.load()
    assert plugin.__name__ == "ringnet.pytest_plugin" and callable(plugin.ringnet_network)


def test_wheel_tag_matches_the_extension_abi():
    """An extension built for the stable ABI (abi3) is tagged so, and only then."""
    import ringnet._ringnet_c as core  # type: ignore[import-not-found]

    abi3 = os.path.basename(core.__file__).endswith(".abi3.so")
    tags = [line.split(": ", 1)[1] for line in DIST.read_text("WHEEL").splitlines()
            if line.startswith("Tag: ")]
    assert tags
    for tag in tags:
        assert (tag.split("-")[1] == "abi3") == abi3, (tag, core.__file__)



DEMO = pathlib.Path(__file__).parents[1] / "scripts" / "demo.sh"


def test_demo_lists_what_is_missing():
    """scripts/demo.sh, run by a user who cannot install packages on a machine without a C
    compiler, ping and ip (a PATH without them), names each with its package and stops
    before building anything."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)   # reachable by the unprivileged user
        bin_dir, venv = pathlib.Path(tmp, "bin"), pathlib.Path(tmp, "venv")
        bin_dir.mkdir()
        for tool in ("bash", "env", "dirname", "id", "awk", "sort", "tr"):
            (bin_dir / tool).symlink_to(shutil.which(tool))
        (bin_dir / "python3").symlink_to(os.path.realpath("/usr/bin/python3"))
        r = subprocess.run(as_user_argv(["/usr/bin/env", "-i", f"PATH={bin_dir}", f"HOME={tmp}",
                                         f"RINGNET_DEMO_VENV={venv}", str(bin_dir / "bash"),
                                         str(DEMO)]),
                           capture_output=True, text=True, cwd=tmp)
        assert r.returncode == 1, r.stderr
        assert "demo: the demo needs what this machine lacks:" in r.stderr
        assert "a C compiler (cc) (Debian/Ubuntu package gcc)" in r.stderr
        assert "ping (Debian/Ubuntu package iputils-ping)" in r.stderr
        assert "ip (Debian/Ubuntu package iproute2)" in r.stderr
        assert r.stderr.splitlines()[-1].startswith("demo: install them as root, for example: "
                                                    "sudo apt-get install ")
        assert not venv.exists()
