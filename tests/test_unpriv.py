"""The whole path as an unprivileged uid: no root anywhere, as users run ringnet.

Run as root (as CI does), these tests drop to the unprivileged test user with
setpriv; run as a normal user, they run as that user.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import as_user_argv, child_env, needs_userns, ringnet_processes, unpriv_user

pytestmark = [needs_userns, pytest.mark.unpriv]

LIFECYCLE = r'''
import json, os, time, ringnet
def replies(net):
    return sum(w["icmp_echo_replies"] + w["icmp6_echo_replies"] for w in net.counters()["workers"])
with ringnet.Network(workers=2, mtu=65520) as net:
    pings = [net.run(a, capture_output=True).returncode for a in (
        ["ping", "-c", "3", "-i", "0.2", "-W", "60", "10.0.2.2"],
        ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "60", "fd00::2"])]
    ids = net.run(["sh", "-c", "id -u; cat /proc/self/uid_map"], capture_output=True).stdout.decode()
    # a worker counts a reply after sending it: wait for the count (60 s: only a hang detector)
    hang = time.monotonic() + 60
    while replies(net) < 6 and time.monotonic() < hang:
        time.sleep(0.005)
    pids = net.pids()
    print(json.dumps({"uid": os.getuid(), "pings": pings, "inside": ids.split(),
                      "replies": replies(net), "offloads": net.offloads, "pids": pids}))
'''


def test_lifecycle_and_ping_as_unprivileged_user():
    uid, _ = unpriv_user()
    r = subprocess.run(as_user_argv([sys.executable, "-c", LIFECYCLE]), capture_output=True, text=True,
                       timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == uid != 0
    assert out["pings"] == [0, 0]
    assert out["inside"][:4] == ["0", "0", str(uid), "1"]  # root inside, mapped to our uid only
    assert out["replies"] == 6
    assert {"csum", "tso4", "tso6"} <= set(out["offloads"])


def test_cli_run_as_unprivileged_user():
    uid, _ = unpriv_user()
    before = ringnet_processes(uid)
    r = subprocess.run(as_user_argv([sys.executable, "-m", "ringnet", "run", "--workers", "1", "--",
                                     "ping", "-c", "2", "-i", "0.2", "-W", "60", "10.0.2.2"]),
                       capture_output=True, text=True, timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ringnet_processes(uid) == before


def test_attach_refuses_another_users_process():
    uid, _ = unpriv_user()
    if uid == 0:
        pytest.skip("needs an unprivileged user")
    # PID 1 belongs to root: the unprivileged user may not attach to it.
    r = subprocess.run(as_user_argv([sys.executable, "-m", "ringnet", "attach", "1"]),
                       capture_output=True, text=True, timeout=60, env=child_env(), cwd="/")
    assert r.returncode == 1
    assert "not to us" in r.stderr or "not accessible" in r.stderr, r.stderr


IDMAP = r'''
import ringnet
with ringnet.Network(workers=1, idmap_helpers=True) as net:
    r = net.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; ping -c 1 -W 60 10.0.2.2 >/dev/null && echo pinged"],
                capture_output=True, check=True)
    print(r.stdout.decode())
'''


def test_idmap_helpers_map_subordinate_ranges():
    import shutil
    uid, gid = unpriv_user()
    if uid == 0 or not shutil.which("newuidmap"):
        pytest.skip("needs an unprivileged user and newuidmap (package uidmap)")
    r = subprocess.run(as_user_argv([sys.executable, "-c", IDMAP]), capture_output=True, text=True,
                       timeout=120, env=child_env(), cwd="/")
    if "no entry for" in r.stderr:
        pytest.skip("the test user has no /etc/subuid range: scripts/setup-test-env.sh adds one")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.strip() and line != "pinged"]
    assert rows[0] == ["0", str(uid), "1"]           # root inside is our uid
    assert rows[1][0] == "1" and int(rows[1][2]) >= 65536  # 1.. from the subordinate range
    assert rows[2] == ["0", str(gid), "1"]
    assert "pinged" in r.stdout


TCP_AS_USER = r'''
import hashlib, http.server, json, os, sys, threading, ringnet
data = os.urandom(8 * 1024 * 1024)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
fetch = ("import hashlib, sys, urllib.request; "
         "print(hashlib.sha256(urllib.request.urlopen(sys.argv[1], timeout=60).read()).hexdigest())")
with ringnet.Network(workers=2, allow_host_loopback=True) as net:
    r = net.run([sys.executable, "-c", fetch, f"http://10.0.2.2:{srv.server_address[1]}/"],
                capture_output=True, timeout=120)
srv.shutdown()
print(json.dumps({"uid": os.getuid(), "rc": r.returncode, "err": r.stderr.decode()[-500:],
                  "got": r.stdout.decode().strip(), "want": hashlib.sha256(data).hexdigest()}))
'''


def test_tcp_fetch_as_unprivileged_user():
    uid, _ = unpriv_user()
    r = subprocess.run(as_user_argv([sys.executable, "-c", TCP_AS_USER]), capture_output=True, text=True,
                       timeout=180, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == uid
    assert out["rc"] == 0, out["err"]
    assert out["got"] == out["want"]
