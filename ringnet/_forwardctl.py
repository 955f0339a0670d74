"""Forwards at run time: the control socket's forward_add/forward_ls/forward_rm and ``ringnet forward``.

The control socket (_ctlsock.py) of a running network takes::

    {"cmd": "forward_add", "args": {"spec": "127.0.0.1:8080:80/tcp"}}   -> the new forward
    {"cmd": "forward_ls"}                                              -> every forward
    {"cmd": "forward_rm", "args": {"forward": 3 | "8080:80"}}          -> the removed forward

A forward is shown as a record: ``id`` (its first port's id, the handle ``rm``
takes), ``spec``, ``proto``, ``host_addr`` (None: every address), ``ports`` ([host,
namespace] pairs) and ``ns_addr``. Errors are the network's own (ringnet.errors),
raised again as the same class in the client: a host port in use or below
net.ipv4.ip_unprivileged_port_start (PublishError, naming the port), a bad or
overlapping spec and an unknown forward (ConfigError, naming it).

``ringnet forward ID add SPEC``, ``ringnet forward ID ls [--json]`` and ``ringnet
forward ID rm SPEC-or-FWD-ID`` are the command line (cli.py parses, main() here
does the rest): add prints the new forward's id, ls a table, rm nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Callable

from . import _ctlsock
from ._publish import PortSpec, parse_spec
from .errors import ConfigError, RingnetError

if TYPE_CHECKING:
    from ._publish import Forward
    from .network import Network

__all__ = ["handlers", "record", "main"]

# publishing asks every worker in turn (each may take _publish.REPLY_TIMEOUT)
_QUERY_TIMEOUT = 60.0


def record(fwd: "Forward") -> dict[str, Any]:
    """What the control socket says of a forward."""
    return dict(fwd.info(), id=fwd.ids[0] if fwd.ids else None)


def _same(a: PortSpec, b: PortSpec) -> bool:
    return (a.host_addr, a.host_ports, a.ns_ports, a.proto) == (b.host_addr, b.host_ports,
                                                                b.ns_ports, b.proto)


def find(net: "Network", which: Any) -> "Forward":
    """The forward of ``net`` that ``which`` names: its id (an int, or a string of digits)
    or its spec (the same ports, addresses and protocol, however written). ConfigError
    naming ``which`` when there is none."""
    forwards = net.forwards()
    if isinstance(which, int) and not isinstance(which, bool) or \
            isinstance(which, str) and which.strip().isdigit():
        fid = int(which)
        for f in forwards:
            if f.ids and f.ids[0] == fid:
                return f
        raise ConfigError(f"no forward with id {fid} (ringnet forward ID ls lists them)")
    if not isinstance(which, str):
        raise ConfigError(f"forward {which!r} is neither a forward id nor a publish spec")
    spec = parse_spec(which)
    for f in forwards:
        if _same(f.spec, spec):
            return f
    raise ConfigError(f"no forward {which.strip()!r} (ringnet forward ID ls lists them)")


def _add(net: "Network", args: dict) -> dict[str, Any]:
    spec = args.get("spec")
    if not isinstance(spec, str):
        raise ConfigError("forward_add takes a spec: {\"spec\": \"[ADDR:]HOSTPORT:NSPORT[/tcp|/udp]\"}")
    return record(net.publish(spec))


def _ls(net: "Network", args: dict) -> list[dict[str, Any]]:
    return [record(f) for f in net.forwards()]


def _rm(net: "Network", args: dict) -> dict[str, Any]:
    if "forward" not in args:
        raise ConfigError("forward_rm takes the forward: {\"forward\": ID or SPEC}")
    fwd = find(net, args["forward"])
    fwd.close()
    return record(fwd)


def handlers(net: "Network") -> dict[str, Callable[[dict], Any]]:
    """The control socket's forward commands for ``net`` (Network._control_handlers)."""
    return {"forward_add": lambda args: _add(net, args),
            "forward_ls": lambda args: _ls(net, args),
            "forward_rm": lambda args: _rm(net, args)}


# --- the command line -------------------------------------------------------------------------


def _ports(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _where(addr: Any, ports: str) -> str:
    if addr is None:
        return f"*:{ports}"
    return f"[{addr}]:{ports}" if ":" in str(addr) else f"{addr}:{ports}"


def table(records: list[dict[str, Any]]) -> str:
    """``ringnet forward ID ls``: one line per forward."""
    lines = [f"{'ID':>5}  {'PROTO':<5}  {'HOST':<28}  {'NAMESPACE':<28}  SPEC"]
    for r in records:
        pairs = r["ports"]
        host = _where(r["host_addr"], _ports(pairs[0][0], pairs[-1][0]))
        ns = _where(r["ns_addr"], _ports(pairs[0][1], pairs[-1][1]))
        lines.append(f"{r['id']:>5}  {r['proto']:<5}  {host:<28}  {ns:<28}  {r['spec']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``ringnet forward NETID add|ls|rm [SPEC-or-FWD-ID]``: ask the network's control socket."""
    path = _ctlsock.resolve(args.id, args.dir)
    if args.action == "ls":
        if args.target is not None:
            raise RingnetError(f"ringnet forward ID ls takes no argument (got {args.target!r})")
        got = _ctlsock.query(path, "forward_ls", timeout=_QUERY_TIMEOUT)
        print(json.dumps(got, indent=2) if args.json else table(got))
        return 0
    if args.target is None:
        what = "SPEC ([ADDR:]HOSTPORT[-END]:NSPORT[-END][/tcp|/udp])" if args.action == "add" \
            else "the forward's id or spec (see ringnet forward ID ls)"
        raise RingnetError(f"ringnet forward ID {args.action} needs {what}")
    if args.action == "add":
        got = _ctlsock.query(path, "forward_add", {"spec": args.target}, timeout=_QUERY_TIMEOUT)
        print(json.dumps(got, indent=2) if args.json else got["id"])
        return 0
    target: Any = int(args.target) if args.target.strip().isdigit() else args.target
    got = _ctlsock.query(path, "forward_rm", {"forward": target}, timeout=_QUERY_TIMEOUT)
    if args.json:
        print(json.dumps(got, indent=2))
    return 0
