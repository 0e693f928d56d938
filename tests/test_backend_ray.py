"""`prepare --backend ray`: the same bytes as the process pool, ordered bounded maps, named task errors.

One local Ray (2 CPUs) serves the whole module; starting it takes several seconds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import backend_tasks
import polars as pl
import pytest
from backend_tasks import root, slow_square
from click.testing import CliRunner

from recipekit.cli.main import main as cli
from recipekit.pipeline import store as store_mod
from recipekit.pipeline.backends import BackendError, TaskError, make_executor
from recipekit.pipeline.prepare import PrepareConfig, prepare
from recipekit.pipeline.shard import ShardParams
from recipekit.pipeline.stagekit import read_manifest
from recipekit.pipeline.store import RecipeStore
from recipekit.pipeline.word2vec import Word2VecParams

# Ray is an optional extra for users, but part of `all`: CI must run these checks, not skip them.
if os.environ.get("CI"):
    import ray
else:
    ray = pytest.importorskip("ray")

CONFIG = PrepareConfig(word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2),
                       shard=ShardParams(image_size=64, max_count=12))
# gensim with 2 threads is not bit-reproducible (docs/architecture.md); manifests hold timings.
NOT_COMPARED = {"word2vec/vectors.npy"}


@pytest.fixture(scope="module")
def local_ray():
    # Ray workers cannot import modules of the tests folder: send the helpers by value.
    ray.cloudpickle.register_pickle_by_value(backend_tasks)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from recipekit.pipeline.demo import write_demo_corpus

    src = tmp_path_factory.mktemp("ray-corpus")
    write_demo_corpus(src, recipes=200, seed=5, image_fraction=0.6, image_size=64, workers=1)
    return src


@pytest.fixture(scope="module")
def both(corpus, local_ray, tmp_path_factory):
    """The corpus prepared twice, pool and Ray, with small chunks so every stage fans out."""
    base = tmp_path_factory.mktemp("ray-vs-pool")
    mp = pytest.MonkeyPatch()
    mp.setattr("recipekit.pipeline.ingredients.MIN_CHUNK", 100)
    mp.setattr(store_mod, "CHUNK", 64)
    try:
        reports = {b: prepare(corpus, base / b, config=CONFIG, workers=2, quiet=True, backend=b)
                   for b in ("pool", "ray")}
    finally:
        mp.undo()
    return base / "pool", base / "ray", reports


def _files(out: Path) -> list[str]:
    """Every output file, relative to OUT, but the manifests and NOT_COMPARED."""
    rels = (str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return sorted(r for r in rels if not r.startswith("manifests/") and r not in NOT_COMPARED)


@pytest.mark.slow
def test_ray_prepare_gives_the_same_bytes_as_the_pool(both, corpus):
    pool, ray_out, reports = both
    assert [r.status for r in reports["ray"]] == ["ran"] * 6
    shards = {r.name: r for r in reports["ray"]}["shard"].counts
    assert shards["shards"] > 4 and shards["samples"] > 80
    files = _files(pool)
    assert files == _files(ray_out)
    assert sum(f.endswith(".tar") for f in files) == shards["shards"]
    for name in ("recipes.parquet", "ingredients.parquet", "recipe_classes.parquet", "recipes.lmdb/data.mdb"):
        assert name in files
    for name in files:
        a, b = (pool / name).read_bytes(), (ray_out / name).read_bytes()
        if name.endswith("_stats.json"):  # a shard's stats hold its encoding time
            a, b = ({k: v for k, v in json.loads(x).items() if k != "wall_s"} for x in (a, b))
        assert a == b, name
    with RecipeStore(pool / "recipes.lmdb") as a, RecipeStore(ray_out / "recipes.lmdb") as b:
        assert a.keys() == b.keys() and len(a) == 200
        assert all(a[k] == b[k] for k in a.keys())
    assert read_manifest(ray_out, "shard")["backend"] == "ray"
    assert read_manifest(pool, "store")["backend"] == "pool"
    # The backend is not a parameter: the other backend finds every stage up to date.
    again = prepare(corpus, ray_out, config=CONFIG, workers=2, quiet=True, backend="pool")
    assert [r.status for r in again] == ["skipped"] * 6


@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_imap_is_ordered_and_bounded(local_ray, backend):
    pulled: list[int] = []

    def items():
        for i in range(16):
            pulled.append(i)
            yield i

    with make_executor(backend, 2) as ex:
        it = ex.imap(slow_square, items())
        assert next(it) == 0 and len(pulled) <= 4  # 2 workers x 2 in flight
        assert [0, *it] == [i * i for i in range(16)]
        with pytest.raises(TaskError, match=r"value -3 failed: ValueError: negative input -3") as err:
            ex.map(root, [4, 9, -3, 16], describe=lambda x: f"value {x}")
        assert isinstance(err.value.__cause__, Exception)


def test_ray_workers_rerun_the_initializer_when_its_arguments_change(both, local_ray):
    _, out, _ = both
    vocab = str(out / "word2vec" / "vocab.txt")
    rows = pl.read_parquet(out / "recipes.parquet").head(40)
    rows = [(r["id"], r["partition"], r["title"], r["ingredients"], r["instructions"], [], 0)
            for r in rows.to_dicts()]
    chunks = [rows[i : i + 5] for i in range(0, 40, 5)]
    results = []
    with make_executor("ray", 2) as ex:
        for limits in [(20, 20, 15), (2, 2, 3), (20, 20, 15)]:
            store_mod._init_worker(vocab, limits, 2)
            expected = [store_mod._encode_chunk(c) for c in chunks]
            got = ex.map(store_mod._encode_chunk, chunks, initializer=store_mod._init_worker,
                         initargs=(vocab, limits, 2))
            assert got == expected, limits
            results.append(got)
    assert results[0] != results[1] and results[0] == results[2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_failed_shard_is_named_and_leaves_no_partial_output(both, corpus, tmp_path, local_ray, backend):
    import shutil

    pool_out, _, _ = both
    out = tmp_path / "out"
    shutil.copytree(pool_out, out)
    shutil.rmtree(out / "shards")
    (out / "manifests" / "shard.json").unlink()
    # An id too long for a tar member name (parse never lets one through): the worker raises.
    victim = pl.read_parquet(out / "images.parquet")["recipe_id"][0]
    long_id = victim + "x" * 120
    for name, col in (("recipes.parquet", "id"), ("images.parquet", "recipe_id")):
        frame = pl.read_parquet(out / name)
        frame.with_columns(pl.col(col).replace(victim, long_id)).write_parquet(out / name)
    with pytest.raises(TaskError, match=r"shard (train|val|test)/\w+-\d{6}\.tar \(\d+ recipes\) failed: "
                                        r"ValueError: .*too long") as err:
        prepare(corpus, out, stages=["shard"], config=CONFIG, workers=2, quiet=True, backend=backend)
    failed = err.value.args[0].split()[1]
    assert not (out / "shards" / failed).exists()
    assert not (out / "shards" / failed.replace(".tar", "_stats.json")).exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert read_manifest(out, "shard") is None and not (out / "shards" / "index.json").exists()


def test_clear_errors_without_ray_and_for_bad_options(corpus, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="only meaningful with --backend ray"):
        make_executor("pool", 2, address="auto")
    with pytest.raises(ValueError, match="unknown backend 'spark'"):
        make_executor("spark", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(BackendError, match=r"pip install 'recipekit\[ray\]'"):
        make_executor("ray", 2)
    result = CliRunner().invoke(cli, ["prepare", str(corpus), str(tmp_path / "out"), "--backend", "ray", "--quiet"])
    assert result.exit_code == 1 and "needs Ray" in result.output
    assert not (tmp_path / "out" / "manifests").exists()
