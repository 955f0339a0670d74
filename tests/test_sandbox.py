"""The children's sandbox (csrc/sandbox.c, ringnet/_sandbox.py): each layer, and the whole.

Unit tests fork a child of the test process that enters the sandbox as a role and
then tries what a compromised child would (ptrace, process_vm_readv, pidfd_getfd,
execve, opening a host file, signalling another process, an AF_UNIX socket,
executable memory, fork), reporting each errno over a pipe; a probe of the same
call without the sandbox shows the call itself works, so each test can fail.
End-to-end tests start real networks and look at their children from the host
(/proc/PID/status, /proc/PID/root) and from inside the namespace, where root is
the user: /proc/PID/fd, pidfd_getfd, process_vm_readv and ptrace of a worker and
of the namespace child must all be refused (and pidfd_getfd works with
sandbox=False, which is what the sandbox is for). Traffic through a sandboxed
network is the whole of test_tcp/test_udp/test_dns/test_icmp, which run with the
default sandbox=True; test_traffic_through_sandboxed_children is a quick
check of all four here.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import signal
import socket
import subprocess
import sys
import threading

import pytest

import ringnet
from ringnet import _sandbox
from ringnet._core import lib
from ringnet._nsutil import unshare_user_net, write_id_maps
from ringnet.errors import CoreError
from conftest import as_user_argv, child_env, needs_userns, unpriv_user

X86_64 = platform.machine() == "x86_64"
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="system call numbers are x86_64's")

# x86_64 system call numbers
NR_PTRACE, NR_KILL, NR_EXECVE, NR_FORK = 101, 62, 59, 57
NR_PROCESS_VM_READV, NR_PIDFD_OPEN, NR_PIDFD_GETFD, NR_GETPID = 310, 434, 438, 39
X32_BIT = 0x40000000
PTRACE_SEIZE = 0x4206

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_errno(nr: int, *args: int) -> int:
    """errno of a raw system call, 0 if it succeeded."""
    ctypes.set_errno(0)
    rc = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if rc >= 0 else ctypes.get_errno()


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def vm_read_errno(pid: int) -> int:
    """errno of reading 8 bytes at 0x1000 of ``pid``: EPERM when the access check refuses,
    EFAULT when it allows and the address is unmapped."""
    buf = ctypes.create_string_buffer(8)
    local = _Iovec(ctypes.addressof(buf), 8)
    remote = _Iovec(0x1000, 8)
    return sys_errno(NR_PROCESS_VM_READV, pid, ctypes.addressof(local), 1,
                     ctypes.addressof(remote), 1, 0)


def oserror(fn) -> int:
    """errno of the OSError ``fn()`` raises, 0 if it returns."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def become(role: str | None) -> None:
    """Stand where ``role`` stands when it enters the sandbox: the namespace child is in
    user and net namespaces of its own; a worker in the host's."""
    if role == "nschild":
        uid, gid = os.getuid(), os.getgid()
        unshare_user_net()
        write_id_maps(uid, gid)


