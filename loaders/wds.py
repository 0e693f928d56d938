"""The WebDataset loader of image-recipe pairs: one list of stages, one DataLoader.

:func:`pipeline_stages` is the whole data path, in order::

    ShardList        shard paths; per-epoch seeded permutation (train); endless when the epoch has a fixed length
    split_by_node    every world_size-th shard, from this rank
    split_by_worker  every num_workers-th of those, from this DataLoader worker
    tar_samples      tar members grouped by key into samples (webdataset's convention, faster parser)
    group_photos     per-image layout ({id}_{k}.jpg): a recipe's photos back into one sample (per-recipe: as is)
    take             the fixed epoch length of one worker (epoch_length // (world_size * workers))
    pick_image       one photo per recipe: random (train) or the first (eval); ``image_pick`` overrides
    shuffle_buffer   seeded shuffle of the samples (train)
    batches | class_aware_batches   lists of batch_size samples
    decode_batch     decode + augment + normalise, tokenise (tokenise_sample), collate_recipes

Epochs of a fixed length. With ``epoch_length=N`` each of the ``world_size * num_workers``
readers yields exactly ``n = N // (world_size * num_workers)`` samples per epoch, i.e.
``n // batch_size`` batches (train drops a shorter last batch), so every rank runs the same
number of steps and DDP never waits on a rank that ran dry. The cut comes before the shuffle
buffer, so shuffling loses nothing. When the counts divide (``N`` = all samples, and the
shards split into equal sample counts per reader) every sample is seen exactly once per epoch.
When they do not, a reader whose shards hold more than ``n`` samples leaves its last ones out
of this epoch, and one whose shards hold fewer starts another (reshuffled) pass over them and
sees some samples twice. Shards are split, not samples, when there are at least
``world_size * num_workers`` of them (each reader reads only its shards); with fewer, every
reader reads every shard and keeps every ``world_size * num_workers``-th sample (the two
split stages move after ``tar_samples``: same coverage, more tar reading).
``epoch_length=None`` (eval, or train without a ``sizes.json``) reads each shard once, and
a last short batch is kept for eval.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from recipekit.core.layout import Prepared

from .batching import as_torch, batches, class_aware_batches, decode_batch, group_photos, pick_image
from .buffers import SLOT_KEY, BatchBuffers
from .images import ImageDecoder, normalisation_for
from .shards import (
    ShardList,
    SharedEpoch,
    default_rank_world,
    resolve_shards,
    shuffle_buffer,
    split_by_node,
    split_by_worker,
    take,
)
from .spec import LoaderSpec
from .tario import tar_samples

__all__ = ["LoaderInfo", "LoaderSpec", "ShardLoader", "checked_store", "make_dataset", "make_loader", "matching_store",
           "pipeline_stages"]


@dataclass
class LoaderInfo:
    """What a loader will deliver (per rank), and the settings it resolved."""

    shards: list[str]
    num_samples: int | None  # samples per epoch over all ranks (None: one pass, length unknown)
    samples_per_worker: int | None
    batches_per_epoch: int | None  # batches this rank yields per epoch
    batch_size: int
    rank: int
    world_size: int
    num_workers: int
    train: bool
    decoder: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_aware: bool
    split: str  # "shards" (each reader reads its own shards) or "samples" (fewer shards than readers)
    tokens: str  # "json" (tokenised from each sample) or "store PATH" (read from recipes.lmdb)
    epoch: SharedEpoch = field(repr=False, default_factory=SharedEpoch)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images of a ``normalize=False`` loader -> float32 normalised, on their device
        (e.g. after ``.cuda(non_blocking=True)``: a quarter of the bytes to move and to touch)."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(self.std, device=images.device).view(1, 3, 1, 1) * 255.0)
        return images.float().sub_(mean).mul_(inv_std)


def pipeline_stages(
    spec_urls: list[str],
    spec: LoaderSpec | None = None,
    *,
    epoch: SharedEpoch,
    samples_per_worker: int | None,
    image: ImageDecoder,
    mean=None,
    std=None,
    split_samples: bool = False,
    buffers: BatchBuffers | None = None,
    **settings: Any,
) -> list:
    """The loader's data path as one list of stages (see the module docstring); with
    ``split_samples`` the two split stages come after ``tar_samples``. ``spec``: the loader's
    settings with ``rank``, ``world_size`` and ``store`` resolved (:func:`make_dataset` does it);
    ``settings``: :class:`LoaderSpec` fields, applied over ``spec`` (or making one)."""
    spec = LoaderSpec.build(spec, settings)
    if isinstance(spec.store, str):  # "auto" is resolved by make_dataset; here it means no store
        spec = spec.replace(store=None)
    train, batch_size, rank = spec.train, spec.batch_size, spec.rank
    common = {"seed": spec.seed, "epoch": epoch, "rank": rank}
    fixed = samples_per_worker is not None
    group = (
        class_aware_batches(batch_size, partial=not train, **(spec.class_aware_options or {}), **common)
        if spec.class_aware
        else batches(batch_size, partial=not train)
    )
    by_shard = not split_samples
    return [
        ShardList(spec_urls, seed=spec.seed, epoch=epoch, shuffle=train, repeat=fixed),
        split_by_node(rank, spec.world_size) if by_shard else None,
        split_by_worker if by_shard else None,
        tar_samples(spec.handler),
        group_photos(),  # before any split of samples: a recipe's photos stay together
        split_by_node(rank, spec.world_size) if split_samples else None,
        split_by_worker if split_samples else None,
        take(samples_per_worker) if fixed else None,
        pick_image(train=train, mode=spec.image_pick, **common),
        shuffle_buffer(spec.shuffle_size, **common) if train and spec.shuffle_size > 1 else None,
        group,
        decode_batch(vocab=spec.vocab, decoder=image, mean=mean, std=std, normalize=spec.normalize, limits=spec.limits,
                     store=spec.store, recipe_collate=spec.recipe_collate, buffers=buffers, **common),
    ]


def _as_is(batch: Any) -> Any:
    return batch


class ShardLoader(DataLoader):
    """A DataLoader over the pipeline whose epochs are numbered: each ``iter(loader)`` starts
    the next epoch (0, 1, 2, ...) unless :meth:`set_epoch` chose one. ``len(loader)`` is the
    number of batches per epoch when the epoch has a fixed length."""

    def __init__(self, dataset, info: LoaderInfo, buffers: BatchBuffers | None = None, **kwargs):
        # collate_fn: the batches are made already; DataLoader's default (default_convert) would
        # turn the small numpy arrays back into tensors in the worker, each then handed over as
        # its own shared-memory segment (batching.small_as_numpy says why that is slow)
        kwargs.setdefault("collate_fn", _as_is)
        super().__init__(dataset, batch_size=None, **kwargs)
        self.info, self.buffers = info, buffers
        self._next_epoch = 0
        self._started = False

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self.info.epoch.get()

    def __iter__(self):
        self.info.epoch.set(self._next_epoch)
        self._next_epoch += 1
        resumed = self.persistent_workers and self._started
        if self.buffers is not None:
            if not resumed:
                self.buffers.reset()  # new worker processes are about to start
            self.buffers.next_round()
        self._started = True
        batches = super().__iter__()  # resumed workers: what was still in flight is discarded here
        if self.buffers is not None and resumed:
            self.buffers.reclaim()
        return map(self._received, batches) if self.num_workers > 0 else batches

    def _received(self, batch: dict[str, Any]) -> dict[str, Any]:
        """In the main process, each batch from a worker: numpy back to torch, and the
        recycled image slot recorded (``recipekit.loaders.buffers``)."""
        marker = batch.pop(SLOT_KEY, None)
        if self.buffers is not None:
            batch["images"] = self.buffers.received(marker, batch["images"])
        return as_torch(batch)

    def __len__(self) -> int:
        if self.info.batches_per_epoch is None:
            raise TypeError("this loader reads each shard once; its length is unknown (give epoch_length)")
        return self.info.batches_per_epoch


def _source(source: Any, split: str | None) -> tuple[Any, Prepared | None]:
    """(shards to read, the prepared folder that holds them and its store, or None).

    With ``split``, ``source`` is a prepared folder (a :class:`~recipekit.core.Prepared` or its
    path) and the shards are its ``shards/{split}``. Without, ``source`` names shards (a folder,
    brace pattern, URL, ``pipe:``, or a list): they belong to a prepared folder only when they
    are one local ``OUT/shards/{split}`` folder's tars (checked after resolving them)."""
    if isinstance(source, Prepared) or split is not None:
        if split is None:
            raise ValueError(f"{source}: a prepared folder needs a split (make_loader(prepared, split='train'))")
        prepared = source if isinstance(source, Prepared) else Prepared(source)
        return prepared.shards(split), prepared
    return source, None


