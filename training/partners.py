"""Mismatched partners drawn from the whole training set (``[loss] partners = "dataset"``).

The pairwise losses (``pairwise``, ``pairwise++``) pair each image with its own recipe or,
with probability ``mismatch_rate``, with another recipe. By default that other recipe is
another row of the batch. im2recipe's data loader (github.com/torralba-lab/im2recipe-Pytorch,
data_loader.py) draws it uniformly from the whole training set instead; with
``partners = "dataset"`` the trainer does the same: for every row of a paired batch it draws
one train recipe (never the row's own recipe), the model embeds these recipes with the
batch (they get gradients, as in im2recipe) and the loss scores a mismatched row against
its drawn recipe (:class:`recipekit.losses.pairwise.PairwiseLoss`).

The candidates are the train recipes with at least one photo (the recipes of the training
pairs), read with the model's own tokenisation (:class:`recipekit.training.features.TokenSource`:
the LMDB store when it matches the model, else the train shards). Draws come from this
module's ``torch.Generator`` (seeded from ``train.seed`` and the rank; saved in the run's
checkpoint with the losses' generators, so ``--resume`` continues the sequence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["PartnerSource", "train_pair_ids", "wants_dataset_partners"]


def wants_dataset_partners(cfg) -> bool:
    return cfg.loss.options.get("partners", "batch") == "dataset"


def train_pair_ids(prepared: Path) -> list[str]:
    """Ids of the train recipes with a photo on disk, sorted."""
    import polars as pl

    prepared = Path(prepared)
    recipes, images = prepared / "recipes.parquet", prepared / "images.parquet"
    for path in (recipes, images):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (loss.partners = \"dataset\" reads the train recipes from it)")
    train = pl.read_parquet(recipes, columns=["id", "partition"]).filter(pl.col("partition") == "train")["id"]
    photos = pl.read_parquet(images, columns=["recipe_id", "present"]).filter(pl.col("present"))["recipe_id"]
    return sorted(set(train.to_list()) & set(photos.to_list()))


class PartnerSource(nn.Module):
    """Draws one partner recipe per row from ``ids`` (not the row's own id) and collates
    them with ``tokens`` (anything with ``batch(ids) -> recipe batch``)."""

    def __init__(self, ids: Sequence[str], tokens, seed: int = 0):
        super().__init__()
        self.ids = list(ids)
        if len(self.ids) < 2:
            raise ValueError(f"loss.partners = \"dataset\" needs at least 2 train recipes with photos, got {len(self.ids)}")
        self.tokens = tokens
        self.generator = torch.Generator().manual_seed(int(seed))

    def draw_ids(self, own: Sequence[str]) -> list[str]:
        """One id per entry of ``own``, uniform over the candidates, never equal to that entry."""
        n = len(self.ids)
        out = []
        for rid in own:
            while True:
                pick = self.ids[int(torch.randint(n, (1,), generator=self.generator))]
                if pick != rid:
                    break
            out.append(pick)
        return out

    def draw(self, own: Sequence[str]) -> dict[str, torch.Tensor]:
        """A recipe batch (:func:`recipekit.embedders.text.collate_recipes`) of partners for ``own``."""
        return self.tokens.batch(self.draw_ids(own))


def build_partner_source(cfg, model, rank: int = 0, loader=None) -> PartnerSource | None:
    """The run's :class:`PartnerSource`, or None when the loss draws partners in the batch."""
    if not wants_dataset_partners(cfg):
        return None
    from .config import ConfigError
    from .features import TokenSource

    if not cfg.loss.name.startswith("pairwise"):
        raise ConfigError(f"loss.partners = \"dataset\": only the pairwise losses draw mismatched partners, "
                          f"not {cfg.loss.name!r}")
    prepared = Path(cfg.data.prepared)
    tokens = getattr(loader, "tokens", None)  # the cached-features loader already holds the train tokens
    if tokens is None:
        tokens = TokenSource(model, prepared, splits=("train",))
    fs = getattr(loader, "fs", None)
    if fs is not None:  # cached features: exactly the training pairs of the loader
        ids = sorted(fs.ids)
    else:
        ids = train_pair_ids(prepared)
        if tokens.store is None:  # tokens read from the shards: the recipes the shards hold
            ids = [i for i in ids if i in tokens.cache]
    return PartnerSource(ids, tokens, seed=cfg.train.seed * 1000 + 17 + rank)
