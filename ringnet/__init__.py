"""ringnet: fast, fully userspace networking for rootless Linux network namespaces.

    import ringnet
    with ringnet.Network(mtu=65520) as net:
        net.run(["ping", "-c", "3", "10.0.2.2"], check=True)

The public API is what ``__all__`` lists; modules starting with ``_`` are private.
"""

from .config import MTU_MAX, MTU_MIN, NetworkConfig, default_workers
from .errors import ChildError, ConfigError, CoreError, NamespaceError, ProtocolError, RingnetError
from .network import Network, State
from .stats import FlowRow, ProcessStats, Stats

__version__ = "0.1.0"

__all__ = [
    "Network",
    "NetworkConfig",
    "State",
    "Stats",
    "ProcessStats",
    "FlowRow",
    "default_workers",
    "MTU_MIN",
    "MTU_MAX",
    "RingnetError",
    "ConfigError",
    "NamespaceError",
    "ChildError",
    "CoreError",
    "ProtocolError",
    "__version__",
]
