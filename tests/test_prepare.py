"""End-to-end `prepare`: all stages, resume after a kill, determinism, real corpora, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recipekit.cli.main import main as cli
from recipekit.pipeline.classes import ClassesParams
from recipekit.pipeline.prepare import STAGES, PrepareConfig, prepare
from recipekit.pipeline.word2vec import Word2VecParams

FAST_W2V = ["--w2v-dim", "32", "--w2v-epochs", "2", "--w2v-min-count", "3"]
FAST = PrepareConfig(word2vec=Word2VecParams(vector_size=32, epochs=2, min_count=3))
COMPARED = ["recipes.parquet", "images.parquet", "det_ingrs.parquet", "quarantine.parquet", "ingredients.parquet",
            "ingredient_vocab.parquet", "recipe_classes.parquet", "classes.json", "word2vec/vocab.txt",
            "word2vec/vectors.npy"]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in COMPARED}


def _cli_cmd(src, out, workers=1):
    return [sys.executable, "-m", "recipekit.cli.main", "prepare", str(src), str(out), "--quiet",
            "--workers", str(workers), *FAST_W2V]


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    from recipekit.pipeline.demo import write_demo_corpus

    src = tmp_path_factory.mktemp("text-corpus")
    write_demo_corpus(src, recipes=3000, seed=3, image_fraction=0.0)
    return src


@pytest.fixture(scope="module")
def clean_run(text_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "out"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    subprocess.run(_cli_cmd(text_corpus, out), check=True, env=env, capture_output=True)
    return _snapshot(out), time.perf_counter() - t0


# Where to interrupt: a file whose appearance shows the stage is under way.
KILL_POINTS = {
    "parse": "recipes.parquet.tmp-*",  # layer1 is being streamed into Parquet
    "ingredients": "manifests/parse.json",  # parse just finished; extraction starts
    "word2vec": "word2vec-corpus.txt.tmp-*",  # corpus written, gensim training
}


@pytest.mark.slow
@pytest.mark.parametrize("stage, sig", [("parse", signal.SIGKILL), ("ingredients", signal.SIGTERM),
                                        ("word2vec", signal.SIGKILL)])
def test_killed_run_resumes_to_identical_bytes(text_corpus, clean_run, tmp_path, stage, sig):
    expected, duration = clean_run
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(_cli_cmd(text_corpus, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10 * duration + 30
    while not list(out.glob(KILL_POINTS[stage])) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait()
    assert not (out / "manifests" / f"{stage}.json").exists(), f"{stage} finished before the signal landed"
    subprocess.run(_cli_cmd(text_corpus, out), check=True, env=env, capture_output=True)
    assert _snapshot(out) == expected
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_deterministic_across_runs_and_worker_counts(text_corpus, tmp_path):
    a = prepare(text_corpus, tmp_path / "a", stages=["parse", "ingredients", "classes"], config=FAST, workers=1,
                quiet=True)
    b = prepare(text_corpus, tmp_path / "b", stages=["parse", "ingredients", "classes"], config=FAST, workers=2,
                quiet=True)
    assert [r.status for r in a] == [r.status for r in b] == ["ran"] * 3
    for name in COMPARED[:8]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_rerun_skips_and_force_redoes(text_corpus, tmp_path):
    out = tmp_path / "out"
    first = prepare(text_corpus, out, config=FAST, workers=1, quiet=True)
    assert [r.name for r in first] == list(STAGES) and {r.status for r in first} == {"ran"}
    assert {r.status for r in prepare(text_corpus, out, config=FAST, workers=1, quiet=True)} == {"skipped"}
    other = PrepareConfig(word2vec=FAST.word2vec, classes=ClassesParams(max_classes=3, food101=False))
    status = {r.name: r.status for r in prepare(text_corpus, out, config=other, workers=1, quiet=True)}
    assert [status[s] for s in ("parse", "ingredients", "word2vec", "classes")] == ["skipped"] * 3 + ["ran"]
    assert len(json.loads((out / "classes.json").read_text())) <= 4
    forced = prepare(text_corpus, out, stages=["ingredients"], config=FAST, workers=1, force=True, quiet=True)
    assert [r.status for r in forced] == ["ran"]


def test_later_stage_without_earlier_outputs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the earlier stages first"):
        prepare(tmp_path, tmp_path / "out", stages=["classes"], quiet=True)


@pytest.mark.parametrize("fixture", ["recipes_en", "recipes_zh"])
def test_real_corpora_prepare_end_to_end(fixture, tmp_path, request):
    src = request.getfixturevalue(fixture)
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=32, epochs=2, min_count=5))
    reports = {r.name: r.counts for r in prepare(src, tmp_path, config=config, workers=2, quiet=True)}
    recipes = reports["parse"]["recipes"]
    ingr = reports["ingredients"]
    # Nearly every accepted recipe gets ingredient names, and the vocabulary is a real one.
    assert ingr["recipes"] == recipes and ingr["without_ingredients"] <= 0.02 * recipes
    assert ingr["vocabulary"] >= 200 and ingr["mean_per_recipe"] >= 4
    assert reports["word2vec"]["vocabulary"] >= 300
    assert reports["classes"]["classes"] >= 1
    table = pl.read_parquet(tmp_path / "ingredients.parquet")
    assert table.get_column("id").to_list() == pl.read_parquet(tmp_path / "recipes.parquet").get_column("id").to_list()


def test_cli_prepare_prints_summary_and_names_bad_input(text_corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["prepare", str(text_corpus), str(tmp_path / "out"), "--quiet", "--workers", "1",
                                 "--stages", "parse,classes"])
    assert result.exit_code == 0, result.output
    assert "parse" in result.output and "classes=" in result.output
    result = runner.invoke(cli, ["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out2"), "--quiet"])
    assert result.exit_code != 0 and "nowhere" in result.output
    result = runner.invoke(cli, ["prepare", str(text_corpus), str(tmp_path / "out3"), "--stages", "parse,bogus"])
    assert result.exit_code != 0 and "bogus" in result.output
