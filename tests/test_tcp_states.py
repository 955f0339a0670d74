"""Every (state, event) pair of the TCP lifecycle table, driven through the real code.

The table is rn_tcp_fsm (csrc/tcp_fsm.c), read through cffi, and this module generates one
test per cell from it: test_<state>_<event>. Each test brings a flow into <state> the way a
real connection gets there (the test plays the namespace's TCP as test_tcp_input.py does;
the host side is a real listening socket on 127.0.0.1), makes <event> happen with a real
segment, a real host socket action or a real timer, and checks the cell:

- the state that follows (flow statistics; CLOSED: the flow is gone),
- what the namespace received (nothing, an ACK, the SYN-ACK, a RST, host data, our FIN),
- the counter that records the outcome: for a segment, rn_tcp_input()'s outcome moved by
  exactly one and no other outcome moved; for a host event or a timer, at least once.

NEVER cells are driven too where their stimulus exists (the host writes after its own EOF,
resets a socket the flow already closed, ...): nothing may happen. SYN_SENT is entered the
way inbound port forwarding enters it: a forward (csrc/forward.c) on a real listener on
127.0.0.1, a real client connecting to it; the worker accepts and sends its SYN to the
namespace's port (the client appears from the gateway address, on a port the worker picks).

A host connect() is kept in progress (CONNECTING) by a listener whose accept queue is full
(backlog 0 and one connection not yet accepted): the kernel drops the worker's SYN. Timers
are real: short idle and FIN timeouts are configured for the timeout tests, and waits are
bounded by generous deadlines, never by a guess of how long something takes.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from ringnet._ringnet_c import ffi, lib

import frames as F
from test_tcp_input import ACK, FIN, PSH, RST, SYN, DATA_OUTCOMES, Peer, TcpHarness, tcp_options
from test_worker_input import DNS4, GUEST4, GW4, NAMES

STATES = [ffi.string(lib.rn_tcp_state_name(i)).decode() for i in range(lib.RN_TCP_NSTATES)]
EVENTS = [ffi.string(lib.rn_tcp_event_name(i)).decode() for i in range(lib.RN_TCP_NEVENTS)]
REPLIES = {lib.RN_TCP_R_NONE: "NONE", lib.RN_TCP_R_ACK: "ACK", lib.RN_TCP_R_SYNACK: "SYNACK",
           lib.RN_TCP_R_RST: "RST", lib.RN_TCP_R_DATA: "DATA", lib.RN_TCP_R_FIN: "FIN",
           lib.RN_TCP_R_SYN: "SYN"}
SEGMENT_EVENTS = set(EVENTS[:lib.RN_TCP_EV_READABLE])
TIMER_EVENTS = {"rto", "timeout"}
MSS_OPT = struct.pack("!BBH", 2, 4, 1460)


def rule(state: str, event: str):
    return lib.rn_tcp_fsm[STATES.index(state)][EVENTS.index(event)]


def ctr_name(r) -> str | None:
    return NAMES[r.ctr] if r.ctr < len(NAMES) else None


class Listener:
    """A host listener with an accept queue of one: block() fills it, so that the next
    connect() to it stays in progress until unblock() makes room."""

    def __init__(self, rcvbuf: int | None = None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(0)
        self.s.settimeout(5)
        self.port = self.s.getsockname()[1]
        self.extra: list[socket.socket] = []

    def block(self) -> None:
        self.extra.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))

    def unblock(self) -> None:
        self.extra.append(self.s.accept()[0])

    def close(self) -> None:
        for s in self.extra:
            s.close()
        self.s.close()


class Ctx:
    """One flow, its host side and what the test knows of its sequence numbers."""

    def __init__(self, state: str, event: str):
        self.state, self.event = state, event
        self.lst = Listener(rcvbuf=4096 if event == "host_writable" else None)
        self.lst2 = None
        kw = {}
        if event == "timeout":
            kw = {"idle_ms": 400, "fin_ms": 400}
        if state == "CONNECTING" and event == "rto":
            # Only a DNS flow with another upstream left has a connect deadline
            self.lst2 = Listener()
            kw = {"allow": False, "dns": [("127.0.0.1", self.lst.port),
                                          ("127.0.0.1", self.lst2.port)]}
        self.h = TcpHarness(**kw)
        self.peer = Peer(self.h, 53 if self.lst2 else self.lst.port)
        if self.lst2:
            self.peer.dst = DNS4
        self.conn: socket.socket | None = None
        self.una: int | None = None      # ACK field acknowledging nothing new
        self.max: int | None = None      # ACK field acknowledging all we sent
        self.ns_fin: int | None = None   # sequence number of the namespace's FIN
        self.our_fin: int | None = None  # sequence number of our FIN
        self.before: dict[str, int] = {}
        self.fwd: socket.socket | None = None  # SYN_SENT: the forward's listener

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.h.close()
        if self.fwd:
            self.fwd.close()
        self.lst.close()
        if self.lst2:
            self.lst2.close()

    def flow_state(self) -> str:
        rows = ffi.new("struct rn_flow_row[]", 16)
        n = lib.rn_worker_flow_rows(self.h.w, rows, 16)
        for r in rows[0:n]:
            if r.proto == 6 and r.guest_port == self.peer.sport:
                return STATES[r.state]
        return "CLOSED"

    def mark(self) -> None:
        """Start of the event: counters from here, frames from here."""
        self.h.pop()
        self.before = self.h.counters()

    def moved(self, name: str) -> int:
        return self.h.c(name) - self.before[name]

    def seg(self, flags: int, payload: bytes = b"", **kw) -> list:
        self.mark()
        return self.peer.send(flags, payload, advance=False, **kw)

    def noise(self, s) -> bool:
        """Our FIN (or, in SYN_SENT, our SYN) sent again by the flow's timers (tail loss
    probe, RTO) while the event happened: not the event's reply."""
        if self.event in TIMER_EVENTS:
            return False
        if self.state == "SYN_SENT" and s.flags == SYN:
            return True
        return self.our_fin is not None and bool(s.flags & FIN) and s.seq == self.our_fin

    def settle(self, r) -> list:
        """Run the worker until the cell's outcome shows, or for 150 ms when nothing
        is to show; bounded by a deadline."""
        want_ctr, want = ctr_name(r), REPLIES[r.reply]
        got: list = []
        if want_ctr is None and want == "NONE":
            return self.peer.recv(150)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            got += self.peer.recv(20)
            if ((want_ctr is None or self.moved(want_ctr) > 0) and
                    (want == "NONE" or reply_seen(want, [s for s in got if not self.noise(s)]))
                    and self.flow_state() == STATES[r.next]):
                break
        return got + self.peer.recv(20)


