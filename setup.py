# setup.py - hooks the cffi builders (ringnet/_build.py) into setuptools; all metadata lives
# in pyproject.toml. The test extension is built only for a test build (RINGNET_TEST_BUILD=1).
# build_ext always recompiles: the flags depend on the environment (RINGNET_TEST_BUILD,
# RINGNET_SANITIZE), which setuptools' up-to-date check of a reused build/ tree cannot see.
import os

from setuptools import setup

modules = ["ringnet/_build.py:ffibuilder"]
if os.environ.get("RINGNET_TEST_BUILD", "") not in ("", "0"):
    modules.append("ringnet/_build.py:testbuilder")

setup(cffi_modules=modules, options={"build_ext": {"force": True}})
