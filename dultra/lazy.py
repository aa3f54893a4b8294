"""Names a package re-exports from its modules, each module imported when one of its names
is first used (PEP 562), so a light module of the package (a config class) can be imported
without the torch modules beside it.

    __getattr__, __dir__ = lazy_exports(__name__, {"scorer": ("RewardScorer", "example_fields")})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """The module `__getattr__` and `__dir__` of `package`, which import `package.<module>` for
    its names. No name may be a module's own name: importing that module would shadow it."""
    where = {name: module for module, names in modules.items() for name in names}
    if clash := sorted(set(where) & set(modules)):
        raise ValueError(f"{package}: {clash} are module names, not exportable lazily")

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
