"""Namespace lifecycle end to end: the namespace's own kernel is the peer.

Interface, addresses, routes, MTU and offloads as configured; ping to the gateway
addresses answered by the C core through the rings; malformed frames from inside
counted as drops while pings keep working; attach to a namespace made by
``unshare -Urn``; nothing left behind after close or a failed start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

import ringnet
from conftest import HANG_S, counter_reaches, needs_userns, ringnet_processes, wait_until

pytestmark = needs_userns


def sum_counter(net, name):
    return sum(w[name] for w in net.counters()["workers"])


def ip_json(net, *args):
    out = net.run(["ip", "-j", *args], capture_output=True, check=True).stdout
    return json.loads(out)


def test_interface_addresses_routes_mtu(no_leaks):
    with ringnet.Network(mtu=9000, workers=2) as net:
        links = {l["ifname"]: l for l in ip_json(net, "link", "show")}
        assert set(links) == {"lo", "rn0"}
        assert links["rn0"]["mtu"] == 9000
        assert "UP" in links["rn0"]["flags"] and "UP" in links["lo"]["flags"]
        addrs = {(a["local"], a["prefixlen"]) for l in ip_json(net, "addr", "show", "dev", "rn0")
                 for a in l["addr_info"] if a.get("scope") == "global"}
        assert addrs == {("10.0.2.100", 24), ("fd00::100", 64)}
        r4 = ip_json(net, "route", "show", "default")
        r6 = ip_json(net, "-6", "route", "show", "default")
        assert [(r["gateway"], r["dev"]) for r in r4] == [("10.0.2.2", "rn0")]
        assert [(r["gateway"], r["dev"]) for r in r6] == [("fd00::2", "rn0")]
        assert {"csum", "tso4", "tso6"} <= set(net.offloads)
        details = ip_json(net, "-d", "link", "show", "rn0")[0]
        assert details["linkinfo"]["info_kind"] == "tun"
        assert details["linkinfo"]["info_data"]["multi_queue"] is True
        assert details["linkinfo"]["info_data"]["vnet_hdr"] is True
        assert details["num_tx_queues"] >= 2 and details.get("txqlen", 1000) >= 1000


def test_custom_subnet_and_mtu_1500(no_leaks):
    with ringnet.Network(mtu=1500, cidr4="192.168.99.0/24", ipv6=False, workers=1,
                         ring_size=512 * 1024) as net:
        addrs = [a["local"] for l in ip_json(net, "addr", "show", "dev", "rn0")
                 for a in l["addr_info"] if a["family"] == "inet"]
        assert addrs == ["192.168.99.100"]
        link = ip_json(net, "link", "show", "rn0")[0]
        assert link["mtu"] == 1500 and link["txqlen"] > 1000
        r = net.run(["ping", "-c", "2", "-i", "0.2", "-W", "60", "192.168.99.2"], capture_output=True)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_ping_gateway_v4_v6(workers, no_leaks):
    with ringnet.Network(workers=workers) as net:
        for argv in (["ping", "-c", "3", "-i", "0.2", "-W", "60", "10.0.2.2"],
                     ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "60", "fd00::2"]):
            r = net.run(argv, capture_output=True, timeout=2 * HANG_S)
            assert r.returncode == 0, r.stdout + r.stderr
            assert b"3 received" in r.stdout
        # a worker counts a reply after sending it, the pump a frame after writing it
        assert counter_reaches(net, "icmp_echo_replies", 3) == 3
        assert counter_reaches(net, "icmp6_echo_replies", 3) == 3
        wait_until(lambda: net.counters()["pump"]["tun_frames_out"] >= 6, "6 frames written to tun")
        assert net.counters()["pump"]["tun_frames_in"] >= 6


def test_large_ping_payload(no_leaks):
    with ringnet.Network(workers=1) as net:
        r = net.run(["ping", "-c", "2", "-i", "0.2", "-s", "60000", "-W", "60", "10.0.2.2"],
                    capture_output=True, timeout=2 * HANG_S)
        assert r.returncode == 0, r.stdout + r.stderr
        r = net.run(["ping", "-6", "-c", "2", "-i", "0.2", "-s", "65000", "-W", "60", "fd00::2"],
                    capture_output=True, timeout=2 * HANG_S)
        assert r.returncode == 0, r.stdout + r.stderr


def test_ping_other_destination_is_dropped_and_counted(no_leaks):
    with ringnet.Network(workers=1) as net:
        # An address inside the namespace's own subnet: nothing is there, the policy
        # refuses it (ICMP host unreachable, see tests/test_icmp.py) and counts it.
        r = net.run(["ping", "-c", "1", "-W", "60", "10.0.2.77"], capture_output=True, timeout=2 * HANG_S)
        assert r.returncode != 0 and b"Unreachable" in r.stdout, r.stdout + r.stderr
        counter_reaches(net, "policy_refused", 1)


MALFORMED = r'''
import socket, struct, sys
ETH_P_ALL = 0x0003
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind(("rn0", 0))
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
def ip4(payload, proto=1, src="10.0.2.100", dst="10.0.2.2", ihl=5, tot=None, bad_csum=False, ver=4, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", (ver << 4) | ihl, 0, tot if tot is not None else 20 + len(payload),
                    1, frag, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    c = csum(h)
    if bad_csum: c ^= 0x1234
    return h[:10] + struct.pack("!H", c) + h[12:] + payload
def echo(data=b"x" * 16, bad=False):
    m = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + data
    c = csum(m) ^ (0x1111 if bad else 0)
    return m[:2] + struct.pack("!H", c) + m[4:]
frames = {
    "drop_short": [b"\x45\x00\x00", b"\x60" + b"\0" * 10],
    "drop_ip_version": [b"\x75" + b"\0" * 40, b"\x05" * 28],
    "drop_ipv4_header": [ip4(echo(), ihl=4), ip4(echo(), tot=2000), ip4(echo(), tot=10)],
    "drop_ipv4_csum": [ip4(echo(), bad_csum=True)],
    "drop_icmp_csum": [ip4(echo(bad=True))],
    "drop_fragment": [ip4(echo(b"x" * 17), frag=0x2000)],  # not a multiple of 8
    "drop_src_addr": [ip4(echo(), src="10.9.9.9")],
    "drop_ipv6_header": [b"\x60\0\0\0\xff\xff\x3a\x40" + b"\0" * 32 + b"\x80" * 8],
}
for reason, fs in frames.items():
    for f in fs:
        s.send(f)
import random
rnd = random.Random(1234)
for i in range(200):
    s.send(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))))
print("sent", sum(len(v) for v in frames.values()) + 200)
'''


def test_malformed_frames_are_counted_and_pings_still_work(no_leaks):
    with ringnet.Network(workers=2) as net:
        r = net.run([sys.executable, "-c", MALFORMED], capture_output=True, timeout=2 * HANG_S)
        assert r.returncode == 0, r.stderr.decode()
        # the frames are on their way through the rings: wait for the workers to judge them
        for reason in ("drop_short", "drop_ip_version", "drop_ipv4_header", "drop_ipv4_csum",
                       "drop_icmp_csum", "drop_fragment", "drop_src_addr", "drop_ipv6_header"):
            counter_reaches(net, reason, 1)

        def drops() -> int:
            c = net.counters()
            return sum(v for w in c["workers"] for k, v in w.items() if k.startswith("drop_"))
        wait_until(lambda: drops() >= 200, "200 frames dropped")
        assert not net.failed_children()
        r = net.run(["ping", "-c", "3", "-i", "0.2", "-W", "60", "10.0.2.2"], capture_output=True,
                    timeout=HANG_S)
        assert r.returncode == 0, r.stdout + r.stderr


def test_attach_to_unshare_namespace(no_leaks, unshared_target):
    target = unshared_target
    with ringnet.Network.attach(target.pid, workers=1) as net:
        probe = net.run(["sh", "-c", "readlink /proc/self/ns/net"], capture_output=True, check=True)
        assert probe.stdout.decode().strip() == os.readlink(f"/proc/{target.pid}/ns/net")
        # Enter the target's namespaces the way a container runtime would: nsenter.
        r = subprocess.run(["nsenter", f"--target={target.pid}", "--user", "--net",
                            "--preserve-credentials", "ping", "-c", "3", "-i", "0.2", "-W", "60",
                            "10.0.2.2"], capture_output=True, timeout=2 * HANG_S)
        assert r.returncode == 0, r.stdout + r.stderr
    # Closing the network removed the tun device from the target namespace.
    r = subprocess.run(["nsenter", f"--target={target.pid}", "--user", "--net",
                        "--preserve-credentials", "ip", "-j", "link"], capture_output=True)
    assert [l["ifname"] for l in json.loads(r.stdout)] == ["lo"]
    assert target.poll() is None, "attach must not harm the target"


@pytest.mark.parametrize("pid,match", [(2**22 + 12345, "does not exist"), (0, "not a process id")])
def test_attach_bad_pid(pid, match):
    with pytest.raises(ringnet.NamespaceError, match=match):
        ringnet.Network.attach(pid)


def test_attach_to_own_namespace_refused():
    with pytest.raises(ringnet.NamespaceError, match="shares our own network namespace"):
        ringnet.Network.attach(os.getpid())


def test_failed_start_leaves_nothing(no_leaks):
    before = ringnet_processes()
    net = ringnet.Network(ifname="lo", workers=2)  # lo exists and is not a tun device
    with pytest.raises(ringnet.NamespaceError, match="tun") as info:
        net.start()
    # the namespace child's own error, re-raised as its class, naming the child and step
    assert type(info.value) is ringnet.NamespaceError
    assert (info.value.child, info.value.step) == ("ns", "open tun")
    assert str(info.value).startswith("namespace child (open tun): ")
    assert net.state == ringnet.State.FAILED
    assert ringnet_processes() == before
    with pytest.raises(ringnet.RingnetError, match="network is failed"):
        with net:
            pass


def test_enter_closed_network_raises(no_leaks):
    net = ringnet.Network(workers=1, control_socket=False)
    with net:
        assert net.state == ringnet.State.RUNNING
    assert net.state == ringnet.State.CLOSED
    with pytest.raises(ringnet.RingnetError, match="network is closed"):
        with net:
            pass
    never = ringnet.Network(workers=1, control_socket=False)
    never.close()
    with pytest.raises(ringnet.RingnetError, match="network is closed"):
        never.__enter__()


def _blocked_signals(tid: int) -> set[int]:
    with open(f"/proc/self/task/{tid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def test_ringnet_threads_block_signals(no_leaks, tmp_path):
    """A signal sent to the process must reach the application's threads, never ours."""
    import signal
    import threading
    with ringnet.Network(workers=1, control_dir=str(tmp_path)) as net:
        ours = [t for t in threading.enumerate() if t.name.startswith("ringnet-")]
        assert {t.name for t in ours} == {f"ringnet-ctl-{net.id}", "ringnet-resolv-watch",
                                          "ringnet-hostaddr-watch", "ringnet-supervise"}
        wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD,
                  signal.SIGUSR1, signal.SIGALRM}
        for t in ours:
            assert wanted <= _blocked_signals(t.native_id), t.name
        assert signal.SIGINT not in _blocked_signals(threading.main_thread().native_id)


