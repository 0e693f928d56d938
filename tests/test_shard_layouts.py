"""Shard layouts: per-recipe (default) and per-image (one photo per sample, the stock readers'
convention). Round trip against the per-recipe layout, the stock readers (webdataset, HF
datasets), and recipekit's readers (loader, cached features, search image table) on both."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path

import pytest

from recipekit.pipeline.prepare import PrepareConfig
from recipekit.pipeline.shard import ShardParams, shard, stage_params

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


@pytest.fixture(scope="module")
def layouts(prepared_demo, tmp_path_factory) -> dict[str, Path]:
    """``prepared_demo`` (per-recipe shards) and a copy re-sharded with the per-image layout."""
    per_image = tmp_path_factory.mktemp("per-image") / "out"
    shutil.copytree(prepared_demo, per_image)
    report = shard(prepared_demo.parent / "src", per_image, params=ShardParams(image_size=64, max_count=64, layout="per-image"))
    assert report.status == "ran"
    return {"per-recipe": prepared_demo, "per-image": per_image}


def _tar(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def _urls(out: Path) -> list[str]:
    index = json.loads((out / "shards" / "index.json").read_text())
    return [str(out / "shards" / p / s) for p, e in index.items() for s in e["shards"]]


def test_params_validate_and_the_default_layout_keeps_the_digest():
    assert "layout" not in stage_params(ShardParams())  # manifests of earlier folders still match
    assert stage_params(ShardParams(layout="per-image"))["layout"] == "per-image"
    assert PrepareConfig().params("shard") == stage_params(ShardParams())
    with pytest.raises(ValueError, match="layout must be one of per-recipe, per-image, got 'per-photo'"):
        ShardParams(layout="per-photo")


def test_per_image_samples_hold_the_per_recipe_photos(layouts):
    base, out = layouts["per-recipe"], layouts["per-image"]
    index, base_index = (json.loads((o / "shards" / "index.json").read_text()) for o in (out, base))
    manifest = json.loads((out / "manifests" / "shard.json").read_text())
    assert manifest["params"]["layout"] == "per-image"
    expected: dict[str, dict] = {}  # recipe id -> its per-recipe sample
    for partition, entry in base_index.items():
        assert "layout" not in entry
        for name in entry["shards"]:
            members = _tar(base / "shards" / partition / name)
            for n, data in members:
                key, ext = n.split(".", 1)
                expected.setdefault(key, {})[ext] = data
    seen: dict[str, list[int]] = defaultdict(list)
    for partition, entry in index.items():
        assert entry["layout"] == "per-image" and entry["recipes"] == base_index[partition]["samples"]
        sizes = json.loads((out / "shards" / partition / "sizes.json").read_text())
        recipes = json.loads((out / "shards" / partition / "recipes.json").read_text())
        assert list(sizes) == list(recipes) == entry["shards"]
        assert sum(sizes.values()) == entry["samples"] == entry["images"] == base_index[partition]["images"]
        assert sum(recipes.values()) == entry["recipes"]
        for name in entry["shards"]:
            members = _tar(out / "shards" / partition / name)
            keys = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in members))
            assert len(keys) == sizes[name] and len(members) == 3 * len(keys)
            assert len({k.rsplit("_", 1)[0] for k in keys}) == recipes[name]
            by_key = defaultdict(dict)
            for n, data in members:
                key, ext = n.split(".", 1)
                by_key[key][ext] = data
            last = None
            for key in keys:
                sample = by_key[key]
                assert sorted(sample) == ["cls", "jpg", "json"]
                doc = json.loads(sample["json"])
                rid, k = doc["recipe_id"], doc["photo_index"]
                assert key == f"{rid}_{k}" and doc["partition"] == partition and doc["id"] == rid
                assert rid == last or rid not in seen  # a recipe's photos are consecutive, in order
                seen[rid].append(k)
                last = rid
                ref = expected[rid]
                ref_doc = json.loads(ref["json"])
                assert doc["image_id"] == ref_doc["images"][k] and sample["jpg"] == ref[f"{k}.jpg"]
                assert int(sample["cls"]) == doc["class_id"] == ref_doc["class_id"]
                assert {f: doc[f] for f in ("title", "ingredients", "instructions")} == {
                    f: ref_doc[f] for f in ("title", "ingredients", "instructions")}
    assert set(seen) == set(expected)
    assert all(ks == list(range(len(json.loads(expected[r]["json"])["images"]))) for r, ks in seen.items())


def test_cli_option_writes_the_per_image_layout(prepared_demo, tmp_path):
    from click.testing import CliRunner
    from recipekit.cli.main import main

    out = tmp_path / "out"
    shutil.copytree(prepared_demo, out)
    args = ["prepare", str(prepared_demo.parent / "src"), str(out), "--stages", "shard", "--quiet",
            "--shard-image-size", "64", "--shard-max-count", "64"]
    skipped = CliRunner().invoke(main, args)  # the default layout: the fixture's shards are up to date
    assert skipped.exit_code == 0 and "skipped" in skipped.output, skipped.output
    result = CliRunner().invoke(main, [*args, "--shard-layout", "per-image"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "shards" / "index.json").read_text())["train"]["layout"] == "per-image"
    bad = CliRunner().invoke(main, [*args, "--shard-layout", "per-photo"])
    assert bad.exit_code == 2 and "per-photo" in bad.output


def test_stock_webdataset_reads_per_image_shards(layouts):
    wds = pytest.importorskip("webdataset")
    out = layouts["per-image"]
    n = 0
    for image, doc in wds.WebDataset(_urls(out), shardshuffle=False).decode("pil").to_tuple("jpg", "json"):
        assert image.size[0] > 0 and min(image.size) <= 64 and doc["recipe_id"] and "photo_index" in doc
        n += 1
    index = json.loads((out / "shards" / "index.json").read_text())
    assert n == sum(e["images"] for e in index.values()) > 0


def test_hf_datasets_loads_per_image_shards(layouts, monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out = layouts["per-image"]
    index = json.loads((out / "shards" / "index.json").read_text())
    files = {p: [str(out / "shards" / p / s) for s in e["shards"]] for p, e in index.items()}
    ds = datasets.load_dataset("webdataset", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    for partition, entry in index.items():
        split = ds[partition]
        assert split.num_rows == entry["images"] > 0 and {"jpg", "json", "cls"} <= set(split.column_names)
        row = split[0]
        assert row["jpg"].size[0] > 0 and row["json"]["partition"] == partition
        assert row["__key__"] == f"{row['json']['recipe_id']}_{row['json']['photo_index']}"


def _loader_batches(out: Path, train: bool, **kw):
    from recipekit.loaders import make_loader
    from recipekit.pipeline.vocab import Vocabulary

    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    loader, info = make_loader(out / "shards" / "train", vocab=vocab, train=train, batch_size=16, image_size=32, **kw)
    return list(loader), info


def test_loader_reads_both_layouts_alike(layouts):
    pytest.importorskip("webdataset")
    eval_a, info_a = _loader_batches(layouts["per-recipe"], train=False)
    eval_b, info_b = _loader_batches(layouts["per-image"], train=False)
    assert info_a.num_samples == info_b.num_samples > 0  # recipes (recipes.json), not photos
    for a, b in zip(eval_a, eval_b, strict=True):
        assert a["ids"] == b["ids"] and a["image_index"].tolist() == b["image_index"].tolist()
        assert (a["images"] == b["images"]).all() and (a["class_ids"] == b["class_ids"]).all()
        assert all((a["recipes"][k] == v).all() for k, v in b["recipes"].items())
    picks = []
    for layout in ("per-recipe", "per-image"):
        train, info = _loader_batches(layouts[layout], train=True, seed=3, image_pick="random")
        ids = [i for b in train for i in b["ids"]]
        assert len(ids) == len(set(ids)) == len(train) * 16 > info.num_samples - 16  # one photo per recipe
        picks.append({i: x for b in train for i, x in zip(b["ids"], b["image_index"].tolist())})
    assert picks[0] == picks[1] and len(set(picks[0].values())) > 1  # same seeded draws, several photos


def test_features_and_search_read_both_layouts(layouts):
    from recipekit.search.corpus import image_table
    from recipekit.training.features import _samples

    groups = []
    for layout in ("per-recipe", "per-image"):
        out = layouts[layout]
        urls = [str(out / "shards" / "val" / s)
                for s in json.loads((out / "shards" / "index.json").read_text())["val"]["shards"]]
        groups.append([(s["__key__"], sorted(k for k in s if k.endswith(".jpg")), s["cls"]) for s in _samples(urls)])
    assert groups[0] == groups[1] and groups[0]
    rows = [image_table(layouts[layout]) for layout in ("per-recipe", "per-image")]
    drop = ("offset", "size")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows[1]]
    assert all(r["image_id"] for r in rows[1]) and [r["size"] for r in rows[0]] == [r["size"] for r in rows[1]]
    data = (layouts["per-image"] / rows[1][0]["shard"]).read_bytes()
    assert data[rows[1][0]["offset"]:rows[1][0]["offset"] + 2] == b"\xff\xd8"  # a JPEG starts there


def test_grouping_names_a_badly_keyed_sample():
    from recipekit.loaders.batching import group_photos

    good = [{"__key__": "r1_0", "__url__": "u", "jpg": b"a", "json": b"{}"},
            {"__key__": "r1_1", "__url__": "u", "jpg": b"b"},
            {"__key__": "r2", "__url__": "u", "0.jpg": b"c", "json": b"{}"},  # per-recipe: as it is
            {"__key__": "r3_0", "__url__": "u", "jpg": b"d"}]
    out = list(group_photos()(iter(good)))
    assert [(s["__key__"], sorted(k for k in s if k.endswith("jpg"))) for s in out] == [
        ("r1", ["0.jpg", "1.jpg"]), ("r2", ["0.jpg"]), ("r3", ["0.jpg"])]
    with pytest.raises(ValueError, match=r"^u: per-image sample 'photo' is not keyed"):
        list(group_photos()(iter([{"__key__": "photo", "__url__": "u", "jpg": b"x"}])))


def test_eval_plot_reads_both_layouts(layouts):
    pytest.importorskip("matplotlib")
    from recipekit.evaluation.plot import read_members

    index = json.loads((layouts["per-recipe"] / "shards" / "index.json").read_text())
    first = _tar(layouts["per-recipe"] / "shards" / "test" / index["test"]["shards"][0])
    rids = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in first))[:5]
    wanted = {r: {"json", "0.jpg", "1.jpg"} for r in rids}
    a, b = (read_members(layouts[lay] / "shards" / "test", wanted) for lay in ("per-recipe", "per-image"))
    assert set(a) == set(b) and {(r, "0.jpg") for r in rids} <= set(a)
    assert all(a[k] == b[k] for k in a if k[1] != "json")
    assert all(json.loads(a[k])["title"] == json.loads(b[k])["title"] for k in a if k[1] == "json")


def test_every_parquet_file_uses_one_string_type(prepared_demo, trained_demo_run, tmp_path):
    """recipes, images, det_ingrs, ingredients, ingredient_vocab, quarantine, classes and the
    search index tables: every string is large_string, every list a large_list."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pytest.importorskip("faiss")
    from recipekit.search import build_index

    index_dir = build_index(trained_demo_run, out=tmp_path / "index")
    files = sorted(prepared_demo.rglob("*.parquet")) + sorted(Path(index_dir).rglob("*.parquet"))
    names = {p.name for p in files}
    assert {"recipes.parquet", "images.parquet", "det_ingrs.parquet", "ingredients.parquet", "quarantine.parquet",
            "recipe_classes.parquet"} <= names and len(files) >= 9

    def kinds(t) -> set[str]:
        if pa.types.is_string(t) or pa.types.is_list(t):
            return {"small"}
        if pa.types.is_large_string(t):
            return {"large"}
        if pa.types.is_large_list(t):
            return {"large"} | kinds(t.value_type)
        return set()

    found = {(p.name, f.name): kinds(f.type) for p in files for f in pq.read_schema(p)}
    assert {k for k, v in found.items() if "small" in v} == set()
    assert sum("large" in v for v in found.values()) >= 20
