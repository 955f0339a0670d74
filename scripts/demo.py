"""demo.py - start a ringnet namespace, run real traffic across it, show the counters."""

import json
import sys

import ringnet


def main() -> int:
    with ringnet.Network() as net:
        print(f"namespace up: {net.ifname}, MTU {net.config.mtu}, {net.config.workers} worker(s), "
              f"offloads {','.join(net.offloads)}")
        for argv in (["ip", "-brief", "address"], ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"],
                     ["ping", "-6", "-c", "3", "-i", "0.2", "fd00::2"]):
            print(f"$ {' '.join(argv)}", flush=True)
            if net.run(argv).returncode != 0:
                print(f"demo: {argv[0]} failed", file=sys.stderr)
                return 1
        c = net.counters()
        print(json.dumps({"pump": {k: v for k, v in c["pump"].items() if v},
                          "workers": [{k: v for k, v in w.items() if v} for w in c["workers"]]},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