def in_child(role: str | None, probe, steps: int | None = None,
             before=None) -> tuple[dict, int]:
    """Fork; the child runs ``before()``, enters the sandbox as ``role`` (None: does not)
    and returns ``probe()``'s dict over a pipe. Returns (that dict, wait status)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rd)
            if before is not None:
                before()
            become(role)
            if role is not None:
                _sandbox.enter(role, steps=steps)
            out = probe()
        except BaseException as e:
            out = {"exception": f"{type(e).__name__}: {e}"}
        try:
            os.write(wr, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wr)
    chunks = []
    while True:
        b = os.read(rd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rd)
    _, status = os.waitpid(pid, 0)
    return (json.loads(b"".join(chunks)) if chunks else {}), status


@pytest.fixture
def victim():
    """A process of ours for the child to attack (never the test process itself)."""
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


def _attacks(victim: int, sock: int) -> dict:
    """errno of each thing a compromised child might try against ``victim``, a process
    of the same user; ``sock`` is a socket it holds."""
    bin_true = ctypes.c_char_p(b"/bin/true")
    argv = (ctypes.c_char_p * 2)(bin_true, None)

    def unix_socket():
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()

    def exec_memory():
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC).close()

    def passwd():
        open("/etc/passwd", "rb").close()

    return {
        "ptrace": sys_errno(NR_PTRACE, PTRACE_SEIZE, victim, 0, 0),
        "process_vm_readv": vm_read_errno(victim),
        "pidfd_open": sys_errno(NR_PIDFD_OPEN, victim, 0),
        "pidfd_getfd": sys_errno(NR_PIDFD_GETFD, 0, 0, 0),
        "kill_other": sys_errno(NR_KILL, victim, 0),
        "execve": sys_errno(NR_EXECVE, ctypes.cast(bin_true, ctypes.c_void_p).value,
                            ctypes.addressof(argv), 0),
        "open_passwd": oserror(passwd),
        "unix_socket": oserror(unix_socket),
        "exec_memory": oserror(exec_memory),
        "fork": sys_errno(NR_FORK),
        # SIGIO for the victim whenever the socket is ready: a kill() by other means
        "fcntl_setown": oserror(lambda: fcntl.fcntl(sock, fcntl.F_SETOWN, victim)),
    }


# Unit tests: one forked child per layer ---------------------------------------------------

@needs_userns
@needs_x86_64
@pytest.mark.parametrize("role", ["worker", "nschild"])
def test_filter_refuses_what_an_attacker_would_do(role, victim):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        out, status = in_child(role, lambda: _attacks(victim, sock.fileno()))
    assert os.WIFEXITED(status), status
    assert out == {k: errno.EPERM for k in out} and len(out) == 11, out


@needs_userns
@needs_x86_64
def test_the_same_calls_work_without_the_sandbox(victim):
    """The control: the calls refused above are not refused by anything else (as root:
    the victim is ours; fork, ptrace and execve are left out, they would take effect)."""
    def probe():
        def memory():
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC).close()
        return {"process_vm_readv": vm_read_errno(victim),
                "pidfd_open": sys_errno(NR_PIDFD_OPEN, victim, 0),
                "kill_other": sys_errno(NR_KILL, victim, 0),
                "open_passwd": oserror(lambda: open("/etc/passwd", "rb").close()),
                "unix_socket": oserror(lambda: socket.socket(socket.AF_UNIX).close()),
                "exec_memory": oserror(memory),
                "fcntl_setown": oserror(lambda: fcntl.fcntl(sock.fileno(), fcntl.F_SETOWN,
                                                            victim))}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out, _ = in_child(None, probe)
    finally:
        sock.close()
    assert out == {"process_vm_readv": errno.EFAULT, "pidfd_open": 0, "kill_other": 0,
                   "open_passwd": 0, "unix_socket": 0, "exec_memory": 0,
                   "fcntl_setown": 0}, out


@needs_userns
@needs_x86_64
def test_worker_keeps_the_host_network_and_itself():
    """What a worker needs still works in the worker's sandbox: new host sockets in the
    host's network namespace (a TCP connect to a listener of the test process on
    loopback), UDP, signalling itself, memory. (Addresses, not names: getaddrinfo()
    would import the idna codec, and nothing can be imported any more.)"""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(30)
    port = srv.getsockname()[1]

    def probe():
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(("127.0.0.1", port))
        c.sendall(b"from the sandbox")
        c.close()
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.bind(("::1", 0))
        u.sendto(b"x", u.getsockname()[:2])
        got = u.recv(10)
        u.close()
        buf = bytearray(10 << 20)  # mmap'd by malloc
        return {"udp": got.decode(), "kill_self": sys_errno(NR_KILL, os.getpid(), 0),
                "buf": len(buf), "netns": oserror(lambda: os.stat("/proc/self/ns/net"))}
    try:
        out, status = in_child("worker", probe)
        conn, _ = srv.accept()
        with conn:
            assert conn.recv(100) == b"from the sandbox"
    finally:
        srv.close()
    # /proc is gone (no filesystem at all): stat is refused by the filter
    assert out == {"udp": "x", "kill_self": 0, "buf": 10 << 20, "netns": errno.EPERM}, out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@needs_userns
def test_nschild_may_start_threads_and_make_ip_sockets_only():
    """The namespace child's list lets it start threads (its pump threads start after the
    sandbox: glibc's clone3 gets ENOSYS and falls back to clone with CLONE_THREAD) and
    make IPv4 and IPv6 sockets of its namespace (Network.socket(), the splice route), but no other
    family, and, without capabilities, no raw socket; each thread carries the filter."""
    def probe():
        seen = {}

        def in_thread():
            seen["tid"] = threading.get_native_id()
            seen["netlink"] = oserror(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        return {"thread": bool(seen.get("tid")), "thread_netlink": seen.get("netlink"),
                "udp": oserror(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
                "tcp6": oserror(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()),
                "splice_stream": oserror(lambda: socket.socket(
                    socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC).close()),
                "unix": oserror(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()),
                "raw": oserror(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                     socket.IPPROTO_ICMP).close())}
    out, status = in_child("nschild", probe)
    assert out == {"thread": True, "thread_netlink": errno.EPERM, "udp": 0, "tcp6": 0,
                   "splice_stream": 0, "unix": errno.EPERM, "raw": errno.EPERM}, out


@needs_userns
def test_empty_root_alone():
    """The mount layer by itself (no filter): the root is an empty read-only tmpfs, the
    host's files do not exist, nothing can be created."""
    def probe():
        return {"root": os.listdir("/"), "passwd": oserror(lambda: open("/etc/passwd")),
                "proc": oserror(lambda: os.stat("/proc/self")),
                "create": oserror(lambda: open("/x", "w")),
                "cwd": os.getcwd()}
    out, _ = in_child("worker", probe, steps=lib.RN_SANDBOX_USERNS | lib.RN_SANDBOX_MOUNTNS)
    assert out == {"root": [], "passwd": errno.ENOENT, "proc": errno.ENOENT,
                   "create": errno.EROFS, "cwd": "/"}, out


