"""Control protocol: framing, fd passing, and rejection of malformed messages."""

import os
import socket
import struct

import pytest

from ringnet import ProtocolError
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
    _control.send_error(a, "rings refused: seals missing")
    with pytest.raises(ProtocolError, match="seals missing"):
        _control.expect(b, Msg.ACK, 1, "worker 0")


def test_expect_wrong_type_or_fd_count(pair):
    a, b = pair
    _control.send(a, Msg.READY, {})
    with pytest.raises(ProtocolError, match="expected ACK"):
        _control.expect(b, Msg.ACK, 1, "worker 0")
    _control.send(a, Msg.HELLO, {})
    with pytest.raises(ProtocolError, match="with 0 fds, expected HELLO with 3"):
        _control.expect(b, Msg.HELLO, 1, "namespace child", nfds=3)