def reply_seen(want: str, segs: list) -> bool:
    if want == "ACK":
        return any(s.flags == ACK and not s.payload for s in segs)
    if want == "SYNACK":
        return any(s.flags == SYN | ACK for s in segs)
    if want == "RST":
        return any(s.flags & RST for s in segs)
    if want == "DATA":
        return any(s.payload for s in segs)
    if want == "FIN":
        return any(s.flags & FIN for s in segs)
    if want == "SYN":
        return any(s.flags == SYN for s in segs)
    return not segs


# --- bringing a flow into each state -----------------------------------------------------------


def _established(c: Ctx) -> None:
    c.conn = c.peer.connect(c.lst.s)
    c.una = c.max = c.peer.rcv_nxt


def _host_fin(c: Ctx) -> None:
    """The host shuts its side: wait for our FIN, take it without acknowledging it."""
    c.conn.shutdown(socket.SHUT_WR)
    segs = c.peer.wait(lambda s: s.flags & FIN)
    c.our_fin = [s for s in segs if s.flags & FIN][0].seq
    c.peer.take(segs)
    c.una, c.max = c.our_fin, c.our_fin + 1


def _ns_fin(c: Ctx) -> None:
    c.ns_fin = c.peer.snd_nxt
    c.peer.send(ACK | FIN, ack=c.una)


def to_closed(c: Ctx) -> None:
    c.lst.block()  # a SYN then stays in CONNECTING


def to_connecting(c: Ctx) -> None:
    c.lst.block()
    if c.lst2:
        c.lst2.block()
    assert c.peer.syn() == []


def to_syn_rcvd(c: Ctx) -> None:
    segs = c.peer.syn()
    c.conn = c.lst.s.accept()[0]
    [sa] = segs or c.peer.wait(lambda s: s.flags & SYN)
    c.peer.iss, c.peer.rcv_nxt = sa.seq, sa.seq + 1
    c.una = c.max = sa.seq + 1


def to_established(c: Ctx) -> None:
    _established(c)


def to_close_wait(c: Ctx) -> None:
    _established(c)
    _ns_fin(c)


def to_fin_wait_1(c: Ctx) -> None:
    _established(c)
    _host_fin(c)


def to_fin_wait_2(c: Ctx) -> None:
    _established(c)
    _host_fin(c)
    assert c.peer.send(ACK) == []  # acknowledges our FIN
    c.una = c.max


def to_closing(c: Ctx) -> None:
    _established(c)
    _host_fin(c)
    _ns_fin(c)


