"""Embed one split of a prepared folder with a :class:`~recipekit.embedders.JointEmbedder`.

:func:`embed_split` reads ``PREPARED/shards/{split}`` (or the ``shards`` given: any fsspec
URL, ``pipe:``) with the eval loader (one pass, in shard
order, a last short batch kept), runs one forward per batch under ``torch.no_grad()`` and
returns the two embedding matrices with the recipe id of every row: row ``i`` of ``image``
and row ``i`` of ``recipe`` are the same recipe, ``ids[i]``.

Recipes are tokenised with the model's own vocabulary (``model.vocab``) and limits
(``model.config["recipe"]``): the LMDB store ``recipes.lmdb`` is read when it was built with
that vocabulary and those limits, otherwise each sample's JSON is tokenised (always the case
for the ``minilm`` tower, whose WordPiece ids are not the store's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recipekit.core.device import resolve_device  # noqa: F401  (re-exported: this module's name for it)
from recipekit.core.layout import Prepared

__all__ = ["SplitEmbeddings", "embed_split", "resolve_device", "split_folder"]

IMAGE_PICKS = ("first", "random")


@dataclass
class SplitEmbeddings:
    """Paired embeddings of one split: rows ``i`` of ``image`` and ``recipe`` are recipe ``ids[i]``.

    ``image`` / ``recipe``: float32 [N, D] (L2-normalised by the towers); ``image_index``: int64
    [N], which photo of each recipe was embedded (``0`` = ``0.jpg``)."""

    ids: list[str]
    image: np.ndarray
    recipe: np.ndarray
    image_index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def split_folder(prepared: str | os.PathLike, split: str) -> Path:
    """``PREPARED/shards/{split}``, checked to hold shards (:meth:`recipekit.core.Prepared.shards`)."""
    return Prepared(prepared).shards(split)


def _prepared_store(prepared: str | os.PathLike | None, vocab: Any, limits: tuple[int, int, int]):
    """``PREPARED/recipes.lmdb`` when it holds ``vocab``'s ids cut at ``limits``; else None."""
    from recipekit.loaders.wds import matching_store

    return matching_store(Prepared(prepared) if prepared else None, vocab, limits)


def embed_split(
    model: Any,
    prepared: str | os.PathLike,
    split: str,
    *,
    image_pick: str = "first",
    batch_size: int = 64,
    num_workers: int = 0,
    device: Any = None,
    limit: int | None = None,
    seed: int = 0,
    shards: str | os.PathLike | None = None,
) -> SplitEmbeddings:
    """Embed the image-recipe pairs of ``PREPARED/shards/{split}`` with ``model``.

    ``image_pick``: the recipe's first photo (``"first"``, the protocol's default) or a
    seeded random one (``"random"``: fixed per recipe and ``seed``, whatever ``num_workers``).
    ``device``: where to run (None: where the model is; ``"auto"``: cuda when available).
    ``limit``: stop after that many pairs (the first the loader yields: shard order with
    ``num_workers=0``). ``shards``: this split's shards read from elsewhere instead (a split
    folder, a URL fsspec reads, a brace pattern or a ``pipe:`` command:
    :func:`recipekit.loaders.resolve_shards`); recipe tokens then come from
    ``PREPARED/recipes.lmdb`` when it matches the model, else from each sample's JSON. The model is put
    in eval mode (and back in train mode afterwards if it was)."""
    import torch
    from recipekit.loaders import LoaderSpec, make_loader

    if image_pick not in IMAGE_PICKS:
        raise ValueError(f"image_pick must be one of {', '.join(IMAGE_PICKS)}, not {image_pick!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    dev = resolve_device(device, model)
    limits = model.text_limits.astuple()  # the model's own tokenisation limits
    on_gpu = dev.type == "cuda"
    spec = LoaderSpec(
        vocab=model.vocab, train=False, batch_size=batch_size, num_workers=num_workers, seed=seed,
        rank=0, world_size=1, image_size=model.image_preprocessing.size, embedder=model,
        normalize=not on_gpu, limits=limits, pin_memory=on_gpu, image_pick=image_pick,
    )
    if shards is None:  # the split of PREPARED, its own store when it matches the model
        loader, info = make_loader(Prepared(prepared), spec, split=split)
    else:
        loader, info = make_loader(shards, spec.replace(store=_prepared_store(prepared, model.vocab, limits)))
    ids: list[str] = []
    images, recipes, picks = [], [], []
    was_training = model.training
    model.to(dev)
    model.eval()
    from tqdm import tqdm

    from recipekit.pipeline.progress import bar_disabled

    bar = tqdm(desc=f"embed {split}", unit="pair", total=limit, leave=False, disable=bar_disabled())
    try:
        with torch.no_grad():
            for batch in loader:
                take = len(batch["ids"]) if limit is None else min(len(batch["ids"]), limit - len(ids))
                if take <= 0:
                    break
                pixels = batch["images"][:take].to(dev, non_blocking=True)
                if on_gpu:
                    pixels = info.normalise(pixels)
                tokens = {k: v[:take] for k, v in batch["recipes"].items()}
                out = model(images=pixels, recipes=tokens)
                images.append(out.image.float().cpu())
                recipes.append(out.recipe.float().cpu())
                picks.append(batch["image_index"][:take].cpu())
                ids.extend(batch["ids"][:take])
                bar.update(take)
                if limit is not None and len(ids) >= limit:
                    break
    finally:
        bar.close()
        model.train(was_training)
    dim = model.embed_dim
    if not ids:
        empty = np.zeros((0, dim), dtype=np.float32)
        return SplitEmbeddings([], empty, empty.copy(), np.zeros(0, dtype=np.int64))
    return SplitEmbeddings(
        ids=ids,
        image=torch.cat(images).numpy().astype(np.float32, copy=False),
        recipe=torch.cat(recipes).numpy().astype(np.float32, copy=False),
        image_index=torch.cat(picks).numpy().astype(np.int64, copy=False),
    )
