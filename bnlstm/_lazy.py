"""Names a package loads on first use (PEP 562), so that importing it costs nothing until a
name is used: ``import bnlstm`` and the settings table load without torch."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, Tuple


def lazy_names(package: str, exports: Dict[str, str]) -> Tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose name ``N`` lives in its
    submodule ``exports[N]`` (relative to the package)."""
    def __getattr__(name: str):
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))
    return __getattr__, __dir__
