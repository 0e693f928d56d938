"""The parse stage's columnar path (Arrow's JSON reader and compute) gives what the record-by-record
path gives: the same cleaned texts and cleaning counts, the same rows and events for every run of
records, or it hands the run back."""

import itertools
import json
import random
import re
import unicodedata
from collections import Counter

import pyarrow as pa
import pytest

from recipekit.pipeline import jsonfast, jsonsplit
from recipekit.pipeline.columnar import validate_run_columnar
from recipekit.pipeline.jsonstream import iter_array
from recipekit.pipeline.records import validate_run
from recipekit.pipeline.textclean import STEPS, clean_text, clean_texts

pytestmark = pytest.mark.skipif(jsonfast.orjson is None, reason="orjson not installed")

# Pieces of text each step of clean_text treats specially, and some it must leave alone.
PIECES = [
    "2 cups", "tomatoes", ",", ".", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x1c", "\x85", "\xa0", "\u1680",
    "\u2003", "\u2028", "\u202f", "\u3000", "1½", "½", "3 ¼", "１⅓", "٣⅔", "⅞", "1⁄2", "⁄", "ﬁ", "ｆｕｌｌ",
    "²", "425˚f", "°C", "é", "e\u0301", "A\u030a", "\u1100\u1161", "가\u11a8", "\u0915\u093c", "Å", "ü", "咖喱", "鸡蛋", "😀", "🍅", "&amp;", "&amp;amp;", "&lt;b&gt;",
    "&#189;", "&", "<b>", "</p>", "<br/>", "<Chef special>", "a < b", "<!-- c -->", "\U0001E030",
    "\U00050000", "\U000E0001", "\ufffd", "\x7f", "\x00", "x",
]


def _texts(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6))) for _ in range(n)]


def test_clean_texts_is_clean_text_text_for_text():
    texts = _texts(4000, 0) + PIECES + ["", " ", "  a  ", "a" * 300]
    cleaned, changed = clean_texts(pa.array(texts, pa.string()))
    assert set(changed) == set(STEPS)
    for i, text in enumerate(texts):
        stats = Counter()
        assert cleaned[i].as_py() == clean_text(text, stats), repr(text)
        assert {step for step in STEPS if changed[step][i]} == set(stats), repr(text)


def test_arrow_folding_is_used_and_agrees_with_unicodedata(monkeypatch):
    """The fraction and NFKC fold runs in Arrow for ordinary texts (not text by text in Python)."""
    from recipekit.pipeline import textclean

    calls = []
    monkeypatch.setattr(textclean, "clean_text", lambda text, stats=None: calls.append(text) or text)
    texts = ["Heat 1½ tbsp of oil", "bake at 425˚f", "ﬁsh ｆｕｌｌ", "plain"]
    cleaned, changed = clean_texts(pa.array(texts))
    assert textclean._arrow_fold_agrees() and calls == []
    assert cleaned.to_pylist() == [unicodedata.normalize("NFKC", t) for t in
                                   ["Heat 1 1/2 tbsp of oil", "bake at 425˚f", "ﬁsh ｆｕｌｌ", "plain"]]
    assert changed["unicode_folded"].tolist() == [True, True, True, False]


def _record(rng, i):
    """A layer1 record as JSON text, mostly valid, with one of the ways records go wrong."""
    rec = {"id": f"r{i}", "title": rng.choice(PIECES) + " soup", "partition": rng.choice(["train", "val", "test"]),
           "ingredients": [{"text": t} for t in _texts(rng.randint(1, 4), i)],
           "instructions": [{"text": t} for t in _texts(rng.randint(1, 3), i + 1)], "url": f"http://x/{i}"}
    kind = rng.randrange(24)
    if kind == 0:
        del rec[rng.choice(["id", "title", "partition", "ingredients", "instructions", "url"])]
    elif kind == 1:
        rec[rng.choice(["id", "title", "partition", "ingredients", "instructions", "url"])] = None
    elif kind == 2:
        rec["ingredients"] = []
    elif kind == 3:
        rec["instructions"].append(rng.choice([None, {}, {"text": None}, {"text": "  "}, {"text": "x", "y": [1]}]))
    elif kind == 4:
        rec["id"] = rng.choice(["", "a b", "x" * 65, "ok-id_2"])
    elif kind == 5:
        rec["partition"] = rng.choice(["dev", "Train", ""])
    elif kind == 6:
        rec["extra"] = {"nested": [1, 2.5, {"k": "v"}], "flag": True}
    elif kind == 7:
        rec["title"] = "&amp;"
    elif kind == 8:
        rec["ingredients"] = [{"text": " "}, {"text": "<p></p>"}]
    text = json.dumps(rec, ensure_ascii=rng.random() < 0.5)
    if kind == 9:
        text = text.replace('"url": ', '"url": NaN, "u2": ', 1) if '"url"' in text else text
    elif kind == 10:
        text = text.replace('"title": ', '"title": "first", "title": ', 1)
    elif kind == 11:
        text = text.replace('"id": ', '"x": "\\ud800", "id": ', 1)
    elif kind == 12:
        text = text.replace('"id": ', '"big": 123456789012345678901234, "id": ', 1)
    return text


