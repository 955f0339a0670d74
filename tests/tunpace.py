"""A snippet for Python scripts run inside a namespace that send many UDP datagrams
(tests/test_udp.py FLOOD, tests/test_udp_mapping.py SENDER): it reads rn0's tx counters
and paces the sender so that the tun queue never overflows.

Compose TUN_PACE into a script after its imports (it needs ``time``) and call
``pace(i)`` before sending the i-th datagram; ``tun_tx()[1] - drops0`` is what the tun
device dropped since.
"""

TUN_PACE = r'''
def tun_tx():
    """rn0's tx packets (counted as the pump reads them) and tx drops."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "rn0":
                v = rest.split()
                return int(v[9]), int(v[11])
    raise SystemExit("no rn0 in /proc/net/dev")

# The tun device drops a datagram that finds its queue (txqueuelen, 1000 per queue) full,
# as a pump held off the CPU leaves it: keep fewer than WINDOW datagrams between the
# sockets and the pump.
WINDOW = 256
read0, drops0 = tun_tx()
read = 0

def pace(i):
    """Return once fewer than WINDOW datagrams before the i-th are unread by the pump."""
    global read
    while i - read >= WINDOW:
        time.sleep(0.0005)  # pacing while the pump catches up, not synchronisation
        read = tun_tx()[0] - read0
'''