@needs_userns
@pytest.mark.parametrize("role", ["worker", "nschild"])
def test_status_of_a_sandboxed_process(role):
    """From the host: no_new_privs, a seccomp filter, no capabilities in any set, and a
    root that is not the host's and holds nothing."""
    rd, wr = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            become(role)
            _sandbox.enter(role)
            os.write(wr, b"in")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(wr)
    try:
        assert os.read(rd, 2) == b"in"
        status = proc_status(pid)
        root = root_view(pid)
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (rd, go_r, go_w):
            os.close(fd)
    assert sandboxed(status), status
    assert root == HIDDEN_ROOT, root


@needs_userns
def test_threads_refuse_the_per_thread_steps():
    """Capabilities and namespaces are per thread: with another thread running, entering
    fails (naming the reason and the switch) instead of leaving that thread out."""
    stop = threading.Event()

    def start_thread():
        threading.Thread(target=stop.wait, daemon=True).start()
    out, _ = in_child("worker", lambda: {"entered": True}, before=start_thread)
    assert "CoreError" in out.get("exception", ""), out
    assert "single thread" in out["exception"] and "sandbox=False" in out["exception"], out


def test_disabled_does_nothing():
    def probe():
        with open("/proc/self/status") as f:
            return {"status": f.read()}
    out, _ = in_child(None, lambda: {"applied": _sandbox.enter("worker", enabled=False),
                                     **probe()})
    assert out["applied"] == 0
    assert parse_status(out["status"])["Seccomp"] == "0"


def test_unknown_role():
    with pytest.raises(ValueError, match="unknown sandbox role"):
        _sandbox.enter("pump")


@needs_x86_64
@needs_userns
def test_other_abi_kills_the_process():
    """An x32 system call (only injected code would make one) kills the process with
    SIGSYS rather than reaching an unfiltered table."""
    out, status = in_child("worker", lambda: {"rc": sys_errno(X32_BIT | NR_GETPID)})
    assert out == {}
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, status


def test_step_names():
    assert _sandbox.step_names(lib.RN_SANDBOX_ALL) == [
        "no_new_privs", "own user namespace", "empty mount namespace", "not dumpable",
        "no capabilities", "seccomp allow-list"]


# End to end -------------------------------------------------------------------------------

def parse_status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.strip().splitlines() if ":\t" in line)


def proc_status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    with open(path) as f:
        return {k: v.strip() for k, v in parse_status(f.read()).items()}


def sandboxed(st: dict[str, str]) -> bool:
    return (st["NoNewPrivs"] == "1" and st["Seccomp"] == "2" and int(st["CapEff"], 16) == 0
            and int(st["CapPrm"], 16) == 0 and int(st["CapInh"], 16) == 0
            and int(st["CapBnd"], 16) == 0 and int(st.get("CapAmb", "0"), 16) == 0)


# What /proc/PID/root of a sandboxed child shows: root may look, and finds an empty
# directory that is not the host's root; the user may not even look (not dumpable).
HIDDEN_ROOT = {"same_as_host": False, "entries": []} if os.geteuid() == 0 else {"denied": True}


