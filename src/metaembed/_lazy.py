"""Packages whose public names are imported on first use (PEP 562), so that importing a package costs only what
is used: ``import metaembed`` and the command line's ``--help`` load neither torch nor sentence-transformers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(
    package: str, modules: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: a name of ``modules`` (name -> the module
    that defines it) is imported from there on first access and then kept in the package (later accesses are plain
    lookups); ``dir()`` lists the ``exported`` names too. Anything else is an ``AttributeError`` as usual."""
    namespace = sys.modules[package].__dict__
    public = tuple(exported)

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(modules[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *public})

    return __getattr__, __dir__
