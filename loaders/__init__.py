"""recipekit.loaders: streaming data loaders for training, evaluation and search (docs/artefacts.md, docs/benchmarks.md).

* :func:`make_loader` — image-recipe batches from the WebDataset shards of ``prepare``'s
  ``shard`` stage, read through a :class:`~recipekit.core.Prepared` folder and a split or
  from shards given directly, with its settings as one :class:`LoaderSpec` (one list of
  stages: :func:`pipeline_stages`; fixed-length epochs across ranks and workers; optional
  AdaMine class-aware batches).
* :func:`recipe_only_loader` — tokenised recipe batches from the LMDB store (``store`` stage)
  for H-T's recipe-only loss.

Needs torch, torchvision and webdataset (``pip install 'recipekit[train]'``).
"""

from .batching import batches, class_aware_batches, decode_batch, pick_image
from .images import DECODERS, DEFAULT_DECODER, ImageDecoder, normalisation_for
from .recipes import (
    RecipeLoader,
    StoreDataset,
    collate_store_records,
    recipe_only_loader,
)
from .shards import SharedEpoch, resolve_shards
from .spec import LoaderSpec
from .wds import LoaderInfo, ShardLoader, make_dataset, make_loader, pipeline_stages

__all__ = [
    "DECODERS",
    "DEFAULT_DECODER",
    "ImageDecoder",
    "LoaderInfo",
    "LoaderSpec",
    "RecipeLoader",
    "ShardLoader",
    "SharedEpoch",
    "StoreDataset",
    "batches",
    "class_aware_batches",
    "collate_store_records",
    "decode_batch",
    "make_dataset",
    "make_loader",
    "normalisation_for",
    "pick_image",
    "pipeline_stages",
    "recipe_only_loader",
    "resolve_shards",
]
