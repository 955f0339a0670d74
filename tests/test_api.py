"""The public API is what ringnet.__all__ lists, and every name in it exists."""

import ringnet


def test_all_names_exist():
    for name in ringnet.__all__:
        assert hasattr(ringnet, name), name


def test_public_api_is_exactly_all():
    public = {n for n in dir(ringnet) if not n.startswith("_")}
    modules = {"config", "errors", "network", "cli", "stats", "pytest_plugin"}   # submodules
    assert public - modules == set(ringnet.__all__) - {"__version__"}


def test_exception_tree():
    for name in ("ConfigError", "NamespaceError", "ChildError", "ChildOSError", "CoreError",
                 "ProtocolError"):
        assert issubclass(getattr(ringnet, name), ringnet.RingnetError)
    assert issubclass(ringnet.ConfigError, ValueError)
    assert issubclass(ringnet.CoreError, OSError)
    assert issubclass(ringnet.ChildOSError, ringnet.ChildError)
    perm = ringnet.ChildOSError.of(PermissionError)
    assert issubclass(perm, ringnet.ChildError) and issubclass(perm, PermissionError)
    assert ringnet.ChildOSError.of(PermissionError) is perm


def test_flow_dtype_fields_and_lazy_numpy():
    names = [f[0] for f in ringnet.FLOW_FIELDS]
    assert ringnet.FLOW_DTYPE.names == tuple(names) == (
        "worker", "proto", "state", "guest", "guest_port", "remote", "remote_port",
        "bytes_in", "bytes_out", "age", "idle")
    assert ringnet.FLOW_DTYPE["bytes_in"].kind == "u" and ringnet.FLOW_DTYPE["bytes_in"].itemsize == 8
    assert ringnet.FLOW_DTYPE["age"].kind == "f" and ringnet.FLOW_DTYPE["guest"].kind == "U"
    # importing ringnet (as every child does) must not import numpy: its BLAS starts threads
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import sys, ringnet; print('numpy' in sys.modules)"],
                       capture_output=True, text=True, check=True, cwd="/")
    assert r.stdout.strip() == "False"


def test_py_typed_shipped():
    import os
    assert os.path.exists(os.path.join(os.path.dirname(ringnet.__file__), "py.typed"))
