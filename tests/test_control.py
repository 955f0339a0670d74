"""Control protocol: framing, fd passing, rejection of malformed messages, and errors that
cross it as data (class, errno, child, step)."""

import errno
import fcntl
import os
import socket
import struct

import pytest

import ringnet
from ringnet import ChildError, ChildOSError, ConfigError, CoreError, NamespaceError, ProtocolError
from ringnet import _control
from ringnet._control import Msg


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_roundtrip_with_fds(pair):
    a, b = pair
    r, w = os.pipe()
    _control.send(a, Msg.HELLO, {"version": 1, "worker": 3}, [r, w])
    msg = _control.recv(b, timeout=1)
    assert msg.type == Msg.HELLO and msg.body == {"version": 1, "worker": 3}
    assert len(msg.fds) == 2
    os.write(msg.fds[1], b"x")
    assert os.read(r, 1) == b"x"
    msg.close_fds()
    os.close(r)
    os.close(w)


def test_eof_is_none(pair):
    a, b = pair
    a.close()
    assert _control.recv(b, timeout=1) is None


def test_timeout(pair):
    with pytest.raises(TimeoutError):
        _control.recv(pair[1], timeout=0.05)


def raw(type_=1, body=b"{}", magic=0x54434E52, version=1, length=None):
    return struct.pack("<IHHI", magic, version, type_, len(body) if length is None else length) + body


@pytest.mark.parametrize("payload,match", [
    (b"abc", "shorter than its header"),
    (raw(magic=0xDEADBEEF), "bad magic"),
    (raw(version=9), "version 9"),
    (raw(type_=99), "unknown control message type"),
    (raw(body=b"[1,2]"), "not a JSON object"),
    (raw(body=b"{nope"), "not JSON"),
    (raw(body=b"\xff\xfe"), "not JSON"),
    (raw(length=100), "length field"),
])
def test_malformed_messages_rejected_and_fds_closed(pair, payload, match):
    a, b = pair
    r, w = os.pipe()
    before = open_fds()
    socket.send_fds(a, [payload], [r])
    with pytest.raises(ProtocolError, match=match):
        _control.recv(b, timeout=1)
    assert open_fds() == before  # the passed fd was closed, nothing leaked
    os.close(r)
    os.close(w)


def test_too_many_fds_rejected(pair):
    a, b = pair
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
    before = open_fds()
    socket.send_fds(a, [raw()], fds)
    with pytest.raises(ProtocolError, match="carries 3 fds"):
        _control.recv(b, timeout=1, max_fds=2)
    assert open_fds() == before
    for fd in fds:
        os.close(fd)


def test_oversized_body_refused(pair):
    with pytest.raises(ProtocolError, match="exceeds"):
        _control.send(pair[0], Msg.ERROR, {"error": "x" * 70000})


def test_expect_turns_error_into_exception(pair):
    a, b = pair
    _control.send_error(a, ProtocolError("rings refused: seals missing"), "worker 0", "check rings")
    with pytest.raises(ProtocolError, match="seals missing") as info:
        _control.expect(b, Msg.ACK, 1, "worker 0")
    assert type(info.value) is ProtocolError
    assert (info.value.child, info.value.step) == ("worker 0", "check rings")
    assert str(info.value) == "worker 0 (check rings): rings refused: seals missing"


@pytest.mark.parametrize("exc,cls", [
    (PermissionError(errno.EPERM, "Operation not permitted"), PermissionError),
    (OSError(errno.EMFILE, "Too many open files"), OSError),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/net/tun"), FileNotFoundError),
    (TimeoutError("no control message within the time allowed"), TimeoutError),
])
def test_os_errors_cross_as_the_same_class_with_errno(pair, exc, cls):
    a, b = pair
    _control.send_error(a, exc, "ns", "open tun")
    with pytest.raises(cls) as info:
        _control.expect(b, Msg.READY, 1, "ns")
    got = info.value
    assert isinstance(got, ChildError) and isinstance(got, cls)
    assert type(got) is ChildOSError.of(cls)
    assert (got.errno, got.strerror, got.filename) == (exc.errno, exc.strerror, exc.filename)
    assert (got.child, got.step) == ("ns", "open tun")
    assert str(got) == f"namespace child (open tun): {exc}"


