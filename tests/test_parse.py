import json

import polars as pl
import pytest

from recipekit.pipeline.jsonstream import JSONStreamError
from recipekit.pipeline.parse import STAGE as PARSE_STAGE
from recipekit.pipeline.parse import image_relpath, parse
from recipekit.pipeline.stagekit import is_up_to_date
from recipekit.pipeline.textclean import clean_text


def _recipe(rid, partition="train", **over):
    r = {
        "id": rid,
        "title": f"Tomato Soup {rid}",
        "ingredients": [{"text": "2 cups tomatoes"}, {"text": "1 tbsp olive oil"}],
        "instructions": [{"text": "Cook the tomatoes."}, {"text": "Serve."}],
        "partition": partition,
        "url": f"http://example.org/{rid}",
    }
    r.update(over)
    return r


def _write_corpus(root, layer1, layer2=(), det=None, images=()):
    root.mkdir(parents=True, exist_ok=True)
    (root / "layer1.json").write_text(json.dumps(layer1, ensure_ascii=False), encoding="utf-8")
    (root / "layer2.json").write_text(json.dumps(list(layer2)), encoding="utf-8")
    if det is not None:
        (root / "det_ingrs.json").write_text(json.dumps(det), encoding="utf-8")
    for rel in images:
        p = root / "images" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8 not really a jpeg")
    return root


BAD_RECIPES = [
    ("not an object", ["a", "list"], "record is not a JSON object"),
    ("missing id", {k: v for k, v in _recipe("x").items() if k != "id"}, "missing field 'id'"),
    ("id wrong type", _recipe(12345), "field 'id' must be a string"),
    ("id with a dot", _recipe("a.b"), "invalid id 'a.b'"),
    ("missing title", {k: v for k, v in _recipe("r1").items() if k != "title"}, "missing field 'title'"),
    ("title wrong type", _recipe("r2", title=["x"]), "field 'title' must be a string"),
    ("bad partition", _recipe("r3", partition="dev"), "unknown partition 'dev'"),
    ("ingredients not a list", _recipe("r4", ingredients="salt"), "field 'ingredients' must be a list"),
    ("ingredient without text", _recipe("r5", ingredients=[{"txt": "salt"}]), "field 'ingredients' item 0"),
    ("missing instructions", {k: v for k, v in _recipe("r6").items() if k != "instructions"},
     "missing field 'instructions'"),
    ("url wrong type", _recipe("r7", url=5), "field 'url' must be a string"),
    ("no ingredients", _recipe("r8", ingredients=[{"text": "  "}]), "empty recipe: no ingredients"),
    ("no instructions", _recipe("r9", instructions=[]), "empty recipe: no instructions"),
    ("empty title", _recipe("r10", title=" &nbsp; "), "empty recipe: no title"),
    ("duplicate id", _recipe("good1", title="Second copy"), "duplicate id (first seen at byte offset"),
]


@pytest.fixture()
def dirty(tmp_path):
    good = [_recipe("good1"), _recipe("good2", "val"), _recipe("good3", "test")]
    layer1 = good[:1] + [bad for _, bad, _ in BAD_RECIPES] + good[1:]
    layer2 = [
        {"id": "good1", "images": [{"id": "aaaa000001.jpg", "url": "u1"}, {"id": "bbbb000002.jpg", "url": "u2"}]},
        {"id": "good2", "images": [{"id": "cccc000003.jpg"}, {"id": "../etc.jpg"}]},
        {"id": "nosuch", "images": [{"id": "dddd000004.jpg"}]},
        {"id": "r8", "images": [{"id": "eeee000005.jpg"}]},
        {"id": "good3", "images": [{"id": "aaaa000001.jpg"}]},
        {"id": "good3", "images": []},
        {"images": []},
    ]
    det = [
        {"id": "good1", "ingredients": [{"text": "Tomatoes"}, {"text": "junk line"}], "valid": [True, False]},
        {"id": "good2", "ingredients": [{"text": "x"}], "valid": [True, True]},
        {"id": "nosuch", "ingredients": [], "valid": []},
        {"id": "good1", "ingredients": [], "valid": []},
    ]
    images = [image_relpath("train", "aaaa000001.jpg"), image_relpath("val", "cccc000003.jpg")]
    src = _write_corpus(tmp_path / "src", layer1, layer2, det, images)
    out = tmp_path / "out"
    report = parse(src, out)
    return src, out, report