def to_last_ack(c: Ctx) -> None:
    _established(c)
    _ns_fin(c)
    _host_fin(c)


def to_time_wait(c: Ctx) -> None:
    to_fin_wait_2(c)
    _ns_fin(c)


def to_syn_sent(c: Ctx) -> None:
    """A forward from a host listener to the namespace's port peer.sport; a client
    connects, the worker accepts it and sends its SYN from the gateway address."""
    c.fwd = socket.socket()
    c.fwd.bind(("127.0.0.1", 0))
    c.fwd.listen(8)
    c.fwd.setblocking(False)
    lfd = os.dup(c.fwd.fileno())
    nsaddr = ffi.new("uint8_t[16]", list(F.addr(GUEST4)))
    rc = lib.rn_worker_forward_add(c.h.w, 1, lfd, 4, nsaddr, c.peer.sport, -1, ffi.NULL, 0)
    if rc:
        os.close(lfd)
    assert rc == 0
    c.conn = socket.create_connection(c.fwd.getsockname(), timeout=5)
    [syn] = [s for s in c.peer.wait(lambda s: s.flags & SYN) if s.flags & SYN]
    assert syn.flags == SYN and syn.src == F.addr(GW4) and syn.dst == F.addr(GUEST4)
    assert syn.dport == c.peer.sport
    opts = tcp_options(syn.opts)
    assert set(opts) == {2, 3, 4, 8}, opts  # MSS, window scale, SACK permitted, timestamps
    assert len(syn.opts) <= 40 and opts[8][4:] == b"\0\0\0\0"  # TSecr 0: nothing to echo
    c.peer.dport = syn.sport
    c.peer.iss = syn.seq
    c.una = c.max = syn.seq + 1


SETUP = {"CLOSED": to_closed, "SYN_SENT": to_syn_sent, "CONNECTING": to_connecting, "SYN_RCVD": to_syn_rcvd,
         "ESTABLISHED": to_established, "CLOSE_WAIT": to_close_wait,
         "FIN_WAIT_1": to_fin_wait_1, "FIN_WAIT_2": to_fin_wait_2, "CLOSING": to_closing,
         "LAST_ACK": to_last_ack, "TIME_WAIT": to_time_wait}


# --- making each event happen ------------------------------------------------------------------


def ev_syn(c: Ctx, r) -> list:
    if c.state == "TIME_WAIT":
        c.lst.block()  # the new connection's connect then stays in progress
    return c.seg(SYN, seq=c.peer.isn, opts=MSS_OPT)


def ev_synack(c: Ctx, r) -> list:
    return c.seg(SYN | ACK, seq=c.peer.isn, ack=c.max or 1, opts=MSS_OPT)


def ev_ack(c: Ctx, r) -> list:
    return c.seg(ACK, ack=c.max or 1)


def ev_data(c: Ctx, r) -> list:
    return c.seg(ACK | PSH, b"data", ack=c.una or 1)


def ev_fin(c: Ctx, r) -> list:
    seq = c.ns_fin if c.ns_fin is not None else c.peer.snd_nxt  # a repeat, once sent
    return c.seg(ACK | FIN, seq=seq, ack=c.una or 1)


def ev_rst(c: Ctx, r) -> list:
    if c.state == "SYN_SENT":  # acceptable there only when it acknowledges our SYN
        return c.seg(RST | ACK, seq=0, ack=c.max)
    return c.seg(RST, seq=c.peer.snd_nxt)


def ev_rst_in_window(c: Ctx, r) -> list:
    return c.seg(RST, seq=c.peer.snd_nxt + 10)


def ev_ack_unsent(c: Ctx, r) -> list:
    return c.seg(ACK, ack=(c.max or 1) + 5000)


def ev_old(c: Ctx, r) -> list:
    return c.seg(ACK | PSH, b"old", seq=c.peer.snd_nxt - 100, ack=c.una or 1)


def _host(c: Ctx, action) -> None:
    if c.conn is not None:
        try:
            action(c.conn)
        except OSError:
            pass  # after the flow's own end, the host may find its socket reset


def ev_host_readable(c: Ctx, r) -> list:
    c.mark()
    _host(c, lambda s: s.sendall(b"from the host"))
    return c.settle(r)


def ev_host_eof(c: Ctx, r) -> list:
    c.mark()
    _host(c, lambda s: s.shutdown(socket.SHUT_WR))
    return c.settle(r)


def _fill(c: Ctx) -> None:
    """Send from the namespace, the host reading nothing, until the host socket refuses
    bytes and the flow holds them (it then waits for EPOLLOUT)."""
    for _ in range(2000):
        c.peer.send(ACK | PSH, b"f" * 16384, ack=c.una)
        if c.h.c("tcp_buffered"):
            return
    raise AssertionError("the host socket never filled")


