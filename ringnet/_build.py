"""cffi builders for ringnet's C core (API, out-of-line mode).

Two extensions come from ``csrc/``:

``ringnet._ringnet_c`` (``ffibuilder``), the one ringnet ships: every ``csrc/*.c`` file
except the test-only ones, with the declarations Python may use taken from the
matching ``csrc/*.cdef`` files, one per C module, concatenated in name order. It is
hardened with ``-D_FORTIFY_SOURCE=2 -fstack-protector-strong``.

``ringnet._ringnet_test`` (``testbuilder``), for tests and ``perf/`` only: the ring test
loops (``csrc/ringtest.c``) with the ring they drive, and the rules of wake-up moderation
and of busy polling (``csrc/moderate.c``, ``csrc/busypoll.c``, internal to the C core,
exposed here so that tests can drive them with made-up clocks). It is never part of a plain
``pip install .``; it is built when ``RINGNET_TEST_BUILD=1`` is set, which also turns
on ``-Werror`` for both extensions (scripts/setup-test-env.sh installs the test venv
this way).

Environment:

``RINGNET_TEST_BUILD=1``
    build the test extension too, and fail on any compiler warning;
``RINGNET_SANITIZE=1``
    ASan and UBSan (``-O1``, no recovery from undefined behaviour) instead of the
    hardening flags; a process loading such a build needs libasan first
    (``LD_PRELOAD``, see scripts/test-sanitized.sh).

Used by setup.py at install time, and directly for an in-place development build of
both extensions: ``python ringnet/_build.py``.
"""

from __future__ import annotations

import glob
import os
import sys

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_CSRC = os.path.normpath(os.path.join(_HERE, "..", "csrc"))

# C modules (csrc/<name>.c, .cdef) that only the test extension carries.
TEST_ONLY = ("ringtest",)
# C modules of the shipped core whose declarations (.cdef) only the test extension
# exposes: Python never calls them, tests do.
TEST_API = ("moderate", "busypoll")
# What the test extension is made of: the ring test loops, the ring they drive, the
# shared-memory constants (shm.h, header only) the ring tests size frames with, and
# the rules of wake-up moderation and of busy polling.
_TEST_MODULES = ("ring", "shm", "ringtest", "moderate", "busypoll")


def _module(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _read_cdefs(modules: tuple[str, ...] | None = None) -> str:
    """The cdefs of ``modules`` (by name), or of every module the shipped core has."""
    parts = []
    for path in sorted(glob.glob(os.path.join(_CSRC, "*.cdef"))):
        name = _module(path)
        if (name in modules) if modules is not None else (name not in TEST_ONLY + TEST_API):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)


def _sources(modules: tuple[str, ...] | None = None) -> list[str]:
    """The C files of ``modules``, or of the shipped core, relative to the checkout.

    Relative paths keep absolute build paths out of the wheel's debug info.
    """
    root = os.path.dirname(_CSRC)
    out = []
    for path in glob.glob(os.path.join(_CSRC, "*.c")):
        name = _module(path)
        if (name in modules) if modules is not None else (name not in TEST_ONLY):
            out.append(os.path.relpath(path, root))
    return sorted(out)


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _flags(werror: bool) -> tuple[list[str], list[str]]:
    """(compile flags, link flags) for the current environment."""
    cflags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-fno-strict-aliasing", "-D_GNU_SOURCE"]
    ldflags = ["-pthread"]
    if _flag("RINGNET_SANITIZE"):
        # FORTIFY's checked libc calls would hide accesses from ASan's interceptors.
        cflags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                   "-fno-omit-frame-pointer", "-O1", "-U_FORTIFY_SOURCE"]
        ldflags += ["-fsanitize=address,undefined"]
    else:
        cflags += ["-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"]
    if werror:
        cflags.append("-Werror")
    return cflags, ldflags


TEST_BUILD = _flag("RINGNET_TEST_BUILD")

_CFLAGS, _LDFLAGS = _flags(werror=TEST_BUILD)
ffibuilder = FFI()
ffibuilder.cdef(_read_cdefs())
ffibuilder.set_source(
    "ringnet._ringnet_c",
    '#include "api.h"\n',
    sources=_sources(),
    include_dirs=["csrc"],
    extra_compile_args=_CFLAGS,
    extra_link_args=_LDFLAGS,
)

_TCFLAGS, _TLDFLAGS = _flags(werror=True)
testbuilder = FFI()
testbuilder.cdef(_read_cdefs(_TEST_MODULES))
testbuilder.set_source(
    "ringnet._ringnet_test",
    '#include "shm.h"\n#include "ringtest.h"\n#include "moderate.h"\n#include "busypoll.h"\n',
    sources=_sources(_TEST_MODULES),
    include_dirs=["csrc"],
    extra_compile_args=_TCFLAGS,
    extra_link_args=_TLDFLAGS,
)


def main() -> int:
    """Build both extensions in place, next to this file."""
    root = os.path.dirname(_CSRC)
    os.chdir(root)
    for builder in (ffibuilder, testbuilder):
        builder.compile(tmpdir=root, verbose=bool(os.environ.get("V")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
