"""The one word tokeniser of recipekit (word2vec, class bigrams, recipe towers).

Lower-cased words (hyphens, apostrophes and underscores kept inside a word, so
``all-purpose`` and ``olive_oil`` stay whole), numbers (``1/2``, ``2.5``), each
punctuation mark as its own token (im2recipe pads punctuation), and each CJK
character as its own token (Chinese has no spaces between words).
"""

from __future__ import annotations

import re

__all__ = ["tokenize", "underscore_ingredients", "ingredient_token"]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(
    rf"[{_CJK}]"  # one CJK character
    r"|\d+(?:[./,]\d+)*"  # numbers and fractions
    rf"|[^\W\d{_CJK}]+(?:['’_-][^\W\d{_CJK}]+)*"  # words, inner - ' _ kept
    r"|[^\w\s]"  # punctuation, one mark a token
)


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text``."""
    return _TOKEN_RE.findall(text.lower())


def ingredient_token(name: str) -> str:
    """The single token of a (multi-word) ingredient name: ``olive oil`` -> ``olive_oil``."""
    return "_".join(name.lower().split())


def underscore_ingredients(text: str, names: list[str]) -> str:
    """Lower-case ``text`` with each multi-word ingredient name joined by ``_``, as im2recipe
    tokenised instructions (longest names first, whole words only)."""
    text = text.lower()
    for name in sorted({n for n in names if " " in n}, key=len, reverse=True):
        if name in text:
            text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", ingredient_token(name), text)
    return text
