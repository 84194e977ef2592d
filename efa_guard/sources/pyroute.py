"""pyroute2's IPRoute, imported without the package's aggregate `__init__`.

`pyroute2/__init__.py` imports every API the library has, to re-export it: NDB (with sqlite3),
IPDB, ethtool, wireless, IPVS, plan9 and more. The daemon uses one class, IPRoute, from its
own module. So the package is first registered bare (its search path, not its `__init__`) and
IPRoute imported from `pyroute2.iproute.linux`: measured, the daemon's RSS is ~6 MB lower
(pyroute2 0.7.2 and 0.9). Nothing is lost: the bare package runs its real `__init__` the
first time anyone asks it for a name only that defines (a module `__getattr__`), and any
failure on the way means the ordinary import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

_PACKAGE = "pyroute2"
_MODULE = "pyroute2.iproute.linux"


def iproute_class() -> Any:  # noqa: ANN401 - pyroute2 is untyped
    """The IPRoute class: from its module under a bare package when it can be, else as usual."""
    if _PACKAGE not in sys.modules:
        try:
            _register_bare()
            return importlib.import_module(_MODULE).IPRoute
        except Exception:  # noqa: BLE001 - any surprise: forget it all, import as usual
            for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
                del sys.modules[name]
    from pyroute2 import IPRoute  # noqa: PLC0415 - heavy import, daemon only

    return IPRoute


def _register_bare() -> None:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(_PACKAGE)
    loader = spec.loader
    bare = types.ModuleType(_PACKAGE, "pyroute2, its __init__ run on first use of its names")
    bare.__spec__ = spec
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__file__ = spec.origin
    bare.__package__ = _PACKAGE
    bare.__loader__ = loader

    def lazily(name: str) -> object:
        """A submodule, imported; a name only `__init__` defines: run it, once, in this module.

        `from pyroute2 import config` in pyroute2's own modules asks here first.
        """
        if name.startswith("__"):
            raise AttributeError(name)  # what the import system and tools probe for
        try:
            return importlib.import_module(f"{_PACKAGE}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{_PACKAGE}.{name}":
                raise
        if bare.__dict__.pop("__getattr__", None) is not None:
            loader.exec_module(bare)
        try:
            return bare.__dict__[name]
        except KeyError:
            msg = f"module {_PACKAGE!r} has no attribute {name!r}"
            raise AttributeError(msg) from None

    bare.__dict__["__getattr__"] = lazily
    sys.modules[_PACKAGE] = bare
