"""Functions run inside the namespace: ``Network.call(fn, *args, **kwargs)``.

Theory of operation
-------------------
``fn`` runs in a fresh Python interpreter started inside the namespace exactly as
``Network.spawn()`` starts any command (_enter.py: the network's user and net
namespaces, its resolv.conf, a PID namespace of its own), never in a fork of the
caller, which may have threads. Two pipes, passed as inherited fds, carry the
call and its outcome, so that the function's own stdin, stdout and stderr stay
the caller's:

- in (caller -> interpreter): a pickle of the caller's ``sys.path`` and, when
  ``fn`` lives in the caller's ``__main__`` script, that script's path; then a
  pickle of ``(fn, args, kwargs)``. Functions pickle by name, so ``fn`` must be
  importable there: a module-level function of a module on ``sys.path``, or of
  the main script, which the interpreter then runs as ``__mp_main__`` as
  multiprocessing's spawn does (its ``if __name__ == "__main__":`` block does
  not run again).
- out (interpreter -> caller): one pickle of plain values: ``("ok", result
  pickle)``, ``("raise", exception pickle or None, class name, text,
  traceback text)``, or ``("fail", text)`` when the interpreter could not even
  load the call. The inner pickles are separate so that a result or exception
  that pickles there but does not unpickle here is still reported with its
  text.

The caller gets the result, or the very exception (its own class when it
pickles both ways, else a ChildError naming the class), with the remote
traceback as its ``__cause__`` (a RemoteTraceback, as concurrent.futures shows
a worker's) and as its ``remote_traceback`` attribute. The interpreter exits at
once after writing (os._exit): threads the function left behind do not keep it.

Trust: the outcome is unpickled in the caller's process, and unpickling can run
code. Whatever runs inside as root can, in principle, tamper with the
interpreter (it runs in its own PID namespace, which other commands inside
cannot see, but not in its own user namespace). ``call()`` is therefore for
namespaces whose processes you trust as you trust ``fn``, such as a test's own.
"""

from __future__ import annotations

import os
import pickle
import selectors
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import ChildError, ConfigError, RingnetError

if TYPE_CHECKING:
    from .network import Network

__all__ = ["call", "RemoteTraceback"]

# The interpreter's side. Kept free of ringnet imports: it needs only the standard library.
_BOOT = r'''
import os, sys
try:
    import _pickle as pickle   # the C pickler alone: "import pickle" also imports re and more
except ImportError:
    import pickle
rd, wr = int(sys.argv[1]), int(sys.argv[2])

def send(out):
    data = pickle.dumps(out, protocol=-1)
    view = memoryview(data)
    while view:
        view = view[os.write(wr, view):]

def load():
    with os.fdopen(rd, "rb") as f:
        path, main = pickle.load(f)
        sys.path[:] = path
        if main:
            import runpy, types
            mod = types.ModuleType("__mp_main__")
            mod.__dict__.update(runpy.run_path(main, run_name="__mp_main__"))
            sys.modules["__main__"] = sys.modules["__mp_main__"] = mod
        return pickle.load(f)

try:
    try:
        fn, args, kwargs = load()
    except BaseException as e:
        import traceback   # only when needed: importing it costs the interpreter time
        send(("fail", "".join(traceback.format_exception_only(type(e), e)).strip()))
    else:
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:
            import traceback
            tb = traceback.format_exc()
            try:
                exc = pickle.dumps(e, protocol=-1)
            except BaseException:
                exc = None
            send(("raise", exc, f"{type(e).__module__}.{type(e).__qualname__}", str(e), tb))
        else:
            try:
                data = pickle.dumps(value, protocol=-1)
            except BaseException as e:
                send(("fail", f"the result of {getattr(fn, '__qualname__', fn)!s} "
                      f"({type(value).__qualname__}) cannot be pickled: {type(e).__name__}: {e}"))
            else:
                send(("ok", data))
finally:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)
'''


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside the namespace by ``Network.call()``:
    the ``__cause__`` of the exception re-raised in the caller."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _main_path(fn: Callable[..., Any]) -> str:
    """The path of the caller's main script when ``fn`` is defined there, else ""."""
    if getattr(fn, "__module__", None) != "__main__":
        return ""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) and os.path.exists(path) else ""


def _payload(fn: Callable[..., Any], args: tuple, kwargs: dict) -> bytes:
    """The pickles the interpreter inside reads; RingnetError naming what cannot travel."""
    if not callable(fn):
        raise RingnetError(f"call(): fn must be callable, not {type(fn).__name__}")
    try:
        call = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        name = getattr(fn, "__qualname__", repr(fn))
        raise RingnetError(
            f"call(): {name} or its arguments cannot be pickled ({type(e).__name__}: {e}); "
            "the interpreter inside imports fn by name: give a module-level function "
            "(not a lambda, a nested function or a bound method of an unpicklable object) "
            "and picklable arguments") from None
    return pickle.dumps((list(sys.path), _main_path(fn)), protocol=pickle.HIGHEST_PROTOCOL) + call


