"""ringnet: fast, fully userspace networking for rootless Linux network namespaces.

    import ringnet
    with ringnet.Network(mtu=65520) as net:
        net.run(["ping", "-c", "3", "10.0.2.2"], check=True)

``ringnet.available()`` says whether a network can be created here: (True, "") or
(False, what is wrong and the exact fix), e.g. for ``pytest.mark.skipif``.

The public API is what ``__all__`` lists; modules starting with ``_`` are private.
``FLOW_DTYPE`` (the dtype of ``Network.flows()``) is built on first access, because
numpy is imported lazily (ringnet's children import this package and must stay
single-threaded until they have unshared; numpy's BLAS starts threads at import).

PYTEST_DONT_REWRITE: pytest rewrites the asserts of every module of a distribution with a
pytest plugin (ringnet.pytest_plugin); this marker keeps its helper names out of
``dir(ringnet)``.
"""

from ._nscall import RemoteTraceback
from ._preflight import available
from .config import MTU_MAX, MTU_MIN, NetworkConfig, default_workers
from ._hook import ALLOW, DENY, Action, Flow, OnConnect, Redirect, Verdict
from .errors import (ChildError, ChildOSError, ConfigError, CoreError, NamespaceError, ProtocolError,
                     PublishError, RingnetError, UnknownCounterError)
from .network import Network, State
from .stats import FLOW_FIELDS, ProcessStats, Stats, counter_descriptions

__version__ = "0.1.0"   # the one source of the version (pyproject.toml reads it)

__all__ = [
    "available",
    "Network",
    "NetworkConfig",
    "State",
    "Stats",
    "ProcessStats",
    "counter_descriptions",
    "FLOW_DTYPE",
    "FLOW_FIELDS",
    "default_workers",
    "MTU_MIN",
    "MTU_MAX",
    "RingnetError",
    "ConfigError",
    "NamespaceError",
    "ChildError",
    "ChildOSError",
    "CoreError",
    "ProtocolError",
    "PublishError",
    "UnknownCounterError",
    "RemoteTraceback",
    "Flow",
    "Action",
    "ALLOW",
    "DENY",
    "Redirect",
    "Verdict",
    "OnConnect",
    "__version__",
]


def __getattr__(name: str) -> object:
    if name == "FLOW_DTYPE":
        from .stats import flow_dtype

        return flow_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"FLOW_DTYPE"})
