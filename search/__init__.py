"""Search with a trained model: `recipekit index` and `recipekit search` (docs/search.md).

:func:`build_index` embeds every recipe and every stored photo of a prepared folder and
writes ``RUN/index/``; :class:`SearchEngine` opens it with the same model and answers photo,
recipe and ingredient queries with :class:`Hit` rows; :func:`search` is the one call behind
the CLI. Every bad input raises :class:`SearchError` (a ``ValueError``) with a clear message.
"""

from __future__ import annotations

from .errors import SearchError
from .index import APPROXIMATE_ABOVE, DEFAULT_NPROBE, build_index, read_meta
from .query import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, TARGETS, Hit, SearchEngine
from .api import load_recipe_file, render_hits, search

__all__ = [
    "APPROXIMATE_ABOVE",
    "DEFAULT_NPROBE",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "TARGETS",
    "Hit",
    "SearchEngine",
    "SearchError",
    "build_index",
    "load_recipe_file",
    "read_meta",
    "render_hits",
    "search",
]
