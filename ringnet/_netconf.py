"""Interface configuration inside the namespace, through netlink (pyroute2).

Runs in the namespace child after the tun device exists: loopback up, MTU and
tx queue length, the guest addresses (IPv6 without duplicate address detection:
tun has no link layer and nothing else can hold the address), the link up, and
default routes through the gateway addresses.
"""

from __future__ import annotations

import logging
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .config import NetworkConfig
from .errors import NamespaceError

__all__ = ["configure", "IFA_F_NODAD"]

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        log.debug("sysctl %s=%s not set: %s", path, value, e)


def configure(cfg: NetworkConfig, ifname: str) -> int:
    """Configure ``ifname`` and loopback as ``cfg`` says; return the interface index.

    Raises NamespaceError naming the netlink step that failed.
    """
    addrs = cfg.addresses()
    step = "open netlink"
    try:
        with IPRoute() as ipr:
            step = "bring lo up"
            lo = ipr.link_lookup(ifname="lo")
            if lo:
                ipr.link("set", index=lo[0], state="up")
            step = f"find {ifname}"
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise NamespaceError(f"interface {ifname} vanished before it was configured")
            idx = found[0]
            if cfg.ipv6:
                # No router solicitations: nothing answers them, they would only be dropped.
                _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/router_solicitations", "0")
                _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad", "0")
            step = f"set MTU {cfg.mtu} and txqueuelen on {ifname}"
            ipr.link("set", index=idx, mtu=cfg.mtu, txqlen=cfg.txqueuelen())
            step = f"add {addrs['guest4']}/{cfg.network4.prefixlen}"
            ipr.addr("add", index=idx, address=str(addrs["guest4"]),
                     prefixlen=cfg.network4.prefixlen)
            if cfg.ipv6:
                step = f"add {addrs['guest6']}/{cfg.network6.prefixlen}"
                ipr.addr("add", index=idx, family=socket.AF_INET6, address=str(addrs["guest6"]),
                         prefixlen=cfg.network6.prefixlen, flags=IFA_F_NODAD)
            step = f"bring {ifname} up"
            ipr.link("set", index=idx, state="up")
            step = f"add default route via {addrs['gateway4']}"
            ipr.route("add", dst="0.0.0.0/0", gateway=str(addrs["gateway4"]), oif=idx)
            if cfg.ipv6:
                step = f"add default route via {addrs['gateway6']}"
                ipr.route("add", family=socket.AF_INET6, dst="::/0",
                          gateway=str(addrs["gateway6"]), oif=idx)
            return idx
    except NetlinkError as e:
        raise NamespaceError(f"netlink: cannot {step}: {e}") from None
