"""Validation and model selection. Only the ``val`` split is ever read: never ``test``.

Each validation embeds the val pairs (the first photo of each recipe, the evaluation
transform) and scores them with :func:`recipekit.evaluation.evaluate_bags`:
``train.val_bags`` bags of ``train.val_bag_size`` pairs (seed 1234; one bag of all pairs
when the split is smaller), means over bags. The selection key is the medR (lower is better),
then R@1 (higher is better) of ``image_to_recipe`` (AdaMine's saving criteria; the default)
or of the mean of both directions (``train.select = "mean"``); or the sum of R@1, R@5 and R@10
of both directions (higher is better), then their mean medR (``train.select = "rsum"``).
With ``train.select_window = N`` the key is averaged over the last N validations
(:class:`Selector`): a model is kept only when the window ending at its epoch is the best so
far, which damps the noise of a small val split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import TrainConfig

__all__ = ["validate", "selection_key", "is_better", "embed_cached_val", "Selector"]


def _summarise(result: dict[str, Any]) -> dict[str, Any]:
    out = {d: {m: v["mean"] for m, v in result[d].items()} for d in ("image_to_recipe", "recipe_to_image")}
    out["pairs"] = result["pairs"]
    out["bags"] = result["n_bags"]
    out["bag_size"] = result["bag_size"]
    return out


@torch.no_grad()
def embed_cached_val(model, fs, tokens, *, batch_size: int, device, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Val embeddings in cached-features mode: the head over each recipe's first photo's cached
    feature (what embed_split computes through the frozen backbone) and the recipe tower."""
    n = len(fs) if not limit else min(limit, len(fs))
    rows = fs.first_rows()[:n]
    was_training = model.training
    model.eval()
    images, recipes = [], []
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            feats = torch.from_numpy(fs.features[rows[sl]]).to(device)
            images.append(model.image_tower.head(feats).float().cpu())
            rec = model(recipes={k: v.to(device) for k, v in tokens.batch(fs.ids[sl]).items()}).recipe
            recipes.append(rec.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(images).numpy(), torch.cat(recipes).numpy()


def validate(cfg: TrainConfig, model, device, *, cached=None) -> dict[str, Any]:
    """Val metrics of ``model`` (see the module doc). ``cached``: (FeatureSet, TokenSource)
    in cached-features mode."""
    from recipekit.evaluation import evaluate_bags

    t = cfg.train
    batch_size = cfg.data.val_batch_size or cfg.data.batch_size
    if cached is not None:
        image, recipe = embed_cached_val(model, *cached, batch_size=batch_size, device=device, limit=t.val_limit)
    else:
        from recipekit.evaluation.embed import embed_split

        from .data import shard_location

        emb = embed_split(model, cfg.data.prepared, "val", image_pick="first", batch_size=batch_size,
                          num_workers=cfg.data.num_workers, device=device, limit=t.val_limit or None,
                          shards=shard_location(cfg, "val"))
        image, recipe = emb.image, emb.recipe
    if len(image) < 2:
        raise ValueError(f"{cfg.data.prepared}: the val split has {len(image)} pairs; model selection needs at least 2")
    result = evaluate_bags(image, recipe, bag_size=t.val_bag_size, n_bags=t.val_bags, seed=1234)
    return _summarise(result)


def selection_key(metrics: dict[str, Any], select: str) -> tuple[float, float]:
    """Smaller is better: (medR, -R@1), or for ``rsum`` (-(R@1 + R@5 + R@10 of both directions),
    mean medR of both)."""
    if select == "rsum":
        dirs = ("image_to_recipe", "recipe_to_image")
        rsum = sum(float(metrics[d][f"R@{k}"]) for d in dirs for k in (1, 5, 10))
        return -rsum, 0.5 * float(metrics[dirs[0]]["medR"] + metrics[dirs[1]]["medR"])
    if select == "mean":
        med = 0.5 * (metrics["image_to_recipe"]["medR"] + metrics["recipe_to_image"]["medR"])
        r1 = 0.5 * (metrics["image_to_recipe"]["R@1"] + metrics["recipe_to_image"]["R@1"])
    else:
        med, r1 = metrics["image_to_recipe"]["medR"], metrics["image_to_recipe"]["R@1"]
    return float(med), -float(r1)


def is_better(metrics: dict[str, Any], best: dict[str, Any] | None, select: str) -> bool:
    return best is None or selection_key(metrics, select) < selection_key(best, select)


class Selector:
    """Online model selection over a run's validations, in order.

    :meth:`offer` takes each validation's metrics and says whether its model becomes the best:
    the score is :func:`selection_key` averaged (component by component) over the last
    ``window`` validations, and only full windows compete, except that a run whose last
    validation still has no full window keeps that last model (a run must end with a best
    model). ``keys`` / ``best_score``: the state of a resumed run."""

    def __init__(self, select: str, window: int = 1, keys: list | None = None, best_score=None):
        self.select, self.window = select, int(window)
        self.keys = [tuple(k) for k in keys or []]
        self.best_score = tuple(best_score) if best_score is not None else None

    def score(self) -> tuple[float, ...]:
        recent = self.keys[-self.window :]
        return tuple(sum(parts) / len(recent) for parts in zip(*recent))

    def offer(self, metrics: dict[str, Any], final: bool = False) -> bool:
        self.keys.append(selection_key(metrics, self.select))
        full = len(self.keys) >= self.window
        if not full and not (final and self.best_score is None):
            return False
        score = self.score()
        if self.best_score is None or score < self.best_score:
            self.best_score = score
            return True
        return False
