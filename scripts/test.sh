#!/usr/bin/env bash
# test.sh - install what the tests need (scripts/setup-test-env.sh), then run them.
#
#   scripts/test.sh                      # everything CI runs: the whole suite, then the
#                                        # C harness tests again under ASan and UBSan
#   scripts/test.sh -k ring -x tests/test_ring.py    # only this pytest run
#   scripts/test.sh --sanitize [ARGS]    # only the ASan+UBSan run (of ARGS if given)
#
# Exits non-zero if any part fails; with no arguments both runs happen either way.
#
# The sanitized run: ringnet/ and csrc/ are copied to a scratch directory and both
# extensions built there in place with RINGNET_SANITIZE=1 (ringnet/_build.py); pytest
# then imports that copy first, with the compiler's libasan preloaded (the ASan runtime
# must come first in a process, and python is not built with it). Leak checking is off
# (CPython keeps memory to exit); any ASan or UBSan report ends the process, so pytest
# fails. Only the in-process harness tests run this way: the data path runs in this
# process there, under the sanitizers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# the tests that run the C core in this process: ring, ring loops, pump, flow hashing,
# worker frame intake, TCP input, UDP worker, moderation rules, network emulation,
# on_connect verdicts, the splice protocol, UDP forwards, capture
HARNESS=(tests/test_ring.py tests/test_ring_stress.py tests/test_pump.py tests/test_flow.py
         tests/test_worker_input.py tests/test_tcp_input.py tests/test_udp_worker.py
         tests/test_moderate.py tests/test_netem_worker.py tests/test_verdict.py
         tests/test_splice_proto.py tests/test_udp_fwd_worker.py
         tests/test_capture_core.py)

sanitize_only=0
if [ "${1:-}" = "--sanitize" ]; then
    sanitize_only=1
    shift
fi

VENV=$(scripts/setup-test-env.sh | tail -n 1)
export RINGNET_VENV="$VENV"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# pytest_argv ARGS... - fill argv with ARGS, checkout paths made absolute (all tests if none)
pytest_argv() {
    local a paths=0
    argv=()
    for a in "$@"; do
        if [ -e "$ROOT/${a%%::*}" ] && [ "${a#-}" = "$a" ]; then
            argv+=("$ROOT/$a")
            paths=1
        else
            argv+=("$a")
        fi
    done
    [ "$paths" = 1 ] || argv+=("$ROOT/tests")
}

# The tests must import the installed ringnet (the one an unprivileged user can reach),
# never the source tree: so pytest is the venv's script, not "python -m pytest", and it
# runs from an empty directory, since the commands the tests start ("python -m ringnet")
# look in their working directory first. Paths given as arguments are the checkout's.
run_pytest() {
    local argv
    pytest_argv "$@"
    mkdir -p "$WORK/run"
    (cd "$WORK/run" &&
     "$VENV/bin/pytest" -q -p no:cacheprovider --rootdir="$ROOT" -c "$ROOT/pyproject.toml" \
         "${argv[@]}")
}

run_sanitized() {
    local argv tree="$WORK/asan" cc libasan
    [ "$#" -gt 0 ] || set -- "${HARNESS[@]}"
    pytest_argv "$@"
    mkdir -p "$tree" "$WORK/asan-run"
    cp -r "$ROOT/ringnet" "$ROOT/csrc" "$tree/"
    rm -f "$tree"/ringnet/*.so "$tree"/ringnet/_ringnet_*.[co]
    echo "test.sh: building the ASan+UBSan extensions" >&2
    if ! (cd "$tree" && RINGNET_SANITIZE=1 RINGNET_TEST_BUILD=1 "$VENV/bin/python" \
              ringnet/_build.py) >"$WORK/asan-build.log" 2>&1; then
        tail -n 60 "$WORK/asan-build.log" >&2
        echo "test.sh: the sanitized build failed" >&2
        return 1
    fi
    # the runtime of the compiler that built the extensions (cffi uses Python's CC)
    cc=${CC:-$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("CC"))')}
    libasan=$(${cc%% *} -print-file-name=libasan.so)
    if [ ! -e "$libasan" ]; then
        echo "test.sh: no libasan.so for $cc (Debian: gcc's libasan)" >&2
        return 1
    fi
    echo "test.sh: the C harness tests under ASan+UBSan" >&2
    (cd "$WORK/asan-run" &&
     PYTHONPATH="$tree" RINGNET_SANITIZED="$tree" LD_PRELOAD="$libasan" \
     ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99" \
     UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
     "$VENV/bin/pytest" -q -p no:cacheprovider --rootdir="$ROOT" -c "$ROOT/pyproject.toml" \
         "${argv[@]}")
}

if [ "$sanitize_only" = 1 ]; then
    run_sanitized "$@"
elif [ "$#" -gt 0 ]; then
    run_pytest "$@"
else
    rc=0
    run_pytest || rc=$?
    run_sanitized || rc=$((rc ? rc : 1))
    [ "$rc" = 0 ] || echo "test.sh: FAILED (exit $rc)" >&2
    exit "$rc"
fi
