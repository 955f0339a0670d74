"""cffi builder for ringnet's C core (API, out-of-line mode).

Every ``csrc/*.c`` file is compiled into one extension, ``ringnet._ringnet_c``; the
declarations Python may use are the ``csrc/*.cdef`` files, one per C module,
concatenated in name order. Used by setup.py at install time, and directly for an
in-place development build: ``python ringnet/_build.py`` (``RINGNET_SANITIZE=1``
adds ASan and UBSan).
"""

from __future__ import annotations

import glob
import os
import sys

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_CSRC = os.path.normpath(os.path.join(_HERE, "..", "csrc"))


def _read_cdefs() -> str:
    parts = []
    for path in sorted(glob.glob(os.path.join(_CSRC, "*.cdef"))):
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def _sources() -> list[str]:
    # Relative paths keep absolute build paths out of the wheel's debug info.
    root = os.path.dirname(_CSRC)
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(_CSRC, "*.c")))


_CFLAGS = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-fno-strict-aliasing", "-D_GNU_SOURCE"]
_LDFLAGS = ["-pthread"]
if os.environ.get("RINGNET_SANITIZE"):
    _CFLAGS += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1"]
    _LDFLAGS += ["-fsanitize=address,undefined"]

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


def main() -> int:
    """Build the extension in place, next to this file."""
    root = os.path.dirname(_CSRC)
    os.chdir(root)
    ffibuilder.compile(tmpdir=root, verbose=bool(os.environ.get("V")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
