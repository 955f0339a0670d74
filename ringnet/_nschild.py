"""The namespace child: owns the network namespace, the tun device and the pump threads.

Started by the orchestrator as ``python -m ringnet._nschild SPEC``. In order:
enter the namespace (unshare new user + net namespaces and map our ids, or
setns into an existing process's namespaces for attach), create the tun
device, configure it through netlink, set the network sysctls asked for
(_sysctl.py), create each worker's ring mapping and
send it in HELLO, wait for every worker's ACK, stop being dumpable, start the
C pump (one thread per tun queue), and report READY with fds of its user and
net namespaces. Then it waits for SHUTDOWN (or the end of the control
connection, the orchestrator's exit, or a pump failure), answering socket
requests meanwhile (``Network.socket()``, _nssocket.py, and the workers' splice
sockets, csrc/splice.c), and stops the pump before exiting. A worker that goes
away leaves its queue waiting until the orchestrator sends its replacement
(WORKER_REPLACE: new rings and splice socket, the pump restarted; _supervise.py).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket

from . import _control, _supervise
from ._child import run_child, setup_done, step
from ._control import Msg
from ._core import lib
from ._netconf import configure
from ._nssocket import serve_request as serve_socket_request
from ._nsutil import enter_netns_of, enter_netns_path, unshare_user_net, write_id_maps
from ._shm import CounterArray, RingMapping
from ._sysctl import apply as apply_sysctls, apply_defaults as apply_sysctl_defaults
from ._tun import open_tun
from .config import NetworkConfig
from .errors import ChildError, CoreError

HELLO_TIMEOUT = 30.0

log = logging.getLogger(__name__)


def _enter(spec: dict, cfg: NetworkConfig, ctl: socket.socket) -> None:
    if spec.get("attach_path"):
        enter_netns_path(*spec["attach_path"])
        return
    if spec["attach_pid"]:
        enter_netns_of(spec["attach_pid"])
        return
    uid, gid = os.getuid(), os.getgid()
    unshare_user_net()
    if cfg.idmap_helpers:
        _control.send(ctl, Msg.IDMAP, {"pid": os.getpid()})
        _control.expect(ctl, Msg.IDMAP_DONE, cfg.startup_timeout, "orchestrator")
    else:
        write_id_maps(uid, gid)


def _hello_workers(spec: dict, cfg: NetworkConfig, socks: list[socket.socket],
                   rings: list[RingMapping], splices: list[socket.socket]) -> list[tuple[int, int]]:
    """Create each worker's rings, doorbells and splice socket (csrc/splice.c: the
    worker asks for fresh sockets of the namespace there; ours stay in ``splices``),
    send HELLO, collect every ACK."""
    evs: list[tuple[int, int]] = []
    for i, sock in enumerate(socks):
        ring = RingMapping.create(cfg.ring_size, i)
        rings.append(ring)
        ev_worker = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        ev_ns = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        evs.append((ev_worker, ev_ns))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        splices.append(ours)
        try:
            _control.send(sock, Msg.HELLO, {"version": _control.PROTOCOL_VERSION, "worker": i,
                                            "ring_size": cfg.ring_size},
                          [ring.fd, ev_worker, ev_ns, theirs.fileno()])
        finally:
            theirs.close()
    for i, sock in enumerate(socks):
        # A worker that refuses its rings says why in an ERROR, re-raised here as its
        # own error (class, errno, the worker's step), which run_child passes on.
        _control.expect(sock, Msg.ACK, HELLO_TIMEOUT, f"worker {i}")
    return evs


def _serve(ctl: socket.socket, q: "_supervise.NsQueues", parent_pidfd: int) -> None:
    """Wait for SHUTDOWN or the orchestrator's exit; raise the error of the pump if it
    fails. A worker that goes away (crash, SIGKILL) leaves its queue waiting for the
    replacement the orchestrator starts (WORKER_REPLACE, _supervise.py). Meanwhile
    answer the workers' requests for fresh sockets of the namespace (the splice route of
    forwards, csrc/splice.c, all in C) and the orchestrator's (Network.socket())."""
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(parent_pidfd, select.POLLIN)
    for s in q.socks:
        poller.register(s, select.POLLIN)
    splice_fds = {s.fileno() for s in q.splices}
    for fd in splice_fds:
        poller.register(fd, select.POLLIN)
    while True:
        err = lib.rn_pump_error(q.pump)
        if err:
            raise CoreError(abs(err), "pump thread")
        for fd, _ in poller.poll(500):
            if fd in splice_fds:
                rc = lib.rn_splice_serve(fd)
                if rc == -errno.EPIPE:  # that worker is gone or does not splice
                    poller.unregister(fd)
                    splice_fds.discard(fd)
                elif rc < 0:
                    raise CoreError(-rc, "rn_splice_serve")
                continue
            if fd == parent_pidfd:
                return  # the orchestrator process exited
            if fd == ctl.fileno():
                msg = _control.recv(ctl)
                if msg is None or msg.type == Msg.SHUTDOWN:
                    return
                if msg.type == Msg.WORKER_REPLACE:
                    swap = _supervise.ns_replace_worker(q, msg, ctl)
                    if swap is not None:
                        for old in (swap.old_ctl, swap.old_splice):
                            try:
                                poller.unregister(old)
                            except KeyError:
                                pass  # unwatched already: we saw it go away
                        splice_fds.discard(swap.old_splice)
                        poller.register(swap.new_ctl, select.POLLIN)
                        splice_fds.add(swap.new_splice.fileno())
                        poller.register(swap.new_splice, select.POLLIN)
                    break  # the other events of this poll may name the old sockets
                if msg.type == Msg.NS_SOCKET:   # net.socket()
                    serve_socket_request(ctl, msg, "ns")
                    continue
                msg.close_fds()
                raise ChildError(f"unexpected {msg.type.name} from the orchestrator")
            idx = next(i for i, s in enumerate(q.socks) if s.fileno() == fd)
            msg = _control.recv(q.socks[idx])
            if msg is not None:
                msg.close_fds()
            # Its flows are gone with it; its queue waits for the replacement. (INFO: the
            # orchestrator reports a crash; at close() the workers stop before we do.)
            log.info("worker %d went away%s; waiting for its replacement", idx,
                     " (it reported an error)" if msg is not None else "")
            poller.unregister(fd)


