"""Token ids of recipes against the word2vec vocabulary (torch-free; shared by the `store`
stage, the streaming loaders and the recipe towers).

Token ids (the convention of ``word2vec/vocab.txt``): the word on line ``k`` (0-based) has
id ``k + 2``; ``0`` is padding and ``1`` an unknown word. No end token is appended: lengths
and masks mark where a sequence ends.

:func:`tokenise_recipe` takes a layer1.json-style dict (``{"title", "ingredients": [{"text",
["name"]}], "instructions": [{"text"}]}``); :func:`tokenise_sample` takes the prepared form
used by the shards and the LMDB store (``{"title", "ingredient_lines": [raw lines],
"ingredients": [canonical names], "instructions": [str]}``) and gives the same output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from recipekit.core.limits import DEFAULT_LIMITS

from .tokenize import ingredient_token, tokenize, underscore_ingredients

__all__ = [
    "N_SPECIAL",
    "PAD_ID",
    "UNK_ID",
    "Vocabulary",
    "match_names",
    "tokenise_recipe",
    "tokenise_sample",
]

PAD_ID = 0
UNK_ID = 1
N_SPECIAL = 2


class Vocabulary:
    """Word list -> ids (``words[k]`` has id ``k + 2``; 0 padding, 1 unknown).

    ``len(vocab)`` is the number of embedding rows (words + 2).
    """

    def __init__(self, words: Iterable[str]):
        self.words: list[str] = [str(w) for w in words]
        self._index = {w: i + N_SPECIAL for i, w in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise ValueError("vocabulary has duplicate words")
        self._max_ngram = max((w.count("_") + 1 for w in self.words if "_" in w), default=1)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Read ``word2vec/vocab.txt`` (one word a line, blank lines ignored)."""
        text = Path(path).read_text(encoding="utf-8")
        return cls(line.strip() for line in text.splitlines() if line.strip())

    def __len__(self) -> int:
        return len(self.words) + N_SPECIAL

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def digest(self) -> str:
        """SHA-256 of the word list (identifies the vocabulary a tokenised artefact used)."""
        return hashlib.sha256("".join(w + "\n" for w in self.words).encode("utf-8")).hexdigest()

    def id(self, word: str) -> int:
        return self._index.get(word, UNK_ID)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        ids = [self.id(t) for t in tokenize(text)]
        return ids[:max_tokens] if max_tokens else ids

    def ingredient_id(self, line: str, name: str | None = None) -> int:
        """Id of an ingredient's name: ``name`` joined with ``_`` when given (as in det_ingrs),
        else the longest run of the line's tokens that is a vocabulary word once joined with
        ``_`` (the last such run on ties: ``2 cups olive oil`` -> ``olive_oil``); 1 if none."""
        if name:
            return self.id(ingredient_token(name))
        toks = [t for t in tokenize(line) if t.isalpha() or "_" in t or "-" in t]
        for n in range(min(self._max_ngram, len(toks)), 0, -1):
            for start in range(len(toks) - n, -1, -1):
                word = "_".join(toks[start : start + n])
                if word in self._index:
                    return self._index[word]
        return UNK_ID


def _texts(items: Sequence[Any]) -> list[str]:
    return [it["text"] if isinstance(it, Mapping) else str(it) for it in items]


def tokenise_recipe(
    recipe: Mapping[str, Any],
    vocab: Any,
    max_ingredients: int = DEFAULT_LIMITS.max_ingredients,
    max_instructions: int = DEFAULT_LIMITS.max_instructions,
    max_tokens: int = DEFAULT_LIMITS.max_tokens,
) -> dict[str, Any]:
    """Token ids of a layer1.json-style recipe ``{"title", "ingredients": [{"text"}],
    "instructions": [{"text"}]}``. An ingredient may carry ``"name"`` (its canonical name,
    e.g. from det_ingrs.json): it is then used for ``ingredient_names`` and, as in
    im2recipe, multi-word names are joined with ``_`` inside the instructions. ``vocab`` is a
    :class:`Vocabulary` or any object with ``encode(text, max_tokens)`` (e.g. the MiniLM one).

    Returns ``{"title": [ids], "ingredients": [[ids], ...], "ingredient_names": [ids],
    "instructions": [[ids], ...]}``, truncated to ``max_tokens`` / ``max_ingredients`` /
    ``max_instructions``."""
    ingredients = list(recipe.get("ingredients") or [])[:max_ingredients]
    lines = _texts(ingredients)
    names = [it.get("name") if isinstance(it, Mapping) else None for it in ingredients]
    known = [n.lower() for n in names if n]
    steps = _texts(list(recipe.get("instructions") or [])[:max_instructions])
    if known and isinstance(vocab, Vocabulary):
        steps = [underscore_ingredients(s, known) for s in steps]
    out = {
        "title": vocab.encode(str(recipe.get("title") or ""), max_tokens),
        "ingredients": [vocab.encode(t, max_tokens) for t in lines],
        "instructions": [vocab.encode(s, max_tokens) for s in steps],
    }
    if hasattr(vocab, "ingredient_id"):
        out["ingredient_names"] = [vocab.ingredient_id(t, n) for t, n in zip(lines, names)]
    else:
        out["ingredient_names"] = [UNK_ID] * len(lines)
    return out


