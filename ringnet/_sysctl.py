"""Network sysctls of the namespace: NetworkConfig.sysctls, ``--sysctl KEY=VALUE``.

Each setting is "KEY=VALUE" with KEY a sysctl of the network namespace, in sysctl(8)'s
dotted form (net.ipv4.tcp_tw_reuse) or its slash form (net/ipv6/conf/eth0.5/mtu, for
names holding dots), and VALUE what gets written to /proc/sys/KEY (spaces kept, as in
"net.ipv4.ping_group_range=0 2147483647"). Only net.* keys: they are the ones a network
namespace owns, and its root (ringnet's namespace child) may write them; the rest of
/proc/sys belongs to the host.

parse() checks the text when the config is made; apply() writes the values inside the
namespace (the namespace child, after the interface is configured and before it
isolates itself, so per-interface keys of ringnet's own interface work too). A key the
namespace's kernel does not have, one it will not let the namespace write, or a value it
refuses fails the start with a NamespaceError naming the setting.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Iterable, Mapping, Union

from .errors import ConfigError, NamespaceError

__all__ = ["parse", "normalize", "apply", "apply_defaults", "CREATED_DEFAULTS"]

VALUE_MAX = 1024

# Set in every namespace ringnet creates itself (not in one it attaches to: that one is its
# container runtime's), before the user's sysctls, which override them.
#
# net.ipv4.tcp_tw_reuse=1: the namespace's kernel may reuse the port of a connection in
# TIME_WAIT for a new connection to the same destination once it is a second old (with
# TCP timestamps, whose PAWS check keeps old segments out of the new connection). The
# kernel's default, 2, allows that only for loopback traffic, and every connection out of
# the namespace goes to the gateway, so a client opening connections at more than about
# 240 a second (28,232 ephemeral ports over 60 s of TIME_WAIT) found, after the first
# ~14k, connect() spending milliseconds per call scanning TIME_WAIT sockets, and then no
# port at all (EADDRNOTAVAIL). The path to the gateway is as private as loopback: the
# peer is ringnet's TCP core, which takes a new SYN on a recently closed tuple.
#
# net.ipv4.tcp_congestion_control=reno: a TCP connection of the namespace spans only the
# hop to ringnet's core (over the tun device, in memory, no loss but a full tun queue);
# the path beyond is the host socket's, with the host's congestion control. The
# namespace inherits the host's default, and with BBR (the default on many hosts) every
# sender in it paces each super-frame by a timer, at a rate estimated over a hop whose
# delay is our batching: one stream out of the namespace ran at 6-8 Gbit/s at MTU 1500
# and 9-10 at 65520, against 17-18 with reno, which sends as its window allows (perf/
# results/issue12-latency.md). reno is the one algorithm a namespace may always make its
# default (the others need the host's tcp_allowed_congestion_control); an application
# still chooses its own per socket (TCP_CONGESTION).
CREATED_DEFAULTS = ("net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_congestion_control=reno")
# one path component: what kernel sysctl names and interface names use (no '/', no NUL)
_PART = re.compile(r"[A-Za-z0-9_.:@+-]+")


def _split(text: str) -> tuple[str, str]:
    """``(KEY, VALUE)`` of "KEY=VALUE", white space around each stripped; ConfigError if
    it is not of that form."""
    if not isinstance(text, str):
        raise ConfigError(f"sysctls: {text!r} must be a string KEY=VALUE")
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"sysctls: {text!r} must be KEY=VALUE, e.g. net.ipv4.tcp_tw_reuse=1")
    return key.strip(), value.strip()


def parse(text: str) -> tuple[str, str]:
    """``(path under /proc/sys, value)`` of one "KEY=VALUE"; ConfigError naming it and
    what is allowed when it is bad."""
    key, value = _split(text)
    parts = key.split("/") if "/" in key else key.split(".")
    if parts[0] != "net" or len(parts) < 2 or \
            any(not _PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise ConfigError(f"sysctls: {key!r} is not a network sysctl: KEY must be net.* "
                          "(dotted, or with '/' between names that hold dots), the settings a "
                          "network namespace owns")
    if not value or len(value) > VALUE_MAX or not value.replace("\t", " ").isprintable():
        raise ConfigError(f"sysctls: {key}: the value must be 1 to {VALUE_MAX} printable "
                          f"characters (tabs too), got {value!r}")
    return "/".join(parts), value


def normalize(sysctls: Union[str, Mapping[str, object], Iterable[str], None]) -> tuple[str, ...]:
    """NetworkConfig.sysctls as given (one "KEY=VALUE", several, or a {KEY: VALUE} mapping)
    as a checked tuple of "KEY=VALUE" strings; ConfigError if one is bad."""
    if sysctls is None:
        return ()
    if isinstance(sysctls, str):
        items = [sysctls]
    elif isinstance(sysctls, Mapping):
        items = [f"{k}={v}" for k, v in sysctls.items()]
    else:
        items = list(sysctls)
    out = []
    for item in items:
        parse(item)
        key, value = _split(item)
        out.append(f"{key}={value}")
    return tuple(out)


def apply(sysctls: Iterable[str], root: str = "/proc/sys") -> None:
    """Write each "KEY=VALUE" under ``root``, in order (a later one for the same key
    wins), as the process's network namespace sees them. NamespaceError naming the
    first one that fails and why."""
    for item in sysctls:
        path, value = parse(item)
        key = _split(item)[0]
        try:
            # never O_CREAT: a setting the kernel lacks is missing, not to be made
            fd = os.open(f"{root}/{path}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode("ascii"))
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise NamespaceError(f"sysctl {key}: the namespace's kernel has no such "
                                 "setting") from None
        except PermissionError:
            raise NamespaceError(f"sysctl {key}: not writable from the namespace (read-only, "
                                 "or a setting of the whole host)") from None
        except (OSError, UnicodeEncodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if isinstance(e, OSError) and e.errno == errno.EINVAL:
                why = "the kernel refused the value"
            raise NamespaceError(f"sysctl {key}={value}: {why}") from None


def apply_defaults(defaults: Iterable[str] = CREATED_DEFAULTS,
                   root: str = "/proc/sys") -> tuple[str, ...]:
    """Write ringnet's own settings (CREATED_DEFAULTS) where the kernel takes them, and
    return those it did not: one the kernel lacks or keeps to the host (tcp_tw_reuse
    and tcp_congestion_control became the namespace's own in Linux 4.x; README lists
    kernels back to 3.17) is left as it is, since no user asked for it. The user's
    sysctls go through apply(), whose failures stop the start."""
    skipped = []
    for item in defaults:
        try:
            apply((item,), root)
        except NamespaceError:
            skipped.append(item)
    return tuple(skipped)