def test_orchestrator_counter_view_is_read_only(no_leaks):
    import numpy as np
    with ringnet.Network(workers=1, control_socket=False) as net:
        net.run(["ping", "-c", "1", "-W", "60", "10.0.2.2"], capture_output=True, check=True)
        assert counter_reaches(net, "icmp_echo_replies", 1) == 1
        values = net._wctr[0].values
        # the worker's counters move on their own (frames the namespace's kernel sends);
        # the slots past them never do, so a write that got through would show there
        spare = len(net.counters()["workers"][0])
        assert spare < len(values)
        before = values.copy()
        with pytest.raises(ValueError, match="read-only"):
            values[-1] = 12345
        with pytest.raises(ValueError, match="read-only"):
            values[0] = 12345
        with pytest.raises(ValueError):
            values.flags.writeable = True
        assert np.array_equal(values[spare:], before[spare:]) and values[-1] == 0
        del values  # a live view keeps the mapping from being closed
        with open("/proc/self/maps") as f:
            maps = [line.split() for line in f if "memfd:ringnet-ctr" in line]
        assert len(maps) == 2  # the pump's and the worker's
        assert all(m[1] == "r--s" for m in maps), maps


class _SeenLock:
    """The network's query lock, noting in ``events`` when a thread asks for it, gets it
    and gives it back (a spy on the control path: the real lock does the locking)."""

    def __init__(self, lock, events: list) -> None:
        self.lock, self.events = lock, events

    def __enter__(self) -> None:
        self.events.append("wait")
        self.lock.acquire()
        self.events.append("held")

    def __exit__(self, *exc) -> None:
        self.events.append("released")
        self.lock.release()


