"""The trainer's cache of a frozen sentence encoder (train.text_cache, training/textcache.py):
the same outputs and the same training losses as without it, keyed by the encoder and the text."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("webdataset")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

try:
    from conftest_torch import RECIPES, skip_unless_installed, small_overrides
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import RECIPES, skip_unless_installed, small_overrides

NAME = "minilm_efficientnet_lite0"


@pytest.fixture(scope="module")
def model():
    from recipekit.embedders import create_embedder, get_config

    skip_unless_installed(get_config(NAME))
    torch.manual_seed(0)
    return create_embedder(NAME, **small_overrides(NAME, None, image={"weights": None})).eval()


def _batch(model, recipes):
    return model.collate([model.tokenise(r) for r in recipes])


def test_cached_tower_gives_the_uncached_outputs_and_hits_the_second_time(model):
    from recipekit.training.textcache import attach_text_cache, clear_text_caches

    clear_text_caches()
    batch = _batch(model, RECIPES)
    with torch.no_grad():
        plain = model(recipes=batch).recipe
        cache = attach_text_cache(model)
        try:
            assert cache is not None and model.recipe_tower.text_cache is cache
            first = model(recipes=batch).recipe
            misses = cache.misses
            assert misses > 0 and len(cache) == misses  # every distinct sentence encoded once
            again = model(recipes=batch).recipe
        finally:
            model.recipe_tower.text_cache = None
    torch.testing.assert_close(first, plain, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, first)
    assert cache.misses == misses and cache.hits > 0  # the second pass read everything back


def test_a_changed_text_or_model_is_another_entry(model):
    from recipekit.training.textcache import attach_text_cache, clear_text_caches, encoder_digest

    clear_text_caches()
    tower = model.recipe_tower
    cache = attach_text_cache(model)
    try:
        with torch.no_grad():
            model(recipes=_batch(model, RECIPES[:1]))
            n = len(cache)
            changed = copy.deepcopy(RECIPES[0])
            changed["instructions"][0]["text"] = "Chop the garlic."
            out = model(recipes=_batch(model, [changed])).recipe
        assert len(cache) == n + 1  # only the changed line is new
        with torch.no_grad():
            tower.text_cache = None
            expected = model(recipes=_batch(model, [changed])).recipe
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        # another encoder (one weight changed) has another digest: another, empty cache
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.recipe_tower.sentence_encoder.embeddings.word_embeddings.weight[2000] += 1.0
        assert encoder_digest(other.recipe_tower.sentence_encoder) != cache.digest
        fresh = attach_text_cache(other)
        assert fresh is not cache and len(fresh) == 0
        assert attach_text_cache(copy.deepcopy(model)) is cache  # same weights: the same cache
    finally:
        tower.text_cache = None
        clear_text_caches()


def test_a_trainable_encoder_gets_no_cache():
    from recipekit.embedders import create_embedder, get_config
    from recipekit.training.textcache import attach_text_cache

    skip_unless_installed(get_config(NAME))
    m = create_embedder(NAME, **small_overrides(NAME, None, image={"weights": None},
                                                recipe={"freeze_encoder": False}))
    assert attach_text_cache(m) is None and m.recipe_tower.text_cache is None


def test_training_with_the_cache_gives_the_losses_without_it(prepared_demo, tmp_path):
    from recipekit.embedders import get_config
    from recipekit.training import train
    from recipekit.training.textcache import _CACHES, clear_text_caches

    skip_unless_installed(get_config(NAME))
    overrides = small_overrides(NAME, None, image={"freeze_backbone": True})
    overrides.pop("vocab")
    cfg = {
        "data": {"prepared": str(prepared_demo), "batch_size": 8, "num_workers": 0, "epoch_length": 16,
                 "feature_cache": str(tmp_path / "features")},
        "model": {"embedder": NAME, "overrides": overrides},
        "loss": {"name": "triplet", "margin": 0.3, "combine": "sum", "recipe_weight": 1.0},
        "optim": {"lr": 1e-3},
        "train": {"epochs": 2, "seed": 0, "cache_features": True, "val_limit": 8},
        "log": {"progress": False, "tensorboard": False, "curves": False},
    }
    clear_text_caches()
    results = {}
    for flag in (False, True):
        c = copy.deepcopy(cfg)
        c["train"]["text_cache"] = flag
        results[flag] = train(c, tmp_path / f"run-{flag}", device="cpu")
        assert bool(_CACHES) == flag  # the uncached run made no cache
    (cache,) = _CACHES.values()
    assert cache.hits > 0 and cache.misses > 0  # the second validation read the first one's sentences back
    clear_text_caches()
    for off, on in zip(results[False].history, results[True].history):
        for key in ("loss", "loss_pair", "loss_recipe"):
            assert on[key] == pytest.approx(off[key], rel=1e-6), key
        assert on["val"]["image_to_recipe"] == pytest.approx(off["val"]["image_to_recipe"])
