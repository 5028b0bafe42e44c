"""Lazy package attributes (PEP 562): a package lists its public names and the modules that own them, and
each is imported on first use. ``import neuronscope`` and the microscope's ``neuronscope.mining.buckets``
must not import torch through a package ``__init__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(package: str, namespace: dict[str, Any], exports: Mapping[str, str],
                    submodules: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose globals are ``namespace``.

    Args:
        exports: public name -> the module that owns it (imported on first use, then kept in ``namespace``).
        submodules: subpackage names reachable as attributes before anyone imported them.
    """
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports, *submodules})

    return __getattr__, __dir__
