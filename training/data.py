"""The trainer's data: the paired training loader, H-T's recipe-only loader, and the order in
which an epoch interleaves their batches.

Paired batches come from :func:`recipekit.loaders.make_loader` over ``PREPARED/shards/train``
or where ``data.shards`` / ``data.train_shards`` say (any fsspec URL, ``pipe:``; the LMDB
store, the vocabulary and word2vec stay in PREPARED): a random photo per recipe, the
training augmentation, fixed-length epochs split over ranks.
Recipe-only batches come from :func:`recipekit.loaders.recipe_only_loader` over the LMDB
store: the train recipes without photos (``data.recipe_only_set = "no_images"``, as H-T's
``*_noimages`` split) or all train recipes (``"all"``). An epoch is ``plan(n_paired, ratio)``:
after each paired batch, ``ratio`` recipe-only batches are due (fractions accumulate), e.g.
ratio 1 alternates them as H-T does. Every rank follows the same plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from recipekit.core.layout import Prepared
from recipekit.core.limits import TextLimits

from .config import ConfigError, TrainConfig

__all__ = ["batch_arithmetic", "check_split", "describe_batch", "paired_loader", "shard_location", "recipe_only_batches", "plan_epoch", "store_compatible", "store_mismatch",
           "num_classes"]


def store_mismatch(prepared: Path, model) -> str | None:
    """None when ``PREPARED/recipes.lmdb`` holds this model's token ids (its vocabulary and
    limits: the loaders' own check, :func:`recipekit.loaders.wds.checked_store`); else why not."""
    from recipekit.loaders.wds import checked_store

    path = Prepared(prepared).store
    if not (path / "data.mdb").exists():
        return f"{path} does not exist (prepare's store stage writes it)"
    try:
        checked_store(path, model.vocab, model.text_limits.astuple())
    except ValueError as exc:
        return str(exc)
    return None


def store_compatible(prepared: Path, model) -> bool:
    """Whether ``PREPARED/recipes.lmdb`` holds this model's token ids (vocabulary and limits)."""
    return store_mismatch(prepared, model) is None


def num_classes(prepared: Path) -> int:
    """Classes in ``classes.json``, background (0) included."""
    path = Prepared(prepared).classes
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (run `recipekit prepare`; loss num_classes = \"auto\" needs it)")
    return len(json.loads(path.read_text(encoding="utf-8")))


def shard_location(cfg: TrainConfig, split: str) -> str | None:
    """Where the ``split`` ("train" or "val") shards are read from: ``data.{split}_shards`` as
    given (a split folder, URL, brace pattern or ``pipe:``), else the split under
    ``data.shards`` (:func:`recipekit.loaders.remote.split_shards`); None: ``PREPARED/shards/{split}``."""
    d = cfg.data
    explicit = {"train": d.train_shards, "val": d.val_shards}.get(split, "")
    if explicit:
        return explicit
    if d.shards:
        from recipekit.loaders.remote import split_shards

        return split_shards(d.shards, split)
    return None


def check_split(cfg: TrainConfig, split: str) -> None:
    """Fail early (an error naming the folder or URL) when the ``split`` shards cannot be found."""
    location = shard_location(cfg, split)
    if location is None:
        Prepared(cfg.data.prepared).shards(split)
    else:
        from recipekit.loaders import resolve_shards

        resolve_shards(location)


def paired_loader(cfg: TrainConfig, model, *, rank: int, world_size: int, on_gpu: bool):
    from recipekit.loaders import LoaderSpec, make_loader

    d = cfg.data
    spec = LoaderSpec(
        vocab=model.vocab,  # the model's own (minilm: WordPiece)
        train=True, batch_size=d.batch_size, num_workers=d.num_workers,
        epoch_length=d.epoch_length or None, seed=cfg.train.seed, rank=rank, world_size=world_size,
        class_aware=d.class_aware, image_size=model.image_preprocessing.size, decoder=d.decoder,
        embedder=model, normalize=not on_gpu, shuffle_size=d.shuffle_size, limits=model.text_limits.astuple(),
        pin_memory=on_gpu, persistent_workers=d.num_workers > 0,
    )
    location = shard_location(cfg, "train")
    prepared = Prepared(d.prepared)
    if location is None:  # PREPARED/shards/train, and its store when it matches the model
        loader, info = make_loader(prepared, spec, split="train")
    else:  # shards elsewhere; the token store stays in PREPARED (used when it matches the model)
        store = prepared.store if store_compatible(prepared.path, model) else None
        loader, info = make_loader(location, spec.replace(store=store))
    if info.batches_per_epoch is None:
        raise ConfigError(f"data.epoch_length: the sample counts of the train shards {location or prepared.shard_dir('train')} are "
                          "unknown (no sizes.json beside them, e.g. pipe: commands); set data.epoch_length")
    return loader, info


