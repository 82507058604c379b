"""Package attributes that import their module on first use (keeps `import resplat.x` cheap)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, namespace: dict[str, Any], module_of: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that loads `name` from `module_of[name]` and caches it in `namespace`."""

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_of[name]), name)
        namespace[name] = value
        return value

    return __getattr__
