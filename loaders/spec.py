"""What a paired loader delivers, as one frozen value: :class:`LoaderSpec`.

:func:`recipekit.loaders.make_loader`, :func:`~recipekit.loaders.make_dataset` and
:func:`~recipekit.loaders.pipeline_stages` take a spec instead of two dozen keywords; its field
names are the keywords those functions took, so ``make_loader(source, vocab=..., train=...,
batch_size=...)`` still works (it builds the spec) and ``LoaderSpec(**same_keywords)`` is the
same loader. Torch-free: a spec can be built, compared and printed without the loaders' deps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from recipekit.core.limits import DEFAULT_LIMITS

__all__ = ["LoaderSpec"]


@dataclass(frozen=True, kw_only=True)
class LoaderSpec:
    """Settings of a loader of image-recipe batches (the meaning of each field:
    :func:`recipekit.loaders.make_loader`). ``vocab``, ``train`` and ``batch_size`` are required."""

    vocab: Any
    train: bool
    batch_size: int
    num_workers: int = 0
    epoch_length: int | None = None
    seed: int = 0
    rank: int | None = None
    world_size: int | None = None
    class_aware: bool = False
    class_aware_options: dict | None = None
    image_size: int = 224
    decoder: str = "auto"
    embedder: Any = None
    normalize: bool = True
    shuffle_size: int = 2000
    limits: tuple[int, int, int] = DEFAULT_LIMITS.astuple()
    store: Any = "auto"
    recipe_collate: Any = None
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    handler: Any = None
    image_pick: str | None = None
    recycle_buffers: bool = True

    def replace(self, **changes: Any) -> "LoaderSpec":
        """A copy with ``changes`` (field names; an unknown one is a ``TypeError`` naming it)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, spec: "LoaderSpec | None", keywords: dict[str, Any]) -> "LoaderSpec":
        """``spec`` with ``keywords`` applied, or a new spec from ``keywords`` alone: the old
        keyword call style of the loader functions."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(f"unknown loader setting(s): {', '.join(unknown)} (LoaderSpec fields: {', '.join(sorted(names))})")
        if spec is None:
            return cls(**keywords)
        return dataclasses.replace(spec, **keywords) if keywords else spec
