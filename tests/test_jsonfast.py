"""The orjson path gives iter_array's sequence exactly: elements, byte offsets, errors."""

import functools
import json
import random

import pytest

from recipekit.pipeline import jsonfast
from recipekit.pipeline.backends import PoolExecutor
from recipekit.pipeline.jsonfast import iter_array_fast, map_array
from recipekit.pipeline.jsonstream import JSONStreamError, iter_array

pytestmark = pytest.mark.skipif(jsonfast.orjson is None, reason="orjson not installed")


def _outcome(gen):
    """The elements a reader yields, then the exception it ends with (type and message) or None."""
    out = []
    try:
        for element in gen:
            out.append(element)
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return out, (type(exc).__name__, str(exc))
    return out, None


def _agree(got, want):
    """Equal outcomes; before invalid UTF-8 the standard library itself yields more or fewer elements
    depending on its chunk size (it decodes a chunk at a time), so there only the error must agree."""
    if want[1] is not None and "invalid UTF-8" in want[1][1]:
        n = min(len(got[0]), len(want[0]))
        return got[1] == want[1] and got[0][:n] == want[0][:n]
    return got == want


def _same(path, **kw):
    want = _outcome(iter_array(path))
    for batch_bytes, chunk_size in [(1, 3), (40, 7), (1000, 64), (4 << 20, 16 << 20)]:
        got = _outcome(iter_array_fast(path, batch_bytes=batch_bytes, chunk_size=chunk_size, **kw))
        assert _agree(got, want), (batch_bytes, chunk_size, got, want)
    return want


def _write(tmp_path, data, name="a.json"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


RECORDS = [
    {"id": "a", "t": "plain, with [brackets] and {braces}"},
    {"id": "b", "t": 'quotes \\" and \\\\ backslashes \\\\\\" ünïcödé ½ 咖喱'},
    {"id": "c", "n": [1, 2.5, None, True, False, -0.0, 1e-7, {"deep": [[{}]]}]},
    "a string element, ]",
    12,
    [],
]


def test_valid_arrays_match_the_standard_library(tmp_path):
    text = "\ufeff[\n" + ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n]\n"
    elements, error = _same(_write(tmp_path, text))
    assert error is None and [e for _, e in elements] == [json.loads(json.dumps(r)) for r in RECORDS]
    for text in ["[]", "  [ \n ]  ", "[1]", '["x"]', "[[],{}]", '[{"a":"\\\\"}, 2]']:
        elements, error = _same(_write(tmp_path, text))
        assert error is None


@pytest.mark.parametrize(
    "text",
    [
        '[{"id": "a"}, {"id": "b",, }]',
        '[{"id": "a"} {"id": "b"}]',
        '[{"id": "a"}, {"id": "b"',
        '{"id": "a"}',
        '[{"id": "a"}] x',
        '[{"id": "a"}] ]',
        '[1,,2]',
        '[1, ]',
        '[,]',
        "",
        "x[1]",
        '[{"t": "ééé"}, oops]',
        '[{"a": 1}}, 2]',
        '[{"a": "unterminated}, {"b": 2}, {"c": 3}]',
        '[{"a": 1]]',
        '[1] [2]',
        '["\\"]',
        '[1 2]',
        '[{"a": 1}, {"b": 2}, 3',
        "[] x",
        "[ ]]",
        "[]\n[",
        " [ ] , ",
        "[1] x",
        "[[]] ]",
    ],
)
def test_malformed_json_raises_what_the_standard_library_raises(tmp_path, text):
    elements, error = _same(_write(tmp_path, text))
    assert error is not None and error[0] == "JSONStreamError"


def test_invalid_utf8_is_reported_at_its_offset(tmp_path):
    for raw in [b'[{"t": "ok"}, {"t": "\xff"}]', b'[{"t": "ok"},\xff {"t": "x"}]', b'[1]\xff']:
        elements, error = _same(_write(tmp_path, raw))
        assert error is not None and "invalid UTF-8" in error[1]