def _runs(tmp_path, records, batch_bytes):
    path = tmp_path / "layer1.json"
    path.write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    return [b for b in jsonsplit.Scanner(path, 1 << 16, batch_bytes) if isinstance(b, jsonsplit.Batch)]


@pytest.mark.parametrize("seed", range(4))
def test_columnar_runs_equal_the_record_by_record_path(tmp_path, seed):
    rng = random.Random(seed)
    records = [_record(rng, i) for i in range(300)]
    taken = 0
    for batch in _runs(tmp_path, records, 1500):
        run = jsonfast._raw_run(batch)
        got = validate_run_columnar(run) if run is not None else None
        if got is None:
            continue
        taken += 1
        # what the standard library reads there (orjson leaves a 24-digit integer to it)
        start = jsonfast._element_start(batch, 0)
        elements = list(itertools.islice(iter_array(tmp_path / "layer1.json", start=start), len(batch.ranges)))
        want = validate_run(elements)
        assert got[1] == want[1]
        assert got[0].equals(want[0]) and got[0].schema == want[0].schema
    assert taken >= 10  # most runs are read by Arrow; those with a lone surrogate or a key twice are not


def test_huge_digit_runs_are_found_wherever_they_stand():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.choice([1, 18, 19, 319, 320, 321, 639, 640, 641, 642, 700, 2000])
        text = "".join(rng.choice("ab 1,") for _ in range(rng.randrange(0, 900)))
        text = text[: len(text) // 2] + "7" * n + text[len(text) // 2 :]
        want = re.search(r"\d{%d}" % jsonfast._HUGE_DIGITS, text) is not None
        assert jsonfast._has_huge_digits(text.encode()) == want, (n, len(text))


def test_an_integer_the_standard_library_may_refuse_hands_the_run_back(tmp_path):
    ok = json.dumps({"id": "a", "title": "t", "partition": "train", "ingredients": [{"text": "x"}],
                     "instructions": [{"text": "y"}]})
    # beyond sys.get_int_max_str_digits() the standard library raises; Arrow would skip the field
    [batch] = _runs(tmp_path, [ok, ok[:-1] + ', "n": ' + "9" * 5000 + "}"], 1 << 20)
    assert jsonfast._raw_run(batch) is None
    # 30 digits in a field the stage ignores: Arrow reads the run, as the standard library would
    [batch] = _runs(tmp_path, [ok, ok[:-1].replace('"a"', '"b"') + ', "n": ' + "9" * 30 + "}"], 1 << 20)
    table, events = validate_run_columnar(jsonfast._raw_run(batch))
    assert table.column("id").to_pylist() == ["a", "b"] and [e[2] for e in events] == [None, None]


def test_runs_arrow_cannot_read_exactly_are_handed_back(tmp_path):
    ok = json.dumps({"id": "a", "title": "t", "partition": "train", "ingredients": [{"text": "x"}],
                     "instructions": [{"text": "y"}]})
    for bad in ['{"id": "b", "title": "t", "title": "u"}', '{"id": "b", "x": "\\ud800"}',
                '{"id": "b", "x": 1e999}', '{"id": "b", "ingredients": ["not an object"]}']:
        [batch] = _runs(tmp_path, [ok, bad], 1 << 20)
        assert validate_run_columnar(jsonfast._raw_run(batch)) is None, bad
    [batch] = _runs(tmp_path, [ok, '"a string"'], 1 << 20)
    assert jsonfast._raw_run(batch) is None  # not a run of objects


@pytest.mark.parametrize("corpus", ["recipes_en", "recipes_zh"])
def test_real_corpora_are_read_by_arrow_with_the_same_result(corpus, request, tmp_path):
    path = request.getfixturevalue(corpus) / "layer1.json"
    for batch in jsonsplit.Scanner(path, 1 << 20, 300_000):
        run = jsonfast._raw_run(batch)
        got = validate_run_columnar(run)
        assert got is not None  # every run of the real corpora goes the columnar way
        want = validate_run(jsonfast._decode_batch(batch)[0])
        assert got[1] == want[1] and got[0].equals(want[0])


@pytest.mark.parametrize("env, used", [("", True), ("orjson", False), ("stdlib", False)])
def test_recipekit_json_switches_the_columnar_reader(tmp_path, monkeypatch, env, used):
    monkeypatch.setenv("RECIPEKIT_JSON", env)
    path = tmp_path / "layer1.json"
    path.write_text(json.dumps([{"id": "a"}, {"id": "b"}]), encoding="utf-8")
    calls = []
    runs = list(jsonfast.map_array(path, len, columnar=lambda run: calls.append(len(run)) or len(run)))
    assert sum(runs) == 2 and bool(calls) == used
