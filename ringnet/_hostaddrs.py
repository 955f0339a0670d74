"""The host's own addresses, for the destination policy (csrc/policy.c).

A server listening on 0.0.0.0 of the host answers on every address of the host, not
only on loopback, so refusing host loopback alone leaves the host open to the
namespace. The workers therefore refuse new flows to any address of the host itself
unless ``allow_host`` is set. This module reads those addresses through netlink
(pyroute2, no ``ip`` subprocess): every interface address (RTM_GETADDR) and every
full-length ``local`` route of the local routing table (table 255, where the kernel
lists what it delivers locally), loopback excluded (the policy refuses 127.0.0.0/8 and
::1 on its own). The orchestrator reads them at start and passes them in each worker's
parameters; ``HostAddrWatcher`` listens for address notifications and sends the new set
to the workers (``HOST_ADDRS``) whenever it changes.

Limits: at most ``HOST_ADDR_MAX`` addresses per family reach the workers (the rest are
logged and left out, link-local ones first); local routes shorter than a host route
(AnyIP prefixes such as ``ip route add local 192.0.2.0/24 dev lo``) are not covered.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

from ._threads import start_thread

log = logging.getLogger(__name__)

__all__ = ["HostAddrs", "HOST_ADDR_MAX", "read_host_addrs", "HostAddrWatcher"]

HOST_ADDR_MAX = 64          # RN_HOST_ADDR_MAX in csrc/worker.h, per family
_RT_TABLE_LOCAL = 255
_RTN_LOCAL = 2
_AF_INET, _AF_INET6 = 2, 10


class HostAddrs(NamedTuple):
    """The host's own addresses, sorted, loopback excluded."""

    v4: tuple[ipaddress.IPv4Address, ...]
    v6: tuple[ipaddress.IPv6Address, ...]

    def to_body(self) -> dict:
        """The HOST_ADDRS control message body (also the worker spec's entry)."""
        return {"v4": [str(a) for a in self.v4], "v6": [str(a) for a in self.v6]}

    @classmethod
    def from_body(cls, body: dict) -> "HostAddrs":
        """Parse a HOST_ADDRS body; raises ValueError if it is malformed."""
        v4, v6 = body.get("v4"), body.get("v6")
        if not isinstance(v4, list) or not isinstance(v6, list) or \
                len(v4) > HOST_ADDR_MAX or len(v6) > HOST_ADDR_MAX:
            raise ValueError("host addresses: two lists of at most "
                             f"{HOST_ADDR_MAX} addresses expected")
        a4 = tuple(ipaddress.IPv4Address(a) for a in v4)
        a6 = tuple(ipaddress.IPv6Address(a) for a in v6)
        return cls(a4, a6)


def _bounded(addrs: set, family: str) -> tuple:
    """Sorted, at most HOST_ADDR_MAX; link-local addresses are the first left out."""
    ordered = sorted(addrs, key=lambda a: (a.is_link_local, a))
    if len(ordered) > HOST_ADDR_MAX:
        log.warning("the host has %d %s addresses; only %d are refused to the namespace "
                    "(left out: %s)", len(ordered), family, HOST_ADDR_MAX,
                    ", ".join(map(str, ordered[HOST_ADDR_MAX:])))
        ordered = ordered[:HOST_ADDR_MAX]
    return tuple(sorted(ordered))


def read_host_addrs(ipr: Optional[Any] = None) -> HostAddrs:
    """The addresses of this network namespace's interfaces and its full-length local
    routes, loopback excluded; ``ipr`` is an open pyroute2 IPRoute to use, else one is
    opened and closed here. Raises OSError (pyroute2's NetlinkError is one) if
    netlink cannot be read."""
    from pyroute2 import IPRoute

    own = ipr is None
    if own:
        ipr = IPRoute()
    try:
        found: set = set()
        for m in ipr.get_addr():
            a = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            if a:
                found.add(ipaddress.ip_address(a.split("%")[0]))
        for m in ipr.get_routes(table=_RT_TABLE_LOCAL):
            full = 32 if m["family"] == _AF_INET else 128
            dst = m.get_attr("RTA_DST")
            if m["type"] == _RTN_LOCAL and m["dst_len"] == full and dst:
                found.add(ipaddress.ip_address(dst.split("%")[0]))
    finally:
        if own:
            ipr.close()
    found = {a for a in found if not a.is_loopback and not a.is_unspecified}
    return HostAddrs(_bounded({a for a in found if a.version == 4}, "IPv4"),
                     _bounded({a for a in found if a.version == 6}, "IPv6"))


class HostAddrWatcher:
    """Call ``on_change(addrs)`` whenever the host's addresses change.

    A daemon thread listens to netlink's address notifications (RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR) and re-reads the whole set after each burst of them; it also
    re-reads every ``interval`` seconds, which covers a notification lost to a full
    socket buffer. Exceptions from ``on_change`` are logged, not raised.
    """

    def __init__(self, addrs: HostAddrs, on_change: Callable[[HostAddrs], None],
                 interval: float = 30.0) -> None:
        self._addrs = addrs
        self._on_change = on_change
        self._interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last = time.monotonic()
        self._wake: tuple[int, int] = (-1, -1)  # stop() writes, the thread's select() wakes

    @property
    def addrs(self) -> HostAddrs:
        return self._addrs

    def start(self) -> "HostAddrWatcher":
        self._wake = os.pipe2(os.O_CLOEXEC)
        self._thread = start_thread(self._run, "ringnet-hostaddr-watch")
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it; no callback runs after this returns."""
        self._stop.set()
        if self._thread is not None:
            os.write(self._wake[1], b"x")
            if self._thread is not threading.current_thread():
                self._thread.join()
            for fd in self._wake:
                os.close(fd)
            self._wake = (-1, -1)
        self._thread = None

    def check(self) -> bool:
        """Read the addresses once; True if they changed (and on_change was called)."""
        try:
            addrs = read_host_addrs()
        except OSError as e:
            log.warning("could not read the host's addresses: %s", e)
            return False
        if addrs == self._addrs:
            return False
        log.info("host addresses now %s", ", ".join(map(str, addrs.v4 + addrs.v6)) or "none")
        self._addrs = addrs
        try:
            self._on_change(addrs)
        except Exception:  # noqa: BLE001 - a watcher must survive its callback
            log.exception("could not send the new host addresses to the workers")
        return True

    def _run(self) -> None:
        # pyroute2's sockets are made, used and closed in this thread only: closed from
        # another thread, their event loop's descriptors would stay open
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

        ipr = IPRoute()
        try:
            try:
                ipr.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
                watched: list[Any] = [ipr]
            except OSError as e:
                log.warning("no netlink address notifications (%s): re-reading the host's "
                            "addresses every %g s instead", e, self._interval)
                watched = []
            self.check()  # what changed between the first read and the subscription
            while not self._stop.is_set():
                ready, _, _ = select.select(watched + [self._wake[0]], [], [], self._left())
                if self._stop.is_set():
                    break
                if ipr in ready:
                    try:
                        ipr.get()  # drain this burst's notifications; the dump says the rest
                    except Exception as e:  # noqa: BLE001 - e.g. ENOBUFS after an overrun
                        log.debug("netlink notification read failed: %s", e)
                    self.check()
                elif self._due():
                    self.check()
        finally:
            ipr.close()

    def _left(self) -> float:
        return max(0.0, self._last + self._interval - time.monotonic())

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            return True
        return False
