"""Lazy package exports: ``import recipekit.embedders`` stays cheap and works without torch.

A package lists ``{name: submodule}`` and gets a module ``__getattr__`` that imports the
submodule on first use, plus a ``__dir__``; a missing heavy dependency becomes an
``ImportError`` that says which extra to install. Used by ``recipekit.embedders``,
``recipekit.losses`` and ``recipekit.training``. (Torch-free, like all of ``core/``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["builtin_loader", "lazy_exports"]


def lazy_exports(package: str, namespace: dict[str, Any], exports: Mapping[str, str], hint: str,
                 heavy: Sequence[str] = ("torch", "torchvision")) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose globals are ``namespace``; ``hint`` is
    the message when one of the ``heavy`` modules is missing."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(f".{exports[name]}", package)
        except ModuleNotFoundError as exc:
            if exc.name in heavy:
                raise ImportError(hint) from exc
            raise
        value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def builtin_loader(package: str, modules: Sequence[str]) -> Callable[[], None]:
    """A function that imports ``modules`` of ``package`` the first time it is called: the
    built-in entries of a registry, which register themselves when imported (so that asking a
    registry for a name, not importing it, pays for torch)."""
    loaded = False

    def load() -> None:
        nonlocal loaded
        if not loaded:
            for module in modules:
                importlib.import_module(f".{module}", package)
            loaded = True

    return load
