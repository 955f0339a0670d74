# setup.py - hooks the cffi builders (ringnet/_build.py) into setuptools; all metadata lives
# in pyproject.toml. The test extension is built only for a test build (RINGNET_TEST_BUILD=1).
#
# Each kind of build has a build/ tree of its own, so that a plain build never packages a
# test extension a test build left there; and build_ext always recompiles, since the flags
# depend on the environment (RINGNET_TEST_BUILD, RINGNET_SANITIZE), which setuptools'
# up-to-date check cannot see.
import os

from setuptools import setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


modules = ["ringnet/_build.py:ffibuilder"]
kind = "shipped"
if _flag("RINGNET_TEST_BUILD"):
    modules.append("ringnet/_build.py:testbuilder")
    kind = "test"
if _flag("RINGNET_SANITIZE"):
    kind += "-sanitize"

setup(cffi_modules=modules,
      options={"build": {"build_base": os.path.join("build", kind)},
               "build_ext": {"force": True}})