def root_view(pid: int) -> dict:
    """How /proc/PID/root looks to us (root: we may look; the test user may not)."""
    try:
        st, host = os.stat(f"/proc/{pid}/root"), os.stat("/")
        return {"same_as_host": (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino),
                "entries": os.listdir(f"/proc/{pid}/root")}
    except PermissionError:
        return {"denied": True}


INSIDE_PROBE = r'''
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(*a):
    ctypes.set_errno(0)
    return 0 if libc.syscall(*[ctypes.c_long(x) for x in a]) >= 0 else ctypes.get_errno()
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
out = {}
for pid in map(int, sys.argv[2:]):
    r = {}
    try:  # the link of every fd (the memfds of the rings and counters among them)
        for fd in os.listdir(f"/proc/{pid}/fd"):
            os.readlink(f"/proc/{pid}/fd/{fd}")
        r["fd"] = 0
    except OSError as e:
        r["fd"] = e.errno
    pfd = os.pidfd_open(pid)
    r["pidfd_getfd"] = sc(438, pfd, 0, 0)
    os.close(pfd)
    buf = ctypes.create_string_buffer(8)
    loc, rem = Iov(ctypes.addressof(buf), 8), Iov(0x1000, 8)
    r["vm_read"] = sc(310, pid, ctypes.addressof(loc), 1, ctypes.addressof(rem), 1, 0)
    if sys.argv[1] == "ptrace":
        r["ptrace"] = sc(101, 0x4206, pid, 0, 0)  # PTRACE_SEIZE: does not stop the target
    out[pid] = r
print(json.dumps(out))
'''


