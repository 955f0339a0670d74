#!/usr/bin/env bash
# demo.sh - install ringnet into a virtual environment and run a real workload across a
# rootless namespace (scripts/demo.py): ping the gateway over IPv4 and IPv6, fetch a file
# from a host server, iperf3 if installed, then print the C core's counters.
#
# Needs only: a C compiler with the C library's headers, Python 3.10+ with its headers and
# venv, ping and ip. As root with apt, what is missing is installed (nothing else: not
# the test or benchmark tools); otherwise the script lists what is missing, with the
# Debian/Ubuntu package for each, and stops. Then demo.py checks ringnet.available() and
# says what to change if this kernel forbids a rootless network.
#
#   scripts/demo.sh              # venv in ~/.cache/ringnet-demo-venv (RINGNET_DEMO_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${RINGNET_DEMO_VENV:-$HOME/.cache/ringnet-demo-venv}

# missing - print "what package" lines for every requirement that is not met
missing() {
    local cc=${CC:-cc}
    if ! command -v "$PY" >/dev/null 2>&1; then
        echo "python3 python3"
        return
    fi
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "python>=3.10 python3"
    fi
    if ! command -v "$cc" >/dev/null 2>&1; then
        echo "a C compiler ($cc) gcc"
    elif ! printf '#include <stdio.h>\n' | "$cc" -fsyntax-only -x c - >/dev/null 2>&1; then
        echo "the C library headers libc6-dev"
    elif ! printf 'int main(void) { return 0; }\n' | "$cc" -x c - -o /dev/null >/dev/null 2>&1; then
        echo "an assembler and linker for $cc binutils"
    fi
    "$PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        2>/dev/null || echo "the Python headers (Python.h) python3-dev"
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || echo "python3 -m venv python3-venv"
    command -v ping >/dev/null 2>&1 || echo "ping iputils-ping"
    command -v ip >/dev/null 2>&1 || echo "ip iproute2"
}

lacking=$(missing)
if [ -n "$lacking" ]; then
    pkgs=$(echo "$lacking" | awk '{print $NF}' | sort -u | tr '\n' ' ')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "demo: installing $pkgs" >&2
        . scripts/lib-apt.sh
        # shellcheck disable=SC2086
        apt_install $pkgs
        lacking=$(missing)
    fi
fi
if [ -n "$lacking" ]; then
    echo "demo: the demo needs what this machine lacks:" >&2
    echo "$lacking" | awk '{pkg = $NF; $NF = ""; printf "  %s(Debian/Ubuntu package %s)\n", $0, pkg}' >&2
    echo "demo: install them as root, for example: sudo apt-get install ${pkgs% }" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "demo: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
echo "demo: installing ringnet into $VENV (builds the C core)" >&2
src=.
if [ ! -w . ]; then
    # pip builds in the source tree: build from a copy of a checkout we may not write to
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    cp -r pyproject.toml setup.py MANIFEST.in README.md LICENSE ringnet csrc "$src/"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "$src"
"$VENV/bin/python" scripts/demo.py "$@"
