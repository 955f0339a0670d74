#!/usr/bin/env bash
# setup-test-env.sh - install everything ringnet's tests need on a fresh Debian machine.
#
# As root: Debian packages (compiler, Python headers and venv, iperf3, ping, setpriv,
# dnsmasq and dig for the DNS tests, tcpdump to read captures back; podman, runc and
# busybox-static for the podman test; nginx and wrk for the perf harness's churn test),
# /dev/net/tun mode 0666 (as common distributions ship it), an unprivileged user for
# the rootless tests, and a virtual environment that every user can run, made from
# Debian's /usr/bin/python3, with ringnet and its test dependencies installed.
# As another user: only the virtual environment (under ~/.cache unless RINGNET_VENV
# says otherwise). Idempotent; prints the venv path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-apt.sh

TEST_USER=${RINGNET_TEST_USER:-ringnet-test}
if [ "$(id -u)" = 0 ]; then
    VENV=${RINGNET_VENV:-/opt/ringnet-venv}
else
    VENV=${RINGNET_VENV:-$HOME/.cache/ringnet-venv}
fi
PY=/usr/bin/python3

if [ "$(id -u)" = 0 ]; then
    pkgs="gcc libc6-dev python3-dev python3-venv iperf3 iputils-ping iproute2 util-linux procps dnsmasq-base bind9-dnsutils uidmap slirp4netns passt curl clang libclang-rt-14-dev tcpdump"
    # shellcheck disable=SC2086
    missing=$(apt_missing $pkgs)
    if [ -n "$missing" ]; then
        echo "setup: installing $missing" >&2
        # shellcheck disable=SC2086
        apt_install $missing
    fi
    # Rootless podman for tests/test_podman.py (ringnet-slirp4netns as its network command),
    # without its recommends (buildah, dbus-user-session): runc (crun refuses hybrid cgroup
    # layouts), catatonit for its pause process, busybox-static for the test image.
    # nginx and wrk: tests/test_perf_harness.py runs the sweep's churn family (a private
    # nginx as the test's user; the package's own service is not needed)
    pkgs="podman runc conmon catatonit golang-github-containers-common busybox-static nginx wrk"
    # shellcheck disable=SC2086
    missing=$(apt_missing $pkgs)
    if [ -n "$missing" ]; then
        echo "setup: installing $missing" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    [ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        useradd --system --create-home --shell /bin/bash "$TEST_USER"
    fi
    # Subordinate ids for the newuidmap/newgidmap path (system users get none by default).
    grep -q "^$TEST_USER:" /etc/subuid 2>/dev/null || usermod --add-subuids 300000-365535 "$TEST_USER"
    grep -q "^$TEST_USER:" /etc/subgid 2>/dev/null || usermod --add-subgids 300000-365535 "$TEST_USER"
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
# RINGNET_TEST_BUILD: the ring test extension too, and -Werror (ringnet/_build.py)
RINGNET_TEST_BUILD=1 "$VENV/bin/pip" install -q ".[test]"
chmod -R a+rX "$VENV"
echo "$VENV"
