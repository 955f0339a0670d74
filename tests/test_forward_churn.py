"""2,000 sequential short connections through a forward leave no flows and no fds behind (issue 11).

slirp4netns keeps each closed host socket for about 10 s and, at the default limit of
1024 open files, refuses new connections after about 1017 short ones
(../shared/FIELD-NOTES.md). Through a ringnet forward, each of 2,000 connections in a
row, made while a control-socket forward is in place (added at run time), must be
answered; afterwards the namespace's flows to the server's port end, the workers'
open fds return to their count before the run and so do ours. Through the C core
(splice_local=False) exactly; on the splice route, loopback clients' default, within the
spare sockets and pipes a worker keeps by design (tests/test_splice.py: STOCK, POOL).
"""

from __future__ import annotations

import os
import sys

import pytest

import ringnet
from ringnet import _ctlsock
from conftest import HANG_S, needs_userns, wait_until, worker_counter
from forwards import WHOAMI
from forwards import ask_loopback as ask, worker_fds as _worker_fds
from localdns import free_port

CONNECTIONS = 2000
PORT = 7000
POOL = 32  # RN_SPLICE_POOL: empty pipes a worker keeps for its next connections
STOCK = 16  # RN_SPLICE_STOCK: fresh namespace sockets a worker keeps per family


def _spare_max(net) -> int:
    """The fds the workers of ``net`` may keep on the splice route beyond their count at
    rest: a stock of namespace sockets for each family and a pool of pipes, each."""
    return len(net.worker_pids) * (2 * STOCK + 2 * POOL)


def _flows_to(net, port: int) -> int:
    f = net.flows()
    return int(((f["proto"] == "tcp") & (f["guest_port"] == port)).sum())


@needs_userns
@pytest.mark.parametrize("splice", [False, True], ids=["core", "splice"])
def test_2000_sequential_connections_leave_no_flows_or_fds(tmp_path, splice):
    os.chmod(tmp_path, 0o700)
    with ringnet.Network(workers=2, control_dir=str(tmp_path), splice_local=splice) as net:
        net.spawn([sys.executable, "-c", WHOAMI, str(PORT), "128"])
        port = free_port()
        rec = _ctlsock.query(net.control_socket, "forward_add",
                             {"spec": f"127.0.0.1:{port}:{PORT}"}, timeout=HANG_S)
        got: list = []
        wait_until(lambda: got.append(ask(port)) or got[-1] is not None, "the server inside",
                   interval=0.05)
        wait_until(lambda: _flows_to(net, PORT) == 0, "the first flow to end")
        fds = _worker_fds(net)
        own = len(os.listdir("/proc/self/fd"))
        accepted = worker_counter(net, "fwd_accepted")
        for i in range(CONNECTIONS):
            assert ask(port) is not None, f"connection {i} was not answered"
        assert worker_counter(net, "fwd_accepted") - accepted == CONNECTIONS
        wait_until(lambda: _flows_to(net, PORT) == 0, "the flows to end")
        if splice:
            assert _worker_fds(net) <= fds + _spare_max(net)
        else:
            wait_until(lambda: _worker_fds(net) == fds,
                       "the workers' fds to return to their count")
        assert len(os.listdir("/proc/self/fd")) == own
        assert net.failed_children() == []
        _ctlsock.query(net.control_socket, "forward_rm", {"forward": rec["id"]}, timeout=HANG_S)
