"""Example run configs for ``recipekit train`` (TOML; keys in docs/training.md).

Installed with the package, so ``recipekit train --config demo`` (a name without ``.toml``)
works from any directory; a path to a file works as well. :func:`names` lists them and
:func:`path` finds one.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["names", "path"]

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The packaged config names, sorted (``demo``, ``ht``, ...)."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def path(name: str) -> Path:
    """The file of packaged config ``name``; a ``ValueError`` listing the names when unknown."""
    candidate = _HERE / f"{name}.toml"
    if not candidate.is_file():
        raise ValueError(f"no packaged config named {name!r}; choose from {', '.join(names())} or give a file path")
    return candidate
