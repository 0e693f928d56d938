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

__all__ = ["IngredientVocabulary", "mentions", "split_terms", "without_ingredients"]


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
