"""Egress rules: the spec parser, the rule set of a Network, its shared memory, the worker side.

A rule is ``allow SPEC`` or ``deny SPEC``; ``SPEC`` is::

    [tcp:|udp:|icmp:]TARGET[:PORT[-PORT]]

    TARGET  an IPv4 or IPv6 address or network in CIDR form (10.0.0.0/8, 2001:db8::/32),
            or a host name (pypi.org), or "*." and a domain (*.example.org: every name
            strictly below example.org, not example.org itself).
            An IPv6 TARGET followed by ports goes in brackets: [2001:db8::/32]:443 or
            tcp:[::1]/128:80 (the prefix inside or after the brackets); without ports
            the brackets may be left out.

``NetworkConfig(rules=["allow tcp:pypi.org:443", "deny 10.0.0.0/8"], default_deny=...)``,
``ringnet run --allow SPEC --deny SPEC [--default-deny]`` (in the order given),
``net.rules.add(...)`` / ``.remove(...)`` / ``.list()`` and ``ringnet rules ID add|rm|ls``
all take these. The first rule that matches a new flow decides; with no match, the flow
is allowed unless ``default_deny`` (flows to the DNS forwarder are never refused by the
default: name rules need it). The built-in protections (csrc/policy.c) apply first.
A refused TCP connection gets a RST, a refused UDP or ICMP echo flow an ICMP
administratively prohibited (type 3 code 13; ICMPv6 type 1 code 1).

A name rule matches a connection to an address only if a name it covers resolved to that
address through ringnet's DNS forwarder, within the record's TTL (csrc/names.c: every
worker maps one table in the rules memfd, so the worker that sees the DNS answer and the
one that owns the connection agree without a message between them).

Where the rules live: ``RuleSet`` (``Network.rules``) keeps them in the orchestrator,
encodes them as an array of ``struct rn_rule_spec`` (csrc/rules.h) in a memfd, and hands
it to every worker: in its start-up spec (so the rules hold before the namespace can
send anything) and in a RULES message on each change, answered ACK or ERROR. Each worker
compiles its own copy (csrc/rules.c). Each rule has a slot, stable while it exists, that
indexes the hit counters each worker keeps in its row of the rules memfd; the
orchestrator maps that memfd read-only and sums the rows (a slot reused by a new rule
starts from the sum its old rule left, kept as a base).
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import logging
import mmap
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from . import _control
from ._control import Msg
from .errors import ConfigError, ProtocolError, RingnetError

if TYPE_CHECKING:
    from .network import Network

__all__ = ["Rule", "RuleSet", "parse_rule", "parse_target", "SPEC_FORM", "RULES_MAX",
           "RulesShm", "encode", "worker_attach", "worker_rules"]

log = logging.getLogger(__name__)

SPEC_FORM = "[tcp:|udp:|icmp:]TARGET[:PORT[-PORT]]"
RULE_FORM = f"allow|deny {SPEC_FORM}"
RULES_MAX = 16384          # RN_RULES_MAX (csrc/rules.h; a test keeps them equal)
NAME_MAX = 253             # RN_NAME_MAX
PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
ACTIONS = ("allow", "deny")
REPLY_TIMEOUT = 10.0
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_SHM_HDR = 64              # RN_RULES_SHM_HDR

IPNet = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One egress rule. ``target`` is an IP network or a host name ("*.example.org" for
    the names below example.org); ``proto`` is None (any), "tcp", "udp" or "icmp";
    ``ports`` is (first, last) or None (any). ``str(rule)`` is its canonical text."""

    action: str
    target: Union[IPNet, str]
    proto: Optional[str] = None
    ports: Optional[tuple[int, int]] = None

    @property
    def spec(self) -> str:
        """The rule's SPEC, in canonical form."""
        if isinstance(self.target, str):
            t = self.target
        elif self.target.version == 6 and self.ports:
            t = f"[{self.target.network_address}]/{self.target.prefixlen}"
        else:
            t = str(self.target)
        if self.ports:
            lo, hi = self.ports
            t += f":{lo}" if lo == hi else f":{lo}-{hi}"
        return f"{self.proto}:{t}" if self.proto else t

    def __str__(self) -> str:
        return f"{self.action} {self.spec}"


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"rule spec {spec!r}: {why}; the form is {SPEC_FORM}")


