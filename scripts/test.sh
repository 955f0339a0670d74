#!/usr/bin/env bash
# test.sh - install what the tests need (scripts/setup-test-env.sh), then run them.
# Extra arguments go to pytest, for example: scripts/test.sh -k ring -x
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(scripts/setup-test-env.sh | tail -n 1)
export RINGNET_VENV="$VENV"
# pytest from the venv's script, not "python -m pytest": the tests must import the
# installed ringnet (the one an unprivileged user can reach), not the source tree.
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
