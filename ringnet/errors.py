"""ringnet's exception tree: every error the library raises is a RingnetError.

Messages name the problem and what to do about it; the CLI prints them on one line.

Errors cross process boundaries as data, never as flattened text: a child that
fails sends an ERROR message whose body ``to_wire()`` builds (``kind``: the
exception class, ``errno`` and ``strerror`` for an OSError, ``child``: the role of
the process that failed, ``step``: what it was doing, ``error``: the full text),
and the receiver re-raises it with ``from_wire()`` as the same class:

- a class of this tree (ConfigError, NamespaceError, ProtocolError, ...) comes
  back as itself, CoreError with its errno;
- an OSError subclass (PermissionError, FileNotFoundError, TimeoutError, ...)
  comes back as ``ChildOSError.of(cls)``: a ChildError that also is ``cls``,
  with ``errno``, ``strerror`` and ``filename``, so ``except PermissionError``
  and ``except ChildError`` both catch it;
- anything else (a bug in the child, an unknown kind) is a plain ChildError.

``child`` and ``step`` are attributes of every RingnetError (None for errors of
the orchestrator itself) and prefix its message. A child that receives another
child's error and fails because of it passes it on unchanged, so the
orchestrator learns which process failed first and where.
"""

from __future__ import annotations

import builtins
import os
from typing import Any, Optional

__all__ = [
    "RingnetError",
    "ConfigError",
    "NamespaceError",
    "ChildError",
    "ChildOSError",
    "CoreError",
    "ProtocolError",
    "PublishError",
    "UnknownCounterError",
    "to_wire",
    "from_wire",
]

_TEXT_MAX = 4000   # characters of error text carried in an ERROR message
_NAME_MAX = 100    # characters of a kind, child role or step name


class RingnetError(Exception):
    """Base class of every ringnet error.

    ``child`` is the role of the ringnet process where the error happened ("ns",
    "worker 0"; None: the calling process) and ``step`` what that process was doing.
    """

    child: Optional[str] = None
    step: Optional[str] = None

    def __str__(self) -> str:
        text = super().__str__()
        if self.child is None:
            return text
        where = role_display(self.child) + (f" ({self.step})" if self.step else "")
        return f"{where}: {text}"


class ConfigError(RingnetError, ValueError):
    """A configuration value is invalid; the message names the option and its allowed range."""


class NamespaceError(RingnetError):
    """The namespace cannot be created or entered (user namespaces disabled, no tun, bad PID)."""


class ChildError(RingnetError):
    """A ringnet child process (namespace child or worker) failed or exited; also the
    fallback class of an error that arrived from a child with a kind we do not know."""


class ProtocolError(RingnetError):
    """A control message was malformed or unexpected."""