def main(spec: dict, ctl: socket.socket) -> int:
    cfg = NetworkConfig(**spec["config"])
    socks = [socket.socket(fileno=fd) for fd in spec["worker_fds"]]
    step("map counters")
    counters = CounterArray.adopt(spec["counters_fd"])
    rings: list[RingMapping] = []
    splices: list[socket.socket] = []
    evs: list[tuple[int, int]] = []
    tun = None
    q = None
    try:
        step("enter namespaces")
        _enter(spec, cfg, ctl)
        step("open tun")
        tun = open_tun(cfg.ifname, cfg.workers, cfg.tun_sndbuf())
        step("configure interface")
        ifindex = configure(cfg, cfg.ifname) if cfg.configure_interface \
            else socket.if_nametoindex(tun.name)
        step("set sysctls")
        attached = bool(spec.get("attach_path") or spec["attach_pid"])
        if not attached:
            apply_sysctl_defaults()     # best effort: no user asked for them
        apply_sysctls(cfg.sysctls)
        step("hand rings to workers")
        evs = _hello_workers(spec, cfg, socks, rings, splices)
        step("isolate")
        nsfds = [os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC),
                 os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)]
        # Set up (the newuidmap path needed our /proc files until now): isolate
        # ourselves; the pump threads started below inherit every layer.
        setup_done("nschild", cfg.sandbox)

        step("start pump")
        q = _supervise.NsQueues(cfg, spec["hash_key"], tun.fds, counters, socks, rings, evs,
                                 splices)
        q.start()
        step("report ready")
        try:
            _control.send(ctl, Msg.READY, {"ifname": tun.name, "ifindex": ifindex,
                                           "queues": len(tun.fds),
                                           "offloads": tun.offload_names()}, nsfds)
        finally:
            for fd in nsfds:
                os.close(fd)
        step("serve")
        _serve(ctl, q, spec["parent_pidfd"])
        return 0
    finally:
        if q is not None:
            err = q.stop()
            if err:
                _control.send_error(ctl, CoreError(abs(err), "pump thread"), spec["role"], "stop pump")
        for s in socks + splices:
            s.close()
        for a, b in evs:
            os.close(a)
            os.close(b)
        for r in rings:
            r.close()
        if tun is not None:
            tun.close()
        counters.close()


if __name__ == "__main__":
    run_child("ns", main)
