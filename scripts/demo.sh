#!/usr/bin/env bash
# demo.sh - install ringnet (scripts/setup-test-env.sh) and run a real workload across a
# rootless namespace: ping the gateway over IPv4 and IPv6 through the rings, then print
# the C core's counters.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(scripts/setup-test-env.sh | tail -n 1)
exec "$VENV/bin/python" scripts/demo.py "$@"
