import json

import pytest

from recipekit.pipeline.jsonstream import JSONStreamError, iter_array


def _write(tmp_path, text: str | bytes, name="a.json"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1 << 20])
def test_elements_and_byte_offsets_at_any_chunk_size(tmp_path, chunk_size):
    records = [{"id": "a", "t": "plain"}, {"id": "b", "t": "ünïcödé ½ 咖喱"}, {"id": "c", "n": [1, 2.5, None, True]}]
    text = "[\n" + ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
    raw = text.encode("utf-8")
    p = _write(tmp_path, raw)
    got = list(iter_array(p, chunk_size=chunk_size))
    assert [e for _, e in got] == records
    for offset, element in got:
        # The byte offset points at the element's opening brace in the file.
        decoded, _ = json.JSONDecoder().raw_decode(raw[offset:].decode("utf-8"))
        assert decoded == element


def test_empty_array_and_bom(tmp_path):
    assert list(iter_array(_write(tmp_path, "  [ ]  "))) == []
    assert [e for _, e in iter_array(_write(tmp_path, b"\xef\xbb\xbf[1]", "bom.json"))] == [1]


@pytest.mark.parametrize(
    "text, offset",
    [
        ('[{"id": "a"}, {"id": "b",, }]', 25),  # stray comma
        ('[{"id": "a"} {"id": "b"}]', 13),  # missing comma between elements
        ('[{"id": "a"}, {"id": "b"', 24),  # truncated file
        ('{"id": "a"}', 0),  # not an array
        ('[{"id": "a"}] x', 14),  # trailing garbage
        ("", 0),
    ],
)
def test_malformed_json_names_the_byte_offset(tmp_path, text, offset):
    p = _write(tmp_path, text)
    for chunk_size in (2, 1 << 20):
        with pytest.raises(JSONStreamError) as info:
            list(iter_array(p, chunk_size=chunk_size))
        assert info.value.offset == offset
        assert f"byte offset {offset}" in str(info.value) and str(p) in str(info.value)


def test_offset_counts_bytes_not_characters(tmp_path):
    text = '[{"t": "ééé"}, oops]'
    p = _write(tmp_path, text)
    with pytest.raises(JSONStreamError) as info:
        list(iter_array(p, chunk_size=4))
    assert info.value.offset == text.encode("utf-8").index(b"oops")


def test_invalid_utf8_is_reported(tmp_path):
    raw = b'[{"t": "ok"}, {"t": "\xff"}]'
    p = _write(tmp_path, raw)
    with pytest.raises(JSONStreamError, match="invalid UTF-8") as info:
        list(iter_array(p))
    assert info.value.offset == raw.index(b"\xff")


def test_element_size_limit(tmp_path):
    p = _write(tmp_path, '[{"t": "' + "x" * 5000 + '"}]')
    with pytest.raises(JSONStreamError, match="larger than"):
        list(iter_array(p, chunk_size=100, max_element=1000))


@pytest.mark.parametrize("chunk", [7, 4096, 8 << 20])
def test_undecodable_elements_come_as_invalid_elements_and_the_stream_goes_on(tmp_path, chunk):
    from recipekit.pipeline.jsonstream import InvalidElement

    deep = "[" * 50_000 + "]" * 50_000
    text = '[{"id": "a"}, {"id": "d", "x": ' + deep + '}, ' + "7" * 5000 + ', {"s": "\\"[{", "id": "big", "n": -' + \
        "1" * 4400 + '}, {"id": "b"}]'
    p = tmp_path / "x.json"
    p.write_text(text, encoding="utf-8")
    got = list(iter_array(p, chunk_size=chunk))
    assert [o for o, _ in got] == [1, 14, text.index("7777"), text.index('{"s"'), text.index('{"id": "b"}')]
    assert got[0][1] == {"id": "a"} and got[-1][1] == {"id": "b"}
    bad = [e for _, e in got[1:4]]
    assert all(isinstance(e, InvalidElement) for e in bad)
    assert [e.record_id for e in bad] == ["d", None, "big"]
    assert "nested too deeply" in bad[0].reason and "number too long" in bad[1].reason
