"""Model selection rules (training/validate.py): the keys, the windowed Selector on synthetic
validation sequences, the config keys, and the packaged real-corpus config."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from recipekit.training.config import ConfigError, load_config  # noqa: E402
from recipekit.training.validate import Selector, selection_key  # noqa: E402


def val(medr: float, r1: float, r5: float = 0.0, r10: float = 0.0, *, back: tuple = (None, 0.0, 0.0, 0.0)) -> dict:
    """Validation metrics; ``back`` (medR, R@1, R@5, R@10) of recipe->image (default: as image->recipe's medR)."""
    b = (medr if back[0] is None else back[0], *back[1:])
    return {"image_to_recipe": {"medR": medr, "R@1": r1, "R@5": r5, "R@10": r10},
            "recipe_to_image": dict(zip(("medR", "R@1", "R@5", "R@10"), b))}


def test_keys_of_the_rules():
    m = val(6.0, 10.0, 30.0, 50.0, back=(8.0, 5.0, 20.0, 40.0))
    assert selection_key(m, "image_to_recipe") == (6.0, -10.0)
    assert selection_key(m, "mean") == (7.0, -7.5)
    assert selection_key(m, "rsum") == (-155.0, 7.0)  # -(10+30+50+5+20+40), mean medR


def test_window_one_is_the_plain_rule():
    seq = [val(9, 5), val(7, 5), val(7, 10), val(8, 20), val(6, 0), val(6, 0)]
    sel = Selector("image_to_recipe", 1)
    assert [sel.offer(m) for m in seq] == [True, True, True, False, True, False]


def test_window_averages_and_ignores_a_lone_lucky_validation():
    # rsum over one direction's recalls (the other zero): a spike at validation 2, a plateau later
    rsums = [10, 90, 10, 40, 50, 60, 55, 20]
    seq = [val(10, r, 0, 0) for r in rsums]
    plain = Selector("rsum", 1)
    assert [plain.offer(m) for m in seq] == [True, True, False, False, False, False, False, False]  # keeps the spike
    sel = Selector("rsum", 3)
    chosen = [sel.offer(m) for m in seq]
    # windows (from the 3rd validation): 36.7, 46.7, 33.3, 50, 55, 45
    assert chosen == [False, False, True, True, False, True, True, False]
    assert sel.best_score == pytest.approx((-55.0, 10.0))


def test_a_run_shorter_than_the_window_keeps_its_last_model():
    sel = Selector("rsum", 5)
    assert sel.offer(val(5, 50)) is False
    assert sel.offer(val(5, 10), final=True) is True  # no full window: the last model, partial window
    assert sel.best_score == pytest.approx((-30.0, 5.0))


def test_a_resumed_selector_continues_the_windows():
    seq = [val(10, r) for r in (10, 30, 20, 60, 10, 70)]
    straight = Selector("rsum", 2)
    marks = [straight.offer(m) for m in seq]
    first = Selector("rsum", 2)
    for m in seq[:3]:
        first.offer(m)
    resumed = Selector("rsum", 2, [selection_key(m, "rsum") for m in seq[:3]], first.best_score)
    assert [resumed.offer(m) for m in seq[3:]] == marks[3:]


def test_selection_keys_are_checked(tmp_path):
    def cfg(**train):
        return load_config({"data": {"prepared": str(tmp_path)}, "train": train})

    assert cfg(select="rsum", select_window=3).train.select_window == 3
    assert cfg().train.text_cache is True
    with pytest.raises(ConfigError, match="train.select"):
        cfg(select="r@1")
    with pytest.raises(ConfigError, match="train.select_window must be > 0"):
        cfg(select_window=0)
    with pytest.raises(ConfigError, match="train.text_cache: expected true or false"):
        cfg(text_cache="yes")


def test_the_packaged_real_corpus_config_loads(tmp_path):
    from recipekit import configs

    assert "real_small" in configs.names()
    cfg = load_config("real_small", [f"data.prepared={tmp_path}"])
    assert cfg.model.embedder == "minilm_efficientnet_lite0"
    assert cfg.train.cache_features and cfg.train.text_cache and cfg.train.epochs == 25
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.schedule) == (32, 1e-3, "cosine")
    assert cfg.model.overrides["image"]["freeze_backbone"] is True
    assert cfg.data.prepared == str(tmp_path)
