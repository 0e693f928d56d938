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
