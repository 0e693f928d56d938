"""Moved to :mod:`recipekit.core.lazy`; this name stays for code written against it."""

from recipekit.core.lazy import lazy_exports  # noqa: F401

__all__ = ["lazy_exports"]
