"""Network.call(): functions run in a fresh interpreter inside the namespace (_nscall.py).

The functions below are module-level so that they pickle by name; the interpreter
inside imports this module from the test's sys.path. What they return is computed
inside (the namespace's interfaces and addresses, its PID namespace), so a call
that ran in the test process instead would fail the assertions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import ringnet
from conftest import HANG_S, as_user_argv, child_env, needs_userns, unpriv_user

pytestmark = needs_userns


class Oops(Exception):
    """An exception of this module: pickles both ways."""


class Unpicklable(Exception):
    """An exception whose constructor arguments do not match its args: it pickles, but
    unpickling it fails."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def where_am_i(tag: str, *, scale: int = 1) -> dict:
    """The view from inside: interfaces, the address a UDP socket would send from, our PID."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("10.0.2.2", 9))   # no packet is sent: this only picks the route
    addr = u.getsockname()[0]
    u.close()
    return {"tag": tag * scale, "ifaces": sorted(n for _, n in socket.if_nameindex()),
            "addr": addr, "pid": os.getpid(), "uid": os.getuid()}


def raise_oops(text: str) -> None:
    raise Oops(text)


def raise_unpicklable() -> None:
    raise Unpicklable(1, 2)


def return_unpicklable():
    return lambda: None


def exit_hard() -> None:
    os._exit(3)


def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


def doubled(data: bytes) -> bytes:
    return data * 2


def test_call_timeout_kills_a_call_that_does_not_return(no_leaks):
    """The limit ends the call: TimeoutError naming the function, its interpreter killed
    (no_leaks: no process of it left); the network goes on serving calls."""
    with ringnet.Network(workers=1) as net:
        with pytest.raises(TimeoutError, match=r"call\(\): sleep_for did not return within 1 s"):
            net.call_timeout(1, sleep_for, 3600)
        assert net.call_timeout(HANG_S, doubled, b"ok") == b"okok"


def test_large_arguments_and_result_cross_both_pipes_at_once():
    """4 MiB in and 8 MiB out, more than either pipe holds: the caller writes and reads
    at the same time, so neither side waits for the other."""
    data = os.urandom(4 << 20)
    with ringnet.Network(workers=1) as net:
        assert net.call_timeout(HANG_S, doubled, data) == data * 2
        assert net.call(doubled, data) == data * 2


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_call_timeout_must_be_positive(timeout):
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.ConfigError, match=r"call\(\): timeout=.* must be a positive"):
            net.call_timeout(timeout, doubled, b"")


def test_returns_what_was_computed_inside(no_leaks):
    with ringnet.Network(workers=1) as net:
        out = net.call(where_am_i, "ab", scale=2)
    assert out["tag"] == "abab"
    assert out["ifaces"] == ["lo", "rn0"]   # the namespace's, not the host's
    assert out["addr"] == "10.0.2.100"
    assert out["pid"] == 2                  # the command of a PID namespace of its own
    assert out["uid"] == 0                  # root inside


def test_a_builtin_function_and_keyword_named_fn():
    """Functions of the standard library travel too; ``fn`` is positional-only, so the
    function may take a keyword of that name."""
    with ringnet.Network(workers=1) as net:
        names = net.call(socket.if_nameindex)
        assert sorted(n for _, n in names) == ["lo", "rn0"]
        assert net.call(dict, fn=1) == {"fn": 1}


def test_raises_the_functions_exception_with_the_remote_traceback():
    with ringnet.Network(workers=1) as net:
        with pytest.raises(Oops, match="^went wrong inside$") as e:
            net.call(raise_oops, "went wrong inside")
    tb = e.value.remote_traceback
    assert "in raise_oops" in tb and "Oops: went wrong inside" in tb
    assert isinstance(e.value.__cause__, ringnet.RemoteTraceback)
    assert "in raise_oops" in str(e.value.__cause__)


def test_an_exception_that_does_not_unpickle_here_keeps_its_text():
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.ChildError, match=r"raised test_nscall\.Unpicklable: 1/2") as e:
            net.call(raise_unpicklable)
    assert "in raise_unpicklable" in e.value.remote_traceback


def test_unpicklable_fn_arguments_and_result_give_clear_errors():
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.RingnetError, match="cannot be pickled.*module-level function"):
            net.call(lambda: 1)
        sock = socket.socket()
        try:
            with pytest.raises(ringnet.RingnetError, match="cannot be pickled"):
                net.call(where_am_i, sock)
        finally:
            sock.close()
        with pytest.raises(ringnet.RingnetError, match=r"result of return_unpicklable \(function\) "
                           "cannot be pickled"):
            net.call(return_unpicklable)
        with pytest.raises(ringnet.RingnetError, match="must be callable"):
            net.call(42)


def test_an_interpreter_that_dies_is_reported():
    with ringnet.Network(workers=1) as net:
        with pytest.raises(ringnet.ChildError, match="ended \\(status 3\\) without an answer"):
            net.call(exit_hard)
        assert net.call(pow, 2, 10) == 1024   # and the network goes on


def test_function_of_the_main_script(tmp_path):
    """A function defined in the caller's main script runs inside; the script's
    ``if __name__ == "__main__":`` block does not run again there."""
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent("""
        import json, socket, ringnet
        def inside():
            return sorted(n for _, n in socket.if_nameindex())
        if __name__ == "__main__":
            with ringnet.Network(workers=1) as net:
                print(json.dumps(net.call(inside)))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["lo", "rn0"]


def test_call_as_unprivileged_user():
    """Rootless: the call runs inside as root of the namespace, which is the user outside."""
    uid, _ = unpriv_user()
    code = ("import json, os, socket, ringnet\n"
            "with ringnet.Network(workers=1) as net:\n"
            "    print(json.dumps([net.call(os.getuid), net.call(os.getpid),\n"
            "                      sorted(n for _, n in net.call(socket.if_nameindex)),\n"
            "                      os.getuid()]))\n")
    r = subprocess.run(as_user_argv([sys.executable, "-c", code]), capture_output=True, text=True,
                       timeout=120, env=child_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [0, 2, ["lo", "rn0"], uid]


def test_not_running():
    net = ringnet.Network(workers=1)
    with pytest.raises(ringnet.RingnetError, match="not running"):
        net.call(pow, 2, 3)