def test_what_orjson_rejects_or_changes_goes_to_the_standard_library(tmp_path):
    big = "1" + "0" * 30  # beyond 64 bits: orjson would give a float
    records = [
        '{"id": "a", "n": NaN, "m": -Infinity}',
        '{"id": "b", "t": "\\ud800 lone surrogate"}',
        '{"id": "c", "n": ' + big + "}",
        '{"id": "d", "n": 1e400}',
        '{"id": "e", "t": "' + "9" * 25 + ' digits in a string"}',
        '{"id": "f", "n": 18446744073709551615}',
        "[" * 600 + "]" * 600,
        '{"id": "h", "t": "' + "[{" * 300 + '"}',  # brackets in a string
        '{"id": "g"}',
    ]
    path = _write(tmp_path, "[" + ",\n".join(records) + "]")
    elements, error = _same(path)
    assert error is None
    values = [e for _, e in elements]
    assert values[2]["n"] == int(big) and isinstance(values[2]["n"], int)
    assert values[1]["t"].startswith("\ud800") and values[-1] == {"id": "g"}


def test_hostile_records_at_batch_boundaries_are_one_invalid_element(tmp_path):
    """A 5000-digit integer and 100,000-deep nesting (which Python cannot decode) come as one
    InvalidElement at their place, from the standard library, whatever the batch cut; the elements
    after them still come."""
    from recipekit.pipeline.jsonstream import InvalidElement

    for hostile in ["1" * 5000, "[" * 100_000 + "]" * 100_000]:
        records = [json.dumps({"id": str(i), "t": "x" * (i % 7)}) for i in range(30)]
        records[17] = hostile
        path = _write(tmp_path, "[" + ", ".join(records) + "]")
        elements, error = _same(path)
        assert error is None and len(elements) == 30
        assert isinstance(elements[17][1], InvalidElement)
        assert [e.get("id") for _, e in elements[:17] + elements[18:]] == [str(i) for i in range(30) if i != 17]


def test_random_corruptions_match_the_standard_library(tmp_path):
    rng = random.Random(7)
    base = ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS * 3) + "\n]").encode("utf-8")
    alphabet = b'[]{},:"\\ 0aeE-.\n\xc3\xa9'
    for trial in range(150):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[i] = alphabet[rng.randrange(len(alphabet))]
            elif op < 0.7:
                del raw[i]
            else:
                raw.insert(i, alphabet[rng.randrange(len(alphabet))])
        path = _write(tmp_path, bytes(raw), f"c{trial}.json")
        want = _outcome(iter_array(path))
        got = _outcome(iter_array_fast(path, batch_bytes=rng.choice([1, 50, 4096]), chunk_size=rng.choice([5, 64, 1 << 20])))
        assert _agree(got, want), bytes(raw)


def _ids(elements):
    return [(offset, element.get("id")) for offset, element in elements]


def test_map_array_in_worker_processes_is_the_same_sequence(tmp_path):
    records = [json.dumps({"id": f"r{i}", "t": "y" * (i % 50)}) for i in range(400)]
    records[123] = '{"id": "s", "t": "\\udc00"}'
    path = _write(tmp_path, "[" + ",\n".join(records) + "]")
    want = [(o, e.get("id")) for o, e in iter_array(path)]
    runs = list(map_array(path, functools.partial(_ids), executor=PoolExecutor(2), batch_bytes=2000))
    assert len(runs) > 3 and [x for run in runs for x in run] == want


def test_stdlib_fallback_when_switched_off(tmp_path, monkeypatch):
    path = _write(tmp_path, '[{"id": "a"}, {"id": "b"}]')
    monkeypatch.setenv("RECIPEKIT_JSON", "stdlib")
    assert not jsonfast.fast_available()
    assert list(iter_array_fast(path)) == list(iter_array(path))
    monkeypatch.setattr(jsonfast, "orjson", None)
    monkeypatch.delenv("RECIPEKIT_JSON")
    assert not jsonfast.fast_available()
    with pytest.raises(JSONStreamError):
        list(iter_array_fast(_write(tmp_path, "[1,]", "bad.json")))
