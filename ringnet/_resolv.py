"""Upstream DNS resolvers: parsed from --dns-upstream or from the host's resolv.conf.

The DNS addresses inside the namespace (10.0.2.3, fd00::3) forward to these.
resolv.conf is read through any symlink (systemd-resolved's stub lives behind one).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, NamedTuple

from .errors import ConfigError

__all__ = ["Upstream", "parse_upstream", "read_resolv_conf", "MAX_UPSTREAMS"]

MAX_UPSTREAMS = 3
RESOLV_CONF = "/etc/resolv.conf"


class Upstream(NamedTuple):
    """One upstream resolver."""

    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.addr}]:{self.port}" if self.addr.version == 6 else f"{self.addr}:{self.port}"


def parse_upstream(text: str, field: str = "dns_upstream") -> Upstream:
    """Parse ``ADDR``, ``ADDR:PORT``, ``V6ADDR`` or ``[V6ADDR]:PORT``; ConfigError if malformed."""
    value, port = text.strip(), "53"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{field}={text!r}: expected [IPV6]:PORT")
        value, port = host, rest[1:] or "53"
    elif value.count(":") == 1:
        value, port = value.split(":")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{field}={text!r} is not ADDR[:PORT] with an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{field}={text!r}: the port must be 1 to 65535")
    if addr.is_unspecified or addr.is_multicast:
        raise ConfigError(f"{field}={text!r} is not a unicast address")
    return Upstream(addr, int(port))


def read_resolv_conf(path: str = RESOLV_CONF) -> list[Upstream]:
    """The first MAX_UPSTREAMS usable nameservers of ``path`` (empty if unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines: Iterable[str] = f.read().splitlines()
    except OSError:
        return []
    out: list[Upstream] = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            addr = parts[1].split("%", 1)[0]  # drop an IPv6 zone index
            try:
                out.append(parse_upstream(addr))
            except ConfigError:
                continue
            if len(out) == MAX_UPSTREAMS:
                break
    return out