def _ports(spec: str, text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    out = []
    for p in (first, last) if sep else (first,):
        if not p.isdigit() or not 1 <= int(p) <= 65535:
            raise _bad(spec, f"port {p!r} is not a port number (1..65535)")
        out.append(int(p))
    if len(out) == 2 and out[1] < out[0]:
        raise _bad(spec, f"port range {text} ends before it starts")
    return (out[0], out[-1])


def _network(spec: str, text: str) -> IPNet:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            net = ipaddress.ip_network(text, strict=False)
            raise _bad(spec, f"{text} has bits set past its prefix (the network is {net})") from None
        raise _bad(spec, f"{text!r} is not an IP address or network: {e}") from None


def _name(spec: str, text: str) -> str:
    name = text.lower().rstrip(".") if text != "." else ""
    body = name[2:] if name.startswith("*.") else name
    if not body or len(body) > NAME_MAX:
        raise _bad(spec, f"host name {text!r} is empty or longer than {NAME_MAX} characters")
    labels = body.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise _bad(spec, f"host name {text!r} has a bad label {label!r} (letters, digits, "
                             "'-' and '_', 1 to 63 characters; '*' only as '*.' in front)")
    if all(c.isdigit() or c in "./" for c in body):
        raise _bad(spec, f"{text!r} is neither an IP address or network nor a host name")
    return name


def parse_target(spec: str, action: str = "allow") -> Rule:
    """Parse ``SPEC`` (``[tcp:|udp:|icmp:]TARGET[:PORT[-PORT]]``) into a Rule with ``action``.
    Raises ConfigError naming the spec and what is wrong."""
    if not isinstance(spec, str):
        raise ConfigError(f"rule spec {spec!r} is not a string of the form {SPEC_FORM}")
    s = spec.strip()
    if not s:
        raise ConfigError(f"rule spec is empty: expected {SPEC_FORM}")
    proto = None
    head, sep, rest = s.partition(":")
    if sep and head.lower() in PROTOS:
        proto, s = head.lower(), rest
    ports_text: Optional[str] = None
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise _bad(spec, "'[' without ']' around the IPv6 address")
        target, after = s[1:close], s[close + 1:]
        if after.startswith("/"):  # [ADDR]/PLEN
            plen, colon, ports = after[1:].partition(":")
            target, after = f"{target}/{plen}", colon + ports
        if after:
            if not after.startswith(":"):
                raise _bad(spec, f"expected ':PORT' after ']', got {after!r}")
            ports_text = after[1:]
        if ":" not in target:
            raise _bad(spec, f"brackets hold IPv6 addresses only, not {target!r}")
        net: Union[IPNet, str] = _network(spec, target)
    elif s.count(":") >= 2:
        net = _network(spec, s)  # IPv6 without ports
    else:
        target, sep, ports = s.partition(":")
        if sep:
            ports_text = ports
        if target and (target[0].isdigit() and all(c.isdigit() or c in "./" for c in target)):
            net = _network(spec, target)
        else:
            net = _name(spec, target)
    port_range = _ports(spec, ports_text) if ports_text is not None else None
    if port_range and proto == "icmp":
        raise _bad(spec, "icmp has no ports")
    return Rule(action=action, target=net, proto=proto, ports=port_range)


def parse_rule(rule: Union[str, Rule]) -> Rule:
    """A Rule from ``"allow SPEC"`` / ``"deny SPEC"`` (or a Rule, returned as it is).
    Raises ConfigError naming the rule."""
    if isinstance(rule, Rule):
        if rule.action not in ACTIONS:
            raise ConfigError(f"rule action {rule.action!r} is neither allow nor deny")
        return parse_target(rule.spec, rule.action)
    if not isinstance(rule, str):
        raise ConfigError(f"rule {rule!r} is not a string of the form {RULE_FORM}")
    action, _, spec = rule.strip().partition(" ")
    if action.lower() not in ACTIONS:
        raise ConfigError(f"rule {rule!r} must start with allow or deny; the form is {RULE_FORM}")
    return parse_target(spec.strip(), action.lower())


def check_rules(rules: Sequence[Union[str, Rule]]) -> tuple[Rule, ...]:
    """Parse every rule of a configuration; ConfigError for a bad one, a duplicate, or
    more than RULES_MAX."""
    out = tuple(parse_rule(r) for r in rules)
    if len(out) > RULES_MAX:
        raise ConfigError(f"rules: {len(out)} rules, at most {RULES_MAX}")
    seen = set()
    for r in out:
        if r in seen:
            raise ConfigError(f"rules: {str(r)!r} is given twice")
        seen.add(r)
    return out


# The C side ----------------------------------------------------------------------------


def encode(rules: Sequence[tuple[Rule, int]], default_deny: bool) -> bytes:
    """The rule set as csrc/rules.h's struct rn_rules_blob and its struct rn_rule_spec
    array: ``rules`` are (rule, slot) pairs in order of precedence."""
    from ._core import ffi, lib

    hdr = ffi.new("struct rn_rules_blob *")
    hdr.magic = lib.RN_RULES_MAGIC
    hdr.version = lib.RN_RULES_VERSION
    hdr.count = len(rules)
    hdr.default_deny = int(default_deny)
    arr = ffi.new("struct rn_rule_spec[]", max(1, len(rules)))
    for s, (rule, slot) in zip(arr, rules):
        s.slot = slot
        s.action = lib.RN_RULE_ALLOW if rule.action == "allow" else lib.RN_RULE_DENY
        s.proto = PROTOS[rule.proto] if rule.proto else 0
        if rule.ports:
            s.port_lo, s.port_hi = rule.ports
        if isinstance(rule.target, str):
            wild = rule.target.startswith("*.")
            name = (rule.target[2:] if wild else rule.target).encode()
            s.family = 0
            s.wild = int(wild)
            s.name_len = len(name)
            ffi.memmove(s.name, name, len(name))
        else:
            s.family = rule.target.version
            s.plen = rule.target.prefixlen
            packed = rule.target.network_address.packed
            ffi.memmove(s.addr, packed, len(packed))
    return bytes(ffi.buffer(hdr)) + bytes(ffi.buffer(arr, ffi.sizeof("struct rn_rule_spec") * len(rules)))


def _blob_memfd(blob: bytes) -> int:
    """A memfd holding ``blob`` (sealed: workers map it)."""
    fd = os.memfd_create("ringnet-ruleset", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.pwrite(fd, blob, 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW |
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


class RulesShm:
    """The rules memfd (csrc/rules.h, struct rn_rules_shm): the DNS name table every worker
    reads and writes, and one row of hit counters per worker. The orchestrator creates it
    and maps it read-only; each worker maps it read-write (``adopt``)."""

    def __init__(self, fd: int, mm: mmap.mmap, nworkers: int, writable: bool) -> None:
        from ._core import ffi

        self.fd = fd
        self.nworkers = nworkers
        self._mm: Optional[mmap.mmap] = mm
        self._buf = ffi.from_buffer(mm)
        self.ptr = ffi.cast("void *", self._buf)
        self.size = len(mm)
        self.writable = writable

    @staticmethod
    def _size(nworkers: int) -> int:
        from ._core import lib

        return int(lib.rn_rules_shm_size(nworkers))

    @classmethod
    def create(cls, nworkers: int) -> "RulesShm":
        """Orchestrator: a new zeroed, sealed rules memfd with its header, mapped read-only."""
        from ._core import lib
        from ._shm import REQUIRED_SEALS

        size = cls._size(nworkers)
        fd = os.memfd_create("ringnet-rules", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS)
            with mmap.mmap(fd, _SHM_HDR, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as hdr:
                from ._core import ffi

                buf = ffi.from_buffer(hdr)
                lib.rn_rules_shm_init(ffi.cast("void *", buf), nworkers)
                ffi.release(buf)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mm, nworkers, writable=False)

    @classmethod
    def adopt(cls, fd: int, nworkers: int) -> "RulesShm":
        """Worker: map the rules memfd read-write after checking its seals and size. Takes
        ownership of ``fd``."""
        from ._shm import _check_sealed

        try:
            _check_sealed(fd, "rules")
            size = cls._size(nworkers)
            if os.fstat(fd).st_size != size:
                raise ProtocolError("rules memfd has the wrong size")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mm, nworkers, writable=True)

    def hits(self) -> "Any":
        """Hit counters of every slot, summed over the workers (numpy uint64 array)."""
        import numpy as np
        from ._core import lib

        assert self._mm is not None
        off = _SHM_HDR + lib.RN_NAMES_SLOTS * self._slot_size()
        rows = np.frombuffer(self._mm, dtype=np.uint64, offset=off,
                             count=self.nworkers * lib.RN_RULES_MAX)
        return rows.reshape(self.nworkers, lib.RN_RULES_MAX).sum(axis=0, dtype=np.uint64)

    @staticmethod
    def _slot_size() -> int:
        from ._core import ffi

        return int(ffi.sizeof("struct rn_name_slot"))

    def names(self) -> list[dict[str, Any]]:
        """The (name, address) pairs ringnet's DNS forwarder handed out that have not
        expired: [{"name", "address", "expires_in"}], by name."""
        from ._core import ffi, lib

        slots = ffi.cast("struct rn_name_slot *", ffi.cast("char *", self.ptr) + _SHM_HDR)
        now_ms = time.monotonic() * 1000
        out = []
        for i in range(lib.RN_NAMES_SLOTS):
            s = slots[i]
            seq, exp = s.seq, s.expires
            if seq & 1 or not exp or exp <= now_ms or s.family not in (4, 6):
                continue
            n = min(s.len, NAME_MAX)
            name = bytes(ffi.buffer(s.name, n)).decode("ascii", "replace")
            addr = ipaddress.ip_address(bytes(s.addr)[: 4 if s.family == 4 else 16])
            if s.seq != seq:
                continue
            out.append({"name": name, "address": str(addr),
                        "expires_in": round((exp - now_ms) / 1000, 1)})
        return sorted(out, key=lambda e: (e["name"], e["address"]))

    def close(self) -> None:
        from ._core import ffi

        if self._mm is None:
            return
        ffi.release(self._buf)
        self._mm.close()
        self._mm = None
        os.close(self.fd)


def worker_attach(worker: Any, spec: dict, nworkers: int) -> RulesShm:
    """In a worker at start: map the rules memfd and load the initial rule set (both fds
    from the start-up spec; the rule set's is closed here)."""
    from ._core import check, lib

    shm = RulesShm.adopt(spec["rules_shm_fd"], nworkers)
    try:
        check(lib.rn_rules_attach(worker, shm.ptr, shm.size), "rn_rules_attach")
        check(lib.rn_rules_load_fd(worker, spec["rules_fd"], spec["rules_len"]), "rn_rules_load_fd")
    except BaseException:
        shm.close()
        raise
    finally:
        os.close(spec["rules_fd"])
    return shm


def worker_rules(worker: Any, ctl: Any, msg: _control.Message) -> None:
    """RULES from the orchestrator, in a worker: load the set from the memfd it carries and
    answer ACK, or ERROR (the worker goes on with its old set)."""
    from ._core import check, lib

    try:
        if len(msg.fds) != 1:
            raise ProtocolError(f"RULES carries {len(msg.fds)} fds, expected 1")
        size = _control.body_field(msg, "size", int)
        check(lib.rn_rules_load_fd(worker, msg.fds[0], size), "rn_rules_load_fd")
    except (RingnetError, OSError) as e:
        _control.send_error(ctl, e, None, "rules")  # type: ignore[arg-type]
        return
    finally:
        msg.close_fds()
    _control.send(ctl, Msg.ACK)


# The orchestrator's rule set -------------------------------------------------------------


class RuleSet:
    """The egress rules of a Network (``net.rules``): ordered, first match wins.

    ``add(rule, index=None)`` inserts ``"allow SPEC"`` / ``"deny SPEC"`` (or a Rule) at
    ``index`` (default: the end), ``remove(rule)`` takes one out, ``list()`` gives every
    rule with its hits, ``names()`` the names ringnet's DNS has handed out. Changes reach
    every worker before the call returns; flows already open stay open."""

    def __init__(self, net: "Network") -> None:
        self._net = net
        self._lock = threading.Lock()
        self._rules: list[tuple[Rule, int]] = []
        self._free = list(range(RULES_MAX - 1, -1, -1))
        self._base: dict[int, int] = {}
        self._default_deny = False
        self._shm: Optional[RulesShm] = None

    # start and end, called by Network
    def start_fds(self) -> None:
        """Create the rules memfd and the initial set from the configuration (before the
        workers start; each gets its fds from ``worker_fds()``)."""
        cfg = self._net.config
        self._default_deny = cfg.default_deny
        self._rules = []
        self._free = list(range(RULES_MAX - 1, -1, -1))
        for r in check_rules(cfg.rules):
            self._rules.append((r, self._free.pop()))
        self._shm = RulesShm.create(cfg.workers)

    def worker_fds(self) -> tuple[int, int, int]:
        """(rules memfd, a new memfd of the current set, its length) for a worker's start-up
        spec: at the network's start, and for a worker replaced later (_supervise.py), which
        so starts with the rules as they are now. The caller closes the set's memfd once
        the worker is started."""
        assert self._shm is not None
        blob = encode(list(self._rules), self._default_deny)
        return self._shm.fd, _blob_memfd(blob), len(blob)

    def close(self) -> None:
        """Unmap the rules memfd (at the network's end)."""
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    # the API
    @property
    def default_deny(self) -> bool:
        """Whether flows no rule matches are refused."""
        return self._default_deny

    def __iter__(self) -> Iterator[Rule]:
        return iter([r for r, _ in self._rules])

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: Union[str, Rule], index: Optional[int] = None) -> Rule:
        """Insert ``rule`` (``"allow SPEC"``, ``"deny SPEC"`` or a Rule) before position
        ``index`` (None: last). Returns the parsed Rule. ConfigError for a bad rule, one
        already present, a bad index or a full set."""
        r = parse_rule(rule)
        with self._lock:
            if any(r == x for x, _ in self._rules):
                raise ConfigError(f"rule {str(r)!r} is already present")
            if not self._free:
                raise ConfigError(f"rules: at most {RULES_MAX}")
            n = len(self._rules)
            if index is None:
                index = n
            if isinstance(index, bool) or not isinstance(index, int) or not -n <= index <= n:
                raise ConfigError(f"rule index {index!r} out of range (0..{n})")
            slot = self._free[-1]
            # the slot's count so far is a removed rule's, final: the new rule starts there
            base = self._raw_hits()[slot]
            new = list(self._rules)
            new.insert(index if index >= 0 else n + index, (r, slot))
            self._apply(new, self._default_deny)
            self._free.pop()
            self._base[slot] = base
            self._rules = new
        log.info("rule added: %s", r)
        return r

    def remove(self, rule: Union[str, Rule, int]) -> Rule:
        """Remove ``rule`` (its text, a Rule, or its position in list()). Returns it.
        ConfigError if there is no such rule."""
        with self._lock:
            if isinstance(rule, int) and not isinstance(rule, bool):
                if not 0 <= rule < len(self._rules):
                    raise ConfigError(f"no rule at index {rule} (0..{len(self._rules) - 1})")
                pos = rule
            else:
                r = parse_rule(rule)
                pos = next((i for i, (x, _) in enumerate(self._rules) if x == r), -1)
                if pos < 0:
                    raise ConfigError(f"no rule {str(r)!r} to remove")
            new = list(self._rules)
            gone, slot = new.pop(pos)
            self._apply(new, self._default_deny)
            self._rules = new
            self._free.append(slot)
        log.info("rule removed: %s", gone)
        return gone

    def set_default(self, deny: bool) -> None:
        """Refuse (True) or allow (False) flows no rule matches."""
        if not isinstance(deny, bool):
            raise ConfigError(f"default_deny={deny!r} must be True or False")
        with self._lock:
            self._apply(self._rules, deny)
            self._default_deny = deny

    def list(self) -> list[dict[str, Any]]:
        """Every rule in order: [{"index", "rule" (its text), "hits"}]; hits are the new
        flows it decided since it was added, over every worker."""
        with self._lock:
            raw = self._raw_hits()
            return [{"index": i, "rule": str(r), "hits": raw[slot] - self._base.get(slot, 0)}
                    for i, (r, slot) in enumerate(self._rules)]

    def names(self) -> list[dict[str, Any]]:
        """The (name, address) pairs ringnet's DNS forwarder handed out that have not
        expired: what name rules match against."""
        self._net._require_running()
        assert self._shm is not None
        return self._shm.names()

    def slot_rule(self, slot: int) -> Optional[Rule]:
        """The rule now holding hit slot ``slot`` (struct rn_flow.rule - 1), or None."""
        return next((r for r, s in self._rules if s == slot), None)

    def name_of(self, family: int, addr: bytes) -> Optional[str]:
        """A name ringnet's DNS forwarder handed out ``addr`` (packed, IPv``family``) for,
        not expired, or None: for the flow log (_flowlog.py)."""
        from ._core import ffi, lib

        shm = self._shm
        if shm is None or shm._mm is None:
            return None
        tab = ffi.cast("struct rn_name_slot *", ffi.cast("char *", shm.ptr) + _SHM_HDR)
        hit = ffi.new("struct rn_name_hit[1]")
        key = bytes.fromhex(self._net._hash_key)
        packed = addr + bytes(16 - len(addr))
        if lib.rn_names_lookup(tab, int(time.monotonic() * 1000), key, family, packed, hit, 1) < 1:
            return None
        return bytes(ffi.buffer(hit[0].name, min(hit[0].len, NAME_MAX))).decode("ascii", "replace")

    # internals
    def _raw_hits(self) -> list[int]:
        """Every slot's hits summed over the workers, since the network started."""
        if self._shm is None:
            return [0] * RULES_MAX
        return [int(v) for v in self._shm.hits().tolist()]

    def _apply(self, rules: list[tuple[Rule, int]], default_deny: bool) -> None:
        """Hand a new set to every worker and wait for each ACK. If a worker refuses it,
        the workers that took it get the current set back (best effort) and the error is
        raised: the rules stay as they were."""
        net = self._net
        if net.state.value != "running":
            raise RingnetError(f"network is {net.state.value}, not running")
        done = []
        try:
            for child in self._send(net._workers(), rules, default_deny):
                done.append(child)
        except (RingnetError, OSError):
            try:
                for _ in self._send(done, self._rules, self._default_deny):
                    pass
            except (RingnetError, OSError) as e:
                log.error("rules: a worker kept a set it should not have: %s", e)
            raise

    def _send(self, workers: list, rules: list[tuple[Rule, int]],
              default_deny: bool) -> Iterator[Any]:
        """Send a set to each of ``workers`` in turn, yielding each once it acknowledged."""
        net = self._net
        blob = encode(rules, default_deny)
        fd = _blob_memfd(blob)
        try:
            for child in workers:
                with net._query_lock:
                    _control.send(child.ctl, Msg.RULES, {"size": len(blob)}, [fd])
                    _control.expect(child.ctl, Msg.ACK, REPLY_TIMEOUT, child.name)
                yield child
        finally:
            os.close(fd)

    def control(self, args: dict) -> Any:
        """The control socket's "rules" command: {"op": "ls"} lists, {"op": "add",
        "rule": TEXT, "index": N?} and {"op": "rm", "rule": TEXT or index} change,
        {"op": "names"} lists learnt names, {"op": "default", "deny": bool}."""
        op = args.get("op", "ls")
        if op == "ls":
            return {"default_deny": self._default_deny, "rules": self.list()}
        if op == "add":
            return str(self.add(args.get("rule"), args.get("index")))  # type: ignore[arg-type]
        if op == "rm":
            return str(self.remove(args.get("rule")))  # type: ignore[arg-type]
        if op == "names":
            return self.names()
        if op == "default":
            self.set_default(args.get("deny"))  # type: ignore[arg-type]
            return self._default_deny
        raise ValueError(f"rules: unknown operation {op!r} (add, rm, ls, names, default)")