@lru_cache(maxsize=1 << 16)
def _singular(token: str) -> str:
    """A crude singular form, applied to both sides when matching names to lines."""
    if len(token) > 3 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith(("oes", "ches", "shes", "sses", "xes")):
        return token[:-2]
    if len(token) > 2 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _name_keys(names: Sequence[str]) -> list[tuple[str, str]]:
    keyed = [(f" {' '.join(map(_singular, tokenize(n)))} ", n) for n in names if n]
    return sorted(keyed, key=lambda kn: len(kn[0]), reverse=True)


def _match(tokens: list[str], keyed: list[tuple[str, str]]) -> str | None:
    if not keyed:
        return None
    hay = f" {' '.join(map(_singular, tokens))} "
    return next((n for key, n in keyed if key in hay), None)


def match_names(lines: Sequence[str], names: Sequence[str]) -> list[str | None]:
    """For each raw ingredient line, the canonical name it mentions (whole words, plurals
    folded; the longest name when several match), or None.

    ``ingredients.parquet`` lists each recipe's canonical names once, in order of first
    mention, without saying which line each came from; this puts them back on their lines
    so that ``ingredient_names`` stays aligned with the ingredient lines (the JE tower reads
    ``n_ingredients`` names)."""
    keyed = _name_keys(names)
    return [_match(tokenize(line), keyed) for line in lines]


def tokenise_sample(
    sample: Mapping[str, Any],
    vocab: Any,
    max_ingredients: int = DEFAULT_LIMITS.max_ingredients,
    max_instructions: int = DEFAULT_LIMITS.max_instructions,
    max_tokens: int = DEFAULT_LIMITS.max_tokens,
) -> dict[str, Any]:
    """Token ids of a prepared recipe (a shard's ``{id}.json`` or a row of recipes.parquet
    joined with ingredients.parquet): ``{"title", "ingredient_lines": [raw lines],
    "ingredients": [canonical names], "instructions": [str]}``.

    Ingredient lines are tokenised as written; ``ingredient_names[i]`` is the id of the
    canonical name found in line ``i`` (:func:`match_names`; ``olive oil`` -> ``olive_oil``),
    or the line heuristic of :meth:`Vocabulary.ingredient_id` when none is; multi-word
    canonical names are joined with ``_`` inside the instructions, as in the word2vec corpus.
    The result equals :func:`tokenise_recipe` of the layer1-style dict whose ingredient items
    carry their matched ``"name"`` and whose instructions are already joined that way. The
    same function feeds the LMDB store and the streaming loaders, so both give identical ids."""
    names = [str(n) for n in (sample.get("ingredients") or []) if n]
    lines = [str(x) for x in (sample.get("ingredient_lines") or [])][:max_ingredients]
    steps = [str(x) for x in (sample.get("instructions") or [])][:max_instructions]
    if not isinstance(vocab, Vocabulary):  # e.g. the MiniLM WordPiece vocabulary
        recipe = {"title": sample.get("title") or "", "ingredients": lines, "instructions": steps}
        return tokenise_recipe(recipe, vocab, max_ingredients, max_instructions, max_tokens)
    if names:
        lower = [n.lower() for n in names]
        steps = [underscore_ingredients(s, lower) for s in steps]
    get, lim = vocab._index.get, (max_tokens or None)
    keyed = _name_keys(names)
    ingredients, name_ids = [], []
    for line in lines:
        toks = tokenize(line)
        ingredients.append([get(t, UNK_ID) for t in toks[:lim]])
        name = _match(toks, keyed)
        name_ids.append(get(ingredient_token(name), UNK_ID) if name else vocab.ingredient_id(line))
    return {
        "title": [get(t, UNK_ID) for t in tokenize(str(sample.get("title") or ""))[:lim]],
        "ingredients": ingredients,
        "instructions": [[get(t, UNK_ID) for t in tokenize(s)[:lim]] for s in steps],
        "ingredient_names": name_ids,
    }
