"""Image decoding and augmentation for the loaders: JPEG bytes -> uint8 tensor [3, S, S].

Two decoders, same geometry:

* ``"pil"``: Pillow; for JPEGs ``Image.draft("RGB", (R, R))`` first, so libjpeg decodes at
  the smallest power-of-two scale (1/2, 1/4, 1/8) whose both sides stay >= ``R`` (the eval
  resize size, 256 for 224 crops): a 1600 px photo is decoded at 400 px. Shard images are
  already 256 px on their shorter side, so on shards draft changes nothing.
* ``"torchvision"``: ``torchvision.io.decode_jpeg`` (libjpeg-turbo, full size) and torch's
  antialiased bilinear resize on uint8 tensors.

``DEFAULT_DECODER`` is the faster one on shard images as measured by ``benchmarks/loader.py``
(docs/benchmarks.md); ``decoder="auto"`` means it.

Train: a random resized crop (area 8-100 %, aspect 3/4-4/3, the Inception crop that
torchvision's ``RandomResizedCrop`` draws, here from the stage's seeded ``random.Random``)
resized to ``S`` with a horizontal flip half of the time. Eval: ``Resize(R)`` of the shorter
side then ``CenterCrop(S)``, done as one resize of the centre box. Both are one antialiased
bilinear resize of a box of the decoded image. Normalisation is applied per batch
(:func:`normalise`), with the embedder's mean/std (:func:`normalisation_for`).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DECODERS",
    "DEFAULT_DECODER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDecoder",
    "center_crop_box",
    "normalisation_for",
    "normalise",
    "random_resized_crop_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODERS = ("pil", "torchvision")
DEFAULT_DECODER = "torchvision"  # measured: docs/benchmarks.md, section "Streaming loaders"


def normalisation_for(embedder: Any = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for an embedder, as the embedder states it: a :class:`JointEmbedder` (its
    ``image_preprocessing``), a config dict or a registered config name (the normalisation of
    its image backbone, :func:`recipekit.embedders.image.backbone_normalisation`); ImageNet
    statistics for None."""
    if embedder is None:
        return IMAGENET_MEAN, IMAGENET_STD
    wanted = getattr(embedder, "image_preprocessing", None)
    if wanted is not None:
        return tuple(wanted.mean), tuple(wanted.std)
    tower = getattr(embedder, "image_tower", None)
    if tower is not None:
        return tuple(tower.mean), tuple(tower.std)
    if isinstance(embedder, str):
        from recipekit.embedders import get_config

        embedder = get_config(embedder)
    if isinstance(embedder, Mapping):
        from recipekit.embedders.image import backbone_normalisation

        return backbone_normalisation(embedder.get("image", {}).get("backbone", ""))
    raise TypeError(f"cannot find image normalisation for {type(embedder).__name__}")


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> float32, ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
    return images.float().sub_(m).mul_(s)


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, height, width) of an Inception-style random crop (10 tries, then centre)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(width: int, height: int, size: int, resize: int):
    """(top, left, height, width), in source pixels, of ``Resize(resize)`` + ``CenterCrop(size)``."""
    side = size * min(width, height) / resize
    h, w = min(side, height), min(side, width)
    return (height - h) / 2, (width - w) / 2, h, w


def _torchvision_available() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class ImageDecoder:
    """JPEG bytes -> uint8 tensor [3, size, size] (train augmentation or eval crop).

    The decoders differ only in how the JPEG becomes pixels; the crop is then one antialiased
    bilinear ``torch.nn.functional.interpolate`` of a box of the decoded image (torch's uint8
    kernel; faster than Pillow's ``resize`` here, docs/benchmarks.md)."""

    def __init__(self, decoder: str = "auto", *, train: bool, size: int = 224, resize: int | None = None,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        if decoder == "auto":
            decoder = DEFAULT_DECODER if DEFAULT_DECODER != "torchvision" or _torchvision_available() else "pil"
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose from auto, {', '.join(DECODERS)}")
        if decoder == "torchvision":
            import torchvision.io  # noqa: F401 - imported here, before DataLoader workers fork, not in each of them
        self.decoder, self.train, self.size = decoder, train, int(size)
        self.resize = int(resize or round(size * 256 / 224))
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), flip

    def decode(self, data: bytes) -> torch.Tensor:
        """uint8 [3, H, W] (for ``"pil"`` a view of Pillow's H x W x 3 pixels)."""
        if self.decoder == "torchvision":
            from torchvision.io import ImageReadMode, decode_jpeg

            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError:  # not a JPEG (or one libjpeg refuses): Pillow reads the rest
                pass
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            im.draft("RGB", (self.resize, self.resize))
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        img = self.decode(data)
        height, width = img.shape[1], img.shape[2]
        if self.train:
            top, left, h, w = random_resized_crop_box(width, height, rng or random.Random(), self.scale, self.ratio)
        else:
            top, left, h, w = (int(round(v)) for v in center_crop_box(width, height, self.size, self.resize))
            h, w = max(1, min(h, height - top)), max(1, min(w, width - left))
        crop = img[None, :, top : top + h, left : left + w]
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)[0]
        if self.train and self.flip and (rng or random.Random()).random() < 0.5:
            out = out.flip(-1)
        return out
