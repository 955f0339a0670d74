"""The namespace's tun device: multi-queue, virtio-net header, negotiated offloads.

Runs inside the namespace child. One queue (one fd) per worker; frames are read
and written with a 12-byte virtio-net header so the namespace can hand us TCP
super-frames of up to 64 KiB (TSO) and accept them from us, and both sides can
skip payload checksums (NEEDS_CSUM).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .errors import NamespaceError

__all__ = ["TunDevice", "open_tun", "OFFLOAD_NAMES"]

TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETSNDBUF = 0x400454D4
TUNSETVNETHDRSZ = 0x400454D8

IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

OFFLOAD_NAMES = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6",
                 TUN_F_TSO_ECN: "tso_ecn", TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}

VNET_HDR_LEN = 12


class TunDevice:
    """An open multi-queue tun device: its name, queue fds and negotiated offloads."""

    def __init__(self, name: str, fds: list[int], offloads: int) -> None:
        self.name = name
        self.fds = fds
        self.offloads = offloads

    def offload_names(self) -> list[str]:
        return [n for bit, n in OFFLOAD_NAMES.items() if self.offloads & bit]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def _open_queue(name: str) -> tuple[int, str]:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NamespaceError("/dev/net/tun does not exist: load the tun module (modprobe tun) "
                             "or create the device node (mknod /dev/net/tun c 10 200)") from None
    except PermissionError:
        raise NamespaceError("/dev/net/tun is not accessible to this user: make it mode 0666 "
                             "(chmod 0666 /dev/net/tun), as common distributions ship it") from None
    try:
        res = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE))
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    except OSError as e:
        os.close(fd)
        raise NamespaceError(f"cannot create tun queue for {name!r}: {e.strerror} "
                             "(TUNSETIFF with IFF_MULTI_QUEUE|IFF_VNET_HDR)") from None
    return fd, res[:16].rstrip(b"\0").decode()


def _negotiate_offloads(fd: int) -> int:
    """Ask for checksum and TSO offloads, and UDP segmentation offload where the kernel
    knows it (older kernels answer EINVAL for the USO bits)."""
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
    for want in (base | TUN_F_USO4 | TUN_F_USO6, base, TUN_F_CSUM, 0):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, want)
            return want
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise NamespaceError(f"TUNSETOFFLOAD failed: {e.strerror}") from None
    return 0


def open_tun(name: str, queues: int, sndbuf: int) -> TunDevice:
    """Create tun device ``name`` with ``queues`` queues, all non-blocking.

    Raises NamespaceError naming the failing step; nothing stays open on failure.
    """
    fds: list[int] = []
    try:
        for _ in range(queues):
            fd, actual = _open_queue(name)
            fds.append(fd)
            if actual != name:
                raise NamespaceError(f"tun device was named {actual!r}, not {name!r}")
            fcntl.ioctl(fd, TUNSETSNDBUF, struct.pack("i", min(sndbuf, 0x7FFFFFFF)))
        offloads = _negotiate_offloads(fds[0])
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return TunDevice(name, fds, offloads)
