"""Packaging: one version, a licence, the pytest plugin's entry point, the wheel's tag.

Checked against the installed distribution (scripts/test.sh installs a wheel built from
this checkout), so what is tested is what pip produced."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib

import pytest

import ringnet

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
