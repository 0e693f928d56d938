"""Text clean-up applied to every title, ingredient line and instruction.

What im2recipe's preprocessing does, without its ASCII-only folding (recipekit
also reads Chinese and accented text): HTML entities decoded (twice, for the
``&amp;amp;`` double escapes scraped pages carry), unicode vulgar fractions
spelt as ASCII (``1½`` -> ``1 1/2``), compatibility forms folded (NFKC: full-width
brackets, ligatures, non-breaking spaces) and whitespace collapsed.
"""

from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["clean_text"]

_FRACTIONS = {
    "½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅖": "2/5",
    "⅗": "3/5", "⅘": "4/5", "⅙": "1/6", "⅚": "5/6", "⅐": "1/7", "⅛": "1/8", "⅜": "3/8",
    "⅝": "5/8", "⅞": "7/8", "⅑": "1/9", "⅒": "1/10",
}
# A digit directly before a vulgar fraction gets a space: "1½" -> "1 1/2".
_FRACTION_RE = re.compile(r"(\d?)([" + "".join(_FRACTIONS) + "])")
_TAG_RE = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")


def _fraction(match: re.Match) -> str:
    digit, frac = match.groups()
    return (digit + " " if digit else "") + _FRACTIONS[frac]


def clean_text(text: str) -> str:
    """Return ``text`` with entities decoded, fractions spelt out and whitespace collapsed."""
    if "&" in text:
        text = html.unescape(html.unescape(text))
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    if not text.isascii():
        text = _FRACTION_RE.sub(_fraction, text)
        # NFKC folds full-width forms and odd spaces; the fraction slash becomes '/'.
        text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    return " ".join(text.split())