def _exchange(proc: subprocess.Popen, fds: list[int], payload: bytes,
              deadline: Optional[float]) -> bytes:
    """With ``fds`` = [write end, read end]: write ``payload`` to the write end, close it
    and remove it from ``fds`` (the caller closes what is left there), and read the
    read end to its end, both at once, until ``deadline`` (time.monotonic(); None: no
    limit); then wait for ``proc``. An interpreter that ends early closes its end: the
    rest of the payload is dropped, and its status says why. Raises TimeoutError at the
    deadline (the caller kills ``proc``)."""
    wr, rd = fds
    os.set_blocking(wr, False)
    view, chunks = memoryview(payload), []
    with selectors.DefaultSelector() as sel:
        sel.register(wr, selectors.EVENT_WRITE)
        sel.register(rd, selectors.EVENT_READ)
        open_fds = 2
        while open_fds:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            for key, _ in sel.select(left):
                if key.fd == rd:
                    data = os.read(rd, 1 << 16)
                    if data:
                        chunks.append(data)
                        continue
                else:
                    try:
                        view = view[os.write(wr, view[:1 << 16]):]
                    except BrokenPipeError:
                        view = view[:0]   # it ended early: its status says why
                    if view:
                        continue
                    sel.unregister(wr)
                    fds.remove(wr)
                    os.close(wr)
                    open_fds -= 1
                    continue
                sel.unregister(key.fd)
                open_fds -= 1
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        proc.wait(left)
    except subprocess.TimeoutExpired:
        raise TimeoutError from None
    return b"".join(chunks)


def call(net: "Network", fn: Callable[..., Any], args: tuple, kwargs: dict,
         timeout: Optional[float] = None) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh interpreter inside ``net``'s namespace; return
    its result or raise its exception (see the header). Raises RingnetError when ``fn``
    or its arguments cannot be pickled or the interpreter cannot load them, ChildError
    when it ends without an answer, TimeoutError when it has not answered and ended
    within ``timeout`` seconds (None: no limit); then it is killed first."""
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"call(): timeout={timeout!r} must be a positive number of "
                          "seconds, or None for no limit")
    deadline = None if timeout is None else time.monotonic() + timeout
    payload = _payload(fn, args, kwargs)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = net.spawn([sys.executable, "-c", _BOOT, str(in_r), str(out_w)],
                         pass_fds=(in_r, out_w), stdin=subprocess.DEVNULL)
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise
    os.close(in_r)
    os.close(out_w)
    fds = [in_w, out_r]
    try:
        data = _exchange(proc, fds, payload, deadline)
    except BaseException as e:
        proc.kill()
        proc.wait()
        if isinstance(e, TimeoutError):
            name = getattr(fn, "__qualname__", repr(fn))
            raise TimeoutError(f"call(): {name} did not return within {timeout} s inside "
                               "the namespace; its interpreter was killed") from None
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return _outcome(fn, data, proc.returncode)


def _outcome(fn: Callable[..., Any], data: bytes, status: int) -> Any:
    """The result the interpreter inside sent in ``data``, or its exception raised here."""
    name = getattr(fn, "__qualname__", repr(fn))
    if not data:
        how = f"signal {-status}" if status < 0 else f"status {status}"
        raise ChildError(f"call(): the interpreter running {name} inside the namespace ended "
                         f"({how}) without an answer")
    try:
        out = pickle.loads(data)
        kind = out[0]
    except Exception as e:
        raise ChildError(f"call(): garbled answer from the interpreter inside: {e}") from None
    if kind == "ok":
        try:
            return pickle.loads(out[1])
        except Exception as e:
            raise RingnetError(f"call(): the result of {name} cannot be unpickled here: "
                               f"{type(e).__name__}: {e}") from None
    if kind == "fail":
        raise RingnetError(f"call(): {name} cannot run inside the namespace: {out[1]}")
    if kind != "raise":
        raise ChildError(f"call(): unknown answer {kind!r} from the interpreter inside")
    _, blob, cls, text, tb = out
    exc: BaseException
    try:
        exc = pickle.loads(blob) if blob is not None else None   # type: ignore[assignment]
    except Exception:
        exc = None   # type: ignore[assignment]
    if not isinstance(exc, BaseException):
        exc = ChildError(f"{name} raised {cls}: {text} (not picklable; its traceback "
                         "inside is this error's __cause__)")
    try:
        exc.remote_traceback = tb   # type: ignore[attr-defined]
    except AttributeError:
        pass
    raise exc from RemoteTraceback(tb)
