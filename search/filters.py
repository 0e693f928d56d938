"""The result filters of :class:`~recipekit.search.SearchEngine`: which recipes a query may return.

:class:`RecipeFilters` is mixed into the engine and holds its class, partition and ingredient
filters (``class_name``, ``partition``, ``exclude``) and the mask they make over the index's
recipes; it reads the engine's ``recipes``, ``ingredients``, ``_class_ids``, ``_partition_of``,
``_classes``, ``_mentions`` and ``_text_table()``. :func:`class_hint` words the "unknown class" error.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

import numpy as np

from .errors import SearchError
from .ingredients import RecipeMentions, split_terms

__all__ = ["ALL_PARTITIONS", "RecipeFilters", "class_hint"]

ALL_PARTITIONS = "all"  # the partition filter's "no filter"


def class_hint(wanted: str, names: Sequence[str]) -> str:
    """What to say after "unknown class": every class when there are few, else the close matches
    and the command that lists them all."""
    if not names:
        return "; this index has no classes (background only)"
    if len(names) <= 20:
        return f"; classes: {', '.join(names)}"
    close = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.5)
    return ((f"; close matches: {', '.join(close)}" if close else "")
            + f"; {len(names)} classes, listed by `recipekit search RUN --list-classes`")


class RecipeFilters:
    """The class, partition and ingredient filters of :class:`~recipekit.search.SearchEngine`."""

    def classes(self) -> list[str]:
        """Class names of the indexed recipes, by class id (background excluded)."""
        return [n for _, n in self._class_table()]

    def _class_table(self) -> list[tuple[int, str]]:
        if self._classes is None:
            self._classes = sorted({(c, n) for c, n in zip(self.recipes["class_id"], self.recipes["class_name"])
                                    if c != 0})
        return self._classes

    def _excluded(self, *lists: Iterable[str] | str) -> list[str]:
        return list(dict.fromkeys(self.ingredients.require_all([t for terms in lists for t in split_terms(terms)])))

    def partitions(self) -> list[str]:
        """The partitions (splits) of the indexed recipes, sorted."""
        return [str(p) for p in np.unique(self._partition_of) if p]

    def _partition(self, partition: str | None) -> str | None:
        wanted = str(partition or "").strip().lower()
        if not wanted or wanted == ALL_PARTITIONS:
            return None
        if wanted not in self.partitions():
            raise SearchError(f"unknown partition {partition!r}; this index has {', '.join(self.partitions())} "
                              f"(or {ALL_PARTITIONS})")
        return wanted

    def _class(self, class_name: str | None) -> tuple[int, str] | None:
        if class_name is None or not str(class_name).strip():
            return None
        wanted = " ".join(str(class_name).lower().split())
        names = {n.lower(): c for c, n in self._class_table()}
        if wanted not in names:
            raise SearchError(f"unknown class {class_name!r}{class_hint(wanted, list(names))}")
        return names[wanted], wanted

    def _mask(self, class_name: str | None, excluded: Sequence[str], partition: str | None = None) -> np.ndarray | None:
        cls, part = self._class(class_name), self._partition(partition)
        if cls is None and not excluded and part is None:
            return None
        mask = np.ones(len(self), dtype=bool) if cls is None else self._class_ids == cls[0]
        if part is not None:
            mask &= self._partition_of == part
        if excluded:
            if self._mentions is None:
                self._mentions = RecipeMentions(self.recipes["ingredients"], self._text_table().column("ingredients"),
                                                self.ingredients)
            for x in excluded:
                mask &= ~self._mentions(x)
        return mask