def ev_host_writable(c: Ctx, r) -> list:
    if c.state == "CONNECTING":
        c.mark()
        c.lst.unblock()  # room in the accept queue: the kernel's SYN retry connects
        return c.settle(r)
    if r.legal != lib.RN_TCP_LEGAL:
        c.mark()
        return c.settle(r)
    _fill(c)
    c.mark()
    # The host application reads again, as long as there is something to read,
    # while the worker runs: the flow's socket drains and reports EPOLLOUT
    c.conn.setblocking(False)
    got: list = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and not c.moved("tcp_window_updates"):
        try:
            while c.conn.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        got += c.peer.recv(20)
    return got + c.peer.recv(20)


def ev_host_error(c: Ctx, r) -> list:
    c.mark()
    if c.state == "CONNECTING":
        c.lst.s.close()  # the kernel's SYN retry now meets a RST: refused
        return c.settle(r)

    def reset(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _host(c, reset)
    return c.settle(r)


def ev_rto(c: Ctx, r) -> list:
    if c.state in ("ESTABLISHED", "CLOSE_WAIT"):
        c.conn.sendall(b"never acknowledged")  # data in flight for the timer
        c.peer.wait(lambda s: s.payload)
    c.mark()
    return c.settle(r)


def ev_timeout(c: Ctx, r) -> list:
    c.mark()
    return c.settle(r)


STIMULUS = {name: globals()["ev_" + name] for name in EVENTS}


# --- the generated tests -----------------------------------------------------------------------


def check(state: str, event: str) -> None:
    r = rule(state, event)
    c = Ctx(state, event)
    try:
        SETUP[state](c)
        assert c.flow_state() == state, "setup"
        got = STIMULUS[event](c, r)
        replies = [s for s in got if not c.noise(s)]
        want, name = REPLIES[r.reply], ctr_name(r)

        assert c.flow_state() == STATES[r.next]
        if want == "NONE":
            assert replies == [], replies
        elif want == "ACK":
            assert reply_seen("ACK", replies) and all(
                s.flags == ACK and not s.payload for s in replies), replies
        else:
            assert reply_seen(want, replies), (want, replies)
        if event in SEGMENT_EVENTS:
            moved = {n: c.moved(n) for n in DATA_OUTCOMES if c.moved(n)}
            assert moved == {name: 1}, moved
        elif name is not None:
            assert c.moved(name) >= 1, name
        if r.legal == lib.RN_TCP_NEVER:
            # (in SYN_SENT, our SYN may be sent again meanwhile: the flow's own timer)
            assert {n: c.moved(n) for n in NAMES if "tcp" in n and c.moved(n)
                    and not (state == "SYN_SENT" and n == "tcp_retransmits")} == {}
    finally:
        c.close()


def _make(state: str, event: str):
    def test(state=state, event=event):
        check(state, event)
    test.__name__ = f"test_{state.lower()}_{event}"
    r = rule(state, event)
    test.__doc__ = (f"{state} + {event}: {('legal', 'illegal', 'never')[r.legal]}, "
                    f"-> {STATES[r.next]}, reply {REPLIES[r.reply]}, counter {ctr_name(r)}")
    return test


for _s in STATES:
    for _e in EVENTS:
        _t = _make(_s, _e)
        globals()[_t.__name__] = _t


def test_table_covers_every_pair_consistently():
    """Each cell is complete: an illegal event keeps the state, an event that cannot
    happen keeps it and has no reply and no counter, and a flow reaches CLOSED only
    where the table says it ends."""
    assert len(STATES) == lib.RN_TCP_NSTATES and len(EVENTS) == lib.RN_TCP_NEVENTS
    assert len(set(STATES)) == len(STATES) and len(set(EVENTS)) == len(EVENTS)
    for s in STATES:
        for e in EVENTS:
            r = rule(s, e)
            assert r.legal in (lib.RN_TCP_LEGAL, lib.RN_TCP_ILLEGAL, lib.RN_TCP_NEVER)
            assert r.next < len(STATES) and r.reply in REPLIES and r.ctr <= len(NAMES)
            if r.legal != lib.RN_TCP_LEGAL:
                assert STATES[r.next] == s, (s, e)
            if r.legal == lib.RN_TCP_NEVER:
                assert r.reply == lib.RN_TCP_R_NONE and ctr_name(r) is None, (s, e)
            if e in SEGMENT_EVENTS and r.legal != lib.RN_TCP_NEVER:
                assert ctr_name(r) in DATA_OUTCOMES, (s, e)
