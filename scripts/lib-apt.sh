# lib-apt.sh - sourced by the setup scripts: which Debian packages are missing, and installing them
#
#   . scripts/lib-apt.sh
#   missing=$(apt_missing gcc iperf3 ...)   # the ones dpkg does not report installed
#   apt_install $missing                    # as root, quietly; nothing for an empty list

# apt_missing PKG... - print the packages that are not installed, space-separated
apt_missing() {
    local p out=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || out="$out $p"
    done
    echo "${out# }"
}

# apt_install PKG... - install the packages non-interactively (root only)
apt_install() {
    [ "$#" -gt 0 ] || return 0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
