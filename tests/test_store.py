"""Stage `store` and `RecipeStore`: round trip, partitions, skipping, worker processes, recipe-only batches."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from recipekit.pipeline.prepare import PrepareConfig, prepare
from recipekit.pipeline.store import RecipeStore, StoreParams, decode_record, encode_record, store
from recipekit.pipeline.vocab import Vocabulary, tokenise_sample
from recipekit.pipeline.word2vec import Word2VecParams

FAST = PrepareConfig(word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from recipekit.pipeline.demo import write_demo_corpus

    src = tmp_path_factory.mktemp("store-src")
    write_demo_corpus(src, recipes=600, seed=11, image_fraction=0.0)
    out = tmp_path_factory.mktemp("store-out") / "out"
    reports = prepare(src, out, stages=["parse", "ingredients", "word2vec", "classes", "store"], config=FAST,
                      workers=1, quiet=True)
    assert reports[-1].name == "store" and reports[-1].status == "ran"
    return src, out


def _expected(out: Path):
    recipes = pl.read_parquet(out / "recipes.parquet")
    names = pl.read_parquet(out / "ingredients.parquet", columns=["id", "ingredients"]).rename({"ingredients": "names"})
    classes = pl.read_parquet(out / "recipe_classes.parquet", columns=["id", "class_id"])
    return recipes.join(names, on="id", how="left").join(classes, on="id", how="left")


def test_every_recipe_round_trips(prepared):
    _, out = prepared
    frame = _expected(out)
    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    with RecipeStore(out) as s:  # OUT or OUT/recipes.lmdb
        assert len(s) == frame.height == 600
        assert s.meta["vocab_sha256"] == vocab.digest() and s.meta["width"] == 2
        for row in frame.iter_rows(named=True):
            rec = s[row["id"]]
            assert rec["id"] == row["id"] and rec["class_id"] == row["class_id"]
            assert rec["partition"] == row["partition"]
            sample = {"title": row["title"], "ingredient_lines": row["ingredients"], "ingredients": row["names"],
                      "instructions": row["instructions"]}
            tokens = tokenise_sample(sample, vocab)
            assert {k: rec[k] for k in tokens} == tokens
        for part in ("train", "val", "test"):
            assert s.keys(part) == frame.filter(pl.col("partition") == part).get_column("id").to_list()
        assert sorted(s.keys()) == sorted(frame.get_column("id").to_list())
        assert frame.get_column("id")[0] in s and "nope" not in s and "/meta" not in s
        with pytest.raises(KeyError):
            s["nope"]
        with pytest.raises(KeyError):
            s["/meta"]


def test_skipped_when_up_to_date_and_rerun_on_change(prepared):
    _, out = prepared
    assert store(out).status == "skipped"
    before = (out / "recipes.lmdb" / "data.mdb").read_bytes()
    again = store(out, force=True)
    assert again.status == "ran" and (out / "recipes.lmdb" / "data.mdb").read_bytes() == before  # deterministic
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    short = store(out, params=StoreParams(max_tokens=3))
    assert short.status == "ran"
    assert all(len(t) <= 3 for t in RecipeStore(out)[RecipeStore(out).keys()[0]]["instructions"])
    assert store(out).status == "ran"  # back to the defaults


def _read(args):
    path, ids = args
    s = RecipeStore(path)
    return [s[i] for i in ids]


def test_random_access_from_worker_processes(prepared):
    torch = pytest.importorskip("torch")
    from recipekit.loaders import StoreDataset

    _, out = prepared
    s = RecipeStore(out)
    ids = random.Random(0).sample(s.keys(), 64)
    expected = [s[i] for i in ids]  # the parent has the environment open before the workers fork
    ds = StoreDataset(s, ids)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=list)
    got = [rec for batch in loader for rec in batch]
    assert got == expected
    clone = pickle.loads(pickle.dumps(s))  # spawn-safe: no handle travels
    assert clone[ids[0]] == expected[0]


def test_recipe_only_loader(prepared):
    torch = pytest.importorskip("torch")
    from recipekit.embedders.text import collate_recipes
    from recipekit.loaders import recipe_only_loader

    _, out = prepared
    s = RecipeStore(out)
    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    n_train = len(s.keys("train"))
    ranks = []
    for rank in range(2):
        loader = recipe_only_loader(out, "train", vocab=vocab, batch_size=16, rank=rank, world_size=2, num_workers=2)
        batches = list(loader)
        assert len(batches) == len(loader) == (n_train + 1) // 2 // 16
        b = batches[0]
        expected = collate_recipes([s[i] for i in b["ids"]])
        assert all(torch.equal(b["recipes"][k], v) for k, v in expected.items())
        assert b["class_ids"].tolist() == [s[i]["class_id"] for i in b["ids"]]
        ranks.append({i for b in batches for i in b["ids"]})
    assert not ranks[0] & ranks[1]
    evaluation = recipe_only_loader(out, "val", batch_size=50, train=False)
    assert [i for b in evaluation for i in b["ids"]] == s.keys("val")
    with pytest.raises(ValueError, match="another vocabulary"):
        recipe_only_loader(out, "train", vocab=Vocabulary(["x"]), batch_size=4)


def test_encoding_widths_and_empty_recipes():
    empty = {"title": [], "ingredients": [], "ingredient_names": [], "instructions": []}
    assert {k: v for k, v in decode_record(encode_record(empty, 0, "val")).items()} == {
        **empty, "class_id": 0, "partition": "val"}
    big = {"title": [70000, 1], "ingredients": [[2, 3], []], "ingredient_names": [70001, 1],
           "instructions": [[5], [99999, 7, 8]]}
    rec = decode_record(encode_record(big, 1047, "test", width=4))
    assert {k: rec[k] for k in big} == big and rec["class_id"] == 1047 and rec["partition"] == "test"
    with pytest.raises(ValueError):
        decode_record(b"\x80\x04 pickle")


def test_cli_options_and_torch_free_import(prepared, tmp_path):
    from recipekit.cli.main import main as cli

    src, out = prepared
    result = CliRunner().invoke(cli, ["prepare", str(src), str(out), "--quiet", "--workers", "1", "--stages", "store",
                                      "--store-max-tokens", "4", "--store-max-ingredients", "3"])
    assert result.exit_code == 0, result.output
    s = RecipeStore(out)
    assert s.meta["max_tokens"] == 4 and all(len(s[i]["ingredients"]) <= 3 for i in s.keys("val"))
    code = "import sys, recipekit.pipeline.store, recipekit.pipeline.vocab, recipekit.pipeline.prepare; " \
           "sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_parallel_build_gives_the_same_file(prepared, tmp_path, monkeypatch):
    import shutil

    from recipekit.pipeline import store as store_mod

    _, out = prepared
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("recipes.parquet", "ingredients.parquet", "recipe_classes.parquet", "word2vec"):
        src = out / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / name)
    monkeypatch.setattr(store_mod, "CHUNK", 150)  # four chunks, encoded by two spawned processes
    assert store(copy, workers=2).counts["recipes"] == 600
    store(out, force=True)
    assert (copy / "recipes.lmdb" / "data.mdb").read_bytes() == (out / "recipes.lmdb" / "data.mdb").read_bytes()
