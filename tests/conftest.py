"""Shared fixtures. Real third-party data lives beside the project in ../shared/data;
tests that need it skip when it is absent (it is never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_corpus(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "layer1.json").exists():
        pytest.skip(f"real data {path} not present")
    return path


@pytest.fixture(scope="session")
def recipes_en() -> Path:
    return shared_corpus("recipes-en")


@pytest.fixture(scope="session")
def recipes_zh() -> Path:
    return shared_corpus("recipes-zh")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """A small demo corpus with photos, generated once per test session."""
    from recipekit.pipeline.demo import write_demo_corpus

    out = tmp_path_factory.mktemp("demo-corpus")
    write_demo_corpus(out, recipes=400, seed=7, image_fraction=0.5, image_size=64, workers=1)
    return out


@pytest.fixture(scope="session")
def prepared_demo(tmp_path_factory) -> Path:
    """600 demo recipes (half with 64 px photos) through every `prepare` stage (~3 s)."""
    from recipekit.pipeline.demo import write_demo_corpus
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.shard import ShardParams
    from recipekit.pipeline.word2vec import Word2VecParams

    root = tmp_path_factory.mktemp("prepared-demo")
    write_demo_corpus(root / "src", recipes=600, seed=7, image_fraction=0.5, image_size=64, workers=1)
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2),
                           shard=ShardParams(image_size=64, max_count=64))
    prepare(root / "src", root / "out", config=config, workers=1, quiet=True)
    return root / "out"


@pytest.fixture(scope="session")
def trained_demo_run(prepared_demo, tmp_path_factory) -> Path:
    """A small ResNet-18 / transformer model trained 2 epochs on CPU on ``prepared_demo`` (RUN/best.pt)."""
    from recipekit.training import train

    from stand_ins import tiny_run_config

    cfg = tiny_run_config(data={"prepared": str(prepared_demo)})
    run = tmp_path_factory.mktemp("runs") / "demo"
    train(cfg, run, device="cpu")
    return run
