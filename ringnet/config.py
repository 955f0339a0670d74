"""NetworkConfig: every knob of a ringnet network, validated when it is created.

Defaults follow slirp4netns so users feel at home: 10.0.2.0/24 with the guest at
.100, the gateway at .2 and DNS at .3; fd00::/64 with ::100, ::2 and ::3.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any, Callable, Optional, Union

from ._apisock import check_path as check_api_socket
from ._netem import check_config as _check_netem
from ._hook import check_options as check_hook_options
from ._publish import parse_spec
from ._rules import check_rules
from ._resolv import MAX_UPSTREAMS, parse_upstream
from ._sysctl import normalize as _sysctls
from .errors import ConfigError

__all__ = ["NetworkConfig", "default_workers", "MTU_MIN", "MTU_MAX"]

MTU_MIN = 1280          # IPv6 minimum link MTU
MTU_MAX = 65520         # largest MTU tun accepts with a 16-bit IP length and headroom
WORKERS_MAX = 64
RING_SIZE_MIN = 512 * 1024  # a ring must hold four of the largest frames (64 KiB + headers)
RING_SIZE_MAX = 256 * 1024 * 1024
IFNAMSIZ = 16
COALESCE_US_DEFAULT = 200   # see csrc/moderate.h
COALESCE_US_MAX = 1000      # RN_MOD_NAP_MAX_US
BUSY_POLL_US_DEFAULT = 200  # see csrc/busypoll.h
BUSY_POLL_US_MAX = 1000     # RN_BPOLL_MAX_US
UDP_PORTS_DEFAULT = 8192     # host UDP ports for all workers: well below the 28,232 ephemeral ones
UDP_PORTS_MIN = 16
UDP_PORTS_MAX = 16384
PCAP_SNAPLEN_MIN = 64       # RN_CAP_SNAPLEN_MIN (csrc/capture.h)
PCAP_SNAPLEN_MAX = 65575    # RN_CAP_SNAPLEN_MAX: the largest IP packet a frame carries

_V4_RESERVED = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4",
                                                   "240.0.0.0/4")]
_V6_RESERVED = [ipaddress.ip_network(n) for n in ("::/127", "fe80::/10", "ff00::/8",
                                                   "::ffff:0:0/96")]

# guest, gateway, DNS: .100/.2/.3 and ::100/::2/::3 as slirp4netns places them
_OFFSETS = {4: (100, 2, 3), 6: (0x100, 2, 3)}

IPAddr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def default_workers() -> int:
    """Half the CPUs this process may run on, 1 to 8: each worker pairs with a pump thread,
    and the other half is left to the applications that send the traffic."""
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    return max(1, min(8, ncpu // 2))


def _network(value: str, field: str, version: int) -> Union[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ConfigError(f"{field}={value!r} is not a valid IPv{version} network in CIDR form "
                          f"(for example {'10.0.2.0/24' if version == 4 else 'fd00::/64'}): {e}") from None
    if net.version != version:
        raise ConfigError(f"{field}={value!r} is an IPv{net.version} network; {field} takes IPv{version}")
    return net


def _address(value: Optional[str], field: str, net, default_offset: int) -> IPAddr:
    if value is None:
        if net.num_addresses <= default_offset + 1:
            raise ConfigError(f"{field} has no default in {net} (the default is the network address "
                              f"+ {default_offset}); use a larger network or set {field}")
        return net.network_address + default_offset
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{field}={value!r} is not an IP address") from None
    if addr not in net:
        raise ConfigError(f"{field}={addr} is outside its network {net}")
    if addr == net.network_address or (net.version == 4 and addr == net.broadcast_address):
        raise ConfigError(f"{field}={addr} is the network or broadcast address of {net}")
    return addr


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Configuration of one ringnet network.

    Attributes:
        mtu: MTU of the namespace's interface, 1280..65520.
        workers: host stack worker processes (one tun queue each), 1..64; None picks
            default_workers().
        cidr4: the namespace's IPv4 network.
        guest4, gateway4, dns4: the namespace's address, the gateway and the DNS
            address in cidr4; None means network + 100, + 2 and + 3.
        ipv6: also configure IPv6.
        cidr6, guest6, gateway6, dns6: the same for IPv6 (defaults ::100, ::2, ::3).
        ifname: name of the tun interface inside the namespace.
        configure_interface: give the interface its addresses, routes and MTU and bring it
            up; False leaves it down and bare for the caller (slirp4netns without -c).
        ring_size: bytes of each ring's data area, a power of two, 512 KiB..256 MiB.
        allow_host_loopback: map the gateway addresses to host loopback (127.0.0.1, ::1).
        allow_host: let the namespace reach the host's own (non-loopback) addresses,
            where servers listening on 0.0.0.0 answer; off by default.
        allow_link_local: let the namespace reach 169.254.0.0/16 and fe80::/10 (cloud
            metadata services live there); off by default.
        udp_ports: host UDP ports (sockets) the whole network may hold, 16..16384, shared
            equally by the workers; one per namespace source address and port
            (endpoint-independent mapping), well below the host's ephemeral range so that
            the namespace cannot starve the host's own UDP and DNS.
        idmap_helpers: map a uid/gid range with newuidmap/newgidmap instead of mapping
            only the caller's ids; needs the shadow tools and /etc/subuid entries.
        startup_timeout: seconds to wait for the namespace child and workers to start.
        max_flows: flows (TCP, UDP, ICMP together) each worker may hold, 16..1048576; at
            the cap new flows are refused and established ones keep working.
        tcp_idle_timeout: seconds an established TCP flow may stay idle, 10..604800.
        tcp_fin_timeout: seconds a closing TCP flow may take to finish, 1..3600.
        udp_timeout: seconds a UDP flow may stay idle, 1..86400 (pasta's 180 by default).
        coalesce_us: wake-up moderation, 0..1000 microseconds: during a stream of small
            packets (UDP at high rates) a worker or pump thread naps this long instead of
            sleeping until the next packet wakes it, so that it serves the stream in
            batches; a packet may then wait up to this long. Request/response traffic and
            TCP's 64 KiB frames are left alone. 0 turns moderation off.
        busy_poll_us: adaptive busy polling, 0..1000 microseconds: a worker or pump thread
            that runs out of work during request/response traffic looks again for up to
            this long (yielding the CPU between looks) before it sleeps, so that the next
            request or answer does not pay for waking it (and its CPU) up. The window is
            learnt per thread and falls to 0 when traffic pauses (csrc/busypoll.h). 0 turns
            busy polling off.
        dns_upstream: resolvers the DNS addresses forward to, each "ADDR[:PORT]" or
            "[V6ADDR]:PORT" (at most 3); None reads the host's /etc/resolv.conf, and
            again whenever it changes.
        resolv_conf: give commands started by spawn()/run() a private mount namespace
            in which /etc/resolv.conf names the DNS addresses (not for attach(), where
            the container runtime owns resolv.conf).
        pid_namespace: run each command started by spawn()/run() in a PID namespace of
            its own with its own /proc, under an init that ends everything inside when
            the command or this process exits; False shows it the host's processes.
        control_socket: serve info and stats to other processes of the same user on a
            Unix socket (``ringnet ls``, ``ringnet stats``, ``ringnet top``).
        control_dir: directory of that socket; None is $XDG_RUNTIME_DIR/ringnet or
            /tmp/ringnet-<uid>.
        sandbox: the namespace child and the workers isolate themselves once set up
            (own mount namespace with an empty root, no capabilities, not dumpable,
            seccomp allow-list; see _sandbox.py); False leaves them ordinary processes.
        faults: test-only fault injection on the ring path, "drop=F,dup=F,reorder=F,seed=N"
            with fractions F in 0..0.5; None (the default) injects nothing.
        publish: host ports to forward into the namespace once it is up, each
            "[ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp]" (Network.publish()).
        flow_log: append a JSON line for every flow opened and closed to this file
            (ringnet/_flowlog.py lists the fields); None: no flow log.
        pcap: capture the namespace's frames into this pcapng file from the start
            (Network.capture() starts one later); None: no capture.
        pcap_snaplen: bytes of each packet the capture keeps, 64..65575 (all of it).
        api_socket: path of a unix socket serving slirp4netns's JSON API (add_hostfwd,
            list_hostfwd, remove_hostfwd; _apisock.py) while the network runs; None: none.
        rules: egress rules, first match wins, each "allow SPEC" or "deny SPEC" with SPEC
            "[tcp:|udp:|icmp:]TARGET[:PORT[-PORT]]", TARGET a CIDR ([V6]/N before ports),
            a host name or "*.domain" (ringnet/_rules.py; Network.rules changes them at
            runtime); kept in canonical text form.
        default_deny: refuse new flows no rule matches (the DNS forwarder excepted).
        netem: network emulation in both directions, "delay=20ms jitter=5ms loss=1%
            dup=0.1% reorder=1% rate=100mbit limit=1000 seed=N" (any of them; spaces or
            commas between; _netem.py); None or "off": none. Network.netem() changes it.
        netem_up, netem_down: the same for one direction (up: namespace -> world),
            taking precedence over netem for it.
        splice_local: forwarded TCP connections of clients on host loopback are relayed
            socket to socket with splice() (a socket made inside the namespace, connected
            to the namespace's loopback: it sees them from there); False sends them
            through the C core too (seen from the gateway address).
        on_connect: called in this process with a ringnet.Flow for every new flow from
            the namespace (not per packet; not for DNS to the DNS address), returns
            ringnet.ALLOW, ringnet.DENY or ringnet.Redirect(addr, port); the flow waits
            for it. Runs after the built-in destination policy; None: no hook (_hook.py).
        on_connect_timeout: seconds the hook may take (0 < t <= 60); later, or raising,
            it gets the fail mode.
        on_connect_cache: seconds a worker keeps a verdict per (protocol, destination,
            port) and decides later flows to it without asking; 0 (default) asks for
            every flow.
        on_connect_fail: "deny" (default) or "allow": the verdict of a hook that raises,
            times out or returns something else, and of flows beyond the bound of flows
            held waiting (64 per worker).
        sysctls: network sysctls to set inside the namespace once its interface is up, each
            "KEY=VALUE" with KEY a net.* sysctl (net.ipv4.tcp_tw_reuse=1); a mapping
            {KEY: VALUE} is taken too. Applied in order; a key the namespace's kernel lacks
            or will not let it write fails the start (_sysctl.py).
        max_restarts: workers that exit (a crash, SIGKILL) are replaced with new rings,
            at most this many times within 60 s, 0..100; beyond that, or with 0, a
            worker's exit fails the network (_supervise.py).
    """

    mtu: int = MTU_MAX
    workers: Optional[int] = None
    cidr4: str = "10.0.2.0/24"
    guest4: Optional[str] = None
    gateway4: Optional[str] = None
    dns4: Optional[str] = None
    ipv6: bool = True
    cidr6: str = "fd00::/64"
    guest6: Optional[str] = None
    gateway6: Optional[str] = None
    dns6: Optional[str] = None
    ifname: str = "rn0"
    configure_interface: bool = True
    ring_size: int = 4 * 1024 * 1024
    allow_host_loopback: bool = False
    allow_host: bool = False  # policy: the host's own addresses
    allow_link_local: bool = False  # policy: 169.254.0.0/16, fe80::/10
    idmap_helpers: bool = False
    startup_timeout: float = 30.0
    max_flows: int = 16384
    udp_ports: int = UDP_PORTS_DEFAULT  # host UDP port budget, all workers
    tcp_idle_timeout: int = 7200
    tcp_fin_timeout: int = 60
    udp_timeout: int = 180
    coalesce_us: int = COALESCE_US_DEFAULT
    busy_poll_us: int = BUSY_POLL_US_DEFAULT
    dns_upstream: Optional[tuple[str, ...]] = None
    resolv_conf: bool = True
    pid_namespace: bool = True
    faults: Optional[str] = None
    sandbox: bool = True
    control_socket: bool = True
    control_dir: Optional[str] = None
    publish: tuple[str, ...] = ()
    sysctls: tuple[str, ...] = ()
    max_restarts: int = 5
    flow_log: Optional[str] = None
    pcap: Optional[str] = None
    pcap_snaplen: int = PCAP_SNAPLEN_MAX
    api_socket: Optional[str] = None
    rules: tuple[str, ...] = ()
    default_deny: bool = False
    netem: Optional[str] = None
    netem_up: Optional[str] = None
    netem_down: Optional[str] = None
    splice_local: bool = True
    on_connect: Optional[Callable[..., Any]] = None   # ringnet.Flow -> verdict (_hook.py)
    on_connect_timeout: float = 1.0
    on_connect_cache: float = 0.0
    on_connect_fail: str = "deny"

    def __post_init__(self) -> None:
        _int_in_range("mtu", self.mtu, MTU_MIN, MTU_MAX)
        if self.workers is None:
            object.__setattr__(self, "workers", default_workers())
        _int_in_range("workers", self.workers, 1, WORKERS_MAX)
        _int_in_range("ring_size", self.ring_size, RING_SIZE_MIN, RING_SIZE_MAX)
        if self.ring_size & (self.ring_size - 1):
            raise ConfigError(f"ring_size={self.ring_size} must be a power of two "
                              f"between {RING_SIZE_MIN} and {RING_SIZE_MAX}")
        if not isinstance(self.ifname, str) or not 0 < len(self.ifname.encode()) < IFNAMSIZ \
                or "/" in self.ifname or any(c.isspace() for c in self.ifname) \
                or self.ifname in (".", ".."):
            raise ConfigError(f"ifname={self.ifname!r} must be 1 to {IFNAMSIZ - 1} bytes without "
                              "'/' or white space")
        if not isinstance(self.startup_timeout, (int, float)) or not 0 < self.startup_timeout <= 600:
            raise ConfigError(f"startup_timeout={self.startup_timeout!r} must be between 0 and 600 s")
        _int_in_range("max_flows", self.max_flows, 16, 1 << 20)
        # host exposure options
        for name in ("allow_host", "allow_link_local", "splice_local"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        _int_in_range("udp_ports", self.udp_ports, UDP_PORTS_MIN, UDP_PORTS_MAX)
        _int_in_range("tcp_idle_timeout", self.tcp_idle_timeout, 10, 604800)
        _int_in_range("tcp_fin_timeout", self.tcp_fin_timeout, 1, 3600)
        _int_in_range("udp_timeout", self.udp_timeout, 1, 86400)
        _int_in_range("max_restarts", self.max_restarts, 0, 100)
        _int_in_range("coalesce_us", self.coalesce_us, 0, COALESCE_US_MAX)
        _int_in_range("busy_poll_us", self.busy_poll_us, 0, BUSY_POLL_US_MAX)
        if self.dns_upstream is not None:
            if isinstance(self.dns_upstream, str):
                object.__setattr__(self, "dns_upstream", (self.dns_upstream,))
            ups = tuple(self.dns_upstream)
            if not 1 <= len(ups) <= MAX_UPSTREAMS:
                raise ConfigError(f"dns_upstream takes 1 to {MAX_UPSTREAMS} resolvers, got {len(ups)}")
            for u in ups:
                parse_upstream(u)
            object.__setattr__(self, "dns_upstream", ups)
        if self.faults is not None:
            parse_faults(self.faults)
        object.__setattr__(self, "publish", tuple([self.publish] if isinstance(self.publish, str)
                                                  else self.publish))
        for spec in self.publish:
            parse_spec(spec)
        object.__setattr__(self, "sysctls", _sysctls(self.sysctls))
        for name in ("flow_log", "pcap"):  # absolute: the file is opened after start-up
            object.__setattr__(self, name, _file_path(name, getattr(self, name)))
        _int_in_range("pcap_snaplen", self.pcap_snaplen, PCAP_SNAPLEN_MIN, PCAP_SNAPLEN_MAX)
        check_api_socket(self.api_socket)
        rules = [self.rules] if isinstance(self.rules, str) else self.rules
        object.__setattr__(self, "rules", tuple(str(r) for r in check_rules(rules)))
        if not isinstance(self.default_deny, bool):
            raise ConfigError(f"default_deny={self.default_deny!r} must be True or False")
        _check_netem(self)
        check_hook_options(self.on_connect, self.on_connect_timeout, self.on_connect_cache,
                           self.on_connect_fail)
        self._check_family(4, self.cidr4, ("guest4", "gateway4", "dns4"), _V4_RESERVED)
        if self.ipv6:
            self._check_family(6, self.cidr6, ("guest6", "gateway6", "dns6"), _V6_RESERVED)

    def _check_family(self, version: int, cidr: str, fields, reserved) -> None:
        cidr_field = f"cidr{version}"
        net = _network(cidr, cidr_field, version)
        if version == 4 and net.prefixlen > 30:
            raise ConfigError(f"{cidr_field}={cidr} is too small: the prefix must be /30 or shorter")
        if version == 6 and net.prefixlen > 120:
            raise ConfigError(f"{cidr_field}={cidr} is too small: the prefix must be /120 or shorter")
        for r in reserved:
            if net.overlaps(r):
                raise ConfigError(f"{cidr_field}={cidr} overlaps the reserved range {r}; "
                                  "choose a private network")
        offsets = _OFFSETS[version]
        addrs = [_address(getattr(self, f), f, net, off) for f, off in zip(fields, offsets)]
        for i in range(3):
            for j in range(i + 1, 3):
                if addrs[i] == addrs[j]:
                    raise ConfigError(f"{fields[i]} and {fields[j]} are both {addrs[i]}; "
                                      "they must differ")

    # Derived values -----------------------------------------------------------------

    @property
    def network4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr4)

    @property
    def network6(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(self.cidr6)

    def addresses(self) -> dict[str, IPAddr]:
        """The resolved guest, gateway and DNS addresses of both families (IPv6 ones only
        when ipv6 is on)."""
        out: dict[str, IPAddr] = {}
        for f, off in zip(("guest4", "gateway4", "dns4"), _OFFSETS[4]):
            out[f] = _address(getattr(self, f), f, self.network4, off)
        if self.ipv6:
            for f, off in zip(("guest6", "gateway6", "dns6"), _OFFSETS[6]):
                out[f] = _address(getattr(self, f), f, self.network6, off)
        return out

    def txqueuelen(self) -> int:
        """tun tx queue length: enough packets of the MTU to hold the window we advertise
        (the default of 1000 overflows with large windows and a small MTU)."""
        window = 8 * 1024 * 1024
        return max(1000, min(65536, 2 * window // self.mtu))

    def tun_sndbuf(self) -> int:
        """tun socket send buffer: several advertised windows of frames in flight."""
        return 32 * 1024 * 1024


def parse_faults(text: str) -> dict[str, float]:
    """Parse the test-only fault spec "drop=F,dup=F,reorder=F,seed=N"; ConfigError if bad."""
    out = {"drop": 0.0, "dup": 0.0, "reorder": 0.0, "seed": 1}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in out:
            raise ConfigError(f"faults={text!r}: expected drop=F,dup=F,reorder=F,seed=N")
        try:
            num = int(value) if key == "seed" else float(value)
        except ValueError:
            raise ConfigError(f"faults={text!r}: {key} must be a number") from None
        if key != "seed" and not 0.0 <= num <= 0.5:
            raise ConfigError(f"faults={text!r}: {key} must be a fraction from 0 to 0.5")
        if key == "seed" and not 0 <= num < 2**64:
            raise ConfigError(f"faults={text!r}: seed must be from 0 to 2**64-1")
        out[key] = num
    return out


def _file_path(name: str, value) -> Optional[str]:
    """A file ringnet writes (flow log, capture): None, or a path in an existing directory,
    returned absolute."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value) \
            or os.path.isdir(os.fspath(value)):
        raise ConfigError(f"{name}={value!r} must be the path of a file")
    where = os.path.dirname(os.path.abspath(os.fspath(value)))
    if not os.path.isdir(where):
        raise ConfigError(f"{name}={value!r}: directory {where} does not exist")
    return os.path.join(where, os.path.basename(os.fspath(value)))


def _int_in_range(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name}={value!r} is out of range: {name} must be an integer "
                          f"from {lo} to {hi}")