def make_dataset(shards, spec: LoaderSpec | None = None, *, split: str | None = None,
                 buffers: BatchBuffers | None = None, **settings: Any):
    """The ``webdataset.DataPipeline`` and its :class:`LoaderInfo` (arguments of :func:`make_loader`;
    ``buffers``: the recycled image slots its workers write into, made by :func:`make_loader`)."""
    import webdataset as wds

    from .remote import is_remote

    spec = LoaderSpec.build(spec, settings)
    shards, prepared = _source(shards, split)
    urls = resolve_shards(shards)
    store = spec.store
    if isinstance(store, str) and store == "auto":
        if prepared is None and not any(is_remote(u) for u in urls.urls):  # remote shards: give the store explicitly
            prepared = Prepared.of_shards(urls.urls)
        store = matching_store(prepared, spec.vocab, spec.limits)
    elif store is not None:
        store = checked_store(store, spec.vocab, spec.limits)
    rank, world_size = default_rank_world(spec.rank, spec.world_size)
    spec = spec.replace(rank=rank, world_size=world_size, store=store)
    train, batch_size, num_workers, epoch_length = spec.train, spec.batch_size, spec.num_workers, spec.epoch_length
    workers = max(1, num_workers)
    readers = world_size * workers
    if train and epoch_length is None:
        epoch_length = urls.total  # None without sizes.json: one pass per epoch
    per_worker = None if epoch_length is None else int(epoch_length) // readers
    split_samples = len(urls.urls) < readers  # too few shards to give every reader its own
    image = ImageDecoder(spec.decoder, train=train, size=spec.image_size)
    mean, std = normalisation_for(spec.embedder)
    n_batches = None if per_worker is None else workers * (per_worker // batch_size)
    info = LoaderInfo(
        shards=list(urls.urls), num_samples=epoch_length if epoch_length is not None else urls.total,
        samples_per_worker=per_worker, batches_per_epoch=n_batches, batch_size=batch_size, rank=rank,
        world_size=world_size, num_workers=num_workers, train=train, decoder=image.decoder, mean=mean, std=std,
        class_aware=spec.class_aware, split="samples" if split_samples else "shards",
        tokens=f"store {store.path}" if store is not None else "json",
    )
    stages = pipeline_stages(list(urls.urls), spec, epoch=info.epoch, samples_per_worker=per_worker, image=image,
                             mean=mean, std=std, split_samples=split_samples, buffers=buffers)
    return wds.DataPipeline(*stages), info


def matching_store(prepared: Prepared | None, vocab: Any, limits: tuple[int, int, int]):
    """``prepared``'s store when it exists and was built with this vocabulary and these limits;
    else None (tokenise the JSON)."""
    if prepared is None or not prepared.has_store:
        return None
    try:
        return checked_store(prepared.store, vocab, limits)
    except ValueError:
        return None


def checked_store(store: Any, vocab: Any, limits: tuple[int, int, int]):
    """The :class:`~recipekit.pipeline.store.RecipeStore` (or its path) if it holds ``vocab``'s
    token ids cut at ``limits``; a ``ValueError`` saying why not otherwise."""
    from recipekit.pipeline.store import RecipeStore

    store = store if isinstance(store, RecipeStore) else RecipeStore(store)
    meta = store.meta
    if not hasattr(vocab, "digest"):  # e.g. the MiniLM WordPiece vocabulary: not the store's ids
        raise ValueError(f"{store.path} holds word2vec token ids; this vocabulary cannot be checked against them")
    if vocab.digest() != meta.get("vocab_sha256"):
        raise ValueError(f"{store.path} was tokenised with another vocabulary than the one given")
    built = (meta.get("max_ingredients"), meta.get("max_instructions"), meta.get("max_tokens"))
    if tuple(limits) != built:
        raise ValueError(f"{store.path} was built with limits {built}, not {tuple(limits)}")
    return store


def make_loader(
    source: Prepared | str | os.PathLike | Iterable[str | os.PathLike],
    spec: LoaderSpec | None = None,
    *,
    split: str | None = None,
    **settings: Any,
) -> tuple[ShardLoader, LoaderInfo]:
    """A loader of image-recipe batches from WebDataset shards, and what it will deliver.

    ``source`` and ``split``: a prepared folder (:class:`~recipekit.core.Prepared` or its path)
    and the split to read (its ``shards/{split}``, its ``recipes.lmdb``); or, without ``split``,
    the shards themselves: a shard folder (``OUT/shards/train``), brace pattern, path, URL,
    ``pipe:`` command or list of those. ``spec``: a :class:`LoaderSpec`; keyword ``settings``
    (its field names) build one or change the one given. The fields:

    ``vocab``: a :class:`~recipekit.pipeline.vocab.Vocabulary` (``word2vec/vocab.txt``).
    ``epoch_length``: samples per epoch over all ranks and workers (train default: all
    samples, from ``sizes.json``; eval default: one pass). ``rank``/``world_size``: default
    from torch.distributed when initialised, else 0/1. ``class_aware``: AdaMine batches (half
    background; ``class_aware_options``: ``background``, ``min_per_class``, ``buffer_size``).
    ``decoder``: ``"auto"`` (the measured faster), ``"pil"`` or ``"torchvision"``.
    ``embedder``: a JointEmbedder, config or config name whose normalisation to use (default
    ImageNet); ``normalize=False`` returns uint8 images, to normalise on the device with
    ``info.normalise(images)``: a quarter of the bytes to hand over and to copy to a GPU (and
    about 0.05 ms less worker CPU per image here; docs/benchmarks.md).
    ``limits``: (max_ingredients, max_instructions, max_tokens) of the tokeniser.
    ``store``: where recipe token ids come from. ``"auto"``: the prepared folder's
    ``recipes.lmdb`` (given, or the one whose ``shards/{split}`` the local shards are) when it
    was built with this vocabulary and these limits, else tokenise each sample's JSON (always
    for remote shards: give their store explicitly); ``None``: always tokenise; a
    :class:`~recipekit.pipeline.store.RecipeStore` or its path: read from it (an error if
    its vocabulary or limits differ). Same ids either way (tested); reading is ~20x cheaper. ``recipe_collate``:
    a replacement for ``collate_recipes`` (same input, same output; default: it).
    ``image_pick``: which photo of a recipe, ``"first"`` or ``"random"`` (default: random
    when training, the first for eval; a random eval pick is fixed per recipe and ``seed``).
    ``recycle_buffers`` (with workers): each worker writes its image batches into a few
    shared-memory slots it reuses once the main process no longer references their last
    batch (:mod:`recipekit.loaders.buffers`), instead of a new segment per batch that the
    kernel must zero and map again: about 0.4 ms less worker CPU per float image here
    (docs/benchmarks.md). A batch sent on to another process must be copied first.
    Batches are described in :mod:`recipekit.loaders.batching`.
    """
    spec = LoaderSpec.build(spec, settings)
    num_workers, prefetch_factor = spec.num_workers, spec.prefetch_factor
    pinned = spec.pin_memory and torch.cuda.is_available()
    buffers = None
    if num_workers > 0 and spec.recycle_buffers:  # in flight: prefetch per worker; + held, pinned and being freed
        buffers = BatchBuffers(num_workers, (prefetch_factor or 2) + 3, pinned=pinned)
    dataset, info = make_dataset(source, spec, split=split, buffers=buffers)
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pinned}
    if num_workers > 0:
        kwargs["persistent_workers"] = spec.persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return ShardLoader(dataset, info, buffers, **kwargs), info
