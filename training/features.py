"""Cached-features mode (``train.cache_features = true``): the CPU-friendly way to train.

With the image backbone frozen for the whole run, its pooled features never change, so they
are computed once and the epochs train only the image head and the recipe tower on them.

* **What is cached.** For every recipe of ``PREPARED/shards/{train,val}``: the pooled backbone
  feature of *every* stored photo, with the evaluation transform (resize + centre crop, no
  augmentation). Training picks one photo per recipe at random each epoch (seeded by
  ``(seed, epoch)``), as the image loaders do; validation uses the first photo, as
  :func:`recipekit.evaluation.embed_split` does. Random crops and flips are lost: that is the
  price of computing the backbone once.
* **Where.** ``data.feature_cache`` (default ``RUN/features``), as ``{split}-{digest}.npy``
  (float32 [photos, C]) and ``{split}-{digest}.json`` (recipe ids, per-recipe row offsets,
  class ids), written under temporary names and renamed, the JSON last. ``digest`` is a
  SHA-256 of the backbone's weights, the image size, the normalisation, the decoder and the
  shard files (name, size, mtime), so a cache folder can be shared between runs and a stale
  entry is never read.
* **Text.** Token ids come from ``PREPARED/recipes.lmdb`` when it was built with the model's
  vocabulary and limits, else each shard sample's JSON is tokenised (held in memory).

The trained model is still a whole :class:`~recipekit.embedders.JointEmbedder` (backbone +
head + recipe tower), so ``best.pt`` embeds photos like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from recipekit.embedders.text import collate_recipes
from recipekit.pipeline.progress import bar_disabled
from recipekit.core.io import atomic_path
from recipekit.core.layout import Prepared

__all__ = ["FeatureSet", "TokenSource", "CachedPairLoader", "load_or_extract", "features_digest"]


@dataclass
class FeatureSet:
    ids: list[str]
    offsets: np.ndarray  # int64 [N + 1]: recipe i has rows offsets[i]:offsets[i + 1]
    features: np.ndarray  # float32 [photos, C]
    class_ids: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.ids)

    def first_rows(self) -> np.ndarray:
        return self.offsets[:-1]

    def random_rows(self, rng: np.random.Generator) -> np.ndarray:
        counts = np.diff(self.offsets)
        return self.offsets[:-1] + (rng.random(len(counts)) * counts).astype(np.int64)


def features_digest(model, urls: list[str], decoder: str) -> str:
    tower = model.image_tower
    h = hashlib.sha256()
    h.update(json.dumps({"backbone": model.config["image"]["backbone"], "size": int(tower.image_size),
                         "mean": list(tower.mean), "std": list(tower.std), "decoder": decoder}).encode())
    for url in urls:
        st = os.stat(url)
        h.update(f"{Path(url).name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for name, value in tower.backbone.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _samples(urls: list[str]) -> Iterator[dict[str, Any]]:
    from recipekit.loaders.batching import group_photos
    from recipekit.loaders.tario import tar_samples

    yield from group_photos()(tar_samples()({"url": u} for u in urls))


@torch.no_grad()
def _extract(model, urls: list[str], decoder_name: str, batch_size: int, device, progress: bool):
    from recipekit.loaders.batching import image_keys
    from recipekit.loaders.images import ImageDecoder, normalise
    from tqdm import tqdm

    tower = model.image_tower
    decoder = ImageDecoder(decoder_name, train=False, size=int(tower.image_size))
    backbone = tower.backbone.to(device)
    was_training = backbone.training
    backbone.eval()
    # channels-last convolutions: measured 1.7x faster for EfficientNet-Lite0 on 2 CPU cores
    fmt = torch.contiguous_format if model.config["image"]["backbone"].startswith("vit") else torch.channels_last
    backbone.to(memory_format=fmt)
    ids, counts, classes, chunks, pending = [], [], [], [], []

    def flush():
        if pending:
            x = normalise(torch.stack(pending), tower.mean, tower.std).to(device).contiguous(memory_format=fmt)
            chunks.append(backbone(x)[0].float().cpu().numpy())
            pending.clear()

    try:
        for sample in tqdm(_samples(urls), desc="features", unit="recipe", disable=bar_disabled(not progress), leave=False):
            keys = image_keys(sample)
            if not keys:
                raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')!r} has no photo")
            ids.append(sample["__key__"])
            counts.append(len(keys))
            cls = sample.get("cls")
            classes.append(int(cls) if cls is not None else int(json.loads(sample["json"]).get("class_id", 0)))
            for key in keys:
                pending.append(decoder(sample[key]))
                if len(pending) >= batch_size:
                    flush()
        flush()
    finally:
        backbone.to(memory_format=torch.contiguous_format)
        backbone.train(was_training)
    feats = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, tower.feature_dim), np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return FeatureSet(ids, offsets, feats, np.asarray(classes, dtype=np.int64))


def cache_paths(cache_dir: Path, split: str, digest: str) -> tuple[Path, Path]:
    stem = f"{split}-{digest[:20]}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def load_or_extract(model, prepared: Path, split: str, cache_dir: Path, *, decoder: str = "auto",
                    batch_size: int = 64, device=None, progress: bool = False, write: bool = True) -> FeatureSet:
    """The :class:`FeatureSet` of ``PREPARED/shards/{split}``: read from the cache, or computed
    and (``write``) cached. With DDP, rank 0 writes and the others read after a barrier."""
    from recipekit.loaders import resolve_shards
    from recipekit.loaders.images import ImageDecoder

    urls = list(resolve_shards(Prepared(prepared).shards(split)).urls)
    decoder_name = ImageDecoder(decoder, train=False).decoder
    digest = features_digest(model, urls, decoder_name)
    npy, meta = cache_paths(Path(cache_dir), split, digest)
    if meta.exists() and npy.exists():
        info = json.loads(meta.read_text(encoding="utf-8"))
        feats = np.load(npy)
        return FeatureSet(info["ids"], np.asarray(info["offsets"], np.int64), feats,
                          np.asarray(info["class_ids"], np.int64))
    if not write:
        raise FileNotFoundError(f"{meta}: feature cache missing (rank 0 should have written it)")
    fs = _extract(model, urls, decoder_name, batch_size, device or torch.device("cpu"), progress)
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no ".npy"
        np.save(f, fs.features)
    with atomic_path(meta) as tmp:  # written last: the pair is complete once the meta exists
        tmp.write_text(json.dumps({"split": split, "digest": digest, "shards": urls, "ids": fs.ids,
                                   "offsets": fs.offsets.tolist(), "class_ids": fs.class_ids.tolist(),
                                   "feature_dim": int(fs.features.shape[1])}), encoding="utf-8")
    return fs


class TokenSource:
    """Token ids by recipe id: the LMDB store when it matches the model, else the shards' JSON."""

    def __init__(self, model, prepared: Path, splits: tuple[str, ...] = ("train", "val")):
        from .data import store_compatible

        self.store = None
        self.cache: dict[str, dict] = {}
        if store_compatible(prepared, model):
            from recipekit.pipeline.store import RecipeStore

            self.store = RecipeStore(Prepared(prepared).store)
            return
        from recipekit.loaders import resolve_shards
        from recipekit.pipeline.vocab import tokenise_sample

        limits = model.text_limits.astuple()
        for split in splits:
            urls = list(resolve_shards(Prepared(prepared).shards(split)).urls)
            for sample in _samples(urls):
                self.cache[sample["__key__"]] = tokenise_sample(json.loads(sample["json"]), model.vocab, *limits)

    def batch(self, ids: list[str]) -> dict[str, torch.Tensor]:
        if self.store is not None:
            return collate_recipes([self.store[i] for i in ids])
        return collate_recipes([self.cache[i] for i in ids])


