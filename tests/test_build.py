"""What the build ships: no test-only C in the extension, hardening flags on.

The shipped extension (ringnet._ringnet_c) is checked as installed; the flags of a
plain, non-test build are read from the builder in the checkout (ringnet/_build.py),
since the test venv holds a test build (RINGNET_TEST_BUILD=1: -Werror, plus the test
extension).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import ringnet._ringnet_c as core  # type: ignore[import-not-found]
import ringnet._ringnet_test as ringtest  # type: ignore[import-not-found]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _so_bytes(mod) -> bytes:
    with open(mod.__file__, "rb") as f:
        return f.read()


def test_shipped_extension_has_no_ring_test_loops():
    assert not hasattr(core.lib, "rn_ringtest_produce")
    assert b"rn_ringtest" not in _so_bytes(core)       # no symbol, no debug info
    # ... while the test extension has them (the check above can see them)
    assert hasattr(ringtest.lib, "rn_ringtest_produce")
    assert b"rn_ringtest_produce" in _so_bytes(ringtest)


def test_shipped_extension_is_hardened():
    data = _so_bytes(core)
    assert b"__stack_chk_fail" in data                # -fstack-protector-strong
    assert re.search(rb"__\w+_chk\x00", data.replace(b"__stack_chk_fail", b""))  # FORTIFY


def _plain_build_config(extra_env: dict[str, str]) -> dict:
    """The builder's settings for both extensions, as setup.py would see them."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RINGNET_TEST_BUILD", "RINGNET_SANITIZE")}
    env.update(extra_env)
    code = (
        "import json, runpy\n"
        "g = runpy.run_path('ringnet/_build.py')\n"
        "out = {}\n"
        "for name in ('ffibuilder', 'testbuilder'):\n"
        "    mod, _, _, kw = g[name]._assigned_source\n"
        "    out[name] = {'module': mod, 'sources': kw['sources'],\n"
        "                 'cflags': kw['extra_compile_args']}\n"
        "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout)


def test_plain_build_flags_and_sources():
    cfg = _plain_build_config({})
    shipped, test = cfg["ffibuilder"], cfg["testbuilder"]
    assert shipped["module"] == "ringnet._ringnet_c"
    assert "csrc/ringtest.c" not in shipped["sources"] and "csrc/tcp.c" in shipped["sources"]
    assert "-D_FORTIFY_SOURCE=2" in shipped["cflags"]
    assert "-fstack-protector-strong" in shipped["cflags"]
    assert "-Werror" not in shipped["cflags"]            # a user's newer compiler may warn
    assert {"-Wall", "-Wextra"} <= set(shipped["cflags"])
    assert test["module"] == "ringnet._ringnet_test"
    assert "csrc/ringtest.c" in test["sources"] and "-Werror" in test["cflags"]


def test_test_build_makes_warnings_errors():
    cfg = _plain_build_config({"RINGNET_TEST_BUILD": "1"})
    assert "-Werror" in cfg["ffibuilder"]["cflags"]


def _setup_kwargs(**env_over: str) -> dict:
    """What setup.py passes to setuptools.setup() in this environment."""
    code = ("import json, setuptools, runpy\n"
            "setuptools.setup = lambda **kw: print(json.dumps(kw))\n"
            "runpy.run_path('setup.py')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RINGNET_TEST_BUILD", "RINGNET_SANITIZE")}
    env.update(env_over)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout)


def test_setup_builds_test_extension_only_for_a_test_build():
    plain, test = _setup_kwargs(), _setup_kwargs(RINGNET_TEST_BUILD="1")
    assert plain["cffi_modules"] == ["ringnet/_build.py:ffibuilder"]
    assert "ringnet/_build.py:testbuilder" in test["cffi_modules"]
    # a plain build must not package a test extension a test build left in build/
    bases = {plain["options"]["build"]["build_base"], test["options"]["build"]["build_base"],
             _setup_kwargs(RINGNET_SANITIZE="1")["options"]["build"]["build_base"]}
    assert len(bases) == 3
