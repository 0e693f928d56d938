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

import html
import re
import unicodedata
from collections import Counter

__all__ = ["HTML_TAGS", "clean_text", "strip_markup"]

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