def test_good_records_survive_and_are_cleaned(dirty):
    _, out, report = dirty
    recipes = pl.read_parquet(out / "recipes.parquet")
    assert recipes.get_column("id").to_list() == ["good1", "good2", "good3"]
    assert recipes.get_column("partition").to_list() == ["train", "val", "test"]
    assert recipes.row(0, named=True)["ingredients"] == ["2 cups tomatoes", "1 tbsp olive oil"]
    assert report.counts["recipes"] == 3 and report.counts["recipes_rejected"] == len(BAD_RECIPES)


@pytest.mark.parametrize("label, _bad, reason", BAD_RECIPES, ids=[b[0] for b in BAD_RECIPES])
def test_each_bad_recipe_is_quarantined_with_its_reason(dirty, label, _bad, reason):
    _, out, _ = dirty
    q = pl.read_parquet(out / "quarantine.parquet").filter(pl.col("source") == "layer1.json")
    hits = q.filter(pl.col("reason").str.contains(reason, literal=True))
    assert hits.height == 1, (label, q.get_column("reason").to_list())
    row = hits.row(0, named=True)
    assert row["stage"] == "parse" and row["offset"] > 0


def test_quarantine_offsets_point_at_the_records(dirty):
    src, out, _ = dirty
    raw = (src / "layer1.json").read_bytes()
    q = pl.read_parquet(out / "quarantine.parquet").filter(pl.col("source") == "layer1.json")
    for offset, rid in q.select("offset", "record_id").iter_rows():
        element, _ = json.JSONDecoder().raw_decode(raw[offset:].decode("utf-8"))
        if rid is not None:
            assert element["id"] == rid


def test_images_joined_validated_and_checked_on_disk(dirty):
    _, out, report = dirty
    images = pl.read_parquet(out / "images.parquet")
    assert images.select("image_id", "recipe_id", "position", "present").rows() == [
        ("aaaa000001.jpg", "good1", 0, True),
        ("bbbb000002.jpg", "good1", 1, False),
        ("cccc000003.jpg", "good2", 0, True),
    ]
    assert images.get_column("path").to_list()[0] == "train/a/a/a/a/aaaa000001.jpg"
    q = pl.read_parquet(out / "quarantine.parquet").filter(pl.col("source") == "layer2.json")
    reasons = q.get_column("reason").to_list()
    assert any("invalid image id '../etc.jpg'" in r for r in reasons)
    assert any("image of unknown or rejected recipe 'nosuch'" in r for r in reasons)
    assert any("image of unknown or rejected recipe 'r8'" in r for r in reasons)  # its recipe was rejected
    assert any("duplicate image id" in r for r in reasons)
    assert any("duplicate layer2 entry for recipe 'good3'" in r for r in reasons)
    assert any("without a string 'id'" in r for r in reasons)
    assert report.counts["images"] == 3 and report.counts["images_missing"] == 1


def test_det_ingrs_valid_names_only(dirty):
    _, out, _ = dirty
    det = pl.read_parquet(out / "det_ingrs.parquet")
    assert det.rows() == [("good1", ["tomatoes"])]
    reasons = pl.read_parquet(out / "quarantine.parquet").filter(pl.col("source") == "det_ingrs.json")
    reasons = reasons.get_column("reason").to_list()
    assert len(reasons) == 3
    assert any("equal length" in r for r in reasons) and any("unknown or rejected recipe 'nosuch'" in r for r in reasons)
    assert any("duplicate det_ingrs entry" in r for r in reasons)


def test_malformed_json_stops_with_byte_offset_and_keeps_previous_output(tmp_path):
    src = _write_corpus(tmp_path / "src", [_recipe("a1")])
    out = tmp_path / "out"
    parse(src, out)
    before = (out / "recipes.parquet").read_bytes()
    manifest = (out / "manifests" / "parse.json").read_bytes()
    (src / "layer1.json").write_text('[{"id": "a1"}, {"id": ]', encoding="utf-8")
    with pytest.raises(JSONStreamError, match=r"layer1.json: malformed JSON at byte offset 22"):
        parse(src, out)
    assert (out / "recipes.parquet").read_bytes() == before  # nothing already written is lost
    assert not list(out.glob("*.tmp-*"))
    # the manifest of the kept outputs stays; the changed input makes the stage run again
    assert (out / "manifests" / "parse.json").read_bytes() == manifest
    assert not is_up_to_date(PARSE_STAGE, src, out, {})


