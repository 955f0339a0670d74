"""Network emulation: the spec parser, the orchestrator's NETEM exchange, the worker's side.

A spec is ``key=value`` pairs separated by spaces or commas, in the words of Linux
netem: ``delay=20ms jitter=5ms loss=1% dup=0.1% reorder=1% rate=100mbit limit=1000
seed=7``; ``off`` (or an empty spec) is no emulation. Every key is optional; a bad key
or value raises ConfigError naming the option, the key and its allowed range.

Directions: "up" is namespace -> world, "down" world -> namespace.
``NetworkConfig(netem=SPEC)`` (``--netem``) sets both; ``netem_up`` / ``netem_down``
(``--netem-up``, ``--netem-down``) set one and take precedence over ``netem`` for it.
At run time ``Network.netem(SPEC, direction)``, the control socket's ``netem`` command
and ``ringnet netem ID [--up|--down] [SPEC]`` send NETEM to every worker, which calls
``rn_netem_set()`` between two passes of its loop and answers ACK or ERROR.

The C side (csrc/netem.c) says where frames wait and how: each worker has a timed queue
and a token bucket per direction, so the figures apply per worker: ``rate=`` is per
worker (with several workers, a single TCP connection is owned by one of them).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from typing import TYPE_CHECKING, Any, Optional

from . import _control
from ._control import Msg
from .errors import ConfigError, ProtocolError, RingnetError

if TYPE_CHECKING:
    from .config import NetworkConfig

__all__ = ["NetemSpec", "parse", "directions", "DIRECTIONS"]

DIRECTIONS = ("up", "down")
DELAY_MAX_NS = 60_000_000_000          # csrc/netem.h RN_NETEM_DELAY_MAX
LIMIT_MAX = 100_000                    # RN_NETEM_LIMIT_MAX
LIMIT_DEFAULT = 1000                   # frames, as Linux netem
RATE_MIN_BPS = 1_000
RATE_MAX_BPS = 100_000_000_000
PPM = 1_000_000
SEED_MAX = 2**64 - 1
REPLY_TIMEOUT = 10.0

_TIME_UNITS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
_KEYS = ("delay", "jitter", "loss", "dup", "reorder", "rate", "limit", "seed")
_ALIASES = {"duplicate": "dup"}
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"


@dataclasses.dataclass(frozen=True)
class NetemSpec:
    """One direction's emulation, in the C core's units (ns, parts per million, bit/s)."""

    delay_ns: int = 0
    jitter_ns: int = 0
    loss_ppm: int = 0
    dup_ppm: int = 0
    reorder_ppm: int = 0
    rate_bps: int = 0
    limit: int = LIMIT_DEFAULT
    seed: Optional[int] = None

    @property
    def off(self) -> bool:
        """True when nothing is emulated (the direct path)."""
        return not (self.delay_ns or self.jitter_ns or self.loss_ppm or self.dup_ppm
                    or self.reorder_ppm or self.rate_bps)

    def __str__(self) -> str:
        """The canonical spec text (parse(str(spec)) == spec)."""
        if self.off:
            return "off"
        parts = []
        if self.delay_ns:
            parts.append(f"delay={_fmt_time(self.delay_ns)}")
        if self.jitter_ns:
            parts.append(f"jitter={_fmt_time(self.jitter_ns)}")
        for key in ("loss", "dup", "reorder"):
            ppm = getattr(self, f"{key}_ppm")
            if ppm:
                parts.append(f"{key}={ppm / 10_000:g}%")
        if self.rate_bps:
            parts.append(f"rate={_fmt_rate(self.rate_bps)}")
        if self.limit != LIMIT_DEFAULT:
            parts.append(f"limit={self.limit}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return " ".join(parts)

    def to_body(self) -> dict[str, int]:
        """The NETEM message's "params" (the seed always set: the orchestrator draws one)."""
        body = dataclasses.asdict(self)
        if body["seed"] is None:
            body["seed"] = int.from_bytes(os.urandom(8), "little")
        return body

    @classmethod
    def from_body(cls, body: Any) -> "NetemSpec":
        """The inverse of to_body(), checked (a worker trusts nothing it is not sure of)."""
        if not isinstance(body, dict) or set(body) != {f.name for f in dataclasses.fields(cls)}:
            raise ProtocolError("NETEM message without valid params")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in body.values()):
            raise ProtocolError("NETEM params must be non-negative integers")
        return cls(**body)