class PublishError(RingnetError, OSError):
    """A port cannot be published: the host port is in use, privileged, or the address
    is not the host's; the message names the port, ``errno`` says why."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the text alone, without "[Errno N]"


class UnknownCounterError(RingnetError, KeyError):
    """A counter name that the C core does not have (``Stats.total``); the message names
    it and the closest known names. Also a KeyError."""

    def __str__(self) -> str:
        # KeyError's own __str__ would show the message as a quoted repr
        text = Exception.__str__(self)
        if self.child is None:
            return text
        return role_display(self.child) + (f" ({self.step})" if self.step else "") + f": {text}"


class CoreError(RingnetError, OSError):
    """The C core returned an error; ``errno`` holds the error number."""

    def __init__(self, errno_: int, what: str) -> None:
        super().__init__(errno_, f"{what}: {os.strerror(errno_)}")
        self.what = what


class ChildOSError(ChildError, OSError):
    """An OSError raised in a child. ``ChildOSError.of(PermissionError)`` is the class of a
    PermissionError from a child (ChildPermissionError): both a ChildError and a
    PermissionError."""

    @staticmethod
    def of(base: type) -> type:
        """The ChildError subclass that also is ``base``, OSError or one of Python's
        subclasses of it."""
        return _CHILD_OS[base]


_TREE: dict[str, type] = {c.__name__: c for c in (RingnetError, ConfigError, NamespaceError,
                                                  ChildError, ProtocolError, UnknownCounterError)}
# OSError and every subclass Python defines (PermissionError, TimeoutError, ...), by name
_OS: dict[str, type] = {c.__name__: c for c in vars(builtins).values()
                        if isinstance(c, type) and issubclass(c, OSError)}
# and the class of each as raised in a child: module attributes, so that they pickle
_CHILD_OS: dict[type, type] = {OSError: ChildOSError}
for _base in _OS.values():
    if _base is not OSError:
        _CHILD_OS[_base] = globals()[f"Child{_base.__name__}"] = type(
            f"Child{_base.__name__}", (ChildOSError, _base),
            {"__module__": __name__, "__doc__": f"A {_base.__name__} raised in a ringnet child."})
del _base


def role_display(role: str) -> str:
    """How messages name the process of role ``role`` ("ns" is the namespace child)."""
    return "namespace child" if role == "ns" else role


def _os_base(exc: OSError) -> type:
    """The Python OSError class that ``exc`` is (its nearest builtin one)."""
    return next(c for c in type(exc).__mro__ if c in _OS.values())


def to_wire(exc: BaseException, child: Optional[str], step: Optional[str]) -> dict[str, Any]:
    """The ERROR message body describing ``exc``, raised in ``child`` during ``step`` (None:
    in the orchestrator, outside any child).

    An error that already came from a child keeps its own ``child`` and ``step``."""
    if isinstance(exc, RingnetError) and exc.child is not None:
        child, step = exc.child, exc.step or ""
    body: dict[str, Any] = {"child": child, "step": step}
    if isinstance(exc, CoreError):
        body.update(kind="CoreError", errno=exc.errno, what=exc.what)
    elif isinstance(exc, PublishError):   # an OSError of our own: keep the class and errno
        body.update(kind="PublishError", errno=exc.errno, message=str(exc))
    elif isinstance(exc, OSError):
        body.update(kind=_os_base(exc).__name__, errno=exc.errno, strerror=exc.strerror,
                    message=OSError.__str__(exc))
        if isinstance(exc.filename, str):
            body["filename"] = exc.filename
    elif isinstance(exc, RingnetError):
        kind = next(c for c in type(exc).__mro__ if c in _TREE.values())
        body.update(kind=kind.__name__, message=Exception.__str__(exc))
    else:  # a bug in the child: its class means nothing to the receiver
        body.update(kind="ChildError", message=f"internal error: {type(exc).__name__}: {exc}")
    body["error"] = _clip(str(_rebuild(body)), _TEXT_MAX)
    return body


def from_wire(body: dict[str, Any], who: Optional[str]) -> RingnetError:
    """The exception an ERROR message body describes, re-created as its own class.

    ``who`` is the role of the sender, used when the body does not say (None: the body
    describes an error of the orchestrator, as the control socket reports them). The
    body may come from the untrusted namespace side: unknown kinds and malformed
    fields give a ChildError carrying the text."""
    body = dict(body)
    if who is not None and not isinstance(body.get("child"), str):
        body["child"] = who
    return _rebuild(body)


def _clip(value: Any, limit: int) -> Optional[str]:
    return value[:limit] if isinstance(value, str) else None


def _rebuild(body: dict[str, Any]) -> RingnetError:
    kind = _clip(body.get("kind"), _NAME_MAX) or ""
    errno_ = body.get("errno")
    if not isinstance(errno_, int) or isinstance(errno_, bool) or not 0 < errno_ < 4096:
        errno_ = None
    text = _clip(body.get("message"), _TEXT_MAX) or _clip(body.get("error"), _TEXT_MAX) \
        or "failed without saying why"
    exc: RingnetError
    if kind == "CoreError" and errno_ is not None:
        # what failed and why, with the hint that names the switch: a text, not a name
        exc = CoreError(errno_, _clip(body.get("what"), _TEXT_MAX) or "C core")
    elif kind == "PublishError":
        exc = PublishError(errno_ or 0, text)
    elif kind in _OS:
        cls = ChildOSError.of(_OS[kind])
        if errno_ is None:  # raised with a message only: TimeoutError("...")
            exc = cls(text)
        else:
            strerror = _clip(body.get("strerror"), _TEXT_MAX) or os.strerror(errno_)
            filename = _clip(body.get("filename"), _TEXT_MAX)
            exc = cls(errno_, strerror, filename) if filename is not None else cls(errno_, strerror)
    elif kind in _TREE:
        exc = _TREE[kind](text)
    else:
        exc = ChildError(text)
    exc.child = _clip(body.get("child"), _NAME_MAX) or None
    exc.step = _clip(body.get("step"), _NAME_MAX) or None
    return exc
