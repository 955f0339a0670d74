"""A host stack worker: checks the rings the namespace child offers, then runs the C loop.

Started by the orchestrator as ``python -m ringnet._worker SPEC``. Its
parameters (index, ring size, addresses, flow hash key) come from the trusted
orchestrator; the namespace child only supplies the ring memfd and the two
doorbell eventfds in HELLO, and those are checked before use: the memfd must be
sealed against shrinking and growing and have exactly the expected size, the
doorbells must be eventfds. The C loop (rn_worker_run) then runs with the GIL
released and returns to Python only when a control socket wants attention, the
orchestrator process exited (a pidfd of it), a signal arrived (Python's wakeup
fd: SIGTERM then unwinds in order), or with an error when the namespace
corrupted its ring. Once the rings are accepted the worker is not dumpable.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket

from . import _control, _hook
from ._child import current_step, parent_gone, run_child, setup_done, step
from ._capture import CaptureShm, worker_capture
from ._control import Msg
from ._core import check, ffi, lib
from ._hostaddrs import HostAddrs
from ._shm import CounterArray, RingMapping, check_eventfd
from ._netem import worker_netem, worker_start as netem_start
from ._publish import worker_forward
from ._rules import worker_attach, worker_rules
from ._resolv import parse_upstream
from .config import NetworkConfig, parse_faults
from .errors import ConfigError, CoreError, ProtocolError

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 60.0
# Our delayed ACK of small TCP data from the namespace, ms (csrc/tcp_delack.c)
TCP_DELACK_MS = 2


def _params(spec: dict, cfg: NetworkConfig):
    p = ffi.new("struct rn_worker_params *")
    p.index = spec["index"]
    p.nworkers = cfg.workers
    ffi.memmove(p.hash_key, bytes.fromhex(spec["hash_key"]), 16)
    p.ring_size = cfg.ring_size
    p.mtu = cfg.mtu
    addrs = cfg.addresses()
    for field in ("guest4", "gateway4", "dns4", "guest6", "gateway6", "dns6"):
        cname = field.replace("gateway", "gw")
        addr = addrs.get(field)
        if addr is None:  # IPv6 off: all-zero addresses match nothing
            addr = ipaddress.IPv6Address(0)
        ffi.memmove(getattr(p, cname), addr.packed, len(addr.packed))
    p.prefix4 = cfg.network4.prefixlen
    p.prefix6 = cfg.network6.prefixlen if cfg.ipv6 else 0
    p.allow_host_loopback = int(cfg.allow_host_loopback)
    p.max_flows = cfg.max_flows
    # host exposure and the UDP port budget (this worker's share)
    p.allow_host = int(cfg.allow_host)
    p.allow_link_local = int(cfg.allow_link_local)
    p.udp_ports = max(1, cfg.udp_ports // cfg.workers)
    p.tcp_idle_timeout_ms = cfg.tcp_idle_timeout * 1000
    p.tcp_fin_timeout_ms = cfg.tcp_fin_timeout * 1000
    p.udp_timeout_ms = cfg.udp_timeout * 1000
    p.coalesce_us = cfg.coalesce_us
    p.busy_poll_us = cfg.busy_poll_us
    p.tcp_delack_ms = TCP_DELACK_MS
    p.ndns = _fill_upstreams(p.dns, spec["dns_upstreams"])
    if cfg.faults:
        f = parse_faults(cfg.faults)
        p.faults.drop_ppm = int(f["drop"] * 1_000_000)
        p.faults.dup_ppm = int(f["dup"] * 1_000_000)
        p.faults.reorder_ppm = int(f["reorder"] * 1_000_000)
        p.faults.seed = int(f["seed"])
    return p


def _fill_upstreams(arr, texts: list) -> int:
    """Fill a struct rn_dns_upstream array from "ADDR:PORT" strings; returns the count used.
    Raises ConfigError (a ProtocolError's sibling) for a malformed entry."""
    ups = [parse_upstream(t) for t in texts[: lib.RN_DNS_UPSTREAM_MAX]]
    for i, up in enumerate(ups):
        arr[i].family = up.addr.version
        ffi.memmove(arr[i].addr, up.addr.packed, len(up.addr.packed))
        arr[i].port = up.port
    return len(ups)


def _set_upstreams(worker, msg: _control.Message) -> None:
    """DNS_UPSTREAMS from the orchestrator: the host's resolv.conf changed."""
    texts = msg.body.get("upstreams")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ProtocolError("DNS_UPSTREAMS message without a list of upstreams")
    arr = ffi.new("struct rn_dns_upstream[]", lib.RN_DNS_UPSTREAM_MAX)
    try:
        n = _fill_upstreams(arr, texts)
    except ConfigError as e:
        raise ProtocolError(f"DNS_UPSTREAMS: {e}") from None
    check(lib.rn_dns_set_upstreams(worker, arr, n), "rn_dns_set_upstreams")
    log.info("DNS upstreams now %s", ", ".join(texts) or "none")


def _set_host_addrs(worker, body: dict) -> None:
    """The host's own addresses (at start, and HOST_ADDRS when they change): the
    policy refuses new flows to them unless allow_host (csrc/policy.c)."""
    try:
        addrs = HostAddrs.from_body(body)
    except ValueError as e:
        raise ProtocolError(f"HOST_ADDRS: {e}") from None
    v4 = b"".join(a.packed for a in addrs.v4)
    v6 = b"".join(a.packed for a in addrs.v6)
    check(lib.rn_policy_host_set(worker, v4, len(addrs.v4), v6, len(addrs.v6)),
          "rn_policy_host_set")
    log.debug("host addresses: %s", ", ".join(map(str, addrs.v4 + addrs.v6)) or "none")


def _accept_hello(spec: dict, cfg: NetworkConfig,
                  ns: socket.socket) -> tuple[RingMapping, int, int, socket.socket]:
    step("wait for rings")
    msg = _control.expect(ns, Msg.HELLO, HELLO_TIMEOUT, "ns", nfds=4)
    memfd, ev_worker, ev_ns, splice_fd = msg.fds
    step("check rings")
    try:
        if msg.body.get("version") != _control.PROTOCOL_VERSION:
            raise ProtocolError(f"HELLO version {msg.body.get('version')!r}, "
                                f"expected {_control.PROTOCOL_VERSION}")
        if msg.body.get("worker") != spec["index"] or msg.body.get("ring_size") != cfg.ring_size:
            raise ProtocolError("HELLO names another worker or ring size than ours")
        check_eventfd(ev_worker, "ev_worker")
        check_eventfd(ev_ns, "ev_ns")
        splice = socket.socket(fileno=splice_fd)
        if splice.family != socket.AF_UNIX or splice.type != socket.SOCK_SEQPACKET:
            splice.detach()
            raise ProtocolError("HELLO's splice socket is not an AF_UNIX SOCK_SEQPACKET socket")
    except BaseException:
        msg.close_fds()
        raise
    step("map rings")
    try:
        ring = RingMapping.adopt(memfd, cfg.ring_size)
    except BaseException:
        os.close(ev_worker)
        os.close(ev_ns)
        splice.close()
        raise
    return ring, ev_worker, ev_ns, splice


def main(spec: dict, ctl: socket.socket) -> int:
    cfg = NetworkConfig(**spec["config"])
    ns = socket.socket(fileno=spec["ns_fd"])
    step("map counters")
    counters = CounterArray.adopt(spec["counters_fd"])
    # packet capture and flow log (_capture.py); absent only in tests that start a bare worker
    capture = CaptureShm.adopt(spec["capture_fd"]) if spec.get("capture_fd") is not None else None
    ring = None
    rules = None
    evs: tuple[int, ...] = ()
    worker = ffi.NULL
    try:
        try:
            ring, ev_worker, ev_ns, splice = _accept_hello(spec, cfg, ns)
            evs = (ev_worker, ev_ns)
            step("start worker")
            out = ffi.new("struct rn_worker **")
            check(lib.rn_worker_new(out, _params(spec, cfg), ring.ptr, ring.size, counters.ptr,
                                    ev_worker, ev_ns), "rn_worker_new")
            worker = out[0]
            if cfg.splice_local:  # the splice route of host-local forward clients (splice.c)
                check(lib.rn_splice_attach(worker, splice.fileno()), "rn_splice_attach")
                splice.detach()
            else:
                splice.close()
            if capture is not None:
                check(lib.rn_capture_attach(worker, capture.ptr, capture.size), "rn_capture_attach")
                check(lib.rn_capture_set(worker, 0, int(cfg.flow_log is not None)), "rn_capture_set")
            _set_host_addrs(worker, spec["host_addrs"])
            step("load rules")
            rules = worker_attach(worker, spec, cfg.workers)  # before the namespace runs anything
            netem_start(worker, cfg)
            hook = None   # kept open while the loop runs
            if spec.get("hook_fd", -1) >= 0:   # on_connect: the C loop asks (_hook.py)
                hook = socket.socket(fileno=spec["hook_fd"])
                _hook.worker_setup(worker, cfg, hook)
            # The loop returns to Python when a control socket has a message, the
            # orchestrator process exits (its pidfd) or a signal arrives (Python's
            # wakeup fd, written by its C-level handler even when the signal lands
            # outside epoll_wait()), so that SIGTERM unwinds through the finally below.
            wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            evs += wake
            signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)
            for fd in (ctl.fileno(), ns.fileno(), spec["parent_pidfd"], wake[0]):
                check(lib.rn_worker_watch_fd(worker, fd), "rn_worker_watch_fd")
            setup_done("worker", cfg.sandbox)  # before ACK: isolated before the namespace runs anything
        except (ProtocolError, OSError) as e:
            # the namespace child gets the very error too (class, errno, step)
            _control.send_error(ns, e, spec["role"], current_step())
            raise
        _control.send(ns, Msg.ACK)
        step("run")
        while True:
            rc = lib.rn_worker_run(worker, -1)
            if rc < 0:
                raise CoreError(-rc, "the namespace side broke its ring")
            if rc == 1:
                _drain(wake[0])  # a pending signal's handler runs on the next line
                if parent_gone() or _control_wants_exit(worker, ctl, ns):
                    return 0
    finally:
        signal.set_wakeup_fd(-1)
        if worker != ffi.NULL:
            lib.rn_worker_free(worker)
        if rules is not None:
            rules.close()
        for fd in evs:
            os.close(fd)
        if ring is not None:
            ring.close()
        ns.close()
        counters.close()
        if capture is not None:
            capture.close()


