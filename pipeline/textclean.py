"""Text clean-up applied to every title, ingredient line and instruction.

What im2recipe's preprocessing does, without its ASCII-only folding (recipekit
also reads Chinese and accented text): HTML entities decoded (twice, for the
``&amp;amp;`` double escapes scraped pages carry), unicode vulgar fractions
spelt as ASCII (``1½`` -> ``1 1/2``), compatibility forms folded (NFKC: full-width
brackets, ligatures, non-breaking spaces) and whitespace collapsed.

Markup is removed only where it is real HTML: a tag whose name is an HTML element
(``<b>``, ``</p>``, ``<br/>``, ``<a href="...">``) or a comment. Anything else between angle
brackets is text and stays (``Rice with <Chef special> sauce``, ``a < b``). Pass a
:class:`collections.Counter` as ``stats`` to count the texts each step changed
(``markup_removed``, ``entities_decoded``, ``unicode_folded``); `parse` records them in its
manifest.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections import Counter

__all__ = ["HTML_TAGS", "STEPS", "clean_text", "clean_texts", "strip_markup"]

_FRACTIONS = {
    "½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅖": "2/5",
    "⅗": "3/5", "⅘": "4/5", "⅙": "1/6", "⅚": "5/6", "⅐": "1/7", "⅛": "1/8", "⅜": "3/8",
    "⅝": "5/8", "⅞": "7/8", "⅑": "1/9", "⅒": "1/10",
}
# A digit directly before a vulgar fraction gets a space: "1½" -> "1 1/2".
_FRACTION_RE = re.compile(r"(\d?)([" + "".join(_FRACTIONS) + "])")
# Names of HTML elements (the living standard's, plus the obsolete ones scraped pages still carry).
HTML_TAGS = frozenset("""
a abbr acronym address area article aside audio b base basefont bdi bdo big blink blockquote body br
button canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl
dt em embed fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header
hgroup hr html i iframe img input ins kbd label legend li link main map mark marquee menu meta meter
nav nobr noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp
script search section select small source span strike strong style sub summary sup svg table tbody td
template textarea tfoot th thead time title tr track tt u ul var video wbr
""".split())
# A candidate tag: '<' or '</', a name, then attributes (quoted values may hold '>'), then '>'.
_TAG_RE = re.compile(r"""<(/?)([A-Za-z][A-Za-z0-9]*)((?:\s+[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>]+))?)*\s*/?)>""")
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)


def _tag(match: re.Match) -> str:
    return " " if match.group(2).lower() in HTML_TAGS else match.group(0)


def _fraction(match: re.Match) -> str:
    digit, frac = match.groups()
    return (digit + " " if digit else "") + _FRACTIONS[frac]


def strip_markup(text: str) -> str:
    """``text`` without its HTML tags and comments (each becomes a space); other text stays."""
    if "<" not in text:
        return text
    return _TAG_RE.sub(_tag, _COMMENT_RE.sub(" ", text))


def clean_text(text: str, stats: Counter | None = None) -> str:
    """Return ``text`` with entities decoded, HTML markup removed, fractions spelt out and
    whitespace collapsed; ``stats`` (optional) counts the texts each step changed."""
    if "&" in text:
        new = html.unescape(html.unescape(text))
        if stats is not None and new != text:
            stats["entities_decoded"] += 1
        text = new
    if "<" in text:
        new = strip_markup(text)
        if stats is not None and new != text:
            stats["markup_removed"] += 1
        text = new
    if not text.isascii():
        new = _FRACTION_RE.sub(_fraction, text)
        # NFKC folds full-width forms and odd spaces; the fraction slash becomes '/'.
        new = unicodedata.normalize("NFKC", new).replace("\u2044", "/")
        if stats is not None and new != text:
            stats["unicode_folded"] += 1
        text = new
    return " ".join(text.split())


@functools.cache
def _space_issue_re() -> str:
    """A regex matching the texts whose whitespace ``clean_text`` would change: a leading or trailing
    space, two spaces in a row, or any other character ``str.split()`` splits on (tabs, newlines,
    no-break spaces, ...). Worked out on first use, not at import (it walks every code point)."""
    others = (chr(c) for c in range(0x110000) if chr(c).isspace() and c != 0x20)
    return "^ | $|  |[" + "".join(f"\\x{{{ord(c):x}}}" for c in others) + "]"


# clean_text's fraction step as Arrow can do it before NFKC: a space between a digit and a vulgar
# fraction (NFKC then spells the fraction with U+2044, which becomes '/').
_DIGIT_FRACTION_RE = r"(\p{Nd})([" + "".join(_FRACTIONS) + "])"


def _ranges(codes: list[int]) -> str:
    """A regex class of ``codes`` (ascending), runs written as ranges."""
    import numpy as np

    a = np.asarray(codes, dtype=np.int64)
    cut = np.flatnonzero(np.diff(a) != 1)
    starts, ends = a[np.r_[0, cut + 1]].tolist(), a[np.r_[cut, len(a) - 1]].tolist()
    return "[" + "".join(f"\\x{{{lo:x}}}" + (f"-\\x{{{hi:x}}}" if hi > lo else "") for lo, hi in zip(starts, ends)) + "]"


_UNICODE: dict[str, object] = {}
_TABLES_END = 0x32000  # characters from here on are all left to Python (see _unicode_tables)


def _unicode_tables() -> dict[str, object]:
    """What :func:`clean_texts` needs to know of Python's Unicode database (``unicodedata``) and of
    Arrow's NFKC (utf8proc), worked out once per process (a few tenths of a second):

    * ``stable``: a regex class of the characters NFKC leaves as they are wherever they stand: ASCII
      and the starters (combining class 0) that NFKC leaves alone and that never end a composition.
      A text made of them only is unchanged by NFKC (the normalization quick check), so it needs no
      NFKC at all;
    * ``agrees``: whether Arrow's NFKC gives Python's for every character Python decomposes. When it
      does, a text of characters Python's database assigns folds the same in both, decompositions and
      compositions of assigned characters being stable across Unicode versions;
    * ``unassigned``: a regex class of the characters Python's database leaves unassigned (a newer
      Unicode may fold them), for such texts to go through Python. From U+32000 on (ideographic plane
      3's unassigned tail, the empty planes 4-13, tags, variation selectors and private use) every
      character counts as unassigned and none as stable, unchecked: that only sends a text to Python,
      which is always right."""
    if not _UNICODE:
        import pyarrow as pa
        import pyarrow.compute as pc

        codes = range(0x80, _TABLES_END)
        chars = list(map(chr, codes))
        kinds = list(map(unicodedata.category, chars))
        decompositions = list(map(unicodedata.decomposition, chars))
        classes = list(map(unicodedata.combining, chars))
        # the second characters of canonical pairs may compose with the character before them, as may
        # Hangul's medial vowels and final consonants (their composition is by rule, not in the table)
        seconds = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3)) | {
            int(d.split()[1], 16) for d in decompositions if d and d[0] != "<" and len(d.split()) == 2}
        odd = [c for c, kind in zip(codes, kinds) if kind == "Cn"]
        decomposed = [ch for ch, d, kind in zip(chars, decompositions, kinds) if d and kind != "Cs"]
        stable = [*range(0x80), *(c for c, ch, d, kind, ccc in zip(codes, chars, decompositions, kinds, classes)
                                  if not ccc and kind != "Cs" and c not in seconds
                                  and (not d or unicodedata.normalize("NFKC", ch) == ch))]
        arrow = pc.utf8_normalize(pa.array(decomposed), "NFKC").to_pylist()
        _UNICODE["agrees"] = arrow == [unicodedata.normalize("NFKC", c) for c in decomposed]
        _UNICODE["unassigned"] = _ranges(odd)[:-1] + f"\\x{{{_TABLES_END:x}}}-\\x{{10ffff}}]"
        _UNICODE["unstable"] = "[^" + _ranges(stable)[1:]  # a character not in ``stable``
    return _UNICODE


def _arrow_fold_agrees() -> bool:
    """Whether Arrow's NFKC agrees with Python's Unicode database (see :func:`_unicode_tables`)."""
    return bool(_unicode_tables()["agrees"])


STEPS = ("markup_removed", "entities_decoded", "unicode_folded")  # what ``stats`` counts


def clean_texts(texts):
    """:func:`clean_text` over a pyarrow string array (no nulls), at Arrow's speed where it can:
    returns the cleaned array and, per step of :data:`STEPS`, a boolean array of the texts it changed.

    * Texts holding ``&``, ``<`` or the fraction slash, or whose whitespace is not already collapsed,
      go through :func:`clean_text` in Python (a few in a hundred in real recipes).
    * Other non-ASCII texts that NFKC changes are folded by Arrow the way :func:`clean_text` folds
      them (a space between a digit and a vulgar fraction, NFKC, U+2044 to ``/``), provided Arrow's
      NFKC agrees with Python's Unicode database (:func:`_arrow_fold_agrees`) and the text holds no
      character that database leaves unassigned; otherwise they go through Python too. Their
      whitespace is then collapsed in Python where folding left two spaces or an odd one.
    * Every other text is left as it is: no step of :func:`clean_text` changes it.

    The result is :func:`clean_text`'s, text for text (tested on both corpora and generated texts)."""
    import numpy as np  # pyarrow and numpy: only the parse stage's workers need them here
    import pyarrow as pa
    import pyarrow.compute as pc

    def mask(array) -> np.ndarray:
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)

    def replace(texts, where: np.ndarray, new) -> pa.Array:
        into = np.zeros(len(texts), dtype=bool)
        into[where] = True
        return pc.replace_with_mask(texts, pa.array(into), new)

    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    n = len(texts)
    changed = {step: np.zeros(n, dtype=bool) for step in STEPS}
    python = mask(pc.match_substring_regex(texts, "[&<\u2044]|" + _space_issue_re()))
    foreign = np.flatnonzero(~mask(pc.string_is_ascii(texts)) & ~python)
    if len(foreign):
        tables = _unicode_tables()
        sub = texts.take(pa.array(foreign))
        maybe = mask(pc.match_substring_regex(sub, tables["unstable"]))
        foreign, sub = foreign[maybe], sub.filter(pa.array(maybe))
        changes = ~mask(pc.equal(pc.utf8_normalize(sub, "NFKC"), sub))
        fold, sub = foreign[changes], sub.filter(pa.array(changes))
        if len(fold) and tables["agrees"]:
            odd = mask(pc.match_substring_regex(sub, tables["unassigned"]))
            python[fold[odd]] = True
            fold, sub = fold[~odd], sub.filter(pa.array(~odd))
            folded = pc.replace_substring(pc.utf8_normalize(
                pc.replace_substring_regex(sub, _DIGIT_FRACTION_RE, r"\1 \2"), "NFKC"), "\u2044", "/")
            changed["unicode_folded"][fold] = mask(pc.not_equal(folded, sub))
            spaced = mask(pc.match_substring_regex(folded, _space_issue_re()))
            if spaced.any():
                at = np.flatnonzero(spaced)
                folded = replace(folded, at, pa.array([" ".join(t.split()) for t in folded.take(pa.array(at)).to_pylist()],
                                                      texts.type))
            texts = replace(texts, fold, folded)
        else:
            python[fold] = True
    touch = np.flatnonzero(python)
    if len(touch):
        new = []
        for i, text in zip(touch.tolist(), texts.take(pa.array(touch)).to_pylist()):
            stats: Counter = Counter()
            new.append(clean_text(text, stats))
            for step in stats:
                changed[step][i] = True
        texts = replace(texts, touch, pa.array(new, texts.type))
    return texts, changed
