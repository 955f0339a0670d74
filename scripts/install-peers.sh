#!/usr/bin/env bash
# install-peers.sh - install what the perf harness compares ringnet with, from Debian packages:
# iperf3, slirp4netns and passt (pasta), dnsperf and dnsmasq for perf/dns_bench.py, nginx and
# wrk for the sweep's churn family (perf/measure.py runs a private nginx as the sweep's user;
# on a machine with systemd the package also starts its own service on port 80, which the
# harness does not use: `systemctl disable --now nginx` stops it),
# plus unshare/nsenter (util-linux) and a C compiler for its latency helper.
# As root (apt-get); otherwise it says what to run. Idempotent.
#
#   scripts/install-peers.sh            # install what is missing
#   scripts/install-peers.sh --check    # only report what is missing (exit 1 if anything is)
set -euo pipefail

. "$(dirname "$0")/lib-apt.sh"

pkgs="iperf3 slirp4netns passt dnsperf dnsmasq-base nginx wrk util-linux gcc libc6-dev"
# shellcheck disable=SC2086
missing=$(apt_missing $pkgs)
if [ -z "$missing" ]; then
    echo "install-peers: all installed ($pkgs)"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "install-peers: missing: $missing"
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-peers: missing: $missing; as root run: apt-get install -y $missing" >&2
    exit 1
fi
echo "install-peers: installing $missing" >&2
# shellcheck disable=SC2086
apt_install $missing
echo "install-peers: installed $missing"