def _drain(fd: int) -> None:
    """Empty the non-blocking pipe ``fd``."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}
_FLOW_FETCH_MAX = 4096


def flow_rows(worker, want) -> dict:
    """The busiest flows of this worker as named records (the fields of stats.FLOW_FIELDS
    but "worker", which the orchestrator adds), at most _control.FLOW_ROWS_MAX and no more
    than fit in one control message, and the total number of flows."""
    cap = _control.FLOW_ROWS_MAX
    limit = want if isinstance(want, int) and not isinstance(want, bool) and 0 <= want <= cap else cap
    buf = ffi.new("struct rn_flow_row[]", _FLOW_FETCH_MAX)
    n = lib.rn_worker_flow_rows(worker, buf, _FLOW_FETCH_MAX)
    rows = []
    for r in buf[0:n]:
        alen = 16 if r.family == 6 else 4
        rows.append({"proto": _PROTO_NAMES.get(r.proto, str(r.proto)),
                     "state": ffi.string(lib.rn_flow_state_name(r.type, r.state)).decode(),
                     "guest": str(ipaddress.ip_address(bytes(r.guest)[:alen])),
                     "guest_port": r.guest_port,
                     "remote": str(ipaddress.ip_address(bytes(r.remote)[:alen])),
                     "remote_port": r.remote_port,
                     "bytes_in": r.bytes_up, "bytes_out": r.bytes_down,
                     "age": r.age_ms / 1000.0, "idle": r.idle_ms / 1000.0})
    rows.sort(key=lambda row: row["bytes_in"] + row["bytes_out"], reverse=True)
    body = {"total": lib.rn_worker_flow_count(worker), "rows": rows[:limit]}
    while len(json.dumps(body, separators=(",", ":"))) > _control.MAX_BODY:
        body["rows"] = body["rows"][: len(body["rows"]) * 3 // 4]
    return body


def _control_wants_exit(worker, ctl: socket.socket, ns: socket.socket) -> bool:
    """Handle pending control messages; True when the worker should exit."""
    for sock, who in ((ctl, "orchestrator"), (ns, "namespace child")):
        sock.setblocking(False)
        try:
            msg = _control.recv(sock)
        except BlockingIOError:
            continue
        finally:
            sock.setblocking(True)
        if msg is None or msg.type in (Msg.SHUTDOWN, Msg.ERROR):
            return True
        if sock is ctl and msg.type in (Msg.FORWARD_ADD, Msg.FORWARD_DEL):
            worker_forward(worker, ctl, msg)  # answers ACK or ERROR; takes the fds
            continue
        if sock is ctl and msg.type == Msg.RULES:
            worker_rules(worker, ctl, msg)  # answers ACK or ERROR; closes the fd
            continue
        msg.close_fds()
        if sock is ctl and msg.type == Msg.DNS_UPSTREAMS:
            _set_upstreams(worker, msg)
            continue
        if sock is ctl and msg.type == Msg.NETEM:
            worker_netem(worker, ctl, msg)  # answers ACK or ERROR
            continue
        if sock is ctl and msg.type == Msg.HOST_ADDRS:
            _set_host_addrs(worker, msg.body)
            continue
        if sock is ctl and msg.type == Msg.CAPTURE:
            worker_capture(worker, ctl, msg)
            continue
        if sock is ctl and msg.type == Msg.FLOWS:
            _control.send(ctl, Msg.FLOWS, flow_rows(worker, msg.body.get("max")))
            continue
        if sock is ctl and msg.type == Msg.OFFLOADS:
            offloads = msg.body.get("offloads")
            if not isinstance(offloads, list):
                raise ProtocolError("OFFLOADS message without a list of offloads")
            # USO frames towards the namespace, when its tun device takes them
            check(lib.rn_udp_set_uso(worker, int("uso4" in offloads and "uso6" in offloads)),
                  "rn_udp_set_uso")
            continue
        raise ProtocolError(f"unexpected {msg.type.name} from the {who}")
    return False


if __name__ == "__main__":
    run_child("worker", main)