def test_ringnet_errors_cross_as_themselves(pair):
    a, b = pair
    for exc in (CoreError(errno.ENOMEM, "rn_worker_new"), NamespaceError("no tun"),
                ConfigError("mtu=1 is out of range")):
        _control.send_error(a, exc, "worker 1", "start worker")
        with pytest.raises(type(exc)) as info:
            _control.expect(b, Msg.ACK, 1, "worker 1")
        assert type(info.value) is type(exc)
        assert str(info.value) == f"worker 1 (start worker): {exc}"
        assert getattr(info.value, "errno", None) == getattr(exc, "errno", None)
    assert info.value.child == "worker 1"


def test_error_passed_on_keeps_its_origin(pair):
    """The namespace child re-raises a worker's error and reports it in turn: the orchestrator
    still learns that worker 0 failed, in which step, with which errno."""
    a, b = pair
    _control.send_error(a, PermissionError(errno.EPERM, "Operation not permitted"), "worker 0",
                        "map rings")
    with pytest.raises(PermissionError) as info:
        _control.expect(b, Msg.ACK, 1, "worker 0")
    _control.send_error(b, info.value, "ns", "hand rings to workers")
    with pytest.raises(PermissionError) as again:
        _control.expect(a, Msg.READY, 1, "ns")
    assert (again.value.child, again.value.step, again.value.errno) == ("worker 0", "map rings",
                                                                        errno.EPERM)


def test_unknown_or_malformed_errors_become_child_errors(pair):
    a, b = pair
    for body in ({"kind": "SystemExit", "error": "bye"}, {"kind": "PermissionError", "errno": "x",
                                                         "error": "odd"},
                 {"error": "plain text"}, {}):
        _control.send(a, Msg.ERROR, body)
        with pytest.raises(ChildError) as info:
            _control.expect(b, Msg.ACK, 1, "worker 0")
        assert info.value.child == "worker 0"
    _control.send_error(a, ValueError("a bug"), "ns", "serve")
    with pytest.raises(ChildError, match="internal error: ValueError: a bug") as info:
        _control.expect(b, Msg.ACK, 1, "ns")
    assert type(info.value) is ChildError


def test_worker_setup_error_arrives_as_the_same_os_error(no_leaks):
    """A worker offered a write-sealed ring memfd fails to map it (EPERM): both the namespace
    side and the orchestrator get that PermissionError back, with errno and the step."""
    import dataclasses

    from ringnet._core import lib
    from ringnet._shm import REQUIRED_SEALS, CounterArray
    from ringnet.network import Role, _spawn
    cfg = ringnet.NetworkConfig(workers=1, ring_size=512 * 1024)
    ctr = CounterArray.create("test")
    ns_side, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spec = {"config": dataclasses.asdict(cfg), "hash_key": "00" * 16, "dns_upstreams": [],
            "index": 0, "ns_fd": worker_end.fileno(), "counters_fd": ctr.fd}
    try:
        child = _spawn(Role.WORKER, 0, spec, [worker_end.fileno(), ctr.fd])
    finally:
        worker_end.close()
    memfd = os.memfd_create("ringnet-test-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    evs = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    splice = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os.ftruncate(memfd, lib.rn_shm_size(cfg.ring_size))
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, REQUIRED_SEALS | fcntl.F_SEAL_WRITE)
        _control.send(ns_side, Msg.HELLO, {"version": _control.PROTOCOL_VERSION, "worker": 0,
                                           "ring_size": cfg.ring_size},
                      [memfd, *evs, splice[1].fileno()])
        with pytest.raises(PermissionError) as info:
            _control.expect(ns_side, Msg.ACK, 60, "worker 0")
        msg = _control.recv(child.ctl, timeout=60)
        assert msg is not None and msg.type == Msg.ERROR
        with pytest.raises(PermissionError) as reported:
            _control.raise_error(msg, "worker 0")
        assert child.proc.wait(60) == 1
    finally:
        for fd in (memfd, *evs):
            os.close(fd)
        for sock in splice:
            sock.close()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
        child.ctl.close()
        ns_side.close()
        ctr.close()
    for got in (info.value, reported.value):
        assert isinstance(got, ChildError)
        assert got.errno == errno.EPERM
        assert (got.child, got.step) == ("worker 0", "map rings")


def test_expect_wrong_type_or_fd_count(pair):
    a, b = pair
    _control.send(a, Msg.READY, {})
    with pytest.raises(ProtocolError, match="expected ACK"):
        _control.expect(b, Msg.ACK, 1, "worker 0")
    _control.send(a, Msg.HELLO, {})
    with pytest.raises(ProtocolError, match="with 0 fds, expected HELLO with 3"):
        _control.expect(b, Msg.HELLO, 1, "namespace child", nfds=3)