def test_a_failed_parse_commits_none_of_its_outputs(tmp_path):
    """layer1 changed and layer2 malformed: parse stops at layer2, after recipes.parquet is
    written; every output, the quarantine and the manifest are still the previous run's."""
    src = _write_corpus(tmp_path / "src", [_recipe("a1"), _recipe("a2", title="<b>x</b>")],
                        layer2=[{"id": "a1", "images": [{"id": "i1.jpg"}]}], det=[], images=["train/i/1/j/p/i1.jpg"])
    out = tmp_path / "out"
    parse(src, out)
    names = ["recipes.parquet", "images.parquet", "det_ingrs.parquet", "quarantine.parquet", "manifests/parse.json"]
    before = {n: (out / n).read_bytes() for n in names}
    (src / "layer1.json").write_text(json.dumps([_recipe("b1"), {"id": 1}]), encoding="utf-8")
    (src / "layer2.json").write_text('[{"id": "b1", "images": [}]', encoding="utf-8")
    with pytest.raises(JSONStreamError, match=r"layer2.json: malformed JSON at byte offset"):
        parse(src, out)
    assert {n: (out / n).read_bytes() for n in names} == before
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    (src / "layer2.json").write_text('[{"id": "b1", "images": []}]', encoding="utf-8")
    report = parse(src, out)  # once the input is mended the stage runs and commits everything
    assert report.status == "ran" and pl.read_parquet(out / "recipes.parquet")["id"].to_list() == ["b1"]
    assert pl.read_parquet(out / "quarantine.parquet")["reason"].to_list() == ["field 'id' must be a string, got int"]


