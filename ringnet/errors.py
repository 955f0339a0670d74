"""ringnet's exception tree: every error the library raises is a RingnetError.

Messages name the problem and what to do about it; the CLI prints them on one line.
"""

from __future__ import annotations

__all__ = [
    "RingnetError",
    "ConfigError",
    "NamespaceError",
    "ChildError",
    "CoreError",
    "ProtocolError",
]


class RingnetError(Exception):
    """Base class of every ringnet error."""


class ConfigError(RingnetError, ValueError):
    """A configuration value is invalid; the message names the option and its allowed range."""


class NamespaceError(RingnetError):
    """The namespace cannot be created or entered (user namespaces disabled, no tun, bad PID)."""


class ChildError(RingnetError):
    """A ringnet child process (namespace child or worker) failed or exited."""


class ProtocolError(RingnetError):
    """A control message was malformed or unexpected."""


class CoreError(RingnetError, OSError):
    """The C core returned an error; ``errno`` holds the error number."""

    def __init__(self, errno_: int, what: str) -> None:
        import os

        super().__init__(errno_, f"{what}: {os.strerror(errno_)}")
        self.what = what
