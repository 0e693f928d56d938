"""Recipe-only batches from the LMDB store (``OUT/recipes.lmdb``): H-T's self-supervised
recipe loss trains on every recipe, photos or not.

The store already holds token ids, so a batch is an LMDB read per recipe and
``collate_recipes``; nothing is tokenised. Each worker process opens the store itself
(:class:`~recipekit.pipeline.store.RecipeStore` reopens after fork or spawn).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from recipekit.pipeline.store import RecipeStore
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .shards import default_rank_world

__all__ = ["RecipeLoader", "StoreDataset", "collate_store_records", "recipe_only_loader"]


class StoreDataset(Dataset):
    """Map-style dataset of tokenised recipes: item ``i`` is ``store[keys[i]]``."""

    def __init__(self, store: RecipeStore | str | os.PathLike, keys: Sequence[str] | str | None = None):
        self.store = store if isinstance(store, RecipeStore) else RecipeStore(store)
        if keys is None or isinstance(keys, str):
            keys = self.store.keys(keys or "train")
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.store[self.keys[index]]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self.store[self.keys[i]] for i in indices]


def collate_store_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"recipes": collate_recipes(...), "class_ids": int64 [B], "ids": [str]}``."""
    from recipekit.embedders.text import collate_recipes

    return {
        "recipes": collate_recipes(records),
        "class_ids": torch.tensor([r["class_id"] for r in records], dtype=torch.long),
        "ids": [r["id"] for r in records],
    }


class RecipeLoader(DataLoader):
    """DataLoader whose sampler is reseeded every epoch: each ``iter(loader)`` starts the next
    epoch unless :meth:`set_epoch` chose one (as :class:`~recipekit.loaders.wds.ShardLoader`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self):
        self.sampler.set_epoch(self._next_epoch)
        self._next_epoch += 1
        return super().__iter__()


def recipe_only_loader(
    store: RecipeStore | str | os.PathLike,
    keys: Sequence[str] | str | None = "train",
    *,
    batch_size: int,
    vocab: Any = None,
    train: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> RecipeLoader:
    """Batches of tokenised recipes (``collate_store_records``) over ``keys`` (ids, or a
    partition name) of the store. Train: a seeded permutation per epoch, split over ranks
    (``DistributedSampler``: every rank gets ``ceil(len / world_size)`` recipes, a few
    repeated to even out), shorter last batch dropped. Eval: in order, last batch kept (ranks
    split round-robin). ``vocab``, when given, must be the vocabulary the store was built with."""
    dataset = StoreDataset(store, keys)
    if vocab is not None and hasattr(vocab, "digest") and vocab.digest() != dataset.store.meta.get("vocab_sha256"):
        raise ValueError(f"{dataset.store.path} was tokenised with another vocabulary than the one given")
    rank, world_size = default_rank_world(rank, world_size)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                 drop_last=False)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
    return RecipeLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_store_records, drop_last=train,
                        pin_memory=pin_memory and torch.cuda.is_available(), **kwargs)