def probe_from_inside(net: ringnet.Network, ptrace: bool) -> dict[int, dict]:
    r = net.run([sys.executable, "-c", INSIDE_PROBE, "ptrace" if ptrace else "-",
                 *map(str, net.pids())], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return {int(k): v for k, v in json.loads(r.stdout).items()}


@needs_userns
@needs_x86_64
def test_children_are_isolated(no_leaks):
    """The sandbox's own guarantee: even where root inside sees the children's PIDs (no
    PID namespace for the command), it can neither read their fds, take them, read their
    memory nor ptrace them."""
    with ringnet.Network(workers=2, pid_namespace=False) as net:
        pids = net.pids()
        assert len(pids) == 3
        for pid in pids:
            st = proc_status(pid)
            assert sandboxed(st), (pid, st)
            assert root_view(pid) == HIDDEN_ROOT
            # every thread: the pump threads started inside the sandbox
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                assert sandboxed(proc_status(pid, tid)), (pid, tid)
        nthreads = {pid: int(proc_status(pid)["Threads"]) for pid in pids}
        assert sorted(nthreads.values()) == [1, 1, 3]  # two workers; nschild + 2 pump threads
        inside = probe_from_inside(net, ptrace=True)
    for pid in pids:
        assert inside[pid] == {"fd": errno.EACCES, "pidfd_getfd": errno.EPERM,
                               "vm_read": errno.EPERM, "ptrace": errno.EPERM}, (pid, inside)


@needs_userns
@needs_x86_64
def test_without_the_sandbox_children_are_still_not_dumpable(no_leaks):
    """sandbox=False leaves the children unfiltered (no seccomp, their capabilities, the
    host's filesystem), but setup_done() still makes them not dumpable: root inside,
    though it shares the namespace child's user namespace and uid and here sees the
    children's PIDs (no PID namespace for the command), can neither read their fds (the
    tun device, the rings), take them (pidfd_getfd), read their memory nor ptrace them.
    (Before not-dumpable was the default, it could do all but ptrace the workers.)"""
    with ringnet.Network(workers=1, sandbox=False, pid_namespace=False) as net:
        pids = net.pids()
        for pid in pids:
            st = proc_status(pid)
            assert st["Seccomp"] == "0" and st["NoNewPrivs"] == "1", (pid, st)
        inside = probe_from_inside(net, ptrace=True)
    assert set(inside) == set(pids)
    for pid in pids:
        assert inside[pid] == {"fd": errno.EACCES, "pidfd_getfd": errno.EPERM,
                               "vm_read": errno.EPERM, "ptrace": errno.EPERM}, (pid, inside)


TCP_ECHO_V4 = "10.0.2.2"


@needs_userns
def test_traffic_through_sandboxed_children(no_leaks):
    """TCP, UDP, ICMP and DNS through sandboxed children (the full suites: test_tcp,
    test_udp, test_icmp, test_dns run with the default sandbox=True)."""
    from localdns import LocalDns

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        tcp.settimeout(0.2)
        udp.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = tcp.accept()
                with c:
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    c.sendall(data[::-1][1:] + b"\n")
            except socket.timeout:
                pass
            try:
                d, a = udp.recvfrom(2048)
                udp.sendto(d.upper(), a)
            except socket.timeout:
                pass
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    script = (
        "import socket, sys\n"
        "gw, tp, up = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "c = socket.create_connection((gw, tp), timeout=10)\n"
        "c.sendall(b'x' * 100000 + b'y\\n')\n"
        "d = b''\n"
        "while not d.endswith(b'\\n'):\n"
        "    d += c.recv(65536)\n"
        "assert d == b'y' + b'x' * 100000 + b'\\n', len(d)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "u.settimeout(10)\n"
        "u.sendto(b'ping', (gw, up))\n"
        "assert u.recv(100) == b'PING'\n"
        "print(socket.getaddrinfo('example.test', 80, socket.AF_INET)[0][4][0])\n")
    try:
        with LocalDns() as dns, ringnet.Network(workers=2, allow_host_loopback=True,
                                                dns_upstream=dns.upstream) as net:
            assert all(proc_status(p)["Seccomp"] == "2" for p in net.pids())
            r = net.run([sys.executable, "-c", script, TCP_ECHO_V4, str(tcp.getsockname()[1]),
                         str(udp.getsockname()[1])], capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr.decode()
            assert r.stdout.decode().strip() == "192.0.2.10"
            p = net.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", TCP_ECHO_V4],
                        capture_output=True, timeout=30)
            assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
            assert all(proc_status(pid)["Seccomp"] == "2" for pid in net.pids())
    finally:
        stop.set()
        th.join()
        tcp.close()
        udp.close()


NO_USERNS = r'''
import sys, ringnet
try:
    with ringnet.Network(workers=1, sandbox=sys.argv[1] == "on", control_socket=False,
                     pid_namespace=False) as net:  # a PID namespace needs a user namespace
        print("started", net.run(["true"]).returncode)
except ringnet.RingnetError as e:
    print("refused:", e)
'''


@needs_userns
@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_worker_without_user_namespaces(sandbox):
    """Where the worker may not make a user namespace (here: ringnet runs in a user
    namespace that allows one more, which the namespace child takes), the network does
    not start half isolated: the error names the step and the switch; with sandbox=False
    it starts."""
    shell = f'echo 1 > /proc/sys/user/max_user_namespaces && exec "$0" -c "$1" {sandbox}'
    r = subprocess.run(["unshare", "-Ur", "sh", "-c", shell, sys.executable, NO_USERNS],
                       capture_output=True, text=True, timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    if sandbox == "on":
        assert r.stdout.startswith("refused:"), r.stdout + r.stderr
        assert "own user namespace" in r.stdout and "sandbox=False" in r.stdout, r.stdout
    else:
        assert r.stdout.strip() == "started 0", r.stdout + r.stderr


UNPRIV = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
import ringnet
from test_sandbox import proc_status, sandboxed, root_view, probe_from_inside
with ringnet.Network(workers=1, pid_namespace=False) as net:  # the children's PIDs visible
    pids = net.pids()
    out = {"uid": os.getuid(), "sandboxed": [sandboxed(proc_status(p)) for p in pids],
           "roots": [root_view(p) for p in pids],
           "inside": probe_from_inside(net, ptrace=True),
           "ping": net.run(["ping", "-c", "1", "-W", "2", "10.0.2.2"],
                           capture_output=True).returncode}
print(json.dumps(out))
'''


@needs_userns
@needs_x86_64
@pytest.mark.unpriv
def test_isolated_as_unprivileged_user():
    """As users run ringnet: the worker's own user namespace needs no privilege, and
    namespace root (the user) can neither look into nor take from the children."""
    uid, _ = unpriv_user()
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(as_user_argv([sys.executable, "-c", UNPRIV, tests_dir]),
                       capture_output=True, text=True, timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == uid
    assert out["sandboxed"] == [True, True]
    assert out["roots"] == [{"denied": True}] * 2  # not dumpable: not even its own user
    assert out["ping"] == 0
    for pid, res in out["inside"].items():
        assert res == {"fd": errno.EACCES, "pidfd_getfd": errno.EPERM, "vm_read": errno.EPERM,
                       "ptrace": errno.EPERM}, (pid, res)
