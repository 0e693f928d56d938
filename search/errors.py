"""The one exception of :mod:`recipekit.search`."""

from __future__ import annotations

__all__ = ["SearchError"]


class SearchError(ValueError):
    """Bad input to a search or an index (empty query, unknown ingredient or class, not an
    image, image too large, an index built with another model, a missing or broken index):
    the message says what and, where it helps, lists close matches."""
