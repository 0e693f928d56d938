"""The parse stage's orjson + worker path writes the same tables, byte for byte, as the
standard library in one process; errors name the same byte offset."""

import json
import shutil

import pytest

from recipekit.pipeline import jsonfast
from recipekit.pipeline import parse as parse_mod
from recipekit.pipeline.jsonstream import JSONStreamError
from recipekit.pipeline.parse import parse

pytestmark = pytest.mark.skipif(jsonfast.orjson is None, reason="orjson not installed")
TABLES = ["recipes.parquet", "images.parquet", "det_ingrs.parquet", "quarantine.parquet"]


def _recipe(rid, partition="train", **over):
    r = {
        "id": rid,
        "title": f"Soup &amp; bread {rid} ½",
        "ingredients": [{"text": "2 cups  tomatoes"}, {"text": "1 tbsp olive oil"}],
        "instructions": [{"text": "Cook the tomatoes."}, {"text": "Serve [hot], {warm}, \"now\"\\."}],
        "partition": partition,
        "url": f"http://example.org/{rid}",
    }
    r.update(over)
    return r


def _hostile_records() -> list[str]:
    """Records as JSON text: bad ones (quarantined), ones only the standard library may decode,
    duplicates far apart."""
    out = [json.dumps(_recipe(f"r{i}", ["train", "val", "test"][i % 3]), ensure_ascii=i % 2 == 0) for i in range(60)]
    out[5] = json.dumps(_recipe("r5", url=5))
    out[9] = '{"id": "n1", "title": "t", "partition": "train", "url": NaN, "ingredients": [], "instructions": []}'
    out[14] = json.dumps(_recipe(12345678901234567890123))  # an id beyond 64 bits: still an int
    out[20] = json.dumps(_recipe("deep", extra=json.loads("[" * 600 + "]" * 600)))
    out[21] = json.dumps(_recipe("sur")).replace('"id": "sur"', '"id": "sur", "x": "\\ud800"')
    out[33] = json.dumps(_recipe("r1", title="a duplicate"))
    out[47] = '["not", "an", "object"]'
    out[52] = json.dumps(_recipe("r52", partition="dev"))
    out[58] = json.dumps(_recipe("r2", title="another duplicate"))
    return out


def _corpus(root, records, layer2=(), det=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "layer1.json").write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    (root / "layer2.json").write_text(json.dumps(list(layer2)), encoding="utf-8")
    if det is not None:
        (root / "det_ingrs.json").write_text(json.dumps(det), encoding="utf-8")
    return root


def _both(src, tmp_path, monkeypatch, batch_bytes=700, workers=2):
    """Parse once with the standard library in one process, once with orjson in ``workers``
    processes and tiny batches; returns the two OUT folders."""
    monkeypatch.setattr(parse_mod, "BATCH", 7)  # many row groups, with remainders
    monkeypatch.setenv("RECIPEKIT_JSON", "stdlib")
    parse(src, tmp_path / "stdlib")
    monkeypatch.delenv("RECIPEKIT_JSON")
    monkeypatch.setattr(jsonfast, "BATCH_BYTES", batch_bytes)
    parse(src, tmp_path / "fast", workers=workers)
    return tmp_path / "stdlib", tmp_path / "fast"