class CachedPairLoader:
    """Batches ``{"features", "recipes", "class_ids", "ids"}`` over a :class:`FeatureSet`.

    Each epoch: a permutation of the recipes drawn from ``(seed, epoch)``, padded to a multiple
    of ``world_size`` and dealt out round-robin to the ranks (as ``DistributedSampler``), one
    random photo per recipe, batches of ``batch_size`` (a shorter last one dropped), plain or
    AdaMine class-aware (:class:`recipekit.loaders.class_aware_batches`). ``epoch_length``
    (samples over all ranks) repeats or cuts the permutation."""

    def __init__(self, fs: FeatureSet, tokens: TokenSource, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, class_aware: bool = False, epoch_length: int = 0):
        self.fs, self.tokens = fs, tokens
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.class_aware = class_aware
        total = epoch_length or len(fs)
        self.per_rank = -(-total // world_size)
        self.total = self.per_rank * world_size
        self._next_epoch = 0
        if self.per_rank < batch_size:
            raise ValueError(f"{len(fs)} cached training pairs: fewer than one batch of {batch_size} per rank")

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank // self.batch_size

    def _groups(self, order: np.ndarray, epoch: int) -> Iterator[list[int]]:
        if not self.class_aware:
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield order[start : start + self.batch_size].tolist()
            return
        from recipekit.loaders import class_aware_batches
        from recipekit.loaders.shards import SharedEpoch

        stage = class_aware_batches(self.batch_size, seed=self.seed, epoch=SharedEpoch(epoch), rank=self.rank)
        items = ({"i": int(i), "class_id": int(self.fs.class_ids[i])} for i in order)
        for group in stage(items):
            yield [it["i"] for it in group]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self._next_epoch
        self._next_epoch += 1
        rng = np.random.default_rng([self.seed, epoch, 7])
        perm = np.resize(rng.permutation(len(self.fs)), self.total)
        rows = self.fs.random_rows(np.random.default_rng([self.seed, epoch, 11]))
        for group in self._groups(perm[self.rank :: self.world_size], epoch):
            idx = np.asarray(group, dtype=np.int64)
            ids = [self.fs.ids[i] for i in group]
            yield {
                "features": torch.from_numpy(self.fs.features[rows[idx]]),
                "recipes": self.tokens.batch(ids),
                "class_ids": torch.from_numpy(self.fs.class_ids[idx]),
                "ids": ids,
            }
