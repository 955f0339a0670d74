#!/usr/bin/env bash
# test.sh - install what the tests need (scripts/setup-test-env.sh), then run them.
# Extra arguments go to pytest, for example: scripts/test.sh -k ring -x tests/test_ring.py
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$(scripts/setup-test-env.sh | tail -n 1)
export RINGNET_VENV="$VENV"
# The tests must import the installed ringnet (the one an unprivileged user can reach),
# never the source tree: so pytest is the venv's script, not "python -m pytest", and it
# runs from an empty directory, since the commands the tests start ("python -m ringnet")
# look in their working directory first. Paths given as arguments are the checkout's.
args=()
paths=0
for a in "$@"; do
    if [ -e "$ROOT/${a%%::*}" ] && [ "${a#-}" = "$a" ]; then
        args+=("$ROOT/$a")
        paths=1
    else
        args+=("$a")
    fi
done
[ "$paths" = 1 ] || args+=("$ROOT/tests")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$VENV/bin/pytest" -q -p no:cacheprovider --rootdir="$ROOT" -c "$ROOT/pyproject.toml" "${args[@]}"
