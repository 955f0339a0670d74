"""demo.py - start a ringnet namespace, run real traffic across it, show the counters.

Pings the gateway (IPv4 and IPv6), fetches a file from an HTTP server on host loopback
(reached as 10.0.2.2 with host loopback access allowed) and runs a short iperf3 test
against a server on host loopback when iperf3 is installed. First checks that this
machine lets ringnet create a rootless network (ringnet.available()) and, if not, says
exactly what to change.
"""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading

import ringnet

BLOB = os.urandom(32 * 1024 * 1024)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(BLOB)

    def log_message(self, *args):
        pass


def _step(net, argv, **kw):
    print(f"$ {' '.join(argv)}", flush=True)
    r = net.run(argv, **kw)
    if r.returncode != 0:
        print(f"demo: {argv[0]} failed ({r.returncode})", file=sys.stderr)
        sys.exit(1)
    return r


def main() -> int:
    ok, why = ringnet.available()
    if not ok:
        print(f"demo: {why}", file=sys.stderr)
        return 1
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    iperf = None
    if shutil.which("iperf3"):
        iperf = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5201"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ringnet.Network(allow_host_loopback=True) as net:
            print(f"namespace up: {net.ifname}, MTU {net.config.mtu}, {net.config.workers} worker(s), "
                  f"offloads {','.join(net.offloads)}")
            _step(net, ["ip", "-brief", "address"])
            _step(net, ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"])
            _step(net, ["ping", "-6", "-c", "3", "-i", "0.2", "fd00::2"])
            url = f"http://10.0.2.2:{httpd.server_address[1]}/blob"
            fetch = ("import hashlib, sys, time, urllib.request\n"
                     "t = time.monotonic(); d = urllib.request.urlopen(sys.argv[1]).read()\n"
                     "print(hashlib.sha256(d).hexdigest(), f'{len(d) * 8 / (time.monotonic() - t) / 1e9:.2f}')\n")
            r = _step(net, [sys.executable, "-c", fetch, url], capture_output=True)
            digest, gbps = r.stdout.decode().split()
            ok = digest == hashlib.sha256(BLOB).hexdigest()
            print(f"fetched 32 MiB over HTTP at {gbps} Gbit/s, sha256 {'matches' if ok else 'DIFFERS'}")
            if not ok:
                return 1
            if iperf is not None:
                _step(net, ["iperf3", "-c", "10.0.2.2", "-p", "5201", "-t", "3"])
            s = net.stats()
            print("counters:", {k: v for k, v in s.workers[0].items() if v and not k.startswith("drop_")})
            print("processes:", [(p.role, f"{p.cpu_seconds:.2f} s CPU") for p in s.processes])
    finally:
        httpd.shutdown()
        if iperf is not None:
            iperf.kill()
            iperf.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