def test_missing_inputs_are_named(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(FileNotFoundError, match="layer1.json"):
        parse(tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Mac &amp; Cheese", "Mac & Cheese"),
        ("Mac &amp;amp; Cheese", "Mac & Cheese"),
        ("1½ cups  milk\t", "1 1/2 cups milk"),
        ("¾ cup sugar", "3/4 cup sugar"),
        ("Chef&#39;s  <b>special</b>", "Chef's special"),
        ("青蟹（别称：肉蟹）", "青蟹(别称:肉蟹)"),
        ("\u00a0salt\u2009and pepper ", "salt and pepper"),
        ("1\u20442 cup", "1/2 cup"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Rice with <Chef special> sauce", "Rice with <Chef special> sauce"),  # not markup: kept
        ("if a < b and c > d", "if a < b and c > d"),
        ("<tomato> and <basil>", "<tomato> and <basil>"),
        ("<b>Bold</b> rice<br/>now", "Bold rice now"),
        ('<a href="x>y" class=link>Link</a> <!-- note --> ok', "Link ok"),
        ("<P CLASS=x>Hi</P>", "Hi"),
    ],
)
def test_only_real_markup_is_removed(raw, clean):
    assert clean_text(raw) == clean


def test_parse_manifest_counts_what_cleaning_changed(tmp_path):
    src = _write_corpus(tmp_path / "src", [
        _recipe("a1", title="Rice with <Chef special> sauce"),
        _recipe("a2", title="<b>Rice</b>", instructions=[{"text": "Mix&amp;serve"}, {"text": "Cook <i>gently</i>"}]),
        _recipe("a3", title="Rice ½", ingredients=[]),  # rejected: its cleaning is not counted
    ], det=[{"id": "a1", "ingredients": [{"text": "<em>rice</em>"}], "valid": [True]}])
    report = parse(src, tmp_path / "out")
    titles = pl.read_parquet(tmp_path / "out" / "recipes.parquet")["title"].to_list()
    assert titles == ["Rice with <Chef special> sauce", "Rice"]
    counts = report.counts
    assert (counts["text_markup_removed"], counts["text_entities_decoded"], counts["text_unicode_folded"]) == (3, 1, 0)
    saved = json.loads((tmp_path / "out" / "manifests" / "parse.json").read_text())["counts"]
    assert saved["text_markup_removed"] == 3


def test_real_corpora_parse_with_sensible_counts(recipes_en, recipes_zh, tmp_path):
    en = parse(recipes_en, tmp_path / "en").counts
    # 1,521 recipes, of which a few dozen lack ingredients or instructions in their sources.
    assert 1400 <= en["recipes"] <= 1521 and en["recipes"] + en["recipes_rejected"] == 1521
    assert en["det_ingrs"] == 1 and en["images_present"] == en["images"] >= 140
    zh = parse(recipes_zh, tmp_path / "zh").counts
    assert 250 <= zh["recipes"] <= 368 and zh["recipes"] + zh["recipes_rejected"] == 368
    q = pl.read_parquet(tmp_path / "en" / "quarantine.parquet")
    assert q.get_column("reason").str.starts_with("empty recipe").sum() == en["recipes_rejected"]


def _raw_recipe(rid, **raw):
    """A layer1 record as JSON text, with ``raw`` fields spliced in verbatim (escapes kept)."""
    text = json.dumps(_recipe(rid))[:-1]
    return text + "".join(f', "{k}": {v}' for k, v in raw.items()) + "}"


def test_valid_json_python_cannot_use_is_one_quarantined_record(tmp_path):
    """A lone surrogate escape, an integer of more than 4,300 digits and a value nested 100,000
    levels deep are valid JSON: each is one bad record named by file, offset and id; the rest parse."""
    deep = "[" * 100_000 + "]" * 100_000
    records = [
        _raw_recipe("good1"),
        json.dumps(_recipe("sur_title"))[:-1].replace('"title": "Tomato Soup sur_title"', '"title": "A \\ud800 b"') + "}",
        json.dumps(_recipe("sur_instr")).replace("Cook the tomatoes.", "Cook \\udfff"),
        _raw_recipe("bigint", servings="9" * 5000),
        _raw_recipe("deep", extra=deep),
        _raw_recipe("good2"),
    ]
    layer1 = "[" + ",\n".join(records) + "]"
    layer2 = ('[{"id": "good1", "images": [{"id": "g1.jpg", "url": "http://x/\\ud800"}, {"id": "g2.jpg"}]},'
              ' {"id": "good2", "images": [], "n": ' + "1" * 4400 + "}]")
    det = ('[{"id": "good1", "ingredients": [{"text": "to\\ud800mato"}], "valid": [true]},'
           ' {"id": "good2", "valid": [true], "ingredients": [{"text": "' + "[" * 0 + 'x"}], "deep": ' + deep + "}]")
    src = tmp_path / "src"
    src.mkdir()
    (src / "layer1.json").write_text(layer1, encoding="utf-8")
    (src / "layer2.json").write_text(layer2, encoding="utf-8")
    (src / "det_ingrs.json").write_text(det, encoding="utf-8")
    out = tmp_path / "out"
    report = parse(src, out)
    assert pl.read_parquet(out / "recipes.parquet")["id"].to_list() == ["good1", "good2"]
    assert pl.read_parquet(out / "images.parquet")["image_id"].to_list() == ["g2.jpg"]
    assert pl.read_parquet(out / "det_ingrs.parquet").height == 0
    q = pl.read_parquet(out / "quarantine.parquet")
    rows = {(r["source"], r["record_id"]): r for r in q.iter_rows(named=True)}
    l1 = layer1.encode("utf-8")
    for rid, words in [("sur_title", "field 'title': lone surrogate"), ("sur_instr", "field 'instructions' item 0: lone surrogate"),
                       ("bigint", "number too long"), ("deep", "nested too deeply")]:
        row = rows[("layer1.json", rid)]
        assert words in row["reason"], row
        assert l1[row["offset"]:].startswith(b'{"id": "' + rid.encode()), row
    assert "url has a lone surrogate" in rows[("layer2.json", "g1.jpg")]["reason"]
    assert "number too long" in rows[("layer2.json", "good2")]["reason"]
    assert "valid Unicode" in rows[("det_ingrs.json", "good1")]["reason"]
    assert "nested too deeply" in rows[("det_ingrs.json", "good2")]["reason"]
    assert report.counts["recipes_rejected"] == 4 and report.counts["quarantined"] == 8
