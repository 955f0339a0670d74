"""The public API is what ringnet.__all__ lists, and every name in it exists."""

import ringnet


def test_all_names_exist():
    for name in ringnet.__all__:
        assert hasattr(ringnet, name), name


def test_public_api_is_exactly_all():
    public = {n for n in dir(ringnet) if not n.startswith("_")}
    modules = {"config", "errors", "network", "cli", "stats"}
    assert public - modules == set(ringnet.__all__) - {"__version__"}


def test_exception_tree():
    for name in ("ConfigError", "NamespaceError", "ChildError", "CoreError", "ProtocolError"):
        assert issubclass(getattr(ringnet, name), ringnet.RingnetError)
    assert issubclass(ringnet.ConfigError, ValueError)
    assert issubclass(ringnet.CoreError, OSError)


def test_py_typed_shipped():
    import os
    assert os.path.exists(os.path.join(os.path.dirname(ringnet.__file__), "py.typed"))