def _assert_identical(a, b):
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_tables_byte_identical_with_hostile_records(tmp_path, monkeypatch):
    layer2 = [{"id": f"r{i}", "images": [{"id": f"img{i}.jpg", "url": "u"}]} for i in range(0, 60, 4)]
    layer2 += [  # every way a layer2 entry or photo is refused, before and after its recipe is looked up
        {"images": []}, "not an object", {"id": "r1", "images": "img.jpg"},
        {"id": "r4", "images": [{"id": "again.jpg"}]},  # a second entry for r4
        {"id": "r7", "images": [{"id": "../up.jpg"}, {"id": 5}, "x", {"id": "ok7.jpg", "url": 7}]},
        {"id": "nope", "images": [{"id": "n.jpg"}]}, {"id": "r5", "images": [{"id": "dev.jpg"}]},
        {"id": "r6", "images": [{"id": "img0.jpg"}, {"id": "s.jpg", "url": "\ud800"}, {"id": "r6b.jpg"}]},
    ]
    det = [{"id": f"r{i}", "ingredients": [{"text": "Tomatoes"}, {"text": "x"}], "valid": [True, False]}
           for i in range(0, 60, 3)]
    det += [  # every way a det_ingrs entry is refused, before and after its recipe is looked up
        {"id": "r1", "ingredients": [{"text": "Basil &amp; <b>mint</b>"}], "valid": [True]},
        {"id": "r0", "ingredients": [{"text": "again"}], "valid": [True]},
        {"id": "nope", "ingredients": [], "valid": []},
        {"id": "r52", "ingredients": [{"text": "dev"}], "valid": [True]},
        {"ingredients": [], "valid": []}, "not an object", {"id": 7},
        {"id": "r4", "ingredients": [{"text": "a"}], "valid": [True, False]},
        {"id": "r7", "ingredients": [{"text": 3}], "valid": [True]},
        {"id": "r8", "ingredients": [{"text": "a"}], "valid": [1]},
        {"id": "nope", "ingredients": ["a"], "valid": [True]},
        {"id": "r10", "ingredients": [{"text": "Ｆｕｌｌ ½"}, {"text": " "}], "valid": [True, True]},
    ]
    src = _corpus(tmp_path / "src", _hostile_records(), layer2, det)
    text = (src / "det_ingrs.json").read_text(encoding="utf-8")  # and one only the standard library decides
    deep = '{"id": "r11", "ingredients": [], "valid": [], "x": ' + "[" * 1200 + "]" * 1200 + "}"
    (src / "det_ingrs.json").write_text(text[:-1] + ", " + deep + "]", encoding="utf-8")
    text = (src / "layer2.json").read_text(encoding="utf-8")
    deep = '{"id": "r13", "images": [], "x": ' + "[" * 1200 + "]" * 1200 + "}"
    (src / "layer2.json").write_text(text[:-1] + ", " + deep + "]", encoding="utf-8")
    a, b = _both(src, tmp_path, monkeypatch)
    _assert_identical(a, b)
    import polars as pl

    q = pl.read_parquet(b / "quarantine.parquet")
    reasons = " | ".join(q["reason"].to_list())
    for why in ["field 'url' must be a string, got int", "got float", "field 'id' must be a string, got int",
                "duplicate id", "record is not a JSON object", "unknown partition 'dev'"]:
        assert why in reasons
    det_reasons = q.filter(pl.col("source") == "det_ingrs.json").select("record_id", "reason").rows()
    for rid, why in [("r0", "duplicate det_ingrs entry"), ("nope", "unknown or rejected recipe 'nope'"),
                     ("r52", "unknown or rejected recipe 'r52'"), (None, "without a string 'id'"),
                     ("r4", "equal length"), ("r7", "items must be"), ("r8", "items must be"), ("r11", "deep")]:
        assert any(r == rid and why in w for r, w in det_reasons), (rid, why)
    assert sum(r is None for r, _ in det_reasons) == 3
    assert [w for r, w in det_reasons if r == "nope"] == ["det_ingrs entry for unknown or rejected recipe 'nope'"] * 2
    l2 = q.filter(pl.col("source") == "layer2.json").select("record_id", "reason").rows()
    for rid, why in [(None, "without a string 'id'"), ("r1", "'images' must be a list"),
                     ("r4", "duplicate layer2 entry for recipe 'r4'"), ("r7", "image 0: invalid image id '../up.jpg'"),
                     ("r7", "image 1: invalid image id 5"), ("r7", "image 2: invalid image id None"),
                     ("n.jpg", "unknown or rejected recipe 'nope'"), ("dev.jpg", "unknown or rejected recipe 'r5'"),
                     ("img0.jpg", "duplicate image id (recipe 'r6')"), ("s.jpg", "image 1: url has a lone surrogate"),
                     ("r13", "deep")]:
        assert any(r == rid and why in w for r, w in l2), (rid, why)
    photos = pl.read_parquet(b / "images.parquet")
    assert photos.filter(pl.col("recipe_id").is_in(["r7", "r6"])).select("image_id", "position", "url").rows() == [
        ("ok7.jpg", 0, None), ("r6b.jpg", 0, None)]
    names = dict(pl.read_parquet(b / "det_ingrs.parquet").rows())
    assert names["r1"] == ["basil & mint"] and names["r10"] == ["full 1/2"] and names["r3"] == ["tomatoes"]
    assert "deep" in pl.read_parquet(b / "recipes.parquet")["id"].to_list()


def test_real_corpus_tables_byte_identical(recipes_en, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["layer1.json", "layer2.json", "det_ingrs.json"]:
        if (recipes_en / name).exists():
            shutil.copy(recipes_en / name, src / name)
    a, b = _both(src, tmp_path, monkeypatch, batch_bytes=200_000)
    _assert_identical(a, b)


@pytest.mark.parametrize("where", [0.2, 0.5, 0.97])
def test_syntax_error_names_the_same_offset(tmp_path, monkeypatch, where):
    records = _hostile_records()
    text = "[\n" + ",\n".join(records) + "\n]\n"
    cut = text.index("{", int(len(text) * where))  # break the record that starts there
    broken = text[:cut] + text[cut:].replace(":", " ", 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "layer1.json").write_text(broken, encoding="utf-8")
    (src / "layer2.json").write_text("[]", encoding="utf-8")
    offsets = []
    for env, workers in [("stdlib", 1), ("", 2)]:
        monkeypatch.setenv("RECIPEKIT_JSON", env)
        monkeypatch.setattr(jsonfast, "BATCH_BYTES", 500)
        with pytest.raises(JSONStreamError) as info:
            parse(src, tmp_path / f"out-{env}", workers=workers)
        offsets.append((info.value.offset, info.value.reason))
    assert offsets[0] == offsets[1]
    assert offsets[0][0] > cut - 1 and not (tmp_path / "out-" / "recipes.parquet").exists()