def test_dns_change_waits_for_the_query_lock(no_leaks, monkeypatch):
    import ipaddress
    import threading
    from ringnet._resolv import Upstream
    with ringnet.Network(workers=1, control_socket=False, dns_upstream=("127.0.0.1",)) as net:
        new = [Upstream(ipaddress.ip_address("127.0.0.2"), 53)]
        events: list[str] = []
        lock = net._query_lock
        monkeypatch.setattr(net, "_query_lock", _SeenLock(lock, events))
        tell = net._tell_workers
        monkeypatch.setattr(net, "_tell_workers", lambda *a: (events.append("tell"), tell(*a)))
        with lock:
            t = threading.Thread(target=net._dns_changed, args=(new, []))
            t.start()
            wait_until(lambda: events == ["wait"], "the DNS change to ask for the query lock")
            assert t.is_alive() and events == ["wait"]  # held here: it waits, tells no worker
        t.join(HANG_S)
        assert not t.is_alive()
        assert events == ["wait", "held", "tell", "released"]
        monkeypatch.undo()
        assert net.flows().size == 0  # the exchange after it is still in step


def test_close_terminates_everything(no_leaks):
    net = ringnet.Network(workers=2).start()
    pids = net.pids()
    assert len(pids) == 3
    names = sorted(psutil.Process(p).name() for p in pids)
    assert names == ["ringnet-ns", "ringnet-worker", "ringnet-worker"]
    sleeper = net.spawn(["sh", "-c", "sleep 300 & sleep 300"])
    netns = os.stat(f"/proc/{net.pid}/ns/net").st_ino
    userns = os.stat(f"/proc/{net.pid}/ns/user").st_ino

    def sleeps_inside() -> int:
        n = 0
        for p in psutil.process_iter():
            try:
                n += _ns_inode(p.pid, "net") == netns and p.cmdline() == ["sleep", "300"]
            except psutil.Error:
                continue
        return n
    # both sleeps running in the namespace (one a daemon of sorts), beside the namespace child
    wait_until(lambda: sleeps_inside() == 2, "both sleeps to run in the namespace")
    assert _ns_inode(net.pid, "net") == netns
    net.close()
    net.close()  # idempotent
    for p in pids:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert sleeper.poll() is not None
    # Nothing keeps the namespaces alive: no process is left in them (our fds are
    # checked by no_leaks), so the kernel frees them. close() SIGKILLs what a command left
    # behind without waiting for it: a killed process ends when the kernel next runs it.

    def left_inside() -> list:
        out = []
        for p in psutil.process_iter(["status"]):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # dead; an orphan waits for init to reap it, holding only its credentials
            if _ns_inode(p.pid, "net") == netns or _ns_inode(p.pid, "user") == userns:
                out.append(p)
        return out
    wait_until(lambda: not left_inside(), "the processes in the namespaces to end")
    with pytest.raises(ringnet.RingnetError, match="closed"):
        net.spawn(["true"])


def _ns_inode(pid: int, kind: str) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return -1


def test_start_twice_refused(no_leaks):
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.RingnetError, match="starts only once"):
            net.start()


def test_spawn_rejects_string_argv(no_leaks):
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.RingnetError, match="sequence"):
            net.spawn("ping 10.0.2.2")
        assert net.run(["definitely-not-a-command"], capture_output=True).returncode == 127


def test_commands_run_as_root_inside(no_leaks):
    with ringnet.Network(workers=1) as net:
        out = net.run(["id", "-u"], capture_output=True, check=True).stdout
        assert out.strip() == b"0"
