"""recipekit.core: artefact names, the run/checkpoint resolver, atomic writes, hashing, limits,
and that importing it pulls in no torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from recipekit.core import DEFAULT_LIMITS, Prepared, Run, TextLimits, atomic_path, file_sha256, write_json_atomic
from recipekit.core.io import atomic_dir, file_digest


def test_prepared_names_every_artefact(tmp_path):
    p = Prepared(tmp_path)
    assert p.store == tmp_path / "recipes.lmdb" and not p.has_store
    assert p.recipes == tmp_path / "recipes.parquet" and p.images == tmp_path / "images.parquet"
    assert p.ingredients == tmp_path / "ingredients.parquet" and p.quarantine == tmp_path / "quarantine.parquet"
    assert p.classes == tmp_path / "classes.json" and p.recipe_classes == tmp_path / "recipe_classes.parquet"
    assert (p.vectors, p.vocab) == (tmp_path / "word2vec" / "vectors.npy", tmp_path / "word2vec" / "vocab.txt")
    assert p.shard_dir("val") == tmp_path / "shards" / "val" and p.sizes("val") == tmp_path / "shards" / "val" / "sizes.json"
    assert p.shard_index == tmp_path / "shards" / "index.json"
    assert p.manifest("store") == tmp_path / "manifests" / "store.json"
    (p.store).mkdir()
    (p.store / "data.mdb").write_bytes(b"")
    assert p.has_store
    assert Prepared(str(tmp_path)) == p and str(p.path) == str(tmp_path)


def test_prepared_shards_checks_the_split(tmp_path):
    p = Prepared(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"shards/test: no shards of split 'test' \(run `recipekit prepare`"):
        p.shards("test")
    p.shard_dir("train").mkdir(parents=True)
    (p.shard_dir("train") / "train-000000.tar").write_bytes(b"")
    assert p.shards("train") == tmp_path / "shards" / "train"
    with pytest.raises(FileNotFoundError, match=r"\(splits there: train\)"):
        p.shards("val")


def test_prepared_of_shards_only_for_one_local_split_folder(tmp_path):
    urls = [str(tmp_path / "shards" / "val" / f"val-00000{i}.tar") for i in range(2)]
    assert Prepared.of_shards(urls) == Prepared(tmp_path)
    assert Prepared.of_shards([str(tmp_path / "copy" / "val-000000.tar")]) is None  # not OUT/shards/{split}
    assert Prepared.of_shards([urls[0], str(tmp_path / "shards" / "test" / "test-000000.tar")]) is None


def test_run_names_every_artefact(tmp_path):
    r = Run(tmp_path)
    assert r.best == tmp_path / "best.pt" and r.last == tmp_path / "checkpoints" / "last.pt"
    assert r.resolved_config == tmp_path / "config.resolved.json" and r.config == tmp_path / "config.toml"
    assert r.metrics == tmp_path / "metrics.jsonl" and r.best_json == tmp_path / "best.json"
    assert r.eval_dir("val") == tmp_path / "eval" / "val" and r.index == tmp_path / "index"
    assert (r.features, r.tensorboard, r.curves) == (tmp_path / "features", tmp_path / "tensorboard", tmp_path / "curves.png")


def test_resolve_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match=r"best.pt: missing \(is .*run a run folder of `recipekit train`\?\)"):
        Run.resolve(run)
    (run / "best.pt").write_bytes(b"weights")
    found = Run.resolve(run)
    assert found.checkpoint == run / "best.pt" and found.run == Run(run) and found.is_run_folder
    assert found.eval_dir("test") == run / "eval" / "test" and found.index_dir == run / "index"
    assert found.run_config() is None
    with pytest.raises(FileNotFoundError, match=r"config.resolved.json: missing; give the prepared folder with --data"):
        found.prepared()
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (run / "config.resolved.json").write_text(json.dumps({"data": {"prepared": str(prepared)}}))
    assert found.run_config() == {"data": {"prepared": str(prepared)}}
    assert found.prepared() == prepared
    other = tmp_path / "other"
    with pytest.raises(FileNotFoundError, match=r"other: the prepared folder does not exist"):
        found.prepared(other)
    other.mkdir()
    assert found.prepared(other) == other  # --data wins over the run's config


def test_resolve_a_checkpoint_file(tmp_path):
    lone = tmp_path / "models" / "tiny.pt"
    lone.parent.mkdir()
    lone.write_bytes(b"weights")
    found = Run.resolve(lone)
    assert found.checkpoint == lone and found.run is None and not found.is_run_folder
    assert found.eval_dir("test") == tmp_path / "models" / "eval" / "tiny" / "test"
    assert found.index_dir == tmp_path / "models" / "index"
    with pytest.raises(ValueError, match=r"tiny.pt: a checkpoint file needs --data PREPARED"):
        found.prepared()
    # a checkpoint inside a run folder (one level down) belongs to that run
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"state")
    (run / "config.resolved.json").write_text("[1, 2]")
    found = Run.resolve(run / "checkpoints" / "last.pt")
    assert found.run == Run(run)
    with pytest.raises(ValueError, match=r"config.resolved.json: expected a JSON object"):
        found.run_config()
    with pytest.raises(FileNotFoundError, match=r"nothing: no such run folder, model folder or checkpoint file"):
        Run.resolve(tmp_path / "nothing")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temporary left
    folder = tmp_path / "tree"
    with pytest.raises(RuntimeError):
        with atomic_dir(folder) as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [tmp_path / "sub"]


def test_file_sha256(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 50_000  # several read blocks
    path.write_bytes(data)
    assert file_sha256(path) == file_digest(path) == hashlib.sha256(data).hexdigest()


def test_text_limits_defaults():
    assert TextLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.astuple() == tuple(DEFAULT_LIMITS) == (20, 20, 15)
    assert TextLimits.of({"max_tokens": 30, "tower": "lstm"}) == TextLimits(20, 20, 30)
    with pytest.raises(AttributeError):  # frozen
        DEFAULT_LIMITS.max_tokens = 1  # type: ignore[misc]


def test_import_core_does_not_import_torch():
    code = ("import sys, recipekit.core, recipekit.core.layout, recipekit.core.io, recipekit.core.device, "
            "recipekit.core.limits, recipekit.core.lazy; print(sorted(m for m in ('torch', 'torchvision') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