def _fmt_time(ns: int) -> str:
    """A time in ns as the largest whole unit of s, ms, us (else fractional us)."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns / 1000:g}us"


def _fmt_rate(bps: int) -> str:
    """A rate in bit/s as the largest whole unit of gbit, mbit, kbit (else bit)."""
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps % scale == 0:
            return f"{bps // scale}{unit}"
    return f"{bps}bit"


def _bad(field: str, key: str, value: str, why: str) -> ConfigError:
    """The error for one bad key=value: "FIELD: KEY=VALUE WHY" (the CLI renames FIELD)."""
    return ConfigError(f"{field}: {key}={value} {why}")


def _time(field: str, key: str, value: str) -> int:
    """A time with its unit (us, ms, s; a bare 0 too) in ns, 0..60 s."""
    m = re.fullmatch(_NUM + r"(us|ms|s)", value.strip().lower())
    if not m:
        if re.fullmatch(r"0+(\.0*)?", value.strip()):
            return 0
        raise _bad(field, key, value, "must be a time with a unit (us, ms or s), from 0 to 60s")
    ns = round(float(m.group(1)) * _TIME_UNITS[m.group(2)])
    if ns > DELAY_MAX_NS:
        raise _bad(field, key, value, "must be from 0 to 60s")
    return ns


def _percent(field: str, key: str, value: str) -> int:
    """A percentage ("1%", "0.1%") in parts per million, 0..100%."""
    m = re.fullmatch(_NUM + r"%", value.strip())
    if not m:
        raise _bad(field, key, value, "must be a percentage from 0% to 100% (like 1% or 0.1%)")
    ppm = round(float(m.group(1)) * 10_000)
    if ppm > PPM:
        raise _bad(field, key, value, "must be from 0% to 100%")
    if ppm == 0 and float(m.group(1)) > 0:
        raise _bad(field, key, value, "is below the resolution of 0.0001%")
    return ppm


def _rate(field: str, key: str, value: str) -> int:
    """A rate with its unit (bit, kbit, mbit, gbit per second) in bit/s; 0: no limit."""
    m = re.fullmatch(_NUM + r"(bit|kbit|mbit|gbit)", value.strip().lower())
    if not m:
        if re.fullmatch(r"0+", value.strip()):
            return 0
        raise _bad(field, key, value, "must be a rate in bit, kbit, mbit or gbit (per second), "
                   "from 1kbit to 100gbit, or 0 for no limit")
    bps = round(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if not RATE_MIN_BPS <= bps <= RATE_MAX_BPS:
        raise _bad(field, key, value, "must be from 1kbit to 100gbit, or 0 for no limit")
    return bps


def _int(field: str, key: str, value: str, lo: int, hi: int) -> int:
    """A decimal integer in lo..hi."""
    if not re.fullmatch(r"\d+", value.strip()):
        raise _bad(field, key, value, f"must be an integer from {lo} to {hi}")
    n = int(value)
    if not lo <= n <= hi:
        raise _bad(field, key, value, f"must be from {lo} to {hi}")
    return n


def parse(text: Any, field: str = "netem") -> NetemSpec:
    """Parse a netem spec (see the module docstring). ``field`` names the option in
    errors. Raises ConfigError naming the bad key, its value and the allowed range."""
    if isinstance(text, NetemSpec):
        return text
    if not isinstance(text, str):
        raise ConfigError(f"{field}={text!r} must be a string like 'delay=20ms loss=1%'")
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    if not words or words in (["off"], ["none"]):
        return NetemSpec()
    seen: dict[str, str] = {}
    for w in words:
        key, sep, value = w.partition("=")
        key = _ALIASES.get(key.lower(), key.lower())
        if not sep or not value:
            raise ConfigError(f"{field}: {w!r} is not key=value; keys: {', '.join(_KEYS)}")
        if key not in _KEYS:
            raise ConfigError(f"{field}: unknown key {w.partition('=')[0]!r}; keys: {', '.join(_KEYS)}")
        if key in seen:
            raise ConfigError(f"{field}: {key} given twice")
        seen[key] = value
    kw: dict[str, Any] = {}
    for key, value in seen.items():
        if key in ("delay", "jitter"):
            kw[f"{key}_ns"] = _time(field, key, value)
        elif key in ("loss", "dup", "reorder"):
            kw[f"{key}_ppm"] = _percent(field, key, value)
        elif key == "rate":
            kw["rate_bps"] = _rate(field, key, value)
        elif key == "limit":
            kw["limit"] = _int(field, key, value, 1, LIMIT_MAX)
        else:
            kw["seed"] = _int(field, key, value, 0, SEED_MAX)
    return NetemSpec(**kw)


def directions(cfg: "NetworkConfig") -> dict[str, NetemSpec]:
    """The emulation of each direction a configuration asks for: netem for both,
    netem_up / netem_down overriding it for one."""
    both = parse(cfg.netem, "netem") if cfg.netem is not None else NetemSpec()
    out = {}
    for d in DIRECTIONS:
        own = getattr(cfg, f"netem_{d}")
        out[d] = parse(own, f"netem_{d}") if own is not None else both
    return out


def check_config(cfg: "NetworkConfig") -> None:
    """NetworkConfig's validation: every spec parses; emulation and the test fault
    injector are exclusive (both work on the same hooks)."""
    dirs = directions(cfg)
    if cfg.faults is not None and not all(s.off for s in dirs.values()):
        raise ConfigError("faults and netem cannot be used together (both act on the ring path)")


def normalize_direction(direction: Any) -> tuple[str, ...]:
    """"both", "up" or "down" -> the directions it names; ConfigError otherwise."""
    if direction in (None, "both"):
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ConfigError(f"netem direction {direction!r} must be 'both', 'up' or 'down'")


# Orchestrator side --------------------------------------------------------------------


class NetemControl:
    """A network's emulation settings and their changes at run time (Network.netem)."""

    def __init__(self, cfg: "NetworkConfig") -> None:
        self._cur = directions(cfg)

    def current(self) -> dict[str, str]:
        """{"up": spec, "down": spec} as canonical texts ("off" when none)."""
        return {d: str(s) for d, s in self._cur.items()}

    def set(self, workers: list, spec: Any, direction: Any, faults: Optional[str]) -> dict[str, str]:
        """Parse ``spec`` and send it to every worker for the ``direction``(s); waits for
        each ACK. The caller holds the network's query lock. Returns current()."""
        dirs = normalize_direction(direction)
        new = parse(spec, "netem")
        if faults is not None and not new.off:
            raise ConfigError("faults and netem cannot be used together (both act on the ring path)")
        for child in workers:
            for d in dirs:
                _control.send(child.ctl, Msg.NETEM, {"dir": d, "params": new.to_body()})
                _control.expect(child.ctl, Msg.ACK, REPLY_TIMEOUT, child.name)
        for d in dirs:
            self._cur[d] = new
        return self.current()


