"""Build and parse the frames the rings carry, in pure Python, for tests.

A frame is a 12-byte virtio-net header (little-endian ``struct
virtio_net_hdr_v1``) followed by an IPv4 or IPv6 packet. Builders compute
correct checksums unless told otherwise, and take keyword overrides for the
fields tests want to break. Addresses are strings or packed bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Union

Addr = Union[str, bytes]

VNET_HDR_LEN = 12
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 3, 4, 5, 0x80

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129


def addr(a: Addr) -> bytes:
    """Packed form of an IPv4/IPv6 address given as text or bytes."""
    if isinstance(a, (bytes, bytearray)):
        return bytes(a)
    return ipaddress.ip_address(a).packed


def csum_partial(data: bytes, init: int = 0) -> int:
    """One's complement sum of big-endian 16-bit words, folded, not complemented."""
    if len(data) % 2:
        data = data + b"\0"
    s = init + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data: bytes, init: int = 0) -> int:
    """Internet checksum of data (RFC 1071), ready to store."""
    return ~csum_partial(data, init) & 0xFFFF


def pseudo4(src: Addr, dst: Addr, proto: int, length: int) -> int:
    """Partial sum of the IPv4 pseudo-header."""
    return csum_partial(addr(src) + addr(dst) + struct.pack("!BBH", 0, proto, length))


def pseudo6(src: Addr, dst: Addr, proto: int, length: int) -> int:
    """Partial sum of the IPv6 pseudo-header (RFC 8200, 8.1)."""
    return csum_partial(addr(src) + addr(dst) + struct.pack("!IxxxB", length, proto))


def vnet(flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0, gso_size: int = 0,
         csum_start: int = 0, csum_offset: int = 0, num_buffers: int = 0) -> bytes:
    """A virtio-net header (little-endian fields)."""
    return struct.pack("<BBHHHHH", flags, gso_type, hdr_len, gso_size, csum_start,
                       csum_offset, num_buffers)


def frame(pkt: bytes, **vnet_fields: int) -> bytes:
    """A ring frame: virtio-net header (zero unless overridden) + packet."""
    return vnet(**vnet_fields) + pkt


def ipv4(src: Addr, dst: Addr, proto: int, payload: bytes, *, ttl: int = 64,
         ident: int = 0, df: bool = False, mf: bool = False, frag_offset: int = 0,
         tos: int = 0, options: bytes = b"", version: int = 4, ihl: Optional[int] = None,
         total_length: Optional[int] = None, hdr_csum: Optional[int] = None) -> bytes:
    """An IPv4 packet; the header checksum is right unless hdr_csum is given."""
    if len(options) % 4:
        raise ValueError("options must be a multiple of 4 bytes")
    if ihl is None:
        ihl = 5 + len(options) // 4
    hlen = 20 + len(options)
    if total_length is None:
        total_length = hlen + len(payload)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset & 0x1FFF)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl & 0xF), tos, total_length,
                      ident, flags, ttl, proto, 0, addr(src), addr(dst)) + options
    if hdr_csum is None:
        hdr_csum = csum(hdr)
    hdr = hdr[:10] + struct.pack("!H", hdr_csum) + hdr[12:]
    return hdr + payload


def ipv6(src: Addr, dst: Addr, nh: int, payload: bytes, *, hlim: int = 64, tc: int = 0,
         flow: int = 0, plen: Optional[int] = None, version: int = 6) -> bytes:
    """An IPv6 packet with no extension headers (nh is the next header)."""
    if plen is None:
        plen = len(payload)
    first = (version << 28) | (tc << 20) | (flow & 0xFFFFF)
    return struct.pack("!IHBB16s16s", first, plen, nh, hlim, addr(src), addr(dst)) + payload


def icmp4(type_: int, code: int, rest: bytes, data: bytes = b"", *,
          cksum: Optional[int] = None) -> bytes:
    """An ICMP message: type, code, checksum, 4 bytes of rest, data."""
    msg = struct.pack("!BBH", type_, code, 0) + rest + data
    if cksum is None:
        cksum = csum(msg)
    return msg[:2] + struct.pack("!H", cksum) + msg[4:]


def icmp4_echo(ident: int, seq: int, data: bytes = b"", *, type_: int = ICMP_ECHO_REQUEST,
               code: int = 0, cksum: Optional[int] = None) -> bytes:
    """An ICMP echo request (or reply, with type_)."""
    return icmp4(type_, code, struct.pack("!HH", ident, seq), data, cksum=cksum)


