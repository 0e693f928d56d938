"""Ingredient names in queries (torch-free): canonical names as the `prepare` stage writes them,
close matches for unknown ones, and removing an ingredient from a recipe.

A query term is canonicalised like an ingredient line of the corpus: lower-cased, then
:func:`recipekit.pipeline.ingredient_names.extract_name` (``"2 ripe tomatoes"`` -> ``tomato``);
a term is known when that name (or the term itself) is in the index's ingredient vocabulary
(``ingredient_vocab.parquet`` of the prepared folder). Mentions are matched as
:func:`recipekit.pipeline.vocab.match_names` matches names to lines: whole words, plurals folded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import SearchError

__all__ = ["IngredientVocabulary", "RecipeMentions", "mentions", "split_terms", "without_ingredients"]


def split_terms(value: str | Iterable[str] | None) -> list[str]:
    """``"tomato, basil"`` or ``["tomato", "basil"]`` -> ``["tomato", "basil"]`` (blank terms dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return [t.strip() for t in items if t and t.strip()]


def mentions(texts: Sequence[str], name: str) -> list[bool]:
    """For each text, whether it names ``name`` (whole words, plurals folded)."""
    from recipekit.pipeline.vocab import match_names

    return [m is not None for m in match_names(list(texts), [name])]


class IngredientVocabulary:
    """The ingredient names an index knows, most frequent first."""

    def __init__(self, names: Sequence[str], counts: Sequence[int] | None = None):
        self.names = [str(n) for n in names]
        self.counts = dict(zip(self.names, counts or [1] * len(self.names)))
        self._known = set(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def canonical(self, term: str) -> str | None:
        """The vocabulary name ``term`` stands for, or None."""
        text = " ".join(str(term).lower().split())
        if not text:
            return None
        if text in self._known:
            return text
        from recipekit.pipeline.ingredient_names import extract_name

        name = extract_name(text)
        return name if name in self._known else None

    def close_matches(self, term: str, n: int = 5) -> list[str]:
        text = " ".join(str(term).lower().split())
        close = difflib.get_close_matches(text, self.names, n=n, cutoff=0.6)
        if len(close) < n:  # names that contain the term as a word ("tomato" -> "cherry tomato")
            close += [m for m in self.names if m not in close and text and f" {text} " in f" {m} "][: n - len(close)]
        return close

    def require(self, term: str) -> str:
        """:meth:`canonical`, or a :class:`SearchError` naming the term and close matches."""
        name = self.canonical(term)
        if name is None:
            close = self.close_matches(term)
            hint = f"; close matches: {', '.join(close)}" if close else "; no close match in this index"
            raise SearchError(f"unknown ingredient {term!r}{hint}")
        return name

    def require_all(self, terms: Sequence[str]) -> list[str]:
        """:meth:`require` of every term, or one :class:`SearchError` naming every unknown term
        (each with its close matches), not only the first."""
        names, unknown = [], []
        for term in terms:
            name = self.canonical(term)
            if name is None:
                close = self.close_matches(term)
                unknown.append(f"{term!r} (" + (f"close matches: {', '.join(close)}" if close
                                                else "no close match in this index") + ")")
            names.append(name)
        if len(unknown) == 1:
            raise SearchError(f"unknown ingredient {unknown[0]}")
        if unknown:
            raise SearchError(f"{len(unknown)} unknown ingredients: {'; '.join(unknown)}")
        return names

    def expand(self, name: str) -> list[str]:
        """Every vocabulary name that mentions ``name`` (``tomato`` -> tomato, tomato sauce, ...)."""
        return [n for n, hit in zip(self.names, mentions(self.names, name)) if hit]


def _text(item: Any) -> str:
    return str(item.get("text", "")) if isinstance(item, Mapping) else str(item)


def without_ingredients(recipe: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A copy of a layer1-style recipe without the ingredient lines and the instructions that
    mention any of ``names`` (AdaMine's "removing an ingredient" query)."""
    ingredients = list(recipe.get("ingredients") or [])
    instructions = list(recipe.get("instructions") or [])
    keep_i = [True] * len(ingredients)
    keep_s = [True] * len(instructions)
    for name in names:
        keep_i = [k and not m for k, m in zip(keep_i, mentions([_text(x) for x in ingredients], name))]
        keep_s = [k and not m for k, m in zip(keep_s, mentions([_text(x) for x in instructions], name))]
    out = dict(recipe)
    out["ingredients"] = [x for x, k in zip(ingredients, keep_i) if k]
    out["instructions"] = [x for x, k in zip(instructions, keep_s) if k]
    return out


def _stem(name: str) -> str:
    """A substring every written form of ``name`` holds (``berry`` -> ``berr``: ``berries``), lower-cased;
    only a cheap first pass, :func:`mentions` decides."""
    words = [w for w in str(name).lower().split() if w]
    word = max(words, key=len) if words else ""
    return word[:-1] if len(word) > 3 and word.endswith("y") else word


class RecipeMentions:
    """Which recipes mention an ingredient, by their extracted names *or* their raw ingredient
    lines: the extraction can miss a line ("2 tomatoes" in a soup whose names lack ``tomato``),
    the line itself cannot. ``names``: each recipe's canonical names; ``lines``: each recipe's
    raw ingredient lines (lists, or a pyarrow list-of-strings column, in the same order)."""

    def __init__(self, names: Sequence[Sequence[str] | None], lines: Any, vocabulary: IngredientVocabulary):
        import pyarrow as pa

        if not isinstance(lines, (pa.Array, pa.ChunkedArray)):
            lines = pa.array([list(x or []) for x in lines], type=pa.list_(pa.string()))
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks() if lines.num_chunks else pa.array([], type=pa.list_(pa.string()))
        if len(lines) != len(names):
            raise ValueError(f"{len(names)} recipes have names but {len(lines)} have ingredient lines")
        self.names, self.lines, self.vocabulary = names, lines, vocabulary
        self._rows_by_name: dict[str, list[int]] | None = None
        self._cache: dict[str, Any] = {}

    def __call__(self, name: str):
        """A boolean numpy array: True for each recipe that mentions ``name`` (whole words, plurals
        folded: ``tomato`` matches "2 tomatoes" and "cherry tomatoes", not "tomatillos")."""
        if name not in self._cache:
            self._cache[name] = self._by_names(name) | self._by_lines(name)
        return self._cache[name]

    def _by_names(self, name: str):
        import numpy as np

        if self._rows_by_name is None:
            self._rows_by_name = {}
            for row, names in enumerate(self.names):
                for n in names or ():
                    self._rows_by_name.setdefault(n, []).append(row)
        out = np.zeros(len(self.names), dtype=bool)
        for n in self.vocabulary.expand(name) if name in self.vocabulary else [name]:
            out[self._rows_by_name.get(n, [])] = True
        return out

    def _by_lines(self, name: str):
        import numpy as np
        import pyarrow.compute as pc

        out = np.zeros(len(self.names), dtype=bool)
        stem = _stem(name)
        if not stem or not len(self.lines):
            return out
        flat = pc.list_flatten(self.lines)
        parents = np.asarray(pc.list_parent_indices(self.lines))
        maybe = pc.fill_null(pc.match_substring(flat, stem, ignore_case=True), False)
        idx = np.flatnonzero(np.asarray(maybe, dtype=bool))
        if len(idx):
            hit = np.asarray(mentions(flat.take(idx).to_pylist(), name), dtype=bool)
            out[parents[idx[hit]]] = True
        return out