# Worker side --------------------------------------------------------------------------


def _apply(worker: Any, direction: str, spec: NetemSpec) -> None:
    """rn_netem_set() of one direction; CoreError (from check) on refusal."""
    from ._core import check, ffi, lib

    p = ffi.new("struct rn_netem_params *")
    body = spec.to_body()
    for name, value in body.items():
        setattr(p, name, value)
    d = lib.RN_NETEM_UP if direction == "up" else lib.RN_NETEM_DOWN
    check(lib.rn_netem_set(worker, d, p), "rn_netem_set")


def worker_start(worker: Any, cfg: "NetworkConfig") -> None:
    """At worker start: the configuration's emulation, for directions that have one."""
    for d, spec in directions(cfg).items():
        if not spec.off:
            _apply(worker, d, spec)


def worker_netem(worker: Any, ctl: socket.socket, msg: _control.Message) -> None:
    """NETEM from the orchestrator, in a worker: apply it and answer ACK, or ERROR (the
    worker goes on)."""
    try:
        direction = msg.body.get("dir")
        if direction not in DIRECTIONS:
            raise ProtocolError("NETEM message without a direction")
        _apply(worker, direction, NetemSpec.from_body(msg.body.get("params")))
    except (RingnetError, OSError, ValueError) as e:
        _control.send_error(ctl, e if not isinstance(e, ValueError) else ProtocolError(str(e)),
                            None, msg.type.name)
        return
    _control.send(ctl, Msg.ACK)