def _recipe_only_keys(cfg: TrainConfig, store) -> list[str]:
    keys = store.keys("train")
    if cfg.data.recipe_only_set == "all":
        return keys
    import polars as pl

    images = Prepared(cfg.data.prepared).images
    if not images.exists():
        raise FileNotFoundError(f"{images}: missing; data.recipe_only_set = \"no_images\" needs it (or use \"all\")")
    with_photos = set(
        pl.read_parquet(images, columns=["recipe_id", "present"]).filter(pl.col("present"))["recipe_id"].to_list()
    )
    return [k for k in keys if k not in with_photos]


def recipe_only_loader(cfg: TrainConfig, model, *, rank: int, world_size: int, on_gpu: bool):
    """H-T's recipe-only batches, or None when the config has none."""
    if cfg.data.recipe_only_ratio <= 0:
        return None
    from recipekit.loaders import recipe_only_loader as make
    from recipekit.pipeline.store import RecipeStore

    prepared = Path(cfg.data.prepared)
    why = store_mismatch(prepared, model)
    if why is not None:
        raise ConfigError(
            f"data.recipe_only_ratio: {why}. The recipe-only batches need the store built with this model's "
            f"vocabulary and limits {model.text_limits.astuple()} (max_ingredients, max_instructions, max_tokens); set them "
            "in [model.overrides] recipe = {...} or re-run prepare with --store-max-*"
        )
    store = RecipeStore(Prepared(prepared).store)
    keys = _recipe_only_keys(cfg, store)
    size = cfg.data.recipe_only_batch_size or 2 * cfg.data.batch_size
    if len(keys) < size * world_size:
        raise ConfigError(f"data.recipe_only_ratio: only {len(keys)} recipe-only train recipes "
                          f"({cfg.data.recipe_only_set}), fewer than one batch of {size} per rank")
    return make(store, keys, batch_size=size, vocab=model.vocab, train=True, num_workers=cfg.data.num_workers,
                seed=cfg.train.seed, rank=rank, world_size=world_size, pin_memory=on_gpu,
                persistent_workers=False)


def recipe_only_batches(loader, epoch: int) -> Iterator[dict[str, Any]]:
    """Endless recipe-only batches for one epoch: passes ``epoch * 1000 + k`` of the loader's
    sampler (reshuffled each pass), so the sequence depends only on the epoch."""
    k = 0
    while True:
        loader.set_epoch(epoch * 1000 + k)
        yield from loader
        k += 1


def batch_arithmetic(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """How many pairs one optimiser step and one loss evaluation see (RUN/environment.json).

    ``effective_batch`` = ``data.batch_size`` (per rank) x ``world_size`` x ``train.accumulate``:
    the pairs whose gradients one optimiser step averages. ``loss_batch`` = ``batch_size`` x
    ``world_size``: the pairs one evaluation of the image-recipe loss sees, i.e. where its
    in-batch negatives come from. Every recipekit loss gathers the embeddings of all ranks
    (:mod:`recipekit.training.distributed`), so ranks enlarge the loss batch; accumulation
    does not (each micro-batch is its own loss batch, docs/training.md). With recipe-only
    batches (``data.recipe_only_ratio`` r) the ``accumulate`` micro-batches of a step are
    paired and recipe-only ones in the ratio 1 : r: ``paired_per_step`` = ``effective_batch``
    / (1 + r) pairs on average (``effective_batch`` when r = 0)."""
    b, a, r = cfg.data.batch_size, cfg.train.accumulate, cfg.data.recipe_only_ratio
    return {"batch_size_per_rank": b, "world_size": int(world_size), "accumulate": a,
            "effective_batch": b * world_size * a, "loss_batch": b * world_size, "recipe_only_ratio": r,
            "paired_per_step": round(b * world_size * a / (1.0 + r), 1)}


def describe_batch(arith: dict[str, Any]) -> str:
    """The one-line summary the trainer prints first."""
    a = arith
    mixed = a["recipe_only_ratio"] > 0
    text = (f"batch: {a['batch_size_per_rank']} pairs per rank x {a['world_size']} rank(s) x {a['accumulate']} "
            f"accumulation step(s) = {a['effective_batch']} {'micro-batch slots' if mixed else 'pairs'} per optimiser "
            f"step; each loss evaluation sees {a['loss_batch']} pairs (its in-batch negatives)")
    if mixed:
        text += (f"; micro-batches are paired and recipe-only 1 : {a['recipe_only_ratio']:g}, so about "
                 f"{a['paired_per_step']:g} pairs per step")
    return text


def plan_epoch(n_paired: int, ratio: float) -> list[str]:
    """``"pair"`` / ``"recipe"`` per micro-batch of one epoch (the same on every rank)."""
    plan: list[str] = []
    credit = 0.0
    for _ in range(n_paired):
        plan.append("pair")
        credit += ratio
        while credit >= 1.0 - 1e-9:
            plan.append("recipe")
            credit -= 1.0
    return plan
