"""Packet capture end to end: real transfers to host-loopback servers, the file read back.

Captures are checked with tcpdump (-r) for what a user sees (the handshake, the
bytes of a known transfer) and with a small pcapng reader here for what tcpdump
does not print: the direction of each packet, the snap length, the statistics
block. A capture whose writer is held back must drop frames and count them while
the transfer goes on: asserted on counters, never on time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

import pytest

import ringnet
from conftest import (HANG_S, as_user_argv, child_env, needs_userns, ringnet_cmd, unpriv_user,
                      wait_until, worker_counter)

pytestmark = needs_userns

GW4 = "10.0.2.2"
GUEST4 = "10.0.2.100"
MIB = 1 << 20

needs_tcpdump = pytest.mark.skipif(
    shutil.which("tcpdump") is None,
    reason="tcpdump is not installed (scripts/setup-test-env.sh installs it)")


class Sink:
    """A TCP server on 127.0.0.1: takes everything a client sends until EOF, then answers
    ``reply`` bytes and closes. ``received`` holds the byte count per connection."""

    def __init__(self, reply: int = 0) -> None:
        self.reply = reply
        self.received: list[int] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                n = 0
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    n += len(data)
                conn.sendall(b"r" * self.reply)
                self.received.append(n)

    def close(self) -> None:
        """Stop serving: shutdown() wakes the thread's accept() (close() alone would leave
        it waiting on an fd number the next test may reuse), then close and join."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(HANG_S)
        self.sock.close()


@pytest.fixture
def sink():
    s = Sink(reply=3000)
    yield s
    s.close()


CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
n = int(sys.argv[3])
block = b"q" * 65536
while n:
    k = min(n, len(block))
    s.sendall(block[:k])
    n -= k