def icmp6(src: Addr, dst: Addr, type_: int, code: int, rest: bytes, data: bytes = b"", *,
          cksum: Optional[int] = None) -> bytes:
    """An ICMPv6 message; the checksum covers the pseudo-header of src/dst."""
    msg = struct.pack("!BBH", type_, code, 0) + rest + data
    if cksum is None:
        cksum = csum(msg, pseudo6(src, dst, PROTO_ICMPV6, len(msg)))
    return msg[:2] + struct.pack("!H", cksum) + msg[4:]


def icmp6_echo(src: Addr, dst: Addr, ident: int, seq: int, data: bytes = b"", *,
               type_: int = ICMP6_ECHO_REQUEST, code: int = 0,
               cksum: Optional[int] = None) -> bytes:
    """An ICMPv6 echo request (or reply, with type_)."""
    return icmp6(src, dst, type_, code, struct.pack("!HH", ident, seq), data, cksum=cksum)


def _l4_pseudo(src: Addr, dst: Addr, proto: int, length: int) -> int:
    if len(addr(src)) == 4:
        return pseudo4(src, dst, proto, length)
    return pseudo6(src, dst, proto, length)


def tcp(src: Addr, dst: Addr, sport: int, dport: int, payload: bytes = b"", *,
        seq: int = 0, ack: int = 0, flags: int = 0x02, window: int = 65535) -> bytes:
    """A TCP segment (no options) with its checksum; default flags SYN."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    seg += payload
    c = csum(seg, _l4_pseudo(src, dst, PROTO_TCP, len(seg)))
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: Addr, dst: Addr, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP datagram with its checksum."""
    dgram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = csum(dgram, _l4_pseudo(src, dst, PROTO_UDP, len(dgram))) or 0xFFFF
    return dgram[:6] + struct.pack("!H", c) + dgram[8:]


def echo4_frame(src: Addr, dst: Addr, icmp_id: int = 1, seq: int = 1, data: bytes = b"",
                **ip_fields) -> bytes:
    """A complete frame carrying an ICMP echo request."""
    return frame(ipv4(src, dst, PROTO_ICMP, icmp4_echo(icmp_id, seq, data), **ip_fields))


def echo6_frame(src: Addr, dst: Addr, icmp_id: int = 1, seq: int = 1, data: bytes = b"",
                **ip_fields) -> bytes:
    """A complete frame carrying an ICMPv6 echo request."""
    return frame(ipv6(src, dst, PROTO_ICMPV6, icmp6_echo(src, dst, icmp_id, seq, data),
                      **ip_fields))


@dataclass
class Packet:
    """A parsed frame: the virtio-net header, IP fields and the transport bytes."""

    vnet: bytes
    version: int
    src: bytes
    dst: bytes
    proto: int
    ttl: int
    header: bytes
    payload: bytes


def parse(frm: bytes) -> Packet:
    """Parse a frame strictly; raises ValueError if any length is inconsistent."""
    if len(frm) < VNET_HDR_LEN + 20:
        raise ValueError("short frame")
    vh, pkt = frm[:VNET_HDR_LEN], frm[VNET_HDR_LEN:]
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0xF) * 4
        (total,) = struct.unpack("!H", pkt[2:4])
        if ihl < 20 or total != len(pkt) or total < ihl:
            raise ValueError("bad IPv4 lengths")
        return Packet(vh, 4, pkt[12:16], pkt[16:20], pkt[9], pkt[8], pkt[:ihl],
                      pkt[ihl:total])
    if version == 6:
        (plen,) = struct.unpack("!H", pkt[4:6])
        if len(pkt) != 40 + plen:
            raise ValueError("bad IPv6 lengths")
        return Packet(vh, 6, pkt[8:24], pkt[24:40], pkt[6], pkt[7], pkt[:40], pkt[40:])
    raise ValueError("bad IP version")


def l4_csum_ok(p: Packet) -> bool:
    """Whether the transport checksum of a parsed packet verifies."""
    init = 0
    if p.version == 6 or p.proto in (PROTO_TCP, PROTO_UDP):
        init = _l4_pseudo(p.src, p.dst, p.proto, len(p.payload))
    return csum_partial(p.payload, init) == 0xFFFF


def complete_csum(frm: bytes) -> bytes:
    """The frame as the namespace's kernel sees it: a NEEDS_CSUM partial checksum (the
    field holds the pseudo-header sum) completed over csum_start.., flags cleared."""
    flags, _, _, _, start, offset, _ = struct.unpack("<BBHHHHH", frm[:VNET_HDR_LEN])
    if not flags & VNET_F_NEEDS_CSUM:
        return frm
    start += VNET_HDR_LEN
    c = csum(frm[start:])
    out = bytearray(frm)
    out[start + offset:start + offset + 2] = struct.pack("!H", c)
    out[0] &= ~VNET_F_NEEDS_CSUM
    return bytes(out)