s.shutdown(socket.SHUT_WR)
got = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    got += len(d)
print(got)
'''


def transfer(net, port: int, nbytes: int) -> int:
    """Send ``nbytes`` from inside to the sink, read its answer; return the answer's size."""
    r = net.run([sys.executable, "-c", CLIENT, GW4, str(port), str(nbytes)], capture_output=True,
                timeout=HANG_S * 2)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return int(r.stdout)


def read_pcapng(path: str) -> dict:
    """The blocks of a pcapng file ringnet wrote: interface snaplen and link type,
    packets (direction, captured and original length, data), statistics."""
    out: dict = {"packets": [], "stats": None}
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        btype, total = struct.unpack_from("=II", data, off)
        body = data[off + 8: off + total - 4]
        assert struct.unpack_from("=I", data, off + total - 4)[0] == total
        if btype == 0x0A0D0D0A:
            assert struct.unpack_from("=I", body)[0] == 0x1A2B3C4D
        elif btype == 1:
            out["linktype"], _, out["snaplen"] = struct.unpack_from("=HHI", body)
        elif btype == 6:
            _, hi, lo, caplen, orig = struct.unpack_from("=IIIII", body)
            pkt = body[20: 20 + caplen]
            opts = _options(body[20 + (caplen + 3) // 4 * 4:])
            out["packets"].append({"dir": struct.unpack("=I", opts[2])[0], "caplen": caplen,
                                   "orig": orig, "data": pkt, "ts": hi << 32 | lo})
        elif btype == 5:
            opts = _options(body[12:])
            out["stats"] = {"received": struct.unpack("=Q", opts[4])[0],
                            "dropped": struct.unpack("=Q", opts[5])[0]}
        off += total
    return out


def _options(raw: bytes) -> dict:
    opts = {}
    off = 0
    while off + 4 <= len(raw):
        code, length = struct.unpack_from("=HH", raw, off)
        if code == 0:
            break
        opts[code] = raw[off + 4: off + 4 + length]
        off += 4 + (length + 3) // 4 * 4
    return opts


def tcpdump(path: str, *args: str) -> list[str]:
    r = subprocess.run(["tcpdump", "-nn", "-r", path, *args], capture_output=True, text=True,
                       timeout=HANG_S)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def covered(lines: list[str], src: str, dst: str) -> int:
    """Payload bytes from ``src`` to ``dst`` that tcpdump shows, each byte once (relative
    sequence numbers, retransmissions counted once): the end of the covered range."""
    ranges = []
    for line in lines:
        if f" {src} > {dst}:" in line:
            m = re.search(r"seq (\d+):(\d+)", line)
            if m:
                ranges.append((int(m.group(1)), int(m.group(2))))
    ranges.sort()
    end = 1
    for a, b in ranges:
        assert a <= end, f"a gap before {a} in {src} > {dst}"
        end = max(end, b)
    return end - 1


@needs_tcpdump
def test_capture_shows_handshake_and_bytes_of_a_transfer(tmp_path, sink, no_leaks):
    path = str(tmp_path / "t.pcapng")
    up, down = 3 * MIB + 17, sink.reply
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=2) as net:
        with net.capture(path) as cap:
            assert transfer(net, sink.port, up) == down
            wait_until(lambda: sink.received == [up], "the sink to take everything")
        assert not cap.running and cap.frames > 0 and cap.dropped == 0
        frames = worker_counter(net, "capture_frames")
    src, dst = f"{GUEST4}.", f"{GW4}.{sink.port}"
    lines = [ln for ln in tcpdump(path) if f"{GW4}.{sink.port}" in ln]
    syn = next(i for i, ln in enumerate(lines) if "Flags [S]" in ln)
    assert f"{GW4}.{sink.port} > " in lines[syn + 1] and "Flags [S.]" in lines[syn + 1]
    assert "Flags [.]" in lines[syn + 2] and f" > {GW4}.{sink.port}" in lines[syn + 2]
    guest = lines[syn].split()[2]        # 10.0.2.100.PORT
    assert guest.startswith(src)
    assert covered(lines, guest, dst) == up
    assert covered(lines, dst, guest) == down
    assert any("Flags [F" in ln and ln.split()[2] == guest for ln in lines)
    # what tcpdump does not print: directions, every frame written, the statistics block
    f = read_pcapng(path)
    assert f["linktype"] == 101 and f["snaplen"] == 65575
    assert len(f["packets"]) == cap.frames == frames
    v4 = [p for p in f["packets"] if p["data"][0] >> 4 == 4]
    assert v4
    for p in v4:
        sender = socket.inet_ntoa(p["data"][12:16])
        assert p["dir"] == (2 if sender == GUEST4 else 1), "outbound: sent by the namespace"
        assert p["caplen"] == p["orig"] == struct.unpack("!H", p["data"][2:4])[0]
    assert {p["dir"] for p in f["packets"]} == {1, 2}
    assert f["stats"] == {"received": cap.frames, "dropped": 0}


def test_snap_length_is_respected(tmp_path, sink, no_leaks):
    path = str(tmp_path / "snap.pcapng")
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1) as net:
        with net.capture(path, snaplen=96):
            transfer(net, sink.port, MIB)
    f = read_pcapng(path)
    assert f["snaplen"] == 96
    assert f["packets"] and all(p["caplen"] == min(96, p["orig"]) for p in f["packets"])
    # the large frames really were larger, and their IP length says how large
    big = [p for p in f["packets"] if p["orig"] > 96]
    assert big and all(struct.unpack("!H", p["data"][2:4])[0] == p["orig"] for p in big)


def test_full_capture_ring_drops_and_counts_instead_of_waiting(tmp_path, sink, no_leaks):
    path = str(tmp_path / "drops.pcapng")
    up = 48 * MIB   # six times a worker's capture ring (8 MiB)
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1) as net:
        cap = net.capture(path)
        cap._hold.set()   # the writer stops draining: the ring fills and stays full
        assert transfer(net, sink.port, up) == sink.reply   # the traffic went on regardless
        dropped = worker_counter(net, "capture_drops")
        assert dropped > 0 and cap.dropped == dropped
        cap._hold.clear()
        cap.close()
        assert worker_counter(net, "capture_frames") == cap.frames
    f = read_pcapng(path)
    assert len(f["packets"]) == cap.frames
    assert f["stats"] == {"received": cap.frames + dropped, "dropped": dropped}


def test_capture_for_seconds_ends_by_itself(tmp_path, sink, no_leaks):
    path = str(tmp_path / "timed.pcapng")
    with ringnet.Network(control_socket=False, allow_host_loopback=True, workers=1) as net:
        cap = net.capture(path, seconds=0.5)
        assert cap.wait(HANG_S), "the capture did not end"
        transfer(net, sink.port, 1000)   # after the end: not captured
        assert worker_counter(net, "capture_frames") == cap.frames
        again = net.capture(str(tmp_path / "next.pcapng"))   # one ended: the next may start
        again.close()
    assert len(read_pcapng(path)["packets"]) == cap.frames


@needs_tcpdump
def test_runtime_capture_through_the_control_socket(tmp_path, sink, no_leaks):
    path = str(tmp_path / "cli.pcapng")
    with ringnet.Network(allow_host_loopback=True, workers=2, control_dir=str(tmp_path)) as net:
        cli = subprocess.Popen(ringnet_cmd("capture", net.id, path, "--dir", str(tmp_path)),
                               env=child_env(), stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: net._taps.current() is not None, "the capture to start")
            transfer(net, sink.port, 200_000)
            frames = worker_counter(net, "capture_frames")
            wait_until(lambda: net._taps.current().frames >= frames, "the writer to catch up")
            cli.send_signal(signal.SIGINT)
            _, err = cli.communicate(timeout=HANG_S)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 0, err
        m = re.search(r"(\d+) frames written to (\S+), (\d+) dropped", err)
        assert m and int(m.group(1)) >= frames and m.group(2) == path and m.group(3) == "0", err
        assert net._taps.current() is None
        # --seconds: the network ends it; the command waits for that and reports
        timed = str(tmp_path / "timed.pcapng")
        r = subprocess.run(ringnet_cmd("capture", net.id, timed, "--dir", str(tmp_path), "--seconds",
                                       "0.3", "--snaplen", "128"),
                           env=child_env(), capture_output=True, text=True, timeout=HANG_S)
        assert r.returncode == 0, r.stderr
        assert f"written to {timed}" in r.stderr
    lines = [ln for ln in tcpdump(path) if f"{GW4}.{sink.port}" in ln]
    assert "Flags [S]" in lines[0] and "Flags [S.]" in lines[1]
    assert read_pcapng(timed)["snaplen"] == 128


@pytest.fixture
def shared_dir():
    """A directory the unprivileged test user can write (pytest's tmp_path is root's)."""
    d = tempfile.mkdtemp(prefix="ringnet-capture-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_pcap_and_flow_log_from_the_command_line_as_unprivileged_user(shared_dir, sink):
    uid, _ = unpriv_user()
    pcap, flows = os.path.join(shared_dir, "run.pcapng"), os.path.join(shared_dir, "flows.jsonl")
    r = subprocess.run(as_user_argv(ringnet_cmd("run", "--workers", "1", "--allow-host-loopback",
                                                "--pcap", pcap, "--pcap-snaplen", "200",
                                                "--flow-log", flows, "--",
                                                sys.executable, "-c", CLIENT, GW4, str(sink.port),
                                                "5000")),
                       capture_output=True, text=True, timeout=HANG_S * 2, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sink.reply)
    assert os.stat(pcap).st_uid == uid
    f = read_pcapng(pcap)
    assert f["snaplen"] == 200 and f["packets"] and f["stats"]["dropped"] == 0
    syn = f["packets"][0]["data"]
    assert syn[9] == 6 and socket.inet_ntoa(syn[16:20]) == GW4
    records = [json.loads(line) for line in open(flows)]
    done = [x for x in records if x["event"] == "close" and x["remote_port"] == sink.port]
    assert len(done) == 1 and done[0]["bytes_in"] == 5000 and done[0]["bytes_out"] == sink.reply


def test_bad_capture_options_name_themselves(tmp_path, no_leaks):
    with pytest.raises(ringnet.ConfigError, match=r"pcap_snaplen=10 .* from 64 to 65575"):
        ringnet.NetworkConfig(pcap_snaplen=10)
    with pytest.raises(ringnet.ConfigError, match=r"pcap='/nonexistent/x.pcapng': directory"):
        ringnet.NetworkConfig(pcap="/nonexistent/x.pcapng")
    with pytest.raises(ringnet.ConfigError, match=r"flow_log=.* must be the path of a file"):
        ringnet.NetworkConfig(flow_log=str(tmp_path))
    r = subprocess.run(ringnet_cmd("run", "--pcap-snaplen", "70000", "--", "true"), env=child_env(),
                       capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 125 and "--pcap-snaplen=70000 is out of range" in r.stderr, r.stderr
    assert "from 64 to 65575" in r.stderr
    r = subprocess.run(ringnet_cmd("run", "--flow-log", "/nonexistent/f.jsonl", "--", "true"),
                       env=child_env(), capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 125 and "--flow-log='/nonexistent/f.jsonl'" in r.stderr, r.stderr
    for args, name in ((["--snaplen", "5"], "--snaplen 5"), (["--seconds", "0"], "--seconds 0.0")):
        r = subprocess.run(ringnet_cmd("capture", "nosuchnet", str(tmp_path / "x"), *args),
                           env=child_env(), capture_output=True, text=True, timeout=HANG_S)
        assert r.returncode == 1 and f"{name} is out of range" in r.stderr, r.stderr
    with ringnet.Network(workers=1, control_socket=False) as net:
        with pytest.raises(ringnet.ConfigError, match=r"snaplen=0 .* from 64 to 65575"):
            net.capture(str(tmp_path / "x.pcapng"), snaplen=0)
        with pytest.raises(ringnet.ConfigError, match=r"seconds=-1 .* above 0"):
            net.capture(str(tmp_path / "x.pcapng"), seconds=-1)
        with pytest.raises(ringnet.RingnetError, match=r"capture file .*: Is a directory"):
            net.capture(str(tmp_path))
        with net.capture(str(tmp_path / "one.pcapng")):
            with pytest.raises(ringnet.RingnetError, match=r"a capture runs already"):
                net.capture(str(tmp_path / "two.pcapng"))
